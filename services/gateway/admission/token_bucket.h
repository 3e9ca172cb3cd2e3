// A token bucket refilled continuously: `per_minute` tokens a minute, up to
// `per_minute` held (a full minute's worth, as Anthropic's limits work).
// Time is passed in. A bucket may go below zero when a charge is corrected
// upwards after the fact (the exact input count is known only once the
// worker starts); it then refills from there.
//
// The Redis admission script implements the same arithmetic; this class is
// the in-process fallback and the reference the unit tests pin down.
#pragma once

#include <cstdint>

#include "absl/time/time.h"

namespace sb::gateway {

class TokenBucket {
 public:
  TokenBucket(double per_minute, absl::Time now)
      : capacity_(per_minute), tokens_(per_minute), at_(now) {}

  double tokens(absl::Time now) {
    Refill(now);
    return tokens_;
  }
  double capacity() const { return capacity_; }
  // Takes `cost` if the bucket holds it.
  bool TryTake(double cost, absl::Time now);
  // Gives tokens back (capped at capacity); a negative amount charges more.
  void Give(double amount, absl::Time now);
  // How long until `cost` tokens are there (zero when they are).
  absl::Duration TimeUntil(double cost, absl::Time now);
  // When the bucket is full again.
  absl::Time FullAt(absl::Time now);
  // A new limit keeps the tokens held (capped).
  void SetCapacity(double per_minute, absl::Time now);

 private:
  void Refill(absl::Time now);
  double PerSecond() const { return capacity_ / 60.0; }

  double capacity_;
  double tokens_;
  absl::Time at_;
};

}  // namespace sb::gateway
