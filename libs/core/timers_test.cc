#include "core/timers.h"

#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

#include "gtest/gtest.h"

namespace sb {
namespace {

TEST(TimerThreadTest, RunsInDeadlineOrderAndSkipsCancelled) {
  TimerThread timers;
  std::mutex mu;
  std::vector<int> ran;
  std::atomic<int> count{0};
  auto record = [&](int n) {
    return [&, n] {
      std::lock_guard<std::mutex> lock(mu);
      ran.push_back(n);
      ++count;
    };
  };
  timers.After(absl::Milliseconds(60), record(3));
  timers.After(absl::Milliseconds(20), record(1));
  const auto cancelled = timers.After(absl::Milliseconds(40), record(2));
  timers.After(absl::Milliseconds(40), record(4));
  EXPECT_TRUE(timers.Cancel(cancelled));
  EXPECT_FALSE(timers.Cancel(cancelled));
  for (int i = 0; i < 500 && count.load() < 3; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  std::lock_guard<std::mutex> lock(mu);
  EXPECT_EQ(ran, (std::vector<int>{1, 4, 3}));
  EXPECT_EQ(timers.pending(), 0u);
}

TEST(TimerThreadTest, DestructionDropsPendingTimers) {
  std::atomic<bool> ran{false};
  {
    TimerThread timers;
    timers.After(absl::Hours(1), [&] { ran = true; });
    EXPECT_EQ(timers.pending(), 1u);
  }
  EXPECT_FALSE(ran.load());
}

}  // namespace
}  // namespace sb
