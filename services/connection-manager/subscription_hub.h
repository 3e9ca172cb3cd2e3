// Live token streams for chat replies. Every subscription replays the
// reply's Redis Stream after the client's offset and then follows it live;
// a poller thread per read group (group_pollers.h: one on a single Redis)
// serves its subscriptions with a single multi-key `XREAD BLOCK` per round,
// so there is no thread (and no Redis connection) per stream. A subscriber whose gRPC queue is full
// is left out of the round until it drains: a slow client holds back only itself.
//
// When the buffer is gone (expired, or never written because the turn
// failed before its first token), the persisted message is served instead;
// so is the rest of an ended reply whose buffer has a hole (an offset
// missing: nothing past it is delivered) or whose last entries never came.
#pragma once

#include <atomic>
#include <condition_variable>
#include <deque>
#include <functional>
#include <list>
#include <memory>
#include <mutex>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "connection-manager/group_pollers.h"
#include "core/thread_pool.h"
#include "grpcx/streams.h"
#include "storage/redis.h"
#include "storage/token_stream.h"
#include "switchboard/chat/v1/chat.pb.h"
#include "switchboard/connection/v1/connection.pb.h"

namespace sb::connection {

using StreamOut = ServerStream<switchboard::connection::v1::StreamEvent>::Handle;
// Finds the message for the subscriber (scoped to its org and user).
using MessageLookup = std::function<absl::StatusOr<switchboard::chat::v1::ChatMessage>(
    const switchboard::connection::v1::SubscribeRequest&)>;

// Converts a buffer entry to the wire event.
switchboard::connection::v1::StreamEvent ToEvent(const StreamEntry& e);
// The events that replace an expired buffer, for a client that has seen
// everything up to `after_offset`, with the offsets the live stream had
// (from the message's stream_last_offset); none when it has seen the end.
std::vector<switchboard::connection::v1::StreamEvent> FromPersisted(
    const switchboard::chat::v1::ChatMessage& m, int64_t after_offset);

class SubscriptionHub {
 public:
  SubscriptionHub(BlockingRedis& redis, MessageLookup lookup, int lookup_threads);
  ~SubscriptionHub();

  void Stop();  // ends every subscription with UNAVAILABLE (the client resumes elsewhere)

  void Subscribe(switchboard::connection::v1::SubscribeRequest req, std::shared_ptr<StreamOut> out);
  size_t active() const;

 private:
  struct Sub {
    switchboard::connection::v1::SubscribeRequest req;
    std::shared_ptr<StreamOut> out;
    std::string key;    // the reply's buffer
    std::string group;  // the key's read group
    int64_t last_offset = 0;
    absl::Time last_entry;  // when the last entry arrived (or the subscription began)
    absl::Time next_check;
    bool checking = false;  // a lookup is under way
    bool gap = false;       // the buffer skips an offset: wait for the stored message
    // The stored message's events still to send (ServePersisted): pushed as
    // the queue makes room, then the call ends.
    std::deque<switchboard::connection::v1::StreamEvent> backlog;
    bool serving = false;
    bool done = false;
  };

  void Loop(const std::string& group);
  // Hands the subscription to its group's poller; false when stopping.
  // Requires mu_.
  bool Follow(const std::shared_ptr<Sub>& sub);
  void Begin(const std::shared_ptr<Sub>& sub);
  // The buffer went quiet: serve the stored message if it is final, give up
  // after a long silence. Requires mu_.
  void CheckStalled(const std::shared_ptr<Sub>& sub);
  // Returns true when the entry ended the subscription.
  bool Deliver(Sub& sub, const StreamEntry& e);
  void ServePersisted(Sub& sub, const switchboard::chat::v1::ChatMessage& m);
  // Pushes what the queue has room for; ends the call when all is sent.
  void DrainBacklog(Sub& sub);

  BlockingRedis& redis_;
  MessageLookup lookup_;
  ThreadPool lookups_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::list<std::shared_ptr<Sub>> subs_;
  bool stop_ = false;
  GroupPollers pollers_;  // last: its threads use the above
};

}  // namespace sb::connection
