// The policy store against a real PostgreSQL (started for the suite): the
// platform's policy, versioned, under every org's; what each org's checks
// run under after a refresh, on this replica and on another.
#include "safety/policy_store.h"

#include "gtest/gtest.h"
#include "storage/pg.h"
#include "support/infra.h"

namespace sb::safety {
namespace {

using sb::testing::Infra;

class PolicyStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto infra = Infra::Start({.postgres = true, .redis = false, .kafka = false});
    ASSERT_TRUE(infra.ok()) << infra.status();
    infra_ = std::move(*infra);
    pg_ = std::make_unique<PgPool>(infra_->pg_uri(), 2);
    ASSERT_TRUE(pg_->RunVoid([](pqxx::connection& c) {
                     pqxx::work tx(c);
                     tx.exec("INSERT INTO orgs (id, name) VALUES ('layered', 'l'), ('plain', 'p')");
                     tx.commit();
                   })
                    .ok());
  }

  std::unique_ptr<Infra> infra_;
  std::unique_ptr<PgPool> pg_;
};

TEST_F(PolicyStoreTest, AnOrgsPolicyIsLayeredOnThePlatformsVersionInForce) {
  PolicyStore store(pg_.get());
  ASSERT_TRUE(store.Refresh().ok());
  EXPECT_EQ(store.For("layered")->platform_version(), 0) << "no platform policy: the built-in one";
  EXPECT_EQ(store.For("layered")->ActionFor("pii.email", Direction::kOutput), Action::kBlock);

  auto p1 = store.SetPlatform(R"({"rules": {"pii.email": {"output": "redact"},
                                            "pii.phone": {"input": "flag", "output": "allow"}}})",
                              "ops");
  ASSERT_TRUE(p1.ok()) << p1.status();
  EXPECT_EQ(p1->policy->platform_version(), 1);
  auto own = store.Set("layered", R"({"rules": {"pii.phone": {"output": "block"}}})", "owner");
  ASSERT_TRUE(own.ok()) << own.status();
  ASSERT_TRUE(store.Refresh().ok());

  auto layered = store.For("layered");
  EXPECT_EQ(layered->version(), 1);
  EXPECT_EQ(layered->platform_version(), 1);
  EXPECT_EQ(layered->ActionFor("pii.phone", Direction::kOutput), Action::kBlock) << "the org's";
  EXPECT_EQ(layered->ActionFor("pii.phone", Direction::kInput), Action::kFlag) << "the platform's";
  EXPECT_EQ(layered->ActionFor("pii.email", Direction::kOutput), Action::kRedact);
  EXPECT_EQ(layered->ActionFor("pii.card_number", Direction::kOutput), Action::kBlock)
      << "named by neither: the built-in default";
  auto plain = store.For("plain");
  EXPECT_EQ(plain->version(), 0);
  EXPECT_EQ(plain->platform_version(), 1);
  EXPECT_EQ(plain->ActionFor("pii.phone", Direction::kOutput), Action::kAllow);

  // A new platform version applies under every org at the next refresh,
  // here and on another replica.
  ASSERT_TRUE(store.SetPlatform("{}", "ops").ok());
  PolicyStore other(pg_.get());
  for (PolicyStore* s : {&store, &other}) {
    ASSERT_TRUE(s->Refresh().ok());
    auto now = s->For("layered");
    EXPECT_EQ(now->platform_version(), 2);
    EXPECT_EQ(now->version(), 1);
    EXPECT_EQ(now->ActionFor("pii.email", Direction::kOutput), Action::kBlock);
    EXPECT_EQ(now->ActionFor("pii.phone", Direction::kInput), Action::kBlock);
    EXPECT_EQ(now->ActionFor("pii.phone", Direction::kOutput), Action::kBlock);
  }

  auto first = store.GetPlatform(1);
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_NE(first->policy->json().find("redact"), std::string::npos) << first->policy->json();
  EXPECT_EQ(first->created_by, "ops");
  EXPECT_EQ(store.GetPlatform()->policy->platform_version(), 2);
  EXPECT_EQ(store.GetPlatform(7).status().code(), absl::StatusCode::kNotFound);
}

// A model version's pin: its replies are moderated under that platform
// version (with the org's own policy on it), whatever version is in force.
TEST_F(PolicyStoreTest, APinnedPlatformVersionIsUsedInsteadOfTheOneInForce) {
  PolicyStore store(pg_.get());
  ASSERT_TRUE(store.SetPlatform(R"({"rules": {"pii.email": {"output": "redact"}}})", "ops").ok());
  ASSERT_TRUE(store.SetPlatform("{}", "ops").ok());
  ASSERT_TRUE(store.Set("layered", R"({"rules": {"pii.phone": {"output": "allow"}}})", "o").ok());
  ASSERT_TRUE(store.Refresh().ok());

  auto pinned = store.For("layered", 1);
  ASSERT_NE(pinned, nullptr);
  EXPECT_EQ(pinned->platform_version(), 1);
  EXPECT_EQ(pinned->version(), 1);
  EXPECT_EQ(pinned->ActionFor("pii.email", Direction::kOutput), Action::kRedact);
  EXPECT_EQ(pinned->ActionFor("pii.phone", Direction::kOutput), Action::kAllow) << "the org's";
  auto current = store.For("layered");
  EXPECT_EQ(current->platform_version(), 2);
  EXPECT_EQ(current->ActionFor("pii.email", Direction::kOutput), Action::kBlock);
  EXPECT_EQ(current->ActionFor("pii.phone", Direction::kOutput), Action::kAllow);
  EXPECT_EQ(store.For("layered", 1), pinned) << "made once";
  ASSERT_NE(store.For("plain", 1), nullptr);
  EXPECT_EQ(store.For("plain", 1)->ActionFor("pii.email", Direction::kOutput), Action::kRedact);
  EXPECT_EQ(store.For("plain", 3), nullptr) << "not a version: no policy to check under";
}

TEST_F(PolicyStoreTest, APlatformPolicyIsCheckedAndNeverRewritten) {
  PolicyStore store(pg_.get());
  auto bad = store.SetPlatform(R"({"rules": {"pii.email": {"input": "redact"}}})", "ops");
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(store.GetPlatform().status().code(), absl::StatusCode::kNotFound);
  ASSERT_TRUE(store.SetPlatform(R"({"max_input_bytes": 10})", "ops").ok());
  auto changed = pg_->RunVoid([](pqxx::connection& c) {
    pqxx::work tx(c);
    tx.exec("UPDATE safety_platform_policies SET document = '{}'");
    tx.commit();
  });
  EXPECT_FALSE(changed.ok());
  EXPECT_NE(changed.ToString().find("append-only"), std::string::npos) << changed;
  ASSERT_TRUE(store.Refresh().ok());
  EXPECT_EQ(store.For("plain")->max_input_bytes(), 10u);
}

}  // namespace
}  // namespace sb::safety
