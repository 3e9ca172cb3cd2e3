#include "core/periodic.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <thread>

namespace sb {
namespace {

// Waits (up to 5 s) for `count` to reach `n`.
bool Reaches(const std::atomic<int>& count, int n) {
  for (int i = 0; i < 500 && count.load() < n; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return count.load() >= n;
}

TEST(PeriodicTest, RunsFirstWhenAskedAndAgainWhenWoken) {
  std::atomic<int> runs{0};
  Periodic p(absl::Hours(1), [&] { ++runs; });
  p.Start(/*run_now=*/true);
  ASSERT_TRUE(Reaches(runs, 1));
  p.Wake();
  ASSERT_TRUE(Reaches(runs, 2));
  p.Stop();
  const int after = runs.load();
  p.Wake();
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_EQ(runs.load(), after) << "nothing runs after Stop";
}

TEST(PeriodicTest, WaitsItsPeriodUnlessToldToRunFirst) {
  std::atomic<int> runs{0};
  Periodic p(absl::Milliseconds(100), [&] { ++runs; });
  p.Start();
  EXPECT_EQ(runs.load(), 0);
  ASSERT_TRUE(Reaches(runs, 3)) << "every period";
}

TEST(PeriodicTest, StartAfterStopDoesNothing) {
  std::atomic<int> runs{0};
  Periodic p(absl::Milliseconds(1), [&] { ++runs; });
  p.Stop();
  p.Start(/*run_now=*/true);
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_EQ(runs.load(), 0);
}

}  // namespace
}  // namespace sb
