#include "gateway/router.h"

#include "gtest/gtest.h"

namespace sb::gateway {
namespace {

Route R(std::string method, std::string pattern, DialectChoice d = DialectChoice::kAnthropic) {
  return Route{std::move(method), std::move(pattern), d, {}, nullptr};
}

class RouterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    router_.Add(R("POST", "/v1/messages"));
    router_.Add(R("POST", "/v1/messages/count_tokens"));
    router_.Add(R("POST", "/v1/chat/completions", DialectChoice::kOpenAi));
    router_.Add(R("GET", "/v1/models/{model_id}", DialectChoice::kByHeader));
    router_.Add(R("GET", "/v1/conversations/{id}/messages"));
    router_.Add(R("POST", "/v1/conversations/{id}/messages"));
    router_.Add(R("GET", "/v1/conversations/{id}/messages/{message_id}/stream"));
  }
  Router router_;
};

TEST_F(RouterTest, MatchesLiteralRoutes) {
  auto m = router_.Find("POST", "/v1/messages");
  ASSERT_NE(m.route, nullptr);
  EXPECT_EQ(m.route->pattern, "/v1/messages");
  EXPECT_TRUE(m.params.empty());
  // A longer literal path is its own route, not a prefix match.
  EXPECT_EQ(router_.Find("POST", "/v1/messages/count_tokens").route->pattern,
            "/v1/messages/count_tokens");
  // A trailing slash and doubled slashes name the same path.
  EXPECT_NE(router_.Find("POST", "/v1/messages/").route, nullptr);
}

TEST_F(RouterTest, PlaceholdersCaptureDecodedSegments) {
  auto m = router_.Find("GET", "/v1/conversations/01ABC/messages/01DEF/stream");
  ASSERT_NE(m.route, nullptr);
  EXPECT_EQ(m.params, (std::vector<std::string>{"01ABC", "01DEF"}));
  auto model = router_.Find("GET", "/v1/models/meta-llama%2FLlama-3.1-8B");
  ASSERT_NE(model.route, nullptr);
  EXPECT_EQ(model.params, (std::vector<std::string>{"meta-llama/Llama-3.1-8B"}));
  EXPECT_EQ(router_.Find("GET", "/v1/models/bad%zzescape").params[0], "bad%zzescape");
}

TEST_F(RouterTest, UnknownPathIsNotFoundAndAKnownPathWithAnotherMethodIs405) {
  auto none = router_.Find("GET", "/v1/nothing");
  EXPECT_EQ(none.route, nullptr);
  EXPECT_EQ(none.path_route, nullptr);
  EXPECT_TRUE(none.allowed.empty());

  auto wrong = router_.Find("DELETE", "/v1/conversations/01ABC/messages");
  EXPECT_EQ(wrong.route, nullptr);
  ASSERT_NE(wrong.path_route, nullptr);
  EXPECT_EQ(wrong.allowed, (std::vector<std::string>{"GET", "POST"}));

  auto chat = router_.Find("GET", "/v1/chat/completions");
  ASSERT_NE(chat.path_route, nullptr);
  EXPECT_EQ(chat.path_route->dialect, DialectChoice::kOpenAi) << "405 in the path's dialect";
}

TEST(RouterDialectTest, UnknownPathsUseTheDialectOfTheirApi) {
  EXPECT_EQ(Router::DialectForUnknownPath("/v1/chat/nope"), DialectChoice::kOpenAi);
  EXPECT_EQ(Router::DialectForUnknownPath("/v1/embeddings"), DialectChoice::kOpenAi);
  EXPECT_EQ(Router::DialectForUnknownPath("/v1/responses"), DialectChoice::kOpenAi);
  EXPECT_EQ(Router::DialectForUnknownPath("/v1/messages/batches"), DialectChoice::kAnthropic);
  EXPECT_EQ(Router::DialectForUnknownPath("/"), DialectChoice::kAnthropic);
}

TEST(PercentDecodeTest, DecodesValidEscapesOnly) {
  EXPECT_EQ(PercentDecode("a%20b%2Fc"), "a b/c");
  EXPECT_EQ(PercentDecode("100%"), "100%");
  EXPECT_EQ(PercentDecode("%4"), "%4");
  EXPECT_EQ(PercentDecode("%41%4a"), "AJ");
}

}  // namespace
}  // namespace sb::gateway
