// OrgPolicy against a real PostgreSQL (started and migrated for this
// suite), seeded through sbadmin's Admin class as an operator would.
#include <chrono>
#include <cmath>
#include <limits>
#include <thread>

#include "core/metrics.h"
#include "gtest/gtest.h"
#include "sbadmin/admin.h"
#include "storage/pg.h"
#include "support/infra.h"
#include "tenant-scheduler/org_policy.h"

namespace sb::scheduler {
namespace {

using sb::admin::Admin;
using sb::admin::Limits;
using sb::admin::OrgSettings;
using sb::testing::Infra;

Infra* g_infra = nullptr;

class Environment : public ::testing::Environment {
 public:
  void SetUp() override {
    auto infra = Infra::Start({.redis = false, .kafka = false});
    ASSERT_TRUE(infra.ok()) << infra.status();
    infra_ = std::move(*infra);
    g_infra = infra_.get();
  }
  void TearDown() override {
    g_infra = nullptr;
    infra_.reset();
  }

 private:
  std::unique_ptr<Infra> infra_;
};

// Polls `pred` every 20 ms; false when it is still false after `timeout`.
template <typename Pred>
bool Eventually(Pred pred, absl::Duration timeout = absl::Seconds(10)) {
  const absl::Time deadline = absl::Now() + timeout;
  while (absl::Now() < deadline) {
    if (pred()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return pred();
}

class OrgPolicyPgTest : public ::testing::Test {
 protected:
  OrgPolicyPgTest() : admin_(g_infra->pg_uri()), pg_(g_infra->pg_uri(), 1), source_(pg_) {}

  void CreateOrg(const std::string& org) { ASSERT_TRUE(admin_.CreateOrg(org, org).ok()); }
  void SetConcurrency(const std::string& org, const std::string& key, const std::string& model,
                      int64_t n) {
    Limits l;
    l.key_id = key;
    l.model = model;
    l.concurrency = n;
    ASSERT_TRUE(admin_.SetLimits(org, l).ok());
  }

  Admin admin_;
  PgPool pg_;
  PgOrgPolicySource source_;
};

TEST_F(OrgPolicyPgTest, SetOrgIsReflectedAfterARefresh) {
  CreateOrg("acme");
  CreateOrg("plain");
  OrgPolicy policy(source_, absl::Seconds(2));
  ASSERT_TRUE(policy.Refresh().ok());
  EXPECT_EQ(policy.Weight("acme"), 1);
  EXPECT_EQ(policy.Tier("acme"), "standard") << "the tier every org starts with (0001)";

  ASSERT_TRUE(admin_.SetOrg("acme", {.weight = 2.5, .tier = "premium"}).ok());
  ASSERT_TRUE(policy.Refresh().ok());
  EXPECT_EQ(policy.Weight("acme"), 2.5);
  EXPECT_EQ(policy.Tier("acme"), "premium");
  EXPECT_EQ(policy.Weight("plain"), 1);

  // One field alone leaves the other as it is.
  ASSERT_TRUE(admin_.SetOrg("acme", {.weight = 3}).ok());
  ASSERT_TRUE(admin_.SetOrg("plain", {.tier = "bulk"}).ok());
  ASSERT_TRUE(policy.Refresh().ok());
  EXPECT_EQ(policy.Weight("acme"), 3);
  EXPECT_EQ(policy.Tier("acme"), "premium");
  EXPECT_EQ(policy.Tier("plain"), "bulk");

  auto shown = admin_.ShowOrg("acme");
  ASSERT_TRUE(shown.ok()) << shown.status();
  EXPECT_EQ(shown->weight, 3);
  EXPECT_EQ(shown->tier, "premium");
  EXPECT_FALSE(shown->updated_at.empty());
}

TEST_F(OrgPolicyPgTest, AnUnknownOrgHasTheDefaults) {
  OrgPolicy policy(source_, absl::Seconds(2));
  ASSERT_TRUE(policy.Refresh().ok());
  EXPECT_EQ(policy.Weight("nobody"), 1);
  EXPECT_EQ(policy.Tier("nobody"), "");
  EXPECT_EQ(policy.ConcurrencyCap("nobody", "sim-small"), 0);
  EXPECT_EQ(admin_.SetOrg("nobody", {.weight = 2}).code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(admin_.ShowOrg("nobody").status().code(), absl::StatusCode::kNotFound);
}

TEST_F(OrgPolicyPgTest, AnInvalidWeightOrTierIsRefusedAndChangesNothing) {
  CreateOrg("careful");
  ASSERT_TRUE(admin_.SetOrg("careful", {.weight = 2}).ok());
  for (double w : {0.0, -1.0, std::nan(""), std::numeric_limits<double>::infinity()}) {
    EXPECT_EQ(admin_.SetOrg("careful", {.weight = w}).code(), absl::StatusCode::kInvalidArgument)
        << w;
  }
  EXPECT_EQ(admin_.SetOrg("careful", {.tier = ""}).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(admin_.SetOrg("careful", {.tier = "no spaces"}).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(admin_.SetOrg("careful", {}).code(), absl::StatusCode::kInvalidArgument);
  OrgPolicy policy(source_, absl::Seconds(2));
  ASSERT_TRUE(policy.Refresh().ok());
  EXPECT_EQ(policy.Weight("careful"), 2);

  // Whoever writes the table, the database refuses what cannot be a weight.
  auto by_hand = pg_.RunVoid([](pqxx::connection& c) {
    pqxx::work tx(c);
    tx.exec("UPDATE orgs SET weight = 'NaN' WHERE id = 'careful'");
    tx.commit();
  });
  EXPECT_EQ(by_hand.code(), absl::StatusCode::kFailedPrecondition) << by_hand;
}

TEST_F(OrgPolicyPgTest, CapsComeFromOrgAndModelRowsTheSmallerWinningAndKeyRowsIgnored) {
  CreateOrg("capped");
  auto secret = admin_.CreateKey("capped", "");
  ASSERT_TRUE(secret.ok()) << secret.status();
  auto keys = admin_.ListKeys("capped");
  ASSERT_TRUE(keys.ok() && keys->size() == 1);
  const std::string key = (*keys)[0].id;

  SetConcurrency("capped", "", "", 8);
  SetConcurrency("capped", "", "sim-small", 2);
  SetConcurrency("capped", "", "sim-large", 20);
  SetConcurrency("capped", key, "", 1);
  SetConcurrency("capped", key, "sim-medium", 1);
  Limits rpm_only;
  rpm_only.model = "rpm-only";
  rpm_only.rpm = 100;
  ASSERT_TRUE(admin_.SetLimits("capped", rpm_only).ok());

  OrgPolicy policy(source_, absl::Seconds(2));
  ASSERT_TRUE(policy.Refresh().ok());
  EXPECT_EQ(policy.ConcurrencyCap("capped", "sim-small"), 2);
  EXPECT_EQ(policy.ConcurrencyCap("capped", "sim-large"), 8);
  EXPECT_EQ(policy.ConcurrencyCap("capped", "sim-medium"), 8) << "the key's row is ignored";
  EXPECT_EQ(policy.ConcurrencyCap("capped", "rpm-only"), 8);

  // The org-wide cap removed (0): the model rows alone.
  SetConcurrency("capped", "", "", 0);
  ASSERT_TRUE(policy.Refresh().ok());
  EXPECT_EQ(policy.ConcurrencyCap("capped", "sim-large"), 20);
  EXPECT_EQ(policy.ConcurrencyCap("capped", "sim-small"), 2);
  EXPECT_EQ(policy.ConcurrencyCap("capped", "sim-medium"), 0);
}

TEST_F(OrgPolicyPgTest, AnOutageKeepsTheLastSnapshotAndTheRefresherRecovers) {
  CreateOrg("steady");
  ASSERT_TRUE(admin_.SetOrg("steady", {.weight = 4, .tier = "gold"}).ok());
  SetConcurrency("steady", "", "", 3);
  auto& failures_metric =
      metrics::Default().GetCounter("sb_scheduler_org_policy_reload_failures_total", "");
  const double failures_before = failures_metric.Value();

  OrgPolicy policy(source_, absl::Milliseconds(100));
  policy.Start();
  ASSERT_TRUE(Eventually([&] { return policy.Weight("steady") == 4; }));

  ASSERT_TRUE(g_infra->StopPostgres().ok());
  EXPECT_TRUE(Eventually([&] { return policy.failures() >= 2; }));
  EXPECT_GE(failures_metric.Value() - failures_before, 2);
  EXPECT_EQ(policy.Weight("steady"), 4);
  EXPECT_EQ(policy.Tier("steady"), "gold");
  EXPECT_EQ(policy.ConcurrencyCap("steady", "sim-small"), 3);

  ASSERT_TRUE(g_infra->StartPostgres().ok());
  ASSERT_TRUE(admin_.SetOrg("steady", {.weight = 7}).ok());
  // The scheduler reloads every 2 s so that a change applies within 5 s.
  EXPECT_TRUE(Eventually([&] { return policy.Weight("steady") == 7; }, absl::Seconds(5)));
  policy.Stop();
}

}  // namespace
}  // namespace sb::scheduler

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  ::testing::AddGlobalTestEnvironment(new sb::scheduler::Environment);
  return RUN_ALL_TESTS();
}
