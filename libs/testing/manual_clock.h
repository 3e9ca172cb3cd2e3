// Time that moves only when a test says so, and timers that fire when it
// does:
//
//   ManualClock clock;
//   ManualTimers timers(clock);
//   timers.After(absl::Seconds(10), [&] { pinged = true; });
//   timers.Advance(absl::Seconds(10));   // moves the clock, runs what is due
#pragma once

#include <functional>
#include <map>
#include <mutex>

#include "core/clock.h"
#include "core/timers.h"

namespace sb::testing {

class ManualClock final : public Clock {
 public:
  explicit ManualClock(absl::Time start = absl::FromUnixSeconds(1'700'000'000)) : now_(start) {}
  absl::Time Now() const override {
    std::lock_guard<std::mutex> lock(mu_);
    return now_;
  }
  void Advance(absl::Duration d) {
    std::lock_guard<std::mutex> lock(mu_);
    now_ += d;
  }

 private:
  mutable std::mutex mu_;
  absl::Time now_;
};

class ManualTimers final : public Timers {
 public:
  explicit ManualTimers(ManualClock& clock) : clock_(clock) {}

  Id After(absl::Duration delay, std::function<void()> fn) override {
    std::lock_guard<std::mutex> lock(mu_);
    const Id id = next_id_++;
    timers_.emplace(id, Timer{clock_.Now() + delay, std::move(fn)});
    return id;
  }
  bool Cancel(Id id) override {
    std::lock_guard<std::mutex> lock(mu_);
    return timers_.erase(id) > 0;
  }
  // Advances the clock and runs, in deadline order, every timer now due
  // (also ones that due timers set).
  void Advance(absl::Duration d) {
    clock_.Advance(d);
    for (;;) {
      std::function<void()> fn;
      {
        std::lock_guard<std::mutex> lock(mu_);
        auto due = timers_.end();
        for (auto it = timers_.begin(); it != timers_.end(); ++it) {
          if (it->second.at <= clock_.Now() &&
              (due == timers_.end() || it->second.at < due->second.at)) {
            due = it;
          }
        }
        if (due == timers_.end()) return;
        fn = std::move(due->second.fn);
        timers_.erase(due);
      }
      fn();
    }
  }
  size_t pending() const {
    std::lock_guard<std::mutex> lock(mu_);
    return timers_.size();
  }

 private:
  struct Timer {
    absl::Time at;
    std::function<void()> fn;
  };
  ManualClock& clock_;
  mutable std::mutex mu_;
  std::map<Id, Timer> timers_;
  Id next_id_ = 1;
};

}  // namespace sb::testing
