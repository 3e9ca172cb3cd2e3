// Tracing overhead (issue 12), in one run on throwaway clusters on loopback
// (tests/e2e's Cluster, mutual TLS as in production): the gateway's req/s
// and latency at c=50 with 8-token non-streamed replies from one fast
// worker, and the CPU the whole platform spends per request, with
//   - no exporter (--otlp_endpoint empty: trace context is still
//     propagated, nothing is recorded),
//   - an exporter to an OTLP receiver in this process, sampling 0 %, 1 %
//     and 100 % of requests (the load sends no traceparent: the gateway
//     starts every trace),
//   - with --before_services, the services of a build from before tracing,
// alternating, --rounds rounds. The receiver's span count shows what was sent.
//
//   ninja -C build trace_bench gateway_load &&
//     build/bench/trace_bench --load=build/bench/gateway_load
//       [--before_services=/path/to/old/build/services]
//
// Prints Markdown for bench/RESULTS.md.
#include <chrono>
#include <cstdio>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "bench_support.h"
#include "e2e/cluster.h"
#include "trace/otlp_receiver.h"

ABSL_FLAG(std::string, load, "build/bench/gateway_load", "The gateway_load binary");
ABSL_FLAG(double, duration_s, 10, "Each run's measured duration");
ABSL_FLAG(int, rounds, 2, "How many times each configuration runs");
ABSL_FLAG(std::string, before_services, "",
          "services/ of a build from before tracing (its binaries run the \"before\" rows)");

namespace {

using sb::testing::Cluster;

struct Config {
  std::string name;
  bool exporter;
  double ratio;
  std::string services_dir;  // empty: this build's
};

double PlatformCpuUs(Cluster& c, pid_t worker) {
  double sum = sb::bench::CpuUs(worker);
  for (const auto& s : Cluster::ServiceNames()) sum += sb::bench::CpuUs(c.process(s).pid());
  return sum;
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  std::vector<Config> configs;
  if (!absl::GetFlag(FLAGS_before_services).empty()) {
    configs.push_back({"before tracing", false, 0, absl::GetFlag(FLAGS_before_services)});
  }
  configs.push_back({"no exporter", false, 0, ""});
  configs.push_back({"sampling 0 %", true, 0, ""});
  configs.push_back({"sampling 1 %", true, 0.01, ""});
  configs.push_back({"sampling 100 %", true, 1, ""});
  std::printf(
      "\n| run (c=50, 8-token replies, one worker) | req/s | p50 ms | p99 ms | errors | "
      "spans exported per request | gateway CPU µs/req | all services' CPU µs/req |\n"
      "|---|---|---|---|---|---|---|---|\n");
  for (int round = 1; round <= absl::GetFlag(FLAGS_rounds); ++round) {
    for (const Config& config : configs) {
      sb::trace::OtlpReceiver receiver;
      Cluster::Options options;
      options.services_dir = config.services_dir;
      if (config.exporter) {
        options.service_flags = {"--otlp_endpoint=" + receiver.address(),
                                 "--trace_sample_ratio=" + std::to_string(config.ratio)};
      }
      auto c = Cluster::Start(options);
      if (!c.ok()) {
        std::fprintf(stderr, "%s\n", c.status().ToString().c_str());
        return 1;
      }
      auto worker = (*c)->StartWorker("bench-fast", "sim-fast",
                                      {"--tokens_per_second=100000", "--max_num_seqs=256"});
      if (!worker.ok()) {
        std::fprintf(stderr, "%s\n", worker.status().ToString().c_str());
        return 1;
      }
      Cluster& cluster = **c;
      const auto& gw = cluster.process("gateway");
      (void)sb::bench::Load(absl::GetFlag(FLAGS_load), cluster.http_port(), cluster.api_key(),
                            "sim-fast", 50, 2);  // warm up
      // Let the warm-up's spans be exported before counting.
      std::this_thread::sleep_for(std::chrono::milliseconds(1500));
      const size_t spans0 = receiver.Spans().size();
      const double answered0 =
          sb::bench::MetricSum(cluster.metrics_port("gateway"), "sb_gateway_responses_total");
      const double gw0 = sb::bench::CpuUs(gw.pid());
      const double all0 = PlatformCpuUs(cluster, worker->process.pid());
      auto r = sb::bench::Load(absl::GetFlag(FLAGS_load), cluster.http_port(), cluster.api_key(),
                               "sim-fast", 50, absl::GetFlag(FLAGS_duration_s));
      const double n =
          sb::bench::MetricSum(cluster.metrics_port("gateway"), "sb_gateway_responses_total") -
          answered0;
      const double gw_us = (sb::bench::CpuUs(gw.pid()) - gw0) / n;
      const double all_us = (PlatformCpuUs(cluster, worker->process.pid()) - all0) / n;
      // The last second's spans are still on their way.
      std::this_thread::sleep_for(std::chrono::milliseconds(2500));
      const double spans = static_cast<double>(receiver.Spans().size() - spans0);
      std::printf("| %s (round %d) | %.0f | %.2f | %.2f | %lld | %.2f | %.0f | %.0f |\n",
                  config.name.c_str(), round, r.value("rps", 0.0), r.value("p50_ms", 0.0),
                  r.value("p99_ms", 0.0), static_cast<long long>(r.value("errors", 0)), spans / n,
                  gw_us, all_us);
      std::fflush(stdout);
      worker->process.Stop(2000);
    }
  }
  return 0;
}
