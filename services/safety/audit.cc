#include "safety/audit.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <limits>

#include "absl/time/clock.h"
#include "core/metrics.h"

namespace sb::safety {
namespace {

namespace spb = switchboard::safety::v1;

metrics::Counter& Published(const char* outcome) {
  return metrics::Default().GetCounter("sb_safety_audit_events_total",
                                       "Audit events by what became of them when published",
                                       {{"outcome", outcome}});
}

metrics::Counter& Stored(const char* outcome) {
  return metrics::Default().GetCounter(
      "sb_safety_audit_stored_total",
      "Audit events consumed from safety.audit, by what became of them in safety_audit",
      {{"outcome", outcome}});
}

// Whether a failed insert is about the events (a value the table refuses:
// skipped, logged) rather than the database (retried until it is stored).
bool IsTheEvents(const absl::Status& st) {
  return st.code() == absl::StatusCode::kInvalidArgument ||
         st.code() == absl::StatusCode::kFailedPrecondition;
}

bool Storable(const spb::AuditEvent& e) {
  const bool direction = e.direction() == "input" || e.direction() == "output";
  const bool action = e.action() == "flag" || e.action() == "redact" || e.action() == "block" ||
                      e.action() == "throttle" || e.action() == "fail_closed";
  // PostgreSQL's text holds no NUL.
  const auto no_nul = [](const std::string& s) { return s.find('\0') == std::string::npos; };
  // Decided between 2020 and 2100: a time the table can hold and the
  // trail's reads can find.
  const bool when = e.at_unix_ms() >= 1577836800000 && e.at_unix_ms() < 4102444800000;
  return direction && action && when && !e.event_id().empty() && !e.org_id().empty() &&
         !e.source().empty() && e.start() >= 0 && e.end() >= e.start() && no_nul(e.event_id()) &&
         no_nul(e.org_id()) && no_nul(e.end_user_id()) && no_nul(e.request_id()) &&
         no_nul(e.rule()) && no_nul(e.span_hash()) && no_nul(e.source());
}

// ON CONFLICT: a redelivered event (a crash before the offset commit, or a
// producer's retry) is stored once.
constexpr char kInsert[] =
    "INSERT INTO safety_audit (event_id, org_id, end_user_id, request_id, direction, rule, "
    "action, policy_version, span_start, span_end, span_hash, source, decided_at, "
    "platform_policy_version) "
    "SELECT e, o, u, r, d, ru, a, v, s, en, h, so, to_timestamp(t::double precision / 1000), pv "
    "FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], "
    "$7::text[], $8::bigint[], $9::bigint[], $10::bigint[], $11::text[], $12::text[], "
    "$13::bigint[], $14::bigint[]) AS x(e, o, u, r, d, ru, a, v, s, en, h, so, t, pv) "
    "ON CONFLICT (event_id) DO NOTHING";

constexpr char kList[] =
    "SELECT event_id, org_id, end_user_id, request_id, direction, rule, action, policy_version, "
    "span_start, span_end, span_hash, source, "
    "(extract(epoch FROM decided_at) * 1000)::bigint, platform_policy_version "
    "FROM safety_audit WHERE org_id = $1 AND event_id > $2 AND event_id >= $3 "
    "AND decided_at >= to_timestamp($4::double precision / 1000) "
    "ORDER BY event_id LIMIT $5";

// Never a row stored less than a day ago (the table refuses that), by the
// database's clock.
constexpr char kDelete[] =
    "DELETE FROM safety_audit WHERE decided_at < $1::timestamptz "
    "AND stored_at < now() - interval '25 hours'";

}  // namespace

std::string_view AuditAction(Action action, Direction direction) {
  if (action == Action::kRedact && direction == Direction::kInput) return "block";
  return ActionName(action);
}

AuditLog::AuditLog(Publisher* publisher, std::optional<MessageSigner> key, std::string source)
    : publisher_(publisher), key_(std::move(key)), source_(std::move(source)) {}

spb::AuditEvent AuditLog::Event(const AuditScope& scope, std::string_view rule,
                                std::string_view action, size_t start, size_t end,
                                std::string_view span) {
  const absl::Time now = absl::Now();
  spb::AuditEvent e;
  e.set_event_id(ids_.Next(now));
  e.set_org_id(scope.org_id);
  e.set_end_user_id(scope.end_user_id);
  e.set_request_id(scope.request_id);
  e.set_direction(DirectionName(scope.direction));
  e.set_rule(std::string(rule));
  e.set_action(std::string(action));
  e.set_policy_version(scope.policy_version);
  e.set_platform_policy_version(scope.platform_policy_version);
  constexpr size_t kMaxOffset = std::numeric_limits<int32_t>::max();
  e.set_start(static_cast<int32_t>(std::min(start, kMaxOffset)));
  e.set_end(static_cast<int32_t>(std::min(end, kMaxOffset)));
  // Bound to the org (one org's hashes say nothing about another's text),
  // and to this use of the key (never equal to a signature made with it).
  if (key_ && end > start) e.set_span_hash(key_->Sign("sb-audit-span:" + scope.org_id, span));
  e.set_at_unix_ms(absl::ToUnixMillis(now));
  e.set_source(source_);
  return e;
}

void AuditLog::Record(const AuditScope& scope, std::string_view rule, std::string_view action,
                      size_t start, size_t end, std::string_view span) {
  if (publisher_ == nullptr) return;
  PublishAuditEvent(*publisher_, Event(scope, rule, action, start, end, span));
}

void PublishAuditEvent(Publisher& publisher, const spb::AuditEvent& event) {
  static metrics::Counter& queued = Published("queued");
  static metrics::Counter& unqueued = Published("unqueued");
  if (auto st = publisher.Publish(kAuditTopic, event.org_id(), event.SerializeAsString());
      !st.ok()) {
    unqueued.Inc();
    spdlog::error("request_id={} org={} audit event {} ({} {}) not queued: {}", event.request_id(),
                  event.org_id(), event.event_id(), event.action(), event.rule(), st.ToString());
    return;
  }
  queued.Inc();
}

absl::Status StoreAuditEvents(PgPool& pg, const std::vector<spb::AuditEvent>& events) {
  if (events.empty()) return absl::OkStatus();
  std::vector<std::string> id, org, user, request, direction, rule, action, hash, source;
  std::vector<int64_t> version, start, end, at, platform_version;
  for (const auto& e : events) {
    if (!Storable(e)) {
      return absl::InvalidArgumentError("audit event " + e.event_id() + " cannot be stored");
    }
    id.push_back(e.event_id());
    org.push_back(e.org_id());
    user.push_back(e.end_user_id());
    request.push_back(e.request_id());
    direction.push_back(e.direction());
    rule.push_back(e.rule());
    action.push_back(e.action());
    version.push_back(e.policy_version());
    start.push_back(e.start());
    end.push_back(e.end());
    hash.push_back(e.span_hash());
    source.push_back(e.source());
    at.push_back(e.at_unix_ms());
    platform_version.push_back(e.platform_policy_version());
  }
  std::string refused;
  absl::Status st = pg.RunVoid([&](pqxx::connection& c) {
    pqxx::work tx(c);
    try {
      tx.exec_params(kInsert, PgArray(id), PgArray(org), PgArray(user), PgArray(request),
                     PgArray(direction), PgArray(rule), PgArray(action), PgArray(version),
                     PgArray(start), PgArray(end), PgArray(hash), PgArray(source), PgArray(at),
                     PgArray(platform_version));
    } catch (const pqxx::data_exception& e) {
      refused = e.what();  // a value of this batch, not the database
      return;
    }
    tx.commit();
  });
  if (st.ok() && !refused.empty()) return absl::InvalidArgumentError(refused);
  return st;
}

absl::StatusOr<spb::ListAuditResponse> ListAudit(PgPool& pg, const spb::ListAuditRequest& request) {
  if (request.org_id().empty()) return absl::InvalidArgumentError("org_id is required");
  if (request.limit() < 0 || request.limit() > 1000) {
    return absl::InvalidArgumentError("limit must be between 1 and 1000 (0: 100)");
  }
  if (request.since_unix_ms() < 0 || request.since_unix_ms() >= 4102444800000) {
    return absl::InvalidArgumentError("since_unix_ms must be a time between 1970 and 2100");
  }
  const int limit = request.limit() == 0 ? 100 : request.limit();
  const std::string from = request.since_unix_ms() > 0
                               ? UlidLowerBound(absl::FromUnixMillis(request.since_unix_ms()))
                               : std::string();
  return pg.Run<spb::ListAuditResponse>([&](pqxx::connection& c) {
    pqxx::read_transaction tx(c);
    spb::ListAuditResponse out;
    // One more than asked: whether there is a next page.
    auto rows = tx.exec_params(kList, request.org_id(), request.after_event_id(), from,
                               request.since_unix_ms(), limit + 1);
    for (const auto& r : rows) {
      if (out.events_size() == limit) {
        out.set_next_after_event_id(out.events(limit - 1).event_id());
        break;
      }
      auto* e = out.add_events();
      e->set_event_id(r[0].as<std::string>());
      e->set_org_id(r[1].as<std::string>());
      e->set_end_user_id(r[2].as<std::string>());
      e->set_request_id(r[3].as<std::string>());
      e->set_direction(r[4].as<std::string>());
      e->set_rule(r[5].as<std::string>());
      e->set_action(r[6].as<std::string>());
      e->set_policy_version(r[7].as<int64_t>());
      e->set_start(r[8].as<int32_t>());
      e->set_end(r[9].as<int32_t>());
      e->set_span_hash(r[10].as<std::string>());
      e->set_source(r[11].as<std::string>());
      e->set_at_unix_ms(r[12].as<int64_t>());
      e->set_platform_policy_version(r[13].as<int64_t>());
    }
    return out;
  });
}

absl::StatusOr<int64_t> DeleteAuditBefore(PgPool& pg, absl::Time cutoff) {
  const std::string at = absl::FormatTime(absl::RFC3339_full, cutoff, absl::UTCTimeZone());
  return pg.Run<int64_t>([&](pqxx::connection& c) {
    pqxx::work tx(c);
    auto r = tx.exec_params(kDelete, at);
    tx.commit();
    return static_cast<int64_t>(r.affected_rows());
  });
}

AuditWriter::AuditWriter(PgPool& pg, std::unique_ptr<KafkaConsumer> consumer,
                         AuditWriterOptions options)
    : pg_(pg), consumer_(std::move(consumer)), options_(options) {}

void AuditWriter::Start() {
  if (!thread_.joinable()) thread_ = std::thread([this] { Loop(); });
}

void AuditWriter::Stop() {
  stop_.store(true);
  if (thread_.joinable()) thread_.join();
}

void AuditWriter::Loop() {
  auto next_retention = std::chrono::steady_clock::now();
  std::vector<KafkaMessage> batch;
  while (!stop_.load()) {
    if (options_.retention > absl::ZeroDuration() &&
        std::chrono::steady_clock::now() >= next_retention) {
      ApplyRetention();
      next_retention =
          std::chrono::steady_clock::now() + absl::ToChronoMilliseconds(options_.retention_every);
    }
    batch.clear();
    if (auto st = consumer_->PollBatch(options_.max_batch, std::chrono::milliseconds(200), batch);
        !st.ok()) {
      spdlog::warn("safety audit consumer: {}", st.ToString());
    }
    if (!batch.empty()) Store(batch);
  }
}

void AuditWriter::Store(const std::vector<KafkaMessage>& batch) {
  static metrics::Counter& stored = Stored("stored");
  static metrics::Counter& invalid = Stored("invalid");
  std::vector<spb::AuditEvent> events;
  events.reserve(batch.size());
  for (const auto& msg : batch) {
    spb::AuditEvent e;
    if (!e.ParseFromString(msg.value) || !Storable(e)) {
      invalid.Inc();
      spdlog::error("safety audit: skipped a message that is no audit event at {}[{}]@{}",
                    msg.topic, msg.partition, msg.offset);
      continue;
    }
    events.push_back(std::move(e));
  }
  for (int attempt = 0; !stop_.load(); ++attempt) {
    absl::Status st = StoreAuditEvents(pg_, events);
    if (st.ok()) {
      stored.Inc(static_cast<double>(events.size()));
      break;
    }
    if (IsTheEvents(st)) {
      // Something in the batch the table refuses: each alone, skipping it.
      st = StoreOneByOne(events);
      if (st.ok()) break;
    }
    // Kafka keeps what follows; nothing is committed until this is stored.
    spdlog::warn("safety audit: storing {} events (attempt {}): {}", events.size(), attempt + 1,
                 st.ToString());
    std::this_thread::sleep_for(std::chrono::milliseconds(200 << std::min(attempt, 4)));
  }
  if (stop_.load()) return;  // not stored: read again by whoever takes the partitions
  consumer_->CommitBatch(batch);
}

absl::Status AuditWriter::StoreOneByOne(const std::vector<spb::AuditEvent>& events) {
  static metrics::Counter& stored = Stored("stored");
  static metrics::Counter& invalid = Stored("invalid");
  std::vector<const spb::AuditEvent*> refused;
  for (const auto& e : events) {
    const absl::Status st = StoreAuditEvents(pg_, {e});
    if (!st.ok() && !IsTheEvents(st)) return st;  // the database: the batch again later
    if (!st.ok()) {
      refused.push_back(&e);
      spdlog::error("request_id={} org={} safety audit: event {} cannot be stored: {}",
                    e.request_id(), e.org_id(), e.event_id(), st.ToString());
    }
  }
  stored.Inc(static_cast<double>(events.size() - refused.size()));
  invalid.Inc(static_cast<double>(refused.size()));
  return absl::OkStatus();
}

void AuditWriter::ApplyRetention() {
  static metrics::Counter& removed = metrics::Default().GetCounter(
      "sb_safety_audit_expired_total", "Audit rows removed by --audit_retention");
  auto n = DeleteAuditBefore(pg_, absl::Now() - options_.retention);
  if (!n.ok()) {
    spdlog::warn("safety audit: retention: {}", n.status().ToString());
    return;
  }
  removed.Inc(static_cast<double>(*n));
  if (*n > 0) {
    spdlog::info("safety audit: removed {} rows older than {}", *n,
                 absl::FormatDuration(options_.retention));
  }
}

}  // namespace sb::safety
