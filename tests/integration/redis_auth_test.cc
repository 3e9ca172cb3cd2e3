// Redis AUTH (--redis_password): against a real redis-server started with
// requirepass, the blocking client and the pipeline authenticate every new
// connection, and a wrong or missing password is a clear refusal, never a
// hang.
#include <chrono>
#include <filesystem>
#include <future>
#include <string>
#include <thread>

#include "gtest/gtest.h"
#include "storage/redis.h"
#include "storage/redis_pipeline.h"
#include "support/process.h"

namespace sb::testing {
namespace {

class RedisAuthTest : public ::testing::Test {
 protected:
  void SetUp() override {
    port_ = FreePort();
    dir_ = ::testing::TempDir() + "/redis-auth-" + std::to_string(port_);
    std::filesystem::create_directories(dir_);
    server_ = Process("redis-auth",
                      {"/usr/bin/redis-server", "--port", std::to_string(port_), "--bind",
                       "127.0.0.1", "--requirepass", "s3cret-pass", "--save", "", "--appendonly",
                       "no", "--dir", dir_},
                      dir_ + "/redis.log");
    RedisClient probe({.port = port_, .pool_size = 1, .password = "s3cret-pass"});
    bool up = false;
    for (int i = 0; i < 200 && !(up = probe.Command({"PING"}).ok()); ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    ASSERT_TRUE(up) << "redis-server with requirepass did not start";
  }
  int port_ = 0;
  std::string dir_;
  Process server_;
};

TEST_F(RedisAuthTest, TheRightPasswordIsServedAndOthersAreRefused) {
  RedisClient good({.port = port_, .pool_size = 1, .password = "s3cret-pass"});
  auto pong = good.Command({"PING"});
  ASSERT_TRUE(pong.ok()) << pong.status();
  EXPECT_EQ(pong->str, "PONG");

  RedisClient none({.port = port_, .pool_size = 1});
  auto refused = none.Command({"PING"});
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.status().message().find("NOAUTH"), std::string::npos) << refused.status();

  RedisClient wrong({.port = port_, .pool_size = 1, .password = "guess"});
  auto st = wrong.Command({"PING"}).status();
  EXPECT_EQ(st.code(), absl::StatusCode::kUnauthenticated) << st;
  EXPECT_EQ(st.message().find("guess"), std::string::npos) << "the password is never echoed";
}

TEST_F(RedisAuthTest, ThePipelineAuthenticatesItsConnection) {
  RedisPipeline good({.port = port_, .password = "s3cret-pass"});
  std::promise<absl::StatusOr<RedisReply>> got;
  good.Command({"SET", "k", "v"}, [&](absl::StatusOr<RedisReply> r) { got.set_value(r); });
  auto r = got.get_future().get();
  EXPECT_TRUE(r.ok()) << r.status();

  RedisPipeline wrong({.port = port_, .password = "guess"});
  std::promise<absl::StatusOr<RedisReply>> refused;
  wrong.Command({"GET", "k"}, [&](absl::StatusOr<RedisReply> r) { refused.set_value(r); });
  EXPECT_EQ(refused.get_future().get().status().code(), absl::StatusCode::kUnauthenticated);
  good.Stop();
  wrong.Stop();
}

}  // namespace
}  // namespace sb::testing
