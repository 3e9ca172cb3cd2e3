// Which budget a request has used up, from the rows a refresh read; a
// failed refresh keeps the last rows.
#include "gateway/budgets/budgets.h"

#include <gtest/gtest.h>

#include "gateway/dialects/fields.h"

namespace sb::gateway {
namespace {

class FakeSource final : public BudgetSource {
 public:
  absl::StatusOr<std::vector<BudgetRow>> Load() override { return next; }
  absl::StatusOr<std::vector<BudgetRow>> next = std::vector<BudgetRow>{};
};

TEST(BudgetCacheTest, AnOrgOrKeyAtItsBudgetIsRefusedAndOthersAreNot) {
  FakeSource source;
  BudgetCache cache(source);
  source.next = std::vector<BudgetRow>{{"acme", "", 500'000'000, 499'999'999},
                                       {"acme", "k-spent", 1'000'000, 1'000'000},
                                       {"acme", "k-fine", 1'000'000, 10},
                                       {"broke", "", 1'000'000, 1'000'001}};
  ASSERT_TRUE(cache.Refresh().ok());
  EXPECT_FALSE(cache.Exhausted("acme", "k-fine").has_value()) << "a micro-dollar left";
  EXPECT_FALSE(cache.Exhausted("acme", "").has_value());
  EXPECT_FALSE(cache.Exhausted("acme", "k-no-budget").has_value());
  EXPECT_FALSE(cache.Exhausted("other", "k").has_value());
  auto key = cache.Exhausted("acme", "k-spent");
  ASSERT_TRUE(key.has_value());
  EXPECT_EQ(key->key_id, "k-spent");
  auto org = cache.Exhausted("broke", "any-key");
  ASSERT_TRUE(org.has_value());
  EXPECT_EQ(org->key_id, "") << "the org's budget covers every key";

  // The org reaches its budget on the next read; a failed read keeps it.
  source.next = std::vector<BudgetRow>{{"acme", "", 500'000'000, 500'000'000}};
  ASSERT_TRUE(cache.Refresh().ok());
  EXPECT_TRUE(cache.Exhausted("acme", "k-fine").has_value());
  EXPECT_FALSE(cache.Exhausted("broke", "").has_value()) << "its budget was removed";
  source.next = absl::UnavailableError("database down");
  EXPECT_FALSE(cache.Refresh().ok());
  EXPECT_TRUE(cache.Exhausted("acme", "k-fine").has_value());
}

TEST(BudgetCacheTest, TheRefusalSaysWhichBudgetAndHowMuchAndIsABillingError) {
  const auto org = BudgetExhaustedError({"acme", "", 500'000'000, 500'000'000});
  EXPECT_TRUE(IsBillingError(org));
  EXPECT_NE(org.message().find("organization's monthly budget of $500.00"), std::string::npos)
      << org;
  const auto key = BudgetExhaustedError({"acme", "k1", 1'234'567, 2'000'000});
  EXPECT_NE(key.message().find("API key's monthly budget of $1.24"), std::string::npos) << key;
  EXPECT_EQ(key.message().find("k1"), std::string::npos) << "no ids: " << key;
}

}  // namespace
}  // namespace sb::gateway
