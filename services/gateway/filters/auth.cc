#include "gateway/filters/auth.h"

#include "core/crypto.h"
#include "gateway/context.h"

namespace sb::gateway {
namespace {

constexpr size_t kMaxCacheEntries = 100000;

absl::Status Rejected() { return absl::UnauthenticatedError("invalid API key"); }

}  // namespace

std::optional<absl::StatusOr<Principal>> Authenticator::Cached(const std::string& secret,
                                                               absl::Time now) {
  if (secret.empty()) {
    return absl::StatusOr<Principal>(absl::UnauthenticatedError(
        "an API key is required: send it as x-api-key or Authorization: Bearer"));
  }
  const std::string digest = Sha256(secret);
  std::lock_guard<std::mutex> lock(mu_);
  auto it = cache_.find(digest);
  if (it == cache_.end() || it->second.expires <= now) return std::nullopt;
  return it->second.result;
}

absl::StatusOr<Principal> Authenticator::Authenticate(const std::string& secret, absl::Time now) {
  if (auto cached = Cached(secret, now)) return *cached;
  const std::string digest = Sha256(secret);
  auto found = store_.FindBySecretHash(digest);
  absl::StatusOr<Principal> result = found;
  absl::Duration ttl = ttl_;
  if (!found.ok()) {
    if (found.status().code() != absl::StatusCode::kNotFound) {
      // Store unavailable: serve a stale positive entry if there is one.
      std::lock_guard<std::mutex> lock(mu_);
      auto it = cache_.find(digest);
      if (it != cache_.end() && it->second.result.ok()) return it->second.result;
      return absl::UnavailableError("cannot verify the API key right now; retry");
    }
    result = Rejected();
    ttl = negative_ttl_;
  }
  std::lock_guard<std::mutex> lock(mu_);
  if (cache_.size() >= kMaxCacheEntries) cache_.clear();
  cache_[digest] = Entry{result, now + ttl};
  return result;
}

std::string ApiKeyOf(const http::Request& r) {
  std::string key = r.Header("x-api-key");
  if (key.empty()) {
    const std::string auth = r.Header("authorization");
    if (auth.size() > 7 && (auth.rfind("Bearer ", 0) == 0 || auth.rfind("bearer ", 0) == 0)) {
      key = auth.substr(7);
    }
  }
  return key;
}

void AuthFilter::Handle(const std::shared_ptr<RequestContext>& ctx, Next next) {
  auto finish = [ctx, next = std::move(next)](const absl::StatusOr<Principal>& p) {
    if (!p.ok()) {
      ctx->Fail(p.status());
      return;
    }
    ctx->principal = *p;
    next();
  };
  const std::string key = ApiKeyOf(ctx->request());
  if (auto cached = auth_.Cached(key, ctx->clock().Now())) {
    finish(*cached);
    return;
  }
  auto* auth = &auth_;
  if (!pool_.Submit(
          [auth, key, ctx, finish] { finish(auth->Authenticate(key, ctx->clock().Now())); })) {
    ctx->Fail(absl::UnavailableError("the gateway is overloaded; retry shortly"));
  }
}

}  // namespace sb::gateway
