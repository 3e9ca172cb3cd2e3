#include "safety/policy_store.h"

#include <spdlog/spdlog.h>

#include <functional>
#include <optional>
#include <vector>

#include "absl/strings/str_cat.h"

namespace sb::safety {
namespace {

constexpr char kVersionsSql[] = "SELECT org_id, max(version) FROM safety_policies GROUP BY org_id";
constexpr char kDocumentSql[] =
    "SELECT document::text, version, "
    "to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), created_by "
    "FROM safety_policies WHERE org_id = $1 AND ($2::bigint = 0 OR version = $2::bigint) "
    "ORDER BY version DESC LIMIT 1";
constexpr char kOrgSql[] = "SELECT 1 FROM orgs WHERE id = $1 FOR SHARE";
// Serialises concurrent sets of one org's policy; the primary key refuses
// a duplicate version anyway.
constexpr char kInsertSql[] =
    "INSERT INTO safety_policies (org_id, version, document, created_by) "
    "SELECT $1, COALESCE(max(version), 0) + 1, $2::jsonb, $3 FROM safety_policies "
    "WHERE org_id = $1 "
    "RETURNING version, "
    "to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')";

constexpr char kPlatformVersionSql[] = "SELECT max(version) FROM safety_platform_policies";
constexpr char kPlatformDocumentSql[] =
    "SELECT document::text, version, "
    "to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), created_by "
    "FROM safety_platform_policies WHERE ($1::bigint = 0 OR version = $1::bigint) "
    "ORDER BY version DESC LIMIT 1";
constexpr char kPlatformInsertSql[] =
    "INSERT INTO safety_platform_policies (version, document, created_by) "
    "SELECT COALESCE(max(version), 0) + 1, $1::jsonb, $2 FROM safety_platform_policies "
    "RETURNING version, "
    "to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')";

struct Row {
  std::string document, created_at, created_by;
  int64_t version = 0;
};

// The first row `query` reads (document, version, created_at, created_by),
// if any.
absl::StatusOr<std::optional<Row>> ReadPolicy(
    PgPool& pg, const std::function<pqxx::result(pqxx::read_transaction&)>& query) {
  return pg.Run<std::optional<Row>>([&](pqxx::connection& c) -> std::optional<Row> {
    pqxx::read_transaction tx(c);
    const pqxx::result r = query(tx);
    if (r.empty()) return std::nullopt;
    return Row{r[0][0].as<std::string>(), r[0][2].as<std::string>(), r[0][3].as<std::string>(),
               r[0][1].as<int64_t>()};
  });
}

}  // namespace

std::shared_ptr<const Policy> PolicyStore::For(std::string_view org,
                                               int64_t platform_version) const {
  std::lock_guard<std::mutex> lock(mu_);
  std::shared_ptr<const Policy> platform;
  if (platform_version > 0) {
    auto it = platform_.find(platform_version);
    if (it == platform_.end()) return nullptr;
    platform = it->second;
  } else {
    platform = platform_.empty() ? Policy::Default() : platform_.rbegin()->second;
  }
  auto own = policies_.find(absl::string_view(org.data(), org.size()));
  if (own == policies_.end()) return platform;
  auto& layered = layered_[{own->first, platform->platform_version()}];
  if (layered && layered->version() == own->second->version()) return layered;
  auto made = Policy::Layered(*platform, *own->second);
  if (!made.ok()) {
    // Two valid documents always merge into one; kept as a guard.
    spdlog::error("safety policy of org {} on the platform's version {}: {}", own->first,
                  platform->platform_version(), made.status().ToString());
    return own->second;
  }
  layered = *made;
  return layered;
}

absl::Status PolicyStore::Refresh() {
  if (pg_ == nullptr) return absl::OkStatus();
  auto versions = pg_->Run<std::vector<std::pair<std::string, int64_t>>>([](pqxx::connection& c) {
    pqxx::read_transaction tx(c);
    std::vector<std::pair<std::string, int64_t>> out;
    for (const auto& row : tx.exec(kVersionsSql)) {
      out.emplace_back(row[0].as<std::string>(), row[1].as<int64_t>());
    }
    return out;
  });
  if (!versions.ok()) return versions.status();
  auto platform = pg_->Run<int64_t>([](pqxx::connection& c) {
    pqxx::read_transaction tx(c);
    auto r = tx.exec1(kPlatformVersionSql);
    return r[0].is_null() ? int64_t{0} : r[0].as<int64_t>();
  });
  if (!platform.ok()) return platform.status();
  int64_t installed_platform;
  {
    std::lock_guard<std::mutex> lock(mu_);
    installed_platform = platform_.empty() ? 0 : platform_.rbegin()->first;
  }
  // Every version since (any may be pinned); versions are numbered 1, 2, ...
  for (int64_t v = installed_platform + 1; v <= *platform; ++v) {
    auto stored = GetPlatform(v);
    if (stored.ok()) {
      InstallPlatform(stored->policy);
      continue;
    }
    spdlog::error("the platform's safety policy version {}: {}", v, stored.status().ToString());
    // A document that no longer parses stays unloaded (a pin to it fails
    // closed); anything else is retried from this version next time.
    if (stored.status().code() != absl::StatusCode::kInvalidArgument) break;
  }
  for (const auto& [org, version] : *versions) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto own = policies_.find(org);
      if (own != policies_.end() && own->second->version() == version) continue;
    }
    auto stored = Get(org, version);
    if (!stored.ok()) {
      // A stored document that no longer parses (a rule renamed by an
      // upgrade) keeps the org on what it had: logged, not fatal.
      spdlog::error("safety policy of org {} version {}: {}", org, version,
                    stored.status().ToString());
      continue;
    }
    Install(org, stored->policy);
  }
  return absl::OkStatus();
}

