#include "gateway/filters/auth.h"

#include <chrono>
#include <thread>

#include "core/crypto.h"
#include "gateway/context.h"
#include "gateway/dialects/anthropic.h"
#include "gateway/dialects/openai.h"
#include "gtest/gtest.h"
#include "testing/fake_exchange.h"
#include "testing/fake_storage.h"
#include "testing/manual_clock.h"

namespace sb::gateway {
namespace {

using sb::testing::FakeExchange;
using sb::testing::FakeKeyStore;
using sb::testing::MakeRequest;
using sb::testing::ManualClock;

const absl::Time kT0 = absl::FromUnixSeconds(1'700'000'000);

class AuthenticatorTest : public ::testing::Test {
 protected:
  void SetUp() override { store_.Add("sk-good", Principal{"k1", "org1", ""}); }
  FakeKeyStore store_;
  Authenticator auth_{store_, absl::Seconds(60), absl::Seconds(5)};
};

TEST_F(AuthenticatorTest, AcceptsKnownKeysAndCachesThem) {
  auto p = auth_.Authenticate("sk-good", kT0);
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->org_id, "org1");
  EXPECT_TRUE(auth_.Authenticate("sk-good", kT0 + absl::Seconds(30)).ok());
  EXPECT_EQ(store_.lookups(), 1);
  EXPECT_TRUE(auth_.Authenticate("sk-good", kT0 + absl::Seconds(61)).ok());
  EXPECT_EQ(store_.lookups(), 2) << "the cached entry expired";
}

TEST_F(AuthenticatorTest, RejectsUnknownAndMissingKeys) {
  EXPECT_EQ(auth_.Authenticate("sk-bad", kT0).status().code(), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(auth_.Authenticate("sk-bad", kT0 + absl::Seconds(1)).status().code(),
            absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(store_.lookups(), 1) << "refusals are cached briefly too";
  EXPECT_EQ(auth_.Authenticate("", kT0).status().code(), absl::StatusCode::kUnauthenticated);
}

TEST_F(AuthenticatorTest, ServesKnownKeysWhileTheStoreIsDown) {
  ASSERT_TRUE(auth_.Authenticate("sk-good", kT0).ok());
  store_.set_available(false);
  EXPECT_TRUE(auth_.Authenticate("sk-good", kT0 + absl::Minutes(5)).ok());
  EXPECT_EQ(auth_.Authenticate("sk-other", kT0).status().code(), absl::StatusCode::kUnavailable);
}

TEST(ApiKeyOfTest, ReadsBothHeaderStyles) {
  EXPECT_EQ(ApiKeyOf(MakeRequest("GET", "/", {{"x-api-key", "k1"}})), "k1");
  EXPECT_EQ(ApiKeyOf(MakeRequest("GET", "/", {{"authorization", "Bearer k2"}})), "k2");
  EXPECT_EQ(ApiKeyOf(MakeRequest("GET", "/", {{"authorization", "Basic abc"}})), "");
}

class AuthFilterTest : public ::testing::Test {
 protected:
  void SetUp() override { store_.Add("sk-good", Principal{"k1", "org1", "u1"}); }

  // Runs the filter; returns whether it continued.
  bool Run(std::map<std::string, std::string> headers, const Dialect& dialect) {
    exchange_ = std::make_shared<FakeExchange>(MakeRequest("POST", "/v1/x", std::move(headers)));
    ctx_ = std::make_shared<RequestContext>(exchange_, "req_1", clock_, metrics_);
    ctx_->route_name = "/v1/x";
    ctx_->dialect = &dialect;
    std::atomic<bool> next{false};
    filter_.Handle(ctx_, [&] { next = true; });
    // A cache miss continues on the pool.
    for (int i = 0; i < 500 && !next && exchange_->responses() == 0; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    return next;
  }

  ManualClock clock_;
  metrics::Registry registry_;
  GatewayMetrics metrics_{registry_};
  FakeKeyStore store_;
  Authenticator auth_{store_, absl::Seconds(60), absl::Seconds(5)};
  ThreadPool pool_{1, 16};
  AuthFilter filter_{auth_, pool_};
  AnthropicDialect anthropic_;
  OpenAiDialect openai_;
  std::shared_ptr<FakeExchange> exchange_;
  std::shared_ptr<RequestContext> ctx_;
};

TEST_F(AuthFilterTest, SetsThePrincipalAndContinues) {
  ASSERT_TRUE(Run({{"x-api-key", "sk-good"}}, anthropic_));
  EXPECT_EQ(ctx_->principal->org_id, "org1");
  EXPECT_EQ(ctx_->principal->user_id, "u1");
  ASSERT_TRUE(Run({{"authorization", "Bearer sk-good"}}, openai_));
  EXPECT_EQ(store_.lookups(), 1) << "the second request was served from the cache";
}

TEST_F(AuthFilterTest, RefusesWithTheDialectsErrorShape) {
  EXPECT_FALSE(Run({}, anthropic_));
  EXPECT_EQ(exchange_->status(), 401);
  EXPECT_NE(exchange_->body().find(R"("type":"authentication_error")"), std::string::npos);
  EXPECT_EQ(exchange_->header("request-id"), "req_1");

  EXPECT_FALSE(Run({{"authorization", "Bearer sk-nope"}}, openai_));
  EXPECT_EQ(exchange_->status(), 401);
  EXPECT_NE(exchange_->body().find(R"("code":"invalid_api_key")"), std::string::npos);
}

TEST_F(AuthFilterTest, AStoreOutageIsOverloadNotAnAuthFailure) {
  store_.set_available(false);
  EXPECT_FALSE(Run({{"x-api-key", "sk-good"}}, anthropic_));
  EXPECT_EQ(exchange_->status(), 529);
  EXPECT_EQ(exchange_->header("retry-after"), "1");
}

}  // namespace
}  // namespace sb::gateway
