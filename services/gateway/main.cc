#include <grpcpp/grpcpp.h>
#include <spdlog/spdlog.h>

#include <thread>

#include "absl/flags/flag.h"
#include "absl/time/clock.h"
#include "core/clock.h"
#include "core/periodic.h"
#include "core/timers.h"
#include "gateway/admission/redis_admission.h"
#include "gateway/gateway.h"
#include "gateway/gateway_grpc.h"
#include "grpcx/common_flags.h"
#include "grpcx/server.h"
#include "grpcx/tls.h"
#include "http/http_server.h"
#include "pipeline/grpc_backends.h"
#include "storage/api_keys.h"
#include "storage/kafka.h"
#include "storage/pg.h"
#include "storage/redis_cluster.h"
#include "storage/redis_pipeline.h"

ABSL_FLAG(int, http_port, 8080, "Public HTTP port (the API)");
ABSL_FLAG(std::string, http_host, "127.0.0.1", "Address the public HTTP port binds");
ABSL_FLAG(int, http_threads, 2, "HTTP event threads");
ABSL_FLAG(int, drain_delay_seconds, 2,
          "On SIGTERM, how long the HTTP port keeps taking new requests after readiness turns "
          "off (/readyz 503), so that load balancers stop sending before it closes");
ABSL_FLAG(int, http_max_body_bytes, 4 << 20, "Largest request body accepted (413 above)");
ABSL_FLAG(int, http_header_timeout_seconds, 10,
          "A request's headers must be complete this long after the connection opens (or "
          "after the request's first byte on a kept-alive connection); else it is closed");
ABSL_FLAG(int, http_keepalive_timeout_seconds, 60, "An idle kept-alive connection is closed after");
ABSL_FLAG(int, http_body_timeout_seconds, 10,
          "A request body may take this long plus one second per --http_min_body_rate bytes "
          "received; a slower body gets 408 and a close");
ABSL_FLAG(int, http_min_body_rate, 8192, "Slowest request body accepted, in bytes per second");
ABSL_FLAG(int, http_max_connections, 4096,
          "Open client connections (0: no cap); a connection over it gets 503 and a close");
ABSL_FLAG(int, http_max_connections_per_ip, 256,
          "Open connections per client address (0: no cap); over it: 503 and a close");
ABSL_FLAG(int, http_max_requests_in_flight, 2048,
          "Requests in progress, streams included (0: no cap); a request over it gets 503");
ABSL_FLAG(int64_t, http_max_buffered_bytes, 64 << 20,
          "Request body bytes buffered at once over all requests (0: no cap); a body that "
          "would exceed it gets 503");
ABSL_FLAG(int, grpc_port, 50050, "gRPC port");
ABSL_FLAG(int, metrics_port, 9100, "HTTP port for /metrics");
ABSL_FLAG(std::string, pg, "postgresql://postgres@127.0.0.1:5432/switchboard",
          "PostgreSQL connection URI (API keys)");
ABSL_FLAG(std::string, safety_address, "127.0.0.1:50053", "safety gRPC address");
ABSL_FLAG(std::string, scheduler_address, "127.0.0.1:50054",
          "tenant-scheduler gRPC address; comma-separated for several replicas");
ABSL_FLAG(bool, direct_streaming, true,
          "Stream tokens from the worker under a scheduler lease (Admit); false: through the "
          "scheduler (its Generate relay, the older path)");
ABSL_FLAG(std::string, kafka_brokers, "127.0.0.1:19092",
          "Kafka bootstrap servers (SWITCHBOARD_KAFKA_BROKERS): requests refused or stopped "
          "because safety was unavailable go to the safety audit trail (safety.audit). Empty: "
          "they are only logged");
ABSL_FLAG(std::string, chat_address, "127.0.0.1:50051", "chat gRPC address");
ABSL_FLAG(std::string, connection_manager_address, "127.0.0.1:50052",
          "connection-manager gRPC address");
