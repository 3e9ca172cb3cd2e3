#include "tenant-scheduler/worker_registry.h"

#include "gtest/gtest.h"

namespace sb::scheduler {
namespace {

const absl::Time kT0 = absl::FromUnixSeconds(1'700'000'000);

TEST(WorkerRegistryTest, PicksLeastLoadedLiveWorkerForTheModel) {
  WorkerRegistry r(absl::Seconds(3));
  ASSERT_TRUE(r.Register("w1", "a:1", {"sim-small"}, 8, kT0, "", "s").ok());
  ASSERT_TRUE(r.Register("w2", "a:2", {"sim-small", "sim-large"}, 8, kT0, "", "s").ok());
  auto p1 = r.Acquire("sim-small", kT0);
  auto p2 = r.Acquire("sim-small", kT0);
  ASSERT_TRUE(p1 && p2);
  EXPECT_NE(p1->worker_id, p2->worker_id);  // spread across both
  auto large = r.Acquire("sim-large", kT0);
  ASSERT_TRUE(large);
  EXPECT_EQ(large->worker_id, "w2");
  EXPECT_FALSE(r.Acquire("unknown", kT0));
  EXPECT_FALSE(r.ModelKnown("unknown"));
  EXPECT_TRUE(r.ModelKnown("sim-large"));
}

TEST(WorkerRegistryTest, MissedHeartbeatsMakeAWorkerDeadUntilItRegisters) {
  WorkerRegistry r(absl::Seconds(3));
  ASSERT_TRUE(r.Register("w1", "a:1", {"sim-small"}, 8, kT0, "", "s").ok());
  EXPECT_EQ(r.Heartbeat("w1", 0, kT0 + absl::Seconds(2), "s"), WorkerRegistry::Beat::kOk);
  EXPECT_TRUE(r.Acquire("sim-small", kT0 + absl::Seconds(4)));  // 2 s after the heartbeat
  EXPECT_FALSE(r.Acquire("sim-small", kT0 + absl::Seconds(6)));
  EXPECT_EQ(r.Sweep(kT0 + absl::Seconds(6)), std::vector<std::string>{"w1"});
  EXPECT_TRUE(r.Sweep(kT0 + absl::Seconds(7)).empty());  // reported once
  EXPECT_EQ(r.Heartbeat("w1", 0, kT0 + absl::Seconds(7), "s"),
            WorkerRegistry::Beat::kUnknown);  // must register again
  ASSERT_TRUE(r.Register("w1", "a:1", {"sim-small"}, 8, kT0 + absl::Seconds(8), "", "s").ok());
  EXPECT_TRUE(r.Acquire("sim-small", kT0 + absl::Seconds(8)));
}

TEST(WorkerRegistryTest, AHeartbeatRecordsWhatTheEngineHolds) {
  WorkerRegistry r(absl::Seconds(3));
  ASSERT_TRUE(r.Register("w1", "a:1", {"sim-small"}, 8, kT0, "", "s").ok());
  ReportedLoad load{.running = 3,
                    .waiting = 1,
                    .kv_blocks_total = 1000,
                    .kv_blocks_free = 250,
                    .kv_cache_usage = 0.75,
                    .cached_prefixes = {42, 7}};
  ASSERT_EQ(r.Heartbeat("w1", 4, kT0 + absl::Seconds(1), "s", load), WorkerRegistry::Beat::kOk);
  const auto workers = r.List();
  ASSERT_EQ(workers.size(), 1u);
  EXPECT_EQ(workers[0].load.running, 3);
  EXPECT_EQ(workers[0].load.kv_blocks_free, 250);
  EXPECT_DOUBLE_EQ(workers[0].load.kv_cache_usage, 0.75);
  EXPECT_EQ(workers[0].load.cached_prefixes, (std::vector<uint64_t>{42, 7}));
  // A beat from the wrong session changes nothing.
  EXPECT_EQ(r.Heartbeat("w1", 0, kT0 + absl::Seconds(2), "other", {}),
            WorkerRegistry::Beat::kWrongSession);
  EXPECT_EQ(r.List()[0].load.running, 3);
}

TEST(WorkerRegistryTest, MarkDownStopsRouting) {
  WorkerRegistry r(absl::Seconds(3));
  ASSERT_TRUE(r.Register("w1", "a:1", {"sim-small"}, 8, kT0, "", "s").ok());
  r.MarkDown("w1");
  EXPECT_FALSE(r.Acquire("sim-small", kT0));
  EXPECT_TRUE(r.ModelKnown("sim-small"));  // known model, no live worker: unavailable, not 404
}

TEST(WorkerRegistryTest, ReleaseFreesTheSlot) {
  WorkerRegistry r(absl::Seconds(3));
  ASSERT_TRUE(r.Register("w1", "a:1", {"m"}, 8, kT0, "", "s").ok());
  ASSERT_TRUE(r.Register("w2", "a:2", {"m"}, 8, kT0, "", "s").ok());
  auto p = r.Acquire("m", kT0);
  ASSERT_TRUE(p);
  r.Release(p->worker_id);
  auto q = r.Acquire("m", kT0);
  ASSERT_TRUE(q);
  EXPECT_EQ(q->worker_id, "w1");  // both idle again: ties go to the smaller id
}

TEST(WorkerRegistryTest, AFullWorkerTakesNoMoreAndSaysWhy) {
  WorkerRegistry r(absl::Seconds(3));
  ASSERT_TRUE(r.Register("w1", "a:1", {"m"}, 2, kT0, "", "s").ok());
  ASSERT_TRUE(r.Acquire("m", kT0));
  ASSERT_TRUE(r.Acquire("m", kT0));
  NoPick why;
  EXPECT_FALSE(r.Acquire("m", kT0, &why));
  EXPECT_EQ(why, NoPick::kAllFull);
  EXPECT_TRUE(r.AnyLive("m", kT0)) << "counting tokens needs no slot";
  r.Release("w1");
  EXPECT_TRUE(r.Acquire("m", kT0));
  EXPECT_FALSE(r.Acquire("other", kT0, &why));
  EXPECT_EQ(why, NoPick::kUnknownModel);
  r.MarkDown("w1");
  EXPECT_FALSE(r.Acquire("m", kT0, &why));
  EXPECT_EQ(why, NoPick::kNoLiveWorker);
}

TEST(WorkerRegistryTest, ListsModelsWithFirstSightingAndLiveWorkers) {
  WorkerRegistry r(absl::Seconds(3));
  ASSERT_TRUE(r.Register("w1", "a:1", {"b-model", "a-model"}, 0, kT0, "", "s").ok());
  ASSERT_TRUE(r.Register("w2", "a:2", {"a-model"}, 0, kT0 + absl::Seconds(1), "", "s").ok());
  r.MarkDown("w1");
  auto models = r.ListModels(kT0 + absl::Seconds(1));
  ASSERT_EQ(models.size(), 2u);
  EXPECT_EQ(models[0].id, "a-model");
  EXPECT_EQ(models[0].first_seen, kT0);
  EXPECT_EQ(models[0].live_workers, 1);
  EXPECT_EQ(models[1].id, "b-model");
  EXPECT_EQ(models[1].live_workers, 0);
}

// A live worker's id cannot be taken: another registration (without the
// session) is refused and its heartbeats change nothing; the holder renews
// with its session; once the holder is dead, the id is free again.
TEST(WorkerRegistryTest, ALiveWorkersIdCannotBeTakenOver) {
  WorkerRegistry r(absl::Seconds(5));
  auto mine = r.Register("w1", "10.0.0.1:1", {"m"}, 8, kT0, "", "s-real");
  ASSERT_TRUE(mine.ok());
  EXPECT_EQ(*mine, "s-real");
  auto thief = r.Register("w1", "6.6.6.6:1", {"m"}, 8, kT0 + absl::Seconds(1), "", "s-thief");
  EXPECT_EQ(thief.status().code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(r.Heartbeat("w1", 0, kT0 + absl::Seconds(1), "guess"),
            WorkerRegistry::Beat::kWrongSession);
  auto pick = r.Acquire("m", kT0 + absl::Seconds(1));
  ASSERT_TRUE(pick.has_value());
  EXPECT_EQ(pick->address, "10.0.0.1:1") << "traffic still goes to the real worker";
  r.Release(pick->worker_id);

  auto renewed = r.Register("w1", "10.0.0.1:1", {"m"}, 8, kT0 + absl::Seconds(2), "s-real", "x");
  ASSERT_TRUE(renewed.ok());
  EXPECT_EQ(*renewed, "s-real");
  EXPECT_EQ(r.Heartbeat("w1", 0, kT0 + absl::Seconds(3), "s-real"), WorkerRegistry::Beat::kOk);

  // The holder dies (no heartbeat for the TTL): the id is free.
  auto next = r.Register("w1", "10.0.0.2:1", {"m"}, 8, kT0 + absl::Seconds(9), "", "s-next");
  ASSERT_TRUE(next.ok());
  EXPECT_EQ(*next, "s-next");
}

}  // namespace
}  // namespace sb::scheduler
