#include "tenant-scheduler/fairness_sim.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <queue>
#include <random>

#include "core/hash.h"
#include "inference-worker/sim_engine.h"

namespace sb::scheduler {
namespace {

uint64_t SplitMix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// Draws from mt19937_64's specified output rather than the standard
// distributions, whose algorithms differ between standard libraries: the
// same seed gives the same workload everywhere.
class Draws {
 public:
  explicit Draws(uint64_t seed) : rng_(seed) {}
  int Uniform(TokenRange r) {
    const int lo = std::min(r.lo, r.hi);
    const int hi = std::max(r.lo, r.hi);
    return lo + static_cast<int>(rng_() % static_cast<uint64_t>(hi - lo + 1));
  }
  // Exponential with mean 1 / rate, in seconds.
  double Exponential(double rate) {
    const double u = static_cast<double>(rng_() >> 11) * 0x1.0p-53;  // [0, 1)
    return -std::log1p(-u) / rate;
  }

 private:
  std::mt19937_64 rng_;
};

// Two fixed tokens ("user", ":") come with the message.
constexpr int kPromptOverhead = 2;

class Simulation;

class Observer final : public worker::TokenObserver {
 public:
  Observer(Simulation* sim, uint64_t id) : sim_(sim), id_(id) {}
  void OnToken(std::string_view text, int tokens) override;
  void OnFinished(const worker::FinishInfo& info) override;

 private:
  Simulation* sim_;
  uint64_t id_;
};

class Simulation {
 public:
  explicit Simulation(const FairnessScenario& s)
      : s_(s), queue_(s.queue), slots_(s.slots > 0 ? s.slots : s.max_num_seqs) {
    result_.window = s.window;
    queue_.SetCapacity(slots_);
    for (size_t i = 0; i < s.orgs.size(); ++i) {
      const OrgSpec& spec = s.orgs[i];
      queue_.SetWeight(spec.name, spec.weight);
      if (spec.concurrency_cap > 0) queue_.SetConcurrencyCap(spec.name, spec.concurrency_cap);
      result_.orgs.push_back({.name = spec.name, .weight = spec.weight, .priority = spec.priority});
      orgs_.push_back(OrgState{Draws(SplitMix64(s.seed ^ Fnv1a(spec.name)))});
    }
    for (size_t a = 0; a < s.orgs.size(); ++a) {
      for (size_t b = a + 1; b < s.orgs.size(); ++b) {
        if (s.orgs[a].priority == s.orgs[b].priority) pairs_.push_back({.gap = {.a = a, .b = b}});
      }
    }
    engine_ = std::make_unique<worker::SimulatedEngine>(
        worker::SimOptions{
            .models = {s.model},
            .max_num_seqs = s.max_num_seqs,
            .max_waiting = static_cast<size_t>(std::max(0, slots_ - s.max_num_seqs))},
        /*run_thread=*/false);
  }

  FairnessResult Run() {
    ScheduleArrivals();
    while (true) {
      const absl::Duration now = Now();
      if (!s_.drain && now >= s_.duration) break;
      SampleBacklog();
      while (!events_.empty() && events_.top().at <= now) {
        const Arrival a = events_.top();
        events_.pop();
        Arrive(a);
      }
      Dispatch();
      SampleGaps();
      if (engine_->HasWork()) {
        const worker::sim::StepResult step = engine_->Step();
        result_.engine_steps += 1;
        result_.engine_tokens += step.tokens_emitted;
        continue;
      }
      if (events_.empty()) break;
      // Idle: jump to the next arrival (see the header on time).
      idle_offset_ += events_.top().at - now;
    }
    stopped_ = true;
    result_.simulated = Now();
    for (PairRun& p : pairs_) result_.gaps.push_back(p.gap);
    return std::move(result_);
  }

  void OnToken(uint64_t id, int tokens) {
    if (stopped_ || tokens <= 0) return;
    RequestRecord& r = result_.requests[id];
    const OrgSpec& spec = s_.orgs[r.org];
    const absl::Duration now = Now();
    if (r.output_tokens == 0) r.first_token = now;
    r.output_tokens += tokens;
    queue_.ChargeOutput(spec.name, spec.priority, tokens);
    OrgState& o = orgs_[r.org];
    o.outstanding -= tokens;
    result_.orgs[r.org].output_tokens += tokens;
    AddService(r.org, s_.queue.w_out * tokens, now);
  }

  void OnFinished(uint64_t id, const worker::FinishInfo& info) {
    if (stopped_) return;
    RequestRecord& r = result_.requests[id];
    const OrgSpec& spec = s_.orgs[r.org];
    const absl::Duration now = Now();
    r.finished = now;
    queue_.Finished(spec.name, spec.priority);
    OrgState& o = orgs_[r.org];
    o.outstanding -= r.max_tokens - r.output_tokens;
    o.running -= 1;
    running_ -= 1;
    if (info.stop_reason != "cancelled" && info.stop_reason != "error") {
      result_.orgs[r.org].completed += 1;
    }
    if (std::holds_alternative<ClosedLoop>(spec.arrivals) && now < Stop(spec)) {
      Push(r.org, now);
    }
  }

