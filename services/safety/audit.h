// The safety audit trail (README "Safety audit"): every decision other than
// a plain allow — flag, redact, block, throttle, and the callers' fail-closed
// stops — as an AuditEvent on Kafka `safety.audit`, which safety's replicas
// consume (group `safety-audit`) into the append-only table safety_audit,
// once per event id. An event holds where the span was and a keyed hash of
// it (HMAC-SHA256 under --audit_key_file, bound to the org), never the text.
//
//   AuditLog audit(&producer, std::move(key));
//   audit.Record(scope, finding.category, Action::kBlock, finding.start, finding.end, span);
//   ...
//   AuditWriter writer(pg, std::move(consumer), {.retention = absl::Hours(2160)});
//   writer.Start();
//
// Publishing never blocks a check: the producer queues while Kafka is away
// (storage/kafka.h). An event is lost when that queue is full (counted in
// sb_safety_audit_events_total{outcome="unqueued"} and logged), or when the
// process dies with it still queued (a crash, or Kafka still away 10 s into
// a shutdown): the queue is in memory.
#pragma once

#include <atomic>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "core/ulid.h"
#include "safety/org_policy.h"
#include "storage/kafka.h"
#include "storage/message_signing.h"
#include "storage/pg.h"
#include "storage/publisher.h"
#include "switchboard/safety/v1/safety.pb.h"

namespace sb::safety {

inline constexpr char kAuditTopic[] = "safety.audit";

// What every decision about one input or one reply shares.
struct AuditScope {
  std::string request_id;
  std::string org_id;
  std::string end_user_id;
  Direction direction = Direction::kInput;
  int64_t policy_version = 0;
  int64_t platform_policy_version = 0;
};

// What an action is called in the trail: an input the policy would
// "redact" is refused (only output is redacted), so it is a block there.
std::string_view AuditAction(Action action, Direction direction);

class AuditLog {
 public:
  // `publisher` null: no trail (decisions are still logged and counted).
  // `key` hashes spans; without one the hash is left empty.
  AuditLog(Publisher* publisher, std::optional<MessageSigner> key, std::string source = "safety");

  bool enabled() const { return publisher_ != nullptr; }
  // One decision on the span [start, end) whose text is `span`.
  void Record(const AuditScope& scope, std::string_view rule, std::string_view action, size_t start,
              size_t end, std::string_view span);
  // The event Record publishes (for tests).
  switchboard::safety::v1::AuditEvent Event(const AuditScope& scope, std::string_view rule,
                                            std::string_view action, size_t start, size_t end,
                                            std::string_view span);

 private:
  Publisher* const publisher_;
  const std::optional<MessageSigner> key_;
  const std::string source_;
  UlidGenerator ids_;
};

// Publishes `event` to kAuditTopic keyed by its org; counts and logs an
// event that could not be queued.
void PublishAuditEvent(Publisher& publisher, const switchboard::safety::v1::AuditEvent& event);

// The table's side (PostgreSQL calls: block).
// Stores the events; one already stored (same event_id) is left as it is.
// InvalidArgument for an event that can never be stored (a value the
// table refuses).
absl::Status StoreAuditEvents(PgPool& pg,
                              const std::vector<switchboard::safety::v1::AuditEvent>& events);
absl::StatusOr<switchboard::safety::v1::ListAuditResponse> ListAudit(
    PgPool& pg, const switchboard::safety::v1::ListAuditRequest& request);
// Removes what was decided before `cutoff`, except rows stored less than
// 25 hours ago (the table refuses those); the number removed.
absl::StatusOr<int64_t> DeleteAuditBefore(PgPool& pg, absl::Time cutoff);

struct AuditWriterOptions {
  absl::Duration retention = absl::Hours(24 * 90);  // zero: kept forever
  absl::Duration retention_every = absl::Hours(1);
  size_t max_batch = 500;
};

// safety.audit -> safety_audit, on its own thread. Offsets are committed
// after the rows: a crash re-reads what it had not stored, and the event id
// keeps that from counting twice. While PostgreSQL is down it retries the
// batch (Kafka keeps the rest); an event that cannot be parsed or stored is
// logged, counted and skipped.
class AuditWriter {
 public:
  AuditWriter(PgPool& pg, std::unique_ptr<KafkaConsumer> consumer, AuditWriterOptions options);
  ~AuditWriter() { Stop(); }
  void Start();
  void Stop();

 private:
  void Loop();
  void Store(const std::vector<KafkaMessage>& batch);
  absl::Status StoreOneByOne(const std::vector<switchboard::safety::v1::AuditEvent>& events);
  void ApplyRetention();

  PgPool& pg_;
  std::unique_ptr<KafkaConsumer> consumer_;
  const AuditWriterOptions options_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

}  // namespace sb::safety
