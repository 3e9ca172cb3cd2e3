// Distributed tracing: W3C trace context (`traceparent`) and spans exported
// over OTLP/gRPC to any OpenTelemetry collector. No OTel SDK is packaged
// here, so this is the small part of one we need.
//
// A span is recorded only when its trace is sampled and an exporter runs
// (StartTracing with an endpoint); otherwise a Span is a pair of ids that
// still propagate, so that a later service sees the same trace.
//
//   auto span = trace::StartSpan("POST /v1/messages", trace::SpanKind::kServer, parent);
//   span.SetAttribute("http.response.status_code", int64_t{200});
//   grpc_ctx.AddMetadata(...) via trace::Inject(grpc_ctx, span.context());
//   // the span ends when it goes out of scope, or at End().
//
// Sampling is decided once, where a trace starts (a ratio, --trace_sample_ratio);
// every later span follows its parent's sampled flag.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "absl/time/time.h"

namespace opentelemetry::proto::trace::v1 {
class Span;
}

namespace sb::trace {

class Exporter;

using TraceId = std::array<uint8_t, 16>;
using SpanId = std::array<uint8_t, 8>;

struct SpanContext {
  TraceId trace_id{};
  SpanId span_id{};
  bool sampled = false;

  // Both ids non-zero.
  bool valid() const;
  std::string TraceIdHex() const;
  std::string SpanIdHex() const;
  // "00-<trace id>-<span id>-<flags>", or "" when not valid.
  std::string Traceparent() const;
};

// A `traceparent` header value (version 00, or a later version's first
// four fields); nullopt for anything malformed, all-zero ids included.
std::optional<SpanContext> ParseTraceparent(std::string_view value);

enum class SpanKind { kInternal = 1, kServer = 2, kClient = 3, kProducer = 4, kConsumer = 5 };

class Span {
 public:
  Span();
  Span(Span&& other) noexcept;
  Span& operator=(Span&& other) noexcept;
  ~Span();

  const SpanContext& context() const { return context_; }
  // Whether this span will be exported (sampled, and tracing is on).
  bool recording() const { return data_ != nullptr; }

  // The name given at the start may be refined (e.g. once the route is known).
  void SetName(std::string_view name);
  void SetAttribute(std::string_view key, std::string_view value);
  void SetAttribute(std::string_view key, const char* value) {
    SetAttribute(key, std::string_view(value));
  }
  void SetAttribute(std::string_view key, int64_t value);
  // Marks the span failed, with a message for the trace (internal: traces
  // are for operators).
  void SetError(std::string_view message);
  // Ends the span (idempotent); it is queued for export.
  void End();

 private:
  friend Span StartSpan(std::string_view, SpanKind, const SpanContext&, const TraceId*);
  SpanContext context_;
  std::unique_ptr<opentelemetry::proto::trace::v1::Span> data_;
  std::shared_ptr<Exporter> exporter_;  // where it goes when it ends (with data_)
};

// Starts a span: a child of `parent` when it is valid (sampled as the parent
// is), else the root of a new trace, sampled at the configured ratio, whose
// id is `root_trace_id` when given (else random).
Span StartSpan(std::string_view name, SpanKind kind, const SpanContext& parent = {},
               const TraceId* root_trace_id = nullptr);

struct TracingOptions {
  std::string service_name;
  // host:port of an OTLP/gRPC receiver (plaintext; "https://host:port" for
  // TLS with the system's roots). Empty: nothing is recorded or exported.
  std::string otlp_endpoint;
  double sample_ratio = 0.01;      // of traces started here
  size_t max_queued_spans = 8192;  // beyond it, spans are dropped (counted)
  size_t max_batch = 512;
  absl::Duration export_interval = absl::Seconds(1);
  absl::Duration export_timeout = absl::Seconds(5);
};

// Process-wide; a second call replaces the first (after flushing it).
void StartTracing(const TracingOptions& options);
// Exports what is queued (for at most `flush`) and stops the exporter.
void StopTracing(absl::Duration flush = absl::Seconds(2));

// The sampling ratio in force (0 when tracing is off).
double SampleRatio();
// Whether an exporter runs (StartTracing with an endpoint).
bool Exporting();

}  // namespace sb::trace
