// ModelRegistry against a real, migrated PostgreSQL started for the suite.
#include "tenant-scheduler/model_registry.h"

#include <chrono>
#include <thread>

#include "core/metrics.h"
#include "gtest/gtest.h"
#include "storage/pg.h"
#include "support/infra.h"

namespace sb::scheduler {
namespace {

using sb::testing::Infra;

class ModelRegistryTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto infra = Infra::Start({.postgres = true, .redis = false, .kafka = false});
    ASSERT_TRUE(infra.ok()) << infra.status();
    infra_ = std::move(*infra).release();
  }
  static void TearDownTestSuite() {
    delete infra_;
    infra_ = nullptr;
  }

  ModelRegistryTest() : pg_(infra_->pg_uri(), 2), registry_(pg_, metrics_) {}

  void Create(const std::string& id, const std::string& model = "sim-small") {
    auto v = registry_.CreateVersion({.id = id, .model = model});
    ASSERT_TRUE(v.ok()) << v.status();
  }
  // A new version of the platform's safety policy: one a model version
  // may pin.
  std::string NewPlatformPolicy() {
    auto v = infra_->AddPlatformSafetyPolicy();
    EXPECT_TRUE(v.ok()) << v.status();
    return v.ok() ? std::to_string(*v) : "";
  }
  ModelAlias Alias(const std::string& alias) {
    auto list = registry_.List();
    EXPECT_TRUE(list.ok()) << list.status();
    if (!list.ok() || list->FindAlias(alias) == nullptr) return {};
    return *list->FindAlias(alias);
  }

  static Infra* infra_;
  metrics::Registry metrics_;
  PgPool pg_;
  ModelRegistry registry_;
};

Infra* ModelRegistryTest::infra_ = nullptr;

// A pin names a version of the platform's safety policy that exists.
TEST_F(ModelRegistryTest, ASafetyPolicyPinMustNameAPlatformPolicyVersion) {
  auto named =
      registry_.CreateVersion({.id = "pin-a", .model = "m", .safety_policy_version = "p7"});
  EXPECT_EQ(named.status().code(), absl::StatusCode::kInvalidArgument) << named.status();
  auto zero = registry_.CreateVersion({.id = "pin-a", .model = "m", .safety_policy_version = "0"});
  EXPECT_EQ(zero.status().code(), absl::StatusCode::kInvalidArgument) << zero.status();
  auto missing =
      registry_.CreateVersion({.id = "pin-a", .model = "m", .safety_policy_version = "999999"});
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound) << missing.status();
  EXPECT_NE(missing.status().message().find("999999"), std::string::npos);
  const std::string pin = NewPlatformPolicy();
  auto ok = registry_.CreateVersion({.id = "pin-a", .model = "m", .safety_policy_version = pin});
  ASSERT_TRUE(ok.ok()) << ok.status();
  ASSERT_TRUE(registry_.Refresh().ok());
  EXPECT_EQ(std::to_string(registry_.Snapshot()->Resolve("pin-a", 0).safety_policy_version), pin);
  EXPECT_EQ(registry_.Snapshot()->Resolve("unregistered", 0).safety_policy_version, 0);
}

TEST_F(ModelRegistryTest, AVersionAndAnAliasRoundTrip) {
  const std::string pin = NewPlatformPolicy();
  auto v = registry_.CreateVersion({.id = "rt-20261101",
                                    .model = "sim-small",
                                    .serving_config = R"({"max_tokens": 4096})",
                                    .safety_policy_version = pin});
  ASSERT_TRUE(v.ok()) << v.status();
  EXPECT_EQ(v->id, "rt-20261101");
  EXPECT_EQ(v->serving_config, R"({"max_tokens": 4096})");
  EXPECT_GT(v->created_at, absl::UnixEpoch());
  auto a = registry_.SetAlias("rt", "rt-20261101");
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->stable, "rt-20261101");
  EXPECT_EQ(a->previous_stable, "");
  EXPECT_EQ(a->canary_weight, 0);

  // Nothing is in the snapshot until a refresh reads it.
  EXPECT_EQ(registry_.Snapshot()->FindAlias("rt"), nullptr);
  EXPECT_EQ(registry_.LastLoaded(), absl::InfinitePast());
  ASSERT_TRUE(registry_.Refresh().ok());
  auto catalog = registry_.Snapshot();
  const auto r = catalog->Resolve("rt", 0);
  EXPECT_EQ(r.version, "rt-20261101");
  EXPECT_EQ(r.model, "sim-small");
  EXPECT_EQ(std::to_string(r.safety_policy_version), pin) << "the pin goes with the route";
  ASSERT_NE(catalog->FindVersion("rt-20261101"), nullptr);
  EXPECT_EQ(catalog->FindVersion("rt-20261101")->safety_policy_version, pin);
  EXPECT_NE(registry_.LastLoaded(), absl::InfinitePast());
  // An unchanged registry keeps the same snapshot object.
  ASSERT_TRUE(registry_.Refresh().ok());
  EXPECT_EQ(registry_.Snapshot(), catalog);
}

