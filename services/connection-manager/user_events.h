// A user's chat events (chat.events), kept in Redis for every device that
// follows them: one Redis Stream per user,
//
//   uev:{<org>:<user>}          entries t=type c=conversation p=ChatEvent
//   uev:{<org>:<user>}:seen     the event ids appended (a sorted set): Kafka
//                               may deliver an event twice, the stream
//                               holds it once
//   uev:{<org>:<user>}:trimmed  the id of the last entry dropped for room
//   uev:{<org>:<user>}:erased   when the user was erased (sbadmin erase-user):
//                               events from before it are not kept again
//
// (one hash tag, so that a user's keys live on one Redis Cluster node). An
// entry's id is the event's cursor: a device resumes after the last one it
// saw, with no gap and no duplicate, for as long as the stream keeps it (the
// newest `max_per_user` events, for `retention` after the user's last
// event); a cursor older than that is answered with a reset (reload).
//
// A conversation.deleted event also removes the conversation's earlier
// events (and so the text their messages carried) from the stream, and a
// user.erased tombstone all of them: it is then the only entry.
#pragma once

#include <atomic>
#include <compare>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "storage/kafka.h"
#include "storage/redis.h"
#include "switchboard/chat/v1/chat.pb.h"

namespace sb::connection {

// "uev:{e<shard>}:<org>:<user>", its companions that key and a suffix: a
// user's keys share a slot, and the users are spread over kEventShards
// slots (as reply buffers are, token_stream.h).
inline constexpr int kEventShards = 16;
std::string UserEventsKey(std::string_view org_id, std::string_view user_id);

// A Redis Stream entry id, ordered as Redis orders them.
struct StreamId {
  uint64_t ms = 0;
  uint64_t seq = 0;
  // nullopt unless the whole text is "<ms>-<seq>" in decimal.
  static std::optional<StreamId> Parse(std::string_view text);
  std::string ToString() const;
  auto operator<=>(const StreamId&) const = default;
};

struct UserEventsOptions {
  absl::Duration retention = absl::Hours(24);
  int max_per_user = 1000;
};

// Appends `event` to its user's stream unless its event_id is there
// already. Returns the new entry's id, or nullopt for a duplicate.
absl::StatusOr<std::optional<std::string>> AppendUserEvent(
    BlockingRedis& redis, const switchboard::chat::v1::ChatEvent& event,
    const UserEventsOptions& options);

// Where a subscription starts reading. `after` empty: after the last entry
// now (only new events). Otherwise after `after` when every later event is
// still kept ("0-0": from the oldest kept); when some are not (the cursor
// is older than the last entry dropped, or the stream expired), a reset
// after the last entry now. InvalidArgument for a malformed cursor.
struct StartPoint {
  StreamId after;
  bool reset = false;
};
absl::StatusOr<StartPoint> ResolveStart(BlockingRedis& redis, const std::string& key,
                                        std::string_view after);

// A stream entry read back.
struct UserEventEntry {
  StreamId id;
  switchboard::chat::v1::ChatEvent event;
};
// Parses one entry of an XRANGE/XREAD reply ([id, [field, value, ...]]).
absl::StatusOr<UserEventEntry> ParseUserEventEntry(const RedisReply& entry);

// Consumes chat.events into the users' streams. Replicas share the
// consumer group, so each partition is indexed by one of them; offsets are
// committed once Redis holds the batch. While Redis is down the batch is
// retried (nothing is skipped); events older than the retention are not
// indexed (a new group starts at the topic's beginning).
class EventIndexer {
 public:
  EventIndexer(KafkaConsumer& consumer, BlockingRedis& redis, UserEventsOptions options);
  ~EventIndexer();  // Stop()

  void Start();
  void Stop();
  // One round: appends what is pending (or what arrives within `wait`) and
  // commits it. Returns how many events it took off the pending batch; an
  // error leaves the rest pending for the next round.
  absl::StatusOr<int> IndexOnce(std::chrono::milliseconds wait);

 private:
  KafkaConsumer& consumer_;
  BlockingRedis& redis_;
  const UserEventsOptions options_;
  std::vector<KafkaMessage> batch_;  // polled, not yet all in Redis
  size_t next_ = 0;                  // batch_[next_..] are still to append
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

}  // namespace sb::connection
