#include "tenant-scheduler/worker_registry.h"

#include "gtest/gtest.h"

namespace sb::scheduler {
namespace {

const absl::Time kT0 = absl::FromUnixSeconds(1'700'000'000);

TEST(WorkerRegistryTest, PicksLeastLoadedLiveWorkerForTheModel) {
  WorkerRegistry r(absl::Seconds(3));
  r.Register("w1", "a:1", {"sim-small"}, 8, kT0);
  r.Register("w2", "a:2", {"sim-small", "sim-large"}, 8, kT0);
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
  r.Register("w1", "a:1", {"sim-small"}, 8, kT0);
  EXPECT_TRUE(r.Heartbeat("w1", 0, kT0 + absl::Seconds(2)));
  EXPECT_TRUE(r.Acquire("sim-small", kT0 + absl::Seconds(4)));  // 2 s after the heartbeat
  EXPECT_FALSE(r.Acquire("sim-small", kT0 + absl::Seconds(6)));
  EXPECT_EQ(r.Sweep(kT0 + absl::Seconds(6)), std::vector<std::string>{"w1"});
  EXPECT_TRUE(r.Sweep(kT0 + absl::Seconds(7)).empty());  // reported once
  EXPECT_FALSE(r.Heartbeat("w1", 0, kT0 + absl::Seconds(7)));  // must register again
  r.Register("w1", "a:1", {"sim-small"}, 8, kT0 + absl::Seconds(8));
  EXPECT_TRUE(r.Acquire("sim-small", kT0 + absl::Seconds(8)));
}

TEST(WorkerRegistryTest, MarkDownStopsRouting) {
  WorkerRegistry r(absl::Seconds(3));
  r.Register("w1", "a:1", {"sim-small"}, 8, kT0);
  r.MarkDown("w1");
  EXPECT_FALSE(r.Acquire("sim-small", kT0));
  EXPECT_TRUE(r.ModelKnown("sim-small"));  // known model, no live worker: unavailable, not 404
}

TEST(WorkerRegistryTest, ReleaseFreesTheSlot) {
  WorkerRegistry r(absl::Seconds(3));
  r.Register("w1", "a:1", {"m"}, 8, kT0);
  r.Register("w2", "a:2", {"m"}, 8, kT0);
  auto p = r.Acquire("m", kT0);
  ASSERT_TRUE(p);
  r.Release(p->worker_id);
  auto q = r.Acquire("m", kT0);
  ASSERT_TRUE(q);
  EXPECT_EQ(q->worker_id, "w1");  // both idle again: ties go to the smaller id
}

TEST(WorkerRegistryTest, AFullWorkerTakesNoMoreAndSaysWhy) {
  WorkerRegistry r(absl::Seconds(3));
  r.Register("w1", "a:1", {"m"}, 2, kT0);
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
  r.Register("w1", "a:1", {"b-model", "a-model"}, 0, kT0);
  r.Register("w2", "a:2", {"a-model"}, 0, kT0 + absl::Seconds(1));
  r.MarkDown("w1");
  auto models = r.ListModels(kT0 + absl::Seconds(1));
  ASSERT_EQ(models.size(), 2u);
  EXPECT_EQ(models[0].id, "a-model");
  EXPECT_EQ(models[0].first_seen, kT0);
  EXPECT_EQ(models[0].live_workers, 1);
  EXPECT_EQ(models[1].id, "b-model");
  EXPECT_EQ(models[1].live_workers, 0);
}

}  // namespace
}  // namespace sb::scheduler