TEST_F(ModelRegistryTest, PromotionKeepsThePreviousVersionAndRollbackRestoresIt) {
  for (const char* id : {"pr-1", "pr-2", "pr-3"}) Create(id);
  ASSERT_TRUE(registry_.SetAlias("pr", "pr-1").ok());
  ASSERT_TRUE(registry_.SetAlias("pr", "pr-2").ok());
  auto a = registry_.SetAlias("pr", "pr-3");
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->stable, "pr-3");
  EXPECT_EQ(a->previous_stable, "pr-2");
  // Promoting the stable version again changes nothing.
  a = registry_.SetAlias("pr", "pr-3");
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->previous_stable, "pr-2");

  a = registry_.Rollback("pr");
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->stable, "pr-2");
  EXPECT_EQ(a->previous_stable, "pr-1");  // what pr-2 replaced
  a = registry_.Rollback("pr");
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->stable, "pr-1");
  EXPECT_EQ(a->previous_stable, "");
  auto none = registry_.Rollback("pr");
  EXPECT_EQ(none.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(none.status().message(), "alias 'pr' has no previous stable version to roll back to");
  EXPECT_EQ(registry_.Rollback("no-such-alias").status().code(), absl::StatusCode::kNotFound);
}

TEST_F(ModelRegistryTest, ARollbackNeverFallsBackToTheVersionItLeaves) {
  for (const char* id : {"cy-1", "cy-2"}) Create(id);
  ASSERT_TRUE(registry_.SetAlias("cy", "cy-1").ok());
  ASSERT_TRUE(registry_.SetAlias("cy", "cy-2").ok());
  ASSERT_TRUE(registry_.SetAlias("cy", "cy-1").ok());  // previous: cy-2
  auto a = registry_.Rollback("cy");
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->stable, "cy-2");
  // cy-2 replaced cy-1 when it was promoted; cy-1 is what this rollback
  // left, so there is nothing before it.
  EXPECT_EQ(a->previous_stable, "");
}

TEST_F(ModelRegistryTest, ACanarySplitsTrafficAndItsPromotionEndsIt) {
  for (const char* id : {"ca-1", "ca-2", "ca-3"}) Create(id);
  ASSERT_TRUE(registry_.SetAlias("ca", "ca-1").ok());
  auto a = registry_.SetCanary("ca", "ca-2", 10);
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->canary, "ca-2");
  EXPECT_EQ(a->canary_weight, 10);
  ASSERT_TRUE(registry_.Refresh().ok());
  int canary = 0;
  for (uint64_t pick = 0; pick < 100; ++pick) {
    canary += registry_.Snapshot()->Resolve("ca", pick).canary ? 1 : 0;
  }
  EXPECT_EQ(canary, 10);

  // Promoting the canary ends it.
  a = registry_.SetAlias("ca", "ca-2");
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->stable, "ca-2");
  EXPECT_EQ(a->previous_stable, "ca-1");
  EXPECT_EQ(a->canary, "");
  EXPECT_EQ(a->canary_weight, 0);
  // Promoting another version keeps a canary running; a rollback ends it.
  ASSERT_TRUE(registry_.SetCanary("ca", "ca-3", 5).ok());
  ASSERT_TRUE(registry_.SetAlias("ca", "ca-1").ok());
  EXPECT_EQ(Alias("ca").canary, "ca-3");
  a = registry_.Rollback("ca");
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->stable, "ca-2");
  EXPECT_EQ(a->canary, "");
  // Weight 0 ends a canary, whatever version it names.
  ASSERT_TRUE(registry_.SetCanary("ca", "ca-3", 50).ok());
  a = registry_.SetCanary("ca", "", 0);
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->canary, "");
  EXPECT_EQ(a->canary_weight, 0);
}

