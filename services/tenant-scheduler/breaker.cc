#include "tenant-scheduler/breaker.h"

#include <spdlog/spdlog.h>

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "core/metrics.h"

namespace sb::scheduler {

std::string_view BreakerStateName(BreakerState s) {
  switch (s) {
    case BreakerState::kClosed:
      return "closed";
    case BreakerState::kHalfOpen:
      return "half_open";
    case BreakerState::kOpen:
      return "open";
  }
  return "unknown";
}

Breaker::Breaker(const Clock& clock) : Breaker(clock, Options{}) {}

Breaker::Breaker(const Clock& clock, Options options)
    : Breaker(clock, options, metrics::Default()) {}

Breaker::Breaker(const Clock& clock, Options options, metrics::Registry& metrics)
    : clock_(clock),
      options_(options),
      metrics_(metrics),
      step_(std::max(options.window / kBuckets, absl::Milliseconds(1))) {}

Breaker::Entries::iterator Breaker::EntryFor(std::string_view version, absl::Time now) {
  auto it = entries_.find(version);
  if (it != entries_.end()) return it;
  it = entries_.emplace(std::string(version), Entry{}).first;
  it->second.since = now;
  metrics_
      .GetGauge("sb_scheduler_breaker_state",
                "Circuit breaker of a model version: 0 closed, 1 half-open, 2 open",
                {{"version", it->first}})
      .Set(0);
  return it;
}

void Breaker::Transition(const std::string& version, Entry& e, BreakerState to, absl::Time now,
                         std::string_view why) {
  const BreakerState from = e.state;
  e.state = to;
  e.since = now;
  e.probes_issued = 0;
  e.probes_succeeded = 0;
  // A closed breaker starts counting afresh: what opened it is history.
  e.buckets = {};
  metrics_
      .GetGauge("sb_scheduler_breaker_state",
                "Circuit breaker of a model version: 0 closed, 1 half-open, 2 open",
                {{"version", version}})
      .Set(static_cast<int>(to));
  metrics_
      .GetCounter("sb_scheduler_breaker_transitions_total",
                  "Circuit breaker transitions of a model version, by the state entered",
                  {{"version", version}, {"to", std::string(BreakerStateName(to))}})
      .Inc();
  if (to == BreakerState::kOpen) {
    spdlog::warn("circuit breaker of model version {}: {} -> open ({}); no traffic for {}", version,
                 BreakerStateName(from), why, absl::FormatDuration(options_.cool_down));
  } else {
    spdlog::info("circuit breaker of model version {}: {} -> {} ({})", version,
                 BreakerStateName(from), BreakerStateName(to), why);
  }
}

void Breaker::Tick(const std::string& version, Entry& e, absl::Time now) {
  if (e.state == BreakerState::kOpen && now - e.since >= options_.cool_down) {
    Transition(version, e, BreakerState::kHalfOpen, now,
               absl::StrCat("cool-down over: ", options_.probes, " probe request(s)"));
  } else if (e.state == BreakerState::kHalfOpen && now - e.since >= options_.cool_down &&
             e.probes_issued > e.probes_succeeded) {
    // Probes that never reported back: hand them out again.
    e.probes_issued = e.probes_succeeded;
    e.since = now;
  }
}

bool Breaker::Allow(std::string_view version) {
  const absl::Time now = clock_.Now();
  std::lock_guard<std::mutex> lock(mu_);
  auto it = EntryFor(version, now);
  Entry& e = it->second;
  Tick(it->first, e, now);
  switch (e.state) {
    case BreakerState::kClosed:
      return true;
    case BreakerState::kOpen:
      return false;
    case BreakerState::kHalfOpen:
      if (e.probes_issued >= options_.probes) return false;
      ++e.probes_issued;
      return true;
  }
  return false;
}

void Breaker::Record(std::string_view version, bool ok) {
  const absl::Time now = clock_.Now();
  std::lock_guard<std::mutex> lock(mu_);
  auto it = EntryFor(version, now);
  const std::string& name = it->first;
  Entry& e = it->second;
  Tick(name, e, now);
  switch (e.state) {
    case BreakerState::kOpen:
      return;
    case BreakerState::kHalfOpen:
      if (!ok) {
        Transition(name, e, BreakerState::kOpen, now, "a probe request failed");
      } else if (++e.probes_succeeded >= options_.probes) {
        Transition(name, e, BreakerState::kClosed, now,
                   absl::StrCat(options_.probes, " probe request(s) succeeded"));
      }
      return;
    case BreakerState::kClosed:
      break;
  }
  absl::Duration into_step;  // IDivDuration needs somewhere to put it
  const int64_t slot = absl::IDivDuration(now - absl::UnixEpoch(), step_, &into_step);
  Bucket& b = e.buckets[static_cast<size_t>(((slot % kBuckets) + kBuckets) % kBuckets)];
  if (b.slot != slot) b = Bucket{.slot = slot};
  ++b.requests;
  if (!ok) ++b.errors;
  int requests = 0;
  int errors = 0;
  for (const Bucket& x : e.buckets) {
    if (x.slot > slot - kBuckets && x.slot <= slot) {
      requests += x.requests;
      errors += x.errors;
    }
  }
  if (requests >= options_.min_requests &&
      static_cast<double>(errors) >= options_.error_threshold * requests) {
    Transition(name, e, BreakerState::kOpen, now,
               absl::StrCat(errors, " of ", requests, " requests failed in the last ",
                            absl::FormatDuration(options_.window)));
  }
}

BreakerState Breaker::State(std::string_view version) {
  const absl::Time now = clock_.Now();
  std::lock_guard<std::mutex> lock(mu_);
  auto it = entries_.find(version);
  if (it == entries_.end()) return BreakerState::kClosed;
  Tick(it->first, it->second, now);
  return it->second.state;
}

}  // namespace sb::scheduler
