#include "safety/throttle.h"

#include "gtest/gtest.h"

namespace sb::safety {
namespace {

const absl::Time kT0 = absl::FromUnixSeconds(1'800'000'000);

TEST(InputThrottleTest, MoreRefusalsThanTheLimitWithinTheWindowStartACooldown) {
  InputThrottle t({.limit = 3, .window = absl::Minutes(1), .cooldown = absl::Minutes(5)});
  for (int i = 0; i < 3; ++i) {
    EXPECT_FALSE(t.RecordBlocked("org", "u1", kT0 + absl::Seconds(i)));
    EXPECT_EQ(t.Wait("org", "u1", kT0 + absl::Seconds(i)), absl::ZeroDuration());
  }
  EXPECT_TRUE(t.RecordBlocked("org", "u1", kT0 + absl::Seconds(10)));
  EXPECT_EQ(t.Wait("org", "u1", kT0 + absl::Seconds(10)), absl::Minutes(5));
  EXPECT_EQ(t.Wait("org", "u1", kT0 + absl::Seconds(70)), absl::Seconds(240));
  // Another user, or the same user id in another org, is not throttled.
  EXPECT_EQ(t.Wait("org", "u2", kT0 + absl::Seconds(10)), absl::ZeroDuration());
  EXPECT_EQ(t.Wait("other", "u1", kT0 + absl::Seconds(10)), absl::ZeroDuration());
  // The cool-down ends, and the count starts again.
  const absl::Time after = kT0 + absl::Seconds(10) + absl::Minutes(5);
  EXPECT_EQ(t.Wait("org", "u1", after), absl::ZeroDuration());
  EXPECT_FALSE(t.RecordBlocked("org", "u1", after));
}

TEST(InputThrottleTest, RefusalsOutsideTheWindowDoNotCount) {
  InputThrottle t({.limit = 2, .window = absl::Seconds(10)});
  for (int i = 0; i < 10; ++i) {
    EXPECT_FALSE(t.RecordBlocked("org", "u", kT0 + absl::Seconds(6 * i))) << i;
  }
  EXPECT_EQ(t.Wait("org", "u", kT0 + absl::Seconds(60)), absl::ZeroDuration());
}

TEST(InputThrottleTest, NoEndUserOrALimitOfZeroIsNeverThrottled) {
  InputThrottle anonymous({.limit = 1});
  InputThrottle off({.limit = 0});
  for (int i = 0; i < 5; ++i) {
    EXPECT_FALSE(anonymous.RecordBlocked("org", "", kT0));
    EXPECT_FALSE(off.RecordBlocked("org", "u", kT0));
  }
  EXPECT_EQ(anonymous.Wait("org", "", kT0), absl::ZeroDuration());
  EXPECT_EQ(off.Wait("org", "u", kT0), absl::ZeroDuration());
}

TEST(InputThrottleTest, RemembersAtMostMaxUsersAndKeepsTheCooldownsItCan) {
  InputThrottle t({.limit = 1, .window = absl::Seconds(10), .max_users = 100});
  // u0 is throttled; then 200 users each with one refusal, long after.
  t.RecordBlocked("org", "u0", kT0);
  t.RecordBlocked("org", "u0", kT0);
  ASSERT_GT(t.Wait("org", "u0", kT0), absl::ZeroDuration());
  for (int i = 1; i <= 200; ++i) {
    t.RecordBlocked("org", "u" + std::to_string(i), kT0 + absl::Seconds(20 + i));
    EXPECT_LE(t.users(), 100u);
  }
  EXPECT_GT(t.Wait("org", "u0", kT0 + absl::Seconds(60)), absl::ZeroDuration())
      << "a cool-down outlives users with nothing recent";
}

}  // namespace
}  // namespace sb::safety
