// Redis for event-driven code: Command() never blocks. Commands queue up
// and one thread sends them over one connection in pipelined batches (all
// of a batch written, then all replies read), so thousands of concurrent
// writers cost one connection and a few round trips, and commands issued
// in an order are executed in that order.
//
//   redis.Command({"XADD", key, "0-1", "type", "delta"}, [](absl::StatusOr<RedisReply> r) {
//     ...  // runs on the pipeline's thread: keep it short, never block
//   });
//
// A lost connection fails the batch in flight with Unavailable and is
// reopened for the next one (after a short pause). A full queue refuses
// the command at once, on the caller's thread, with ResourceExhausted.
#pragma once

#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "storage/redis.h"

namespace sb {

class AsyncRedis {
 public:
  using Callback = std::function<void(absl::StatusOr<RedisReply>)>;
  virtual ~AsyncRedis() = default;
  // An error reply from the server arrives as Internal.
  virtual void Command(std::vector<std::string> args, Callback done) = 0;
};

class RedisPipeline final : public AsyncRedis {
 public:
  explicit RedisPipeline(RedisOptions options, size_t max_queue = 200000, size_t max_batch = 512);
  ~RedisPipeline() override;  // Stop()
  RedisPipeline(const RedisPipeline&) = delete;
  RedisPipeline& operator=(const RedisPipeline&) = delete;

  void Command(std::vector<std::string> args, Callback done) override;
  // Commands sent back to back on one connection (ASKING then the command,
  // say); `done` gets the last one's reply, the others' are dropped.
  void Sequence(std::vector<std::vector<std::string>> commands, Callback done);
  size_t queued() const;
  // Finishes the batch in flight, fails what is still queued with
  // Unavailable, and refuses later commands. Idempotent. Call it while the
  // owners of pending callbacks are still alive.
  void Stop();

 private:
  struct Pending {
    std::vector<std::string> args;
    Callback done;
  };
  void Loop();
  // Sends one batch; returns false when the connection failed.
  bool Send(std::vector<Pending>& batch, std::vector<absl::StatusOr<RedisReply>>& results);

  RedisOptions options_;
  size_t max_queue_;
  size_t max_batch_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Pending> queue_;
  bool stop_ = false;
  redisContext* conn_ = nullptr;  // only the loop thread touches it
  std::thread thread_;
};

}  // namespace sb