void PolicyStore::Install(const std::string& org, std::shared_ptr<const Policy> policy) {
  std::lock_guard<std::mutex> lock(mu_);
  auto& slot = policies_[org];
  // Two refreshes at once (SetPolicy's and the periodic one): the older
  // read must not undo the newer.
  if (slot && slot->version() >= policy->version()) return;
  spdlog::info("safety policy of org {}: version {}", org, policy->version());
  slot = std::move(policy);
}

void PolicyStore::InstallPlatform(std::shared_ptr<const Policy> policy) {
  std::lock_guard<std::mutex> lock(mu_);
  const int64_t version = policy->platform_version();
  if (!platform_.emplace(version, std::move(policy)).second) return;
  spdlog::info("the platform's safety policy: version {} loaded", version);
}

absl::StatusOr<StoredPolicy> PolicyStore::GetPlatform(int64_t version) {
  if (pg_ == nullptr) return absl::FailedPreconditionError("safety runs without --pg");
  auto row = ReadPolicy(*pg_, [&](pqxx::read_transaction& tx) {
    return tx.exec_params(kPlatformDocumentSql, version);
  });
  if (!row.ok()) return row.status();
  if (!*row) {
    return absl::NotFoundError(version == 0 ? std::string("the platform has no safety policy")
                                            : absl::StrCat("the platform has no safety policy "
                                                           "version ",
                                                           version));
  }
  auto policy = Policy::Parse((*row)->document, 0, (*row)->version);
  if (!policy.ok()) return policy.status();
  return StoredPolicy{*policy, (*row)->created_at, (*row)->created_by};
}

absl::StatusOr<StoredPolicy> PolicyStore::SetPlatform(std::string_view document,
                                                      const std::string& created_by) {
  if (pg_ == nullptr) return absl::FailedPreconditionError("safety runs without --pg");
  auto parsed = Policy::Parse(document, 0);
  if (!parsed.ok()) return parsed.status();
  const std::string canonical = (*parsed)->json();
  auto stored = pg_->Run<std::pair<int64_t, std::string>>([&](pqxx::connection& c) {
    pqxx::work tx(c);
    tx.exec("SELECT pg_advisory_xact_lock(hashtext('safety_platform_policies'))");
    auto r = tx.exec_params1(kPlatformInsertSql, canonical, created_by);
    tx.commit();
    return std::make_pair(r[0].as<int64_t>(), r[1].as<std::string>());
  });
  if (!stored.ok()) return stored.status();
  auto policy = Policy::Parse(canonical, 0, stored->first);
  if (!policy.ok()) return policy.status();
  return StoredPolicy{*policy, stored->second, created_by};
}

absl::StatusOr<StoredPolicy> PolicyStore::Get(const std::string& org, int64_t version) {
  if (pg_ == nullptr) return absl::FailedPreconditionError("safety runs without --pg");
  auto row = ReadPolicy(
      *pg_, [&](pqxx::read_transaction& tx) { return tx.exec_params(kDocumentSql, org, version); });
  if (!row.ok()) return row.status();
  if (!*row) {
    return absl::NotFoundError(version == 0 ? absl::StrCat("org ", org, " has no safety policy")
                                            : absl::StrCat("org ", org,
                                                           " has no safety policy "
                                                           "version ",
                                                           version));
  }
  auto policy = Policy::Parse((*row)->document, (*row)->version);
  if (!policy.ok()) return policy.status();
  return StoredPolicy{*policy, (*row)->created_at, (*row)->created_by};
}

absl::StatusOr<StoredPolicy> PolicyStore::Set(const std::string& org, std::string_view document,
                                              const std::string& created_by) {
  if (pg_ == nullptr) return absl::FailedPreconditionError("safety runs without --pg");
  auto parsed = Policy::Parse(document, 0);
  if (!parsed.ok()) return parsed.status();
  const std::string canonical = (*parsed)->json();
  auto stored = pg_->Run<std::optional<std::pair<int64_t, std::string>>>(
      [&](pqxx::connection& c) -> std::optional<std::pair<int64_t, std::string>> {
        pqxx::work tx(c);
        if (tx.exec_params(kOrgSql, org).empty()) return std::nullopt;
        tx.exec_params("SELECT pg_advisory_xact_lock(hashtext('safety_policies:' || $1))", org);
        auto r = tx.exec_params1(kInsertSql, org, canonical, created_by);
        tx.commit();
        return std::make_pair(r[0].as<int64_t>(), r[1].as<std::string>());
      });
  if (!stored.ok()) return stored.status();
  if (!*stored) return absl::NotFoundError(absl::StrCat("no org ", org));
  auto policy = Policy::Parse(canonical, (*stored)->first);
  if (!policy.ok()) return policy.status();
  return StoredPolicy{*policy, (*stored)->second, created_by};
}

}  // namespace sb::safety
