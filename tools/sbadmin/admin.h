// Operator actions on the database: migrations, orgs and API keys. Used by
// the sbadmin command and by tests that need a seeded database.
//
// An API key is shown once, at creation: `sk-sb-<key id>-<secret><check>`
// (core/api_key.h). Only its first characters (to recognise it in lists)
// and the SHA-256 of the whole key are stored.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace sb::admin {

// Admission limits of an org, or of one of its keys, optionally for one
// model. In a change, an unset field is left as it is and 0 removes the
// limit.
struct Limits {
  std::string key_id;  // "" for the whole org
  std::string model;   // "" for every model
  std::optional<int64_t> rpm, input_tpm, output_tpm, concurrency;
};

// How the tenant scheduler treats an org (migration 0008). In a change, an
// unset field is left as it is.
struct OrgSettings {
  std::optional<double> weight;     // > 0 and finite; the share of tokens under contention
  std::optional<std::string> tier;  // a label, not empty
};

// One org as show-org prints it.
struct OrgInfo {
  std::string id;
  std::string name;
  double weight = 1;
  std::string tier;
  std::string created_at;  // ISO 8601, UTC
  std::string updated_at;  // ISO 8601, UTC
};

// One API key as list-keys shows it: never the secret.
struct KeyInfo {
  std::string id;
  std::string prefix;
  std::string user_id;     // "" for an org-wide key
  std::string created_at;  // ISO 8601, UTC
  std::string revoked_at;  // "" while the key is active
  bool admin = false;
};

class Admin {
 public:
  explicit Admin(std::string pg_uri) : pg_uri_(std::move(pg_uri)) {}

  // Applies, in name order, each *.sql file of `dir` not applied before,
  // each in its own transaction; returns how many ran. Concurrent runs
  // serialise on an advisory lock.
  absl::StatusOr<int> Migrate(const std::string& dir);
  absl::Status CreateOrg(const std::string& org_id, const std::string& name);
  // Returns the key's secret form.
  // `admin`: a key for the org's Admin API routes only (reports).
  absl::StatusOr<std::string> CreateKey(const std::string& org_id, const std::string& user_id,
                                        bool admin = false);
  // Every gateway refuses the key within a second (migration 0005).
  absl::Status RevokeKey(const std::string& key_id);
  // The org's keys, oldest first (NotFound for an unknown org).
  absl::StatusOr<std::vector<KeyInfo>> ListKeys(const std::string& org_id);
  // Upserts one row of limits (NotFound for an unknown org, or a key that
  // is not the org's).
  absl::Status SetLimits(const std::string& org_id, const Limits& change);
  // Every row of the org's limits; unset fields are no limit.
  absl::StatusOr<std::vector<Limits>> ShowLimits(const std::string& org_id);
  // Changes an org's fairness weight and/or tier: NotFound for an unknown
  // org, InvalidArgument for a weight that is not > 0 and finite, an empty
  // tier, or a change that changes nothing. The tenant scheduler applies it
  // within its reload period.
  absl::Status SetOrg(const std::string& org_id, const OrgSettings& change);
  // NotFound for an unknown org.
  absl::StatusOr<OrgInfo> ShowOrg(const std::string& org_id);

 private:
  std::string pg_uri_;
};

}  // namespace sb::admin
