// The report's parameters, its buckets and pages, and its JSON, without a
// database.
#include "gateway/reports/reports.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

namespace sb::gateway {
namespace {

using json = nlohmann::json;

const absl::Time kNow = absl::FromUnixSeconds(1'796'000'000);  // 2026-11-30T00:53:20Z

absl::Time At(const std::string& rfc3339) {
  absl::Time t;
  std::string err;
  EXPECT_TRUE(absl::ParseTime(absl::RFC3339_full, rfc3339, &t, &err)) << err;
  return t;
}

TEST(ReportQueryTest, BucketsSnapToTheirStartInUtcAndPagesFollowTheLimit) {
  auto q = ParseReportQuery(ReportKind::kUsage,
                            "starting_at=2026-11-20T10%3A30%3A00Z&bucket_width=1h&limit=5"
                            "&group_by%5B%5D=model&group_by[]=api_key_id",
                            kNow);
  ASSERT_TRUE(q.ok()) << q.status();
  EXPECT_EQ(q->start, At("2026-11-20T10:00:00Z"));
  EXPECT_EQ(q->end, At("2026-11-20T15:00:00Z"));
  EXPECT_TRUE(q->has_more);
  EXPECT_TRUE(q->by_model);
  EXPECT_TRUE(q->by_key);

  // The next page, as next_page says; the last one stops at ending_at, in
  // the middle of a bucket.
  const json first = json::parse(ReportJson(ReportKind::kUsage, *q, {}));
  ASSERT_EQ(first["data"].size(), 5u) << "empty buckets are listed";
  EXPECT_EQ(first["data"][0]["starting_at"], "2026-11-20T10:00:00Z");
  EXPECT_EQ(first["data"][4]["ending_at"], "2026-11-20T15:00:00Z");
  EXPECT_EQ(first["has_more"], true);
  const std::string page = first["next_page"];
  auto last = ParseReportQuery(ReportKind::kUsage,
                               "starting_at=2026-11-20T10:30:00Z&ending_at=2026-11-20T16:30:00Z"
                               "&bucket_width=1h&limit=5&page=" +
                                   page,
                               kNow);
  ASSERT_TRUE(last.ok()) << last.status();
  EXPECT_EQ(last->start, At("2026-11-20T15:00:00Z"));
  EXPECT_EQ(last->end, At("2026-11-20T16:30:00Z"));
  EXPECT_FALSE(last->has_more);
  const json second = json::parse(ReportJson(ReportKind::kUsage, *last, {}));
  ASSERT_EQ(second["data"].size(), 2u);
  EXPECT_EQ(second["data"][1]["ending_at"], "2026-11-20T16:30:00Z");
  EXPECT_TRUE(second["next_page"].is_null());
}

TEST(ReportQueryTest, DefaultsAreADayWideSevenBucketsEndingWithTheCurrentOne) {
  auto q = ParseReportQuery(ReportKind::kCost, "starting_at=2026-11-27T00:00:00Z", kNow);
  ASSERT_TRUE(q.ok()) << q.status();
  EXPECT_EQ(q->width, absl::Hours(24));
  EXPECT_EQ(q->start, At("2026-11-27T00:00:00Z"));
  EXPECT_EQ(q->end, At("2026-12-01T00:00:00Z")) << "up to the end of today's bucket";
  EXPECT_FALSE(q->has_more);
  EXPECT_FALSE(q->by_model);
}

TEST(ReportQueryTest, BadParametersAreNamed) {
  const std::vector<std::pair<std::string, std::string>> bad = {
      {"", "starting_at"},
      {"starting_at=yesterday", "starting_at"},
      {"starting_at=2026-11-20T00:00:00Z&bucket_width=2h", "bucket_width"},
      {"starting_at=2026-11-20T00:00:00Z&bucket_width=1d&limit=32", "limit"},
      {"starting_at=2026-11-20T00:00:00Z&bucket_width=1m&limit=0", "limit"},
      {"starting_at=2026-11-20T00:00:00Z&group_by[]=user", "group_by"},
      {"starting_at=2026-11-20T00:00:00Z&ending_at=2026-11-19T00:00:00Z", "ending_at"},
      {"starting_at=2026-11-20T00:00:00Z&page=page_1", "page"},
      {"starting_at=2026-11-20T00:00:00Z&page=page_1795668001", "page"},  // not a bucket start
      {"starting_at=2026-11-20T00:00:00Z&page=p", "page"},
  };
  for (const auto& [query, param] : bad) {
    auto q = ParseReportQuery(ReportKind::kUsage, query, kNow);
    ASSERT_FALSE(q.ok()) << query;
    EXPECT_EQ(q.status().code(), absl::StatusCode::kInvalidArgument) << query;
    EXPECT_NE(std::string(q.status().message()).find(param), std::string::npos)
        << query << ": " << q.status();
  }
  // description groups the cost report by model; not the usage report.
  EXPECT_TRUE(ParseReportQuery(ReportKind::kCost,
                               "starting_at=2026-11-20T00:00:00Z&group_by[]=description", kNow)
                  ->by_model);
  EXPECT_FALSE(ParseReportQuery(ReportKind::kUsage,
                                "starting_at=2026-11-20T00:00:00Z&group_by[]=description", kNow)
                   .ok());
}

TEST(ReportJsonTest, RowsLandInTheirBucketsWithTheirGroupsAndCostsAsDollars) {
  auto q = ParseReportQuery(ReportKind::kCost,
                            "starting_at=2026-11-20T00:00:00Z&ending_at=2026-11-20T00:03:00Z"
                            "&bucket_width=1m&group_by[]=model",
                            kNow);
  ASSERT_TRUE(q.ok()) << q.status();
  const std::vector<ReportRow> rows = {
      {At("2026-11-20T00:00:00Z"), "a", "", 100, 20, 1'500'000, 60, 30},
      {At("2026-11-20T00:00:00Z"), "b", "", 1, 2, 3},
      {At("2026-11-20T00:02:00Z"), "a", "", 5, 5, 120'000'000},
  };
  const json cost = json::parse(ReportJson(ReportKind::kCost, *q, rows));
  ASSERT_EQ(cost["data"].size(), 3u);
  ASSERT_EQ(cost["data"][0]["results"].size(), 2u);
  EXPECT_EQ(cost["data"][0]["results"][0]["amount"], "1.500000");
  EXPECT_EQ(cost["data"][0]["results"][0]["currency"], "USD");
  EXPECT_EQ(cost["data"][0]["results"][0]["model"], "a");
  EXPECT_EQ(cost["data"][0]["results"][1]["amount"], "0.000003");
  EXPECT_TRUE(cost["data"][1]["results"].empty());
  EXPECT_EQ(cost["data"][2]["results"][0]["amount"], "120.000000");

  const json usage = json::parse(ReportJson(ReportKind::kUsage, *q, rows));
  const json& r = usage["data"][0]["results"][0];
  // Of 100 input tokens, 60 read from the cache and 30 written to it.
  EXPECT_EQ(r["uncached_input_tokens"], 10);
  EXPECT_EQ(r["output_tokens"], 20);
  EXPECT_EQ(r["cache_read_input_tokens"], 60);
  EXPECT_EQ(r["cache_creation"]["ephemeral_5m_input_tokens"], 30);
  EXPECT_EQ(r["cache_creation"]["ephemeral_1h_input_tokens"], 0);
  EXPECT_EQ(usage["data"][0]["results"][1]["uncached_input_tokens"], 1);
  EXPECT_EQ(r["model"], "a");
  EXPECT_TRUE(r["api_key_id"].is_null()) << "not grouped by key";
}

}  // namespace
}  // namespace sb::gateway