 private:
  struct Arrival {
    absl::Duration at;
    uint64_t seq = 0;  // ties in order of scheduling
    size_t org = 0;
    int input_tokens = 0;
    int max_tokens = 0;
  };
  struct Later {
    bool operator()(const Arrival& x, const Arrival& y) const {
      return x.at != y.at ? x.at > y.at : x.seq > y.seq;
    }
  };
  struct OrgState {
    Draws draws;
    int queued = 0;
    int running = 0;
    int64_t outstanding = 0;  // Σ max_tokens - output of the running
    double service = 0;
    int max_input = 0;
    int max_tokens = 0;
  };
  struct PairRun {
    PairGap gap;
    bool together = false;
    double base_a = 0;
    double base_b = 0;
    double in_flight_a = 0;
    double in_flight_b = 0;
    absl::Duration since;
  };

  absl::Duration Now() const { return engine_->Now() - absl::UnixEpoch() + idle_offset_; }
  absl::Duration Stop(const OrgSpec& spec) const { return std::min(spec.stop, s_.duration); }

  // A new arrival of `org` at `at`, its lengths drawn now.
  void Push(size_t org, absl::Duration at) {
    const OrgSpec& spec = s_.orgs[org];
    Draws& d = orgs_[org].draws;
    const int input = std::max(kPromptOverhead + 1, d.Uniform(spec.input_tokens));
    const int max_tokens = std::max(1, d.Uniform(spec.max_tokens));
    events_.push({.at = at,
                  .seq = next_seq_++,
                  .org = org,
                  .input_tokens = input,
                  .max_tokens = max_tokens});
  }

  // Open-loop arrivals are drawn up front (per org, so that an org's
  // workload does not depend on who else sends); closed loops start full.
  void ScheduleArrivals() {
    for (size_t i = 0; i < s_.orgs.size(); ++i) {
      const OrgSpec& spec = s_.orgs[i];
      const absl::Duration stop = Stop(spec);
      if (const auto* c = std::get_if<ClosedLoop>(&spec.arrivals)) {
        if (spec.start < stop) {
          for (int k = 0; k < c->depth; ++k) Push(i, spec.start);
        }
      } else if (const auto* p = std::get_if<Poisson>(&spec.arrivals)) {
        if (p->rate <= 0) continue;
        for (absl::Duration t = spec.start + absl::Seconds(orgs_[i].draws.Exponential(p->rate));
             t < stop; t += absl::Seconds(orgs_[i].draws.Exponential(p->rate))) {
          Push(i, t);
        }
      } else if (const auto* b = std::get_if<Bursts>(&spec.arrivals)) {
        if (b->every <= absl::ZeroDuration()) continue;
        for (absl::Duration t = spec.start; t < stop; t += b->every) {
          for (int k = 0; k < b->size; ++k) Push(i, t);
        }
      }
    }
  }

  void Arrive(const Arrival& a) {
    const OrgSpec& spec = s_.orgs[a.org];
    const uint64_t id = result_.requests.size();
    RequestRecord& r = result_.requests.emplace_back();
    r.org = a.org;
    r.id = id;
    r.input_tokens = a.input_tokens;
    r.max_tokens = a.max_tokens;
    r.arrived = a.at;
    OrgResult& o = result_.orgs[a.org];
    o.submitted += 1;
    std::optional<uint64_t> evicted;
    const absl::Status pushed = queue_.Push({.id = id,
                                             .org = spec.name,
                                             .priority = spec.priority,
                                             .input_tokens = a.input_tokens,
                                             .max_tokens = a.max_tokens,
                                             .enqueued = absl::UnixEpoch() + a.at},
                                            &evicted);
    if (evicted) {
      // Made room: the longest queue's newest request is refused.
      RequestRecord& v = result_.requests[*evicted];
      v.refused = true;
      result_.orgs[v.org].refused += 1;
      orgs_[v.org].queued -= 1;
    }
    if (!pushed.ok()) {
      r.refused = true;
      o.refused += 1;
      return;
    }
    orgs_[a.org].queued += 1;
  }

  bool InteractiveQueued() const {
    for (size_t i = 0; i < orgs_.size(); ++i) {
      if (s_.orgs[i].priority == Priority::kInteractive && orgs_[i].queued > 0) return true;
    }
    return false;
  }

