// The Admin API's usage and cost reports (issue 13), shaped like
// Anthropic's so existing tooling fits:
//   GET /v1/organizations/usage_report/messages
//   GET /v1/organizations/cost_report
// with starting_at (RFC 3339, required), ending_at (exclusive; default: the
// last bucket of the page), bucket_width 1m|1h|1d (default 1d), group_by[]
// model|api_key_id (cost report: also description, the model), limit (buckets
// per page: default 60/24/7, at most 1440/168/31 for 1m/1h/1d) and page
// (next_page of the previous response). Buckets start at the start of their
// minute, hour or day (UTC) and every bucket of the page is listed, empty or
// not. Read from the ledger (usage_ledger) of the caller's org only; an
// Admin API key is required (sbadmin create-key ORG --admin).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "gateway/filters/filter.h"

namespace sb {
class PgPool;
class ThreadPool;
}  // namespace sb

namespace sb::gateway {

enum class ReportKind { kUsage, kCost };

// A report's question, parsed and checked.
struct ReportQuery {
  std::string org_id;
  absl::Duration width;   // a minute, an hour or a day
  absl::Time start;       // this page's first bucket
  absl::Time end;         // this page's end (exclusive)
  absl::Time report_end;  // ending_at, or InfiniteFuture
  bool by_model = false;
  bool by_key = false;
  bool has_more = false;  // buckets after this page, before report_end
};

// Parses a report's query string (the part after '?'), as of `now` (a
// report without ending_at ends at the page's last bucket, and never after
// the current bucket). InvalidArgument naming the parameter.
absl::StatusOr<ReportQuery> ParseReportQuery(ReportKind kind, const std::string& query,
                                             absl::Time now);

// One group of one bucket.
struct ReportRow {
  absl::Time bucket;
  std::string model;       // "" when not grouped by model
  std::string api_key_id;  // "" when not grouped by key
  int64_t input_tokens = 0;  // every prompt token, the cached ones included
  int64_t output_tokens = 0;
  int64_t cost_micros = 0;
  int64_t cache_read_tokens = 0;  // of input_tokens
  int64_t cache_write_tokens = 0;
};

class ReportSource {
 public:
  virtual ~ReportSource() = default;
  // The rows of q's page, by bucket (blocks).
  virtual absl::StatusOr<std::vector<ReportRow>> Rows(const ReportQuery& q) = 0;
};

class PgReportSource final : public ReportSource {
 public:
  explicit PgReportSource(PgPool& pg) : pg_(pg) {}
  absl::StatusOr<std::vector<ReportRow>> Rows(const ReportQuery& q) override;

 private:
  PgPool& pg_;
};

// The report's JSON: {data: [{starting_at, ending_at, results: [...]}],
// has_more, next_page}.
std::string ReportJson(ReportKind kind, const ReportQuery& q, const std::vector<ReportRow>& rows);

// Answers a report request of ctx's org: parses it, reads the rows on
// `pool` (PostgreSQL blocks) and responds.
void HandleReport(ReportKind kind, ReportSource& source, ThreadPool& pool,
                  const std::shared_ptr<RequestContext>& ctx);

// Admin routes need an admin key; every other authenticated route refuses
// one (403 permission_error).
class KeyKindFilter final : public Filter {
 public:
  explicit KeyKindFilter(bool admin) : admin_(admin) {}
  std::string_view name() const override { return admin_ ? "admin-key" : "api-key"; }
  void Handle(const std::shared_ptr<RequestContext>& ctx, Next next) override;

 private:
  const bool admin_;
};

}  // namespace sb::gateway
