#include "tenant-scheduler/wait_estimator.h"

namespace sb::scheduler {

WaitEstimator::WaitEstimator(absl::Duration window) : window_(window), slot_(window / 20) {}

void WaitEstimator::Expire(absl::Time now) const {
  while (!slots_.empty() && slots_.front().first + slot_ <= now - window_) {
    total_ -= slots_.front().second;
    slots_.pop_front();
  }
}

void WaitEstimator::Served(int64_t tokens, absl::Time now) {
  if (tokens <= 0) return;
  if (!first_) first_ = now;
  const absl::Time start = absl::FromUnixNanos(
      absl::ToUnixNanos(now) - absl::ToUnixNanos(now) % absl::ToInt64Nanoseconds(slot_));
  if (slots_.empty() || slots_.back().first != start) slots_.push_back({start, 0});
  slots_.back().second += tokens;
  total_ += tokens;
  Expire(now);
}

std::optional<double> WaitEstimator::Rate(absl::Time now) const {
  Expire(now);
  if (!first_ || now - *first_ < window_ || total_ <= 0) return std::nullopt;
  return static_cast<double>(total_) / absl::ToDoubleSeconds(window_);
}

std::optional<absl::Duration> WaitEstimator::Wait(int64_t tokens_ahead, absl::Time now) const {
  const auto rate = Rate(now);
  if (!rate) return std::nullopt;
  return absl::Seconds(static_cast<double>(tokens_ahead) / *rate);
}

}  // namespace sb::scheduler