ABSL_FLAG(int, key_cache_seconds, 60,
          "How long a verified API key is trusted without a look-up (revocations still apply "
          "at once)");
ABSL_FLAG(int, key_cache_stale_seconds, 300,
          "While PostgreSQL is unreachable, a key verified within this long is still trusted");
ABSL_FLAG(int, unknown_key_cache_seconds, 30,
          "How long an unknown key is refused without a look-up");
ABSL_FLAG(double, auth_lookups_per_second_per_ip, 5,
          "Look-ups of uncached API keys per client address and second (0: no limit); past the "
          "budget a request gets 429");
ABSL_FLAG(double, auth_lookup_burst_per_ip, 20, "Burst of the look-ups per client address");
ABSL_FLAG(int, ping_interval_seconds, 10,
          "A stream with nothing written for this long gets a ping (0: never)");
ABSL_FLAG(int, safety_deadline_ms, 2000, "Deadline of each safety check");
ABSL_FLAG(int, safety_batch_ms, 0,
          "Output waits up to this long (at most 20 ms) for more text before it goes to output "
          "safety, unless --safety_batch_bytes gathered first; 0: a piece goes as soon as the one "
          "before it is checked");
ABSL_FLAG(int, safety_batch_bytes, 256, "Output that goes to output safety without waiting more");
ABSL_FLAG(std::string, redis_host, "127.0.0.1", "Redis host (rate limits)");
ABSL_FLAG(int, redis_port, 6379, "Redis port (rate limits)");
ABSL_FLAG(std::string, redis_password, "",
          "Redis AUTH password (requirepass); better from SWITCHBOARD_REDIS_PASSWORD");
ABSL_FLAG(bool, redis_cluster, false,
          "--redis_host:--redis_port is a node of a Redis Cluster (the others are discovered)");
ABSL_FLAG(int, ratelimit_redis_timeout_ms, 250,
          "How long an admission waits for Redis before the fallback decides");
ABSL_FLAG(std::string, ratelimit_fallback, "local",
          "When Redis cannot be reached: local (an in-process limiter at limit / "
          "--gateway_replicas), open (admit), closed (refuse with 529)");
ABSL_FLAG(int, gateway_replicas, 1, "Gateway replicas sharing the limits (for the local fallback)");
ABSL_FLAG(int, lease_ttl_seconds, 30,
          "A concurrency slot of a gateway that died comes back after this long");
ABSL_FLAG(int, limits_refresh_ms, 2000, "How often the limits are re-read from PostgreSQL");
ABSL_FLAG(int, budgets_refresh_ms, 1000,
          "How often budgets and the month's spend are re-read from PostgreSQL");
ABSL_FLAG(int, idempotency_retention_hours, 24,
          "How long a response is kept for retries with the same Idempotency-Key");

