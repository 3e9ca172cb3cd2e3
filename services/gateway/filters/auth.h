// API-key authentication. Keys are looked up by the SHA-256 of the whole
// secret (KeyStore: the database never sees or stores the secret) and
// cached for a short while, so that the hot path is a hash and a map
// look-up, and the inference API keeps serving known keys while PostgreSQL
// is away.
#pragma once

#include <map>
#include <mutex>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "core/clock.h"
#include "core/thread_pool.h"
#include "gateway/filters/filter.h"
#include "http/http_server.h"
#include "storage/api_keys.h"

namespace sb::gateway {

class Authenticator {
 public:
  Authenticator(KeyStore& store, absl::Duration ttl, absl::Duration negative_ttl)
      : store_(store), ttl_(ttl), negative_ttl_(negative_ttl) {}

  // Unauthenticated for a missing, unknown or revoked key. Blocks on a cache
  // miss: call from a worker thread, or try Cached() first.
  absl::StatusOr<Principal> Authenticate(const std::string& secret, absl::Time now);
  // A fresh cached answer, without blocking.
  std::optional<absl::StatusOr<Principal>> Cached(const std::string& secret, absl::Time now);

 private:
  struct Entry {
    absl::StatusOr<Principal> result;
    absl::Time expires;
  };
  KeyStore& store_;
  absl::Duration ttl_, negative_ttl_;
  std::mutex mu_;
  std::map<std::string, Entry> cache_;  // by SHA-256
};

// The key from `x-api-key` (Anthropic) or `Authorization: Bearer` (OpenAI).
std::string ApiKeyOf(const http::Request& r);

// Sets ctx->principal, or answers 401 (no or bad key) / 529 (the key store
// is down and the key is not cached). Cache misses are looked up on `pool`.
class AuthFilter final : public Filter {
 public:
  AuthFilter(Authenticator& auth, ThreadPool& pool) : auth_(auth), pool_(pool) {}
  std::string_view name() const override { return "auth"; }
  void Handle(const std::shared_ptr<RequestContext>& ctx, Next next) override;

 private:
  Authenticator& auth_;
  ThreadPool& pool_;
};

}  // namespace sb::gateway
