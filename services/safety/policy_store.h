// Per-org safety policies (org_policy.h), versioned in PostgreSQL's
// safety_policies (migration 0014): Set adds a version, the highest is the
// org's policy. A safety process keeps every org's policy in memory and
// Refresh()es it (one query for the versions, then only what changed), so a
// check never waits on the database; an org with no policy has the
// platform's default.
//
// When PostgreSQL cannot be reached, Refresh fails and the policies last
// loaded stay in force (a new version takes effect once it is back).
//
//   PolicyStore store(&pg);
//   if (auto st = store.Refresh(); !st.ok()) ...   // at start, then every 2 s
//   auto policy = store.For(org);                  // never null
#pragma once

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

  std::shared_ptr<const Policy> For(std::string_view org) const;
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

 private:
  PgPool* pg_;
  mutable std::mutex mu_;
  absl::flat_hash_map<std::string, std::shared_ptr<const Policy>> policies_;
};

}  // namespace sb::safety
