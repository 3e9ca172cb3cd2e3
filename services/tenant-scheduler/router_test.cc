#include "tenant-scheduler/router.h"

#include "gtest/gtest.h"

namespace sb::scheduler {
namespace {

const absl::Time kT0 = absl::FromUnixSeconds(1'800'000'000);

TEST(RouterTest, PrefixAffinityCountsMatchedBlocksFromTheStart) {
  EXPECT_DOUBLE_EQ(PrefixAffinity({1, 2, 3, 4}, {1, 2, 3, 4}), 1.0);
  EXPECT_DOUBLE_EQ(PrefixAffinity({1, 2, 3, 4}, {1, 2}), 0.5);
  EXPECT_DOUBLE_EQ(PrefixAffinity({1, 2, 3, 4}, {2, 3, 4}), 0.0)
      << "a block counts after its parents";
  EXPECT_DOUBLE_EQ(PrefixAffinity({}, {1}), 0.0);
}

TEST(RouterTest, LessQueueLessKvAndMoreAffinityScoreBetter) {
  WorkerState idle{.max_concurrency = 10};
  WorkerState busy{.max_concurrency = 10, .in_flight = 5};
  EXPECT_LT(RouteScore(idle, {}, {}), RouteScore(busy, {}, {}));
  WorkerState full_kv = idle;
  full_kv.load = {.kv_blocks_total = 100, .kv_blocks_free = 10, .kv_cache_usage = 0.9};
  EXPECT_LT(RouteScore(idle, {}, {}), RouteScore(full_kv, {}, {}));
  WorkerState cached = busy;
  cached.cached = {7, 8, 9};
  EXPECT_LT(RouteScore(cached, {7, 8, 9}, {}), RouteScore(idle, {7, 8, 9}, {}))
      << "a whole cached prefix outweighs half a queue";
}

// Requests sharing a prompt prefix go to the worker that has it cached,
// until that worker is full: then load spreads.
TEST(RouterTest, ASharedPrefixLandsOnItsWorkerUntilThatWorkerIsFull) {
  WorkerRegistry r(absl::Seconds(3));
  ASSERT_TRUE(r.Register("w1", "a:1", {"m"}, 2, kT0, "", "s").ok());
  ASSERT_TRUE(r.Register("w2", "a:2", {"m"}, 2, kT0, "", "s").ok());
  ASSERT_EQ(r.Heartbeat("w2", 0, kT0, "s", {.cached_prefixes = {11, 12, 13}}),
            WorkerRegistry::Beat::kOk);
  const std::vector<uint64_t> prefix = {11, 12, 13, 14};
  EXPECT_EQ(r.Acquire("m", kT0, nullptr, prefix)->worker_id, "w2");
  EXPECT_EQ(r.Acquire("m", kT0, nullptr, prefix)->worker_id, "w2");
  EXPECT_EQ(r.Acquire("m", kT0, nullptr, prefix)->worker_id, "w1") << "w2 is full";
  EXPECT_EQ(r.Acquire("m", kT0, nullptr, {})->worker_id, "w1");
}

}  // namespace
}  // namespace sb::scheduler
