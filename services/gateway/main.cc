#include <grpcpp/grpcpp.h>
#include <spdlog/spdlog.h>

#include "absl/flags/flag.h"
#include "absl/time/clock.h"
#include "core/clock.h"
#include "core/timers.h"
#include "gateway/gateway.h"
#include "gateway/gateway_grpc.h"
#include "grpcx/common_flags.h"
#include "grpcx/server.h"
#include "http/http_server.h"
#include "pipeline/grpc_backends.h"
#include "storage/api_keys.h"
#include "storage/pg.h"

ABSL_FLAG(int, http_port, 8080, "Public HTTP port (the API)");
ABSL_FLAG(std::string, http_host, "127.0.0.1", "Address the public HTTP port binds");
ABSL_FLAG(int, http_threads, 2, "HTTP event threads");
ABSL_FLAG(int, grpc_port, 50050, "gRPC port");
ABSL_FLAG(int, metrics_port, 9100, "HTTP port for /metrics");
ABSL_FLAG(std::string, pg, "postgresql://postgres@127.0.0.1:5432/switchboard",
          "PostgreSQL connection URI (API keys)");
ABSL_FLAG(std::string, safety_address, "127.0.0.1:50053", "safety gRPC address");
ABSL_FLAG(std::string, scheduler_address, "127.0.0.1:50054", "tenant-scheduler gRPC address");
ABSL_FLAG(std::string, chat_address, "127.0.0.1:50051", "chat gRPC address");
ABSL_FLAG(std::string, connection_manager_address, "127.0.0.1:50052",
          "connection-manager gRPC address");
ABSL_FLAG(int, key_cache_seconds, 60, "How long a verified API key is trusted without a look-up");
ABSL_FLAG(int, ping_interval_seconds, 10,
          "A stream with nothing written for this long gets a ping (0: never)");
ABSL_FLAG(int, safety_deadline_ms, 2000, "Deadline of each safety check");

namespace {

std::shared_ptr<grpc::Channel> Dial(const std::string& address) {
  return grpc::CreateChannel(address, grpc::InsecureChannelCredentials());
}

}  // namespace

int main(int argc, char** argv) {
  sb::InitService("gateway", argc, argv);
  sb::PgPool pg(absl::GetFlag(FLAGS_pg), 4);
  if (auto st = pg.Ping(); !st.ok()) {
    spdlog::critical("gateway: {}", st.ToString());
    return 1;
  }
  sb::PgKeyStore keys(pg);
  sb::gateway::Authenticator auth(keys, absl::Seconds(absl::GetFlag(FLAGS_key_cache_seconds)),
                                  absl::Seconds(5));
  sb::ThreadPool pool(4, 4096);
  sb::UlidGenerator ids;
  sb::TimerThread timers;
  auto safety = switchboard::safety::v1::Safety::NewStub(Dial(absl::GetFlag(FLAGS_safety_address)));
  auto scheduler = switchboard::scheduler::v1::TenantScheduler::NewStub(
      Dial(absl::GetFlag(FLAGS_scheduler_address)));
  auto chat = switchboard::chat::v1::Chat::NewStub(Dial(absl::GetFlag(FLAGS_chat_address)));
  auto connections = switchboard::connection::v1::ConnectionManager::NewStub(
      Dial(absl::GetFlag(FLAGS_connection_manager_address)));

  const std::chrono::milliseconds safety_deadline(absl::GetFlag(FLAGS_safety_deadline_ms));
  sb::pipeline::GrpcInputGuard input(*safety, safety_deadline);
  sb::pipeline::UnaryOutputGates gates(*safety, safety_deadline);
  sb::pipeline::GrpcGenerator generator(*scheduler, std::chrono::minutes(30));
  sb::pipeline::Pipeline pipeline("gateway", input, generator, gates, sb::RealClock());

  sb::gateway::Gateway api(
      {.auth = auth,
       .pool = pool,
       .pipeline = pipeline,
       .scheduler = *scheduler,
       .chat = *chat,
       .connections = *connections,
       .ids = ids,
       .clock = sb::RealClock(),
       .timers = timers,
       .options = {.ping_interval = absl::Seconds(absl::GetFlag(FLAGS_ping_interval_seconds))}});
  sb::http::Server http(
      {.host = absl::GetFlag(FLAGS_http_host),
       .port = absl::GetFlag(FLAGS_http_port),
       .threads = absl::GetFlag(FLAGS_http_threads)},
      [&api](std::shared_ptr<sb::http::Exchange> ex) { api.Handle(std::move(ex)); });
  if (auto st = http.Start(); !st.ok()) {
    spdlog::critical("gateway: {}", st.ToString());
    return 1;
  }
  sb::gateway::GatewayServiceImpl info(http.port(), [&api] { return api.active_streams(); });
  sb::ServiceRunner runner("gateway");
  runner.AddService(&info);
  if (auto st = runner.Start(sb::GrpcListenAddress(absl::GetFlag(FLAGS_grpc_port)),
                             absl::GetFlag(FLAGS_metrics_port), absl::GetFlag(FLAGS_listen_host));
      !st.ok()) {
    spdlog::critical("gateway: {}", st.ToString());
    return 1;
  }
  spdlog::info("gateway serving HTTP on {}:{}", absl::GetFlag(FLAGS_http_host), http.port());
  // On SIGTERM: let in-flight generations and streams finish (up to the
  // drain grace), then close the HTTP side.
  runner.OnDrain([&] {
    const absl::Time deadline = absl::Now() + sb::DrainGrace();
    while ((api.active_streams() > 0 || pipeline.active() > 0) && absl::Now() < deadline) {
      absl::SleepFor(absl::Milliseconds(50));
    }
  });
  runner.WaitForShutdown(sb::DrainGrace());
  // Generations still running after the grace are cancelled before the
  // objects they call go away.
  pipeline.CancelAll();
  const absl::Time deadline = absl::Now() + absl::Seconds(2);
  while (pipeline.active() > 0 && absl::Now() < deadline) absl::SleepFor(absl::Milliseconds(20));
  http.Stop();
  return 0;
}
