#include "sbadmin/admin.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <optional>
#include <pqxx/pqxx>
#include <sstream>
#include <vector>

#include "absl/time/clock.h"
#include "core/api_key.h"
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
    "INSERT INTO api_keys (id, org_id, user_id, prefix, secret_sha256, admin) "
    "VALUES ($1, $2, NULLIF($3, ''), $4, $5, $6)";
constexpr const char* kRevokeKey =
    "UPDATE api_keys SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL";
constexpr const char* kListKeys =
    "SELECT id, prefix, coalesce(user_id, ''),"
    " to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'),"
    " coalesce(to_char(revoked_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), ''),"
    " admin FROM api_keys WHERE org_id = $1 ORDER BY created_at, id";
constexpr const char* kOrgExists = "SELECT 1 FROM orgs WHERE id = $1";
constexpr const char* kKeyOfOrg = "SELECT 1 FROM api_keys WHERE id = $1 AND org_id = $2";
// $4..$7: NULL leaves a limit as it is, 0 removes it, N > 0 sets it.
constexpr const char* kUpsertLimits =
    "INSERT INTO rate_limits (org_id, key_id, model, rpm, input_tpm, output_tpm, concurrency) "
    "VALUES ($1, $2, $3, NULLIF($4, 0), NULLIF($5, 0), NULLIF($6, 0), NULLIF($7, 0)) "
    "ON CONFLICT (org_id, key_id, model) DO UPDATE SET "
    " rpm = CASE WHEN $4::bigint IS NULL THEN rate_limits.rpm ELSE NULLIF($4, 0) END,"
    " input_tpm = CASE WHEN $5::bigint IS NULL THEN rate_limits.input_tpm ELSE NULLIF($5, 0) END,"
    " output_tpm = CASE WHEN $6::bigint IS NULL THEN rate_limits.output_tpm ELSE NULLIF($6, 0) END,"
    " concurrency = CASE WHEN $7::bigint IS NULL THEN rate_limits.concurrency "
    "   ELSE NULLIF($7, 0) END,"
    " updated_at = clock_timestamp()";
constexpr const char* kShowLimits =
    "SELECT key_id, model, rpm, input_tpm, output_tpm, concurrency FROM rate_limits "
    "WHERE org_id = $1 ORDER BY key_id, model";

// $2, $3: NULL leaves the column as it is. The trigger of migration 0008
// moves updated_at, which is how the scheduler notices.
constexpr const char* kUpdateOrg =
    "UPDATE orgs SET weight = coalesce($2::double precision, weight),"
    " tier = coalesce($3::text, tier) WHERE id = $1";
constexpr const char* kShowOrg =
    "SELECT id, name, weight, tier,"
    " to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'),"
    " to_char(updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')"
    " FROM orgs WHERE id = $1";

constexpr size_t kMaxTierLength = 64;

bool ValidTier(const std::string& tier) {
  if (tier.empty() || tier.size() > kMaxTierLength) return false;
  return std::all_of(tier.begin(), tier.end(), [](unsigned char ch) {
    return std::isalnum(ch) || ch == '-' || ch == '_' || ch == '.';
  });
}

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
      // Under the lock too: pods migrating at once on a fresh database
      // would race on creating the table (a catalog unique violation).
      pqxx::work tx(c);
      tx.exec(kMigrationLock);
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

