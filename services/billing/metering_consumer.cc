#include "billing/metering_consumer.h"

#include <spdlog/spdlog.h>

#include "core/metrics.h"

namespace sb::billing {

namespace {

// 100 ms, doubling per attempt, at most 1.6 s.
void SleepBeforeRetry(int attempt) {
  std::this_thread::sleep_for(std::chrono::milliseconds(100 << std::min(attempt, 4)));
}

}  // namespace

MeteringConsumer::MeteringConsumer(Ledger& ledger, std::string brokers, std::string group,
                                   std::string topic)
    : ledger_(ledger), brokers_(std::move(brokers)), group_(std::move(group)), topic_(std::move(topic)) {}

MeteringConsumer::~MeteringConsumer() { Stop(); }

absl::Status MeteringConsumer::Start() {
  auto consumer = KafkaConsumer::Create(
      brokers_, group_, {topic_}, {},
      [this](const std::string& topic, int32_t partition) -> std::optional<int64_t> {
        // Resume from the offset stored with the ledger rows. Retry while the
        // database is away: starting from the group's offset could skip or
        // repeat work only the ledger knows about.
        for (int attempt = 0;; ++attempt) {
          auto next = ledger_.NextOffset(group_, topic, partition);
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
  auto& recorded = metrics::Default().GetCounter("sb_billing_events_total",
                                                 "Usage events by outcome", {{"outcome", "recorded"}});
  auto& duplicate = metrics::Default().GetCounter(
      "sb_billing_events_total", "Usage events by outcome", {{"outcome", "duplicate"}});
  auto& malformed = metrics::Default().GetCounter(
      "sb_billing_events_total", "Usage events by outcome", {{"outcome", "malformed"}});
  while (!stop_.load()) {
    auto polled = consumer_->Poll(std::chrono::milliseconds(200));
    if (!polled.ok()) {
      spdlog::warn("billing consumer: {}", polled.status().ToString());
      continue;
    }
    if (!polled->has_value()) continue;
    const KafkaMessage& msg = **polled;
    const KafkaPosition pos{group_, msg.topic, msg.partition, msg.offset};
    switchboard::billing::v1::UsageEvent event;
    if (!event.ParseFromString(msg.value) || event.request_id().empty() || event.org_id().empty()) {
      malformed.Inc();
      spdlog::error("malformed usage event at {}[{}]@{}: skipped", msg.topic, msg.partition,
                    msg.offset);
      while (!stop_.load() && !ledger_.Skip(pos).ok()) {
        std::this_thread::sleep_for(std::chrono::milliseconds(500));
      }
      continue;
    }
    // Retry the same event until the database takes it: never skip usage.
    for (int attempt = 0; !stop_.load(); ++attempt) {
      auto inserted = ledger_.Record(event, pos);
      if (inserted.ok()) {
        (*inserted ? recorded : duplicate).Inc();
        spdlog::info("request_id={} metered org={} input={} output={}{}", event.request_id(),
                     event.org_id(), event.input_tokens(), event.output_tokens(),
                     *inserted ? "" : " (duplicate ignored)");
        consumer_->Commit(msg);  // informational: the ledger's offset is the truth
        break;
      }
      spdlog::warn("request_id={} ledger write failed (attempt {}): {}", event.request_id(),
                   attempt + 1, inserted.status().ToString());
      SleepBeforeRetry(attempt);
    }
  }
}

}  // namespace sb::billing
