// One served model on its GPUs, scheduled the way vLLM's v1 engine does it.
//
// Each step:
//  1. requests cancelled since the last step finish as "cancelled";
//  2. running sequences are scheduled first, in the order they started, each
//     for the tokens it still needs (1 for a decode; the rest of its prompt,
//     chunked, for a prefill), within `max_num_batched_tokens`. When the KV
//     cache has no block for one, the running sequence with the lowest
//     priority (the latest arrival among equals) is preempted: its blocks are
//     freed and it goes back to the front of the queue, to be recomputed
//     later (prompt and the output so far, which it does not emit again);
//  3. if nobody was preempted, waiting requests join while the budget, the
//     KV cache and `max_num_seqs` allow. A joining request first takes the
//     cached blocks its prefix hashes to, and computes only the rest;
//     (reported as cache_read_tokens; the full blocks it computes up to its
//     last cache breakpoint as cache_creation_tokens);
//  4. the step takes CostModel::StepTime of what was scheduled; at its end
//     every sequence that reached the end of its known tokens samples one
//     more (the reply is ReplyTokens(), fixed per request), and full blocks
//     join the prefix cache.
//
// Observers are called with no lock held, in order, from the stepping
// thread; they may call Submit() and Cancel().
#pragma once

#include <atomic>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "core/metrics.h"
#include "inference-worker/engine.h"
#include "inference-worker/sim/clock.h"
#include "inference-worker/sim/cost_model.h"
#include "inference-worker/sim/kv_cache.h"

namespace sb::worker::sim {

struct SchedulerOptions {
  // A floor on every step's time (0: the cost model's alone): paces the
  // simulation below the GPU's speed, for tests and demos.
  absl::Duration min_step_time = absl::ZeroDuration();
  int max_num_seqs = 256;
  int max_num_batched_tokens = 8192;
  size_t max_waiting = 1024;
  bool enable_prefix_caching = true;
};

// What one sequence got in a step.
struct ScheduledWork {
  uint64_t id = 0;
  int tokens = 0;   // computed this step
  int context = 0;  // already in its KV cache
  bool decode = false;
};

struct StepResult {
  std::string model;  // empty when nothing ran
  absl::Time start;
  absl::Duration duration;
  int tokens_emitted = 0;  // output tokens sampled
  int prefill_tokens = 0;
  int decode_tokens = 0;
  std::vector<ScheduledWork> scheduled;  // in scheduling order
  std::vector<uint64_t> preempted;       // request ids, in order
};

struct ReplicaStats {
  int running = 0;
  int waiting = 0;
  int64_t blocks_total = 0;
  int64_t blocks_free = 0;  // cached blocks nobody holds count as free
  int64_t blocks_cached = 0;
  int64_t blocks_in_use = 0;
  int64_t tokens_stored = 0;  // KV entries the running sequences hold
  int64_t preemptions = 0;
};

class Replica {
 public:
  Replica(CostModel cost, int64_t kv_blocks, SchedulerOptions options, StepClock& clock);
  ~Replica();

  const std::string& model() const { return cost_.deployment().served_name; }
  const CostModel& cost() const { return cost_; }

  // `prompt` is request.Flatten(); `reply` the tokens it will produce.
  // ResourceExhausted when the queue is full, InvalidArgument when it could
  // never fit in the KV cache.
  absl::Status Submit(EngineRequest request, std::shared_ptr<TokenObserver> observer,
                      std::string_view prompt, std::vector<std::string> reply);
  // Every live sequence with this id finishes "cancelled" at the next step.
  void Cancel(uint64_t id);

  bool HasWork() const;
  // Plans a step starting now unless one is planned or there is nothing to
  // run; returns when the planned step ends (nullopt: none).
  std::optional<absl::Time> Plan();
  // Completes the planned step (at its end time) and tells the observers.
  StepResult Apply();
  // Plan, let the step's time pass on the clock, Apply.
  StepResult RunStep();
  // Drops a planned step and finishes everything as "cancelled".
  void CancelAll();

  ReplicaStats Stats() const;
  std::vector<uint64_t> CachedPrefixes(size_t limit) const;

 private:
  struct Sequence;
  struct Event {
    std::shared_ptr<TokenObserver> observer;
    std::string text;
    int tokens = 0;
    std::optional<FinishInfo> finish;
  };
  struct Planned {
    absl::Time start;
    absl::Duration duration;
    std::vector<std::pair<Sequence*, int>> work;
    std::vector<uint64_t> preempted;
  };
  struct Metrics {
    explicit Metrics(const std::string& model);
    metrics::Gauge& running;
    metrics::Gauge& waiting;
    metrics::Gauge& kv_usage;
    metrics::Counter& prefix_queries;
    metrics::Counter& prefix_hits;
    metrics::Counter& preemptions;
    metrics::Counter& prompt_tokens;
    metrics::Counter& generation_tokens;
    metrics::Counter& tokens_generated;  // sb_worker_tokens_generated_total
    metrics::Histogram& ttft;
    metrics::Histogram& itl;
    metrics::Histogram& e2e;
    metrics::Histogram& queue_time;
  };

  bool Reserve(Sequence& s, int tokens);  // blocks for `tokens` KV entries
  void ReleaseBlocks(Sequence& s);
  void CacheFullBlocks(Sequence& s);
  void Preempt(Sequence* victim);
  // Orders sequences from the most deserving (higher priority, then earlier
  // arrival) to the least.
  static bool LessDeserving(const Sequence* a, const Sequence* b);
  void Sample(Sequence& s, absl::Time at, std::vector<Event>& events);
  void Finish(Sequence* s, std::string reason, absl::Time at, std::vector<Event>& events);
  // What the sequence read from and wrote to the prefix cache, in `info`.
  void CacheUsage(const Sequence& s, FinishInfo& info) const;
  void UpdateGauges();
  static void Deliver(std::vector<Event>& events);

  CostModel cost_;
  SchedulerOptions options_;
  StepClock& clock_;
  Metrics metrics_;

  std::mutex step_mu_;  // one step at a time, observers included
  std::atomic<int> cancel_waiters_{0};  // CancelAll calls waiting for step_mu_
  mutable std::mutex mu_;
  KvCache kv_;
  std::unordered_map<Sequence*, std::unique_ptr<Sequence>> live_;
  std::vector<Sequence*> running_;  // in the order they were scheduled
  std::deque<Sequence*> waiting_;   // by priority, then arrival
  std::optional<Planned> planned_;
  // When the last step ended, while the replica stays busy (InfinitePast
  // once it has nothing to do): the next step starts there, so that the
  // time spent delivering a step's tokens overlaps the next step, as an
  // engine's output processing overlaps the GPU's next step (vLLM's async
  // output processing), instead of adding to every step.
  absl::Time busy_until_ = absl::InfinitePast();
  uint64_t next_arrival_ = 0;
  int64_t preemptions_ = 0;
};

}  // namespace sb::worker::sim