TEST_F(ModelRegistryTest, BadCanariesAreRefusedWithClearErrors) {
  Create("bc-1");
  Create("bc-2");
  ASSERT_TRUE(registry_.SetAlias("bc", "bc-1").ok());
  auto st = registry_.SetCanary("bc", "bc-1", 10).status();
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(st.message(), "'bc-1' is already the stable version of 'bc'");
  st = registry_.SetCanary("bc", "bc-2", 101).status();
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(st.message(), "canary weight 101 is not a percentage from 0 to 100");
  EXPECT_EQ(registry_.SetCanary("bc", "bc-2", -1).status().code(),
            absl::StatusCode::kInvalidArgument);
  st = registry_.SetCanary("bc", "bc-9", 10).status();
  EXPECT_EQ(st.code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(st.message(), "no model version 'bc-9': create it first (model create-version)");
  st = registry_.SetCanary("no-alias", "bc-2", 10).status();
  EXPECT_EQ(st.code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(st.message(), "no alias 'no-alias': give it a stable version first (model set-alias)");
  EXPECT_EQ(Alias("bc").canary, "");
}

TEST_F(ModelRegistryTest, VersionsAreImmutable) {
  auto v = registry_.CreateVersion({.id = "im-1", .model = "sim-small", .serving_config = "{}"});
  ASSERT_TRUE(v.ok()) << v.status();
  // The same content again: fine (scripts may repeat themselves).
  auto again = registry_.CreateVersion({.id = "im-1", .model = "sim-small", .serving_config = ""});
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->created_at, v->created_at);
  // Other content under the same id: refused.
  auto other = registry_.CreateVersion({.id = "im-1", .model = "sim-large"});
  EXPECT_EQ(other.status().code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(other.status().message(),
            "version 'im-1' exists with other content; versions are immutable: create a new "
            "version id");
  EXPECT_EQ(
      registry_.CreateVersion({.id = "im-1", .model = "sim-small", .serving_config = "{\"a\":1}"})
          .status()
          .code(),
      absl::StatusCode::kAlreadyExists);
  // Not even by hand.
  auto updated = pg_.RunVoid([](pqxx::connection& c) {
    pqxx::work tx(c);
    tx.exec("UPDATE model_versions SET model = 'other' WHERE version = 'im-1'");
    tx.commit();
  });
  EXPECT_FALSE(updated.ok());
  EXPECT_NE(updated.message().find("immutable"), std::string_view::npos) << updated;
  auto list = registry_.List();
  ASSERT_TRUE(list.ok());
  EXPECT_EQ(list->FindVersion("im-1")->model, "sim-small");
}

TEST_F(ModelRegistryTest, BadInputsAreRefusedWithClearErrors) {
  auto code = [](const absl::Status& st) { return st.code(); };
  auto st = registry_.CreateVersion({.id = "", .model = "m"}).status();
  EXPECT_EQ(code(st), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(st.message(), "version id is required");
  st = registry_.CreateVersion({.id = "v x", .model = "m"}).status();
  EXPECT_EQ(code(st), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(st.message(),
            "version id 'v x' may hold only letters, digits and . _ - : / @ + and must start with "
            "a letter or digit");
  st = registry_.CreateVersion({.id = "bi-1", .model = ""}).status();
  EXPECT_EQ(st.message(), "served model is required");
  st = registry_.CreateVersion({.id = std::string(201, 'a'), .model = "m"}).status();
  EXPECT_EQ(st.message(), "version id is longer than 200 characters");
  for (const char* config : {"{", "[1,2]", "\"text\"", "null", "{\"a\":}"}) {
    st = registry_.CreateVersion({.id = "bi-1", .model = "m", .serving_config = config}).status();
    EXPECT_EQ(code(st), absl::StatusCode::kInvalidArgument) << config;
    EXPECT_EQ(st.message(), "serving config must be a JSON object, such as {}") << config;
  }
  st = registry_.CreateVersion({.id = "bi-1", .model = "m", .serving_config = R"({"a":"\u0000"})"})
           .status();
  EXPECT_EQ(code(st), absl::StatusCode::kInvalidArgument) << st;
  EXPECT_EQ(code(registry_.SetAlias("bi", "no-such-version").status()),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(code(registry_.SetAlias("", "v").status()), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(code(registry_.Rollback("-x").status()), absl::StatusCode::kInvalidArgument);
  // Aliases and version ids do not overlap.
  Create("bi-2");
  ASSERT_TRUE(registry_.SetAlias("bi", "bi-2").ok());
  st = registry_.SetAlias("bi-2", "bi-2").status();
  EXPECT_EQ(code(st), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(st.message(), "'bi-2' is a version id; an alias needs a name of its own");
  st = registry_.CreateVersion({.id = "bi", .model = "m"}).status();
  EXPECT_EQ(code(st), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(st.message(), "'bi' is an alias; a version needs an id of its own");
  // Nothing of the refused calls was stored.
  auto list = registry_.List();
  ASSERT_TRUE(list.ok());
  EXPECT_EQ(list->FindVersion("bi-1"), nullptr);
  EXPECT_EQ(list->FindVersion("bi"), nullptr);
}

TEST_F(ModelRegistryTest, TheRefreshThreadPicksUpAnotherWritersChanges) {
  Create("th-1");
  Create("th-2");
  ASSERT_TRUE(registry_.SetAlias("th", "th-1").ok());
  metrics::Registry reader_metrics;
  PgPool reader_pg(infra_->pg_uri(), 1);
  ModelRegistry reader(reader_pg, reader_metrics);
  ASSERT_TRUE(reader.Refresh().ok());
  reader.Start(absl::Milliseconds(100));
  ASSERT_EQ(reader.Snapshot()->Resolve("th", 0).version, "th-1");
  ASSERT_TRUE(registry_.SetAlias("th", "th-2").ok());  // another process, as it were
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (reader.Snapshot()->Resolve("th", 0).version != "th-2" &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_EQ(reader.Snapshot()->Resolve("th", 0).version, "th-2");
  reader.Stop();
}

TEST_F(ModelRegistryTest, WithPostgresDownTheLastSnapshotStays) {
  Create("pd-1");
  ASSERT_TRUE(registry_.SetAlias("pd", "pd-1").ok());
  ASSERT_TRUE(registry_.Refresh().ok());
  auto before = registry_.Snapshot();
  auto& failures = metrics_.GetCounter("sb_scheduler_registry_reload_failures_total", "");

  ASSERT_TRUE(infra_->StopPostgres().ok());
  for (int i = 0; i < 2; ++i) {
    auto st = registry_.Refresh();
    EXPECT_EQ(st.code(), absl::StatusCode::kUnavailable) << st;
  }
  EXPECT_EQ(failures.Value(), 2);
  EXPECT_EQ(registry_.Snapshot(), before);
  EXPECT_EQ(registry_.Snapshot()->Resolve("pd", 0).version, "pd-1");
  // Writes fail plainly: no database text.
  auto write = registry_.SetAlias("pd", "pd-1");
  EXPECT_EQ(write.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(write.status().message(),
            "the model registry's database is unavailable (promoting a version); retry later");
  EXPECT_EQ(registry_.List().status().code(), absl::StatusCode::kUnavailable);

  ASSERT_TRUE(infra_->StartPostgres().ok());
  absl::Status st;
  for (int i = 0; i < 3; ++i) {  // a pooled connection may notice the restart once
    st = registry_.Refresh();
    if (st.ok()) break;
  }
  EXPECT_TRUE(st.ok()) << st;
}

}  // namespace
}  // namespace sb::scheduler
