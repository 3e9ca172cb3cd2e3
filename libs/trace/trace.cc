#include "trace/trace.h"

#include <grpcpp/grpcpp.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>
#include <vector>

#include "absl/random/random.h"
#include "core/crypto.h"
#include "core/metrics.h"
#include "opentelemetry/proto/collector/trace/v1/trace_service.grpc.pb.h"

namespace sb::trace {

namespace otlp = opentelemetry::proto::trace::v1;
namespace collector = opentelemetry::proto::collector::trace::v1;

namespace {

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;  // the spec allows lower case only
}

bool ParseHex(std::string_view s, uint8_t* out, size_t n) {
  if (s.size() != 2 * n) return false;
  for (size_t i = 0; i < n; ++i) {
    const int hi = HexValue(s[2 * i]), lo = HexValue(s[2 * i + 1]);
    if (hi < 0 || lo < 0) return false;
    out[i] = static_cast<uint8_t>(hi << 4 | lo);
  }
  return true;
}

template <size_t N>
bool AllZero(const std::array<uint8_t, N>& a) {
  for (uint8_t b : a)
    if (b != 0) return false;
  return true;
}

template <size_t N>
void Randomize(std::array<uint8_t, N>& a) {
  thread_local absl::InsecureBitGen gen;
  do {
    for (size_t i = 0; i < N; i += 8) {
      uint64_t r = absl::Uniform<uint64_t>(gen);
      for (size_t j = 0; j < 8 && i + j < N; ++j) a[i + j] = static_cast<uint8_t>(r >> (8 * j));
    }
  } while (AllZero(a));
}

uint64_t UnixNanos(absl::Time t) { return static_cast<uint64_t>(absl::ToUnixNanos(t)); }

metrics::Counter& SpansCounter(const char* outcome) {
  return metrics::Default().GetCounter(
      "sb_trace_spans_total", "Spans ended, by what became of them", {{"outcome", outcome}});
}

}  // namespace

// Queues ended spans and sends them in batches from one thread.
class Exporter {
 public:
  explicit Exporter(const TracingOptions& options)
      : options_(options),
        exported_(SpansCounter("exported")),
        dropped_(SpansCounter("dropped_queue_full")),
        failed_(SpansCounter("export_failed")) {
    std::string target = options.otlp_endpoint;
    std::shared_ptr<grpc::ChannelCredentials> creds;
    if (target.rfind("https://", 0) == 0) {
      target = target.substr(8);
      creds = grpc::SslCredentials(grpc::SslCredentialsOptions());
    } else {
      if (target.rfind("http://", 0) == 0) target = target.substr(7);
      creds = grpc::InsecureChannelCredentials();
    }
    stub_ = collector::TraceService::NewStub(grpc::CreateChannel(target, creds));
    resource_.mutable_resource()->add_attributes()->set_key("service.name");
    resource_.mutable_resource()->mutable_attributes(0)->mutable_value()->set_string_value(
        options.service_name);
    auto* instance = resource_.mutable_resource()->add_attributes();
    instance->set_key("service.instance.id");
    char host[256] = {};
    gethostname(host, sizeof(host) - 1);
    instance->mutable_value()->set_string_value(std::string(host) + "/" + std::to_string(getpid()));
    thread_ = std::thread([this] { Loop(); });
  }

  ~Exporter() { Stop(absl::ZeroDuration()); }

