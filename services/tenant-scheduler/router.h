// Which worker a request goes to, among the live ones serving its model that
// have room: the llm-d endpoint picker's idea on what workers report with
// their heartbeats. A lower score is better:
//
//   queue    (requests routed here and not finished + the engine's waiting)
//            over the worker's capacity;
//   kv       the engine's KV cache in use (0..1; 0 when unknown);
//   affinity the share of the request's prefix blocks, from the start, the
//            worker has cached (prefix hashes, sim/kv_cache.h).
//
//   score = queue_weight * queue + kv_weight * kv - affinity_weight * affinity
//
// A full worker is never a candidate, so a shared prefix concentrates load
// only until that worker is full.
#pragma once

#include <cstdint>
#include <unordered_set>
#include <vector>

#include "tenant-scheduler/worker_registry.h"

namespace sb::scheduler {

struct RouterWeights {
  double queue = 1;
  double kv = 0.5;
  double affinity = 1;
};

// The share (0..1) of `prefix` (hashes in prompt order) found, from the
// start, in `cached`.
double PrefixAffinity(const std::vector<uint64_t>& prefix,
                      const std::unordered_set<uint64_t>& cached);

double RouteScore(const WorkerState& w, const std::vector<uint64_t>& prefix,
                  const RouterWeights& weights);

}  // namespace sb::scheduler
