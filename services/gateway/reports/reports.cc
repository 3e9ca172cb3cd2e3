#include "gateway/reports/reports.h"

#include <spdlog/spdlog.h>

#include <nlohmann/json.hpp>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "core/status.h"
#include "core/thread_pool.h"
#include "core/usd.h"
#include "gateway/context.h"
#include "gateway/dialects/fields.h"
#include "gateway/router.h"
#include "json/bounded_json.h"
#include "storage/pg.h"

namespace sb::gateway {

namespace {

using json = nlohmann::json;

constexpr const char* kReportRows =
    "SELECT (floor(extract(epoch from occurred_at) / $2) * $2)::bigint, "
    " CASE WHEN $3 THEN model ELSE '' END, CASE WHEN $4 THEN api_key_id ELSE '' END, "
    " sum(input_tokens)::bigint, sum(output_tokens)::bigint, sum(cost_micros)::bigint, "
    " sum(cache_read_tokens)::bigint, sum(cache_write_tokens)::bigint "
    "FROM usage_ledger WHERE org_id = $1 "
    " AND occurred_at >= to_timestamp($5) AND occurred_at < to_timestamp($6) "
    "GROUP BY 1, 2, 3 ORDER BY 1, 2, 3";

struct Width {
  const char* name;
  absl::Duration width;
  int default_limit;
  int max_limit;
};
constexpr Width kWidths[] = {{"1m", absl::Minutes(1), 60, 1440},
                             {"1h", absl::Hours(1), 24, 168},
                             {"1d", absl::Hours(24), 7, 31}};

// Start of the bucket holding `t` (UTC: Unix time has no leap seconds, so
// minutes, hours and days are whole multiples of the width since 1970).
absl::Time Floor(absl::Time t, absl::Duration width) {
  return absl::UnixEpoch() + absl::Floor(t - absl::UnixEpoch(), width);
}

std::string Rfc3339(absl::Time t) {
  return absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", t, absl::UTCTimeZone());
}

absl::StatusOr<absl::Time> ParseTimeParam(const std::string& value, const char* name) {
  absl::Time t;
  std::string err;
  if (!absl::ParseTime(absl::RFC3339_full, value, &t, &err)) {
    return FieldError(name, "must be an RFC 3339 time, such as 2026-12-01T00:00:00Z");
  }
  return t;
}

json NullIfEmpty(const std::string& s) { return s.empty() ? json(nullptr) : json(s); }

}  // namespace

absl::StatusOr<ReportQuery> ParseReportQuery(ReportKind kind, const std::string& query,
                                             absl::Time now) {
  std::string starting_at, ending_at, bucket_width = "1d", limit, page;
  std::vector<std::string> group_by;
  for (absl::string_view part : absl::StrSplit(query, '&', absl::SkipEmpty())) {
    const std::string_view pair(part.data(), part.size());
    const size_t eq = pair.find('=');
    // '+' is a space in a query string.
    std::string name = PercentDecode(pair.substr(0, eq));
    std::string value = eq == std::string_view::npos ? "" : std::string(pair.substr(eq + 1));
    for (char& c : value) {
      if (c == '+') c = ' ';
    }
    value = PercentDecode(value);
    if (name == "starting_at") {
      starting_at = value;
    } else if (name == "ending_at") {
      ending_at = value;
    } else if (name == "bucket_width") {
      bucket_width = value;
    } else if (name == "group_by[]" || name == "group_by") {
      group_by.push_back(value);
    } else if (name == "limit") {
      limit = value;
    } else if (name == "page") {
      page = value;
    }
    // Other filters of Anthropic's API (workspaces, service tiers...) have
    // nothing to filter here.
  }
  ReportQuery q;
  const Width* width = nullptr;
  for (const Width& w : kWidths) {
    if (bucket_width == w.name) width = &w;
  }
  if (width == nullptr) return FieldError("bucket_width", "must be one of 1m, 1h, 1d");
  q.width = width->width;
  for (const std::string& g : group_by) {
    if (g == "model" || (kind == ReportKind::kCost && g == "description")) {
      q.by_model = true;
    } else if (g == "api_key_id") {
      q.by_key = true;
    } else if (g != "workspace_id" && g != "service_tier" && g != "context_window" &&
               g != "inference_geo") {
      return FieldError("group_by",
                        "must be among model, api_key_id" +
                            std::string(kind == ReportKind::kCost ? ", description" : "") +
                            ", workspace_id, service_tier, context_window");
    }
  }
  int buckets = width->default_limit;
  if (!limit.empty() &&
      (!absl::SimpleAtoi(limit, &buckets) || buckets < 1 || buckets > width->max_limit)) {
    return FieldError("limit", "must be an integer from 1 to " + std::to_string(width->max_limit) +
                                   " for bucket_width " + width->name);
  }
  if (starting_at.empty()) return FieldError("starting_at", "Field required");
  absl::Time start;
  SB_ASSIGN_OR_RETURN(start, ParseTimeParam(starting_at, "starting_at"));
  start = Floor(start, q.width);
  // Without ending_at, the report ends with the bucket under way.
  q.report_end = Floor(now, q.width) + q.width;
  if (!ending_at.empty()) {
    SB_ASSIGN_OR_RETURN(q.report_end, ParseTimeParam(ending_at, "ending_at"));
    if (q.report_end <= start) return FieldError("ending_at", "must be after starting_at");
  }
  q.start = start;
  if (!page.empty()) {
    // page_<Unix seconds of the page's first bucket>, as next_page said.
    int64_t seconds = 0;
    if (!absl::StartsWith(page, "page_") || !absl::SimpleAtoi(page.substr(5), &seconds)) {
      return FieldError("page", "is not a next_page of this report");
    }
    q.start = absl::FromUnixSeconds(seconds);
    if (q.start < start || Floor(q.start, q.width) != q.start || q.start >= q.report_end) {
      return FieldError("page", "is not a next_page of this report");
    }
  }
  q.end = std::min(q.start + buckets * q.width, q.report_end);
  q.has_more = q.end < q.report_end;
  return q;
}

absl::StatusOr<std::vector<ReportRow>> PgReportSource::Rows(const ReportQuery& q) {
  return pg_.Run<std::vector<ReportRow>>([&](pqxx::connection& c) {
    pqxx::read_transaction tx(c);
    std::vector<ReportRow> out;
    for (const auto& r :
         tx.exec_params(kReportRows, q.org_id, absl::ToInt64Seconds(q.width), q.by_model, q.by_key,
                        absl::ToUnixSeconds(q.start), absl::ToUnixSeconds(q.end))) {
      out.push_back({absl::FromUnixSeconds(r[0].as<int64_t>()), r[1].as<std::string>(),
                     r[2].as<std::string>(), r[3].as<int64_t>(), r[4].as<int64_t>(),
                     r[5].as<int64_t>(), r[6].as<int64_t>(), r[7].as<int64_t>()});
    }
    return out;
  });
}

std::string ReportJson(ReportKind kind, const ReportQuery& q, const std::vector<ReportRow>& rows) {
  json data = json::array();
  size_t next = 0;
  for (absl::Time b = q.start; b < q.end; b += q.width) {
    json results = json::array();
    for (; next < rows.size() && rows[next].bucket == b; ++next) {
      const ReportRow& r = rows[next];
      const json model = q.by_model ? NullIfEmpty(r.model) : json(nullptr);
      const json key = q.by_key ? NullIfEmpty(r.api_key_id) : json(nullptr);
      if (kind == ReportKind::kUsage) {
        // Every cache write is reported as a 5-minute one (the engines keep
        // no lifetime per entry).
        results.push_back(
            {{"uncached_input_tokens", r.input_tokens - r.cache_read_tokens - r.cache_write_tokens},
             {"cache_creation",
              {{"ephemeral_1h_input_tokens", 0},
               {"ephemeral_5m_input_tokens", r.cache_write_tokens}}},
             {"cache_read_input_tokens", r.cache_read_tokens},
             {"output_tokens", r.output_tokens},
             {"server_tool_use", {{"web_search_requests", 0}}},
             {"api_key_id", key},
             {"workspace_id", nullptr},
             {"model", model},
             {"service_tier", nullptr},
             {"context_window", nullptr}});
      } else {
        results.push_back({{"currency", "USD"},
                           {"amount", FormatUsd(r.cost_micros)},
                           {"workspace_id", nullptr},
                           {"description", model},
                           {"cost_type", "tokens"},
                           {"context_window", nullptr},
                           {"model", model},
                           {"service_tier", nullptr},
                           {"token_type", nullptr},
                           {"api_key_id", key}});
      }
    }
    data.push_back({{"starting_at", Rfc3339(b)},
                    {"ending_at", Rfc3339(std::min(b + q.width, q.report_end))},
                    {"results", std::move(results)}});
  }
  return sb::json::Dump(
      {{"data", std::move(data)},
       {"has_more", q.has_more},
       {"next_page",
        q.has_more ? json("page_" + std::to_string(absl::ToUnixSeconds(q.end))) : json(nullptr)}});
}

void HandleReport(ReportKind kind, ReportSource& source, ThreadPool& pool,
                  const std::shared_ptr<RequestContext>& ctx) {
  auto q = ParseReportQuery(kind, ctx->request().query, ctx->clock().Now());
  if (!q.ok()) {
    ctx->Fail(q.status());
    return;
  }
  q->org_id = ctx->principal->org_id;
  auto* rows_of = &source;
  const bool queued = pool.Submit([kind, rows_of, q = *q, ctx] {
    auto rows = rows_of->Rows(q);
    if (!rows.ok()) {
      spdlog::warn("request_id={} report: {}", ctx->request_id(), rows.status().ToString());
      ctx->Fail(absl::UnavailableError("the report cannot be read right now; retry shortly"));
      return;
    }
    ctx->RespondJson(200, ReportJson(kind, q, *rows));
  });
  if (!queued) ctx->Fail(absl::UnavailableError("the gateway is overloaded; retry shortly"));
}

void KeyKindFilter::Handle(const std::shared_ptr<RequestContext>& ctx, Next next) {
  const bool admin = ctx->principal.has_value() && ctx->principal->admin;
  if (admin != admin_) {
    ctx->Fail(absl::PermissionDeniedError(
        admin_ ? "this route needs an Admin API key"
               : "an Admin API key can only call the Admin API (/v1/organizations/...)"));
    return;
  }
  next();
}

}  // namespace sb::gateway
