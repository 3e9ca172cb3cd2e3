#include "core/ulid.h"

#include <set>

#include "absl/time/clock.h"
#include "gtest/gtest.h"

namespace sb {
namespace {

TEST(UlidTest, CanonicalFormAndTimestamp) {
  UlidGenerator ids;
  const absl::Time t = absl::FromUnixMillis(1'700'000'000'123);
  const std::string id = ids.Next(t);
  EXPECT_EQ(id.size(), 26u);
  EXPECT_TRUE(IsValidUlid(id));
  EXPECT_EQ(UlidTimestampMs(id), 1'700'000'000'123u);
}

TEST(UlidTest, MonotonicWithinOneMillisecond) {
  UlidGenerator ids;
  const absl::Time t = absl::FromUnixMillis(1'700'000'000'000);
  std::string prev = ids.Next(t);
  for (int i = 0; i < 1000; ++i) {
    std::string next = ids.Next(t);
    ASSERT_LT(prev, next);
    prev = next;
  }
}

TEST(UlidTest, OrderedAcrossTimeAndClockStepBack) {
  UlidGenerator ids;
  const std::string a = ids.Next(absl::FromUnixMillis(2000));
  const std::string b = ids.Next(absl::FromUnixMillis(3000));
  const std::string c = ids.Next(absl::FromUnixMillis(1000));  // clock went back
  EXPECT_LT(a, b);
  EXPECT_LT(b, c);
  EXPECT_EQ(UlidTimestampMs(c), 3000u);
}

TEST(UlidTest, RejectsMalformed) {
  EXPECT_FALSE(IsValidUlid(""));
  EXPECT_FALSE(IsValidUlid("01ARZ3NDEKTSV4RRFFQ69G5FA"));    // 25 chars
  EXPECT_FALSE(IsValidUlid("01ARZ3NDEKTSV4RRFFQ69G5FAU"));   // U is not in the alphabet
  EXPECT_FALSE(IsValidUlid("81ARZ3NDEKTSV4RRFFQ69G5FAV"));   // overflows 128 bits
  EXPECT_TRUE(IsValidUlid("01ARZ3NDEKTSV4RRFFQ69G5FAV"));
}

TEST(UlidTest, TheLowerBoundOfATimeSeparatesIdsMadeBeforeItFromThoseAtOrAfter) {
  const absl::Time t = absl::FromUnixMillis(1764633600123);
  const std::string bound = UlidLowerBound(t);
  EXPECT_TRUE(IsValidUlid(bound));
  EXPECT_EQ(UlidTimestampMs(bound), 1764633600123u);
  // Separate generators: one alone never goes back in time.
  UlidGenerator before, at, after;
  for (int i = 0; i < 100; ++i) {
    EXPECT_LT(before.Next(t - absl::Milliseconds(1)), bound);
    EXPECT_GE(at.Next(t), bound);
    EXPECT_GT(after.Next(t + absl::Milliseconds(1)), bound);
  }
  EXPECT_EQ(UlidLowerBound(absl::InfinitePast()), std::string(26, '0'));
}

TEST(UlidTest, Unique) {
  UlidGenerator ids;
  std::set<std::string> seen;
  for (int i = 0; i < 10000; ++i) seen.insert(ids.Next(absl::Now()));
  EXPECT_EQ(seen.size(), 10000u);
}

}  // namespace
}  // namespace sb
