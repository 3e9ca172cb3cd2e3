#include <spdlog/spdlog.h>

#include <algorithm>

#include "absl/flags/flag.h"
#include "absl/time/clock.h"
#include "core/clock.h"
#include "core/metrics.h"
#include "core/periodic.h"
#include "core/thread_pool.h"
#include "grpcx/common_flags.h"
#include "grpcx/server.h"
#include "storage/pg.h"
#include "tenant-scheduler/admin_grpc.h"
#include "tenant-scheduler/breaker.h"
#include "tenant-scheduler/model_registry.h"
#include "tenant-scheduler/org_policy.h"
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
ABSL_FLAG(std::string, pg, "postgresql://postgres@127.0.0.1:5432/switchboard",
          "PostgreSQL connection URI: the model registry, org weights and concurrency caps");
ABSL_FLAG(int, registry_refresh_ms, 2000,
          "How often the model registry and the org policy are reloaded from PostgreSQL");
ABSL_FLAG(int, breaker_window_s, 10, "Circuit breakers: the error-rate window");
ABSL_FLAG(double, breaker_error_threshold, 0.5,
          "Circuit breakers: the share of failed requests in the window that opens one");
ABSL_FLAG(int, breaker_min_requests, 20,
          "Circuit breakers: fewer requests in the window never open one");
ABSL_FLAG(int, breaker_cool_down_s, 10, "Circuit breakers: how long one stays open");
ABSL_FLAG(int, breaker_probes, 3, "Circuit breakers: requests let through while half-open");
ABSL_FLAG(int, reserved_slots, 1,
          "Slots of each model kept for orgs under their share of its slots (at most an eighth "
          "of the model's capacity), so that a newcomer does not wait for a flood's sequences "
          "to end");
ABSL_FLAG(int, lease_ttl_ms, 10000,
          "A lease (Admit) must reach its worker within this long, or it is freed");

int main(int argc, char** argv) {
  sb::InitService("tenant-scheduler", argc, argv);
  sb::scheduler::WorkerRegistry registry(absl::Milliseconds(absl::GetFlag(FLAGS_worker_ttl_ms)));
  const absl::Duration interval = absl::Milliseconds(absl::GetFlag(FLAGS_heartbeat_interval_ms));
  // The model registry and the org policy, reloaded from PostgreSQL; while
  // it cannot be read, the last ones read stay (before any: names resolve
  // to themselves, every org has weight 1 and no cap).
  sb::PgPool pg(absl::GetFlag(FLAGS_pg), 2);
  const absl::Duration refresh =
      absl::Milliseconds(std::max(100, absl::GetFlag(FLAGS_registry_refresh_ms)));
  sb::scheduler::ModelRegistry models(pg);
  if (auto st = models.Refresh(); !st.ok()) {
    spdlog::warn("model registry not read yet ({}); names resolve to themselves meanwhile",
                 st.ToString());
  }
  models.Start(refresh);
  sb::scheduler::PgOrgPolicySource org_source(pg);
  sb::scheduler::OrgPolicy orgs(org_source, refresh);
  sb::scheduler::Breaker breakers(
      sb::RealClock(),
      {.window = absl::Seconds(std::max(1, absl::GetFlag(FLAGS_breaker_window_s))),
       .error_threshold = absl::GetFlag(FLAGS_breaker_error_threshold),
       .min_requests = std::max(1, absl::GetFlag(FLAGS_breaker_min_requests)),
       .cool_down = absl::Seconds(std::max(1, absl::GetFlag(FLAGS_breaker_cool_down_s))),
       .probes = std::max(1, absl::GetFlag(FLAGS_breaker_probes))});

  sb::scheduler::SchedulerHooks hooks;
  hooks.resolve = [&](const switchboard::inference::v1::GenerateRequest& req) {
    const auto catalog = models.Snapshot();
    // The request id picks canary or stable: the split holds over requests,
    // and a retried request id lands on the same version.
    const uint64_t pick = std::hash<std::string>{}(req.request_id());
    const auto r =
        catalog->Resolve(req.model(), pick, [&](std::string_view v) { return !breakers.Allow(v); });
    if (r.fell_back) {
      spdlog::warn("request_id={} model {}: breaker open, routed to {}", req.request_id(),
                   req.model(), r.version);
    }
    // A name the registry does not know is shown as asked.
    const bool registered = catalog->FindVersion(r.version) != nullptr;
    return sb::scheduler::ResolvedModel{r.model, registered ? r.version : "",
                                        r.safety_policy_version};
  };
  hooks.outcome = [&](const std::string& version, bool ok) {
    if (models.Snapshot()->FindVersion(version) != nullptr) breakers.Record(version, ok);
  };
  hooks.org_policy = [&](const std::string& org, const std::string& model) {
    const auto policy = orgs.Snapshot();
    return std::make_pair(policy->Weight(org), policy->ConcurrencyCap(org, model));
  };
  sb::scheduler::SchedulerServiceImpl service(
      registry, interval,
      {.max_wait = absl::Milliseconds(std::max(0, absl::GetFlag(FLAGS_max_queue_wait_ms))),
       .max_batch_wait = absl::Seconds(std::max(0, absl::GetFlag(FLAGS_max_batch_queue_wait_s))),
       .input_weight = absl::GetFlag(FLAGS_vtc_input_weight),
       .output_weight = absl::GetFlag(FLAGS_vtc_output_weight),
       .max_queued = static_cast<size_t>(std::max(1, absl::GetFlag(FLAGS_max_queued))),
       .lease_ttl = absl::Milliseconds(std::max(100, absl::GetFlag(FLAGS_lease_ttl_ms))),
       .reserved_slots = std::max(0, absl::GetFlag(FLAGS_reserved_slots))},
      hooks);
  orgs.OnChange([&](const std::shared_ptr<const sb::scheduler::OrgPolicySnapshot>&) {
    service.ApplyOrgPolicy();
  });
  orgs.Start();
  sb::ThreadPool admin_pool(2, 64);  // ModelAdmin's database calls
  sb::scheduler::ModelAdminServiceImpl model_admin(models, admin_pool, &breakers);
  sb::ServiceRunner runner("tenant-scheduler");
  runner.AddService(&service);
  runner.AddService(&model_admin);
  if (auto st = runner.Start(sb::GrpcListenAddress(absl::GetFlag(FLAGS_grpc_port)),
                             absl::GetFlag(FLAGS_metrics_port), absl::GetFlag(FLAGS_listen_host));
      !st.ok()) {
    spdlog::critical("tenant-scheduler: {}", st.ToString());
    return 1;
  }
  spdlog::info("tenant-scheduler replica {}", service.id());
  // Notices dead workers, and leases never used, even when no request asks.
  auto& live = sb::metrics::Default().GetGauge("sb_scheduler_live_workers", "Live workers");
  sb::Periodic sweeper(interval, [&] {
    const absl::Time now = absl::Now();
    for (const auto& id : service.Sweep(now)) {
      spdlog::warn("worker {} missed its heartbeats: declared dead", id);
    }
    int n = 0;
    for (const auto& w : registry.List()) n += registry.IsLive(w, now) ? 1 : 0;
    live.Set(n);
  });
  sweeper.Start(/*run_now=*/true);
  runner.OnDrain([&] {
    sweeper.Stop();
    orgs.Stop();
    models.Stop();
  });
  runner.WaitForShutdown(sb::DrainGrace());
  return 0;
}
