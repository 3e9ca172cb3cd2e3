#include "tenant-scheduler/model_catalog.h"

#include <set>

#include "gtest/gtest.h"

namespace sb::scheduler {
namespace {

ModelCatalog Catalog(int canary_weight = 10) {
  return ModelCatalog({{.id = "sim-small-20261001", .model = "sim-small"},
                       {.id = "sim-small-20261101", .model = "sim-small"},
                       {.id = "sim-small-20261201", .model = "sim-small-next"}},
                      {{.name = "sim-small",
                        .stable = "sim-small-20261101",
                        .previous_stable = "sim-small-20261001",
                        .canary = canary_weight > 0 ? "sim-small-20261201" : "",
                        .canary_weight = canary_weight}});
}

TEST(ModelCatalogTest, AnAliasResolvesToItsStableVersionAndTheModelWorkersServe) {
  const auto r = Catalog(0).Resolve("sim-small", 0);
  EXPECT_EQ(r.version, "sim-small-20261101");
  EXPECT_EQ(r.model, "sim-small");
  EXPECT_FALSE(r.canary);
  EXPECT_FALSE(r.fell_back);
}

TEST(ModelCatalogTest, AVersionIdResolvesToItself) {
  const auto r = Catalog().Resolve("sim-small-20261201", 0);
  EXPECT_EQ(r.version, "sim-small-20261201");
  EXPECT_EQ(r.model, "sim-small-next");
  EXPECT_FALSE(r.canary);
}

TEST(ModelCatalogTest, AnUnregisteredNameResolvesToItselfUnchanged) {
  const auto r = Catalog().Resolve("sim-large", 42);
  EXPECT_EQ(r.version, "sim-large");
  EXPECT_EQ(r.model, "sim-large");
  EXPECT_FALSE(r.canary);
  EXPECT_FALSE(ModelCatalog().Resolve("anything", 0).fell_back);
  EXPECT_EQ(ModelCatalog().Resolve("anything", 0).model, "anything");
}

TEST(ModelCatalogTest, TheCanaryTakesExactlyItsWeightOfOneHundredPicks) {
  for (int weight : {1, 5, 10, 50, 99, 100}) {
    SCOPED_TRACE(weight);
    const ModelCatalog catalog = Catalog(weight);
    int canary = 0;
    for (uint64_t pick = 0; pick < 100; ++pick) {
      const auto r = catalog.Resolve("sim-small", pick);
      if (r.canary) {
        ++canary;
        EXPECT_EQ(r.version, "sim-small-20261201");
        EXPECT_EQ(r.model, "sim-small-next");
      } else {
        EXPECT_EQ(r.version, "sim-small-20261101");
      }
    }
    EXPECT_EQ(canary, weight);
  }
}

TEST(ModelCatalogTest, APickBeyondOneHundredIsTakenModuloOneHundred) {
  const ModelCatalog catalog = Catalog(10);
  // A hash of the request id: any 64-bit value.
  EXPECT_TRUE(catalog.Resolve("sim-small", 1'000'000'005).canary);
  EXPECT_FALSE(catalog.Resolve("sim-small", 1'000'000'055).canary);
  EXPECT_FALSE(catalog.Resolve("sim-small", ~uint64_t{0}).canary);  // ...615 % 100 = 15
}

TEST(ModelCatalogTest, AnAvoidedCanaryGivesWayToTheStableVersion) {
  const auto r = Catalog(100).Resolve("sim-small", 3,
                                      [](std::string_view v) { return v == "sim-small-20261201"; });
  EXPECT_EQ(r.version, "sim-small-20261101");
  EXPECT_FALSE(r.canary);
  EXPECT_TRUE(r.fell_back);
  EXPECT_FALSE(r.all_avoided);
}

TEST(ModelCatalogTest, AnAvoidedStableVersionGivesWayToThePreviousOne) {
  const auto r = Catalog(0).Resolve("sim-small", 3,
                                    [](std::string_view v) { return v == "sim-small-20261101"; });
  EXPECT_EQ(r.version, "sim-small-20261001");
  EXPECT_EQ(r.model, "sim-small");
  EXPECT_TRUE(r.fell_back);
  // With a canary picked and both it and the stable version avoided: the
  // previous stable version too.
  const auto both = Catalog(100).Resolve("sim-small", 3, [](std::string_view v) {
    return v == "sim-small-20261101" || v == "sim-small-20261201";
  });
  EXPECT_EQ(both.version, "sim-small-20261001");
}

TEST(ModelCatalogTest, WhenEveryCandidateIsAvoidedTheStableVersionIsReturned) {
  const auto r = Catalog(0).Resolve("sim-small", 3, [](std::string_view) { return true; });
  EXPECT_EQ(r.version, "sim-small-20261101");
  EXPECT_TRUE(r.fell_back);
  EXPECT_TRUE(r.all_avoided);
  // No previous version to fall back to.
  const ModelCatalog fresh({{.id = "v1", .model = "m"}}, {{.name = "a", .stable = "v1"}});
  const auto only = fresh.Resolve("a", 0, [](std::string_view) { return true; });
  EXPECT_EQ(only.version, "v1");
  EXPECT_TRUE(only.all_avoided);
}

TEST(ModelCatalogTest, AvoidIsAskedInOrderOfPreferenceAndStopsAtTheFirstUsable) {
  std::vector<std::string> asked;
  const auto r = Catalog(100).Resolve("sim-small", 0, [&](std::string_view v) {
    asked.emplace_back(v);
    return v == "sim-small-20261201";
  });
  EXPECT_EQ(r.version, "sim-small-20261101");
  EXPECT_EQ(asked, (std::vector<std::string>{"sim-small-20261201", "sim-small-20261101"}));
  // A version asked for by id is not a candidate among others: avoid is not
  // consulted (nor is it for names nobody registered).
  asked.clear();
  auto avoid_all = [&](std::string_view v) {
    asked.emplace_back(v);
    return true;
  };
  EXPECT_EQ(Catalog().Resolve("sim-small-20261001", 0, avoid_all).version, "sim-small-20261001");
  EXPECT_EQ(Catalog().Resolve("other", 0, avoid_all).version, "other");
  EXPECT_TRUE(asked.empty());
}

TEST(ModelCatalogTest, LookupsAndEquality) {
  const ModelCatalog a = Catalog(10);
  ASSERT_NE(a.FindAlias("sim-small"), nullptr);
  EXPECT_EQ(a.FindAlias("sim-small")->canary_weight, 10);
  EXPECT_EQ(a.FindAlias("sim-small-20261101"), nullptr);
  ASSERT_NE(a.FindVersion("sim-small-20261101"), nullptr);
  EXPECT_EQ(a.FindVersion("sim-small"), nullptr);
  EXPECT_EQ(a, Catalog(10));
  EXPECT_NE(a, Catalog(20));
}

}  // namespace
}  // namespace sb::scheduler
