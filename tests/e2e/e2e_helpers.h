// Helpers the end-to-end suites share: the one cluster of the run, HTTP
// calls with the cluster's key, SSE parsing, and reading metrics.
#pragma once

#include <gtest/gtest.h>

#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "e2e/cluster.h"
#include "http/http_client.h"
#include "switchboard/billing/v1/billing.pb.h"
#include "switchboard/safety/v1/safety.pb.h"
#include "trace/otlp_receiver.h"

namespace sb::testing {

// Set for the whole run by ClusterEnvironment.
extern Cluster* g_cluster;
// The OTLP receiver every service of g_cluster exports its spans to. The
// services sample no trace of their own (--trace_sample_ratio=0): only a
// request whose traceparent says sampled is recorded.
extern trace::OtlpReceiver* g_otlp;

// One cluster for a suite's whole run (g_cluster), stopped at its end.
class ClusterEnvironment : public ::testing::Environment {
 public:
  explicit ClusterEnvironment(Cluster::Options options = {}) : options_(std::move(options)) {}
  void SetUp() override;
  void TearDown() override;

 private:
  Cluster::Options options_;
  std::unique_ptr<trace::OtlpReceiver> otlp_;
  std::unique_ptr<Cluster> cluster_;
};

struct SseEvent {
  std::string id;
  std::string event;  // "" for a data-only (OpenAI) event
  nlohmann::json data;
  std::string raw_data;
};

// Parses a complete SSE body into events; comments (": ping") are skipped.
std::vector<SseEvent> ParseSse(const std::string& body);

// A new org with its own key (returned), for tests that read an org's
// whole ledger or set its limits.
std::string KeyOfNewOrg(const std::string& org);

// `port`: another gateway's HTTP port (0: the cluster's).
http::Response Post(const std::string& target, const std::string& body, const std::string& key = "",
                    int port = 0);
http::Response Get(const std::string& target, http::Headers extra = {},
                   const std::string& key = "");
std::string MessagesBody(const std::string& prompt, bool stream, int max_tokens = 200,
                         const std::string& model = "sim-small");
// How many `event: NAME` lines an SSE body holds so far (text deltas, say).
int CountEvents(std::string_view body, std::string_view name);
// Sets `org`'s safety policy (SafetyAdmin/SetPolicy as the operator): its
// new version, or the status.
absl::StatusOr<int64_t> SetSafetyPolicy(const std::string& org, const std::string& document);
// `org`'s safety audit trail (SafetyAdmin/ListAudit as the operator), once
// it holds at least `at_least` events or 20 s have passed.
std::vector<switchboard::safety::v1::AuditEvent> AuditOf(const std::string& org, size_t at_least);
// Expects an Anthropic-shaped error with `status` and `type`.
void ExpectError(const http::Response& r, int status, const std::string& type);
// The billing records of one request, waiting for them to be metered and,
// with `settled`, for the final report (running reports run ahead of
// delivery; a killed worker's request never settles).
switchboard::billing::v1::GetUsageResponse UsageFor(const std::string& org,
                                                    const std::string& request_id,
                                                    bool settled = true);
// All billing records of an org, waiting until there are at least `min`,
// all settled.
switchboard::billing::v1::GetUsageResponse UsageOfOrg(const std::string& org, int min);
// The value of one series on a service's /metrics ("" labels: unlabelled),
// 0 when absent.
double MetricValue(int metrics_port, const std::string& series);
// The sum of one series over the scheduler replicas.
double SchedulerMetric(const std::string& series);

}  // namespace sb::testing
