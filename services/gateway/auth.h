// API-key authentication. Keys are looked up by the SHA-256 of the whole
// secret (the database never sees or stores the secret) and cached for a
// short while, so that the hot path is a hash and a map look-up, and the
// inference API keeps serving known keys while PostgreSQL is away.
#pragma once

#include <map>
#include <mutex>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace sb {
class PgPool;
}

namespace sb::gateway {

struct Principal {
  std::string key_id;
  std::string org_id;
  std::string user_id;  // empty for org-wide keys
};

// Where keys come from (PostgreSQL in production).
class KeyStore {
 public:
  virtual ~KeyStore() = default;
  // NotFound for an unknown or revoked key; Unavailable when the store is.
  virtual absl::StatusOr<Principal> FindBySecretHash(const std::string& sha256) = 0;
};

class PgKeyStore final : public KeyStore {
 public:
  explicit PgKeyStore(PgPool& pg) : pg_(pg) {}
  absl::StatusOr<Principal> FindBySecretHash(const std::string& sha256) override;

 private:
  PgPool& pg_;
};

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

}  // namespace sb::gateway
