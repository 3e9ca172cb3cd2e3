// API-key authentication, built to hold under a flood of made-up keys.
//
// A key (core/api_key.h) is checked in this order, and the first step that
// can decide does: its shape and checksum (a malformed or mistyped key is
// refused without a look-up); the ids revoked since start-up (Revoke, fed by
// PostgreSQL notifications: a revocation reaches every gateway within a
// second); the caches (verified keys by the SHA-256 of the secret, unknown
// keys briefly, in separate maps, so unknown keys can never push known ones
// out); the client address's budget of look-ups (a flood of well-formed
// unknown keys from one address is refused with 429 before it reaches the
// database, so it cannot starve the look-ups of real keys); and only then
// the KeyStore. While the store is unreachable a verified key is trusted
// for `stale` after it was last verified, and no longer.
#pragma once

#include <array>
#include <deque>
#include <future>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <unordered_map>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "core/clock.h"
#include "core/metrics.h"
#include "core/thread_pool.h"
#include "gateway/filters/filter.h"
#include "http/http_server.h"
#include "storage/api_keys.h"

namespace sb::gateway {

struct AuthOptions {
  absl::Duration ttl = absl::Seconds(60);           // a verified key is re-verified after
  absl::Duration negative_ttl = absl::Seconds(30);  // an unknown key is remembered for
  absl::Duration stale = absl::Seconds(300);        // trusted for while the store is down
  double lookups_per_second_per_ip = 5;             // look-ups of uncached keys per client address
  double lookup_burst_per_ip = 20;
  size_t max_known = 100000;      // cached verified keys
  size_t max_unknown = 100000;    // cached unknown keys
  size_t max_addresses = 100000;  // client addresses with a look-up budget
};

class Authenticator {
 public:
  Authenticator(KeyStore& store, AuthOptions options,
                metrics::Registry& registry = metrics::Default());

  // Decides without blocking when it can: Unauthenticated for a missing,
  // malformed, mistyped, revoked or cached-unknown key, ResourceExhausted
  // when `client_ip` has spent its look-ups, the principal of a cached
  // verified key. Otherwise nullopt (a look-up was charged to the address):
  // call Lookup, on a worker thread.
  std::optional<absl::StatusOr<Principal>> Check(const std::string& secret,
                                                 const std::string& client_ip, absl::Time now);
  // Asks the store (blocks). Unauthenticated for an unknown or revoked
  // key; Unavailable when the store is down and the key was not verified
  // within `stale`. Concurrent look-ups of one key share one query (and
  // only the first was charged to an address).
  absl::StatusOr<Principal> Lookup(const std::string& secret, absl::Time now);
  // Check, then Lookup when needed (tests, and callers on worker threads).
  absl::StatusOr<Principal> Authenticate(const std::string& secret, const std::string& client_ip,
                                         absl::Time now);

  // The key `key_id` is revoked: refused from now on, cached or not.
  void Revoke(const std::string& key_id);

 private:
  struct Known {
    Principal principal;
    absl::Time verified;
    // While the store is unreachable: no new look-up before this (the key
    // is served stale meanwhile, within `stale`).
    absl::Time retry_at = absl::InfinitePast();
  };
  struct Budget {
    double tokens;
    absl::Time at;
  };
  enum Result {
    kOk,
    kStale,
    kMissing,
    kMalformed,
    kChecksum,
    kUnknown,
    kRevoked,
    kRateLimited,
    kUnavailable,
    kResults
  };
  absl::Status Refuse(Result why, absl::Status status);
  bool ChargeLookup(const std::string& client_ip, absl::Time now);  // under mu_
  absl::StatusOr<Principal> Query(const std::string& digest, absl::Time now);

  KeyStore& store_;
  const AuthOptions options_;
  std::array<metrics::Counter*, kResults> results_{};
  metrics::Counter& lookups_;
  std::mutex mu_;
  std::unordered_map<std::string, Known> known_;         // by SHA-256 of the secret
  std::unordered_map<std::string, absl::Time> unknown_;  // by SHA-256: until when
  std::unordered_map<std::string, Budget> budgets_;      // by client address
  // Look-ups due or under way, by SHA-256: later requests for the same key
  // wait for the first one's answer.
  struct Pending {
    std::shared_ptr<std::promise<absl::StatusOr<Principal>>> promise =
        std::make_shared<std::promise<absl::StatusOr<Principal>>>();
    std::shared_future<absl::StatusOr<Principal>> result = promise->get_future().share();
    bool started = false;
  };
  std::unordered_map<std::string, Pending> pending_;
  std::set<std::string> revoked_;
  std::deque<std::string> revoked_order_;  // oldest first, to bound revoked_
};

// The key from `x-api-key` (Anthropic) or `Authorization: Bearer` (OpenAI).
std::string ApiKeyOf(const http::Request& r);

// Sets ctx->principal, or answers 401 (no or bad key), 429 (too many
// look-ups of unknown keys from the client's address) or 529 (the key store
// is down and the key is not cached). Look-ups run on `pool`.
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
