#include "inference-worker/upstream_engine.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <nlohmann/json.hpp>

#include "absl/strings/match.h"
#include "http/sse_parser.h"
#include "inference-worker/prometheus_text.h"

namespace sb::worker {

using json = nlohmann::json;

namespace {

constexpr size_t kErrorBodyLogged = 4096;
constexpr size_t kMetricsBodyMax = 4 << 20;
constexpr int kAnthropicDefaultMaxTokens = 4096;

struct Metrics {
  metrics::Registry& r = metrics::Default();
  metrics::Histogram& ttft =
      r.GetHistogram("sb_upstream_ttft_seconds", "Time from submit to the upstream's first token");

  void Outcome(const std::string& outcome) {
    r.GetCounter("sb_upstream_requests_total", "Upstream requests finished, by outcome",
                 {{"outcome", outcome}})
        .Inc();
  }
  void Error(const char* kind) {
    r.GetCounter("sb_upstream_errors_total", "Upstream requests failed, by kind", {{"kind", kind}})
        .Inc();
  }
};

Metrics& M() {
  static Metrics* m = new Metrics();
  return *m;
}

std::string DeriveMetricsUrl(const std::string& url) {
  std::string base = url;
  while (!base.empty() && base.back() == '/') base.pop_back();
  if (absl::EndsWith(base, "/v1")) base.resize(base.size() - 3);
  return base + "/metrics";
}

// A text, as one text block with cache_control when it ends at a cache
// breakpoint (Anthropic's upstream; OpenAI-compatible ones cache on their own).
json AnthropicContent(const std::string& text, bool cache_breakpoint) {
  if (!cache_breakpoint) return text;
  return json::array(
      {{{"type", "text"}, {"text", text}, {"cache_control", {{"type", "ephemeral"}}}}});
}

// `system_breakpoint` (Anthropic only): a system text to be cached.
json Messages(const EngineRequest& r, bool system_in_messages, std::string* system,
              bool* system_breakpoint) {
  json out = json::array();
  if (system_in_messages && !r.system.empty()) {
    out.push_back({{"role", "system"}, {"content", r.system}});
  }
  for (const auto& m : r.messages) {
    if (m.role == "system" && !system_in_messages) {
      // Anthropic takes system text only at the top level.
      if (!system->empty()) system->append("\n\n");
      system->append(m.text);
      *system_breakpoint |= m.cache_breakpoint;
      continue;
    }
    out.push_back({{"role", m.role},
                   {"content", system_in_messages ? json(m.text)
                                                  : AnthropicContent(m.text, m.cache_breakpoint)}});
  }
  return out;
}

std::string OpenAIBody(const EngineRequest& r, const std::string& model) {
  json j = {{"model", model},
            {"messages", Messages(r, true, nullptr, nullptr)},
            {"stream", true},
            {"stream_options", {{"include_usage", true}}}};
  // max_tokens rather than max_completion_tokens: every OpenAI-compatible
  // server takes it (llama.cpp, Ollama, TGI, older vLLM know no other).
  if (r.max_tokens > 0) j["max_tokens"] = r.max_tokens;
  if (!r.stop_sequences.empty()) j["stop"] = r.stop_sequences;
  if (r.sampling.temperature) j["temperature"] = *r.sampling.temperature;
  if (r.sampling.top_p) j["top_p"] = *r.sampling.top_p;
  // Only when set: OpenAI itself refuses the parameter.
  if (r.sampling.top_k) j["top_k"] = *r.sampling.top_k;
  if (!r.end_user_id.empty()) j["user"] = r.end_user_id;
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

std::string AnthropicBody(const EngineRequest& r, const std::string& model) {
  std::string system = r.system;
  bool system_breakpoint = r.system_cache_breakpoint;
  json j = {{"model", model},
            {"messages", Messages(r, false, &system, &system_breakpoint)},
            {"stream", true},
            {"max_tokens", r.max_tokens > 0 ? r.max_tokens : kAnthropicDefaultMaxTokens}};
  if (!system.empty()) j["system"] = AnthropicContent(system, system_breakpoint);
  if (!r.stop_sequences.empty()) j["stop_sequences"] = r.stop_sequences;
  if (r.sampling.temperature) j["temperature"] = *r.sampling.temperature;
  if (r.sampling.top_p) j["top_p"] = *r.sampling.top_p;
  if (r.sampling.top_k) j["top_k"] = *r.sampling.top_k;
  if (!r.end_user_id.empty()) j["metadata"] = {{"user_id", r.end_user_id}};
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

int IntAt(const json& j, const char* key, int fallback) {
  auto it = j.find(key);
  return it != j.end() && it->is_number_integer() ? it->get<int>() : fallback;
}

std::string StringAt(const json& j, const char* key) {
  auto it = j.find(key);
  return it != j.end() && it->is_string() ? it->get<std::string>() : std::string();
}

}  // namespace

// One request in flight: the response handler of its HTTP call and the
// decoder of its event stream. Every callback runs on the call's strand,
// one at a time; Cancel() may come from any thread. The states:
// kWaiting (no response yet) -> kStreaming (200) or kRefused (another
// status: its body is kept for the log) -> kDone (OnFinished delivered).
class UpstreamEngine::Stream final : public http::ResponseHandler,
                                     public std::enable_shared_from_this<Stream> {
 public:
  Stream(UpstreamEngine* engine, EngineRequest request, std::shared_ptr<TokenObserver> observer,
         absl::Time submitted)
      : engine_(engine),
        dialect_(engine->dialect_),
        request_(std::move(request)),
        observer_(std::move(observer)),
        submitted_(submitted) {}

  void SetCall(std::shared_ptr<http::AsyncCall> call) {
    std::lock_guard<std::mutex> lock(mu_);
    call_ = std::move(call);
    if (cancel_requested_) call_->Cancel();
  }

  // The consumer has gone: close the connection; OnComplete finishes.
  void Cancel() {
    std::lock_guard<std::mutex> lock(mu_);
    cancel_requested_ = true;
    if (call_) call_->Cancel();
  }

  void OnResponse(int status, const std::map<std::string, std::string>&) override {
    http_status_ = status;
    state_ = status == 200 ? State::kStreaming : State::kRefused;
  }

  void OnBody(std::string_view piece) override {
    if (state_ == State::kRefused) {
      error_body_.append(
          piece.substr(0, kErrorBodyLogged - std::min(kErrorBodyLogged, error_body_.size())));
      return;
    }
    if (state_ != State::kStreaming) return;
    absl::Status st = sse_.Feed(piece, [this](const http::SseEvent& ev) { OnEvent(ev); });
    if (!st.ok() && state_ != State::kDone) {
      Fail(absl::InternalError("upstream event stream unreadable"), "protocol",
           std::string(st.message()));
    }
  }

  void OnComplete(const absl::Status& status) override {
    if (state_ == State::kDone) return;
    if (cancelled()) return Finish("cancelled", {});
    if (state_ == State::kRefused) {
      const bool overloaded = http_status_ == 429 || http_status_ == 503 || http_status_ == 529;
      const std::string message =
          "upstream refused the request (status " + std::to_string(http_status_) + ")";
      return Fail(overloaded ? absl::UnavailableError(message) : absl::InternalError(message),
                  overloaded ? "overloaded" : "status", error_body_);
    }
    switch (status.code()) {
      case absl::StatusCode::kOk:
        // Some OpenAI-compatible servers and proxies close without [DONE]:
        // a stream that already said how it finished is complete.
        if (dialect_ == Dialect::kOpenAI && !stop_reason_.empty()) {
          return Finish(FinishReason(), {});
        }
        return Fail(absl::InternalError("upstream stream ended before its end event"), "truncated",
                    "");
      case absl::StatusCode::kCancelled:  // the client was shut down
        return Finish("cancelled", {});
      case absl::StatusCode::kDeadlineExceeded:
        return Fail(absl::DeadlineExceededError(state_ == State::kWaiting
                                                    ? "upstream did not answer in time"
                                                    : "upstream stream stalled"),
                    "timeout", std::string(status.message()));
      case absl::StatusCode::kUnavailable:
        if (state_ == State::kWaiting) {
          return Fail(absl::UnavailableError("upstream unreachable"), "connect",
                      std::string(status.message()));
        }
        [[fallthrough]];
      default:
        return Fail(absl::InternalError(state_ == State::kWaiting ? "upstream connection failed"
                                                                  : "upstream stream cut short"),
                    state_ == State::kWaiting ? "connect" : "truncated",
                    std::string(status.message()));
    }
  }

 private:
  enum class State { kWaiting, kStreaming, kRefused, kDone };

  bool cancelled() {
    std::lock_guard<std::mutex> lock(mu_);
    return cancel_requested_;
  }

  void Token(std::string_view text, int tokens) {
    if (text.empty()) return;
    if (chunks_ == 0) M().ttft.Observe(absl::ToDoubleSeconds(engine_->clock_.Now() - submitted_));
    ++chunks_;
    counted_ += tokens;
    observer_->OnToken(text, tokens);
  }

  void OnEvent(const http::SseEvent& ev) {
    if (state_ == State::kDone) return;
    if (dialect_ == Dialect::kOpenAI && ev.data == "[DONE]") return Finish(FinishReason(), {});
    json j = json::parse(ev.data, nullptr, false);
    if (j.is_discarded() || !j.is_object()) {
      return Fail(absl::InternalError("upstream sent malformed data"), "protocol", ev.data);
    }
    if (dialect_ == Dialect::kOpenAI) {
      OpenAIEvent(j);
    } else {
      AnthropicEvent(ev.event.empty() ? StringAt(j, "type") : ev.event, j);
    }
  }

  void OpenAIEvent(const json& j) {
    if (auto e = j.find("error"); e != j.end()) {  // vLLM reports mid-stream errors so
      return Fail(absl::InternalError("upstream reported an error mid-stream"), "protocol",
                  j.dump());
    }
    if (auto u = j.find("usage"); u != j.end() && u->is_object()) {
      input_tokens_ = IntAt(*u, "prompt_tokens", input_tokens_);
      output_tokens_ = IntAt(*u, "completion_tokens", output_tokens_);
      // vLLM (--enable-prompt-tokens-details) and OpenAI: the part of the
      // prompt its prefix cache held.
      if (auto d = u->find("prompt_tokens_details"); d != u->end() && d->is_object()) {
        cache_read_ = IntAt(*d, "cached_tokens", cache_read_);
      }
    }
    auto choices = j.find("choices");
    if (choices == j.end() || !choices->is_array() || choices->empty()) return;
    const json& c = (*choices)[0];
    if (!c.is_object()) return;
    if (auto d = c.find("delta"); d != c.end() && d->is_object()) {
      Token(StringAt(*d, "content"), 1);
    }
    const std::string finish = StringAt(c, "finish_reason");
    if (finish == "length") {
      stop_reason_ = "max_tokens";
    } else if (!finish.empty()) {
      stop_reason_ = "end_turn";
      // vLLM names the stop string that ended the text (null for EOS).
      const std::string matched = StringAt(c, "stop_reason");
      if (!matched.empty() &&
          std::find(request_.stop_sequences.begin(), request_.stop_sequences.end(), matched) !=
              request_.stop_sequences.end()) {
        stop_reason_ = "stop_sequence";
        stop_sequence_ = matched;
      }
    }
  }

  // Anthropic's input_tokens leaves out the tokens read from and written to
  // its cache; ours counts every prompt token.
  void AnthropicInput(const json& u) {
    uncached_input_ = IntAt(u, "input_tokens", uncached_input_);
    cache_read_ = IntAt(u, "cache_read_input_tokens", cache_read_);
    cache_creation_ = IntAt(u, "cache_creation_input_tokens", cache_creation_);
    if (uncached_input_ >= 0) {
      input_tokens_ = uncached_input_ + std::max(0, cache_read_) + std::max(0, cache_creation_);
    }
  }

  void AnthropicEvent(const std::string& type, const json& j) {
    if (type == "message_start") {
      if (auto m = j.find("message"); m != j.end() && m->is_object()) {
        if (auto u = m->find("usage"); u != m->end() && u->is_object()) AnthropicInput(*u);
      }
    } else if (type == "content_block_delta") {
      if (auto d = j.find("delta");
          d != j.end() && d->is_object() && StringAt(*d, "type") == "text_delta") {
        const std::string text = StringAt(*d, "text");
        Token(text, std::max(1, engine_->CountTokens(text)));
      }
    } else if (type == "message_delta") {
      if (auto d = j.find("delta"); d != j.end() && d->is_object()) {
        const std::string reason = StringAt(*d, "stop_reason");
        if (reason == "max_tokens" || reason == "stop_sequence" || reason == "end_turn") {
          stop_reason_ = reason;
        } else if (!reason.empty()) {
          stop_reason_ = "end_turn";  // tool_use, pause_turn, refusal: the text has ended
        }
        stop_sequence_ = StringAt(*d, "stop_sequence");
      }
      if (auto u = j.find("usage"); u != j.end() && u->is_object()) {
        output_tokens_ = IntAt(*u, "output_tokens", output_tokens_);
        AnthropicInput(*u);
      }
    } else if (type == "message_stop") {
      Finish(FinishReason(), {});
    } else if (type == "error") {
      std::string kind;
      if (auto e = j.find("error"); e != j.end() && e->is_object()) kind = StringAt(*e, "type");
      if (kind == "overloaded_error" || kind == "rate_limit_error") {
        Fail(absl::UnavailableError("upstream overloaded"), "overloaded", j.dump());
      } else {
        Fail(absl::InternalError("upstream reported an error mid-stream"), "protocol", j.dump());
      }
    }
  }

  std::string FinishReason() const { return stop_reason_.empty() ? "end_turn" : stop_reason_; }

  void Fail(absl::Status error, const char* kind, const std::string& detail) {
    spdlog::warn("request_id={} upstream {}: {} (status {}, after {} chunks){}{}",
                 request_.request_id, kind, std::string(error.message()), http_status_, chunks_,
                 detail.empty() ? "" : ": ", detail.substr(0, kErrorBodyLogged));
    M().Error(kind);
    Finish("error", std::move(error));
    // Drop the connection: nothing more from it is wanted.
    std::lock_guard<std::mutex> lock(mu_);
    if (call_) call_->Cancel();
  }

  void Finish(const std::string& reason, absl::Status error) {
    if (state_ == State::kDone) return;
    state_ = State::kDone;
    FinishInfo info;
    info.stop_reason = reason;
    if (reason == "stop_sequence") info.stop_sequence = stop_sequence_;
    info.input_tokens = input_tokens_ >= 0 ? input_tokens_ : EstimatedInput();
    info.output_tokens = output_tokens_ >= 0 ? output_tokens_ : counted_;
    if (input_tokens_ >= 0) {  // cached counts only with the upstream's own input count
      info.cache_read_tokens = std::clamp(cache_read_, 0, info.input_tokens);
      info.cache_creation_tokens =
          std::clamp(cache_creation_, 0, info.input_tokens - info.cache_read_tokens);
    }
    info.error = std::move(error);
    M().Outcome(reason);
    observer_->OnFinished(info);
    observer_.reset();
    engine_->Finished(request_.id);  // last: the engine may be gone after it
  }

  int EstimatedInput() const {
    if (request_.input_tokens > 0) return request_.input_tokens;
    int n = engine_->CountTokens(request_.system);
    for (const auto& m : request_.messages) n += engine_->CountTokens(m.text);
    return n;
  }

  UpstreamEngine* const engine_;
  const Dialect dialect_;
  const EngineRequest request_;
  std::shared_ptr<TokenObserver> observer_;
  const absl::Time submitted_;

  std::mutex mu_;  // guards call_ and cancel_requested_
  std::shared_ptr<http::AsyncCall> call_;
  bool cancel_requested_ = false;

  // On the strand only.
  State state_ = State::kWaiting;
  int http_status_ = 0;
  std::string error_body_;
  http::SseParser sse_;
  int chunks_ = 0;
  int counted_ = 0;
  int input_tokens_ = -1;  // from the upstream's usage; -1: not reported
  int output_tokens_ = -1;
  int uncached_input_ = -1;  // Anthropic's input_tokens
  int cache_read_ = 0;
  int cache_creation_ = 0;
  std::string stop_reason_;
  std::string stop_sequence_;
};

struct UpstreamEngine::Scrape {
  std::mutex mu;
  bool in_flight = false;
  std::optional<UpstreamMetricsLoad> load;
  absl::Time at = absl::InfinitePast();
  std::shared_ptr<http::AsyncCall> call;
};

namespace {

class ScrapeHandler final : public http::ResponseHandler {
 public:
  ScrapeHandler(std::shared_ptr<UpstreamEngine::Scrape> scrape, std::string model, Clock& clock)
      : scrape_(std::move(scrape)), model_(std::move(model)), clock_(clock) {}
  void OnResponse(int status, const std::map<std::string, std::string>&) override {
    status_ = status;
  }
  void OnBody(std::string_view piece) override {
    // Past the cap the body is ignored whole (never spliced from pieces).
    if (too_big_ || body_.size() + piece.size() > kMetricsBodyMax) {
      too_big_ = true;
      body_.clear();
      return;
    }
    body_.append(piece);
  }
  void OnComplete(const absl::Status& status) override {
    std::optional<UpstreamMetricsLoad> load;
    if (status.ok() && status_ == 200 && !too_big_) {
      load = LoadFromPrometheusText(body_, model_);
      if (!load && !model_.empty()) load = LoadFromPrometheusText(body_, "");
    }
    std::lock_guard<std::mutex> lock(scrape_->mu);
    scrape_->in_flight = false;
    scrape_->call.reset();
    if (load) {
      scrape_->load = load;
      scrape_->at = clock_.Now();
    }
  }

 private:
  const std::shared_ptr<UpstreamEngine::Scrape> scrape_;
  const std::string model_;
  Clock& clock_;
  int status_ = 0;
  std::string body_;
  bool too_big_ = false;
};

}  // namespace

UpstreamEngine::UpstreamEngine(Dialect dialect, UpstreamOptions options,
                               std::shared_ptr<http::AsyncClient> client, Clock& clock)
    : dialect_(dialect),
      options_(std::move(options)),
      client_(std::move(client)),
      clock_(clock),
      scrape_(std::make_shared<Scrape>()),
      in_flight_gauge_(
          metrics::Default().GetGauge("sb_upstream_in_flight", "Upstream requests in flight")) {
  if (!client_) {
    client_ = std::make_shared<http::AsyncClient>(http::AsyncClientOptions{
        .threads = std::max(1, options_.client_threads), .ca_file = options_.ca_file});
  }
  if (options_.metrics_url == "none") {
    metrics_url_.clear();
  } else if (!options_.metrics_url.empty()) {
    metrics_url_ = options_.metrics_url;
  } else if (dialect_ == Dialect::kOpenAI) {
    metrics_url_ = DeriveMetricsUrl(options_.url);
  }
  if (!metrics_url_.empty()) {
    scraper_ = std::make_shared<Repeating>(timers_, absl::FromChrono(options_.metrics_interval),
                                           [this] { ScrapeOnce(); });
    ScrapeOnce();
    scraper_->Start();
  }
}

UpstreamEngine::~UpstreamEngine() {
  Drain(absl::InfinitePast());
  if (scraper_) scraper_->Stop();
  timers_.Stop();
  std::shared_ptr<http::AsyncCall> call;
  {
    std::lock_guard<std::mutex> lock(scrape_->mu);
    call = scrape_->call;
  }
  if (call) call->Cancel();
}

void UpstreamEngine::ScrapeOnce() {
  std::string model;
  if (options_.model_map.empty()) model = options_.upstream_model;
  {
    std::lock_guard<std::mutex> lock(scrape_->mu);
    if (scrape_->in_flight) return;
    scrape_->in_flight = true;
  }
  auto call = client_->Start(
      {.method = "GET",
       .url = metrics_url_,
       .connect_timeout = std::min(options_.connect_timeout, std::chrono::milliseconds(2000)),
       .idle_timeout = std::max(options_.metrics_interval, std::chrono::milliseconds(2000))},
      std::make_shared<ScrapeHandler>(scrape_, model, clock_));
  std::lock_guard<std::mutex> lock(scrape_->mu);
  if (scrape_->in_flight) scrape_->call = std::move(call);
}

std::vector<std::string> UpstreamEngine::Models() const {
  std::vector<std::string> out = options_.models;
  for (const auto& [from, to] : options_.model_map) {
    if (std::find(out.begin(), out.end(), from) == out.end()) out.push_back(from);
  }
  return out;
}

std::string UpstreamEngine::UpstreamModel(const std::string& model) const {
  if (auto it = options_.model_map.find(model); it != options_.model_map.end()) return it->second;
  if (std::find(options_.models.begin(), options_.models.end(), model) == options_.models.end()) {
    return "";
  }
  return options_.upstream_model.empty() ? model : options_.upstream_model;
}

int UpstreamEngine::CountTokens(std::string_view text) const {
  return static_cast<int>((text.size() + 3) / 4);
}

absl::Status UpstreamEngine::Submit(EngineRequest request,
                                    std::shared_ptr<TokenObserver> observer) {
  const std::string model = UpstreamModel(request.model);
  if (model.empty()) {
    return absl::InvalidArgumentError("model " + request.model + " is not served here");
  }
  http::AsyncRequest http{.method = "POST",
                          .connect_timeout = options_.connect_timeout,
                          .idle_timeout = options_.idle_timeout};
  http.headers = {{"content-type", "application/json"}, {"accept", "text/event-stream"}};
  if (!request.request_id.empty()) http.headers.push_back({"x-request-id", request.request_id});
  if (!request.traceparent.empty()) http.headers.push_back({"traceparent", request.traceparent});
  if (dialect_ == Dialect::kOpenAI) {
    http.url = options_.url + "/chat/completions";
    if (!options_.api_key.empty()) {
      http.headers.push_back({"authorization", "Bearer " + options_.api_key});
    }
    http.body = OpenAIBody(request, model);
  } else {
    http.url = options_.url + "/messages";
    http.headers.push_back({"anthropic-version", "2023-06-01"});
    if (!options_.api_key.empty()) http.headers.push_back({"x-api-key", options_.api_key});
    http.body = AnthropicBody(request, model);
  }

  const uint64_t id = request.id;
  std::shared_ptr<Stream> stream;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (draining_) return absl::FailedPreconditionError("the worker is draining");
    if (static_cast<int>(streams_.size()) >= options_.max_concurrency) {
      return absl::ResourceExhaustedError("upstream concurrency limit reached");
    }
    if (streams_.count(id) > 0) return absl::InvalidArgumentError("duplicate request id");
    stream = std::make_shared<Stream>(this, std::move(request), std::move(observer), clock_.Now());
    streams_[id] = stream;
    in_flight_gauge_.Set(static_cast<double>(streams_.size()));
  }
  stream->SetCall(client_->Start(std::move(http), stream));
  return absl::OkStatus();
}

void UpstreamEngine::Cancel(uint64_t id) {
  std::shared_ptr<Stream> stream;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = streams_.find(id);
    if (it == streams_.end()) return;
    stream = it->second;
  }
  stream->Cancel();
}

void UpstreamEngine::Finished(uint64_t id) {
  std::shared_ptr<Stream> stream;  // released outside the lock
  std::lock_guard<std::mutex> lock(mu_);
  if (auto it = streams_.find(id); it != streams_.end()) {
    stream = std::move(it->second);
    streams_.erase(it);
  }
  in_flight_gauge_.Set(static_cast<double>(streams_.size()));
  idle_cv_.notify_all();
}

EngineLoad UpstreamEngine::Load() const {
  EngineLoad load;
  {
    std::lock_guard<std::mutex> lock(scrape_->mu);
    const auto fresh = absl::FromChrono(options_.metrics_interval) * 3 + absl::Seconds(1);
    if (scrape_->load && clock_.Now() - scrape_->at <= fresh) {
      load.running = scrape_->load->running;
      load.waiting = scrape_->load->waiting;
      load.kv_cache_usage = scrape_->load->kv_cache_usage;
      return load;
    }
  }
  std::lock_guard<std::mutex> lock(mu_);
  load.running = static_cast<int>(streams_.size());
  return load;
}

void UpstreamEngine::Drain(absl::Time deadline) {
  std::unique_lock<std::mutex> lock(mu_);
  draining_ = true;
  while (!streams_.empty() && absl::Now() < deadline) {
    idle_cv_.wait_for(
        lock, absl::ToChronoNanoseconds(std::min(deadline - absl::Now(), absl::Milliseconds(100))));
  }
  if (streams_.empty()) return;
  std::vector<std::shared_ptr<Stream>> rest;
  for (auto& [id, s] : streams_) rest.push_back(s);
  lock.unlock();
  for (auto& s : rest) s->Cancel();
  rest.clear();
  lock.lock();
  idle_cv_.wait(lock, [&] { return streams_.empty(); });
}

absl::StatusOr<std::unique_ptr<Engine>> MakeUpstreamEngine(std::string_view engine,
                                                           UpstreamOptions options) {
  if (engine == "openai") return std::make_unique<OpenAIEngine>(std::move(options));
  if (engine == "anthropic") return std::make_unique<AnthropicEngine>(std::move(options));
  return absl::InvalidArgumentError("unknown upstream engine " + std::string(engine));
}

}  // namespace sb::worker
