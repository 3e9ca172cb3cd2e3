#include "storage/api_keys.h"

#include <spdlog/spdlog.h>

#include <optional>

#include "core/metrics.h"
#include "storage/pg.h"

namespace sb {
namespace {

constexpr const char* kFindKey =
    "SELECT id, org_id, coalesce(user_id, ''), admin FROM api_keys "
    "WHERE secret_sha256 = $1 AND revoked_at IS NULL";

constexpr const char* kRevocationChannel = "api_key_revoked";
// Keys revoked since $1 (PostgreSQL's clock). The bound keeps a first
// catch-up of a very old installation small: older revocations are refused
// by the look-up anyway.
constexpr const char* kRevokedSince =
    "SELECT id FROM api_keys WHERE revoked_at IS NOT NULL AND revoked_at >= $1::timestamptz "
    "ORDER BY revoked_at DESC LIMIT 100000";
// Where the next catch-up starts: this transaction's start (the same now()
// as the catch-up's), with a margin.
constexpr const char* kNextSince =
    "SELECT to_char(now() - interval '2 seconds', 'YYYY-MM-DD HH24:MI:SS.US TZH:TZM')";

class Receiver final : public pqxx::notification_receiver {
 public:
  Receiver(pqxx::connection_base& c, std::function<void(const std::string&)> fn)
      : pqxx::notification_receiver(c, kRevocationChannel), fn_(std::move(fn)) {}
  void operator()(const std::string& payload, int) override { fn_(payload); }

 private:
  const std::function<void(const std::string&)> fn_;
};

}  // namespace

absl::StatusOr<Principal> PgKeyStore::FindBySecretHash(const std::string& sha256) {
  std::optional<Principal> found;
  absl::Status st = pg_.RunVoid([&](pqxx::connection& c) {
    pqxx::read_transaction tx(c);
    pqxx::binarystring hash(sha256);
    auto r = tx.exec_params(kFindKey, hash);
    if (!r.empty()) {
      found = Principal{r[0][0].as<std::string>(), r[0][1].as<std::string>(),
                        r[0][2].as<std::string>(), r[0][3].as<bool>()};
    }
  });
  if (!st.ok()) return st;
  if (!found) return absl::NotFoundError("no such key");
  return *found;
}

KeyRevocationListener::KeyRevocationListener(std::string conninfo,
                                             std::function<void(const std::string&)> on_revoked)
    : conninfo_(std::move(conninfo)), on_revoked_(std::move(on_revoked)) {}

KeyRevocationListener::~KeyRevocationListener() { Stop(); }

void KeyRevocationListener::Start() {
  thread_ = std::thread([this] { Run(); });
}

void KeyRevocationListener::Stop() {
  if (!stop_.HasBeenNotified()) stop_.Notify();
  if (thread_.joinable()) thread_.join();
}

void KeyRevocationListener::Run() {
  auto& up =
      metrics::Default().GetGauge("sb_key_revocation_listener_up",
                                  "1 while revocations are followed live from PostgreSQL (LISTEN)");
  std::string since = "-infinity";
  while (!stop_.HasBeenNotified()) {
    try {
      ListenOnce(&since, up);
    } catch (const std::exception& e) {
      spdlog::warn("key revocations: not listening ({}); retrying in 1 s", e.what());
    }
    listening_ = false;
    up.Set(0);
    stop_.WaitForNotificationWithTimeout(absl::Seconds(1));
  }
}

void KeyRevocationListener::ListenOnce(std::string* since, metrics::Gauge& up) {
  auto& revocations = metrics::Default().GetCounter("sb_key_revocations_total",
                                                    "Key revocations received (live or caught up)");
  auto notify = [&](const std::string& key_id) {
    revocations.Inc();
    on_revoked_(key_id);
  };
  pqxx::connection c(conninfo_);
  Receiver receiver(c, notify);
  // Listening (the receiver's LISTEN) before the catch-up, so that nothing
  // revoked in between is missed; a key reported twice is harmless.
  {
    pqxx::read_transaction tx(c);
    auto r = tx.exec_params(kRevokedSince, *since);
    const std::string next = tx.exec1(kNextSince)[0].as<std::string>();
    tx.commit();
    for (const auto& row : r) notify(row[0].as<std::string>());
    *since = next;
  }
  listening_ = true;
  up.Set(1);
  while (!stop_.HasBeenNotified()) {
    c.await_notification(0, 200'000);  // wakes every 200 ms to see stop_
    if (!c.is_open()) throw std::runtime_error("connection lost");
  }
}

}  // namespace sb
