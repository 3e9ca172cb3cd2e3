#include "gateway/filters/body.h"

#include "gateway/context.h"
#include "gateway/dialects/anthropic.h"
#include "gateway/dialects/openai.h"
#include "gtest/gtest.h"
#include "testing/fake_exchange.h"
#include "testing/manual_clock.h"

namespace sb::gateway {
namespace {

using sb::testing::FakeExchange;
using sb::testing::MakeRequest;

class BodyFiltersTest : public ::testing::Test {
 protected:
  // Runs JSON then parse; returns whether both continued.
  bool Run(std::string body, const Dialect& dialect, ParseMode mode = ParseMode::kGenerate) {
    exchange_ = std::make_shared<FakeExchange>(MakeRequest("POST", "/v1/x", {}, std::move(body)));
    ctx_ = std::make_shared<RequestContext>(exchange_, "req_1", clock_, metrics_);
    ctx_->route_name = "/v1/x";
    ctx_->dialect = &dialect;
    ParseFilter parse(mode);
    bool done = false;
    json_.Handle(ctx_, [&] { parse.Handle(ctx_, [&] { done = true; }); });
    return done;
  }

  sb::testing::ManualClock clock_;
  metrics::Registry registry_;
  GatewayMetrics metrics_{registry_};
  JsonBodyFilter json_;
  AnthropicDialect anthropic_;
  OpenAiDialect openai_;
  std::shared_ptr<FakeExchange> exchange_;
  std::shared_ptr<RequestContext> ctx_;
};

TEST_F(BodyFiltersTest, AValidBodyBecomesTheApiRequest) {
  ASSERT_TRUE(Run(R"({"model":"m","max_tokens":5,"messages":[{"role":"user","content":"hi"}]})",
                  anthropic_));
  ASSERT_NE(ctx_->api.generate, nullptr);
  EXPECT_EQ(ctx_->api.generate->model(), "m");
  EXPECT_EQ(exchange_->responses(), 0);
}

TEST_F(BodyFiltersTest, TheNestingBombIsA400NamingTheLimit) {
  EXPECT_FALSE(Run(std::string(4 << 20, '['), anthropic_));
  EXPECT_EQ(exchange_->status(), 400);
  EXPECT_NE(exchange_->body().find("deeper than 64"), std::string::npos) << exchange_->body();
}

TEST_F(BodyFiltersTest, ABadFieldIsA400InTheDialectsShape) {
  EXPECT_FALSE(Run(R"({"model":"m","messages":[{"role":"user","content":"hi"}],"n":3})", openai_));
  EXPECT_EQ(exchange_->status(), 400);
  EXPECT_NE(exchange_->body().find(R"("param":"n")"), std::string::npos) << exchange_->body();
}

TEST_F(BodyFiltersTest, CountingTokensNeedsNoMaxTokens) {
  EXPECT_TRUE(Run(R"({"model":"m","messages":[{"role":"user","content":"hi"}]})", anthropic_,
                  ParseMode::kCountTokens));
  EXPECT_FALSE(Run(R"({"model":"m","messages":[{"role":"user","content":"hi"}]})", anthropic_));
  EXPECT_NE(exchange_->body().find("max_tokens: Field required"), std::string::npos);
}

TEST_F(BodyFiltersTest, TheChatUserIsTheKeysOrTheHeadersOrDefault) {
  auto run = [&](std::string key_user, std::map<std::string, std::string> headers) {
    exchange_ = std::make_shared<FakeExchange>(MakeRequest("GET", "/v1/x", std::move(headers)));
    ctx_ = std::make_shared<RequestContext>(exchange_, "req_1", clock_, metrics_);
    ctx_->route_name = "/v1/x";
    ctx_->dialect = &anthropic_;
    ctx_->principal = Principal{"k", "org", std::move(key_user)};
    bool next = false;
    ChatUserFilter().Handle(ctx_, [&] { next = true; });
    return next;
  };
  ASSERT_TRUE(run("alice", {{"x-switchboard-user", "mallory"}}));
  EXPECT_EQ(ctx_->user_id, "alice") << "a user's key speaks for that user only";
  ASSERT_TRUE(run("", {{"x-switchboard-user", "bob"}}));
  EXPECT_EQ(ctx_->user_id, "bob");
  ASSERT_TRUE(run("", {}));
  EXPECT_EQ(ctx_->user_id, "default");
  EXPECT_FALSE(run("", {{"x-switchboard-user", std::string(200, 'u')}}));
  EXPECT_EQ(exchange_->status(), 400);
  EXPECT_NE(exchange_->body().find("x-switchboard-user"), std::string::npos);
}

}  // namespace
}  // namespace sb::gateway
