// A deterministic simulation of the fair queue in front of the simulated
// accelerator (issue 9): orgs with weights, priorities, arrival patterns and
// length distributions send requests; a dispatcher admits them from a
// FairQueue whenever the engine has a free slot, as the scheduler does, and
// charges output tokens as the engine's observer sees them. Everything runs
// on the simulated engine's virtual clock, one thread, so a run is a pure
// function of its Scenario (seed included) and a minute of load takes well
// under a second.
//
//   FairnessScenario s{.orgs = {{.name = "a", .arrivals = ClosedLoop{32}},
//                               {.name = "b", .weight = 3, .arrivals = ClosedLoop{32}}}};
//   FairnessResult r = RunFairnessSim(s);
//   double b_share = r.Share("b", absl::Seconds(5), absl::Seconds(60));  // ~0.75
//
// Time. The engine's clock moves only by its steps, from absl::UnixEpoch().
// Arrivals are events on the same timeline, handled between steps: an
// arrival during a step enters the queue at the step's end, as a request
// reaching vLLM mid-step joins the next one. When the engine is idle and
// the next event is an arrival, the simulation's clock jumps to it; the
// engine has no call to advance an idle virtual clock, so the simulation
// keeps its own time = engine time + the idle gaps jumped so far. That is
// exact: nothing runs in the engine while the gap is added, so no step
// overlaps it. Every time reported is simulation time since the start.
//
// Lengths. A request's prompt has the drawn number of input tokens (unique
// words, so no prefix-cache hits). Its output is min(drawn max_tokens, the
// simulated model's reply to that prompt), and the simulated model replies
// with 12 to 51 tokens (SimulatedEngine::ReplyTokens), so max_tokens above
// 51 only raises what may be in flight, not what is produced.
//
// Service. An org's service S is w_in * input + w_out * output tokens, as
// charged to the fair queue (input when admitted, output as it streams),
// unweighted: the org's weight is what its share of S should follow.
#pragma once

#include <cstdint>
#include <string>
#include <variant>
#include <vector>

#include "absl/time/time.h"
#include "tenant-scheduler/fair_queue.h"

namespace sb::scheduler {

// Keeps `depth` requests outstanding (queued or running): a new one arrives
// as soon as one finishes. With depth above the engine's slots the org is
// always backlogged.
struct ClosedLoop {
  int depth = 1;
};
// Requests arrive independently at `rate` a (virtual) second.
struct Poisson {
  double rate = 1;
};
// `size` requests at once, every `every`, the first at the org's start.
struct Bursts {
  int size = 1;
  absl::Duration every = absl::Seconds(1);
};
using Arrivals = std::variant<ClosedLoop, Poisson, Bursts>;

// Uniform over [lo, hi].
struct TokenRange {
  int lo = 1;
  int hi = 1;
};

struct OrgSpec {
  std::string name;
  double weight = 1;
  Priority priority = Priority::kInteractive;
  Arrivals arrivals = ClosedLoop{};
  TokenRange input_tokens{100, 300};
  TokenRange max_tokens{16, 64};
  // At most this many of its requests in service (0: no cap), as the
  // scheduler applies an org's OrgPolicy cap.
  int concurrency_cap = 0;
  // The org sends from `start` until `stop` (capped at the scenario's
  // duration).
  absl::Duration start = absl::ZeroDuration();
  absl::Duration stop = absl::InfiniteDuration();
};

struct FairnessScenario {
  std::vector<OrgSpec> orgs;
  // Arrivals stop at `duration`; with `drain`, what is queued or running
  // then is served to the end, otherwise the run stops there.
  absl::Duration duration = absl::Seconds(60);
  bool drain = true;
  // Served tokens are also recorded per window of this length.
  absl::Duration window = absl::Seconds(1);
  // The engine's max_num_seqs.
  int max_num_seqs = 8;
  // Requests the dispatcher keeps in the engine (0: max_num_seqs). Beyond
  // max_num_seqs they wait in the engine's own queue, by priority and then
  // arrival, as they do when a worker registers more capacity than its
  // batch holds.
  int slots = 0;
  // The scheduler's --reserved_slots (at most an eighth of the slots): kept
  // for orgs under their share of the slots.
  int reserved_slots = 0;
  std::string model = "sim-small";
  FairQueue::Options queue;
  uint64_t seed = 1;
};

struct RequestRecord {
  size_t org = 0;  // index into the scenario's orgs
  uint64_t id = 0;
  int input_tokens = 0;
  int max_tokens = 0;
  int output_tokens = 0;
  bool refused = false;  // the queue was full
  // Since the start; InfiniteDuration() for what never happened.
  absl::Duration arrived = absl::InfiniteDuration();
  absl::Duration admitted = absl::InfiniteDuration();
  absl::Duration first_token = absl::InfiniteDuration();
  absl::Duration finished = absl::InfiniteDuration();

