#include <spdlog/spdlog.h>

#include "absl/flags/flag.h"
#include "billing/billing_grpc.h"
#include "billing/ledger.h"
#include "billing/metering_consumer.h"
#include "core/thread_pool.h"
#include "grpcx/common_flags.h"
#include "grpcx/server.h"
#include "storage/kafka.h"
#include "storage/message_signing.h"
#include "storage/pg.h"

ABSL_FLAG(int, grpc_port, 50056, "gRPC port");
ABSL_FLAG(int, metrics_port, 9106, "HTTP port for /metrics");
ABSL_FLAG(std::string, pg, "postgresql://postgres@127.0.0.1:5432/switchboard",
          "PostgreSQL connection URI");
ABSL_FLAG(int, pg_pool_size, 4, "PostgreSQL connections");
ABSL_FLAG(std::string, kafka_brokers, "127.0.0.1:19092", "Kafka bootstrap servers");
ABSL_FLAG(std::string, usage_topic, "usage.events", "Topic of metering events");
ABSL_FLAG(std::string, consumer_group, "billing", "Kafka consumer group");
ABSL_FLAG(int64_t, max_input_tokens_per_event, 2'000'000,
          "Usage events claiming more input tokens are refused (reason=too_many_tokens)");
ABSL_FLAG(int64_t, max_output_tokens_per_event, 1'000'000,
          "Usage events claiming more output tokens are refused (reason=too_many_tokens)");
ABSL_FLAG(int, ledger_max_batch, 500,
          "Usage events written to the ledger in one transaction, at most (what has arrived is "
          "written together)");
ABSL_FLAG(int, kafka_session_timeout_ms, 10000,
          "How long the consumer group waits for a billing replica that stopped heartbeating "
          "(killed) before its partitions go to another");
ABSL_FLAG(std::string, alerts_topic, "billing.alerts",
          "Topic of budget alerts (80% and 100% of a monthly budget)");

int main(int argc, char** argv) {
  sb::InitService("billing", argc, argv);
  auto signer = sb::UsageSignerFromFlags();
  if (!signer.ok()) {
    spdlog::critical("billing: {}", std::string(signer.status().message()));
    return 1;
  }
  sb::billing::MeteringOptions metering{
      .brokers = absl::GetFlag(FLAGS_kafka_brokers),
      .group = absl::GetFlag(FLAGS_consumer_group),
      .topic = absl::GetFlag(FLAGS_usage_topic),
      .limits = {.max_input_tokens = absl::GetFlag(FLAGS_max_input_tokens_per_event),
                 .max_output_tokens = absl::GetFlag(FLAGS_max_output_tokens_per_event)},
      .session_timeout = std::chrono::milliseconds(absl::GetFlag(FLAGS_kafka_session_timeout_ms)),
      .max_batch = absl::GetFlag(FLAGS_ledger_max_batch)};
  // Checked before anything listens: a typo must not leave billing serving
  // without metering.
  if (auto st = sb::KafkaSecurityConfig(sb::KafkaSecurityFromFlags()).status(); !st.ok()) {
    spdlog::critical("billing: {}", st.ToString());
    return 1;
  }
  if (metering.limits.max_input_tokens <= 0 || metering.limits.max_output_tokens <= 0) {
    spdlog::critical(
        "billing: --max_input_tokens_per_event and --max_output_tokens_per_event "
        "must be positive");
    return 1;
  }
  sb::PgPool pg(absl::GetFlag(FLAGS_pg), absl::GetFlag(FLAGS_pg_pool_size));
  // Started before its database (a restart of both, a slow volume): wait
  // rather than exit and crash-loop; SIGTERM ends the wait.
  if (auto st = pg.WaitReady(sb::StartupWait(), sb::ShutdownRequested); !st.ok()) {
    spdlog::critical("billing: {}", st.ToString());
    return sb::ShutdownRequested() ? 0 : 1;
  }
  sb::billing::Ledger ledger(pg);
  // Budget alerts wait in budget_alerts until this producer has them.
  auto alerts = sb::KafkaProducer::Create(absl::GetFlag(FLAGS_kafka_brokers));
  if (!alerts.ok()) {
    spdlog::critical("billing: {}", alerts.status().ToString());
    return 1;
  }
  metering.alerts = alerts->get();
  metering.alerts_topic = absl::GetFlag(FLAGS_alerts_topic);
  sb::ThreadPool pool(absl::GetFlag(FLAGS_pg_pool_size), 1024);
  sb::billing::BillingServiceImpl service(ledger, pool);
  sb::billing::MeteringConsumer consumer(ledger, *signer, std::move(metering));
  sb::ServiceRunner runner("billing");
  runner.AddService(&service);
  if (auto st = runner.Start(sb::GrpcListenAddress(absl::GetFlag(FLAGS_grpc_port)),
                             absl::GetFlag(FLAGS_metrics_port), absl::GetFlag(FLAGS_listen_host));
      !st.ok()) {
    spdlog::critical("billing: {}", st.ToString());
    return 1;
  }
  if (auto st = consumer.Start(); !st.ok()) {
    spdlog::critical("billing: {}", st.ToString());
    return 1;
  }
  runner.OnDrain([&] { consumer.Stop(); });
  runner.WaitForShutdown(sb::DrainGrace());
  return 0;
}
