#include "grpcx/server.h"

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/grpcpp.h>
#include <signal.h>
#include <spdlog/spdlog.h>

#include "core/metrics.h"
#include "grpcx/common_flags.h"
#include "grpcx/health.h"
#include "grpcx/tls.h"
#include "http/http_server.h"
#include "trace/grpc_trace.h"

namespace sb {

bool ShutdownRequested() {
  sigset_t pending;
  if (sigpending(&pending) != 0) return false;
  return sigismember(&pending, SIGTERM) == 1 || sigismember(&pending, SIGINT) == 1;
}

void BlockShutdownSignals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
}

struct ServiceRunner::Metrics {
  std::unique_ptr<http::Server> server;
};

ServiceRunner::ServiceRunner(std::string name)
    : name_(std::move(name)), health_(std::make_unique<HealthService>()) {}

ServiceRunner::~ServiceRunner() { Shutdown(absl::ZeroDuration()); }

void ServiceRunner::AddService(grpc::Service* service) { services_.push_back(service); }

int ServiceRunner::metrics_port() const { return metrics_ ? metrics_->server->port() : 0; }

absl::Status ServiceRunner::Start(const std::string& grpc_address, int metrics_port,
                                  const std::string& metrics_host) {
  auto tls = grpcx::TlsFilesFromFlags();
  if (!tls.ok()) return tls.status();
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  builder.AddListeningPort(grpc_address, grpcx::ServerCredentials(*tls), &grpc_port_);
  if (const absl::Duration age = MaxConnectionAge(); age > absl::ZeroDuration()) {
    // GOAWAY after `age` (streams in flight go on): clients connect again and
    // re-resolve, so replicas added since get their share.
    builder.AddChannelArgument(GRPC_ARG_MAX_CONNECTION_AGE_MS,
                               static_cast<int>(absl::ToInt64Milliseconds(age)));
  }
  builder.RegisterService(health_.get());
  for (auto* s : services_) builder.RegisterService(s);
  // A SERVER span for every call that carries trace context, when spans
  // are exported (the interceptor costs every call something; without it
  // handlers still pass the caller's context on).
  if (trace::Exporting()) {
    std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>>
        interceptors;
    interceptors.push_back(trace::NewServerInterceptorFactory());
    builder.experimental().SetInterceptorCreators(std::move(interceptors));
  }
  server_ = builder.BuildAndStart();
  if (!server_ || grpc_port_ == 0) {
    return absl::UnavailableError("cannot serve gRPC on " + grpc_address);
  }
  using grpc::health::v1::HealthCheckResponse;
  health_->SetStatus("", HealthCheckResponse::SERVING);

  metrics_ = std::make_unique<Metrics>();
  metrics_->server = std::make_unique<http::Server>(
      http::ServerOptions{.host = metrics_host, .port = metrics_port, .threads = 1},
      [health = health_.get()](std::shared_ptr<http::Exchange> ex) {
        const auto& path = ex->request().path;
        if (path == "/readyz") {
          // Readiness follows grpc.health: NOT_SERVING from the start of a
          // drain, so a probe that cannot speak mutual TLS still sees it.
          const bool ready = health->Serving("");
          ex->Respond(ready ? 200 : 503, {{"content-type", "text/plain"}},
                      ready ? "ready\n" : "draining\n");
        } else if (path == "/metrics") {
          ex->Respond(200, {{"content-type", "text/plain; version=0.0.4; charset=utf-8"}},
                      metrics::Default().Render());
        } else if (path == "/healthz") {
          ex->Respond(200, {{"content-type", "text/plain"}}, "ok\n");
        } else {
          ex->Respond(404, {{"content-type", "application/json"}},
                      http::ErrorJson("not_found_error", "no route " + path));
        }
      });
  if (auto st = metrics_->server->Start(); !st.ok()) return st;
  metrics::Default()
      .GetGauge("sb_build_info", "Always 1; labels name the service", {{"service", name_}})
      .Set(1);
  spdlog::info("{} serving gRPC ({}) on port {} and metrics on port {}", name_,
               tls->ca.empty() ? "plaintext: --insecure_internal" : "mutual TLS", grpc_port_,
               metrics_->server->port());
  return absl::OkStatus();
}

void ServiceRunner::WaitForShutdown(absl::Duration grace) {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  int sig = 0;
  sigwait(&set, &sig);
  spdlog::info("{} received signal {}: draining for up to {}", name_, sig,
               absl::FormatDuration(grace));
  Shutdown(grace);
  trace::StopTracing();  // the spans of the calls just drained
  spdlog::info("{} stopped", name_);
}

void ServiceRunner::Shutdown(absl::Duration grace) {
  if (stopped_) return;
  stopped_ = true;
  using grpc::health::v1::HealthCheckResponse;
  health_->SetStatus("", HealthCheckResponse::NOT_SERVING);
  if (on_drain_) on_drain_();
  health_->Shutdown();
  if (server_) {
    server_->Shutdown(absl::ToChronoTime(absl::Now() + grace));
    server_->Wait();
  }
  if (metrics_) metrics_->server->Stop();
}

}  // namespace sb