  // Admits from the fair queue while the engine has a free slot.
  void Dispatch() {
    while (running_ < slots_) {
      // As the scheduler does: the last `reserve` slots only for an org under
      // its share.
      const QueuedRequest* next = queue_.Peek();
      if (next == nullptr) return;
      const int reserve = std::min(s_.reserved_slots, slots_ / 8);
      if (running_ >= slots_ - reserve && !queue_.UnderShare(next->org, slots_)) return;
      const bool interactive_queued = InteractiveQueued();
      std::optional<QueuedRequest> q = queue_.Pop();
      if (!q) return;
      RequestRecord& r = result_.requests[q->id];
      const OrgSpec& spec = s_.orgs[r.org];
      const absl::Duration now = Now();
      r.admitted = now;
      OrgState& o = orgs_[r.org];
      o.queued -= 1;
      o.running += 1;
      o.outstanding += r.max_tokens;
      o.max_input = std::max(o.max_input, r.input_tokens);
      o.max_tokens = std::max(o.max_tokens, r.max_tokens);
      running_ += 1;
      OrgResult& res = result_.orgs[r.org];
      res.admitted += 1;
      res.input_tokens += r.input_tokens;
      if (spec.priority == Priority::kBatch && interactive_queued)
        res.admitted_past_interactive += 1;
      const size_t w = Window(now);
      if (res.admitted_by_window.size() <= w) res.admitted_by_window.resize(w + 1);
      res.admitted_by_window[w] += 1;
      AddService(r.org, s_.queue.w_in * r.input_tokens, now);

      worker::EngineRequest e;
      e.id = q->id + 1;
      e.request_id = "fairsim-" + std::to_string(q->id);
      e.model = s_.model;
      // Unique words: no prefix-cache hits, and each prompt its own reply.
      std::string prompt;
      const std::string tag = "r" + std::to_string(q->id) + "w";
      for (int k = 0; k < r.input_tokens - kPromptOverhead; ++k) {
        if (k > 0) prompt += ' ';
        prompt += tag;
        prompt += std::to_string(k);
      }
      e.messages = {{"user", std::move(prompt)}};
      e.input_tokens = r.input_tokens;
      e.max_tokens = r.max_tokens;
      e.priority = spec.priority == Priority::kInteractive ? 1 : 0;  // as ToEngineRequest
      const absl::Status st =
          engine_->Submit(std::move(e), std::make_shared<Observer>(this, q->id));
      if (!st.ok()) {
        // The engine's queue holds what the slots leave and prompts fit:
        // cannot happen.
        std::fprintf(stderr, "fairness sim: the engine refused a request: %s\n",
                     st.ToString().c_str());
        std::abort();
      }
    }
  }

  size_t Window(absl::Duration t) const {
    return static_cast<size_t>(std::max<int64_t>(0, absl::IDivDuration(t, s_.window, &t)));
  }

  void AddService(size_t org, double amount, absl::Duration now) {
    orgs_[org].service += amount;
    OrgResult& res = result_.orgs[org];
    res.service += amount;
    const size_t w = Window(now);
    if (res.service_by_window.size() <= w) res.service_by_window.resize(w + 1);
    res.service_by_window[w] += amount;
  }

  double InFlight(size_t org) const {
    return s_.queue.w_out * static_cast<double>(orgs_[org].outstanding) / s_.orgs[org].weight;
  }

  void SampleBacklog() {
    const absl::Duration now = std::min(Now(), s_.duration);
    for (size_t i = 0; i < orgs_.size(); ++i) {
      if (orgs_[i].queued > 0 && now > last_sample_) {
        result_.orgs[i].backlogged += now - last_sample_;
      }
    }
    last_sample_ = std::max(last_sample_, now);
  }

  void SampleGaps() {
    const absl::Duration now = Now();
    for (PairRun& p : pairs_) {
      const size_t a = p.gap.a;
      const size_t b = p.gap.b;
      const bool together = orgs_[a].queued > 0 && orgs_[b].queued > 0;
      if (!together) {
        p.together = false;
        continue;
      }
      if (!p.together) {
        p.together = true;
        p.since = now;
        p.base_a = orgs_[a].service;
        p.base_b = orgs_[b].service;
        p.in_flight_a = InFlight(a);
        p.in_flight_b = InFlight(b);
      }
      p.gap.backlogged_together += now - p.since;
      p.since = now;
      p.in_flight_a = std::max(p.in_flight_a, InFlight(a));
      p.in_flight_b = std::max(p.in_flight_b, InFlight(b));
      const double wa = s_.orgs[a].weight;
      const double wb = s_.orgs[b].weight;
      const double gap =
          std::abs((orgs_[a].service - p.base_a) / wa - (orgs_[b].service - p.base_b) / wb);
      const double l_input = std::max(orgs_[a].max_input, orgs_[b].max_input);
      const double m = std::max(orgs_[a].max_tokens, orgs_[b].max_tokens);
      const double bound =
          2 * std::max(s_.queue.w_in * l_input, s_.queue.w_out * m) / std::min(wa, wb) +
          p.in_flight_a + p.in_flight_b;
      if (gap > p.gap.max_gap) {
        p.gap.max_gap = gap;
        p.gap.bound_at_max = bound;
      }
      if (bound > 0) p.gap.worst_ratio = std::max(p.gap.worst_ratio, gap / bound);
      if (gap > bound) p.gap.violations += 1;
    }
  }

