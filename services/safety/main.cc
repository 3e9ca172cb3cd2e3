#include <spdlog/spdlog.h>

#include <algorithm>

#include "absl/flags/flag.h"
#include "grpcx/common_flags.h"
#include "grpcx/server.h"
#include "safety/safety_grpc.h"

ABSL_FLAG(int, grpc_port, 50053, "gRPC port");
ABSL_FLAG(int, metrics_port, 9103, "HTTP port for /metrics");
ABSL_FLAG(int, hold_back_window, 256,
          "Output text held back at most (bytes) while it may still become a match");

int main(int argc, char** argv) {
  sb::InitService("safety", argc, argv);
  sb::safety::SafetyServiceImpl service(
      {.window = static_cast<size_t>(std::max(16, absl::GetFlag(FLAGS_hold_back_window)))});
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
