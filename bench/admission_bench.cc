// Admission and idempotency figures (issue 7), in one run on a throwaway
// cluster on loopback (tests/e2e's Cluster: PostgreSQL, Redis, a 3-master
// Redis Cluster, the dev broker and the seven services):
//
//   1. the cost of one admission and one idempotency record: sequential
//      round trips to Redis (µs p50/p99), one Redis and the cluster, and
//      the in-process limiter;
//   2. the gateway's req/s, latency and CPU per request at c=50 with limits
//      and idempotency keys off, both on, and each alone, in two rounds,
//      through
//      bench/build/bench/gateway_load (its path: --load);
//   3. exactness: admitted vs the limit (20 a minute) when 50, 200 and 1,000
//      clients send at once over two gateway replicas, on one Redis and on
//      the cluster.
//
//   ninja -C build admission_bench &&
//     build/bench/admission_bench --load=bench/build/bench/gateway_load
//
// Prints Markdown for bench/RESULTS.md.
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <future>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "bench_support.h"
#include "e2e/cluster.h"
#include "gateway/admission/local_admission.h"
#include "gateway/admission/redis_admission.h"
#include "gateway/idempotency/idempotency_store.h"
#include "http/http_client.h"
#include "sbadmin/admin.h"
#include "storage/redis_cluster.h"
#include "storage/redis_pipeline.h"

ABSL_FLAG(std::string, load, "bench/build/bench/gateway_load", "The gateway_load binary");
ABSL_FLAG(int, calls, 20000, "Sequential calls per cost figure");
ABSL_FLAG(double, duration_s, 10, "Each req/s run's measured duration");

