// Time for the simulator. A step takes the time the cost model says: on the
// virtual clock (tests, benchmarks) time jumps by that much and nothing
// sleeps, so an hour of load runs in seconds; on the real clock (serving)
// the step thread sleeps it.
#pragma once

#include <mutex>

#include "absl/time/time.h"
#include "core/clock.h"

namespace sb::worker::sim {

class StepClock : public sb::Clock {
 public:
  // Lets `d` pass.
  virtual void Sleep(absl::Duration d) = 0;
};

// Starts at the Unix epoch and moves only when told to.
class VirtualClock final : public StepClock {
 public:
  absl::Time Now() const override {
    std::lock_guard<std::mutex> lock(mu_);
    return now_;
  }
  void Sleep(absl::Duration d) override {
    std::lock_guard<std::mutex> lock(mu_);
    now_ += d;
  }
  void AdvanceTo(absl::Time t) {
    std::lock_guard<std::mutex> lock(mu_);
    if (t > now_) now_ = t;
  }

 private:
  mutable std::mutex mu_;
  absl::Time now_ = absl::UnixEpoch();
};

class RealStepClock final : public StepClock {
 public:
  absl::Time Now() const override { return absl::Now(); }
  void Sleep(absl::Duration d) override { absl::SleepFor(d); }
};

}  // namespace sb::worker::sim
