#include "inference-worker/usage_outbox.h"

#include <spdlog/spdlog.h>

#include <chrono>

#include "core/metrics.h"

namespace sb::worker {

using switchboard::billing::v1::UsageEvent;

namespace {

metrics::Gauge& BacklogGauge() {
  static auto& g = metrics::Default().GetGauge(
      "sb_worker_usage_backlog",
      "Metering events waiting for room in the Kafka producer's queue (new requests are refused "
      "while any wait)");
  return g;
}

}  // namespace

UsageOutbox::UsageOutbox(Publish publish, absl::Duration retry)
    : publish_(std::move(publish)), retry_(retry) {
  thread_ = std::thread([this] { Loop(); });
}

UsageOutbox::~UsageOutbox() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
  if (!backlog_.empty()) {
    spdlog::error("closing with {} metering events Kafka never took; the first is request_id={}",
                  backlog_.size(), backlog_.front().event.request_id());
  }
}

UsageOutbox::Stored UsageOutbox::Combine(std::vector<Stored> callbacks) {
  std::erase_if(callbacks, [](const Stored& s) { return !s; });
  if (callbacks.empty()) return nullptr;
  if (callbacks.size() == 1) return std::move(callbacks[0]);
  return [callbacks = std::move(callbacks)](const absl::Status& st) {
    for (const auto& c : callbacks) c(st);
  };
}

void UsageOutbox::Report(const UsageEvent& event, Stored stored) {
  std::lock_guard<std::mutex> lock(mu_);
  OfferLocked();
  if (backlog_.empty()) {
    const absl::Status st = publish_(event, stored);
    if (st.ok()) return;
    if (st.code() != absl::StatusCode::kResourceExhausted) {
      // Not a matter of room: offering it again would not help.
      spdlog::error("request_id={} metering event refused: {}", event.request_id(), st.ToString());
      metrics::Default()
          .GetCounter("sb_worker_usage_refused_total", "Metering events the producer refused")
          .Inc();
      return;
    }
  }
  metrics::Default()
      .GetCounter("sb_worker_usage_pushback_total",
                  "Metering events that had to wait for room in the Kafka producer's queue")
      .Inc();
  // A later report of the same request supersedes a waiting running one.
  for (auto& waiting : backlog_) {
    if (waiting.event.request_id() == event.request_id() && !waiting.event.final()) {
      waiting.event = event;
      waiting.stored.push_back(std::move(stored));
      return;
    }
  }
  std::vector<Stored> callbacks;
  callbacks.push_back(std::move(stored));
  backlog_.push_back({event, std::move(callbacks)});
  BacklogGauge().Set(static_cast<double>(backlog_.size()));
  cv_.notify_all();
}

void UsageOutbox::OfferLocked() {
  while (!backlog_.empty()) {
    Waiting& front = backlog_.front();
    Stored stored = Combine(front.stored);
    const absl::Status st = publish_(front.event, stored);
    if (st.code() == absl::StatusCode::kResourceExhausted) break;
    if (!st.ok()) {
      spdlog::error("request_id={} metering event refused: {}", front.event.request_id(),
                    st.ToString());
    }
    backlog_.pop_front();
  }
  BacklogGauge().Set(static_cast<double>(backlog_.size()));
  if (backlog_.empty()) cv_.notify_all();
}

void UsageOutbox::Loop() {
  std::unique_lock<std::mutex> lock(mu_);
  while (!stop_) {
    if (backlog_.empty()) {
      cv_.wait(lock, [this] { return stop_ || !backlog_.empty(); });
      continue;
    }
    OfferLocked();
    cv_.wait_for(lock, absl::ToChronoMilliseconds(retry_), [this] { return stop_; });
  }
}

bool UsageOutbox::backed_up() const {
  std::lock_guard<std::mutex> lock(mu_);
  return !backlog_.empty();
}

size_t UsageOutbox::backlog() const {
  std::lock_guard<std::mutex> lock(mu_);
  return backlog_.size();
}

bool UsageOutbox::WaitEmpty(absl::Time deadline) {
  std::unique_lock<std::mutex> lock(mu_);
  return cv_.wait_until(lock, absl::ToChronoTime(deadline), [this] { return backlog_.empty(); });
}

}  // namespace sb::worker
