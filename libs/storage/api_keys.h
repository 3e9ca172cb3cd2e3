// Where API keys are looked up: by the SHA-256 of the whole secret, so the
// database never sees or stores the secret. PgKeyStore in production,
// FakeKeyStore in libs/testing.
#pragma once

#include <atomic>
#include <functional>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "absl/synchronization/notification.h"

namespace sb {

namespace metrics {
class Gauge;
}

class PgPool;

struct Principal {
  std::string key_id;
  std::string org_id;
  std::string user_id;  // empty for org-wide keys
  bool admin = false;   // an Admin API key (reports), not for inference
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

// Follows key revocations as they happen: LISTEN on its own PostgreSQL
// connection (migration 0005's trigger notifies on every revocation or
// deletion of a key, whoever makes it), and on every (re)connect catches up
// with the keys revoked while it was not listening (all of them, the first
// time). `on_revoked` runs on the listener's thread, once or more per key.
// While PostgreSQL is unreachable it retries every second.
class KeyRevocationListener {
 public:
  KeyRevocationListener(std::string conninfo, std::function<void(const std::string&)> on_revoked);
  ~KeyRevocationListener();  // Stop()
  void Start();
  void Stop();
  // Connected and listening (tests wait for it).
  bool listening() const { return listening_.load(); }

 private:
  void Run();
  // One connection's life: listen, catch up, wait for notifications.
  void ListenOnce(std::string* since, metrics::Gauge& up);

  const std::string conninfo_;
  const std::function<void(const std::string&)> on_revoked_;
  std::atomic<bool> listening_{false};
  absl::Notification stop_;
  std::thread thread_;
};

}  // namespace sb
