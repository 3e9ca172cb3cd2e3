#include <spdlog/spdlog.h>

#include <algorithm>
#include <memory>

#include "absl/flags/flag.h"
#include "absl/time/time.h"
#include "core/periodic.h"
#include "core/thread_pool.h"
#include "grpcx/common_flags.h"
#include "grpcx/server.h"
#include "safety/policy_store.h"
#include "safety/safety_grpc.h"
#include "storage/pg.h"

ABSL_FLAG(int, grpc_port, 50053, "gRPC port");
ABSL_FLAG(int, metrics_port, 9103, "HTTP port for /metrics");
ABSL_FLAG(std::string, pg, "postgresql://postgres@127.0.0.1:5432/switchboard",
          "PostgreSQL URI (SWITCHBOARD_PG): the orgs' safety policies. Empty: no database, "
          "every org has the default policy");
ABSL_FLAG(absl::Duration, policy_refresh, absl::Seconds(2),
          "How often the orgs' safety policies are reloaded from PostgreSQL");
ABSL_FLAG(int, hold_back_window, 256,
          "Output text held back at most (bytes) while it may still become a match");
ABSL_FLAG(int, throttle_blocked_inputs, 5,
          "An end user with more refused inputs than this within --throttle_window is refused "
          "for --throttle_cooldown (0: off)");
ABSL_FLAG(absl::Duration, throttle_window, absl::Minutes(1),
          "The window in which an end user's refused inputs are counted");
ABSL_FLAG(absl::Duration, throttle_cooldown, absl::Minutes(5),
          "How long an end user over --throttle_blocked_inputs is refused");

int main(int argc, char** argv) {
  sb::InitService("safety", argc, argv);
  const std::string pg_uri = absl::GetFlag(FLAGS_pg);
  std::unique_ptr<sb::PgPool> pg;
  if (!pg_uri.empty()) pg = std::make_unique<sb::PgPool>(pg_uri, 2);
  sb::safety::PolicyStore policies(pg.get());
  if (pg) {
    // The policies before serving: a check must never run under the
    // default when the org has its own. Waits for the database (and its
    // migrations), like the services that need PostgreSQL to start.
    if (auto st = sb::WaitFor("the safety policies in PostgreSQL", sb::StartupWait(),
                              sb::ShutdownRequested, [&] { return policies.Refresh(); });
        !st.ok()) {
      spdlog::critical("safety: {}", st.ToString());
      return sb::ShutdownRequested() ? 0 : 1;
    }
  } else {
    spdlog::warn("safety: no --pg: every org has the default safety policy");
  }
  // While PostgreSQL is down the policies last loaded stay in force.
  sb::Periodic refresh(std::max(absl::Milliseconds(100), absl::GetFlag(FLAGS_policy_refresh)), [&] {
    if (auto st = policies.Refresh(); !st.ok()) {
      spdlog::warn("safety: refreshing the safety policies: {}", st.ToString());
    }
  });
  if (pg) refresh.Start();

  sb::safety::SafetyServiceImpl service(
      policies, static_cast<size_t>(std::max(16, absl::GetFlag(FLAGS_hold_back_window))),
      {.limit = std::max(0, absl::GetFlag(FLAGS_throttle_blocked_inputs)),
       .window = std::max(absl::Seconds(1), absl::GetFlag(FLAGS_throttle_window)),
       .cooldown = std::max(absl::Seconds(1), absl::GetFlag(FLAGS_throttle_cooldown))});
  sb::ThreadPool admin_pool(1, 64);
  sb::safety::SafetyAdminImpl admin(policies, admin_pool);
  sb::ServiceRunner runner("safety");
  runner.AddService(&service);
  runner.AddService(&admin);
  if (auto st = runner.Start(sb::GrpcListenAddress(absl::GetFlag(FLAGS_grpc_port)),
                             absl::GetFlag(FLAGS_metrics_port),
                             absl::GetFlag(FLAGS_listen_host));
      !st.ok()) {
    spdlog::critical("safety: {}", st.ToString());
    return 1;
  }
  runner.WaitForShutdown(sb::DrainGrace());
  refresh.Stop();
  return 0;
}
