// The scheduler decides, the worker streams (issue 9): end-to-end req/s and
// latency at c=50 through the gateway, with tokens relayed through the
// tenant-scheduler (its Generate, the path before) and streamed from the
// worker under a lease (Admit, the path after), in one run on one
// throwaway cluster (tests/e2e's Cluster, mutual TLS): two gateways, one
// per path, over the same scheduler and worker, measured alternately.
//
//   ninja -C build direct_stream_bench gateway_load &&
//     build/bench/direct_stream_bench --load=build/bench/gateway_load
//
// Prints Markdown for bench/RESULTS.md.
#include <cstdio>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "bench_support.h"
#include "e2e/cluster.h"

ABSL_FLAG(std::string, load, "bench/build/bench/gateway_load", "The gateway_load binary");
ABSL_FLAG(double, duration_s, 10, "Each run's measured duration");
ABSL_FLAG(int, concurrency, 50, "Requests in flight");
ABSL_FLAG(int, rounds, 2, "Rounds of (relay, direct)");
ABSL_FLAG(std::string, reply_tokens, "1,64",
          "Reply lengths (max_tokens) to measure, comma-separated");

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  auto cluster = sb::testing::Cluster::Start({});
  if (!cluster.ok()) {
    std::fprintf(stderr, "%s\n", cluster.status().ToString().c_str());
    return 1;
  }
  auto& c = **cluster;
  auto worker =
      c.StartWorker("bench-fast", "sim-fast", {"--tokens_per_second=100000", "--max_num_seqs=256"});
  if (!worker.ok()) return 1;
  auto relay = c.StartGateway("gateway-relay", {"--direct_streaming=false"});
  auto direct = c.StartGateway("gateway-direct", {"--direct_streaming=true"});
  if (!relay.ok() || !direct.ok()) return 1;
  const std::string load = absl::GetFlag(FLAGS_load);
  const int n = absl::GetFlag(FLAGS_concurrency);
  for (auto* g : {&*relay, &*direct}) {  // warm the channels
    (void)sb::bench::Load(load, g->http_port, c.api_key(), "sim-fast", n, 2);
  }
  // Every scheduler replica (a model's requests go to its home one).
  auto schedulers_cpu = [&] {
    double sum = 0;
    for (int i = 0; i < sb::testing::Cluster::kSchedulerReplicas; ++i) {
      sum += sb::bench::CpuUs(c.process(sb::testing::Cluster::SchedulerName(i)).pid());
    }
    return sum;
  };
  std::printf(
      "\n| run (c=%d, non-streamed, one worker) | reply tokens | req/s | p50 ms | p99 ms | errors "
      "| "
      "scheduler CPU µs/req | gateway CPU µs/req | all services' CPU µs/req |\n"
      "|---|---|---|---|---|---|---|---|---|\n",
      n);
  std::vector<int> lengths;
  for (absl::string_view t : absl::StrSplit(absl::GetFlag(FLAGS_reply_tokens), ',')) {
    int v = 0;
    if (absl::SimpleAtoi(t, &v) && v > 0) lengths.push_back(v);
  }
  for (int tokens : lengths)
    for (int round = 1; round <= absl::GetFlag(FLAGS_rounds); ++round) {
      for (auto* g : {&*relay, &*direct}) {
        const bool is_direct = g == &*direct;
        const double answered0 =
            sb::bench::MetricSum(g->metrics_port, "sb_gateway_responses_total");
        const double s0 = schedulers_cpu();
        const double g0 = sb::bench::CpuUs(g->process.pid());
        auto all = [&] {
          double sum = sb::bench::CpuUs(g->process.pid()) + sb::bench::CpuUs(worker->process.pid());
          for (const auto& s : sb::testing::Cluster::ServiceNames()) {
            if (s != "gateway" && s != "tenant-scheduler")
              sum += sb::bench::CpuUs(c.process(s).pid());
          }
          return sum + schedulers_cpu();
        };
        const double a0 = all();
        auto r = sb::bench::Load(load, g->http_port, c.api_key(), "sim-fast", n,
                                 absl::GetFlag(FLAGS_duration_s),
                                 {"--rps_max_tokens=" + std::to_string(tokens)});
        const double answered =
            sb::bench::MetricSum(g->metrics_port, "sb_gateway_responses_total") - answered0;
        std::printf("| %s (round %d) | %d | %.0f | %.2f | %.2f | %lld | %.0f | %.0f | %.0f |\n",
                    is_direct ? "direct from the worker (after)" : "through the scheduler (before)",
                    round, tokens, r.value("rps", 0.0), r.value("p50_ms", 0.0),
                    r.value("p99_ms", 0.0), static_cast<long long>(r.value("errors", 0)),
                    (schedulers_cpu() - s0) / answered,
                    (sb::bench::CpuUs(g->process.pid()) - g0) / answered, (all() - a0) / answered);
        std::fflush(stdout);
      }
    }
  worker->process.Stop(2000);
  return 0;
}