  absl::Duration Ttft() const { return first_token - arrived; }
  absl::Duration Wait() const { return admitted - arrived; }
  friend bool operator==(const RequestRecord&, const RequestRecord&) = default;
};

struct OrgResult {
  std::string name;
  double weight = 1;
  Priority priority = Priority::kInteractive;
  int64_t submitted = 0;  // arrived, refused included
  int64_t refused = 0;
  int64_t admitted = 0;
  int64_t completed = 0;
  int64_t input_tokens = 0;  // charged
  int64_t output_tokens = 0;
  double service = 0;  // w_in * input + w_out * output
  // Per window: service charged in it, and admissions.
  std::vector<double> service_by_window;
  std::vector<int64_t> admitted_by_window;
  // Admissions of this (batch) org while an interactive org was queued.
  int64_t admitted_past_interactive = 0;
  // How long it had requests queued, within [0, duration).
  absl::Duration backlogged = absl::ZeroDuration();
};

// The largest service gap |(S_a - S_a(t0)) / w_a - (S_b - S_b(t0)) / w_b|
// seen between two orgs of the same priority over an interval [t0, t] in
// which both were continuously backlogged (had requests queued), sampled
// after every arrival, admission and engine step. Against it, the bound
//   2 * max(w_in * L_input, w_out * M) / min(w_a, w_b) + in_flight,
// where L_input and M are the largest input and max_tokens the two orgs
// sent, and in_flight is what the slots may still charge that was not yet
// charged: over the interval, the largest Σ w_out * (max_tokens - output so
// far) / w over a's running requests, plus the same for b's (output is
// charged as it streams, after the admission decision).
struct PairGap {
  size_t a = 0;
  size_t b = 0;
  double max_gap = 0;
  double bound_at_max = 0;  // the bound when max_gap was seen
  double worst_ratio = 0;   // max over samples of gap / bound
  int64_t violations = 0;   // samples with gap > bound
  absl::Duration backlogged_together = absl::ZeroDuration();
};

struct FairnessResult {
  std::vector<OrgResult> orgs;
  std::vector<RequestRecord> requests;  // in arrival order
  std::vector<PairGap> gaps;            // every pair of orgs of one priority
  absl::Duration window;
  absl::Duration simulated;  // virtual time at the end
  int64_t engine_steps = 0;
  int64_t engine_tokens = 0;  // output tokens the engine sampled

  // Index of the org named `name`; aborts for an unknown one (a test bug).
  size_t Org(const std::string& name) const;
  // The org's fraction of the service of all orgs in the windows that lie
  // within [from, to).
  double Share(const std::string& name, absl::Duration from, absl::Duration to) const;
  // Its service in those windows.
  double Service(size_t org, absl::Duration from, absl::Duration to) const;
  int64_t Admitted(size_t org, absl::Duration from, absl::Duration to) const;
  // The org's TTFTs / queue waits, over its served requests that arrived in
  // [from, to).
  std::vector<absl::Duration> Ttfts(size_t org, absl::Duration from = absl::ZeroDuration(),
                                    absl::Duration to = absl::InfiniteDuration()) const;
  std::vector<absl::Duration> Waits(size_t org) const;
  const PairGap* Gap(const std::string& a, const std::string& b) const;
};

FairnessResult RunFairnessSim(const FairnessScenario& scenario);

// The p-th percentile (0..100, nearest rank) of `values`; 0 when empty.
absl::Duration Percentile(std::vector<absl::Duration> values, double p);
// Jain's fairness index (Σx)² / (n Σx²) of `x`: 1 when all equal, 1/n when
// one has everything; 1 for an empty list.
double JainIndex(const std::vector<double>& x);

}  // namespace sb::scheduler
