// The fair queue in front of a model's capacity: weighted Virtual Token
// Counter (Sheng et al., "Fairness in Serving Large Language Models", OSDI
// 2024), per priority.
//
// Each org has a counter per priority, charged w_in per input token when
// one of its requests is admitted and w_out per output token as they are
// served, divided by the org's weight. Pop() serves interactive requests
// before batch ones; within a priority, the backlogged org with the
// smallest counter (and room under its concurrency cap) goes next, its
// requests in arrival order. An org that becomes backlogged again has its
// counter lifted to the smallest counter among the backlogged (ahead of
// the orgs with that same counter: it has banked nothing, and it is the one
// waiting for its first service) (or, when
// nobody is, to the counter of the org served last), so idle time banks no
// credit. Over any interval in which two orgs are both backlogged, their
// weighted service differs by at most about 2 * max(w_in * L_input,
// w_out * M) plus what is in flight.
//
// Not thread-safe: the scheduler holds its own lock around it. No clock
// inside: arrival times are passed in.
#pragma once

#include <cstdint>
#include <deque>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <tuple>
#include <unordered_map>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"

namespace sb::scheduler {

enum class Priority { kInteractive = 0, kBatch = 1 };
inline constexpr int kPriorities = 2;

struct QueuedRequest {
  uint64_t id = 0;
  std::string org;
  Priority priority = Priority::kInteractive;
  int input_tokens = 0;
  int max_tokens = 0;
  absl::Time enqueued;
};

class FairQueue {
 public:
  struct Options {
    double w_in = 1;
    double w_out = 2;
    size_t max_queued = 10000;  // per priority; Push refuses beyond it
  };
  explicit FairQueue(Options options);
  FairQueue() : FairQueue(Options{}) {}

  // Weight (default 1; must be > 0) and concurrency cap (0: none) of an org.
  void SetWeight(const std::string& org, double weight);
  void SetConcurrencyCap(const std::string& org, int cap);

  // An org whose queue was empty is lifted to the backlogged minimum (see
  // above); one under its share of the slots (UnderShare, at the capacity
  // last set) is also lowered to it: what its few running requests were
  // charged does not hold its next one behind an org that holds more
  // slots. That is bounded: it can hold no more than its share that way.
  // ResourceExhausted when the priority's queue is full and the org already
  // holds the most requests in it; when another org holds more, that org's
  // newest request makes room instead (its id in `*evicted`): a flood can
  // fill the queue, but not crowd a light org out of it. InvalidArgument
  // for a duplicate id.
  absl::Status Push(QueuedRequest request, std::optional<uint64_t>* evicted = nullptr);
  // The next request to serve, charged its input tokens; nullopt when
  // nothing queued may run (empty, or every backlogged org at its cap).
  std::optional<QueuedRequest> Pop();
  // The request Pop() would return, without taking it (null: none).
  const QueuedRequest* Peek() const;
  // Whether a request of `org` may start now without queueing: it has room
  // under its concurrency cap. Then AdmitDirect counts it in service and
  // charges its input, as Pop() does for a queued one.
  bool UnderCap(const std::string& org, Priority priority) const;
  void AdmitDirect(const std::string& org, Priority priority, int input_tokens);
  // Output tokens served to a request of `org` (charged as they come).
  void ChargeOutput(const std::string& org, Priority priority, int tokens);
  // A correction of the input charged at admission (an estimate) once the
  // worker has counted it; may be negative.
  void ChargeInput(const std::string& org, Priority priority, int tokens);
  // A popped request ended: its slot under the org's cap is free again.
  void Finished(const std::string& org, Priority priority);
  // A queued request left before it was served (cancelled, deadline).
  bool Remove(uint64_t id);

  size_t queued(Priority priority) const { return lanes_[Index(priority)].queued; }
  // Input + max output tokens of the queued requests of `priority`.
  int64_t queued_tokens(Priority priority) const { return lanes_[Index(priority)].queued_tokens; }
  // The tokens served before a new request of `org` carrying `tokens`
  // (input + max output) would be, in the fair order: its org's queued
  // tokens and its own, and of every other backlogged org of the priority
  // as much as it gets meanwhile at its weight (never more than it has
  // queued); a batch request also waits for every interactive one. The
  // admission estimate's numerator.
  int64_t TokensAhead(const std::string& org, Priority priority, int64_t tokens) const;
  // Whether `org` holds less than its share of a model's `capacity` slots:
  // it holds none, or another org has requests queued or in service (any
  // priority) and after taking one more slot it holds at most its weighted
  // share among those orgs and itself. Such an org may take one of the
  // slots the scheduler keeps back (--reserved_slots), which an org alone,
  // or over its share, may not; and when it becomes backlogged again its
  // counter goes to the backlogged minimum even from above (see Push).
  bool UnderShare(const std::string& org, int capacity) const;
  // The model's slots as last seen (0: unknown, and no org counts as
  // under its share in Push).
  void SetCapacity(int slots) { capacity_ = slots; }
  // The org's counter (weighted tokens) in `priority`; 0 for an unknown org.
  double counter(const std::string& org, Priority priority) const;
  int in_service(const std::string& org, Priority priority) const;
  double Weight(const std::string& org) const;

  struct OrgView {
    std::string org;
    double counter = 0;
    int queued = 0;
    int in_service = 0;
    int64_t input_served = 0;  // tokens charged, as counted (unweighted)
    int64_t output_served = 0;
  };
  // Every org the priority's lane has seen.
  std::vector<OrgView> Orgs(Priority priority) const;

 private:
  struct OrgState {
    double counter = 0;
    std::deque<QueuedRequest> queue;
    int in_service = 0;
    int64_t input_served = 0;
    int64_t output_served = 0;
    int64_t queued_tokens = 0;
    uint64_t since = 0;  // when it last became backlogged (the lane's count)
  };
  // Order among the backlogged: the smallest counter first, and among
  // equal counters the most recently backlogged.
  using Key = std::tuple<double, int64_t, std::string>;
  static Key KeyOf(const std::string& org, const OrgState& s) {
    return {s.counter, -static_cast<int64_t>(s.since), org};
  }
  struct Lane {
    std::unordered_map<std::string, OrgState> orgs;
    // Backlogged orgs by (counter, org): the smallest first.
    std::set<Key> backlogged;
    uint64_t backlogs = 0;   // times an org became backlogged
    double last_served = 0;  // the counter of the org popped last
    size_t queued = 0;
    int64_t queued_tokens = 0;
  };
  static int Index(Priority p) { return static_cast<int>(p); }
  int Cap(const std::string& org) const;
  // The lane and org Pop() serves next, if any.
  std::optional<std::pair<int, std::string>> Next() const;
  // Adds `amount` to the org's counter, keeping `backlogged` ordered.
  void Charge(Lane& lane, const std::string& org, double amount);
  // An org's requests queued or in service (any priority) changed by
  // `delta`; keeps active_ and active_weight_.
  void Activity(const std::string& org, int delta);

  Options options_;
  Lane lanes_[kPriorities];
  std::unordered_map<std::string, double> weights_;
  std::unordered_map<std::string, int> caps_;
  // Orgs with requests queued or in service: how many, and their weights'
  // sum (for UnderShare without a pass over every org).
  std::unordered_map<std::string, int> active_;
  double active_weight_ = 0;
  int capacity_ = 0;
  // Where each queued request is: id -> (priority, org).
  std::unordered_map<uint64_t, std::pair<Priority, std::string>> where_;
};

}  // namespace sb::scheduler
