#include "tenant-scheduler/router.h"

#include <algorithm>

namespace sb::scheduler {

double PrefixAffinity(const std::vector<uint64_t>& prefix,
                      const std::unordered_set<uint64_t>& cached) {
  if (prefix.empty()) return 0;
  size_t matched = 0;
  while (matched < prefix.size() && cached.count(prefix[matched])) ++matched;
  return static_cast<double>(matched) / static_cast<double>(prefix.size());
}

double RouteScore(const WorkerState& w, const std::vector<uint64_t>& prefix,
                  const RouterWeights& weights) {
  const double capacity = std::max(1, w.max_concurrency > 0 ? w.max_concurrency : 64);
  const double queue = (w.in_flight + w.load.foreign_in_flight + w.load.waiting) / capacity;
  const double kv = w.load.kv_blocks_total > 0 ? std::clamp(w.load.kv_cache_usage, 0.0, 1.0) : 0;
  double affinity = 0;
  if (!prefix.empty() && !w.cached.empty()) affinity = PrefixAffinity(prefix, w.cached);
  return weights.queue * queue + weights.kv * kv - weights.affinity * affinity;
}

}  // namespace sb::scheduler