  void Add(std::unique_ptr<otlp::Span> span) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (queue_.size() >= options_.max_queued_spans) {
        dropped_.Inc();
        return;
      }
      queue_.push_back(std::move(span));
      if (queue_.size() < options_.max_batch) return;
    }
    cv_.notify_one();
  }

  void Stop(absl::Duration flush) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stopping_) return;
      stopping_ = true;
      flush_deadline_ = absl::Now() + flush;
    }
    cv_.notify_one();
    if (thread_.joinable()) thread_.join();
  }

 private:
  void Loop() {
    std::unique_lock<std::mutex> lock(mu_);
    while (true) {
      cv_.wait_for(lock, absl::ToChronoMilliseconds(options_.export_interval),
                   [&] { return stopping_ || queue_.size() >= options_.max_batch; });
      if (stopping_ && (queue_.empty() || absl::Now() >= flush_deadline_)) {
        if (!queue_.empty()) failed_.Inc(static_cast<double>(queue_.size()));
        queue_.clear();
        return;
      }
      while (!queue_.empty()) {
        std::vector<std::unique_ptr<otlp::Span>> batch;
        while (!queue_.empty() && batch.size() < options_.max_batch) {
          batch.push_back(std::move(queue_.front()));
          queue_.pop_front();
        }
        const absl::Time deadline =
            stopping_ ? std::min(flush_deadline_, absl::Now() + options_.export_timeout)
                      : absl::Now() + options_.export_timeout;
        lock.unlock();
        Send(std::move(batch), deadline);
        lock.lock();
        if (stopping_ && absl::Now() >= flush_deadline_) break;
      }
    }
  }

  void Send(std::vector<std::unique_ptr<otlp::Span>> batch, absl::Time deadline) {
    collector::ExportTraceServiceRequest request;
    auto* rs = request.add_resource_spans();
    *rs->mutable_resource() = resource_.resource();
    auto* scope = rs->add_scope_spans();
    scope->mutable_scope()->set_name("switchboard");
    for (auto& s : batch) scope->mutable_spans()->AddAllocated(s.release());
    const double n = static_cast<double>(batch.size());
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(deadline));
    collector::ExportTraceServiceResponse response;
    const grpc::Status st = stub_->Export(&ctx, request, &response);
    if (!st.ok()) {
      failed_.Inc(n);
      // Once a minute at most: a collector that is away must not flood logs.
      const absl::Time now = absl::Now();
      if (now - last_warning_ >= absl::Minutes(1)) {
        last_warning_ = now;
        spdlog::warn("traces: exporting {} spans to {} failed: {} (spans dropped)", batch.size(),
                     options_.otlp_endpoint, st.error_message());
      }
      return;
    }
    const int64_t rejected = response.partial_success().rejected_spans();
    exported_.Inc(n - static_cast<double>(rejected));
    if (rejected > 0) failed_.Inc(static_cast<double>(rejected));
  }

  const TracingOptions options_;
  metrics::Counter& exported_;
  metrics::Counter& dropped_;
  metrics::Counter& failed_;
  std::unique_ptr<collector::TraceService::Stub> stub_;
  otlp::ResourceSpans resource_;
  absl::Time last_warning_ = absl::InfinitePast();

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::unique_ptr<otlp::Span>> queue_;
  bool stopping_ = false;
  absl::Time flush_deadline_;
  std::thread thread_;
};

namespace {

struct State {
  std::mutex mu;  // guards the pointer's replacement, not the exporter
  std::shared_ptr<Exporter> exporter;
  std::atomic<double> ratio{0.0};
};

State& GlobalState() {
  static auto* state = new State();
  return *state;
}

std::shared_ptr<Exporter> CurrentExporter() {
  State& s = GlobalState();
  std::lock_guard<std::mutex> lock(s.mu);
  return s.exporter;
}

bool SampleRoot() {
  const double ratio = GlobalState().ratio.load(std::memory_order_relaxed);
  if (ratio <= 0) return false;
  if (ratio >= 1) return true;
  thread_local absl::InsecureBitGen gen;
  return absl::Uniform(gen, 0.0, 1.0) < ratio;
}

}  // namespace

bool SpanContext::valid() const { return !AllZero(trace_id) && !AllZero(span_id); }

namespace {

template <size_t N>
std::string HexOf(const std::array<uint8_t, N>& id) {
  return HexEncode(std::string_view(reinterpret_cast<const char*>(id.data()), N));
}

}  // namespace

std::string SpanContext::TraceIdHex() const { return HexOf(trace_id); }
std::string SpanContext::SpanIdHex() const { return HexOf(span_id); }

std::string SpanContext::Traceparent() const {
  if (!valid()) return "";
  return "00-" + TraceIdHex() + "-" + SpanIdHex() + (sampled ? "-01" : "-00");
}

std::optional<SpanContext> ParseTraceparent(std::string_view value) {
  // version "-" trace-id "-" parent-id "-" trace-flags: 2+1+32+1+16+1+2.
  if (value.size() < 55) return std::nullopt;
  uint8_t version;
  if (!ParseHex(value.substr(0, 2), &version, 1) || version == 0xff) return std::nullopt;
  if (value[2] != '-' || value[35] != '-' || value[52] != '-') return std::nullopt;
  // Version 00 is exactly 55 characters; a later one may append "-...".
  if (version == 0 ? value.size() != 55 : (value.size() > 55 && value[55] != '-'))
    return std::nullopt;
  SpanContext ctx;
  uint8_t flags;
  if (!ParseHex(value.substr(3, 32), ctx.trace_id.data(), 16) ||
      !ParseHex(value.substr(36, 16), ctx.span_id.data(), 8) ||
      !ParseHex(value.substr(53, 2), &flags, 1) || !ctx.valid()) {
    return std::nullopt;
  }
  ctx.sampled = (flags & 0x01) != 0;
  return ctx;
}