  const FairnessScenario& s_;
  FairQueue queue_;
  const int slots_;
  FairnessResult result_;
  std::vector<OrgState> orgs_;
  std::vector<PairRun> pairs_;
  std::priority_queue<Arrival, std::vector<Arrival>, Later> events_;
  uint64_t next_seq_ = 0;
  int running_ = 0;
  absl::Duration idle_offset_ = absl::ZeroDuration();
  bool stopped_ = false;
  absl::Duration last_sample_ = absl::ZeroDuration();
  // Last: destroyed first, while what its observers touch still exists
  // (they ignore the cancellations it delivers once stopped_).
  std::unique_ptr<worker::SimulatedEngine> engine_;
};

void Observer::OnToken(std::string_view, int tokens) { sim_->OnToken(id_, tokens); }
void Observer::OnFinished(const worker::FinishInfo& info) { sim_->OnFinished(id_, info); }

bool InWindow(size_t k, absl::Duration window, absl::Duration from, absl::Duration to) {
  const absl::Duration start = window * static_cast<int64_t>(k);
  return start >= from && start + window <= to;
}

}  // namespace

FairnessResult RunFairnessSim(const FairnessScenario& scenario) {
  return Simulation(scenario).Run();
}

size_t FairnessResult::Org(const std::string& name) const {
  for (size_t i = 0; i < orgs.size(); ++i) {
    if (orgs[i].name == name) return i;
  }
  std::fprintf(stderr, "fairness sim: no org %s\n", name.c_str());
  std::abort();
}

double FairnessResult::Service(size_t org, absl::Duration from, absl::Duration to) const {
  double sum = 0;
  const auto& by_window = orgs[org].service_by_window;
  for (size_t k = 0; k < by_window.size(); ++k) {
    if (InWindow(k, window, from, to)) sum += by_window[k];
  }
  return sum;
}

int64_t FairnessResult::Admitted(size_t org, absl::Duration from, absl::Duration to) const {
  int64_t sum = 0;
  const auto& by_window = orgs[org].admitted_by_window;
  for (size_t k = 0; k < by_window.size(); ++k) {
    if (InWindow(k, window, from, to)) sum += by_window[k];
  }
  return sum;
}

double FairnessResult::Share(const std::string& name, absl::Duration from,
                             absl::Duration to) const {
  double total = 0;
  for (size_t i = 0; i < orgs.size(); ++i) total += Service(i, from, to);
  return total > 0 ? Service(Org(name), from, to) / total : 0;
}

std::vector<absl::Duration> FairnessResult::Ttfts(size_t org, absl::Duration from,
                                                  absl::Duration to) const {
  std::vector<absl::Duration> out;
  for (const RequestRecord& r : requests) {
    if (r.org == org && r.arrived >= from && r.arrived < to &&
        r.first_token != absl::InfiniteDuration()) {
      out.push_back(r.Ttft());
    }
  }
  return out;
}

std::vector<absl::Duration> FairnessResult::Waits(size_t org) const {
  std::vector<absl::Duration> out;
  for (const RequestRecord& r : requests) {
    if (r.org == org && r.admitted != absl::InfiniteDuration()) out.push_back(r.Wait());
  }
  return out;
}

const PairGap* FairnessResult::Gap(const std::string& a, const std::string& b) const {
  const size_t ia = Org(a);
  const size_t ib = Org(b);
  for (const PairGap& g : gaps) {
    if ((g.a == ia && g.b == ib) || (g.a == ib && g.b == ia)) return &g;
  }
  return nullptr;
}

absl::Duration Percentile(std::vector<absl::Duration> values, double p) {
  if (values.empty()) return absl::ZeroDuration();
  std::sort(values.begin(), values.end());
  const double rank = std::ceil(p / 100.0 * static_cast<double>(values.size()));
  const size_t i = static_cast<size_t>(std::clamp(rank, 1.0, static_cast<double>(values.size())));
  return values[i - 1];
}

double JainIndex(const std::vector<double>& x) {
  if (x.empty()) return 1;
  double sum = 0;
  double squares = 0;
  for (double v : x) {
    sum += v;
    squares += v * v;
  }
  return squares > 0 ? sum * sum / (static_cast<double>(x.size()) * squares) : 1;
}

}  // namespace sb::scheduler
