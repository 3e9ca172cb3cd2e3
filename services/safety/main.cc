#include <spdlog/spdlog.h>

#include "absl/flags/flag.h"
#include "grpcx/common_flags.h"
#include "grpcx/server.h"
#include "safety/safety_grpc.h"

ABSL_FLAG(int, grpc_port, 50053, "gRPC port");
ABSL_FLAG(int, metrics_port, 9103, "HTTP port for /metrics");

int main(int argc, char** argv) {
  sb::InitService("safety", argc, argv);
  sb::safety::SafetyServiceImpl service;
  sb::ServiceRunner runner("safety");
  runner.AddService(&service);
  if (auto st = runner.Start(sb::GrpcListenAddress(absl::GetFlag(FLAGS_grpc_port)),
                             absl::GetFlag(FLAGS_metrics_port),
                             absl::GetFlag(FLAGS_listen_host));
      !st.ok()) {
    spdlog::critical("safety: {}", st.ToString());
    return 1;
  }
  runner.WaitForShutdown(sb::DrainGrace());
  return 0;
}
