#include "gateway/messages_api.h"

#include "gateway/api_error.h"
#include "gtest/gtest.h"

namespace sb::gateway {
namespace {

TEST(ParseMessagesRequestTest, AcceptsAMinimalRequest) {
  auto r = ParseMessagesRequest(
      R"({"model":"sim-small","max_tokens":64,"stream":true,"system":"be brief",)"
      R"("messages":[{"role":"user","content":"hello"},{"role":"assistant","content":[{"type":"text","text":"hi"}]},)"
      R"({"role":"user","content":"again"}],"stop_sequences":["END"]})");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(r->stream);
  EXPECT_EQ(r->generate.model(), "sim-small");
  EXPECT_EQ(r->generate.max_tokens(), 64);
  EXPECT_EQ(r->generate.system(), "be brief");
  ASSERT_EQ(r->generate.messages_size(), 3);
  EXPECT_EQ(r->generate.messages(1).content(), "hi");
  EXPECT_EQ(r->generate.stop_sequences(0), "END");
}

struct BadCase {
  const char* body;
  const char* message_part;
};

class ParseMessagesRequestBadTest : public ::testing::TestWithParam<BadCase> {};

TEST_P(ParseMessagesRequestBadTest, RejectsWithAClearMessage) {
  auto r = ParseMessagesRequest(GetParam().body);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find(GetParam().message_part), std::string::npos)
      << r.status().message();
}

INSTANTIATE_TEST_SUITE_P(
    Cases, ParseMessagesRequestBadTest,
    ::testing::Values(
        BadCase{"{not json", "not valid JSON"}, BadCase{"[1,2]", "JSON object"},
        BadCase{R"({"max_tokens":5,"messages":[{"role":"user","content":"x"}]})", "model: Field required"},
        BadCase{R"({"model":"m","messages":[{"role":"user","content":"x"}]})", "max_tokens: Field required"},
        BadCase{R"({"model":"m","max_tokens":0,"messages":[{"role":"user","content":"x"}]})", "greater than or equal to 1"},
        BadCase{R"({"model":"m","max_tokens":"5","messages":[{"role":"user","content":"x"}]})", "valid integer"},
        BadCase{R"({"model":"m","max_tokens":5})", "messages: Field required"},
        BadCase{R"({"model":"m","max_tokens":5,"messages":[]})", "at least one"},
        BadCase{R"({"model":"m","max_tokens":5,"messages":[{"role":"robot","content":"x"}]})", "'user' or 'assistant'"},
        BadCase{R"({"model":"m","max_tokens":5,"messages":[{"role":"user"}]})", "content: Field required"},
        BadCase{R"({"model":"m","max_tokens":5,"messages":[{"role":"user","content":[{"type":"image"}]}]})", "not supported"},
        BadCase{R"({"model":"m","max_tokens":5,"stream":"yes","messages":[{"role":"user","content":"x"}]})", "stream"}));

TEST(SseTest, EventsHaveTheAnthropicShape) {
  EXPECT_EQ(TextDeltaEvent("Hi", "m1:3"),
            "id: m1:3\nevent: content_block_delta\ndata: "
            R"({"delta":{"text":"Hi","type":"text_delta"},"index":0,"type":"content_block_delta"})"
            "\n\n");
  const std::string delta = MessageDeltaEvent("end_turn", "", {3, 7});
  EXPECT_NE(delta.find(R"("stop_reason":"end_turn")"), std::string::npos);
  EXPECT_NE(delta.find(R"("stop_sequence":null)"), std::string::npos);
  EXPECT_NE(delta.find(R"("output_tokens":7)"), std::string::npos);
  EXPECT_EQ(MessageStopEvent(), "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n");
}

TEST(ApiErrorTest, MapsStatusesToTheContract) {
  EXPECT_EQ(ToApiError(absl::UnauthenticatedError("x")).http_status, 401);
  EXPECT_EQ(ToApiError(absl::UnauthenticatedError("x")).type, "authentication_error");
  EXPECT_EQ(ToApiError(absl::NotFoundError("x")).type, "not_found_error");
  EXPECT_EQ(ToApiError(absl::InvalidArgumentError("x")).http_status, 400);
  const auto overloaded = ToApiError(absl::UnavailableError("x"));
  EXPECT_EQ(overloaded.http_status, 529);
  EXPECT_EQ(overloaded.type, "overloaded_error");
  EXPECT_GT(overloaded.retry_after_seconds, 0);
  EXPECT_EQ(ErrorBody(ToApiError(absl::NotFoundError("model: x"))),
            R"({"error":{"message":"model: x","type":"not_found_error"},"type":"error"})");
}

}  // namespace
}  // namespace sb::gateway
