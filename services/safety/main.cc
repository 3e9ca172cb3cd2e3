#include <spdlog/spdlog.h>

#include <algorithm>
#include <memory>
#include <optional>

#include "absl/flags/flag.h"
#include "absl/time/time.h"
#include "core/periodic.h"
#include "core/thread_pool.h"
#include "grpcx/common_flags.h"
#include "grpcx/server.h"
#include "safety/audit.h"
#include "safety/policy_store.h"
#include "safety/safety_grpc.h"
#include "storage/kafka.h"
#include "storage/message_signing.h"
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
ABSL_FLAG(std::string, kafka_brokers, "127.0.0.1:19092",
          "Kafka bootstrap servers (SWITCHBOARD_KAFKA_BROKERS): the audit trail is published to "
          "safety.audit and consumed from it into PostgreSQL. Empty: no audit trail");
ABSL_FLAG(std::string, audit_key_file, "",
          "File of keys, one per line (at least 32 characters; the first is used), that audited "
          "spans are hashed with (SWITCHBOARD_AUDIT_KEY_FILE); required with --kafka_brokers");
ABSL_FLAG(absl::Duration, audit_retention, absl::Hours(24 * 90),
          "How long audit rows are kept (at least 25h; 0: forever)");
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

  // The audit trail: decisions to Kafka, and Kafka into PostgreSQL. While
  // Kafka is away events wait in the producer's queue; while PostgreSQL is
  // away they wait in Kafka.
  const std::string brokers = absl::GetFlag(FLAGS_kafka_brokers);
  std::unique_ptr<sb::KafkaProducer> producer;
  std::unique_ptr<sb::safety::AuditWriter> writer;
  std::optional<sb::MessageSigner> audit_key;
  if (!brokers.empty()) {
    const std::string key_file = absl::GetFlag(FLAGS_audit_key_file);
    if (key_file.empty()) {
      spdlog::critical(
          "safety: --audit_key_file (or SWITCHBOARD_AUDIT_KEY_FILE) is required with "
          "--kafka_brokers: the key audited spans are hashed with");
      return 1;
    }
    auto key = sb::MessageSigner::FromKeyFile(key_file);
    if (!key.ok()) {
      spdlog::critical("safety: --audit_key_file: {}", std::string(key.status().message()));
      return 1;
    }
    audit_key = std::move(*key);
    auto created = sb::KafkaProducer::Create(brokers);
    if (!created.ok()) {
      spdlog::critical("safety: {}", created.status().ToString());
      return 1;
    }
    producer = std::move(*created);
    if (pg) {
      // A small prefetch: safety is sized for checking, not for buffering.
      auto consumer = sb::KafkaConsumer::Create(brokers, "safety-audit", {sb::safety::kAuditTopic},
                                                {{"queued.max.messages.kbytes", "8192"}});
      if (!consumer.ok()) {
        spdlog::critical("safety: {}", consumer.status().ToString());
        return 1;
      }
      absl::Duration retention = absl::GetFlag(FLAGS_audit_retention);
      if (retention > absl::ZeroDuration()) retention = std::max(retention, absl::Hours(25));
      writer = std::make_unique<sb::safety::AuditWriter>(
          *pg, std::move(*consumer), sb::safety::AuditWriterOptions{.retention = retention});
    } else {
      spdlog::warn("safety: no --pg: audit events go to Kafka, but no replica stores them");
    }
  } else {
    spdlog::warn("safety: no --kafka_brokers: no audit trail (decisions are only logged)");
  }
  sb::safety::AuditLog audit(producer.get(), std::move(audit_key));

  sb::safety::SafetyServiceImpl service(
      policies, static_cast<size_t>(std::max(16, absl::GetFlag(FLAGS_hold_back_window))),
      {.limit = std::max(0, absl::GetFlag(FLAGS_throttle_blocked_inputs)),
       .window = std::max(absl::Seconds(1), absl::GetFlag(FLAGS_throttle_window)),
       .cooldown = std::max(absl::Seconds(1), absl::GetFlag(FLAGS_throttle_cooldown))},
      &audit);
  sb::ThreadPool admin_pool(1, 64);
  sb::safety::SafetyAdminImpl admin(policies, admin_pool, pg.get());
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
  if (writer) writer->Start();
  runner.WaitForShutdown(sb::DrainGrace());
  refresh.Stop();
  if (writer) writer->Stop();
  return 0;
}
