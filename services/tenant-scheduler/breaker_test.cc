// The circuit breaker on a manual clock: time moves only when a test says.
#include "tenant-scheduler/breaker.h"

#include "core/metrics.h"
#include "gtest/gtest.h"
#include "testing/manual_clock.h"

namespace sb::scheduler {
namespace {

using sb::testing::ManualClock;

class BreakerTest : public ::testing::Test {
 protected:
  // Defaults: 10 s window, 50 %, 20 requests, 10 s cool-down, 3 probes.
  BreakerTest() : breaker_(clock_, Breaker::Options{}, metrics_) {}

  // `n` outcomes, each let through first.
  void Send(int n, bool ok, const std::string& version = "v1") {
    for (int i = 0; i < n; ++i) {
      ASSERT_TRUE(breaker_.Allow(version));
      breaker_.Record(version, ok);
    }
  }
  double StateGauge(const std::string& version) {
    return metrics_.GetGauge("sb_scheduler_breaker_state", "", {{"version", version}}).Value();
  }
  double Transitions(const std::string& version, const std::string& to) {
    return metrics_
        .GetCounter("sb_scheduler_breaker_transitions_total", "",
                    {{"version", version}, {"to", to}})
        .Value();
  }

  ManualClock clock_;
  metrics::Registry metrics_;
  Breaker breaker_;
};

TEST_F(BreakerTest, AnUnknownVersionIsClosedAndAllowed) {
  EXPECT_EQ(breaker_.State("never-seen"), BreakerState::kClosed);
  EXPECT_TRUE(breaker_.Allow("never-seen"));
}

TEST_F(BreakerTest, OpensWhenTheErrorShareReachesTheThreshold) {
  Send(10, true);
  Send(9, false);
  EXPECT_EQ(breaker_.State("v1"), BreakerState::kClosed);  // 19 requests: too few to judge
  Send(1, false);                                          // 10 of 20 failed: 50 %
  EXPECT_EQ(breaker_.State("v1"), BreakerState::kOpen);
  EXPECT_FALSE(breaker_.Allow("v1"));
  EXPECT_EQ(StateGauge("v1"), 2);
  EXPECT_EQ(Transitions("v1", "open"), 1);
  // Other versions are not affected.
  EXPECT_TRUE(breaker_.Allow("v2"));
  EXPECT_EQ(breaker_.State("v2"), BreakerState::kClosed);
}

TEST_F(BreakerTest, StaysClosedBelowTheThreshold) {
  Send(11, true);
  Send(9, false);  // 45 %
  Send(20, true);
  EXPECT_EQ(breaker_.State("v1"), BreakerState::kClosed);
  EXPECT_EQ(StateGauge("v1"), 0);
}

TEST_F(BreakerTest, NeverOpensBelowMinRequestsEvenWhenEveryOneFails) {
  Send(19, false);
  EXPECT_EQ(breaker_.State("v1"), BreakerState::kClosed);
  EXPECT_TRUE(breaker_.Allow("v1"));
}

TEST_F(BreakerTest, TheWindowSlidesOldErrorsOut) {
  Send(15, false);
  // Ten seconds later those errors are out of the window: 15 more, all
  // failures, are again fewer than 20.
  clock_.Advance(absl::Seconds(10));
  Send(15, false);
  EXPECT_EQ(breaker_.State("v1"), BreakerState::kClosed);
  // Within the window they add up.
  clock_.Advance(absl::Seconds(5));
  Send(5, false);
  EXPECT_EQ(breaker_.State("v1"), BreakerState::kOpen);
}

TEST_F(BreakerTest, TheWindowCountsWhatHappenedInItsLastTenSeconds) {
  Send(20, true);
  clock_.Advance(absl::Seconds(5));
  Send(19, false);  // 19 of 39
  EXPECT_EQ(breaker_.State("v1"), BreakerState::kClosed);
  clock_.Advance(absl::Seconds(6));  // the 20 successes leave the window
  Send(1, false);                    // 20 of 20
  EXPECT_EQ(breaker_.State("v1"), BreakerState::kOpen);
}

TEST_F(BreakerTest, HalfOpenAfterTheCoolDownLetsOnlyTheProbesThrough) {
  Send(20, false);
  ASSERT_EQ(breaker_.State("v1"), BreakerState::kOpen);
  clock_.Advance(absl::Seconds(9));
  EXPECT_FALSE(breaker_.Allow("v1"));
  clock_.Advance(absl::Seconds(1));
  EXPECT_EQ(breaker_.State("v1"), BreakerState::kHalfOpen);
  EXPECT_EQ(StateGauge("v1"), 1);
  EXPECT_TRUE(breaker_.Allow("v1"));
  EXPECT_TRUE(breaker_.Allow("v1"));
  EXPECT_TRUE(breaker_.Allow("v1"));
  EXPECT_FALSE(breaker_.Allow("v1"));  // three probes in flight
  breaker_.Record("v1", true);
  breaker_.Record("v1", true);
  EXPECT_EQ(breaker_.State("v1"), BreakerState::kHalfOpen);
  breaker_.Record("v1", true);
  EXPECT_EQ(breaker_.State("v1"), BreakerState::kClosed);
  EXPECT_EQ(StateGauge("v1"), 0);
  EXPECT_EQ(Transitions("v1", "half_open"), 1);
  EXPECT_EQ(Transitions("v1", "closed"), 1);
  // Closed again with a fresh window: the errors that opened it are gone.
  Send(19, false);
  EXPECT_EQ(breaker_.State("v1"), BreakerState::kClosed);
}

TEST_F(BreakerTest, AFailedProbeOpensItAgainForAnotherCoolDown) {
  Send(20, false);
  clock_.Advance(absl::Seconds(10));
  ASSERT_TRUE(breaker_.Allow("v1"));
  ASSERT_TRUE(breaker_.Allow("v1"));
  breaker_.Record("v1", true);
  breaker_.Record("v1", false);
  EXPECT_EQ(breaker_.State("v1"), BreakerState::kOpen);
  EXPECT_EQ(Transitions("v1", "open"), 2);
  clock_.Advance(absl::Seconds(9));
  EXPECT_FALSE(breaker_.Allow("v1"));
  clock_.Advance(absl::Seconds(1));
  EXPECT_TRUE(breaker_.Allow("v1"));
  EXPECT_EQ(breaker_.State("v1"), BreakerState::kHalfOpen);
}

TEST_F(BreakerTest, OutcomesArrivingWhileOpenAreIgnored) {
  Send(20, false);
  ASSERT_EQ(breaker_.State("v1"), BreakerState::kOpen);
  for (int i = 0; i < 50; ++i) breaker_.Record("v1", true);  // started before it opened
  EXPECT_EQ(breaker_.State("v1"), BreakerState::kOpen);
  EXPECT_FALSE(breaker_.Allow("v1"));
}

TEST_F(BreakerTest, ProbesThatNeverReportBackAreHandedOutAgain) {
  Send(20, false);
  clock_.Advance(absl::Seconds(10));
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(breaker_.Allow("v1"));
  breaker_.Record("v1", true);  // two probes are lost (their requests were cancelled)
  EXPECT_FALSE(breaker_.Allow("v1"));
  clock_.Advance(absl::Seconds(10));
  EXPECT_TRUE(breaker_.Allow("v1"));
  EXPECT_TRUE(breaker_.Allow("v1"));
  EXPECT_FALSE(breaker_.Allow("v1"));
  breaker_.Record("v1", true);
  breaker_.Record("v1", true);
  EXPECT_EQ(breaker_.State("v1"), BreakerState::kClosed);
}

TEST_F(BreakerTest, OptionsAreHonoured) {
  ManualClock clock;
  metrics::Registry metrics;
  Breaker b(clock,
            {.window = absl::Seconds(1),
             .error_threshold = 0.2,
             .min_requests = 5,
             .cool_down = absl::Seconds(2),
             .probes = 1},
            metrics);
  for (int i = 0; i < 4; ++i) b.Record("v", true);
  b.Record("v", false);  // 1 of 5: 20 %
  EXPECT_EQ(b.State("v"), BreakerState::kOpen);
  clock.Advance(absl::Seconds(2));
  EXPECT_TRUE(b.Allow("v"));
  EXPECT_FALSE(b.Allow("v"));
  b.Record("v", true);
  EXPECT_EQ(b.State("v"), BreakerState::kClosed);
}

}  // namespace
}  // namespace sb::scheduler
