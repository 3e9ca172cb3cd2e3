#include "safety/policy_store.h"

#include <spdlog/spdlog.h>

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

}  // namespace

std::shared_ptr<const Policy> PolicyStore::For(std::string_view org) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = policies_.find(absl::string_view(org.data(), org.size()));
  return it == policies_.end() ? Policy::Default() : it->second;
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
  for (const auto& [org, version] : *versions) {
    if (For(org)->version() == version) continue;
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

absl::StatusOr<StoredPolicy> PolicyStore::Get(const std::string& org, int64_t version) {
  if (pg_ == nullptr) return absl::FailedPreconditionError("safety runs without --pg");
  struct Row {
    std::string document, created_at, created_by;
    int64_t version = 0;
  };
  auto row = pg_->Run<std::optional<Row>>([&](pqxx::connection& c) -> std::optional<Row> {
    pqxx::read_transaction tx(c);
    auto r = tx.exec_params(kDocumentSql, org, version);
    if (r.empty()) return std::nullopt;
    return Row{r[0][0].as<std::string>(), r[0][2].as<std::string>(), r[0][3].as<std::string>(),
               r[0][1].as<int64_t>()};
  });
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