Span::Span(Span&& other) noexcept
    : context_(other.context_),
      data_(std::move(other.data_)),
      exporter_(std::move(other.exporter_)) {}

Span& Span::operator=(Span&& other) noexcept {
  if (this != &other) {
    End();
    context_ = other.context_;
    data_ = std::move(other.data_);
    exporter_ = std::move(other.exporter_);
  }
  return *this;
}

Span::Span() = default;
Span::~Span() { End(); }

void Span::SetName(std::string_view name) {
  if (data_) data_->set_name(std::string(name));
}

void Span::SetAttribute(std::string_view key, std::string_view value) {
  if (!data_) return;
  auto* kv = data_->add_attributes();
  kv->set_key(std::string(key));
  kv->mutable_value()->set_string_value(std::string(value));
}

void Span::SetAttribute(std::string_view key, int64_t value) {
  if (!data_) return;
  auto* kv = data_->add_attributes();
  kv->set_key(std::string(key));
  kv->mutable_value()->set_int_value(value);
}

void Span::SetError(std::string_view message) {
  if (!data_) return;
  data_->mutable_status()->set_code(otlp::Status::STATUS_CODE_ERROR);
  data_->mutable_status()->set_message(std::string(message));
}

void Span::End() {
  if (!data_) return;
  data_->set_end_time_unix_nano(UnixNanos(absl::Now()));
  exporter_->Add(std::move(data_));
  exporter_ = nullptr;
}

Span StartSpan(std::string_view name, SpanKind kind, const SpanContext& parent,
               const TraceId* root_trace_id) {
  Span span;
  SpanContext& ctx = span.context_;
  if (parent.valid()) {
    ctx.trace_id = parent.trace_id;
    ctx.sampled = parent.sampled;
  } else {
    if (root_trace_id != nullptr && !AllZero(*root_trace_id)) {
      ctx.trace_id = *root_trace_id;
    } else {
      Randomize(ctx.trace_id);
    }
    ctx.sampled = SampleRoot();
  }
  Randomize(ctx.span_id);
  if (!ctx.sampled) return span;
  std::shared_ptr<Exporter> exporter = CurrentExporter();
  if (!exporter) return span;
  auto data = std::make_unique<otlp::Span>();
  data->set_trace_id(ctx.trace_id.data(), ctx.trace_id.size());
  data->set_span_id(ctx.span_id.data(), ctx.span_id.size());
  if (parent.valid()) data->set_parent_span_id(parent.span_id.data(), parent.span_id.size());
  data->set_flags(0x01);
  data->set_name(std::string(name));
  data->set_kind(static_cast<otlp::Span::SpanKind>(kind));
  data->set_start_time_unix_nano(UnixNanos(absl::Now()));
  span.data_ = std::move(data);
  span.exporter_ = std::move(exporter);
  return span;
}

void StartTracing(const TracingOptions& options) {
  auto exporter = options.otlp_endpoint.empty() ? nullptr : std::make_shared<Exporter>(options);
  std::shared_ptr<Exporter> previous;
  State& s = GlobalState();
  {
    std::lock_guard<std::mutex> lock(s.mu);
    previous = std::move(s.exporter);
    s.exporter = exporter;
  }
  s.ratio.store(std::clamp(options.sample_ratio, 0.0, 1.0));
  if (previous) previous->Stop(absl::Seconds(2));
}

void StopTracing(absl::Duration flush) {
  std::shared_ptr<Exporter> previous;
  State& s = GlobalState();
  {
    std::lock_guard<std::mutex> lock(s.mu);
    previous = std::move(s.exporter);
  }
  if (previous) previous->Stop(flush);
}

double SampleRatio() { return CurrentExporter() ? GlobalState().ratio.load() : 0.0; }

bool Exporting() { return CurrentExporter() != nullptr; }

}  // namespace sb::trace
