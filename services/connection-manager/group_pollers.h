// The poller threads of a hub: one per read group of the keys it follows
// (BlockingRedis::ReadGroupOf), started with the group's first
// subscription. On a single Redis every key is in one group, so there is
// one poller and one multi-key XREAD per round; on a Redis Cluster, where
// a multi-key XREAD must stay within one hash slot, one per slot in use
// (at most the key's shards: kStreamShards, kEventShards), each blocking
// on its own read so that a quiet slot never holds back a busy one.
#pragma once

#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <thread>

namespace sb::connection {

class GroupPollers {
 public:
  // `loop` serves one group until its hub stops.
  explicit GroupPollers(std::function<void(const std::string& group)> loop);
  ~GroupPollers();  // Join()

  // Starts the group's poller unless it runs.
  void Ensure(const std::string& group);
  // Waits for every poller to return (their hub has told them to stop).
  void Join();

 private:
  std::function<void(const std::string&)> loop_;
  std::mutex mu_;
  std::map<std::string, std::thread> threads_;
};

// A poller's read that failed (Redis away, or refused it), by what it reads:
// "replies" (SubscriptionHub) or "events" (EventHub).
void CountPollFailure(const std::string& reads);

}  // namespace sb::connection
