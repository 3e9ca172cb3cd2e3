// The bootstrap every Switchboard binary shares: a gRPC server with server
// reflection and grpc.health.v1.Health, a /metrics HTTP port (with /healthz,
// alive, and /readyz, 503 once draining),
// and SIGTERM/SIGINT handling that drains in-flight calls before exit.
//
//   sb::ServiceRunner runner("safety");
//   runner.AddService(&my_service);
//   if (auto st = runner.Start(grpc_address, metrics_port); !st.ok()) fatal;
//   runner.WaitForShutdown(absl::Seconds(10));
//
// Call BlockShutdownSignals() first thing in main, before any thread starts,
// so that the signals reach WaitForShutdown and no other thread.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"

namespace grpc {
class Service;
class Server;
}  // namespace grpc

namespace sb {

class HealthService;

void BlockShutdownSignals();
// Whether SIGTERM or SIGINT is pending (they are blocked until
// WaitForShutdown takes them): a service still starting gives up then.
bool ShutdownRequested();

class ServiceRunner {
 public:
  explicit ServiceRunner(std::string name);
  ~ServiceRunner();

  // Before Start. The service must outlive the runner.
  void AddService(grpc::Service* service);
  // Called once a shutdown signal arrived, after health turned NOT_SERVING
  // and before the server stops taking calls; e.g. stop background loops.
  void OnDrain(std::function<void()> fn) { on_drain_ = std::move(fn); }

  // Listens on `grpc_address` ("127.0.0.1:0" picks a port) and serves
  // metrics on `metrics_port` (0 picks one) at 127.0.0.1 or `metrics_host`.
  absl::Status Start(const std::string& grpc_address, int metrics_port,
                     const std::string& metrics_host = "127.0.0.1");

  int grpc_port() const { return grpc_port_; }
  int metrics_port() const;
  grpc::Server* server() { return server_.get(); }

  // Blocks until SIGTERM or SIGINT, then drains: health NOT_SERVING, the
  // drain hook, and a server shutdown that lets in-flight calls (streams
  // included) finish for up to `grace` before cancelling them.
  void WaitForShutdown(absl::Duration grace);
  // The same drain without a signal (tests).
  void Shutdown(absl::Duration grace);

 private:
  std::string name_;
  std::vector<grpc::Service*> services_;
  std::unique_ptr<HealthService> health_;
  std::unique_ptr<grpc::Server> server_;
  struct Metrics;
  std::unique_ptr<Metrics> metrics_;
  std::function<void()> on_drain_;
  int grpc_port_ = 0;
  bool stopped_ = false;
};

}  // namespace sb
