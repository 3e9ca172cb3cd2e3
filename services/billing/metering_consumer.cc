#include "billing/metering_consumer.h"

#include <spdlog/spdlog.h>

#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "core/metrics.h"
#include "nlohmann/json.hpp"

namespace sb::billing {

namespace {

// 100 ms, doubling per attempt, at most 1.6 s.
void SleepBeforeRetry(int attempt) {
  std::this_thread::sleep_for(std::chrono::milliseconds(100 << std::min(attempt, 4)));
}

metrics::Counter& Outcome(const std::string& outcome) {
  return metrics::Default().GetCounter("sb_billing_events_total", "Usage events by outcome",
                                       {{"outcome", outcome}});
}

constexpr std::chrono::milliseconds kBrokerTimeout{5000};

metrics::Gauge& LagGauge(const std::string& topic, int32_t partition) {
  return metrics::Default().GetGauge(
      "sb_billing_consumer_lag",
      "Usage events in a partition's log this billing replica has not read yet (its log's end "
      "minus its position)",
      {{"topic", topic}, {"partition", std::to_string(partition)}});
}

metrics::Gauge& StalledGauge(const std::string& topic, int32_t partition) {
  return metrics::Default().GetGauge(
      "sb_billing_partition_stalled",
      "1 while a partition is not consumed: its stored offset lies outside the log",
      {{"topic", topic}, {"partition", std::to_string(partition)}});
}

// Text from a refused, possibly hostile, message made safe for one log line.
std::string ForLog(const std::string& s) {
  constexpr size_t kMax = 80;
  std::string out = absl::CHexEscape(s.size() > kMax ? s.substr(0, kMax) : s);
  if (s.size() > kMax) out += "...";
  return out;
}

}  // namespace

MeteringConsumer::MeteringConsumer(Ledger& ledger, const MessageSigner& signer,
                                   MeteringOptions options, const Clock& clock)
    : ledger_(ledger), options_(std::move(options)), validator_(signer, options_.limits, clock) {}

MeteringConsumer::~MeteringConsumer() { Stop(); }

absl::Status MeteringConsumer::Start() {
  auto consumer = KafkaConsumer::Create(
      options_.brokers, options_.group, {options_.topic},
      // An offset outside the log waits for an operator; librdkafka must not
      // move it by itself.
      {{"auto.offset.reset", "error"},
       {"session.timeout.ms", std::to_string(options_.session_timeout.count())},
       {"heartbeat.interval.ms",
        std::to_string(std::max<int64_t>(100, options_.session_timeout.count() / 4))}},
      [this](const std::string& topic, int32_t partition) { return StartAt(topic, partition); },
      [this](const std::string& topic, int32_t partition, int64_t offset) {
        // Decided already (a partition re-assigned while another resumed
        // may fetch once before it is paused again): applied next round.
        if (DecisionWaits(topic, partition)) return;
        auto log = consumer_->QueryWatermarks(topic, partition, kBrokerTimeout);
        Stalled(topic, partition, offset, log.ok() ? *log : KafkaConsumer::Watermarks{-1, -1});
      });
  if (!consumer.ok()) return consumer.status();
  consumer_ = std::move(*consumer);
  thread_ = std::thread([this] { Loop(); });
  return absl::OkStatus();
}

KafkaConsumer::StartAt MeteringConsumer::StartAt(const std::string& topic, int32_t partition) {
  // Resume from the offset stored with the ledger rows. Retry while the
  // database is away: starting from the group's offset could skip or repeat
  // work only the ledger knows about.
  std::optional<int64_t> stored;
  for (int attempt = 0;; ++attempt) {
    auto next = ledger_.NextOffset(options_.group, topic, partition);
    if (next.ok()) {
      stored = *next;
      break;
    }
    spdlog::warn("loading stored offset for {}[{}]: {}", topic, partition,
                 next.status().ToString());
    if (stop_.load()) return {.paused = true};
    SleepBeforeRetry(attempt);
  }
  // Never consumed: the whole log.
  if (!stored) return {.offset = KafkaConsumer::kBeginning};
  for (int attempt = 0;; ++attempt) {
    auto log = consumer_->QueryWatermarks(topic, partition, kBrokerTimeout);
    if (log.ok()) {
      if (*stored >= log->low && *stored <= log->high) return {.offset = *stored};
      // An operator's decision already waits (tools/dev up makes one for a
      // fresh dev broker): paused until it is applied, in the loop's next
      // round, without an alarm.
      if (DecisionWaits(topic, partition)) return {.offset = *stored, .paused = true};
      Stalled(topic, partition, *stored, *log);
      return {.offset = *stored, .paused = true};
    }
    spdlog::warn("billing: the log of {}[{}]: {}", topic, partition, log.status().ToString());
    if (stop_.load()) return {.offset = *stored, .paused = true};
    SleepBeforeRetry(attempt);
  }
}

bool MeteringConsumer::DecisionWaits(const std::string& topic, int32_t partition) {
  auto pending = ledger_.PendingResets(options_.group);
  if (!pending.ok()) return false;
  for (const OffsetReset& r : *pending) {
    if (r.topic == topic && r.partition == partition) return true;
  }
  return false;
}

void MeteringConsumer::Stalled(const std::string& topic, int32_t partition, int64_t offset,
                               const KafkaConsumer::Watermarks& log) {
  if (!stalled_.try_emplace({topic, partition}, Stall{offset, log}).second) return;
  stalled_count_.store(static_cast<int>(stalled_.size()));
  StalledGauge(topic, partition).Set(1);
  metrics::Default()
      .GetCounter("sb_billing_offsets_out_of_range_total",
                  "Partitions stopped because their offset lay outside the log")
      .Inc();
  spdlog::error(
      "billing stopped consuming {}[{}]: offset {} lies outside the partition's log (first "
      "offset {}, end {}); nothing is skipped or replayed until an operator decides: sbadmin "
      "billing reset-offsets --group={} --topic={} --partition={} --to=earliest|latest|OFFSET",
      topic, partition, offset, log.low, log.high, options_.group, topic, partition);
}

void MeteringConsumer::ApplyResets() {
  auto resumed = [&](const Partition& p) {
    if (stalled_.erase(p) > 0) {
      stalled_count_.store(static_cast<int>(stalled_.size()));
      StalledGauge(p.first, p.second).Set(0);
    }
  };
  // Decided and stored, but resuming failed: the stored offset stands.
  for (auto it = resume_at_.begin(); it != resume_at_.end();) {
    if (consumer_->Resume(it->first.first, it->first.second, it->second).ok()) {
      resumed(it->first);
      it = resume_at_.erase(it);
    } else {
      ++it;
    }
  }
  auto pending = ledger_.PendingResets(options_.group);
  if (!pending.ok()) {
    spdlog::warn("billing: loading offset resets: {}", pending.status().ToString());
    return;
  }
  for (const OffsetReset& r : *pending) {
    // Another consumer of the group holds it, or it is not assigned yet
    // (then it is applied here once it is).
    if (r.topic != options_.topic || !consumer_->Assigned(r.topic, r.partition)) continue;
    auto log = consumer_->QueryWatermarks(r.topic, r.partition, kBrokerTimeout);
    if (!log.ok()) {
      spdlog::warn("billing: the log of {}[{}]: {}", r.topic, r.partition, log.status().ToString());
      continue;  // next round
    }
    int64_t to = 0;
    if (r.to == "earliest") {
      to = log->low;
    } else if (r.to == "latest") {
      to = log->high;
    } else if (!absl::SimpleAtoi(r.to, &to)) {
      to = -1;
    }
    if (to < log->low || to > log->high) {
      spdlog::error(
          "billing: offset reset of {}[{}] to {} refused: outside the partition's log (first "
          "offset {}, end {})",
          r.topic, r.partition, r.to, log->low, log->high);
      if (auto st = ledger_.DropReset(options_.group, r); !st.ok()) {
        spdlog::warn("billing: dropping the reset: {}", st.ToString());
      }
      continue;
    }
    if (auto st = ledger_.ApplyReset(options_.group, r, to); !st.ok()) {
      spdlog::warn("billing: storing the reset of {}[{}]: {}", r.topic, r.partition, st.ToString());
      continue;
    }
    spdlog::warn("billing consumes {}[{}] from offset {} (operator's reset to {})", r.topic,
                 r.partition, to, r.to);
    const Partition p{r.topic, r.partition};
    if (auto st = consumer_->Resume(r.topic, r.partition, to); !st.ok()) {
      spdlog::warn("billing: {}; retried", st.ToString());
      resume_at_[p] = to;
      continue;
    }
    resume_at_.erase(p);
    resumed(p);
  }
}

void MeteringConsumer::ReportLag() {
  std::set<Partition> held;
  for (const auto& p : consumer_->Positions()) {
    auto log = consumer_->QueryWatermarks(p.topic, p.partition, kBrokerTimeout);
    if (!log.ok()) continue;  // next time
    LagGauge(p.topic, p.partition)
        .Set(static_cast<double>(std::max<int64_t>(0, log->high - p.next)));
    held.insert({p.topic, p.partition});
  }
  for (const auto& p : lag_reported_) {
    if (!held.contains(p)) LagGauge(p.first, p.second).Set(0);  // another replica's now
  }
  lag_reported_ = std::move(held);
}

void MeteringConsumer::Stop() {
  stop_.store(true);
  if (thread_.joinable()) thread_.join();
  consumer_.reset();
}

void MeteringConsumer::Loop() {
  auto next_reset_check = std::chrono::steady_clock::now();
  auto next_lag_report = std::chrono::steady_clock::now();
  std::vector<KafkaMessage> batch;
  while (!stop_.load()) {
    if (std::chrono::steady_clock::now() >= next_reset_check) {
      ApplyResets();
      next_reset_check = std::chrono::steady_clock::now() + options_.reset_check_interval;
    }
    if (std::chrono::steady_clock::now() >= next_lag_report) {
      ReportLag();
      next_lag_report = std::chrono::steady_clock::now() + options_.lag_interval;
    }
    batch.clear();
    if (auto st = consumer_->PollBatch(static_cast<size_t>(std::max(1, options_.max_batch)),
                                       std::chrono::milliseconds(200), batch);
        !st.ok()) {
      spdlog::warn("billing consumer: {}", st.ToString());
    }
    if (!batch.empty()) RecordBatch(batch);
    if (ledger_.alerts_written() != alerts_seen_) PublishAlerts();
  }
}

void MeteringConsumer::PublishAlerts() {
  alerts_seen_ = ledger_.alerts_written();
  if (options_.alerts == nullptr) return;
  auto alerts = ledger_.UnpublishedAlerts(100);
  if (!alerts.ok()) {
    spdlog::warn("billing: loading budget alerts: {}", alerts.status().ToString());
    alerts_seen_ = -1;  // again after the next batch
    return;
  }
  for (const BudgetAlert& a : *alerts) {
    const nlohmann::json event = {{"type", "budget_alert"},
                                  {"org_id", a.org},
                                  {"api_key_id", a.key},
                                  {"month", a.month.substr(0, 7)},
                                  {"percent", a.percent},
                                  {"spend_usd", FormatUsd(a.spend_micros)},
                                  {"budget_usd", FormatUsd(a.budget_micros)}};
    // Queued is enough: the producer keeps it until Kafka has it.
    if (auto st = options_.alerts->Publish(options_.alerts_topic, a.org, event.dump()); !st.ok()) {
      spdlog::warn("billing: publishing a budget alert: {}", st.ToString());
      alerts_seen_ = -1;
      return;
    }
    if (auto st = ledger_.MarkAlertPublished(a); !st.ok()) {
      spdlog::warn("billing: marking a budget alert published: {}", st.ToString());
      alerts_seen_ = -1;
      return;
    }
    metrics::Default()
        .GetCounter("sb_billing_budget_alerts_total", "Budget alerts published, by threshold",
                    {{"percent", std::to_string(a.percent)}})
        .Inc();
    spdlog::warn("org={} key={} has spent {}% of its monthly budget for {} (${} of ${})", a.org,
                 a.key.empty() ? "(all)" : a.key, a.percent, a.month.substr(0, 7),
                 FormatUsd(a.spend_micros), FormatUsd(a.budget_micros));
  }
  if (alerts->size() == 100) alerts_seen_ = -1;  // more left
}

void MeteringConsumer::Counted(const switchboard::billing::v1::UsageEvent& event,
                               Ledger::Recorded outcome) {
  using Recorded = Ledger::Recorded;
  static auto& recorded = Outcome("recorded");
  static auto& duplicate = Outcome("duplicate");
  static auto& raised = Outcome("raised");
  static auto& settled = Outcome("settled");
  (outcome == Recorded::kNew       ? recorded
   : outcome == Recorded::kRaised  ? raised
   : outcome == Recorded::kSettled ? settled
                                   : duplicate)
      .Inc();
  spdlog::debug("request_id={} metered org={} input={} output={}{}{}", event.request_id(),
                event.org_id(), event.input_tokens(), event.output_tokens(),
                event.final() ? "" : " (running)",
                outcome == Recorded::kUnchanged ? " (nothing new)" : "");
}

void MeteringConsumer::RecordBatch(const std::vector<KafkaMessage>& batch) {
  std::vector<switchboard::billing::v1::UsageEvent> events;
  std::vector<KafkaPosition> consumed;
  for (const KafkaMessage& msg : batch) {
    consumed.push_back({options_.group, msg.topic, msg.partition, msg.offset});
    CheckedUsage checked = validator_.Check(msg);
    if (checked.rejection.has_value()) {
      // Its offset moves with the batch's.
      CountRejected(msg, checked);
    } else {
      events.push_back(std::move(checked.event));
    }
  }
  static auto& sizes = metrics::Default().GetHistogram(
      "sb_billing_batch_events", "Messages written to the ledger per transaction", {},
      {1, 10, 50, 100, 250, 500, 1000, 5000});
  static auto& seconds = metrics::Default().GetHistogram(
      "sb_billing_batch_seconds", "Time to write one batch to the ledger (one transaction)");
  // Retry until the database takes it: never skip usage that could be true.
  for (int attempt = 0; !stop_.load(); ++attempt) {
    const auto start = std::chrono::steady_clock::now();
    auto outcomes = ledger_.RecordBatch(events, consumed);
    if (outcomes.ok()) {
      seconds.Observe(
          std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
      sizes.Observe(static_cast<double>(batch.size()));
      for (size_t i = 0; i < events.size(); ++i) Counted(events[i], (*outcomes)[i]);
      // Informational: the ledger's offsets are the truth.
      consumer_->CommitBatch(batch);
      spdlog::info("billing recorded {} usage event(s) of {} message(s) ({}[{}]@{} ...)",
                   events.size(), batch.size(), batch.front().topic, batch.front().partition,
                   batch.front().offset);
      return;
    }
    if (outcomes.status().code() == absl::StatusCode::kFailedPrecondition) {
      // The schema refuses a row: find it one event at a time.
      spdlog::warn(
          "billing: a batch of {} refused by the database ({}); recording it event by "
          "event",
          batch.size(), outcomes.status().ToString());
      for (const KafkaMessage& msg : batch) RecordOne(msg);
      return;
    }
    spdlog::warn("billing: ledger write of {} message(s) failed (attempt {}): {}", batch.size(),
                 attempt + 1, outcomes.status().ToString());
    SleepBeforeRetry(attempt);
  }
}

void MeteringConsumer::RecordOne(const KafkaMessage& msg) {
  const KafkaPosition pos{options_.group, msg.topic, msg.partition, msg.offset};
  CheckedUsage checked = validator_.Check(msg);
  if (checked.rejection.has_value()) {
    Reject(msg, pos, checked);
    return;
  }
  const auto& event = checked.event;
  for (int attempt = 0; !stop_.load(); ++attempt) {
    auto inserted = ledger_.Record(event, pos);
    if (inserted.ok()) {
      Counted(event, *inserted);
      consumer_->Commit(msg);
      return;
    }
    if (inserted.status().code() == absl::StatusCode::kFailedPrecondition) {
      // The schema's constraints refuse this row, now and on every retry.
      checked.rejection = Rejection::kConstraint;
      spdlog::warn("request_id={} refused by the database: {}", ForLog(event.request_id()),
                   inserted.status().ToString());
      Reject(msg, pos, checked);
      return;
    }
    spdlog::warn("request_id={} ledger write failed (attempt {}): {}", event.request_id(),
                 attempt + 1, inserted.status().ToString());
    SleepBeforeRetry(attempt);
  }
}

void MeteringConsumer::CountRejected(const KafkaMessage& msg, const CheckedUsage& checked) {
  const std::string reason(RejectionReason(*checked.rejection));
  metrics::Default()
      .GetCounter("sb_billing_usage_events_rejected_total",
                  "Usage events refused and not applied, by reason", {{"reason", reason}})
      .Inc();
  Outcome("rejected").Inc();
  const auto& e = checked.event;
  // Unparsed (a bad signature, say), the Kafka key is the request id the
  // producer claimed.
  const std::string& request_id = e.request_id().empty() ? msg.key : e.request_id();
  spdlog::warn(
      "request_id={} usage event refused ({}) and not applied: org={} input={} output={} "
      "at {}[{}]@{}",
      ForLog(request_id), reason, ForLog(e.org_id()), e.input_tokens(), e.output_tokens(),
      msg.topic, msg.partition, msg.offset);
}

void MeteringConsumer::Reject(const KafkaMessage& msg, const KafkaPosition& pos,
                              const CheckedUsage& checked) {
  CountRejected(msg, checked);
  // Store the offset past it, as for any other event, so that a restart does
  // not read it again; retried only while the database is away.
  for (int attempt = 0; !stop_.load(); ++attempt) {
    if (ledger_.Skip(pos).ok()) {
      consumer_->Commit(msg);
      return;
    }
    SleepBeforeRetry(attempt);
  }
}

}  // namespace sb::billing
