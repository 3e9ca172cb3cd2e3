// Where API keys are looked up: by the SHA-256 of the whole secret, so the
// database never sees or stores the secret. PgKeyStore in production,
// FakeKeyStore in libs/testing.
#pragma once

#include <string>

#include "absl/status/statusor.h"

namespace sb {

class PgPool;

struct Principal {
  std::string key_id;
  std::string org_id;
  std::string user_id;  // empty for org-wide keys
};

class KeyStore {
 public:
  virtual ~KeyStore() = default;
  // NotFound for an unknown or revoked key; Unavailable when the store is.
  // Blocks: call from a worker thread.
  virtual absl::StatusOr<Principal> FindBySecretHash(const std::string& sha256) = 0;
};

class PgKeyStore final : public KeyStore {
 public:
  explicit PgKeyStore(PgPool& pg) : pg_(pg) {}
  absl::StatusOr<Principal> FindBySecretHash(const std::string& sha256) override;

 private:
  PgPool& pg_;
};

}  // namespace sb
