#include "grpcx/common_flags.h"

#include "absl/flags/flag.h"
#include "core/config.h"
#include "core/log.h"
#include "grpcx/server.h"
#include "trace/trace.h"

ABSL_FLAG(std::string, listen_host, "127.0.0.1",
          "Address the gRPC and metrics listeners bind (0.0.0.0 in containers)");
ABSL_FLAG(std::string, log_level, "info", "trace, debug, info, warn, error");
ABSL_FLAG(int, drain_seconds, 10,
          "On SIGTERM, how long in-flight calls (streams included) may take to finish");
ABSL_FLAG(int, startup_wait_seconds, 300,
          "At start, how long a service waits for the datastores it cannot serve without "
          "(PostgreSQL) before it gives up and exits");
ABSL_FLAG(int, grpc_max_connection_age_s, 300,
          "Clients' connections to this server are closed gracefully after this long (calls in "
          "flight finish), so that clients resolve their target again and spread over replicas "
          "added since; 0: never");

ABSL_FLAG(std::string, otlp_endpoint, "",
          "host:port of an OpenTelemetry collector's OTLP/gRPC receiver (plaintext; "
          "https://host:port for TLS) to export trace spans to; empty: no spans are recorded "
          "(trace context is still propagated)");
ABSL_FLAG(double, trace_sample_ratio, 0.01,
          "Of the traces that start at this service (an API request without a sampled "
          "traceparent), the share recorded, 0 to 1; a call that arrives with trace context "
          "follows its caller's decision");

namespace sb {

void InitService(const char* name, int argc, char** argv) {
  BlockShutdownSignals();
  ParseConfig(argc, argv);
  InitLogging(name, absl::GetFlag(FLAGS_log_level));
  const double ratio = absl::GetFlag(FLAGS_trace_sample_ratio);
  if (!(ratio >= 0 && ratio <= 1)) {
    spdlog::critical("--trace_sample_ratio must be between 0 and 1, not {}", ratio);
    std::exit(2);
  }
  const std::string endpoint = absl::GetFlag(FLAGS_otlp_endpoint);
  trace::StartTracing({.service_name = name, .otlp_endpoint = endpoint, .sample_ratio = ratio});
  if (!endpoint.empty()) {
    spdlog::info("traces: exporting to {} (sampling {} of new traces)", endpoint, ratio);
  }
}

std::string GrpcListenAddress(int port) {
  return absl::GetFlag(FLAGS_listen_host) + ":" + std::to_string(port);
}

absl::Duration DrainGrace() { return absl::Seconds(absl::GetFlag(FLAGS_drain_seconds)); }

absl::Duration StartupWait() { return absl::Seconds(absl::GetFlag(FLAGS_startup_wait_seconds)); }

absl::Duration MaxConnectionAge() {
  return absl::Seconds(absl::GetFlag(FLAGS_grpc_max_connection_age_s));
}

}  // namespace sb
