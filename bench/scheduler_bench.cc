// The cost of one admission decision in the fair queue (issue 9): a Pop
// (pick the backlogged org with the smallest counter, charge it) and the
// Push that refills it, with 10,000 requests queued across N orgs; and the
// whole decision the scheduler makes when a slot frees (Dispatch: Peek, the
// worker by route score among 8 with cached prefixes, Pop), timed one by one
// for p50/p99.
//
//   ninja -C build scheduler_bench && build/bench/scheduler_bench
//   build/bench/scheduler_bench --percentiles   # the p50/p99 table only
#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "tenant-scheduler/fair_queue.h"
#include "tenant-scheduler/worker_registry.h"

namespace sb::scheduler {
namespace {

constexpr int kQueued = 10000;

// Queues kQueued requests spread over `orgs`; returns the next free id.
uint64_t Fill(FairQueue& q, int orgs) {
  uint64_t id = 0;
  for (int i = 0; i < kQueued; ++i) {
    (void)q.Push({.id = id++,
                  .org = "org-" + std::to_string(i % orgs),
                  .input_tokens = 100,
                  .max_tokens = 200});
  }
  return id;
}

void BM_FairQueueAdmit(benchmark::State& state) {
  const int orgs = static_cast<int>(state.range(0));
  FairQueue q({.max_queued = kQueued + 1});
  uint64_t id = Fill(q, orgs);
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

// One Dispatch decision at a time, each timed: Peek the next request, pick
// its worker (8 workers, each reporting 256 cached prefix hashes; the
// request has 64), Pop it; then the bookkeeping that frees the slot and
// refills the queue (not timed).
void Percentiles(int orgs) {
  constexpr int kDecisions = 200000;
  FairQueue q({.max_queued = kQueued + 1});
  WorkerRegistry registry(absl::Hours(1));
  const absl::Time now = absl::Now();
  for (int w = 0; w < 8; ++w) {
    const std::string id = "w" + std::to_string(w);
    (void)registry.Register(id, "a:1", {"m"}, 1 << 20, now, "", "s" + id);
    ReportedLoad load{.running = 10,
                      .waiting = 2,
                      .kv_blocks_total = 1000,
                      .kv_blocks_free = 400,
                      .kv_cache_usage = 0.6};
    for (uint64_t h = 0; h < 256; ++h) load.cached_prefixes.push_back(h * 7919 + w);
    registry.Heartbeat(id, 10, now, "s" + id, std::move(load));
  }
  std::vector<uint64_t> prefix;
  for (uint64_t h = 0; h < 64; ++h) prefix.push_back(h * 7919 + 3);
  uint64_t id = Fill(q, orgs);
  std::vector<double> ns;
  ns.reserve(kDecisions);
  for (int i = 0; i < kDecisions; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    auto next = q.Peek();
    auto pick = registry.Acquire("m", now, nullptr, prefix);
    auto r = q.Pop();
    const auto t1 = std::chrono::steady_clock::now();
    benchmark::DoNotOptimize(next);
    ns.push_back(std::chrono::duration<double, std::nano>(t1 - t0).count());
    registry.Release(pick->worker_id);
    q.ChargeOutput(r->org, r->priority, 50);
    q.Finished(r->org, r->priority);
    r->id = id++;
    (void)q.Push(*r);
  }
  std::sort(ns.begin(), ns.end());
  std::printf("| %d | %.2f | %.2f | %.2f |\n", orgs, ns[ns.size() / 2] / 1000,
              ns[ns.size() * 99 / 100] / 1000, ns[ns.size() * 999 / 1000] / 1000);
}

}  // namespace
}  // namespace sb::scheduler

int main(int argc, char** argv) {
  std::printf(
      "\nOne dispatch decision with 10,000 queued (200,000 decisions, each timed)\n\n"
      "| orgs | p50 µs | p99 µs | p99.9 µs |\n|---|---|---|---|\n");
  for (int orgs : {10, 1000, 10000}) sb::scheduler::Percentiles(orgs);
  if (argc > 1 && std::strcmp(argv[1], "--percentiles") == 0) return 0;
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  return 0;
}
