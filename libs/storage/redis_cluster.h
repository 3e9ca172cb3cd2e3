// Redis Cluster for event-driven code, behind the same AsyncRedis as one
// node: a command goes to the master that owns its key's slot, over that
// node's own RedisPipeline (so the ordering and batching guarantees hold
// per node). The slot map comes from CLUSTER SLOTS, asked of any node it
// knows, at start and whenever a reply says it is stale:
//   MOVED slot host:port  the slot has a new owner: resend there, refresh
//   ASK slot host:port    the slot is migrating: resend there once, after
//                         ASKING, without changing the map
// Commands whose keys hash to different slots fail with CROSSSLOT, as on
// the server: give keys that belong together one `{hash tag}`.
//
//   RedisCluster redis({.host = "10.0.0.7", .port = 7000});  // any node
//   redis.Command({"EVALSHA", sha, "2", "rl:{org}:a", "rl:{org}:b", ...}, done);
#pragma once

#include <array>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "storage/redis.h"
#include "storage/redis_pipeline.h"

namespace sb {

class RedisCluster final : public AsyncRedis {
 public:
  static constexpr int kSlots = 16384;

  explicit RedisCluster(RedisOptions seed);
  ~RedisCluster() override;  // Stop()
  RedisCluster(const RedisCluster&) = delete;
  RedisCluster& operator=(const RedisCluster&) = delete;

  void Command(std::vector<std::string> args, Callback done) override;
  // Stops every node's pipeline (see RedisPipeline::Stop).
  void Stop();

  // The slot of a key: CRC16 (XMODEM) of its hash tag, or of the whole key
  // when it has none, modulo 16384.
  static int Slot(std::string_view key);
  // The key that routes a command (the first one), or empty when it has
  // none and any node will do.
  static std::string_view RoutingKey(const std::vector<std::string>& args);

  // The node that owns a slot now, "host:port" (tests).
  std::string OwnerOf(int slot) const;

 private:
  struct Node {
    std::string host;
    int port = 0;
    std::unique_ptr<RedisPipeline> pipeline;
  };
  void Send(int slot, std::string address, std::vector<std::string> args, Callback done,
            int redirects, bool asking);
  RedisPipeline& NodeAt(const std::string& address);
  void Refresh();
  void ApplySlots(const std::string& asked, const RedisReply& reply);

  RedisOptions seed_;
  mutable std::mutex mu_;
  std::array<std::string, kSlots> owners_;  // "" = unknown: ask the seed
  std::map<std::string, Node> nodes_;
  bool refreshing_ = false;
  size_t refresh_turn_ = 0;
  bool stopped_ = false;
};

// The blocking twin of RedisCluster, for code that runs on its own threads
// (connection-manager's pollers, chat's cancel bus): one RedisClient pool
// per master, the same slot map, MOVED and ASK. A reader that follows many
// streams makes one multi-key XREAD per read group (ReadGroupOf: a slot).
//
//   RedisClusterClient redis({.host = "10.0.0.7", .port = 7000});  // any node
//   auto r = redis.Command({"XRANGE", "stream:{s3}:01J...", "-", "+"});
class RedisClusterClient final : public BlockingRedis {
 public:
  explicit RedisClusterClient(RedisOptions seed);
  ~RedisClusterClient() override;
  RedisClusterClient(const RedisClusterClient&) = delete;
  RedisClusterClient& operator=(const RedisClusterClient&) = delete;

  absl::StatusOr<RedisReply> Command(const std::vector<std::string>& args) override;
  absl::StatusOr<RedisReply> BlockingCommand(const std::vector<std::string>& args,
                                             std::chrono::milliseconds block) override;
  // "slot N".
  std::string ReadGroupOf(std::string_view key) const override;

  // The node that owns a slot now, "host:port" (tests).
  std::string OwnerOf(int slot) const;

 private:
  absl::StatusOr<RedisReply> Send(const std::vector<std::string>& args,
                                  std::chrono::milliseconds block);
  RedisClient& NodeAt(const std::string& address);  // requires mu_
  void Refresh();

  RedisOptions seed_;
  mutable std::mutex mu_;
  std::array<std::string, RedisCluster::kSlots> owners_;  // "" = unknown: ask the seed
  std::map<std::string, std::unique_ptr<RedisClient>> nodes_;
  bool refreshing_ = false;
  size_t refresh_turn_ = 0;
};

// A RedisClusterClient seeded with `options` when `cluster`, else a
// RedisClient (a service's --redis_cluster).
std::unique_ptr<BlockingRedis> NewBlockingRedis(const RedisOptions& options, bool cluster);

}  // namespace sb
