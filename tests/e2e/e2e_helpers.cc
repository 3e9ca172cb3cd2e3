#include "e2e/e2e_helpers.h"

#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <chrono>
#include <thread>

#include "grpcx/status.h"
#include "gtest/gtest.h"
#include "sbadmin/admin.h"
#include "switchboard/billing/v1/billing.grpc.pb.h"
#include "switchboard/safety/v1/safety.grpc.pb.h"

namespace sb::testing {

using nlohmann::json;

Cluster* g_cluster = nullptr;
trace::OtlpReceiver* g_otlp = nullptr;

void ClusterEnvironment::SetUp() {
  otlp_ = std::make_unique<trace::OtlpReceiver>();
  g_otlp = otlp_.get();
  options_.service_flags.push_back("--otlp_endpoint=" + otlp_->address());
  options_.service_flags.push_back("--trace_sample_ratio=0");
  auto c = Cluster::Start(options_);
  ASSERT_TRUE(c.ok()) << c.status();
  cluster_ = std::move(*c);
  g_cluster = cluster_.get();
}

void ClusterEnvironment::TearDown() {
  g_cluster = nullptr;
  cluster_.reset();
  g_otlp = nullptr;
  otlp_.reset();
}

std::vector<SseEvent> ParseSse(const std::string& body) {
  std::vector<SseEvent> out;
  size_t pos = 0;
  while (true) {
    const size_t end = body.find("\n\n", pos);
    if (end == std::string::npos) break;
    SseEvent e;
    std::string block = body.substr(pos, end - pos);
    pos = end + 2;
    if (block.rfind(":", 0) == 0) continue;  // a comment
    size_t lp = 0;
    while (lp <= block.size()) {
      size_t nl = block.find('\n', lp);
      if (nl == std::string::npos) nl = block.size();
      const std::string line = block.substr(lp, nl - lp);
      if (line.rfind("id: ", 0) == 0) e.id = line.substr(4);
      if (line.rfind("event: ", 0) == 0) e.event = line.substr(7);
      if (line.rfind("data: ", 0) == 0) {
        e.raw_data = line.substr(6);
        e.data = json::parse(e.raw_data, nullptr, false);
      }
      lp = nl + 1;
    }
    out.push_back(std::move(e));
  }
  return out;
}

std::string KeyOfNewOrg(const std::string& org) {
  admin::Admin admin(g_cluster->infra().pg_uri());
  EXPECT_TRUE(admin.CreateOrg(org, org).ok());
  auto key = admin.CreateKey(org, "");
  EXPECT_TRUE(key.ok()) << key.status();
  return key.ok() ? *key : "";
}

int CountEvents(std::string_view body, std::string_view name) {
  const std::string line = "event: " + std::string(name);
  int n = 0;
  for (size_t p = 0; (p = body.find(line, p)) != std::string_view::npos; p += line.size()) ++n;
  return n;
}

absl::StatusOr<int64_t> SetSafetyPolicy(const std::string& org, const std::string& document) {
  auto stub = switchboard::safety::v1::SafetyAdmin::NewStub(g_cluster->Channel("safety"));
  switchboard::safety::v1::SetPolicyRequest req;
  req.set_org_id(org);
  req.set_document(document);
  req.set_created_by("e2e");
  switchboard::safety::v1::PolicyResponse resp;
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  if (auto st = FromGrpcStatus(stub->SetPolicy(&ctx, req, &resp)); !st.ok()) return st;
  return resp.version();
}

std::vector<switchboard::safety::v1::AuditEvent> AuditOf(const std::string& org, size_t at_least) {
  auto stub = switchboard::safety::v1::SafetyAdmin::NewStub(g_cluster->Channel("safety"));
  std::vector<switchboard::safety::v1::AuditEvent> events;
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  do {
    events.clear();
    switchboard::safety::v1::ListAuditRequest req;
    req.set_org_id(org);
    req.set_limit(1000);
    switchboard::safety::v1::ListAuditResponse resp;
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
    if (stub->ListAudit(&ctx, req, &resp).ok()) {
      events.assign(resp.events().begin(), resp.events().end());
    }
    if (events.size() >= at_least) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  } while (std::chrono::steady_clock::now() < give_up);
  return events;
}

http::Response Post(const std::string& target, const std::string& body, const std::string& key,
                    int port) {
  auto r = http::Fetch({.port = port != 0 ? port : g_cluster->http_port(),
                        .method = "POST",
                        .target = target,
                        .headers = {{"x-api-key", key.empty() ? g_cluster->api_key() : key},
                                    {"anthropic-version", "2023-06-01"},
                                    {"content-type", "application/json"}},
                        .body = body});
  EXPECT_TRUE(r.ok()) << r.status();
  return r.ok() ? *r : http::Response{};
}

http::Response Get(const std::string& target, http::Headers extra, const std::string& key) {
  extra.emplace_back("x-api-key", key.empty() ? g_cluster->api_key() : key);
  auto r = http::Fetch({.port = g_cluster->http_port(), .target = target, .headers = extra});
  EXPECT_TRUE(r.ok()) << r.status();
  return r.ok() ? *r : http::Response{};
}

std::string MessagesBody(const std::string& prompt, bool stream, int max_tokens,
                         const std::string& model) {
  return json({{"model", model},
               {"max_tokens", max_tokens},
               {"stream", stream},
               {"messages", {{{"role", "user"}, {"content", prompt}}}}})
      .dump();
}

void ExpectError(const http::Response& r, int status, const std::string& type) {
  EXPECT_EQ(r.status, status) << r.body;
  json j = json::parse(r.body, nullptr, false);
  ASSERT_FALSE(j.is_discarded()) << r.body;
  EXPECT_EQ(j["type"], "error") << r.body;
  EXPECT_EQ(j["error"]["type"], type) << r.body;
  EXPECT_TRUE(j["error"]["message"].is_string());
  EXPECT_FALSE(r.headers.at("request-id").empty());
}

namespace {

// Until `min` records are there and, with `settled`, every one has had its
// final report (a stop reason; running reports run ahead of delivery).
switchboard::billing::v1::GetUsageResponse WaitForUsage(
    const switchboard::billing::v1::GetUsageRequest& req, int min, bool settled = true) {
  auto billing = switchboard::billing::v1::Billing::NewStub(g_cluster->Channel("billing"));
  switchboard::billing::v1::GetUsageResponse resp;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (std::chrono::steady_clock::now() < deadline) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(2));
    resp.Clear();
    if (billing->GetUsage(&ctx, req, &resp).ok() && resp.records_size() >= min &&
        (!settled || std::all_of(resp.records().begin(), resp.records().end(),
                                 [](const auto& r) { return !r.stop_reason().empty(); }))) {
      return resp;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  return resp;
}

}  // namespace

switchboard::billing::v1::GetUsageResponse UsageFor(const std::string& org,
                                                    const std::string& request_id, bool settled) {
  switchboard::billing::v1::GetUsageRequest req;
  req.set_org_id(org);
  req.set_request_id(request_id);
  return WaitForUsage(req, 1, settled);
}

switchboard::billing::v1::GetUsageResponse UsageOfOrg(const std::string& org, int min) {
  switchboard::billing::v1::GetUsageRequest req;
  req.set_org_id(org);
  return WaitForUsage(req, min);
}

double MetricValue(int metrics_port, const std::string& series) {
  auto r = http::Fetch({.port = metrics_port, .target = "/metrics"});
  if (!r.ok()) return 0;
  const std::string& body = r->body;
  for (size_t pos = 0; (pos = body.find(series + " ", pos)) != std::string::npos;
       pos += series.size()) {
    if (pos == 0 || body[pos - 1] == '\n') {
      return std::stod(body.substr(pos + series.size() + 1));
    }
  }
  return 0;
}

double SchedulerMetric(const std::string& series) {
  double sum = 0;
  for (int i = 0; i < Cluster::kSchedulerReplicas; ++i) {
    sum += MetricValue(g_cluster->scheduler_metrics_port(i), series);
  }
  return sum;
}

}  // namespace sb::testing
