// A circuit breaker per model version. While closed it counts outcomes over
// a sliding window; when at least `min_requests` ended in the window and
// the share of errors reaches `error_threshold`, it opens: the version gets
// no traffic (ModelCatalog::Resolve sends the alias's requests to another
// version) for `cool_down`. Then it is half-open: `probes` requests are let
// through; when all of them succeed it closes, when one fails it opens
// again for another cool-down.
//
// Every transition is logged and published: the gauge
// sb_scheduler_breaker_state{version} (0 closed, 1 half-open, 2 open) and
// the counter sb_scheduler_breaker_transitions_total{version,to}.
//
//   Breaker breakers(RealClock());
//   if (breakers.Allow(version)) {      // route to it (takes a probe ticket
//     ...                               // when half-open)
//     breakers.Record(version, ok);     // once per allowed request
//   }
//
// Time comes only from the injected clock: tests step a ManualClock.
// Thread-safe.
#pragma once

#include <array>
#include <map>
#include <mutex>
#include <string>
#include <string_view>

#include "absl/time/time.h"
#include "core/clock.h"

namespace sb::metrics {
class Registry;
}

namespace sb::scheduler {

enum class BreakerState { kClosed = 0, kHalfOpen = 1, kOpen = 2 };

std::string_view BreakerStateName(BreakerState s);  // "closed", "half_open", "open"

class Breaker {
 public:
  struct Options {
    // The window slides in steps of a tenth of its length.
    absl::Duration window = absl::Seconds(10);
    double error_threshold = 0.5;  // errors / requests in the window
    int min_requests = 20;         // fewer in the window never open the breaker
    absl::Duration cool_down = absl::Seconds(10);
    int probes = 3;  // requests let through while half-open
  };

  explicit Breaker(const Clock& clock);
  Breaker(const Clock& clock, Options options);
  // `metrics`: where the gauge and counter live (tests pass their own).
  Breaker(const Clock& clock, Options options, metrics::Registry& metrics);

  // True: route this request to `version`. Always while closed; never while
  // open; while half-open, for as many requests as there are probes left.
  // A half-open breaker whose probes have not all reported back within a
  // cool-down hands out the missing ones again (a probe whose outcome was
  // never recorded must not hold the version off forever).
  bool Allow(std::string_view version);
  // The outcome of a request Allow let through. An outcome that arrives
  // while the breaker is open (a request started before it opened) is
  // ignored.
  void Record(std::string_view version, bool ok);
  // Closed for a version never seen.
  BreakerState State(std::string_view version);

  const Options& options() const { return options_; }

 private:
  static constexpr int kBuckets = 10;
  struct Bucket {
    int64_t slot = -1;  // which window step it counts (time / step)
    int requests = 0;
    int errors = 0;
  };
  struct Entry {
    BreakerState state = BreakerState::kClosed;
    absl::Time since;  // when it entered the state, or last re-armed probes
    std::array<Bucket, kBuckets> buckets;
    int probes_issued = 0;
    int probes_succeeded = 0;
  };

  using Entries = std::map<std::string, Entry, std::less<>>;

  // The version's entry, created closed on first sight.
  Entries::iterator EntryFor(std::string_view version, absl::Time now);
  // Open -> half-open once the cool-down has passed; re-arms lost probes.
  void Tick(const std::string& version, Entry& e, absl::Time now);
  void Transition(const std::string& version, Entry& e, BreakerState to, absl::Time now,
                  std::string_view why);

  const Clock& clock_;
  const Options options_;
  metrics::Registry& metrics_;
  const absl::Duration step_;
  std::mutex mu_;
  Entries entries_;
};

}  // namespace sb::scheduler
