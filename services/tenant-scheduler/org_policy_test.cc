// OrgPolicy over a fake source: snapshots, caps, outages and the change
// feed; and a snapshot applied to a FairQueue. The same against a real
// PostgreSQL is in org_policy_pg_test.cc.
#include "tenant-scheduler/org_policy.h"

#include <limits>
#include <mutex>

#include "absl/synchronization/notification.h"
#include "gtest/gtest.h"
#include "tenant-scheduler/fair_queue.h"

namespace sb::scheduler {
namespace {

class FakeSource final : public OrgPolicySource {
 public:
  absl::StatusOr<std::vector<OrgRow>> Orgs() override {
    std::lock_guard<std::mutex> lock(mu_);
    if (!up_) return absl::UnavailableError("connection refused");
    return orgs_;
  }
  absl::StatusOr<std::vector<CapRow>> Caps() override {
    std::lock_guard<std::mutex> lock(mu_);
    if (!up_) return absl::UnavailableError("connection refused");
    return caps_;
  }
  void Set(std::vector<OrgRow> orgs, std::vector<CapRow> caps = {}) {
    std::lock_guard<std::mutex> lock(mu_);
    orgs_ = std::move(orgs);
    caps_ = std::move(caps);
  }
  void SetUp(bool up) {
    std::lock_guard<std::mutex> lock(mu_);
    up_ = up;
  }

