#include "inference-worker/upstream_flags.h"

#include <fstream>
#include <sstream>

#include "absl/flags/flag.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_split.h"

ABSL_FLAG(std::string, upstream_url, "",
          "Base URL of the upstream API including its version: http://vllm:8000/v1, "
          "https://api.openai.com/v1, https://api.anthropic.com/v1");
ABSL_FLAG(std::string, upstream_model, "",
          "The upstream's model every served model maps to (default: the same name)");
ABSL_FLAG(std::string, upstream_model_map, "",
          "Per-model mapping platform=upstream, comma-separated; wins over --upstream_model");
ABSL_FLAG(std::string, upstream_api_key_file, "",
          "File holding the upstream's API key (Bearer for OpenAI, x-api-key for Anthropic)");
ABSL_FLAG(int, upstream_connect_timeout_ms, 5000, "Connect (and TLS handshake) timeout");
ABSL_FLAG(int, upstream_idle_timeout_ms, 60000,
          "Longest silence of an upstream stream before it fails with a timeout");
ABSL_FLAG(int, upstream_max_concurrency, 256,
          "Upstream requests in flight; beyond it Submit refuses (ResourceExhausted)");
ABSL_FLAG(std::string, upstream_metrics_url, "",
          "Prometheus endpoint of the upstream for its load; default {upstream_url minus /v1}"
          "/metrics for openai, none for anthropic; \"none\" disables");
ABSL_FLAG(int, upstream_metrics_interval_ms, 1000, "How often the upstream's metrics are scraped");
ABSL_FLAG(std::string, upstream_ca_file, "",
          "PEM of extra CA certificates to trust for an https upstream");

namespace sb::worker {

absl::StatusOr<std::map<std::string, std::string>> ParseModelMap(std::string_view text) {
  std::map<std::string, std::string> out;
  for (absl::string_view item :
       absl::StrSplit(absl::string_view(text.data(), text.size()), ',', absl::SkipWhitespace())) {
    std::pair<absl::string_view, absl::string_view> kv =
        absl::StrSplit(item, absl::MaxSplits('=', 1));
    const std::string from(absl::StripAsciiWhitespace(kv.first));
    const std::string to(absl::StripAsciiWhitespace(kv.second));
    if (from.empty() || to.empty()) {
      return absl::InvalidArgumentError("--upstream_model_map: expected platform=upstream, got \"" +
                                        std::string(item) + "\"");
    }
    out[from] = to;
  }
  return out;
}

absl::StatusOr<UpstreamOptions> UpstreamOptionsFromFlags(std::vector<std::string> models) {
  UpstreamOptions o;
  o.url = absl::GetFlag(FLAGS_upstream_url);
  while (!o.url.empty() && o.url.back() == '/') o.url.pop_back();
  if (o.url.empty()) return absl::InvalidArgumentError("--upstream_url is required");
  if (auto url = http::Url::Parse(o.url); !url.ok()) {
    return absl::InvalidArgumentError("--upstream_url: " + std::string(url.status().message()));
  }
  o.models = std::move(models);
  o.upstream_model = absl::GetFlag(FLAGS_upstream_model);
  auto map = ParseModelMap(absl::GetFlag(FLAGS_upstream_model_map));
  if (!map.ok()) return map.status();
  o.model_map = *std::move(map);
  if (const std::string file = absl::GetFlag(FLAGS_upstream_api_key_file); !file.empty()) {
    std::ifstream in(file);
    if (!in) return absl::InvalidArgumentError("--upstream_api_key_file: cannot read " + file);
    std::stringstream ss;
    ss << in.rdbuf();
    o.api_key = std::string(absl::StripAsciiWhitespace(ss.str()));
    if (o.api_key.empty()) return absl::InvalidArgumentError("--upstream_api_key_file is empty");
  }
  o.connect_timeout = std::chrono::milliseconds(absl::GetFlag(FLAGS_upstream_connect_timeout_ms));
  o.idle_timeout = std::chrono::milliseconds(absl::GetFlag(FLAGS_upstream_idle_timeout_ms));
  o.max_concurrency = absl::GetFlag(FLAGS_upstream_max_concurrency);
  if (o.max_concurrency <= 0) {
    return absl::InvalidArgumentError("--upstream_max_concurrency must be positive");
  }
  o.metrics_url = absl::GetFlag(FLAGS_upstream_metrics_url);
  o.metrics_interval =
      std::chrono::milliseconds(std::max(100, absl::GetFlag(FLAGS_upstream_metrics_interval_ms)));
  o.ca_file = absl::GetFlag(FLAGS_upstream_ca_file);
  return o;
}

}  // namespace sb::worker
