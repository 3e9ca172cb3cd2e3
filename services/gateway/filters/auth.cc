#include "gateway/filters/auth.h"

#include <algorithm>

#include "core/api_key.h"
#include "core/crypto.h"
#include "gateway/context.h"

namespace sb::gateway {
namespace {

constexpr size_t kMaxRevoked = 100000;
// While the store is unreachable, a stale key is re-tried this often.
constexpr absl::Duration kStoreRetry = absl::Seconds(1);

absl::Status Invalid() { return absl::UnauthenticatedError("invalid API key"); }

}  // namespace

Authenticator::Authenticator(KeyStore& store, AuthOptions options, metrics::Registry& registry)
    : store_(store),
      options_(options),
      lookups_(registry.GetCounter("sb_gateway_key_lookups_total",
                                   "API keys looked up in PostgreSQL (cache misses)")) {
  static constexpr const char* kNames[kResults] = {"ok",        "stale",        "missing",
                                                   "malformed", "checksum",     "unknown",
                                                   "revoked",   "rate_limited", "unavailable"};
  for (int r = 0; r < kResults; ++r) {
    results_[r] = &registry.GetCounter("sb_gateway_auth_total",
                                       "API-key checks by outcome (stale: a verified key "
                                       "trusted while PostgreSQL is down)",
                                       {{"result", kNames[r]}});
  }
}

absl::Status Authenticator::Refuse(Result why, absl::Status status) {
  results_[why]->Inc();
  return status;
}

std::optional<absl::StatusOr<Principal>> Authenticator::Check(const std::string& secret,
                                                              const std::string& client_ip,
                                                              absl::Time now) {
  if (secret.empty()) {
    return Refuse(kMissing,
                  absl::UnauthenticatedError(
                      "an API key is required: send it as x-api-key or Authorization: Bearer"));
  }
  const ParsedKey parsed = ParseApiKey(secret);
  if (parsed.shape == KeyShape::kMalformed) return Refuse(kMalformed, Invalid());
  if (parsed.shape == KeyShape::kBadChecksum) return Refuse(kChecksum, Invalid());
  const std::string digest = Sha256(secret);
  std::lock_guard<std::mutex> lock(mu_);
  if (revoked_.contains(parsed.key_id)) return Refuse(kRevoked, Invalid());
  if (auto it = known_.find(digest); it != known_.end()) {
    const Known& k = it->second;
    if (now < k.verified + options_.ttl) {
      results_[kOk]->Inc();
      return k.principal;
    }
    // The store was just found unreachable: serve it stale until the next
    // try instead of asking (and charging) on every request.
    if (now < k.retry_at && now < k.verified + options_.stale) {
      results_[kStale]->Inc();
      return k.principal;
    }
  }
  if (auto it = unknown_.find(digest); it != unknown_.end()) {
    if (now < it->second) return Refuse(kUnknown, Invalid());
    unknown_.erase(it);
  }
  // A look-up of this key is under way (a client's first burst): join it,
  // free of charge.
  if (pending_.contains(digest)) return std::nullopt;
  if (!ChargeLookup(client_ip, now)) {
    return Refuse(
        kRateLimited,
        absl::ResourceExhaustedError(
            "too many requests with unrecognised API keys from this address; retry later"));
  }
  pending_.emplace(digest, Pending{});
  return std::nullopt;
}

bool Authenticator::ChargeLookup(const std::string& client_ip, absl::Time now) {
  if (options_.lookups_per_second_per_ip <= 0) return true;
  auto it = budgets_.find(client_ip);
  if (it == budgets_.end()) {
    // A bounded table: when full it starts over (every address gets a
    // full budget again), which an attacker cannot turn into more than one
    // burst per address per fill.
    if (budgets_.size() >= options_.max_addresses) budgets_.clear();
    it = budgets_.emplace(client_ip, Budget{options_.lookup_burst_per_ip, now}).first;
  }
  Budget& b = it->second;
  if (now > b.at) {
    b.tokens =
        std::min(options_.lookup_burst_per_ip,
                 b.tokens + absl::ToDoubleSeconds(now - b.at) * options_.lookups_per_second_per_ip);
    b.at = now;
  }
  if (b.tokens < 1) return false;
  b.tokens -= 1;
  return true;
}

absl::StatusOr<Principal> Authenticator::Lookup(const std::string& secret, absl::Time now) {
  const std::string digest = Sha256(secret);
  std::shared_ptr<std::promise<absl::StatusOr<Principal>>> mine;
  std::shared_future<absl::StatusOr<Principal>> joined;
  {
    std::lock_guard<std::mutex> lock(mu_);
    Pending& p = pending_[digest];
    if (p.started) {
      joined = p.result;
    } else {
      p.started = true;
      mine = p.promise;
    }
  }
  if (joined.valid()) return joined.get();
  auto result = Query(digest, now);  // cached before anyone else can look again
  {
    std::lock_guard<std::mutex> lock(mu_);
    pending_.erase(digest);
  }
  mine->set_value(result);
  return result;
}

absl::StatusOr<Principal> Authenticator::Query(const std::string& digest, absl::Time now) {
  lookups_.Inc();
  auto found = store_.FindBySecretHash(digest);
  std::lock_guard<std::mutex> lock(mu_);
  if (found.ok()) {
    // A revocation that arrived while the look-up ran wins.
    if (revoked_.contains(found->key_id)) return Refuse(kRevoked, Invalid());
    if (known_.size() >= options_.max_known) known_.clear();
    known_[digest] = Known{*found, now};
    results_[kOk]->Inc();
    return *found;
  }
  if (found.status().code() == absl::StatusCode::kNotFound) {
    known_.erase(digest);
    if (unknown_.size() >= options_.max_unknown) unknown_.clear();
    unknown_[digest] = now + options_.negative_ttl;
    return Refuse(kUnknown, Invalid());
  }
  // The store is unreachable: a key verified recently enough is trusted.
  if (auto it = known_.find(digest);
      it != known_.end() && now < it->second.verified + options_.stale) {
    it->second.retry_at = now + kStoreRetry;
    results_[kStale]->Inc();
    return it->second.principal;
  }
  return Refuse(kUnavailable, absl::UnavailableError("cannot verify the API key right now; retry"));
}

absl::StatusOr<Principal> Authenticator::Authenticate(const std::string& secret,
                                                      const std::string& client_ip,
                                                      absl::Time now) {
  if (auto decided = Check(secret, client_ip, now)) return *decided;
  return Lookup(secret, now);
}

void Authenticator::Revoke(const std::string& key_id) {
  std::lock_guard<std::mutex> lock(mu_);
  if (revoked_.insert(key_id).second) {
    revoked_order_.push_back(key_id);
    if (revoked_order_.size() > kMaxRevoked) {
      // The oldest revocations are long past every cache's lifetime: their
      // keys are refused by the store.
      revoked_.erase(revoked_order_.front());
      revoked_order_.pop_front();
    }
  }
  std::erase_if(known_, [&](const auto& kv) { return kv.second.principal.key_id == key_id; });
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
  if (auto decided = auth_.Check(key, ctx->request().client_ip, ctx->clock().Now())) {
    finish(*decided);
    return;
  }
  auto* auth = &auth_;
  if (!pool_.Submit([auth, key, ctx, finish] { finish(auth->Lookup(key, ctx->clock().Now())); })) {
    ctx->Fail(absl::UnavailableError("the gateway is overloaded; retry shortly"));
  }
}

}  // namespace sb::gateway
