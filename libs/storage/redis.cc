#include "storage/redis.h"

#include <hiredis/hiredis.h>

namespace sb {
namespace {

timeval ToTimeval(std::chrono::milliseconds ms) {
  timeval tv;
  tv.tv_sec = static_cast<long>(ms.count() / 1000);
  tv.tv_usec = static_cast<long>((ms.count() % 1000) * 1000);
  return tv;
}

}  // namespace

RedisReply ToRedisReply(const redisReply* r) {
  RedisReply out;
  switch (r->type) {
    case REDIS_REPLY_STRING:
      out.type = RedisReply::Type::kString;
      out.str.assign(r->str, r->len);
      break;
    case REDIS_REPLY_STATUS:
      out.type = RedisReply::Type::kStatus;
      out.str.assign(r->str, r->len);
      break;
    case REDIS_REPLY_ERROR:
      out.type = RedisReply::Type::kError;
      out.str.assign(r->str, r->len);
      break;
    case REDIS_REPLY_INTEGER:
      out.type = RedisReply::Type::kInteger;
      out.integer = r->integer;
      break;
    case REDIS_REPLY_ARRAY:
      out.type = RedisReply::Type::kArray;
      for (size_t i = 0; i < r->elements; ++i) out.elements.push_back(ToRedisReply(r->element[i]));
      break;
    default:
      out.type = RedisReply::Type::kNil;
  }
  return out;
}

RedisClient::RedisClient(RedisOptions options) : options_(std::move(options)) {}

RedisClient::~RedisClient() {
  for (auto* c : idle_) redisFree(c);
}

redisContext* RedisClient::Acquire(absl::Status* error) {
  {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [this] { return !idle_.empty() || open_ < options_.pool_size; });
    if (!idle_.empty()) {
      auto* c = idle_.back();
      idle_.pop_back();
      return c;
    }
    ++open_;
  }
  const timeval tv = ToTimeval(options_.timeout);
  redisContext* c = redisConnectWithTimeout(options_.host.c_str(), options_.port, tv);
  if (c == nullptr || c->err) {
    *error = absl::UnavailableError("redis connect " + options_.host + ":" +
                                    std::to_string(options_.port) + ": " +
                                    (c ? c->errstr : "out of memory"));
    if (c) redisFree(c);
    {
      std::lock_guard<std::mutex> lock(mu_);
      --open_;
    }
    cv_.notify_one();
    return nullptr;
  }
  redisSetTimeout(c, tv);
  if (auto st = RedisAuth(c, options_.password); !st.ok()) {
    *error = st;
    redisFree(c);
    {
      std::lock_guard<std::mutex> lock(mu_);
      --open_;
    }
    cv_.notify_one();
    return nullptr;
  }
  return c;
}

absl::Status RedisAuth(redisContext* c, const std::string& password) {
  if (password.empty()) return absl::OkStatus();
  const char* argv[] = {"AUTH", password.data()};
  const size_t lens[] = {4, password.size()};
  auto* reply = static_cast<redisReply*>(redisCommandArgv(c, 2, argv, lens));
  if (reply == nullptr) return absl::UnavailableError(std::string("redis AUTH: ") + c->errstr);
  absl::Status st = absl::OkStatus();
  if (reply->type == REDIS_REPLY_ERROR) {
    // The reply names the reason (WRONGPASS, or no password configured);
    // never the password.
    st = absl::UnauthenticatedError("redis AUTH refused: " + std::string(reply->str, reply->len));
  }
  freeReplyObject(reply);
  return st;
}

void RedisClient::Release(redisContext* c, bool healthy) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (healthy) {
      idle_.push_back(c);
    } else {
      redisFree(c);
      --open_;
    }
  }
  cv_.notify_one();
}

absl::StatusOr<RedisReply> RedisClient::Command(const std::vector<std::string>& args) {
  return BlockingCommand(args, std::chrono::milliseconds(0));
}

absl::StatusOr<RedisReply> RedisClient::BlockingCommand(const std::vector<std::string>& args,
                                                        std::chrono::milliseconds block) {
  return Send(args, block, false);
}

absl::StatusOr<RedisReply> RedisClient::Asking(const std::vector<std::string>& args,
                                               std::chrono::milliseconds block) {
  return Send(args, block, true);
}

absl::StatusOr<RedisReply> RedisClient::Send(const std::vector<std::string>& args,
                                             std::chrono::milliseconds block, bool asking) {
  absl::Status error;
  redisContext* c = Acquire(&error);
  if (c == nullptr) return error;
  if (block.count() > 0) redisSetTimeout(c, ToTimeval(block + options_.timeout));
  std::vector<const char*> argv;
  std::vector<size_t> lens;
  for (const auto& a : args) {
    argv.push_back(a.data());
    lens.push_back(a.size());
  }
  // Both appended, then both replies read: ASKING holds for the next
  // command on this connection only.
  int appended = REDIS_OK;
  if (asking) appended = redisAppendCommand(c, "ASKING");
  if (appended == REDIS_OK) {
    appended = redisAppendCommandArgv(c, static_cast<int>(args.size()), argv.data(), lens.data());
  }
  redisReply* reply = nullptr;
  bool read = appended == REDIS_OK;
  for (int i = 0; read && i < (asking ? 2 : 1); ++i) {
    if (reply != nullptr) freeReplyObject(reply);
    void* r = nullptr;
    read = redisGetReply(c, &r) == REDIS_OK && r != nullptr;
    reply = static_cast<redisReply*>(r);
  }
  if (!read) {
    if (reply != nullptr) freeReplyObject(reply);
    const std::string why = c->errstr;
    Release(c, false);
    return absl::UnavailableError("redis: " + why);
  }
  if (block.count() > 0) redisSetTimeout(c, ToTimeval(options_.timeout));
  RedisReply out = ToRedisReply(reply);
  freeReplyObject(reply);
  Release(c, true);
  if (out.type == RedisReply::Type::kError) return absl::InternalError("redis: " + out.str);
  return out;
}

}  // namespace sb
