#include "inference-worker/prometheus_text.h"

#include <cmath>

#include "gtest/gtest.h"

namespace sb::worker {
namespace {

TEST(PrometheusTextTest, ParsesSamplesLabelsAndSkipsTheRest) {
  const std::string text =
      "# HELP vllm:num_requests_running Number of requests in model execution batches.\n"
      "# TYPE vllm:num_requests_running gauge\n"
      "vllm:num_requests_running{engine=\"0\",model_name=\"meta-llama/Llama-3.1-8B\"} 3.0\r\n"
      "  up 1 1712345678000\n"
      "escaped{a=\"x\\\"y\\\\z\\n\",b=\"\"} +Inf\n"
      "garbage line here\n"
      "broken{a=\"1\" 2\n"
      "nolabels NaN\n";
  auto s = ParsePrometheusText(text);
  ASSERT_EQ(s.size(), 4u);
  EXPECT_EQ(s[0].name, "vllm:num_requests_running");
  ASSERT_NE(s[0].Label("model_name"), nullptr);
  EXPECT_EQ(*s[0].Label("model_name"), "meta-llama/Llama-3.1-8B");
  EXPECT_EQ(*s[0].Label("engine"), "0");
  EXPECT_DOUBLE_EQ(s[0].value, 3.0);
  EXPECT_EQ(s[1].name, "up");
  EXPECT_DOUBLE_EQ(s[1].value, 1);
  EXPECT_EQ(*s[2].Label("a"), "x\"y\\z\n");
  EXPECT_EQ(*s[2].Label("b"), "");
  EXPECT_TRUE(std::isinf(s[2].value));
  EXPECT_TRUE(std::isnan(s[3].value));
}

TEST(PrometheusTextTest, SumsOverLabelSetsOrPicksTheModel) {
  auto s = ParsePrometheusText(
      "m{model_name=\"a\",engine=\"0\"} 1\n"
      "m{model_name=\"a\",engine=\"1\"} 2\n"
      "m{model_name=\"b\"} 4\n");
  EXPECT_EQ(SumSamples(s, "m", ""), 7);
  EXPECT_EQ(SumSamples(s, "m", "a"), 3);
  EXPECT_EQ(SumSamples(s, "m", "b"), 4);
  EXPECT_EQ(SumSamples(s, "m", "c"), std::nullopt);
  EXPECT_EQ(SumSamples(s, "absent", ""), std::nullopt);
}

TEST(PrometheusTextTest, LoadFromVllm) {
  auto load = LoadFromPrometheusText(
      "vllm:num_requests_running{model_name=\"m\"} 5\n"
      "vllm:num_requests_waiting{model_name=\"m\"} 2\n"
      "vllm:kv_cache_usage_perc{model_name=\"m\"} 0.25\n",
      "m");
  ASSERT_TRUE(load.has_value());
  EXPECT_EQ(load->running, 5);
  EXPECT_EQ(load->waiting, 2);
  EXPECT_DOUBLE_EQ(load->kv_cache_usage, 0.25);
}

TEST(PrometheusTextTest, LoadFromOlderVllmSglangAndTgi) {
  auto old = LoadFromPrometheusText(
      "vllm:num_requests_running 1\nvllm:num_requests_waiting 0\nvllm:gpu_cache_usage_perc 0.5\n",
      "");
  ASSERT_TRUE(old.has_value());
  EXPECT_EQ(old->running, 1);
  EXPECT_DOUBLE_EQ(old->kv_cache_usage, 0.5);

  auto sglang = LoadFromPrometheusText(
      "sglang:num_running_reqs{model_name=\"q\"} 7\nsglang:num_queue_reqs{model_name=\"q\"} 3\n"
      "sglang:token_usage{model_name=\"q\"} 0.75\n",
      "");
  ASSERT_TRUE(sglang.has_value());
  EXPECT_EQ(sglang->running, 7);
  EXPECT_EQ(sglang->waiting, 3);
  EXPECT_DOUBLE_EQ(sglang->kv_cache_usage, 0.75);

  auto tgi = LoadFromPrometheusText("tgi_queue_size 4\ntgi_batch_current_size 9\n", "");
  ASSERT_TRUE(tgi.has_value());
  EXPECT_EQ(tgi->running, 9);
  EXPECT_EQ(tgi->waiting, 4);
  EXPECT_DOUBLE_EQ(tgi->kv_cache_usage, 0);

  EXPECT_FALSE(LoadFromPrometheusText("process_cpu_seconds_total 12\n", "").has_value());
  EXPECT_FALSE(LoadFromPrometheusText("", "").has_value());
}

}  // namespace
}  // namespace sb::worker
