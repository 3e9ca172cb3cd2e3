// The cost of one admission decision in the fair queue (issue 9): a Pop
// (pick the backlogged org with the smallest counter, charge it) and the
// Push that refills it, with 10,000 requests queued across N orgs.
//
//   ninja -C build scheduler_bench && build/bench/scheduler_bench
#include <benchmark/benchmark.h>

#include <string>

#include "tenant-scheduler/fair_queue.h"

namespace sb::scheduler {
namespace {

void BM_FairQueueAdmit(benchmark::State& state) {
  const int orgs = static_cast<int>(state.range(0));
  constexpr int kQueued = 10000;
  FairQueue q({.max_queued = kQueued + 1});
  uint64_t id = 0;
  for (int i = 0; i < kQueued; ++i) {
    (void)q.Push({.id = id++,
                  .org = "org-" + std::to_string(i % orgs),
                  .input_tokens = 100,
                  .max_tokens = 200});
  }
  for (auto _ : state) {
    auto r = q.Pop();
    q.ChargeOutput(r->org, r->priority, 50);
    q.Finished(r->org, r->priority);
    r->id = id++;
    benchmark::DoNotOptimize(q.Push(*r));
  }
  state.counters["queued"] = static_cast<double>(q.queued(Priority::kInteractive));
}
BENCHMARK(BM_FairQueueAdmit)->Arg(10)->Arg(1000)->Arg(10000);

}  // namespace
}  // namespace sb::scheduler

BENCHMARK_MAIN();
