#include "core/metrics.h"

#include "gtest/gtest.h"

namespace sb::metrics {
namespace {

TEST(MetricsTest, CounterAndGaugeRender) {
  Registry r;
  r.GetCounter("sb_requests_total", "Requests", {{"route", "/v1/messages"}}).Inc();
  r.GetCounter("sb_requests_total", "Requests", {{"route", "/v1/messages"}}).Inc(2);
  r.GetGauge("sb_in_flight", "In flight").Set(4);
  const std::string text = r.Render();
  EXPECT_NE(text.find("# TYPE sb_requests_total counter\n"), std::string::npos) << text;
  EXPECT_NE(text.find("sb_requests_total{route=\"/v1/messages\"} 3\n"), std::string::npos) << text;
  EXPECT_NE(text.find("# TYPE sb_in_flight gauge\nsb_in_flight 4\n"), std::string::npos) << text;
}

TEST(MetricsTest, HistogramIsCumulative) {
  Registry r;
  auto& h = r.GetHistogram("sb_latency_seconds", "Latency", {{"op", "x"}}, {0.1, 1});
  h.Observe(0.05);
  h.Observe(0.5);
  h.Observe(5);
  const std::string text = r.Render();
  EXPECT_NE(text.find("sb_latency_seconds_bucket{op=\"x\",le=\"0.10000000000000001\"} 1\n"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("sb_latency_seconds_bucket{op=\"x\",le=\"1\"} 2\n"), std::string::npos);
  EXPECT_NE(text.find("sb_latency_seconds_bucket{op=\"x\",le=\"+Inf\"} 3\n"), std::string::npos);
  EXPECT_NE(text.find("sb_latency_seconds_count{op=\"x\"} 3\n"), std::string::npos);
  EXPECT_NE(text.find("sb_latency_seconds_sum{op=\"x\"} 5.5"), std::string::npos);
}

TEST(MetricsTest, EscapesLabelValues) {
  EXPECT_EQ(RenderLabels({{"a", "x\"y\\z\nw"}}), "a=\"x\\\"y\\\\z\\nw\"");
}

TEST(MetricsTest, TypeClashAborts) {
  Registry r;
  r.GetCounter("sb_x", "x");
  EXPECT_DEATH(r.GetGauge("sb_x", "x"), "different types");
}

}  // namespace
}  // namespace sb::metrics
