// Redis through hiredis' blocking API behind a small connection pool.
// Command() sends one command (arguments are binary-safe) and returns the
// reply as a value tree. A connection that fails is dropped and reopened on
// the next call; its error is Unavailable. Calls block: keep them off event
// threads.
//
//   auto r = redis.Command({"XADD", key, "0-1", "text", "hello"});
#pragma once

#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

struct redisContext;
struct redisReply;

namespace sb {

struct RedisReply {
  enum class Type { kNil, kString, kStatus, kInteger, kArray, kError };
  Type type = Type::kNil;
  std::string str;  // kString, kStatus, kError
  long long integer = 0;
  std::vector<RedisReply> elements;

  bool is_nil() const { return type == Type::kNil; }
};

// Copies a hiredis reply into a RedisReply.
RedisReply ToRedisReply(const redisReply* r);

struct RedisOptions {
  std::string host = "127.0.0.1";
  int port = 6379;
  int pool_size = 4;
  std::chrono::milliseconds timeout{2000};
  // Sent with AUTH on every new connection when not empty (requirepass).
  std::string password;
};

// AUTH on a fresh connection (nothing when `password` is empty):
// Unauthenticated with Redis's reason when refused.
absl::Status RedisAuth(redisContext* c, const std::string& password);

// Blocking calls to one Redis server (RedisClient) or to a Redis Cluster
// (RedisClusterClient, redis_cluster.h).
class BlockingRedis {
 public:
  virtual ~BlockingRedis() = default;

  // An error reply from the server is returned as a status (Internal), so
  // that callers only see successful replies as values.
  virtual absl::StatusOr<RedisReply> Command(const std::vector<std::string>& args) = 0;
  // Like Command but with a longer socket timeout, for blocking reads
  // (XREAD BLOCK ms); `block` must exceed the server-side wait.
  virtual absl::StatusOr<RedisReply> BlockingCommand(const std::vector<std::string>& args,
                                                     std::chrono::milliseconds block) = 0;
  // Keys of one read group may go in one multi-key command (one XREAD):
  // every key on a single server (""), a hash slot's on a cluster.
  virtual std::string ReadGroupOf(std::string_view key) const = 0;
};

class RedisClient final : public BlockingRedis {
 public:
  explicit RedisClient(RedisOptions options);
  ~RedisClient() override;

  absl::StatusOr<RedisReply> Command(const std::vector<std::string>& args) override;
  absl::StatusOr<RedisReply> BlockingCommand(const std::vector<std::string>& args,
                                             std::chrono::milliseconds block) override;
  std::string ReadGroupOf(std::string_view) const override { return ""; }
  // ASKING, then the command on the same connection (a Redis Cluster slot
  // being migrated here); the reply is the command's.
  absl::StatusOr<RedisReply> Asking(const std::vector<std::string>& args,
                                    std::chrono::milliseconds block);

 private:
  absl::StatusOr<RedisReply> Send(const std::vector<std::string>& args,
                                  std::chrono::milliseconds block, bool asking);
  redisContext* Acquire(absl::Status* error);
  void Release(redisContext* c, bool healthy);

  RedisOptions options_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<redisContext*> idle_;
  int open_ = 0;
};

}  // namespace sb
