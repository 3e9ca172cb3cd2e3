#include "gateway/context.h"

#include "absl/strings/string_view.h"
#include "core/metrics.h"

namespace sb::gateway {

std::vector<double> TimeToFirstTokenBuckets() {
  return {0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1,  0.25,  0.5,   0.75,
          1.0,   2.5,   5.0,  7.5,  10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0};
}

std::vector<double> InterTokenLatencyBuckets() {
  return {0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2,  0.3,  0.4, 0.5,
          0.75, 1.0,   2.5,  5.0,   7.5, 10.0, 20.0, 40.0, 80.0};
}

namespace {

std::vector<double> DurationBuckets() {
  auto b = metrics::LatencyBuckets();
  b.insert(b.end(), {120, 300, 600, 1800});
  return b;
}

}  // namespace

GatewayMetrics::GatewayMetrics(metrics::Registry& registry)
    : registry_(registry),
      streams_gauge_(
          registry.GetGauge("sb_gateway_active_streams", "SSE responses being written")) {}

const GatewayMetrics::Series& GatewayMetrics::For(std::string_view route, std::string_view dialect,
                                                  std::string_view model) {
  if (model.empty()) model = "none";
  const auto key = std::make_tuple(route, dialect, model);
  {
    std::shared_lock<std::shared_mutex> lock(mu_);
    auto it = series_.find(key);
    if (it != series_.end()) return *it->second;
  }
  const metrics::Labels labels = {{"route", std::string(route)},
                                  {"dialect", std::string(dialect)},
                                  {"model", std::string(model)}};
  auto series = std::make_unique<Series>(
      Series{&registry_.GetHistogram("sb_gateway_request_duration_seconds",
                                     "From the request's arrival to the end of its response",
                                     labels, DurationBuckets()),
             &registry_.GetHistogram("sb_gateway_time_to_first_token_seconds",
                                     "From the request's arrival to its first output text written",
                                     labels, TimeToFirstTokenBuckets()),
             &registry_.GetHistogram("sb_gateway_inter_token_latency_seconds",
                                     "Between two output texts written to a stream", labels,
                                     InterTokenLatencyBuckets())});
  std::unique_lock<std::shared_mutex> lock(mu_);
  auto [it, inserted] = series_.try_emplace(
      Key(std::string(route), std::string(dialect), std::string(model)), std::move(series));
  return *it->second;
}

metrics::Counter& GatewayMetrics::Responses(std::string_view route, std::string_view dialect,
                                            int status) {
  const std::string code = std::to_string(status);
  const auto key = std::make_tuple(route, dialect, std::string_view(code));
  {
    std::shared_lock<std::shared_mutex> lock(mu_);
    auto it = responses_.find(key);
    if (it != responses_.end()) return *it->second;
  }
  auto& counter = registry_.GetCounter(
      "sb_gateway_responses_total", "HTTP responses by route, dialect and status",
      {{"route", std::string(route)}, {"dialect", std::string(dialect)}, {"code", code}});
  std::unique_lock<std::shared_mutex> lock(mu_);
  responses_.try_emplace(Key(std::string(route), std::string(dialect), code), &counter);
  return counter;
}

void GatewayMetrics::StreamStarted() {
  active_streams_.fetch_add(1);
  streams_gauge_.Add(1);
}

void GatewayMetrics::StreamEnded() {
  active_streams_.fetch_sub(1);
  streams_gauge_.Add(-1);
}

RequestContext::RequestContext(std::shared_ptr<http::Exchange> exchange, std::string request_id,
                               Clock& clock, GatewayMetrics& metrics)
    : exchange_(std::move(exchange)),
      request_id_(std::move(request_id)),
      clock_(clock),
      metrics_(metrics),
      start_(clock.Now()) {}

void RequestContext::AddResponseHeaders(const http::Headers& headers) {
  std::lock_guard<std::mutex> lock(hooks_mu_);
  response_headers_.insert(response_headers_.end(), headers.begin(), headers.end());
}

void RequestContext::OnComplete(std::function<void(const Outcome&)> fn) {
  std::lock_guard<std::mutex> lock(hooks_mu_);
  on_complete_.push_back(std::move(fn));
}

void RequestContext::set_cancel(std::function<void()> fn) {
  std::lock_guard<std::mutex> lock(hooks_mu_);
  cancel_ = std::move(fn);
}

void RequestContext::CancelGeneration() {
  std::function<void()> fn;
  {
    std::lock_guard<std::mutex> lock(hooks_mu_);
    fn = cancel_;
  }
  if (fn) fn();
}

http::Headers RequestContext::WithCommonHeaders(http::Headers extra) {
  extra.emplace_back("request-id", request_id_);
  std::lock_guard<std::mutex> lock(hooks_mu_);
  extra.insert(extra.end(), response_headers_.begin(), response_headers_.end());
  return extra;
}

void RequestContext::Completed() {
  std::vector<std::function<void(const Outcome&)>> hooks;
  {
    std::lock_guard<std::mutex> lock(hooks_mu_);
    if (completed_) return;
    completed_ = true;
    hooks.swap(on_complete_);
  }
  for (auto& fn : hooks) fn(outcome_);
}

void RequestContext::Respond(int status, std::string_view content_type, std::string body,
                             http::Headers extra) {
  extra.emplace_back("content-type", std::string(content_type));
  if (tap_) tap_->OnWhole(status, content_type, body);
  metrics_.Responses(route_name, dialect->name(), status).Inc();
  series().duration->Observe(absl::ToDoubleSeconds(clock_.Now() - start_));
  // Settle first (give back what the request did not use, finish its
  // record): a client that sends again as soon as it has this response
  // must find it settled.
  Completed();
  EndSpan(status);
  exchange_->Respond(status, WithCommonHeaders(std::move(extra)), std::move(body));
}

void RequestContext::EndSpan(int http_status) {
  if (!span_.recording()) return;
  span_.SetName(request().method + " " + route_name);
  span_.SetAttribute("http.request.method", request().method);
  span_.SetAttribute("http.route", route_name);
  span_.SetAttribute("http.response.status_code", static_cast<int64_t>(http_status));
  span_.SetAttribute("switchboard.request_id", request_id_);
  if (!model_.empty()) span_.SetAttribute("gen_ai.response.model", model_);
  if (principal) span_.SetAttribute("switchboard.org_id", principal->org_id);
  if (outcome_.output_tokens > 0) {
    span_.SetAttribute("gen_ai.usage.input_tokens", outcome_.input_tokens);
    span_.SetAttribute("gen_ai.usage.output_tokens", outcome_.output_tokens);
  }
  if (http_status >= 500) span_.SetError("HTTP " + std::to_string(http_status));
  if (outcome_.failed) span_.SetError("the generation failed");
  span_.End();
}

namespace {

// Why a request was refused, the same in both dialects (their error types
// differ): the tenants dashboard's rejections by reason.
const char* RefusalReason(int http_status) {
  switch (http_status) {
    case 400:
      return "invalid_request";
    case 401:
      return "authentication";
    case 402:
      return "budget";
    case 403:
      return "permission";
    case 404:
      return "not_found";
    case 408:
    case 504:
      return "timeout";
    case 409:
      return "conflict";
    case 413:
      return "too_large";
    case 429:
      return "rate_limited";
    case 499:
      return "client_closed";
    case 503:
    case 529:
      return "overloaded";
    default:
      return http_status >= 500 ? "internal" : "other";
  }
}

}  // namespace

void RequestContext::Fail(const absl::Status& status, int http_status, http::Headers extra) {
  ErrorReply e = dialect->Error(status, http_status);
  metrics::Default()
      .GetCounter("sb_gateway_refusals_total", "Requests answered with an error, by reason",
                  {{"route", std::string(route_name)}, {"reason", RefusalReason(e.http_status)}})
      .Inc();
  if (e.retry_after_seconds > 0)
    extra.emplace_back("retry-after", std::to_string(e.retry_after_seconds));
  Respond(e.http_status, "application/json", std::move(e.body), std::move(extra));
}

void RequestContext::StartStream() {
  streaming_ = true;
  if (tap_) tap_->OnStreamStart();
  metrics_.StreamStarted();
  metrics_.Responses(route_name, dialect->name(), 200).Inc();
  exchange_->StartStream(200,
                         WithCommonHeaders({{"content-type", "text/event-stream; charset=utf-8"},
                                            {"cache-control", "no-cache"},
                                            {"x-accel-buffering", "no"}}));
}

void RequestContext::EndStream() {
  series().duration->Observe(absl::ToDoubleSeconds(clock_.Now() - start_));
  metrics_.StreamEnded();
  Completed();  // before the end reaches the client, as in Respond
  EndSpan(200);
  exchange_->EndStream();
}

}  // namespace sb::gateway