absl::StatusOr<std::string> Admin::CreateKey(const std::string& org_id, const std::string& user_id,
                                             bool admin) {
  UlidGenerator ids;
  const std::string key_id = ids.Next(absl::Now());
  const std::string secret = FormatApiKey(key_id, RandomHex(16));
  const std::string digest = Sha256(secret);
  // The id and four characters of the secret: enough to tell keys apart.
  const std::string prefix =
      secret.substr(0, std::string_view("sk-sb-").size() + key_id.size() + 5);
  absl::Status st = Guard([&] {
    pqxx::connection c(pg_uri_);
    pqxx::work tx(c);
    pqxx::binarystring hash(digest);
    tx.exec_params(kInsertKey, key_id, org_id, user_id, prefix, hash, admin);
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

absl::StatusOr<std::vector<KeyInfo>> Admin::ListKeys(const std::string& org_id) {
  std::vector<KeyInfo> out;
  absl::Status found;
  absl::Status st = Guard([&] {
    pqxx::connection c(pg_uri_);
    pqxx::read_transaction tx(c);
    if (tx.exec_params(kOrgExists, org_id).empty()) {
      found = absl::NotFoundError("no org " + org_id);
      return;
    }
    for (const auto& row : tx.exec_params(kListKeys, org_id)) {
      out.push_back({row[0].as<std::string>(), row[1].as<std::string>(), row[2].as<std::string>(),
                     row[3].as<std::string>(), row[4].as<std::string>(), row[5].as<bool>()});
    }
  });
  if (!st.ok()) return st;
  if (!found.ok()) return found;
  return out;
}

absl::Status Admin::SetLimits(const std::string& org_id, const Limits& change) {
  for (const auto& v : {change.rpm, change.input_tpm, change.output_tpm, change.concurrency}) {
    if (v && *v < 0) return absl::InvalidArgumentError("a limit is a count >= 0 (0 removes it)");
  }
  absl::Status found;
  absl::Status st = Guard([&] {
    pqxx::connection c(pg_uri_);
    pqxx::work tx(c);
    if (tx.exec_params(kOrgExists, org_id).empty()) {
      found = absl::NotFoundError("no org " + org_id);
      return;
    }
    if (!change.key_id.empty() && tx.exec_params(kKeyOfOrg, change.key_id, org_id).empty()) {
      found = absl::NotFoundError("no key " + change.key_id + " in org " + org_id);
      return;
    }
    tx.exec_params(kUpsertLimits, org_id, change.key_id, change.model, change.rpm, change.input_tpm,
                   change.output_tpm, change.concurrency);
    tx.commit();
  });
  return st.ok() ? found : st;
}

absl::StatusOr<std::vector<Limits>> Admin::ShowLimits(const std::string& org_id) {
  std::vector<Limits> out;
  absl::Status st = Guard([&] {
    pqxx::connection c(pg_uri_);
    pqxx::read_transaction tx(c);
    for (const auto& r : tx.exec_params(kShowLimits, org_id)) {
      Limits l;
      l.key_id = r[0].as<std::string>();
      l.model = r[1].as<std::string>();
      auto opt = [&](int i) {
        return r[i].is_null() ? std::optional<int64_t>()
                              : std::optional<int64_t>(r[i].as<int64_t>());
      };
      l.rpm = opt(2);
      l.input_tpm = opt(3);
      l.output_tpm = opt(4);
      l.concurrency = opt(5);
      out.push_back(std::move(l));
    }
  });
  if (!st.ok()) return st;
  return out;
}

absl::Status Admin::SetOrg(const std::string& org_id, const OrgSettings& change) {
  if (!change.weight && !change.tier) {
    return absl::InvalidArgumentError("nothing to change: give --weight=N and/or --tier=NAME");
  }
  if (change.weight && !(std::isfinite(*change.weight) && *change.weight > 0)) {
    return absl::InvalidArgumentError("a weight is a finite number > 0 (1 is the default)");
  }
  if (change.tier && !ValidTier(*change.tier)) {
    return absl::InvalidArgumentError(
        "a tier is 1 to 64 characters: letters, digits, '-', '_' or '.'");
  }
  bool found = false;
  absl::Status st = Guard([&] {
    pqxx::connection c(pg_uri_);
    pqxx::work tx(c);
    found = tx.exec_params(kUpdateOrg, org_id, change.weight, change.tier).affected_rows() > 0;
    tx.commit();
  });
  if (st.ok() && !found) return absl::NotFoundError("no org " + org_id);
  return st;
}

absl::StatusOr<OrgInfo> Admin::ShowOrg(const std::string& org_id) {
  std::optional<OrgInfo> out;
  absl::Status st = Guard([&] {
    pqxx::connection c(pg_uri_);
    pqxx::read_transaction tx(c);
    auto rows = tx.exec_params(kShowOrg, org_id);
    if (rows.empty()) return;
    const auto& r = rows[0];
    out = OrgInfo{r[0].as<std::string>(), r[1].as<std::string>(), r[2].as<double>(),
                  r[3].as<std::string>(), r[4].as<std::string>(), r[5].as<std::string>()};
  });
  if (!st.ok()) return st;
  if (!out) return absl::NotFoundError("no org " + org_id);
  return *std::move(out);
}

}  // namespace sb::admin
