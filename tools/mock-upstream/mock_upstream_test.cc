#include "tools/mock-upstream/mock_upstream.h"

#include <nlohmann/json.hpp>

#include "gtest/gtest.h"
#include "http/http_client.h"

namespace sb::mock {
namespace {

using json = nlohmann::json;

class MockUpstreamTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_TRUE(mock_.Start().ok()); }
  http::Response Post(const std::string& target, const json& body, http::Headers headers = {}) {
    auto r = http::Fetch({.port = mock_.port(),
                          .method = "POST",
                          .target = target,
                          .headers = std::move(headers),
                          .body = body.dump()});
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? *r : http::Response{};
  }
  http::Response Get(const std::string& target) {
    auto r = http::Fetch({.port = mock_.port(), .target = target});
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? *r : http::Response{};
  }
  MockUpstream mock_{{.models = {"m1", "m2"}, .reply_tokens = 6}};
};

TEST_F(MockUpstreamTest, WholeOpenAIAndAnthropicReplies) {
  auto r = Post("/v1/chat/completions",
                {{"model", "m1"}, {"messages", {{{"role", "user"}, {"content", "a b c"}}}}});
  ASSERT_EQ(r.status, 200);
  json j = json::parse(r.body);
  EXPECT_EQ(j["choices"][0]["message"]["content"], "The quick brown fox jumps over");
  EXPECT_EQ(j["choices"][0]["finish_reason"], "stop");
  EXPECT_EQ(j["usage"]["prompt_tokens"], 3);
  EXPECT_EQ(j["usage"]["completion_tokens"], 6);

  r = Post(
      "/v1/messages",
      {{"model", "m1"}, {"max_tokens", 2}, {"messages", {{{"role", "user"}, {"content", "hi"}}}}});
  ASSERT_EQ(r.status, 200);
  j = json::parse(r.body);
  EXPECT_EQ(j["content"][0]["text"], "The quick");
  EXPECT_EQ(j["stop_reason"], "max_tokens");
  EXPECT_EQ(j["usage"]["output_tokens"], 2);
}

TEST_F(MockUpstreamTest, ModesFromHeaderAndDefaultAndControlEndpoints) {
  auto r =
      Post("/v1/chat/completions", {{"messages", json::array()}}, {{"x-mock-mode", "fail=429"}});
  EXPECT_EQ(r.status, 429);
  EXPECT_EQ(r.headers["retry-after"], "1");

  EXPECT_EQ(Post("/mock/config", {{"mode", "fail=503"}, {"waiting", 4}}).status, 200);
  EXPECT_EQ(Post("/v1/chat/completions", {{"messages", json::array()}}).status, 503);
  EXPECT_NE(Get("/metrics").body.find("vllm:num_requests_waiting{model_name=\"m1\"} 4"),
            std::string::npos);

  json stats = json::parse(Get("/mock/stats").body);
  EXPECT_EQ(stats["requests"], 2);
  EXPECT_EQ(stats["failed"], 2);
  EXPECT_EQ(stats["aborted"], 0);
  EXPECT_EQ(Post("/mock/reset", json::object()).status, 200);
  EXPECT_EQ(mock_.Stats().requests, 0u);

  json models = json::parse(Get("/v1/models").body);
  ASSERT_EQ(models["data"].size(), 2u);
  EXPECT_EQ(models["data"][1]["id"], "m2");
  EXPECT_EQ(Get("/nope").status, 404);
}

TEST_F(MockUpstreamTest, StreamedChunksEndWithUsageAndDone) {
  std::string body;
  auto r = http::FetchStreaming({.port = mock_.port(),
                                 .method = "POST",
                                 .target = "/v1/chat/completions",
                                 .body = json{{"stream", true},
                                              {"stream_options", {{"include_usage", true}}},
                                              {"stop", "fox"},
                                              {"messages", json::array()}}
                                             .dump()},
                                [&](std::string_view piece) {
                                  body.append(piece);
                                  return true;
                                });
  ASSERT_TRUE(r.ok());
  EXPECT_NE(body.find("\"stop_reason\":\"fox\""), std::string::npos);
  EXPECT_NE(body.find("\"completion_tokens\":4"), std::string::npos);
  EXPECT_TRUE(body.ends_with("data: [DONE]\n\n"));
}

}  // namespace
}  // namespace sb::mock
