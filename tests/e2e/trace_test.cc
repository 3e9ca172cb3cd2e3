// Traces across services (issue 12): one API request, sent with a sampled
// W3C traceparent, yields one connected trace — the gateway's HTTP span, a
// child of the client's, and under it a span in safety, the tenant
// scheduler and the inference worker for each call made for the request —
// exported over OTLP/gRPC to the suite's own receiver (g_otlp).
#include "trace/trace.h"

#include <fstream>
#include <set>
#include <sstream>

#include "absl/random/random.h"
#include "core/crypto.h"
#include "e2e/e2e_helpers.h"
#include "gtest/gtest.h"

namespace sb::testing {
namespace {

using nlohmann::json;
using trace::ReceivedSpan;

// A fresh sampled (or not) client context.
trace::SpanContext ClientContext(bool sampled) {
  static absl::BitGen gen;
  trace::SpanContext c;
  for (auto& b : c.trace_id) b = absl::Uniform<uint8_t>(gen);
  for (auto& b : c.span_id) b = absl::Uniform<uint8_t>(gen);
  c.trace_id[0] |= 1;
  c.span_id[0] |= 1;
  c.sampled = sampled;
  return c;
}

std::string Bytes(const uint8_t* p, size_t n) {
  return std::string(reinterpret_cast<const char*>(p), n);
}

http::Response PostTraced(const std::string& target, const std::string& body,
                          const std::string& traceparent, int port = 0) {
  http::Headers headers = {{"x-api-key", g_cluster->api_key()},
                           {"anthropic-version", "2023-06-01"},
                           {"content-type", "application/json"}};
  if (!traceparent.empty()) headers.emplace_back("traceparent", traceparent);
  auto r = http::Fetch({.port = port != 0 ? port : g_cluster->http_port(),
                        .method = "POST",
                        .target = target,
                        .headers = headers,
                        .body = body});
  EXPECT_TRUE(r.ok()) << r.status();
  return r.ok() ? *r : http::Response{};
}

std::vector<ReceivedSpan> OfTrace(const std::vector<ReceivedSpan>& all,
                                  const std::string& trace_id) {
  std::vector<ReceivedSpan> out;
  for (const auto& s : all)
    if (s.span.trace_id() == trace_id) out.push_back(s);
  return out;
}

std::string Describe(const std::vector<ReceivedSpan>& spans) {
  std::string out;
  for (const auto& s : spans)
    out += "  " + s.service + " " + s.span.name() +
           " parent=" + HexEncode(s.span.parent_span_id()) + " id=" + HexEncode(s.span.span_id()) +
           "\n";
  return out;
}

const opentelemetry::proto::trace::v1::Span* Find(const std::vector<ReceivedSpan>& spans,
                                                  const std::string& service,
                                                  const std::string& name) {
  for (const auto& s : spans)
    if (s.service == service && s.span.name() == name) return &s.span;
  return nullptr;
}

std::string StringAttribute(const opentelemetry::proto::trace::v1::Span& span,
                            const std::string& key) {
  for (const auto& kv : span.attributes())
    if (kv.key() == key) return kv.value().string_value();
  return "";
}

// Every span's parent is in the trace, but for one root whose parent is
// `client_span` (the client's own, not exported here).
void ExpectConnected(const std::vector<ReceivedSpan>& spans, const std::string& client_span) {
  std::set<std::string> ids;
  for (const auto& s : spans) ids.insert(s.span.span_id());
  EXPECT_EQ(ids.size(), spans.size()) << "span ids are unique\n" << Describe(spans);
  int roots = 0;
  for (const auto& s : spans) {
    if (s.span.parent_span_id() == client_span) {
      ++roots;
      continue;
    }
    EXPECT_TRUE(ids.count(s.span.parent_span_id()))
        << s.service << " " << s.span.name() << " hangs off no span of the trace\n"
        << Describe(spans);
  }
  EXPECT_EQ(roots, 1) << Describe(spans);
}

constexpr char kCheckInput[] = "switchboard.safety.v1.Safety/CheckInput";
constexpr char kModerateOutput[] = "switchboard.safety.v1.Safety/ModerateOutput";
constexpr char kAdmit[] = "switchboard.scheduler.v1.TenantScheduler/Admit";
constexpr char kGenerate[] = "switchboard.inference.v1.InferenceWorker/Generate";

// Every span received so far, once the trace `trace_id` has its hops in the
// gateway, safety (input and output), the scheduler and the worker (or the
// wait timed out). Each service exports on its own clock: the output check's
// span can come a batch after the others.
std::vector<ReceivedSpan> WaitForHops(const std::string& trace_id) {
  return g_otlp->WaitForSpans([&](const auto& all) {
    auto mine = OfTrace(all, trace_id);
    return Find(mine, "gateway", "POST /v1/messages") && Find(mine, "safety", kCheckInput) &&
           Find(mine, "safety", kModerateOutput) && Find(mine, "tenant-scheduler", kAdmit) &&
           Find(mine, "inference-worker", kGenerate);
  });
}

TEST(TraceTest, OneRequestIsOneConnectedTraceAcrossGatewaySafetySchedulerAndWorker) {
  for (bool stream : {false, true}) {
    SCOPED_TRACE(stream ? "streamed" : "whole");
    const trace::SpanContext client = ClientContext(true);
    auto r = PostTraced("/v1/messages", MessagesBody("trace me", stream, 12), client.Traceparent());
    ASSERT_EQ(r.status, 200) << r.body;
    const std::string trace_id = Bytes(client.trace_id.data(), 16);
    const std::string client_span = Bytes(client.span_id.data(), 8);
    // Spans reach the receiver within each service's export interval (1 s).
    auto spans = OfTrace(WaitForHops(trace_id), trace_id);
    ASSERT_NE(Find(spans, "gateway", "POST /v1/messages"), nullptr) << Describe(spans);
    ASSERT_NE(Find(spans, "safety", kCheckInput), nullptr) << Describe(spans);
    ASSERT_NE(Find(spans, "safety", kModerateOutput), nullptr) << Describe(spans);
    ASSERT_NE(Find(spans, "tenant-scheduler", kAdmit), nullptr) << Describe(spans);
    ASSERT_NE(Find(spans, "inference-worker", kGenerate), nullptr) << Describe(spans);

    const auto& root = *Find(spans, "gateway", "POST /v1/messages");
    EXPECT_EQ(root.parent_span_id(), client_span) << "the client's trace is continued";
    EXPECT_EQ(root.kind(), opentelemetry::proto::trace::v1::Span::SPAN_KIND_SERVER);
    EXPECT_EQ(StringAttribute(root, "switchboard.request_id"), r.headers["request-id"]);
    EXPECT_EQ(StringAttribute(root, "http.route"), "/v1/messages");
    // Each call made for the request hangs off the gateway's span.
    for (const char* name : {kCheckInput, kModerateOutput})
      EXPECT_EQ(Find(spans, "safety", name)->parent_span_id(), root.span_id()) << name;
    EXPECT_EQ(Find(spans, "tenant-scheduler", kAdmit)->parent_span_id(), root.span_id());
    EXPECT_EQ(Find(spans, "inference-worker", kGenerate)->parent_span_id(), root.span_id());
    for (const auto& s : spans) {
      EXPECT_GE(s.span.end_time_unix_nano(), s.span.start_time_unix_nano());
      EXPECT_NE(s.span.status().code(), opentelemetry::proto::trace::v1::Status::STATUS_CODE_ERROR)
          << s.service << " " << s.span.name();
    }
    ExpectConnected(spans, client_span);
  }
}

TEST(TraceTest, AChatTurnRunsUnderTheChatCallsSpan) {
  auto created = Post("/v1/conversations", R"({"model":"sim-small","title":"traced"})");
  ASSERT_EQ(created.status, 201) << created.body;
  const std::string cid = json::parse(created.body)["id"];
  const trace::SpanContext client = ClientContext(true);
  auto sent = PostTraced("/v1/conversations/" + cid + "/messages",
                         R"({"content":"trace my turn","max_tokens":8})", client.Traceparent());
  ASSERT_EQ(sent.status, 202) << sent.body;
  const std::string trace_id = Bytes(client.trace_id.data(), 16);
  constexpr char kSend[] = "switchboard.chat.v1.Chat/SendMessage";
  auto spans = OfTrace(g_otlp->WaitForSpans([&](const auto& all) {
    auto mine = OfTrace(all, trace_id);
    return Find(mine, "chat", kSend) && Find(mine, "inference-worker", kGenerate) &&
           Find(mine, "gateway", "POST /v1/conversations/{conversation_id}/messages") &&
           Find(mine, "safety", kCheckInput);
  }),
                       trace_id);
  const auto* send = Find(spans, "chat", kSend);
  const auto* root = Find(spans, "gateway", "POST /v1/conversations/{conversation_id}/messages");
  const auto* generate = Find(spans, "inference-worker", kGenerate);
  const auto* check = Find(spans, "safety", kCheckInput);
  ASSERT_TRUE(send && root && generate && check) << Describe(spans);
  EXPECT_EQ(send->parent_span_id(), root->span_id());
  // The turn's calls are the chat call's children: input safety while it
  // runs, generation after it answered.
  EXPECT_EQ(check->parent_span_id(), send->span_id());
  EXPECT_EQ(generate->parent_span_id(), send->span_id());
  ExpectConnected(spans, Bytes(client.span_id.data(), 8));
}

TEST(TraceTest, AnUnsampledTraceIsPropagatedButNotRecorded) {
  const trace::SpanContext unsampled = ClientContext(false);
  ASSERT_EQ(
      PostTraced("/v1/messages", MessagesBody("not me", false, 4), unsampled.Traceparent()).status,
      200);
  // A sampled request after it: once its spans are in from every service,
  // anything of the first would be too (each service exports in order).
  const trace::SpanContext sampled = ClientContext(true);
  ASSERT_EQ(PostTraced("/v1/messages", MessagesBody("me", false, 4), sampled.Traceparent()).status,
            200);
  const std::string sampled_id = Bytes(sampled.trace_id.data(), 16);
  auto all = WaitForHops(sampled_id);
  ASSERT_NE(Find(OfTrace(all, sampled_id), "inference-worker", kGenerate), nullptr);
  EXPECT_TRUE(OfTrace(all, Bytes(unsampled.trace_id.data(), 16)).empty())
      << Describe(OfTrace(all, Bytes(unsampled.trace_id.data(), 16)));
  // Nor does a request without trace context (the suite samples none).
  const size_t before = g_otlp->Spans().size();
  ASSERT_EQ(PostTraced("/v1/messages", MessagesBody("plain", false, 4), "").status, 200);
  const trace::SpanContext marker = ClientContext(true);
  ASSERT_EQ(
      PostTraced("/v1/messages", MessagesBody("marker", false, 4), marker.Traceparent()).status,
      200);
  const std::string marker_id = Bytes(marker.trace_id.data(), 16);
  all = WaitForHops(marker_id);
  std::vector<ReceivedSpan> since(all.begin() + static_cast<long>(before), all.end());
  EXPECT_EQ(since.size(), OfTrace(since, marker_id).size()) << Describe(since);
}

// A gateway that samples every trace it starts: the request id the client
// sees is the trace id, so one grep of it finds the request in every
// service's log and in the trace store.
TEST(TraceTest, ATraceTheGatewayStartsHasTheRequestIdAsItsTraceId) {
  auto gw = g_cluster->StartGateway("traced-gateway", {"--trace_sample_ratio=1"});
  ASSERT_TRUE(gw.ok()) << gw.status();
  auto r = PostTraced("/v1/messages", MessagesBody("who am i", false, 4), "", gw->http_port);
  ASSERT_EQ(r.status, 200) << r.body;
  const std::string request_id = r.headers["request-id"];
  ASSERT_EQ(request_id.size(), 4u + 32u) << request_id;
  ASSERT_EQ(request_id.substr(0, 4), "req_");
  auto parsed = trace::ParseTraceparent("00-" + request_id.substr(4) + "-0000000000000001-01");
  ASSERT_TRUE(parsed.has_value()) << request_id;
  const std::string trace_id = Bytes(parsed->trace_id.data(), 16);
  auto spans = OfTrace(g_otlp->WaitForSpans([&](const auto& all) {
    auto mine = OfTrace(all, trace_id);
    return Find(mine, "gateway", "POST /v1/messages") && Find(mine, "inference-worker", kGenerate);
  }),
                       trace_id);
  const auto* root = Find(spans, "gateway", "POST /v1/messages");
  ASSERT_NE(root, nullptr) << Describe(g_otlp->Spans());
  EXPECT_TRUE(root->parent_span_id().empty()) << "a new trace";
  ASSERT_NE(Find(spans, "inference-worker", kGenerate), nullptr) << Describe(spans);
  // The worker's usage report (and so billing's ledger) carries the same id.
  EXPECT_EQ(UsageFor("acme", request_id).records_size(), 1);
  // One grep of the trace id finds the request's lines: the scheduler's
  // lease and the worker's finish.
  const std::string hex = request_id.substr(4);
  auto log_has = [&](const std::string& service) {
    std::ifstream in(g_cluster->infra().dir() + "/" + service + ".log");
    std::stringstream text;
    text << in.rdbuf();
    return text.str().find(hex) != std::string::npos;
  };
  EXPECT_TRUE(log_has("tenant-scheduler") || log_has("tenant-scheduler-b"));
  EXPECT_TRUE(log_has("inference-worker"));
}

}  // namespace
}  // namespace sb::testing
