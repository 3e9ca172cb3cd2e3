#include "gateway/admission/token_bucket.h"

#include <algorithm>

namespace sb::gateway {

void TokenBucket::Refill(absl::Time now) {
  if (now <= at_) return;  // a clock that steps back adds nothing
  tokens_ = std::min(capacity_, tokens_ + absl::ToDoubleSeconds(now - at_) * PerSecond());
  at_ = now;
}

bool TokenBucket::TryTake(double cost, absl::Time now) {
  Refill(now);
  if (tokens_ < cost) return false;
  tokens_ -= cost;
  return true;
}

void TokenBucket::Give(double amount, absl::Time now) {
  Refill(now);
  tokens_ = std::min(capacity_, tokens_ + amount);
}

absl::Duration TokenBucket::TimeUntil(double cost, absl::Time now) {
  Refill(now);
  if (tokens_ >= cost) return absl::ZeroDuration();
  return absl::Seconds((cost - tokens_) / PerSecond());
}

absl::Time TokenBucket::FullAt(absl::Time now) {
  Refill(now);
  return now + absl::Seconds((capacity_ - tokens_) / PerSecond());
}

void TokenBucket::SetCapacity(double per_minute, absl::Time now) {
  Refill(now);
  capacity_ = per_minute;
  tokens_ = std::min(tokens_, capacity_);
}

}  // namespace sb::gateway
