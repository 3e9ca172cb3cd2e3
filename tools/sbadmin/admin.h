// Operator actions on the database: migrations, orgs and API keys. Used by
// the sbadmin command and by tests that need a seeded database.
//
// An API key is shown once, at creation: `sk-sb-<key id>-<secret>`. Only
// its first characters (to recognise it in lists) and the SHA-256 of the
// whole key are stored.
#pragma once

#include <string>

#include "absl/status/statusor.h"

namespace sb::admin {

class Admin {
 public:
  explicit Admin(std::string pg_uri) : pg_uri_(std::move(pg_uri)) {}

  // Applies, in name order, each *.sql file of `dir` not applied before,
  // each in its own transaction; returns how many ran. Concurrent runs
  // serialise on an advisory lock.
  absl::StatusOr<int> Migrate(const std::string& dir);
  absl::Status CreateOrg(const std::string& org_id, const std::string& name);
  // Returns the key's secret form.
  absl::StatusOr<std::string> CreateKey(const std::string& org_id, const std::string& user_id);
  absl::Status RevokeKey(const std::string& key_id);

 private:
  std::string pg_uri_;
};

}  // namespace sb::admin
