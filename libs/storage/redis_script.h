// A Lua script run by its SHA-1 (EVALSHA), sent whole (EVAL, which also
// caches it) until it has run once and whenever the server answers
// NOSCRIPT (after a restart, a failover or SCRIPT FLUSH). A resend after
// NOSCRIPT runs after commands sent meanwhile: sending it whole at first
// keeps a process's first calls in order. Keys first, as Redis Cluster
// routes by them.
//
//   static const RedisScript kIncr("return redis.call('INCR', KEYS[1])");
//   kIncr.Run(redis, {"counter:{org}"}, {}, done);
#pragma once

#include <atomic>
#include <string>
#include <vector>

#include "storage/redis_pipeline.h"

namespace sb {

class RedisScript {
 public:
  explicit RedisScript(std::string text);
  void Run(AsyncRedis& redis, std::vector<std::string> keys, std::vector<std::string> args,
           AsyncRedis::Callback done) const;

 private:
  std::string text_;
  std::string sha1_;
  mutable std::atomic<bool> cached_{false};
};

}  // namespace sb
