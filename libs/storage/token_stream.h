// The replay buffer of one chat reply: the Redis Stream
// `stream:{<message_id>}` (the braces are a Redis Cluster hash tag).
//
// One entry per event of the reply's Messages API stream, with entry ids
// `0-<offset>` and offsets 1, 2, 3, ... so that "resume after offset N" is
// an XRANGE from `(0-N` and a reader can resume after any event:
//
//   1 message_start, 2 content_block_start, 3.. text deltas,
//   then content_block_stop, message_delta, message_stop
//
// or, at any point, an error entry that ends the stream. After the final
// entry (message_stop or error) the key expires (5 minutes by default);
// later readers fall back to the persisted message. The first entry sets a
// long expiry too (an hour), so that the buffer of a reply whose writer died
// does not stay forever.
#pragma once

#include <chrono>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "core/timers.h"
#include "storage/redis.h"

namespace sb {

class AsyncRedis;

struct StreamEntry {
  enum class Kind {
    kMessageStart,
    kBlockStart,
    kDelta,
    kBlockStop,
    kMessageDelta,
    kMessageStop,
    kError,
  };
  int64_t offset = 0;
  Kind kind = Kind::kDelta;
  std::string text;           // kDelta
  std::string model;          // kMessageStart
  int input_tokens = 0;       // kMessageStart, kMessageDelta
  int output_tokens = 0;      // kMessageDelta
  std::string stop_reason;    // kMessageDelta
  std::string stop_sequence;  // kMessageDelta
  int error_code = 0;         // kError: an absl::StatusCode
  std::string error_message;  // kError: safe to show to the client

  // message_stop and error end a stream.
  bool final() const { return kind == Kind::kMessageStop || kind == Kind::kError; }
};

// Reply buffers are spread over kStreamShards hash tags,
// "stream:{s<shard>}:<message_id>": on Redis Cluster a multi-key XREAD must
// stay within one slot, so a reader following thousands of replies makes
// one blocking read per shard, not one per reply. (More shards than the
// cluster has masters keep every master busy; more threads in each reader.)
inline constexpr int kStreamShards = 16;
std::string TokenStreamKey(const std::string& message_id);
// "s<n>" for the n-th of `shards`, by a hash of `id` that every process
// computes alike.
std::string ShardTag(std::string_view id, int shards, char prefix);

// The XADD arguments for an entry.
std::vector<std::string> TokenStreamAddArgs(const std::string& message_id, const StreamEntry& e);

// Parses one element of an XRANGE/XREAD reply ([id, [field, value, ...]]).
absl::StatusOr<StreamEntry> ParseStreamEntry(const RedisReply& entry);

// Writes a reply's entries (RedisTokenStream in production, a fake in
// libs/testing).
class TokenStreamAppender {
 public:
  using Done = std::function<void(absl::Status)>;
  virtual ~TokenStreamAppender() = default;
  // Appends `entries` in order, after everything appended before for the
  // same message; a final entry also sets the expiry. `done` runs once,
  // when all are stored or on the first failure, on an I/O thread.
  virtual void Append(const std::string& message_id, std::vector<StreamEntry> entries,
                      Done done) = 0;
};

// With `timers`, a batch Redis did not take is sent again after each of
// `retry_delays` (the whole batch: an entry already stored is taken as
// written, its id being its offset), and `done` reports the last failure
// only when every retry failed; without, the first failure.
class RedisTokenStream final : public TokenStreamAppender {
 public:
  RedisTokenStream(AsyncRedis& redis, std::chrono::seconds retention,
                   std::chrono::seconds live_ttl = std::chrono::hours(1), Timers* timers = nullptr,
                   std::vector<absl::Duration> retry_delays = {absl::Milliseconds(100),
                                                               absl::Milliseconds(300),
                                                               absl::Milliseconds(900)})
      : redis_(redis),
        retention_(retention),
        live_ttl_(live_ttl),
        timers_(timers),
        retry_delays_(std::move(retry_delays)) {}
  void Append(const std::string& message_id, std::vector<StreamEntry> entries, Done done) override;

 private:
  void Send(std::string message_id, std::vector<StreamEntry> entries, size_t attempt, Done done);

  AsyncRedis& redis_;
  std::chrono::seconds retention_;
  std::chrono::seconds live_ttl_;
  Timers* timers_;
  std::vector<absl::Duration> retry_delays_;
};

}  // namespace sb
