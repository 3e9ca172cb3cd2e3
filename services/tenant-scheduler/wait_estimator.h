// Admission control's estimate of a request's queue wait (Little's law): the
// tokens queued ahead of it divided by the rate the model has been serving
// tokens at over the last window. No clock inside: times are passed in.
#pragma once

#include <cstdint>
#include <deque>
#include <optional>

#include "absl/time/time.h"

namespace sb::scheduler {

class WaitEstimator {
 public:
  explicit WaitEstimator(absl::Duration window = absl::Seconds(10));

  // `tokens` (input and output) served at `now`.
  void Served(int64_t tokens, absl::Time now);
  // Tokens a second over the window; nullopt before there is a window's
  // worth of history or when nothing was served in it (no basis to refuse).
  std::optional<double> Rate(absl::Time now) const;
  // How long `tokens_ahead` take at the current rate; nullopt as for Rate.
  std::optional<absl::Duration> Wait(int64_t tokens_ahead, absl::Time now) const;

 private:
  void Expire(absl::Time now) const;

  absl::Duration window_;
  absl::Duration slot_;
  // Tokens served per slot (window / 20), oldest first.
  mutable std::deque<std::pair<absl::Time, int64_t>> slots_;
  mutable int64_t total_ = 0;
  std::optional<absl::Time> first_;
};

}  // namespace sb::scheduler
