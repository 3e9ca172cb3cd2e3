// One API exchange as the filters and handlers see it: the HTTP request,
// its request id, its route and dialect, what the filters established
// (principal, parsed body, parsed API request), and the ways to answer —
// each of which sets `request-id`, counts the response and records its
// duration under the route's metrics.
#pragma once

#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <tuple>
#include <vector>

#include "absl/status/status.h"
#include "core/clock.h"
#include "core/metrics.h"
#include "gateway/dialects/dialect.h"
#include "http/http_server.h"
#include "storage/api_keys.h"
#include "trace/trace.h"

namespace sb::gateway {

// The gateway's request metrics, labelled by route, dialect and model
// (never by org or key). Series are created on first use and cached, so a
// request resolves its handles once and a token costs only an Observe.
class GatewayMetrics {
 public:
  struct Series {
    metrics::Histogram* duration;  // sb_gateway_request_duration_seconds
    metrics::Histogram* ttft;      // sb_gateway_time_to_first_token_seconds
    metrics::Histogram* itl;       // sb_gateway_inter_token_latency_seconds
  };

  explicit GatewayMetrics(metrics::Registry& registry = metrics::Default());

  // `model` is one the scheduler resolved, or "" (the label is then "none"),
  // so clients cannot mint label values.
  const Series& For(std::string_view route, std::string_view dialect, std::string_view model);
  metrics::Counter& Responses(std::string_view route, std::string_view dialect, int status);

  // Streams the gateway is writing now (a drain waits for them).
  void StreamStarted();
  void StreamEnded();
  int64_t active_streams() const { return active_streams_.load(); }

 private:
  using Key = std::tuple<std::string, std::string, std::string>;
  metrics::Registry& registry_;
  std::shared_mutex mu_;
  std::map<Key, std::unique_ptr<Series>, std::less<>> series_;
  std::map<Key, metrics::Counter*, std::less<>> responses_;
  metrics::Gauge& streams_gauge_;
  std::atomic<int64_t> active_streams_{0};
};

// vLLM's bucket boundaries, so dashboards built for vLLM read ours.
std::vector<double> TimeToFirstTokenBuckets();
std::vector<double> InterTokenLatencyBuckets();

struct Route;

// Sees a response as it is written (the idempotency record tees it into
// Redis). Whole responses arrive once; a stream as its start and each
// write of data, in order (pings are not data).
class ResponseTap {
 public:
  virtual ~ResponseTap() = default;
  virtual void OnWhole(int status, std::string_view content_type, const std::string& body) = 0;
  virtual void OnStreamStart() = 0;
  virtual void OnStreamData(const std::string& data) = 0;
};

class RequestContext {
 public:
  RequestContext(std::shared_ptr<http::Exchange> exchange, std::string request_id, Clock& clock,
                 GatewayMetrics& metrics);

  http::Exchange& exchange() { return *exchange_; }
  const http::Request& request() const { return exchange_->request(); }
  const std::string& request_id() const { return request_id_; }
  absl::Time start() const { return start_; }
  // The request's span (the gateway's HTTP server span): the parent of
  // every call made for it. Set once, before the filters run.
  void set_span(trace::Span span) { span_ = std::move(span); }
  // (Its context stays as it was when the span has ended.)
  const trace::SpanContext& trace_context() const { return span_.context(); }
  Clock& clock() { return clock_; }
  GatewayMetrics& metrics() { return metrics_; }

  // Set before the filters run.
  std::string route_name;  // the route's pattern, or "other"
  const Dialect* dialect = nullptr;
  std::vector<std::string> params;

  // Set by filters.
  std::optional<Principal> principal;
  std::string user_id;  // chat routes: whose conversations (ChatUserFilter)
  nlohmann::json body;
  ApiRequest api;

  // The generation outlives the client's connection (an idempotent
  // request: a retry will want its response), so a client that leaves does
  // not cancel it.
  bool detached = false;

  // What the request used, as far as it got (the sink fills it in).
  struct Outcome {
    bool started = false;    // a worker started generating
    bool cancelled = false;  // it was cancelled before it finished
    bool failed = false;     // it ended with an error
    int64_t input_tokens = 0;
    int64_t output_tokens = 0;
  };
  Outcome& outcome() { return outcome_; }

  // Headers every response of this request carries (rate limits).
  void AddResponseHeaders(const http::Headers& headers);
  // Runs `fn` once the response is complete (answered whole, or its stream
  // ended), just before its last bytes go to the client: where admission
  // gives back what the request did not use, so that the client's next
  // request finds it given back.
  void OnComplete(std::function<void(const Outcome&)> fn);

  // How to stop the request's generation (the handler that starts one sets
  // it); CancelGeneration does nothing before that or after the end.
  void set_cancel(std::function<void()> fn);
  void CancelGeneration();

  // Sees everything written from now on. Set it before the response starts.
  void set_tap(std::shared_ptr<ResponseTap> tap) { tap_ = std::move(tap); }
  // Stream writers pass their data through here before writing it.
  void Tap(const std::string& data) {
    if (tap_) tap_->OnStreamData(data);
  }

  // The model label for this request's metrics (see GatewayMetrics::For).
  void set_model(std::string model) { model_ = std::move(model); }
  const GatewayMetrics::Series& series() {
    return metrics_.For(route_name, dialect->name(), model_);
  }

  // A whole response.
  void Respond(int status, std::string_view content_type, std::string body,
               http::Headers extra = {});
  void RespondJson(int status, std::string body) {
    Respond(status, "application/json", std::move(body));
  }
  // An error in the route's dialect. `status` must carry no internals.
  void Fail(const absl::Status& status, int http_status = 0, http::Headers extra = {});

  // A streamed (SSE) response: 200 with the event-stream headers, then the
  // exchange's Write calls, then EndStream.
  void StartStream();
  void EndStream();
  bool streaming() const { return streaming_; }

 private:
  std::shared_ptr<http::Exchange> exchange_;
  std::string request_id_;
  Clock& clock_;
  GatewayMetrics& metrics_;
  void Completed();
  http::Headers WithCommonHeaders(http::Headers extra);
  void EndSpan(int http_status);

  absl::Time start_;
  std::string model_;
  bool streaming_ = false;
  Outcome outcome_;
  std::mutex hooks_mu_;
  http::Headers response_headers_;
  std::vector<std::function<void(const Outcome&)>> on_complete_;
  bool completed_ = false;
  std::shared_ptr<ResponseTap> tap_;
  std::function<void()> cancel_;  // guarded by hooks_mu_
  trace::Span span_;              // ended by the response's end
};

}  // namespace sb::gateway
