#include "sbadmin/admin.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <vector>

#include <pqxx/pqxx>

#include "absl/time/clock.h"
#include "core/crypto.h"
#include "core/ulid.h"

namespace sb::admin {
namespace {

constexpr const char* kCreateMigrationsTable =
    "CREATE TABLE IF NOT EXISTS schema_migrations ("
    " name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())";
constexpr const char* kMigrationLock = "SELECT pg_advisory_xact_lock(7210001)";
constexpr const char* kMigrationApplied = "SELECT 1 FROM schema_migrations WHERE name = $1";
constexpr const char* kRecordMigration = "INSERT INTO schema_migrations (name) VALUES ($1)";
constexpr const char* kInsertOrg =
    "INSERT INTO orgs (id, name) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING";
constexpr const char* kInsertKey =
    "INSERT INTO api_keys (id, org_id, user_id, prefix, secret_sha256) "
    "VALUES ($1, $2, NULLIF($3, ''), $4, $5)";
constexpr const char* kRevokeKey =
    "UPDATE api_keys SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL";

template <typename Fn>
absl::Status Guard(Fn&& fn) {
  try {
    fn();
    return absl::OkStatus();
  } catch (const pqxx::broken_connection& e) {
    return absl::UnavailableError(e.what());
  } catch (const pqxx::foreign_key_violation& e) {
    return absl::NotFoundError(e.what());
  } catch (const std::exception& e) {
    return absl::InternalError(e.what());
  }
}

}  // namespace

absl::StatusOr<int> Admin::Migrate(const std::string& dir) {
  std::vector<std::filesystem::path> files;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
    if (entry.path().extension() == ".sql") files.push_back(entry.path());
  }
  if (ec) return absl::NotFoundError("migrations directory " + dir + ": " + ec.message());
  std::sort(files.begin(), files.end());
  int applied = 0;
  absl::Status st = Guard([&] {
    pqxx::connection c(pg_uri_);
    {
      pqxx::work tx(c);
      tx.exec(kCreateMigrationsTable);
      tx.commit();
    }
    for (const auto& f : files) {
      pqxx::work tx(c);
      tx.exec(kMigrationLock);
      const std::string name = f.filename().string();
      if (!tx.exec_params(kMigrationApplied, name).empty()) continue;
      std::ifstream in(f);
      std::stringstream sql;
      sql << in.rdbuf();
      tx.exec(sql.str());
      tx.exec_params(kRecordMigration, name);
      tx.commit();
      ++applied;
    }
  });
  if (!st.ok()) return st;
  return applied;
}

absl::Status Admin::CreateOrg(const std::string& org_id, const std::string& name) {
  return Guard([&] {
    pqxx::connection c(pg_uri_);
    pqxx::work tx(c);
    tx.exec_params(kInsertOrg, org_id, name);
    tx.commit();
  });
}

absl::StatusOr<std::string> Admin::CreateKey(const std::string& org_id, const std::string& user_id) {
  UlidGenerator ids;
  const std::string key_id = ids.Next(absl::Now());
  const std::string secret = "sk-sb-" + key_id + "-" + RandomHex(24);
  const std::string digest = Sha256(secret);
  absl::Status st = Guard([&] {
    pqxx::connection c(pg_uri_);
    pqxx::work tx(c);
    pqxx::binarystring hash(digest);
    tx.exec_params(kInsertKey, key_id, org_id, user_id, secret.substr(0, 16), hash);
    tx.commit();
  });
  if (!st.ok()) return st;
  return secret;
}

absl::Status Admin::RevokeKey(const std::string& key_id) {
  bool found = false;
  absl::Status st = Guard([&] {
    pqxx::connection c(pg_uri_);
    pqxx::work tx(c);
    found = tx.exec_params(kRevokeKey, key_id).affected_rows() > 0;
    tx.commit();
  });
  if (st.ok() && !found) return absl::NotFoundError("no active key " + key_id);
  return st;
}

}  // namespace sb::admin
