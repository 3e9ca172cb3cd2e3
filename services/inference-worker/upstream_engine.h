// Engines that serve real models from a remote server: OpenAIEngine speaks
// the OpenAI chat-completions API (vLLM, SGLang, llama.cpp server, Ollama,
// TGI, OpenAI itself) and AnthropicEngine the Anthropic Messages API. Both
// stream (server-sent events) over one shared asynchronous HTTP client: no
// thread per request.
//
// `url` is the API's base URL including its version, as the vendors' SDKs
// take it: http://vllm:8000/v1, https://api.openai.com/v1,
// https://api.anthropic.com/v1. The engines POST {url}/chat/completions and
// {url}/messages.
//
// Outcomes (FinishInfo): the upstream's finish reason mapped to ours
// (stop -> end_turn, or stop_sequence when vLLM's stop_reason names one of
// the request's stop sequences; length -> max_tokens); usage from the
// upstream when it reports it, otherwise chunks counted and the input
// estimated. Failures finish with stop_reason "error" and
//   Unavailable       429, 503, 529, an overloaded/rate-limit error event, or
//                     the upstream cannot be reached;
//   DeadlineExceeded  the connect timeout or the idle timeout (no byte for
//                     idle_timeout) expired;
//   Internal          any other status, a malformed or truncated stream.
// The status message is generic (the upstream's body goes to the log with
// the request id), and carries the tokens delivered so far.
//
// Load(): the upstream's own load scraped from its Prometheus /metrics
// (vLLM, SGLang, TGI) when that works, otherwise this engine's in-flight
// count.
//
// The engine must not be destroyed on one of its client's threads (an
// observer callback): the destructor waits for them.
#pragma once

#include <chrono>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "absl/status/statusor.h"
#include "core/clock.h"
#include "core/metrics.h"
#include "core/timers.h"
#include "http/async_client.h"
#include "inference-worker/engine.h"

namespace sb::worker {

struct UpstreamOptions {
  std::string url;  // base URL with the version, e.g. http://127.0.0.1:8000/v1
  // Platform model names this worker serves; each maps to model_map's
  // entry, else to upstream_model, else to itself.
  std::vector<std::string> models;
  std::string upstream_model;
  std::map<std::string, std::string> model_map;
  std::string api_key;  // "" for none
  std::chrono::milliseconds connect_timeout{5000};
  std::chrono::milliseconds idle_timeout{60000};
  int max_concurrency = 256;  // requests in flight; beyond: ResourceExhausted
  // "" : {url minus a trailing /v1}/metrics for OpenAIEngine, none for
  // AnthropicEngine; "none": never scrape.
  std::string metrics_url;
  std::chrono::milliseconds metrics_interval{1000};
  int client_threads = 1;
  // PEM of extra CA certificates for https upstreams (the system's are trusted).
  std::string ca_file;
};

class UpstreamEngine : public Engine {
 public:
  enum class Dialect { kOpenAI, kAnthropic };

  // `client` may be shared with other engines; null: the engine makes its own.
  UpstreamEngine(Dialect dialect, UpstreamOptions options,
                 std::shared_ptr<http::AsyncClient> client = nullptr, Clock& clock = RealClock());
  ~UpstreamEngine() override;  // Drain(now), then stops scraping
  UpstreamEngine(const UpstreamEngine&) = delete;
  UpstreamEngine& operator=(const UpstreamEngine&) = delete;

  std::vector<std::string> Models() const override;
  // An estimate (about four bytes a token); the upstream's usage is billed.
  int CountTokens(std::string_view text) const override;
  absl::Status Submit(EngineRequest request, std::shared_ptr<TokenObserver> observer) override;
  void Cancel(uint64_t id) override;
  EngineLoad Load() const override;
  void Drain(absl::Time deadline) override;

  // The upstream model `model` maps to, or "" when it is not served.
  std::string UpstreamModel(const std::string& model) const;
  // The metrics URL scraped, "" for none.
  const std::string& metrics_url() const { return metrics_url_; }

  class Stream;   // internal: one request in flight
  struct Scrape;  // internal: the latest scrape of the upstream's metrics

 private:
  void Finished(uint64_t id);
  void ScrapeOnce();

  const Dialect dialect_;
  const UpstreamOptions options_;
  std::shared_ptr<http::AsyncClient> client_;
  Clock& clock_;
  std::string metrics_url_;

  mutable std::mutex mu_;
  std::condition_variable idle_cv_;
  std::unordered_map<uint64_t, std::shared_ptr<Stream>> streams_;
  bool draining_ = false;

  std::shared_ptr<Scrape> scrape_;
  TimerThread timers_;
  std::shared_ptr<Repeating> scraper_;

  metrics::Gauge& in_flight_gauge_;
};

class OpenAIEngine final : public UpstreamEngine {
 public:
  explicit OpenAIEngine(UpstreamOptions options,
                        std::shared_ptr<http::AsyncClient> client = nullptr)
      : UpstreamEngine(Dialect::kOpenAI, std::move(options), std::move(client)) {}
};

class AnthropicEngine final : public UpstreamEngine {
 public:
  explicit AnthropicEngine(UpstreamOptions options,
                           std::shared_ptr<http::AsyncClient> client = nullptr)
      : UpstreamEngine(Dialect::kAnthropic, std::move(options), std::move(client)) {}
};

// "openai" or "anthropic" (what --engine names); InvalidArgument otherwise.
absl::StatusOr<std::unique_ptr<Engine>> MakeUpstreamEngine(std::string_view engine,
                                                           UpstreamOptions options);

}  // namespace sb::worker
