#include "storage/redis_script.h"

#include <openssl/sha.h>

#include "core/crypto.h"

namespace sb {

RedisScript::RedisScript(std::string text) : text_(std::move(text)) {
  unsigned char digest[SHA_DIGEST_LENGTH];
  SHA1(reinterpret_cast<const unsigned char*>(text_.data()), text_.size(), digest);
  sha1_ = HexEncode(std::string(reinterpret_cast<char*>(digest), sizeof digest));
}

void RedisScript::Run(AsyncRedis& redis, std::vector<std::string> keys,
                      std::vector<std::string> args, AsyncRedis::Callback done) const {
  const bool cached = cached_.load(std::memory_order_relaxed);
  std::vector<std::string> cmd = {cached ? "EVALSHA" : "EVAL", cached ? sha1_ : text_,
                                  std::to_string(keys.size())};
  cmd.reserve(3 + keys.size() + args.size());
  for (auto& k : keys) cmd.push_back(std::move(k));
  for (auto& a : args) cmd.push_back(std::move(a));
  if (!cached) {
    redis.Command(std::move(cmd), [this, done = std::move(done)](absl::StatusOr<RedisReply> r) {
      if (r.ok()) cached_.store(true, std::memory_order_relaxed);
      done(std::move(r));
    });
    return;
  }
  // The script object outlives the call (it is static or owned by the
  // caller's long-lived object).
  redis.Command(cmd,
                [&redis, this, cmd, done = std::move(done)](absl::StatusOr<RedisReply> r) mutable {
                  if (r.ok() || r.status().message().find("NOSCRIPT") == absl::string_view::npos) {
                    done(std::move(r));
                    return;
                  }
                  cmd[0] = "EVAL";
                  cmd[1] = text_;
                  redis.Command(std::move(cmd), std::move(done));
                });
}

}  // namespace sb
