// Per-org safety policies (org_policy.h), versioned in PostgreSQL's
// safety_policies (migration 0014): Set adds a version, the highest is the
// org's policy. The platform's policy is versioned the same way in
// safety_platform_policies (migration 0022, SetPlatform); an org's policy is
// layered on it (Policy::Layered), and an org with no policy has it alone
// (or, when the platform has none either, the built-in default). A safety
// process keeps every policy in memory and Refresh()es them (one query for
// the versions, then only what changed), so a check never waits on the
// database.
//
// When PostgreSQL cannot be reached, Refresh fails and the policies last
// loaded stay in force (a new version takes effect once it is back).
//
//   PolicyStore store(&pg);
//   if (auto st = store.Refresh(); !st.ok()) ...   // at start, then every 2 s
//   auto policy = store.For(org);                  // never null
#pragma once

#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "safety/org_policy.h"
#include "storage/pg.h"

namespace sb::safety {

struct StoredPolicy {
  std::shared_ptr<const Policy> policy;
  std::string created_at;  // RFC 3339
  std::string created_by;
};

class PolicyStore {
 public:
  // `pg` null: every org has the default policy, and Set/Get fail.
  explicit PolicyStore(PgPool* pg) : pg_(pg) {}

  // The policy `org`'s checks run under: its own on the platform's, the
  // version in force or `platform_version` (a model version's pin). Null
  // when that platform version is not known here (yet).
  std::shared_ptr<const Policy> For(std::string_view org, int64_t platform_version = 0) const;
  absl::Status Refresh();

  // Validates `document` (InvalidArgument says what is wrong) and stores it
  // as the org's next version. NotFound: no such org.
  absl::StatusOr<StoredPolicy> Set(const std::string& org, std::string_view document,
                                   const std::string& created_by);
  // The org's policy as stored: its highest version, or `version` (0: the
  // highest). NotFound when it has none.
  absl::StatusOr<StoredPolicy> Get(const std::string& org, int64_t version = 0);
  // In force from now on, unless a newer version already is.
  void Install(const std::string& org, std::shared_ptr<const Policy> policy);

  // The platform's policy, as the org's above (Get: NotFound when it has
  // none; its policy's platform_version() is its version).
  absl::StatusOr<StoredPolicy> SetPlatform(std::string_view document,
                                           const std::string& created_by);
  absl::StatusOr<StoredPolicy> GetPlatform(int64_t version = 0);
  void InstallPlatform(std::shared_ptr<const Policy> policy);

 private:
  PgPool* pg_;
  mutable std::mutex mu_;
  // Each org's own policy, as stored (not layered).
  absl::flat_hash_map<std::string, std::shared_ptr<const Policy>> policies_;
  // Every platform version, loaded once; the last is in force (none: the
  // built-in default).
  std::map<int64_t, std::shared_ptr<const Policy>> platform_;
  // Each org's policy layered on a platform version, made when first needed
  // after its own changed.
  mutable absl::flat_hash_map<std::pair<std::string, int64_t>, std::shared_ptr<const Policy>>
      layered_;
};

}  // namespace sb::safety