namespace {

using sb::bench::CpuUs;
using sb::bench::MetricSum;
using sb::gateway::AdmissionDecision;
using sb::gateway::AdmissionRequest;
using sb::gateway::LimitRow;
using Clock = std::chrono::steady_clock;

struct Percentiles {
  double p50 = 0, p99 = 0;
};

Percentiles Of(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  if (v.empty()) return {};
  return {v[v.size() / 2], v[std::min(v.size() - 1, v.size() * 99 / 100)]};
}

// Runs `op` (which calls its argument when done) `n` times, one after the
// other; the latency of each in µs.
std::vector<double> Sequential(int n, const std::function<void(std::function<void()>)>& op) {
  std::vector<double> us;
  us.reserve(n);
  for (int i = 0; i < n; ++i) {
    std::promise<void> p;
    auto f = p.get_future();
    const auto t0 = Clock::now();
    op([&p] { p.set_value(); });
    f.wait();
    us.push_back(std::chrono::duration<double, std::micro>(Clock::now() - t0).count());
  }
  return us;
}

std::vector<LimitRow> Rows(const std::string& org, int n) {
  std::vector<LimitRow> rows;
  for (int i = 0; i < n; ++i) {
    LimitRow r;
    r.org_id = org;
    r.key_id = i >= 1 ? "key" : "";
    r.model = i >= 2 ? "model" : "";
    r.rpm = r.input_tpm = r.output_tpm = 1'000'000'000;
    r.concurrency = 1'000'000;
    rows.push_back(r);
  }
  return rows;
}

void CostRow(const char* what, const std::vector<double>& us) {
  const Percentiles p = Of(us);
  std::printf("| %s | %.1f | %.1f |\n", what, p.p50, p.p99);
}

void Costs(sb::AsyncRedis& redis, const char* topology) {
  const int n = absl::GetFlag(FLAGS_calls);
  sb::gateway::RedisAdmission admission(redis, absl::Seconds(30));
  for (int rows : {1, 3}) {
    const auto limit_rows = Rows(std::string("cost-") + topology, rows);
    int i = 0;
    // Warm the script cache and the connection.
    Sequential(100, [&](auto done) {
      admission.Admit({"o", "key", "model", "w" + std::to_string(i++), 10, 10}, limit_rows,
                      absl::Now(), [done](auto) { done(); });
    });
    const auto us = Sequential(n, [&](auto done) {
      admission.Admit({"o", "key", "model", "r" + std::to_string(i++), 10, 10}, limit_rows,
                      absl::Now(), [done](auto) { done(); });
    });
    char what[128];
    std::snprintf(what, sizeof what, "admit, %d row%s (%s), 4 dimensions", rows,
                  rows > 1 ? "s" : "", topology);
    CostRow(what, us);
    const auto complete = Sequential(n / 4, [&](auto done) {
      admission.Complete({"o", "key", "model", "r" + std::to_string(i++), 10, 10}, limit_rows,
                         absl::Now(), 10, 5, [done](auto) { done(); });
    });
    std::snprintf(what, sizeof what, "complete (refund, lease), %d row%s (%s)", rows,
                  rows > 1 ? "s" : "", topology);
    CostRow(what, complete);
  }
  sb::gateway::IdempotencyStore store(redis, absl::Seconds(30), absl::Hours(1));
  int k = 0;
  const auto claim = Sequential(n / 2, [&](auto done) {
    const auto key = sb::gateway::IdempotencyRecordKey::For(
        std::string("cost-") + topology, "/v1/messages", "", "k" + std::to_string(k++));
    store.Claim(key, "fp", "owner", absl::Now(), [&store, key, done](auto) {
      store.FinishWhole(key, "owner", absl::Now(), 200, "application/json", std::string(400, 'x'),
                        [done](auto) { done(); });
    });
  });
  char what[128];
  std::snprintf(what, sizeof what, "idempotency: claim + record a 400-byte reply (%s)", topology);
  CostRow(what, claim);
}

void LocalCost() {
  sb::gateway::LocalAdmission local(1, absl::Seconds(30));
  const auto rows = Rows("local", 3);
  int i = 0;
  std::vector<double> us;
  for (int n = 0; n < 100000; ++n) {
    const auto t0 = Clock::now();
    AdmissionRequest req{"o", "key", "model", "r" + std::to_string(i++), 10, 10};
    local.Admit(req, rows, absl::Now(), [](auto) {});
    local.Complete(req, rows, absl::Now(), 10, 5);
    us.push_back(std::chrono::duration<double, std::micro>(Clock::now() - t0).count());
  }
  CostRow("in-process fallback: admit + complete, 3 rows", us);
}

std::string NewOrg(sb::testing::Cluster& c, const std::string& org,
                   std::optional<sb::admin::Limits> limits) {
  sb::admin::Admin admin(c.infra().pg_uri());
  (void)admin.CreateOrg(org, org);
  if (limits) (void)admin.SetLimits(org, *limits);
  return admin.CreateKey(org, "").value();
}

nlohmann::json Load(int port, const std::string& key, bool keyed) {
  std::vector<std::string> extra;
  if (keyed) extra.push_back("--idempotency_keys");
  return sb::bench::Load(absl::GetFlag(FLAGS_load), port, key, "sim-fast", 50,
                         absl::GetFlag(FLAGS_duration_s), extra);
}

void Throughput(sb::testing::Cluster& c) {
  const std::string off = NewOrg(c, "bench-off", std::nullopt);
  // Limits that never refuse: the cost of checking them, not of refusals.
  const std::string on = NewOrg(c, "bench-on",
                                sb::admin::Limits{.rpm = 1'000'000'000,
                                                  .input_tpm = 1'000'000'000,
                                                  .output_tpm = 1'000'000'000,
                                                  .concurrency = 100'000});
  // A gateway started after the limits exist reads them at once.
  auto g = c.StartGateway("gateway-bench").value();
  std::printf(
      "\n| run (c=50, 1-token replies) | req/s | p50 ms | p99 ms | errors | gateway CPU µs/req | "
      "Redis CPU µs/req |\n");
  std::printf("|---|---|---|---|---|---|---|\n");
  struct Config {
    const char* name;
    const std::string& key;
    bool keyed;
  };
  const Config configs[] = {{"no limits, no key", off, false},
                            {"limits + Idempotency-Key", on, true},
                            {"limits only", on, false},
                            {"Idempotency-Key only", off, true}};
  for (int round = 0; round < 2; ++round) {
    for (const Config& config : configs) {
      const double gateway0 = CpuUs(g.process.pid()), redis0 = CpuUs(c.infra().redis_pid());
      const double answered0 = MetricSum(g.metrics_port, "sb_gateway_responses_total");
      const auto r = Load(g.http_port, config.key, config.keyed);
      // CPU over every request the gateway answered (the warm-up's too).
      const double all = MetricSum(g.metrics_port, "sb_gateway_responses_total") - answered0;
      std::printf("| %s (round %d) | %.0f | %.2f | %.2f | %lld | %.0f | %.0f |\n", config.name,
                  round + 1, r.value("rps", 0.0), r.value("p50_ms", 0.0), r.value("p99_ms", 0.0),
                  static_cast<long long>(r.value("errors", 0)),
                  (CpuUs(g.process.pid()) - gateway0) / all,
                  (CpuUs(c.infra().redis_pid()) - redis0) / all);
      std::fflush(stdout);
    }
  }
  g.process.Stop(2000);
}

int Burst(int port_a, int port_b, const std::string& key, int clients) {
  std::atomic<int> admitted{0};
  std::atomic<bool> go{false};
  std::vector<std::thread> threads;
  const std::string body =
      R"({"model":"sim-fast","max_tokens":1,"messages":[{"role":"user","content":"hi"}]})";
  for (int i = 0; i < clients; ++i) {
    threads.emplace_back([&, i] {
      while (!go) std::this_thread::yield();
      auto r =
          sb::http::Fetch({.port = i % 2 ? port_a : port_b,
                           .method = "POST",
                           .target = "/v1/messages",
                           .headers = {{"x-api-key", key}, {"content-type", "application/json"}},
                           .body = body});
      if (r.ok() && r->status == 200) ++admitted;
    });
  }
  go = true;
  for (auto& t : threads) t.join();
  return admitted;
}

void Exactness(sb::testing::Cluster& c) {
  std::printf(
      "\n| Redis | clients at once (two gateways) | limit | admitted |\n|---|---|---|---|\n");
  const auto& nodes = c.infra().redis_cluster_ports();
  for (bool cluster : {false, true}) {
    std::vector<std::string> flags;
    if (cluster) flags = {"--redis_cluster", "--redis_port=" + std::to_string(nodes[0])};
    const std::string tag = cluster ? "cluster" : "single";
    // Orgs first: the gateways read the limits as they start.
    std::map<int, std::string> keys;
    for (int clients : {50, 200, 1000}) {
      keys[clients] =
          NewOrg(c, "exact-" + tag + "-" + std::to_string(clients), sb::admin::Limits{.rpm = 20});
    }
    auto a = c.StartGateway("gateway-exact-a-" + tag, flags).value();
    auto b = c.StartGateway("gateway-exact-b-" + tag, flags).value();
    for (int clients : {50, 200, 1000}) {
      const int admitted = Burst(a.http_port, b.http_port, keys[clients], clients);
      std::printf("| %s | %d | 20 | %d |\n", cluster ? "3-master cluster" : "one node", clients,
                  admitted);
      std::fflush(stdout);
    }
    a.process.Stop(2000);
    b.process.Stop(2000);
  }
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  auto cluster = sb::testing::Cluster::Start();
  if (!cluster.ok()) {
    std::fprintf(stderr, "%s\n", cluster.status().ToString().c_str());
    return 1;
  }
  auto& c = **cluster;
  auto fast =
      c.StartWorker("bench-fast", "sim-fast", {"--tokens_per_second=100000", "--max_num_seqs=256"});
  if (!fast.ok()) {
    std::fprintf(stderr, "%s\n", fast.status().ToString().c_str());
    return 1;
  }

  std::printf("| cost (sequential round trips, Redis on loopback) | p50 µs | p99 µs |\n");
  std::printf("|---|---|---|\n");
  {
    sb::RedisPipeline single({.port = c.infra().redis_port()});
    Costs(single, "one Redis");
  }
  {
    sb::RedisCluster cluster_redis({.port = c.infra().redis_cluster_ports()[0]});
    Costs(cluster_redis, "cluster");
  }
  LocalCost();
  std::fflush(stdout);
  Throughput(c);
  Exactness(c);
  return 0;
}
