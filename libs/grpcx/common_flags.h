// Flags every Switchboard binary shares. Each binary defines its own
// --grpc_port and --metrics_port, whose defaults differ.
#pragma once

#include <string>

#include "absl/flags/declare.h"
#include "absl/time/time.h"

ABSL_DECLARE_FLAG(std::string, listen_host);
ABSL_DECLARE_FLAG(std::string, log_level);
ABSL_DECLARE_FLAG(int, drain_seconds);
ABSL_DECLARE_FLAG(int, grpc_max_connection_age_s);
ABSL_DECLARE_FLAG(int, startup_wait_seconds);
ABSL_DECLARE_FLAG(std::string, otlp_endpoint);
ABSL_DECLARE_FLAG(double, trace_sample_ratio);

namespace sb {

// Parses the configuration (flags and environment), sets up logging and
// tracing (--otlp_endpoint) and blocks the shutdown signals; the first thing
// every main() calls.
void InitService(const char* name, int argc, char** argv);

// host:port for the gRPC listener.
std::string GrpcListenAddress(int port);
absl::Duration DrainGrace();
absl::Duration MaxConnectionAge();  // zero: never
absl::Duration StartupWait();

}  // namespace sb
