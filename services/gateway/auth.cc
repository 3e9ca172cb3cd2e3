#include "gateway/auth.h"

#include "core/crypto.h"
#include "storage/pg.h"

namespace sb::gateway {
namespace {

constexpr const char* kFindKey =
    "SELECT id, org_id, coalesce(user_id, '') FROM api_keys "
    "WHERE secret_sha256 = $1 AND revoked_at IS NULL";
constexpr size_t kMaxCacheEntries = 100000;

absl::Status Rejected() { return absl::UnauthenticatedError("invalid x-api-key"); }

}  // namespace

absl::StatusOr<Principal> PgKeyStore::FindBySecretHash(const std::string& sha256) {
  std::optional<Principal> found;
  absl::Status st = pg_.RunVoid([&](pqxx::connection& c) {
    pqxx::read_transaction tx(c);
    pqxx::binarystring hash(sha256);
    auto r = tx.exec_params(kFindKey, hash);
    if (!r.empty()) {
      found = Principal{r[0][0].as<std::string>(), r[0][1].as<std::string>(),
                        r[0][2].as<std::string>()};
    }
  });
  if (!st.ok()) return st;
  if (!found) return absl::NotFoundError("no such key");
  return *found;
}

std::optional<absl::StatusOr<Principal>> Authenticator::Cached(const std::string& secret,
                                                              absl::Time now) {
  if (secret.empty()) return absl::StatusOr<Principal>(absl::UnauthenticatedError(
      "x-api-key header is required"));
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

}  // namespace sb::gateway
