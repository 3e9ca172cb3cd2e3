// The admission limits every gateway applies, from PostgreSQL's
// rate_limits (set with `sbadmin set-limits`). A LimitsCache holds them in
// memory; Refresh() reads the rows changed since the last read (with an
// overlap, so a transaction that committed late is not missed), and the
// gateway calls it every couple of seconds: a change reaches every gateway
// within the refresh period, with no restart.
#pragma once

#include <map>
#include <mutex>
#include <string>
#include <tuple>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace sb {
class PgPool;
}

namespace sb::gateway {

// One row: limits of an org, narrowed to a key and/or a model ("" = all).
// 0 is no limit.
struct LimitRow {
  std::string org_id;
  std::string key_id;
  std::string model;
  int64_t rpm = 0;
  int64_t input_tpm = 0;
  int64_t output_tpm = 0;
  int64_t concurrency = 0;
  absl::Time updated_at;

  bool limits_nothing() const {
    return rpm == 0 && input_tpm == 0 && output_tpm == 0 && concurrency == 0;
  }
  // A stable name for the row's counters ("org", "org/key=K", ...).
  std::string Scope() const;
};

class LimitsSource {
 public:
  virtual ~LimitsSource() = default;
  // Rows changed at or after `since` (blocks).
  virtual absl::StatusOr<std::vector<LimitRow>> ChangedSince(absl::Time since) = 0;
};

class PgLimitsSource final : public LimitsSource {
 public:
  explicit PgLimitsSource(PgPool& pg) : pg_(pg) {}
  absl::StatusOr<std::vector<LimitRow>> ChangedSince(absl::Time since) override;

 private:
  PgPool& pg_;
};

class LimitsCache {
 public:
  explicit LimitsCache(LimitsSource& source, absl::Duration overlap = absl::Seconds(10))
      : source_(source), overlap_(overlap) {}

  // Reads what changed (blocks); on an error the cache keeps what it has.
  absl::Status Refresh();
  // The rows that apply to a request, the org's first.
  std::vector<LimitRow> For(const std::string& org_id, const std::string& key_id,
                            const std::string& model) const;
  // Replaces a row (tests, and rows a refresh returned).
  void Put(LimitRow row);

 private:
  LimitsSource& source_;
  absl::Duration overlap_;
  mutable std::mutex mu_;
  // org -> (key, model) -> row
  std::map<std::string, std::map<std::pair<std::string, std::string>, LimitRow>> rows_;
  absl::Time high_water_ = absl::InfinitePast();
};

}  // namespace sb::gateway
