#include "safety/pii.h"

#include "gtest/gtest.h"
#include "safety/policy.h"

namespace sb::safety {
namespace {

TEST(PiiTest, FindsEmailAddresses) {
  const std::string text = "write to jane.doe+x@example.co.uk. or bob@corp.io";
  auto f = FindPii(text);
  ASSERT_EQ(f.size(), 2u);
  EXPECT_EQ(text.substr(f[0].start, f[0].end - f[0].start), "jane.doe+x@example.co.uk");
  EXPECT_EQ(text.substr(f[1].start, f[1].end - f[1].start), "bob@corp.io");
  EXPECT_EQ(f[0].category, "pii.email");
}

TEST(PiiTest, IgnoresThingsThatAreNotAddresses) {
  EXPECT_TRUE(FindPii("meet @ noon, a@b, user@localhost, x@y.1").empty());
}

TEST(PiiTest, FindsLuhnValidCardNumbersOnly) {
  EXPECT_TRUE(LuhnValid("4111111111111111"));
  EXPECT_FALSE(LuhnValid("4111111111111112"));
  const std::string text = "card 4111 1111 1111 1111 and 4111-1111-1111-1112 and 79927398713";
  auto f = FindPii(text);
  ASSERT_EQ(f.size(), 1u);
  EXPECT_EQ(f[0].category, "pii.card_number");
  EXPECT_EQ(text.substr(f[0].start, f[0].end - f[0].start), "4111 1111 1111 1111");
}

TEST(PiiTest, DigitsInsideWordsAreNotCards) {
  EXPECT_TRUE(FindPii("id x4111111111111111 and 4111111111111111y").empty());
}

TEST(PolicyTest, BlocksInputWithPiiAndExplains) {
  auto v = Evaluate("my card is 5500 0000 0000 0004, mail me at a@b.org", Direction::kInput);
  EXPECT_FALSE(v.allowed);
  EXPECT_NE(v.reason.find("payment card number"), std::string::npos) << v.reason;
  EXPECT_NE(v.reason.find("e-mail address"), std::string::npos) << v.reason;
  EXPECT_TRUE(Evaluate("hello there", Direction::kInput).allowed);
}

}  // namespace
}  // namespace sb::safety
