#include "inference-worker/prometheus_text.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>

namespace sb::worker {

namespace {

bool IsNameChar(char c, bool first) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':' ||
         (!first && c >= '0' && c <= '9');
}

// Parses one sample line; false when it is malformed.
bool ParseLine(std::string_view line, PromSample& out) {
  size_t i = 0;
  while (i < line.size() && IsNameChar(line[i], i == 0)) ++i;
  if (i == 0) return false;
  out.name.assign(line.substr(0, i));
  out.labels.clear();
  if (i < line.size() && line[i] == '{') {
    ++i;
    while (true) {
      while (i < line.size() && (line[i] == ' ' || line[i] == ',')) ++i;
      if (i >= line.size()) return false;
      if (line[i] == '}') {
        ++i;
        break;
      }
      const size_t start = i;
      while (i < line.size() && IsNameChar(line[i], i == start)) ++i;
      if (i == start || i + 1 >= line.size() || line[i] != '=' || line[i + 1] != '"') return false;
      std::string key(line.substr(start, i - start));
      i += 2;
      std::string value;
      while (i < line.size() && line[i] != '"') {
        if (line[i] == '\\' && i + 1 < line.size()) {
          ++i;
          value.push_back(line[i] == 'n' ? '\n' : line[i]);
        } else {
          value.push_back(line[i]);
        }
        ++i;
      }
      if (i >= line.size()) return false;
      ++i;  // the closing quote
      out.labels.emplace_back(std::move(key), std::move(value));
    }
  }
  while (i < line.size() && (line[i] == ' ' || line[i] == '\t')) ++i;
  size_t end = i;
  while (end < line.size() && line[end] != ' ' && line[end] != '\t') ++end;
  if (end == i) return false;
  const std::string number(line.substr(i, end - i));
  char* parsed_end = nullptr;
  out.value = std::strtod(number.c_str(), &parsed_end);  // Nan, +Inf and -Inf included
  return parsed_end == number.c_str() + number.size();
}

}  // namespace

const std::string* PromSample::Label(std::string_view label) const {
  for (const auto& [k, v] : labels) {
    if (k == label) return &v;
  }
  return nullptr;
}

std::vector<PromSample> ParsePrometheusText(std::string_view text) {
  std::vector<PromSample> out;
  PromSample sample;
  while (!text.empty()) {
    const size_t nl = text.find('\n');
    std::string_view line = text.substr(0, nl);
    text = nl == std::string_view::npos ? std::string_view() : text.substr(nl + 1);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    while (!line.empty() && (line.front() == ' ' || line.front() == '\t')) line.remove_prefix(1);
    if (line.empty() || line[0] == '#') continue;
    if (ParseLine(line, sample)) out.push_back(sample);
  }
  return out;
}

std::optional<double> SumSamples(const std::vector<PromSample>& samples, std::string_view name,
                                 std::string_view model) {
  std::optional<double> sum;
  for (const auto& s : samples) {
    if (s.name != name || std::isnan(s.value)) continue;
    if (!model.empty()) {
      const std::string* m = s.Label("model_name");
      if (m == nullptr) m = s.Label("model");
      if (m != nullptr && *m != model) continue;
    }
    sum = sum.value_or(0) + s.value;
  }
  return sum;
}

std::optional<UpstreamMetricsLoad> LoadFromPrometheusText(std::string_view text,
                                                          std::string_view model) {
  const auto samples = ParsePrometheusText(text);
  struct Names {
    const char* running;
    const char* waiting;
    const char* kv;  // nullptr: not reported
    const char* kv_older;
  };
  static constexpr Names kServers[] = {
      {"vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:kv_cache_usage_perc",
       "vllm:gpu_cache_usage_perc"},
      {"sglang:num_running_reqs", "sglang:num_queue_reqs", "sglang:token_usage", nullptr},
      {"tgi_batch_current_size", "tgi_queue_size", nullptr, nullptr},
  };
  for (const Names& n : kServers) {
    const auto running = SumSamples(samples, n.running, model);
    const auto waiting = SumSamples(samples, n.waiting, model);
    if (!running && !waiting) continue;
    UpstreamMetricsLoad load;
    load.running = static_cast<int>(std::lround(running.value_or(0)));
    load.waiting = static_cast<int>(std::lround(waiting.value_or(0)));
    std::optional<double> kv;
    if (n.kv != nullptr) kv = SumSamples(samples, n.kv, model);
    if (!kv && n.kv_older != nullptr) kv = SumSamples(samples, n.kv_older, model);
    load.kv_cache_usage = std::clamp(kv.value_or(0), 0.0, 1.0);
    return load;
  }
  return std::nullopt;
}

}  // namespace sb::worker
