#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <thread>

#include "absl/flags/flag.h"
#include "absl/time/clock.h"
#include "core/metrics.h"
#include "grpcx/common_flags.h"
#include "grpcx/server.h"
#include "tenant-scheduler/scheduler_grpc.h"
#include "tenant-scheduler/worker_registry.h"

ABSL_FLAG(int, grpc_port, 50054, "gRPC port");
ABSL_FLAG(int, metrics_port, 9104, "HTTP port for /metrics");
ABSL_FLAG(int, heartbeat_interval_ms, 500, "How often workers heartbeat");
ABSL_FLAG(int, worker_ttl_ms, 2000, "A worker silent this long is declared dead");
ABSL_FLAG(int, max_queue_wait_ms, 2000,
          "Longest a request waits in a model's fair queue for a worker; a request whose "
          "estimated wait is longer is refused at once (529)");
ABSL_FLAG(int, max_batch_queue_wait_s, 600,
          "The same for batch requests (x-switchboard-priority: batch), which get only the "
          "capacity interactive requests leave");
ABSL_FLAG(double, vtc_input_weight, 1, "Fair sharing: the charge per input token");
ABSL_FLAG(double, vtc_output_weight, 2, "Fair sharing: the charge per output token");
ABSL_FLAG(int, max_queued, 10000, "Requests a model's fair queue holds; beyond them: 529");
ABSL_FLAG(int, lease_ttl_ms, 10000,
          "A lease (Admit) must reach its worker within this long, or it is freed");

int main(int argc, char** argv) {
  sb::InitService("tenant-scheduler", argc, argv);
  sb::scheduler::WorkerRegistry registry(absl::Milliseconds(absl::GetFlag(FLAGS_worker_ttl_ms)));
  const absl::Duration interval = absl::Milliseconds(absl::GetFlag(FLAGS_heartbeat_interval_ms));
  sb::scheduler::SchedulerServiceImpl service(
      registry, interval,
      {.max_wait = absl::Milliseconds(std::max(0, absl::GetFlag(FLAGS_max_queue_wait_ms))),
       .max_batch_wait = absl::Seconds(std::max(0, absl::GetFlag(FLAGS_max_batch_queue_wait_s))),
       .input_weight = absl::GetFlag(FLAGS_vtc_input_weight),
       .output_weight = absl::GetFlag(FLAGS_vtc_output_weight),
       .max_queued = static_cast<size_t>(std::max(1, absl::GetFlag(FLAGS_max_queued))),
       .lease_ttl = absl::Milliseconds(std::max(100, absl::GetFlag(FLAGS_lease_ttl_ms)))});
  sb::ServiceRunner runner("tenant-scheduler");
  runner.AddService(&service);
  if (auto st = runner.Start(sb::GrpcListenAddress(absl::GetFlag(FLAGS_grpc_port)),
                             absl::GetFlag(FLAGS_metrics_port), absl::GetFlag(FLAGS_listen_host));
      !st.ok()) {
    spdlog::critical("tenant-scheduler: {}", st.ToString());
    return 1;
  }
  spdlog::info("tenant-scheduler replica {}", service.id());
  // Notices dead workers, and leases never used, even when no request asks.
  std::atomic<bool> stop{false};
  std::thread sweeper([&] {
    auto& live = sb::metrics::Default().GetGauge("sb_scheduler_live_workers", "Live workers");
    while (!stop.load()) {
      const absl::Time now = absl::Now();
      for (const auto& id : service.Sweep(now)) {
        spdlog::warn("worker {} missed its heartbeats: declared dead", id);
      }
      int n = 0;
      for (const auto& w : registry.List()) n += registry.IsLive(w, now) ? 1 : 0;
      live.Set(n);
      absl::SleepFor(interval);
    }
  });
  runner.OnDrain([&] { stop.store(true); });
  runner.WaitForShutdown(sb::DrainGrace());
  sweeper.join();
  return 0;
}
