#include "billing/metering_consumer.h"

#include <spdlog/spdlog.h>

#include "absl/strings/escaping.h"
#include "core/metrics.h"

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
      options_.brokers, options_.group, {options_.topic}, {},
      [this](const std::string& topic, int32_t partition) -> std::optional<int64_t> {
        // Resume from the offset stored with the ledger rows. Retry while the
        // database is away: starting from the group's offset could skip or
        // repeat work only the ledger knows about.
        for (int attempt = 0;; ++attempt) {
          auto next = ledger_.NextOffset(options_.group, topic, partition);
          if (next.ok()) return *next;
          spdlog::warn("loading stored offset for {}[{}]: {}", topic, partition,
                       next.status().ToString());
          if (stop_.load()) return std::nullopt;
          SleepBeforeRetry(attempt);
        }
      });
  if (!consumer.ok()) return consumer.status();
  consumer_ = std::move(*consumer);
  thread_ = std::thread([this] { Loop(); });
  return absl::OkStatus();
}

void MeteringConsumer::Stop() {
  stop_.store(true);
  if (thread_.joinable()) thread_.join();
  consumer_.reset();
}

void MeteringConsumer::Loop() {
  auto& recorded = Outcome("recorded");
  auto& duplicate = Outcome("duplicate");
  auto& raised = Outcome("raised");
  auto& settled = Outcome("settled");
  while (!stop_.load()) {
    auto polled = consumer_->Poll(std::chrono::milliseconds(200));
    if (!polled.ok()) {
      spdlog::warn("billing consumer: {}", polled.status().ToString());
      continue;
    }
    if (!polled->has_value()) continue;
    const KafkaMessage& msg = **polled;
    const KafkaPosition pos{options_.group, msg.topic, msg.partition, msg.offset};
    CheckedUsage checked = validator_.Check(msg);
    if (checked.rejection.has_value()) {
      Reject(msg, pos, checked);
      continue;
    }
    const auto& event = checked.event;
    // Retry the same event until the database takes it: never skip usage
    // that could be true.
    for (int attempt = 0; !stop_.load(); ++attempt) {
      auto inserted = ledger_.Record(event, pos);
      if (inserted.ok()) {
        using Recorded = Ledger::Recorded;
        (*inserted == Recorded::kNew       ? recorded
         : *inserted == Recorded::kRaised  ? raised
         : *inserted == Recorded::kSettled ? settled
                                           : duplicate)
            .Inc();
        spdlog::info("request_id={} metered org={} input={} output={}{}{}", event.request_id(),
                     event.org_id(), event.input_tokens(), event.output_tokens(),
                     event.final() ? "" : " (running)",
                     *inserted == Recorded::kUnchanged ? " (nothing new)" : "");
        consumer_->Commit(msg);  // informational: the ledger's offset is the truth
        break;
      }
      if (inserted.status().code() == absl::StatusCode::kFailedPrecondition) {
        // The schema's constraints refuse this row, now and on every retry.
        checked.rejection = Rejection::kConstraint;
        spdlog::warn("request_id={} refused by the database: {}", ForLog(event.request_id()),
                     inserted.status().ToString());
        Reject(msg, pos, checked);
        break;
      }
      spdlog::warn("request_id={} ledger write failed (attempt {}): {}", event.request_id(),
                   attempt + 1, inserted.status().ToString());
      SleepBeforeRetry(attempt);
    }
  }
}

void MeteringConsumer::Reject(const KafkaMessage& msg, const KafkaPosition& pos,
                              const CheckedUsage& checked) {
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
