#include "trace/trace.h"

#include <grpcpp/grpcpp.h>
#include <grpcpp/support/server_interceptor.h>
#include <gtest/gtest.h>

#include "core/crypto.h"
#include "core/metrics.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "trace/grpc_trace.h"
#include "trace/otlp_receiver.h"

namespace sb::trace {
namespace {

using opentelemetry::proto::trace::v1::Span_SpanKind_SPAN_KIND_SERVER;
using opentelemetry::proto::trace::v1::Status;

constexpr char kExample[] = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

std::string Bytes(const std::string& hex) { return HexDecode(hex).value(); }

double SpansWith(const std::string& outcome) {
  return metrics::Default()
      .GetCounter("sb_trace_spans_total", "Spans ended, by what became of them",
                  {{"outcome", outcome}})
      .Value();
}

const opentelemetry::proto::common::v1::AnyValue* Attribute(
    const opentelemetry::proto::trace::v1::Span& span, const std::string& key) {
  for (const auto& kv : span.attributes())
    if (kv.key() == key) return &kv.value();
  return nullptr;
}

TEST(TraceparentTest, ParsesTheSpecsExample) {
  auto ctx = ParseTraceparent(kExample);
  ASSERT_TRUE(ctx.has_value());
  EXPECT_EQ(ctx->TraceIdHex(), "4bf92f3577b34da6a3ce929d0e0e4736");
  EXPECT_EQ(ctx->SpanIdHex(), "00f067aa0ba902b7");
  EXPECT_TRUE(ctx->sampled);
  EXPECT_EQ(ctx->Traceparent(), kExample);

  auto unsampled = ParseTraceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00");
  ASSERT_TRUE(unsampled.has_value());
  EXPECT_FALSE(unsampled->sampled);
  // Other flag bits do not mean sampled.
  EXPECT_FALSE(
      ParseTraceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-02")->sampled);
}

TEST(TraceparentTest, RefusesWhatTheSpecRefuses) {
  for (const char* bad : {
           "",
           "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",       // no flags
           "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",    // upper case
           "00-00000000000000000000000000000000-00f067aa0ba902b7-01",    // zero trace id
           "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",    // zero span id
           "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",    // version ff
           "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",  // 00 has 4 fields
           "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
           "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
           "0x-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
       }) {
    EXPECT_FALSE(ParseTraceparent(bad).has_value()) << bad;
  }
  // A later version may add fields after a dash.
  EXPECT_TRUE(ParseTraceparent("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-future")
                  .has_value());
  EXPECT_FALSE(ParseTraceparent("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01future")
                   .has_value());
}

TEST(SpanTest, AChildKeepsItsParentsTraceAndSampling) {
  StopTracing();
  const auto parent = *ParseTraceparent(kExample);
  Span child = StartSpan("child", SpanKind::kServer, parent);
  EXPECT_EQ(child.context().trace_id, parent.trace_id);
  EXPECT_NE(child.context().span_id, parent.span_id);
  EXPECT_TRUE(child.context().sampled);
  EXPECT_FALSE(child.recording()) << "no exporter: nothing is recorded";

  TraceId root_id{};
  root_id[0] = 0x01;
  root_id[15] = 0x7f;
  Span root = StartSpan("root", SpanKind::kServer, {}, &root_id);
  EXPECT_EQ(root.context().trace_id, root_id);
  EXPECT_TRUE(root.context().valid());
  Span random = StartSpan("root", SpanKind::kServer);
  EXPECT_TRUE(random.context().valid());
  EXPECT_NE(random.context().trace_id, root_id);
}

TEST(SpanTest, RootsAreSampledAtTheRatio) {
  OtlpReceiver receiver;
  for (double ratio : {0.0, 1.0, 0.25}) {
    StartTracing({.service_name = "t", .otlp_endpoint = receiver.address(), .sample_ratio = ratio});
    int sampled = 0;
    for (int i = 0; i < 4000; ++i) sampled += StartSpan("r", SpanKind::kServer).context().sampled;
    if (ratio == 0.0) {
      EXPECT_EQ(sampled, 0);
    } else if (ratio == 1.0) {
      EXPECT_EQ(sampled, 4000);
    } else {
      EXPECT_GT(sampled, 800);
      EXPECT_LT(sampled, 1200);
    }
  }
  StopTracing();
}

TEST(ExportTest, SpansReachTheCollectorWithTheirParentsAndService) {
  OtlpReceiver receiver;
  const double exported_before = SpansWith("exported");
  StartTracing({.service_name = "gateway",
                .otlp_endpoint = receiver.address(),
                .sample_ratio = 1.0,
                .export_interval = absl::Milliseconds(50)});
  SpanContext root_ctx, child_ctx;
  {
    Span root = StartSpan("POST /v1/messages", SpanKind::kServer);
    root.SetAttribute("http.response.status_code", int64_t{200});
    root_ctx = root.context();
    Span child = StartSpan("work", SpanKind::kInternal, root.context());
    child.SetError("it broke");
    child_ctx = child.context();
  }
  auto spans = receiver.WaitForSpans([](const auto& s) { return s.size() >= 2; });
  ASSERT_EQ(spans.size(), 2u);
  // The child ended first.
  const auto& child = spans[0].span;
  const auto& root = spans[1].span;
  EXPECT_EQ(spans[0].service, "gateway");
  EXPECT_EQ(root.name(), "POST /v1/messages");
  EXPECT_EQ(root.kind(), Span_SpanKind_SPAN_KIND_SERVER);
  EXPECT_EQ(root.trace_id(), Bytes(root_ctx.TraceIdHex()));
  EXPECT_EQ(root.span_id(), Bytes(root_ctx.SpanIdHex()));
  EXPECT_TRUE(root.parent_span_id().empty());
  EXPECT_GE(root.end_time_unix_nano(), root.start_time_unix_nano());
  ASSERT_NE(Attribute(root, "http.response.status_code"), nullptr);
  EXPECT_EQ(Attribute(root, "http.response.status_code")->int_value(), 200);
  EXPECT_EQ(child.trace_id(), root.trace_id());
  EXPECT_EQ(child.parent_span_id(), root.span_id());
  EXPECT_EQ(child.span_id(), Bytes(child_ctx.SpanIdHex()));
  EXPECT_EQ(child.status().code(), Status::STATUS_CODE_ERROR);
  EXPECT_EQ(child.status().message(), "it broke");
  StopTracing();
  EXPECT_EQ(SpansWith("exported") - exported_before, 2);
}

TEST(ExportTest, AnUnsampledTraceExportsNothing) {
  OtlpReceiver receiver;
  StartTracing({.service_name = "t",
                .otlp_endpoint = receiver.address(),
                .sample_ratio = 1.0,
                .export_interval = absl::Milliseconds(20)});
  auto parent = *ParseTraceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00");
  {
    Span s = StartSpan("x", SpanKind::kServer, parent);
    EXPECT_FALSE(s.recording());
  }
  { Span s = StartSpan("sampled", SpanKind::kServer); }
  auto spans = receiver.WaitForSpans([](const auto& s) { return !s.empty(); });
  StopTracing();
  ASSERT_EQ(spans.size(), 1u);
  EXPECT_EQ(spans[0].span.name(), "sampled");
}

TEST(ExportTest, ACollectorThatIsAwayCostsTheCallerNothingAndIsCounted) {
  int port;
  {
    OtlpReceiver gone;  // a port nobody listens on once it is destroyed
    port = std::stoi(gone.address().substr(gone.address().rfind(':') + 1));
  }
  const double failed_before = SpansWith("export_failed");
  StartTracing({.service_name = "t",
                .otlp_endpoint = "127.0.0.1:" + std::to_string(port),
                .sample_ratio = 1.0,
                .export_interval = absl::Milliseconds(20),
                .export_timeout = absl::Milliseconds(500)});
  const absl::Time start = absl::Now();
  for (int i = 0; i < 100; ++i) StartSpan("s", SpanKind::kServer).End();
  const absl::Duration ending = absl::Now() - start;
  StopTracing(absl::Seconds(3));
  EXPECT_EQ(SpansWith("export_failed") - failed_before, 100);
  // Ending a span only queues it: 100 of them took nowhere near one export
  // timeout (a generous bound, not a performance figure).
  EXPECT_LT(ending, absl::Milliseconds(400));
}

TEST(ExportTest, TheQueueIsBoundedAndDropsAreCounted) {
  OtlpReceiver receiver;
  const double dropped_before = SpansWith("dropped_queue_full");
  StartTracing({.service_name = "t",
                .otlp_endpoint = receiver.address(),
                .sample_ratio = 1.0,
                .max_queued_spans = 10,
                .max_batch = 100,
                .export_interval = absl::Hours(1)});
  for (int i = 0; i < 25; ++i) StartSpan("s", SpanKind::kServer).End();
  EXPECT_EQ(SpansWith("dropped_queue_full") - dropped_before, 15);
  StopTracing(absl::Seconds(3));
  EXPECT_EQ(receiver.Spans().size(), 10u) << "what was queued is flushed at stop";
}

// A service whose handler records the span its call runs in.
class Recorder final : public grpc::health::v1::Health::CallbackService {
 public:
  grpc::ServerUnaryReactor* Check(grpc::CallbackServerContext* ctx,
                                  const grpc::health::v1::HealthCheckRequest* req,
                                  grpc::health::v1::HealthCheckResponse*) override {
    seen = ServerSpanContext(ctx);
    auto* reactor = ctx->DefaultReactor();
    reactor->Finish(req->service() == "fail" ? grpc::Status(grpc::StatusCode::NOT_FOUND, "no")
                                             : grpc::Status::OK);
    return reactor;
  }
  SpanContext seen;
};

TEST(GrpcTraceTest, AServerCallWithTraceparentIsAChildSpanItsHandlerCanContinue) {
  OtlpReceiver receiver;
  StartTracing({.service_name = "safety",
                .otlp_endpoint = receiver.address(),
                .sample_ratio = 1.0,
                .export_interval = absl::Milliseconds(20)});
  Recorder recorder;
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
  builder.RegisterService(&recorder);
  std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>> creators;
  creators.push_back(NewServerInterceptorFactory());
  builder.experimental().SetInterceptorCreators(std::move(creators));
  auto server = builder.BuildAndStart();
  auto stub = grpc::health::v1::Health::NewStub(
      grpc::CreateChannel("127.0.0.1:" + std::to_string(port), grpc::InsecureChannelCredentials()));

  const auto parent = *ParseTraceparent(kExample);
  for (const char* service : {"ok", "fail"}) {
    grpc::ClientContext ctx;
    Inject(ctx, parent);
    grpc::health::v1::HealthCheckRequest req;
    req.set_service(service);
    grpc::health::v1::HealthCheckResponse resp;
    stub->Check(&ctx, req, &resp);
    EXPECT_EQ(recorder.seen.trace_id, parent.trace_id);
    EXPECT_NE(recorder.seen.span_id, parent.span_id);
  }
  const SpanContext last_seen = recorder.seen;
  {
    grpc::ClientContext ctx;  // no trace context: no span
    grpc::health::v1::HealthCheckRequest req;
    grpc::health::v1::HealthCheckResponse resp;
    stub->Check(&ctx, req, &resp);
    EXPECT_FALSE(recorder.seen.valid());
  }
  auto spans = receiver.WaitForSpans([](const auto& s) { return s.size() >= 2; });
  server->Shutdown();
  StopTracing();
  ASSERT_EQ(spans.size(), 2u);
  for (const auto& s : spans) {
    EXPECT_EQ(s.service, "safety");
    EXPECT_EQ(s.span.name(), "grpc.health.v1.Health/Check");
    EXPECT_EQ(s.span.kind(), Span_SpanKind_SPAN_KIND_SERVER);
    EXPECT_EQ(s.span.trace_id(), Bytes("4bf92f3577b34da6a3ce929d0e0e4736"));
    EXPECT_EQ(s.span.parent_span_id(), Bytes("00f067aa0ba902b7"));
    ASSERT_NE(Attribute(s.span, "rpc.grpc.status_code"), nullptr);
  }
  EXPECT_EQ(Attribute(spans[0].span, "rpc.grpc.status_code")->int_value(), 0);
  EXPECT_EQ(Attribute(spans[1].span, "rpc.grpc.status_code")->int_value(), 5);
  EXPECT_EQ(spans[1].span.status().code(), Status::STATUS_CODE_ERROR);
  EXPECT_EQ(spans[1].span.span_id(), Bytes(last_seen.SpanIdHex()))
      << "the handler saw its own call's span";
}

}  // namespace
}  // namespace sb::trace

namespace sb::trace {
namespace {

TEST(GrpcTraceTest, WithoutTheInterceptorAHandlerPassesItsCallersContextOn) {
  Recorder recorder;
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
  builder.RegisterService(&recorder);
  auto server = builder.BuildAndStart();
  auto stub = grpc::health::v1::Health::NewStub(
      grpc::CreateChannel("127.0.0.1:" + std::to_string(port), grpc::InsecureChannelCredentials()));
  const auto parent = *ParseTraceparent(kExample);
  grpc::ClientContext ctx;
  Inject(ctx, parent);
  grpc::health::v1::HealthCheckRequest req;
  grpc::health::v1::HealthCheckResponse resp;
  ASSERT_TRUE(stub->Check(&ctx, req, &resp).ok());
  EXPECT_EQ(recorder.seen.Traceparent(), parent.Traceparent());
  server->Shutdown();
}

}  // namespace
}  // namespace sb::trace
