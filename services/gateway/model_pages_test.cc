#include "gateway/model_pages.h"

#include "gtest/gtest.h"

namespace sb::gateway {
namespace {

std::vector<std::string> Ids(const ModelPage& p) {
  std::vector<std::string> out;
  for (const auto& m : p.models) out.push_back(m.id);
  return out;
}

const std::vector<ModelEntry> kModels = {{"a", 0}, {"b", 0}, {"c", 0}, {"d", 0}, {"e", 0}};

TEST(PageModelsTest, FirstPageAndHasMore) {
  auto p = PageModels(kModels, 2, "", "");
  EXPECT_EQ(Ids(p), (std::vector<std::string>{"a", "b"}));
  EXPECT_TRUE(p.has_more);
  auto all = PageModels(kModels, 20, "", "");
  EXPECT_EQ(all.models.size(), 5u);
  EXPECT_FALSE(all.has_more);
}

TEST(PageModelsTest, AfterAnId) {
  auto p = PageModels(kModels, 2, "b", "");
  EXPECT_EQ(Ids(p), (std::vector<std::string>{"c", "d"}));
  EXPECT_TRUE(p.has_more);
  auto last = PageModels(kModels, 2, "d", "");
  EXPECT_EQ(Ids(last), (std::vector<std::string>{"e"}));
  EXPECT_FALSE(last.has_more);
  EXPECT_TRUE(PageModels(kModels, 2, "zzz", "").models.empty());
  // An id that is not in the list pages from where it would be.
  EXPECT_EQ(Ids(PageModels(kModels, 2, "bb", "")), (std::vector<std::string>{"c", "d"}));
}

TEST(PageModelsTest, BeforeAnIdTakesTheLimitJustBeforeIt) {
  auto p = PageModels(kModels, 2, "", "e");
  EXPECT_EQ(Ids(p), (std::vector<std::string>{"c", "d"}));
  EXPECT_TRUE(p.has_more) << "a and b come before";
  auto first = PageModels(kModels, 2, "", "b");
  EXPECT_EQ(Ids(first), (std::vector<std::string>{"a"}));
  EXPECT_FALSE(first.has_more);
}

}  // namespace
}  // namespace sb::gateway