int main(int argc, char** argv) {
  sb::InitService("gateway", argc, argv);
  sb::PgPool pg(absl::GetFlag(FLAGS_pg), 4);
  // Started before its database (a restart of both, a slow volume): wait
  // rather than exit and crash-loop; SIGTERM ends the wait.
  if (auto st = pg.WaitReady(sb::StartupWait(), sb::ShutdownRequested); !st.ok()) {
    spdlog::critical("gateway: {}", st.ToString());
    return sb::ShutdownRequested() ? 0 : 1;
  }
  sb::PgKeyStore keys(pg);
  sb::gateway::Authenticator auth(
      keys, {.ttl = absl::Seconds(absl::GetFlag(FLAGS_key_cache_seconds)),
             .negative_ttl = absl::Seconds(absl::GetFlag(FLAGS_unknown_key_cache_seconds)),
             .stale = absl::Seconds(absl::GetFlag(FLAGS_key_cache_stale_seconds)),
             .lookups_per_second_per_ip = absl::GetFlag(FLAGS_auth_lookups_per_second_per_ip),
             .lookup_burst_per_ip = absl::GetFlag(FLAGS_auth_lookup_burst_per_ip)});
  sb::KeyRevocationListener revocations(absl::GetFlag(FLAGS_pg),
                                        [&auth](const std::string& id) { auth.Revoke(id); });
  revocations.Start();
  sb::ThreadPool pool(4, 4096);
  sb::UlidGenerator ids;
  sb::TimerThread timers;
  auto safety = switchboard::safety::v1::Safety::NewStub(
      sb::grpcx::Dial(absl::GetFlag(FLAGS_safety_address), sb::grpcx::kSafety));
  // Every replica of the scheduler: a model's calls go to its home replica,
  // or the next that answers (the relay, for comparison, to the first).
  sb::pipeline::SchedulerReplicas schedulers(absl::GetFlag(FLAGS_scheduler_address));
  if (schedulers.size() == 0) {
    spdlog::critical("gateway: --scheduler_address is empty");
    return 1;
  }
  auto* scheduler = &schedulers.at(0);
  sb::pipeline::WorkerStubs workers;
  // A restarted chat or connection-manager is found again within a second
  // (gRPC's own backoff grows to two minutes, its routes 529 meanwhile).
  constexpr sb::grpcx::DialOptions find_again{.max_reconnect_backoff_ms = 1000};
  auto chat = switchboard::chat::v1::Chat::NewStub(
      sb::grpcx::Dial(absl::GetFlag(FLAGS_chat_address), sb::grpcx::kChat, find_again));
  auto connections = switchboard::connection::v1::ConnectionManager::NewStub(sb::grpcx::Dial(
      absl::GetFlag(FLAGS_connection_manager_address), sb::grpcx::kConnectionManager, find_again));

  const std::chrono::milliseconds safety_deadline(absl::GetFlag(FLAGS_safety_deadline_ms));
  sb::pipeline::GrpcInputGuard input(*safety, safety_deadline);
  sb::pipeline::StreamingOutputGates gates(*safety, safety_deadline);
  sb::pipeline::LeasedGenerator leased(schedulers, workers, std::chrono::minutes(30));
  sb::pipeline::GrpcGenerator relayed(*scheduler, std::chrono::minutes(30));
  sb::pipeline::Generator& generator = absl::GetFlag(FLAGS_direct_streaming)
                                           ? static_cast<sb::pipeline::Generator&>(leased)
                                           : relayed;
  // Fail-closed stops go to the safety audit trail; while Kafka is away
  // they wait in the producer's queue.
  std::unique_ptr<sb::KafkaProducer> audit_producer;
  sb::pipeline::FailClosedRecorder fail_closed;
  if (const std::string brokers = absl::GetFlag(FLAGS_kafka_brokers); !brokers.empty()) {
    auto created = sb::KafkaProducer::Create(brokers);
    if (!created.ok()) {
      spdlog::critical("gateway: {}", created.status().ToString());
      return 1;
    }
    audit_producer = std::move(*created);
    fail_closed = sb::pipeline::AuditFailClosed(*audit_producer, "gateway");
  } else {
    spdlog::warn("gateway: no --kafka_brokers: fail-closed stops are only logged");
  }
  sb::TimerThread batch_timers;  // outlives the pipeline: its generations use it
  sb::pipeline::Pipeline pipeline("gateway", input, generator, gates, sb::RealClock(),
                                  std::move(fail_closed));
  pipeline.set_output_batching(
      {.timers = &batch_timers,
       .wait = absl::Milliseconds(std::max(0, absl::GetFlag(FLAGS_safety_batch_ms))),
       .bytes = static_cast<size_t>(std::max(1, absl::GetFlag(FLAGS_safety_batch_bytes)))});

  // Admission: limits from PostgreSQL, refreshed in the background;
  // counters in Redis, the fallback in process.
  auto fallback = sb::gateway::ParseFallbackMode(absl::GetFlag(FLAGS_ratelimit_fallback));
  if (!fallback.ok()) {
    spdlog::critical("gateway: {}", fallback.status().ToString());
    return 1;
  }
  const absl::Duration lease_ttl = absl::Seconds(absl::GetFlag(FLAGS_lease_ttl_seconds));
  sb::gateway::PgLimitsSource limits_source(pg);
  sb::gateway::LimitsCache limits(limits_source);
  // The limits in force before the first request (PostgreSQL down: none
  // until the refresher reads them).
  if (auto st = limits.Refresh(); !st.ok()) {
    spdlog::warn("gateway: limits not read yet: {}", st.ToString());
  }
  sb::gateway::PgReportSource reports(pg);
  sb::gateway::PgBudgetSource budget_source(pg);
  sb::gateway::BudgetCache budgets(budget_source);
  if (auto st = budgets.Refresh(); !st.ok()) {
    spdlog::warn("gateway: budgets not read yet: {}", st.ToString());
  }
  // Reloads in the background; on an error the last ones stay in force.
  auto reloading = [](const char* what, auto& cache) {
    return [what, &cache] {
      if (auto st = cache.Refresh(); !st.ok()) {
        spdlog::warn("gateway: {} not refreshed (the last ones stay in force): {}", what,
                     st.ToString());
      }
    };
  };
  sb::Periodic budgets_refresher(absl::Milliseconds(absl::GetFlag(FLAGS_budgets_refresh_ms)),
                                 reloading("budgets", budgets));
  sb::Periodic limits_refresher(absl::Milliseconds(absl::GetFlag(FLAGS_limits_refresh_ms)),
                                reloading("limits", limits));
  budgets_refresher.Start();
  limits_refresher.Start();
  const sb::RedisOptions redis_options{
      .host = absl::GetFlag(FLAGS_redis_host),
      .port = absl::GetFlag(FLAGS_redis_port),
      .timeout = std::chrono::milliseconds(absl::GetFlag(FLAGS_ratelimit_redis_timeout_ms)),
      .password = absl::GetFlag(FLAGS_redis_password)};
  std::unique_ptr<sb::RedisCluster> redis_cluster;
  std::unique_ptr<sb::RedisPipeline> redis_node;
  sb::AsyncRedis* redis;
  if (absl::GetFlag(FLAGS_redis_cluster)) {
    redis = (redis_cluster = std::make_unique<sb::RedisCluster>(redis_options)).get();
  } else {
    redis = (redis_node = std::make_unique<sb::RedisPipeline>(redis_options)).get();
  }
  sb::gateway::RedisAdmission redis_admission(*redis, lease_ttl);
  sb::gateway::LocalAdmission local_admission(absl::GetFlag(FLAGS_gateway_replicas), lease_ttl);
  sb::gateway::FallbackAdmission admission(redis_admission, local_admission, *fallback);
  sb::gateway::IdempotencyStore idempotency(
      *redis, lease_ttl, absl::Hours(absl::GetFlag(FLAGS_idempotency_retention_hours)));

  sb::gateway::Gateway api(
      {.auth = auth,
       .pool = pool,
       .pipeline = pipeline,
       .scheduler = [&schedulers](const std::string& model)
           -> switchboard::scheduler::v1::TenantScheduler::StubInterface& {
         return schedulers.at(schedulers.Pick(model));
       },
       .chat = *chat,
       .connections = *connections,
       .ids = ids,
       .clock = sb::RealClock(),
       .timers = timers,
       .limits = limits,
       .admission = admission,
       .idempotency = idempotency,
       .budgets = budgets,
       .reports = reports,
       .options = {.ping_interval = absl::Seconds(absl::GetFlag(FLAGS_ping_interval_seconds)),
                   .lease_ttl = lease_ttl}});
  sb::http::Server http(
      {.host = absl::GetFlag(FLAGS_http_host),
       .port = absl::GetFlag(FLAGS_http_port),
       .threads = absl::GetFlag(FLAGS_http_threads),
       .max_body_bytes = static_cast<size_t>(std::max(0, absl::GetFlag(FLAGS_http_max_body_bytes))),
       .defer_body = true,
       .header_timeout = std::chrono::seconds(absl::GetFlag(FLAGS_http_header_timeout_seconds)),
       .keepalive_timeout =
           std::chrono::seconds(absl::GetFlag(FLAGS_http_keepalive_timeout_seconds)),
       .body_timeout = std::chrono::seconds(absl::GetFlag(FLAGS_http_body_timeout_seconds)),
       .min_body_rate = static_cast<size_t>(std::max(0, absl::GetFlag(FLAGS_http_min_body_rate))),
       .max_connections =
           static_cast<size_t>(std::max(0, absl::GetFlag(FLAGS_http_max_connections))),
       .max_connections_per_ip =
           static_cast<size_t>(std::max(0, absl::GetFlag(FLAGS_http_max_connections_per_ip))),
       .max_requests_in_flight =
           static_cast<size_t>(std::max(0, absl::GetFlag(FLAGS_http_max_requests_in_flight))),
       .max_buffered_bytes =
           static_cast<size_t>(std::max<int64_t>(0, absl::GetFlag(FLAGS_http_max_buffered_bytes))),
       .metrics_listener = "api"},
      [&api](std::shared_ptr<sb::http::Exchange> ex) { api.Handle(std::move(ex)); });
  if (auto st = http.Start(); !st.ok()) {
    spdlog::critical("gateway: {}", st.ToString());
    return 1;
  }
  sb::gateway::GatewayServiceImpl info(
      http.port(), [&api] { return api.active_streams(); }, api.RouteList());
  sb::ServiceRunner runner("gateway");
  runner.AddService(&info);
  if (auto st = runner.Start(sb::GrpcListenAddress(absl::GetFlag(FLAGS_grpc_port)),
                             absl::GetFlag(FLAGS_metrics_port), absl::GetFlag(FLAGS_listen_host));
      !st.ok()) {
    spdlog::critical("gateway: {}", st.ToString());
    return 1;
  }
  spdlog::info("gateway serving HTTP on {}:{}", absl::GetFlag(FLAGS_http_host), http.port());
  // On SIGTERM: readiness is off (the runner's /readyz answers 503); keep
  // taking requests for --drain_delay_seconds, while load balancers notice,
  // and then until every request in flight has been answered — streams,
  // whole replies, requests still queued for a worker or at authentication
  // — up to the drain grace; then close the HTTP side.
  runner.OnDrain([&] {
    const absl::Time start = absl::Now();
    const absl::Time listen_until = start + absl::Seconds(absl::GetFlag(FLAGS_drain_delay_seconds));
    const absl::Time deadline = start + sb::DrainGrace();
    while (absl::Now() < deadline && (absl::Now() < listen_until || http.requests_in_flight() > 0 ||
                                      api.active_streams() > 0 || pipeline.active() > 0)) {
      absl::SleepFor(absl::Milliseconds(50));
    }
    spdlog::info("gateway drained in {} ({} requests still in flight)",
                 absl::FormatDuration(absl::Now() - start), http.requests_in_flight());
  });
  runner.WaitForShutdown(sb::DrainGrace());
  // Generations still running after the grace are cancelled before the
  // objects they call go away.
  pipeline.CancelAll();
  const absl::Time deadline = absl::Now() + absl::Seconds(2);
  while (pipeline.active() > 0 && absl::Now() < deadline) absl::SleepFor(absl::Milliseconds(20));
  http.Stop();
  // Then what calls into the gateway's objects from other threads, before
  // they go: timers (lease renewals, retries following a record), Redis
  // (its callbacks), and the pool their continuations run on.
  timers.Stop();
  if (redis_cluster) redis_cluster->Stop();
  if (redis_node) redis_node->Stop();
  pool.Stop();
  revocations.Stop();
  limits_refresher.Stop();
  budgets_refresher.Stop();
  return 0;
}
