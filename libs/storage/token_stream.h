// The replay buffer of one reply's tokens: the Redis Stream
// `stream:{<message_id>}` (the braces are a Redis Cluster hash tag).
//
// Entry ids are `0-<offset>` with offsets 1, 2, 3, ... so that "resume after
// offset N" is an XRANGE from `(0-N`. Each entry is a delta (text), or the
// last entry: an end (stop reason and usage) or an error. After the last
// entry the key expires (5 minutes by default); later readers fall back to
// the persisted message.
#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "storage/redis.h"

namespace sb {

struct StreamEntry {
  enum class Kind { kDelta, kEnd, kError };
  int64_t offset = 0;
  Kind kind = Kind::kDelta;
  std::string text;  // kDelta
  std::string stop_reason;
  int input_tokens = 0;
  int output_tokens = 0;
  std::string model;
  std::string error_type;  // kError
  std::string error_message;
};

std::string TokenStreamKey(const std::string& message_id);

// The XADD arguments for an entry.
std::vector<std::string> TokenStreamAddArgs(const std::string& message_id, const StreamEntry& e);

// Parses one element of an XRANGE/XREAD reply ([id, [field, value, ...]]).
absl::StatusOr<StreamEntry> ParseStreamEntry(const RedisReply& entry);

class TokenStreamWriter {
 public:
  TokenStreamWriter(RedisClient& redis, std::chrono::seconds retention)
      : redis_(redis), retention_(retention) {}

  // Appends; after an end or error entry also sets the expiry.
  absl::Status Append(const std::string& message_id, const StreamEntry& e);

 private:
  RedisClient& redis_;
  std::chrono::seconds retention_;
};

}  // namespace sb
