// CancelBus against a real Redis started for the suite: a stop published by
// one replica reaches every replica's reader, its own included.
#include "chat/cancel_bus.h"

#include <signal.h>

#include <chrono>
#include <mutex>
#include <set>
#include <thread>

#include "gtest/gtest.h"
#include "support/infra.h"

namespace sb::chat {
namespace {

using sb::testing::Infra;

class Received {
 public:
  void Add(const std::string& id) {
    std::lock_guard lock(mu_);
    ids_.insert(id);
  }
  bool Has(const std::string& id) {
    std::lock_guard lock(mu_);
    return ids_.count(id) > 0;
  }

 private:
  std::mutex mu_;
  std::set<std::string> ids_;
};

TEST(CancelBusTest, AStopPublishedByOneReplicaReachesEveryReplica) {
  auto infra = Infra::Start({.postgres = false, .redis = true, .kafka = false});
  ASSERT_TRUE(infra.ok()) << infra.status();
  RedisClient redis({.port = (*infra)->redis_port()});
  Received a_got, b_got;
  CancelBus a(redis, [&](const std::string& id) { a_got.Add(id); });
  CancelBus b(redis, [&](const std::string& id) { b_got.Add(id); });
  a.Start();
  b.Start();
  // A reader takes what arrives after its first read: publish until both
  // have one (their first reads may still be on their way).
  bool both = false;
  for (int i = 0; i < 100 && !both; ++i) {
    ASSERT_TRUE(a.Publish("warm-" + std::to_string(i)).ok());
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    both = a_got.Has("warm-" + std::to_string(i)) && b_got.Has("warm-" + std::to_string(i));
  }
  ASSERT_TRUE(both) << "the readers never started";

  ASSERT_TRUE(a.Publish("01JSTOPPEDREPLY00000000000").ok());
  ASSERT_TRUE(b.Publish("01JSTOPPEDREPLY00000000001").ok());
  for (int i = 0; i < 200; ++i) {
    if (a_got.Has("01JSTOPPEDREPLY00000000001") && b_got.Has("01JSTOPPEDREPLY00000000000")) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_TRUE(b_got.Has("01JSTOPPEDREPLY00000000000")) << "a's stop did not reach b";
  EXPECT_TRUE(a_got.Has("01JSTOPPEDREPLY00000000001")) << "b's stop did not reach a";
  EXPECT_TRUE(a_got.Has("01JSTOPPEDREPLY00000000000")) << "a reads its own too";
}

TEST(CancelBusTest, WithoutRedisPublishFailsAndTheReaderRecoversWhenItIsBack) {
  auto infra = Infra::Start({.postgres = false, .redis = true, .kafka = false});
  ASSERT_TRUE(infra.ok()) << infra.status();
  const int port = (*infra)->redis_port();
  RedisClient redis({.port = port, .timeout = std::chrono::milliseconds(300)});
  Received got;
  CancelBus bus(redis, [&](const std::string& id) { got.Add(id); });
  bus.Start();
  // Redis stops answering (SIGSTOP): a publish fails within the timeout,
  // and the reader's reads fail until it answers again.
  ASSERT_EQ(kill((*infra)->redis_pid(), SIGSTOP), 0);
  EXPECT_FALSE(bus.Publish("lost").ok());
  std::this_thread::sleep_for(std::chrono::milliseconds(2500));
  kill((*infra)->redis_pid(), SIGCONT);
  bool back = false;
  for (int i = 0; i < 100 && !back; ++i) {
    (void)bus.Publish("back-" + std::to_string(i));
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    back = got.Has("back-" + std::to_string(i));
  }
  EXPECT_TRUE(back) << "the reader did not come back with Redis";
}

}  // namespace
}  // namespace sb::chat