 private:
  std::mutex mu_;
  bool up_ = true;
  std::vector<OrgRow> orgs_;
  std::vector<CapRow> caps_;
};

TEST(OrgPolicyTest, BeforeAnyLoadEveryOrgHasWeightOneAndNoCap) {
  FakeSource source;
  OrgPolicy policy(source, absl::Seconds(2));
  EXPECT_EQ(policy.version(), 0u);
  EXPECT_EQ(policy.Weight("acme"), 1);
  EXPECT_EQ(policy.Tier("acme"), "");
  EXPECT_EQ(policy.ConcurrencyCap("acme", "sim-small"), 0);
}

TEST(OrgPolicyTest, WeightsTiersAndTheSmallerOfTheOrgAndModelCaps) {
  FakeSource source;
  source.Set({{"acme", 3, "premium"}, {"beta", 1, "standard"}, {"gamma", 0.5, "standard"}},
             {{"acme", "", 8},
              {"acme", "sim-small", 2},
              {"acme", "sim-large", 20},
              {"beta", "sim-small", 4}});
  OrgPolicy policy(source, absl::Seconds(2));
  ASSERT_TRUE(policy.Refresh().ok());
  EXPECT_EQ(policy.version(), 1u);
  EXPECT_EQ(policy.Weight("acme"), 3);
  EXPECT_EQ(policy.Tier("acme"), "premium");
  EXPECT_EQ(policy.Weight("gamma"), 0.5);
  EXPECT_EQ(policy.ConcurrencyCap("acme", "sim-small"), 2) << "the model's row is smaller";
  EXPECT_EQ(policy.ConcurrencyCap("acme", "sim-large"), 8) << "the org's row is smaller";
  EXPECT_EQ(policy.ConcurrencyCap("acme", "other"), 8) << "the org's row alone";
  EXPECT_EQ(policy.ConcurrencyCap("beta", "sim-small"), 4) << "the model's row alone";
  EXPECT_EQ(policy.ConcurrencyCap("beta", "other"), 0);
  EXPECT_EQ(policy.ConcurrencyCap("gamma", "sim-small"), 0);
  EXPECT_EQ(policy.Weight("unknown"), 1);
  EXPECT_EQ(policy.ConcurrencyCap("unknown", "sim-small"), 0);
}

TEST(OrgPolicyTest, AWeightThatCannotBeUsedCountsAsOne) {
  FakeSource source;
  source.Set({{"zero", 0, ""},
              {"negative", -2, ""},
              {"inf", std::numeric_limits<double>::infinity(), ""}});
  OrgPolicy policy(source, absl::Seconds(2));
  ASSERT_TRUE(policy.Refresh().ok());
  EXPECT_EQ(policy.Weight("zero"), 1);
  EXPECT_EQ(policy.Weight("negative"), 1);
  EXPECT_EQ(policy.Weight("inf"), 1);
}

TEST(OrgPolicyTest, OnlyARealChangeIsPublished) {
  FakeSource source;
  source.Set({{"acme", 2, ""}});
  OrgPolicy policy(source, absl::Seconds(2));
  int calls = 0;
  policy.OnChange([&](const std::shared_ptr<const OrgPolicySnapshot>& s) {
    ++calls;
    EXPECT_EQ(s->version(), static_cast<uint64_t>(calls));
  });
  ASSERT_TRUE(policy.Refresh().ok());
  ASSERT_TRUE(policy.Refresh().ok());
  EXPECT_EQ(calls, 1);
  EXPECT_EQ(policy.version(), 1u);
  source.Set({{"acme", 2, ""}}, {{"acme", "", 1}});
  ASSERT_TRUE(policy.Refresh().ok());
  EXPECT_EQ(calls, 2);
  EXPECT_EQ(policy.version(), 2u);
}

TEST(OrgPolicyTest, AnOutageKeepsTheLastSnapshotAndIsCounted) {
  FakeSource source;
  source.Set({{"acme", 2, "premium"}}, {{"acme", "", 5}});
  OrgPolicy policy(source, absl::Seconds(2));
  ASSERT_TRUE(policy.Refresh().ok());
  source.SetUp(false);
  EXPECT_EQ(policy.Refresh().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(policy.Refresh().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(policy.failures(), 2u);
  EXPECT_EQ(policy.Weight("acme"), 2);
  EXPECT_EQ(policy.ConcurrencyCap("acme", "m"), 5);
  source.Set({{"acme", 4, "premium"}});
  source.SetUp(true);
  ASSERT_TRUE(policy.Refresh().ok());
  EXPECT_EQ(policy.Weight("acme"), 4);
  EXPECT_EQ(policy.ConcurrencyCap("acme", "m"), 0) << "the cap was removed";
}

TEST(OrgPolicyTest, TheRefreshThreadLoadsAtOnceAndThenEveryPeriod) {
  FakeSource source;
  source.Set({{"acme", 2, ""}});
  OrgPolicy policy(source, absl::Milliseconds(20));
  absl::Notification first, second;
  policy.OnChange([&](const std::shared_ptr<const OrgPolicySnapshot>& s) {
    if (s->version() == 1) first.Notify();
    if (s->version() == 2) second.Notify();
  });
  policy.Start();
  ASSERT_TRUE(first.WaitForNotificationWithTimeout(absl::Seconds(10)));
  EXPECT_EQ(policy.Weight("acme"), 2);
  source.Set({{"acme", 5, ""}});
  ASSERT_TRUE(second.WaitForNotificationWithTimeout(absl::Seconds(10)));
  EXPECT_EQ(policy.Weight("acme"), 5);
  policy.Stop();
  policy.Stop();  // idempotent
}

TEST(OrgPolicyTest, ASnapshotAppliedToAQueueSetsWeightsAndCapsAndLiftsRemovedOnes) {
  OrgPolicySnapshot capped({{"heavy", 4, ""}, {"light", 1, ""}},
                           {{"heavy", "", 3}, {"light", "sim-small", 1}}, 1);
  FairQueue queue(FairQueue::Options{.w_in = 1, .w_out = 2});
  capped.ApplyTo("sim-small", queue);
  const absl::Time t0 = absl::FromUnixSeconds(1'800'000'000);
  uint64_t id = 0;
  for (const char* org : {"heavy", "light", "light"}) {
    ASSERT_TRUE(queue.Push({++id, org, Priority::kInteractive, 40, 0, t0}).ok());
  }
  ASSERT_TRUE(queue.Pop().has_value());
  ASSERT_TRUE(queue.Pop().has_value());
  EXPECT_DOUBLE_EQ(queue.counter("heavy", Priority::kInteractive), 10) << "40 tokens / weight 4";
  EXPECT_DOUBLE_EQ(queue.counter("light", Priority::kInteractive), 40);
  EXPECT_FALSE(queue.Pop().has_value()) << "light is at its cap of 1 on sim-small";

  // The cap removed: the next snapshot lifts it.
  OrgPolicySnapshot lifted({{"heavy", 4, ""}, {"light", 1, ""}}, {}, 2);
  lifted.ApplyTo("sim-small", queue);
  EXPECT_TRUE(queue.Pop().has_value());
}

}  // namespace
}  // namespace sb::scheduler
