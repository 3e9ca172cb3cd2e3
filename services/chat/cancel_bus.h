// Stops reach the replica that runs the turn. A stop lands on any chat
// replica; the one whose Turns runs the reply stops it at once, and every
// other replica learns of it through the Redis Stream kCancelStream, which
// each replica reads from its end (XREAD BLOCK, no consumer group: every
// replica sees every entry). Entries are message ids; the stream is capped
// at about kCancelStreamLength entries.
//
// Redis down: Publish fails (the caller says so), and a stop still works
// when it lands on the replica that runs the turn; the reader retries every
// half second and, once back, goes on from the last entry it read.
#pragma once

#include <atomic>
#include <functional>
#include <string>
#include <thread>

#include "absl/status/status.h"
#include "storage/redis.h"

namespace sb::metrics {
class Counter;
}  // namespace sb::metrics

namespace sb::chat {

inline constexpr char kCancelStream[] = "chat:cancels";
inline constexpr int kCancelStreamLength = 10000;

class CancelBus {
 public:
  // `on_cancel` runs on the bus's thread for every message id published
  // (by any replica, this one included) after Start.
  CancelBus(BlockingRedis& redis, std::function<void(const std::string& message_id)> on_cancel);
  ~CancelBus();  // stops the reader

  void Start();
  absl::Status Publish(const std::string& message_id);

 private:
  void Loop();

  BlockingRedis& redis_;
  std::function<void(const std::string&)> on_cancel_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
  metrics::Counter& received_;
  metrics::Counter& read_errors_;
};

}  // namespace sb::chat
