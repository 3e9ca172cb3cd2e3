// A small parser of the Prometheus text exposition format, enough to read
// an upstream model server's load from its /metrics: sample lines
// (`name{label="value",...} value [timestamp]`), comments and HELP/TYPE
// lines skipped, malformed lines skipped (an upstream's metrics never fail
// the caller).
//
//   auto samples = ParsePrometheusText(body);
//   std::optional<double> running = SumSamples(samples, "vllm:num_requests_running", "");
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace sb::worker {

struct PromSample {
  std::string name;
  std::vector<std::pair<std::string, std::string>> labels;
  double value = 0;

  // The label's value, or nullptr when absent.
  const std::string* Label(std::string_view label) const;
};

std::vector<PromSample> ParsePrometheusText(std::string_view text);

// The sum of `name` over its label sets, or nullopt when it is absent. With
// `model` non-empty, samples labelled model_name (vLLM) or model (others)
// count only if that label equals `model`.
std::optional<double> SumSamples(const std::vector<PromSample>& samples, std::string_view name,
                                 std::string_view model);

// What an upstream server reports of its load, from the metrics vLLM
// (current and older names), SGLang and TGI export.
struct UpstreamMetricsLoad {
  int running = 0;
  int waiting = 0;
  double kv_cache_usage = 0;  // 0..1; 0 when not reported
};

// nullopt when the text holds none of the known metrics.
std::optional<UpstreamMetricsLoad> LoadFromPrometheusText(std::string_view text,
                                                          std::string_view model);

}  // namespace sb::worker
