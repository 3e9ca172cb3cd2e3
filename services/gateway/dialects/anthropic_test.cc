#include "gateway/dialects/anthropic.h"

#include "gateway/dialects/fields.h"
#include "gtest/gtest.h"
#include "json/bounded_json.h"

namespace sb::gateway {
namespace {

using nlohmann::json;

absl::StatusOr<ApiRequest> Parse(const std::string& body, ParseMode mode = ParseMode::kGenerate) {
  return AnthropicDialect().Parse(json::parse(body), mode);
}

TEST(AnthropicParseTest, AFullRequestBecomesTheStructuredInternalRequest) {
  auto r = Parse(R"({
    "model": "sim-small", "max_tokens": 64, "stream": true,
    "system": [{"type": "text", "text": "be brief"}, {"type": "text", "text": "be kind", "cache_control": {"type": "ephemeral"}}],
    "messages": [
      {"role": "user", "content": "hello"},
      {"role": "assistant", "content": [{"type": "text", "text": "hi"}, {"type": "text", "text": "there"}]},
      {"role": "user", "content": "again"}],
    "stop_sequences": ["END", "\n\n"], "temperature": 0.5, "top_p": 0.9, "top_k": 40,
    "metadata": {"user_id": "end-user-1"}})");
  ASSERT_TRUE(r.ok()) << r.status();
  const auto& g = *r->generate;
  EXPECT_TRUE(r->stream);
  EXPECT_EQ(g.model(), "sim-small");
  EXPECT_EQ(g.max_tokens(), 64);
  ASSERT_EQ(g.system_size(), 2);
  EXPECT_EQ(g.system(1).text(), "be kind");
  EXPECT_FALSE(g.system(0).cache_control());
  EXPECT_TRUE(g.system(1).cache_control());
  ASSERT_EQ(g.messages_size(), 3);
  EXPECT_EQ(g.messages(1).role(), "assistant");
  ASSERT_EQ(g.messages(1).content_size(), 2) << "blocks stay blocks, not flattened text";
  EXPECT_EQ(g.messages(1).content(1).text(), "there");
  EXPECT_EQ(g.stop_sequences(1), "\n\n");
  EXPECT_FLOAT_EQ(g.temperature(), 0.5f);
  EXPECT_FLOAT_EQ(g.top_p(), 0.9f);
  EXPECT_EQ(g.top_k(), 40);
  EXPECT_EQ(g.end_user_id(), "end-user-1");
  EXPECT_FALSE(Parse(R"({"model":"m","max_tokens":1,"messages":[{"role":"user","content":"x"}]})")
                   ->generate->has_temperature())
      << "unset sampling parameters stay unset";
}

TEST(AnthropicParseTest, MetadataPriorityIsInteractiveOrBatch) {
  const std::string base =
      R"({"model":"m","max_tokens":1,"messages":[{"role":"user","content":"x"}],)";
  auto batch = Parse(base + R"("metadata":{"priority":"batch"}})");
  ASSERT_TRUE(batch.ok()) << batch.status();
  EXPECT_EQ(batch->generate->priority(), "batch");
  auto unset = Parse(base + R"("metadata":{"user_id":"u"}})");
  ASSERT_TRUE(unset.ok());
  EXPECT_EQ(unset->generate->priority(), "") << "the default: interactive";
  auto bad = Parse(base + R"("metadata":{"priority":"urgent"}})");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("metadata.priority"), std::string::npos);
}

TEST(AnthropicParseTest, SystemMayBeAPlainString) {
  auto r = Parse(
      R"({"model":"m","max_tokens":1,"system":"sys","messages":[{"role":"user","content":"x"}]})");
  ASSERT_TRUE(r.ok());
  ASSERT_EQ(r->generate->system_size(), 1);
  EXPECT_EQ(r->generate->system(0).text(), "sys");
}

struct BadCase {
  std::string body;
  std::string field;    // the field the error names
  std::string message;  // a part of the message
};

// How a case reads in test names: the field it is about.
void PrintTo(const BadCase& c, std::ostream* os) { *os << c.field; }

class AnthropicBadRequestTest : public ::testing::TestWithParam<BadCase> {};

TEST_P(AnthropicBadRequestTest, IsA400NamingTheField) {
  auto r = Parse(GetParam().body);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ErrorField(r.status()), GetParam().field) << r.status();
  EXPECT_NE(r.status().message().find(GetParam().message), std::string::npos) << r.status();
}

const std::string kMsgs = R"("messages":[{"role":"user","content":"x"}])";

INSTANTIATE_TEST_SUITE_P(
    Cases, AnthropicBadRequestTest,
    ::testing::Values(
        BadCase{R"({"max_tokens":5,)" + kMsgs + "}", "model", "Field required"},
        BadCase{R"({"model":"m",)" + kMsgs + "}", "max_tokens", "Field required"},
        BadCase{R"({"model":"m","max_tokens":0,)" + kMsgs + "}", "max_tokens",
                "greater than or equal to 1"},
        BadCase{R"({"model":"m","max_tokens":"5",)" + kMsgs + "}", "max_tokens", "valid integer"},
        BadCase{R"({"model":"m","max_tokens":9999999999999999999,)" + kMsgs + "}", "max_tokens",
                "less than or equal"},
        BadCase{R"({"model":"m","max_tokens":5})", "messages", "Field required"},
        BadCase{R"({"model":"m","max_tokens":5,"messages":[]})", "messages", "at least one"},
        BadCase{R"({"model":"m","max_tokens":5,"messages":[{"role":"robot","content":"x"}]})",
                "messages.0.role", "'user' or 'assistant'"},
        BadCase{R"({"model":"m","max_tokens":5,"messages":[{"role":"user"}]})",
                "messages.0.content", "Field required"},
        BadCase{
            R"({"model":"m","max_tokens":5,"messages":[{"role":"user","content":[{"type":"image","source":{}}]}]})",
            "messages.0.content.0.type", "image content is not supported"},
        BadCase{
            R"({"model":"m","max_tokens":5,"messages":[{"role":"user","content":[{"type":"tool_result"}]}]})",
            "messages.0.content.0.type", "not supported"},
        BadCase{R"({"model":"m","max_tokens":5,"tools":[{"name":"t"}],)" + kMsgs + "}", "tools",
                "not supported"},
        BadCase{R"({"model":"m","max_tokens":5,"temperature":1.5,)" + kMsgs + "}", "temperature",
                "between 0 and 1"},
        BadCase{R"({"model":"m","max_tokens":5,"top_p":-0.1,)" + kMsgs + "}", "top_p",
                "between 0 and 1"},
        BadCase{R"({"model":"m","max_tokens":5,"top_k":0,)" + kMsgs + "}", "top_k",
                "greater than or equal to 1"},
        BadCase{R"({"model":"m","max_tokens":5,"top_k":1.5,)" + kMsgs + "}", "top_k",
                "valid integer"},
        BadCase{R"({"model":"m","max_tokens":5,"stop_sequences":"END",)" + kMsgs + "}",
                "stop_sequences", "valid list"},
        BadCase{R"({"model":"m","max_tokens":5,"stop_sequences":[""],)" + kMsgs + "}",
                "stop_sequences.0", "non-empty"},
        BadCase{
            R"({"model":"m","max_tokens":5,"stop_sequences":["a","b","c","d","e","f","g","h","i","j","k","l","m","n","o","p","q"],)" +
                kMsgs + "}",
            "stop_sequences", "at most 16"},
        BadCase{R"({"model":"m","max_tokens":5,"metadata":{"user_id":7},)" + kMsgs + "}",
                "metadata.user_id", "valid string"},
        BadCase{R"({"model":"m","max_tokens":5,"stream":"yes",)" + kMsgs + "}", "stream",
                "valid boolean"},
        BadCase{R"({"model":"m","max_tokens":5,"messages":[{"role":"user","content":"a\u0000b"}]})",
                "messages.0.content", "NUL"},
        BadCase{R"({"model":")" + std::string(300, 'x') + R"(","max_tokens":5,)" + kMsgs + "}",
                "model", "at most 256 bytes"},
        BadCase{R"({"model":"m","max_tokens":5,"messages":[{"role":5,"content":"x"}]})",
                "messages.0.role", "'user' or 'assistant'"},
        BadCase{
            R"({"model":"m","max_tokens":5,"messages":[{"role":"user","content":[{"type":5}]}]})",
            "messages.0.content.0.type", "Field required"},
        BadCase{
            R"({"model":"m","max_tokens":5,"messages":[{"role":"user","content":[{"type":"text","text":"x","cache_control":{"type":"persistent"}}]}]})",
            "messages.0.content.0.cache_control.type", "'ephemeral'"},
        BadCase{
            R"({"model":"m","max_tokens":5,"system":[{"type":"text","text":"x","cache_control":{"type":"ephemeral","ttl":"1d"}}],)" +
                kMsgs + "}",
            "system.0.cache_control.ttl", "'5m' or '1h'"},
        BadCase{
            R"({"model":"m","max_tokens":5,"messages":[{"role":"user","content":[{"type":"text","text":"x","cache_control":"yes"}]}]})",
            "messages.0.content.0.cache_control", "an object"}));

TEST(AnthropicParseTest, AtMostFourCacheBreakpoints) {
  std::string blocks;
  for (int i = 0; i < 5; ++i) {
    if (i > 0) blocks += ",";
    blocks += R"({"type":"text","text":"x","cache_control":{"type":"ephemeral","ttl":"1h"}})";
  }
  auto five = Parse(R"({"model":"m","max_tokens":5,"messages":[{"role":"user","content":[)" +
                    blocks + "]}]}");
  ASSERT_FALSE(five.ok());
  EXPECT_EQ(five.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(five.status().message(),
            "A maximum of 4 blocks with cache_control may be provided. Found 5.");
  auto with_system =
      Parse(R"({"model":"m","max_tokens":5,"system":[{"type":"text","text":"s",)"
            R"("cache_control":{"type":"ephemeral"}}],"messages":[{"role":"user","content":[)" +
            blocks.substr(0, blocks.rfind(",{")) + "]}]}");
  ASSERT_FALSE(with_system.ok()) << "system's breakpoint counts too";
  auto ok = Parse(R"({"model":"m","max_tokens":5,"messages":[{"role":"user","content":[)" +
                  blocks.substr(0, blocks.rfind(",{")) + "]}]}");
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_TRUE(ok->generate->messages(0).content(3).cache_control());
}

TEST(AnthropicParseTest, OddlyTypedOptionalFieldsDoNotThrow) {
  auto r = Parse(
      R"({"model":"m","max_tokens":5,"thinking":{"type":7},"messages":[{"role":"user","content":"x"}]})");
  EXPECT_TRUE(r.ok()) << r.status();
}

TEST(FieldsTest, TextMustBeValidUtf8WithoutNul) {
  EXPECT_TRUE(IsValidUtf8("plain ascii"));
  EXPECT_TRUE(IsValidUtf8("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80"));
  EXPECT_FALSE(IsValidUtf8("\xff"));
  EXPECT_FALSE(IsValidUtf8("\xc3"));              // truncated
  EXPECT_FALSE(IsValidUtf8("\xc0\xaf"));          // overlong
  EXPECT_FALSE(IsValidUtf8("\xed\xa0\x80"));      // a surrogate
  EXPECT_FALSE(IsValidUtf8("\xf4\x90\x80\x80"));  // beyond U+10FFFF
  EXPECT_EQ(ErrorField(CheckText("id\xff", "model_id", 256)), "model_id");
  EXPECT_NE(CheckText("id\xff", "model_id", 256).message().find("UTF-8"), std::string::npos);
  EXPECT_TRUE(CheckText("caf\xc3\xa9", "x", 256).ok());
}

TEST(AnthropicParseTest, TheMessageCountIsCapped) {
  json body = {{"model", "m"}, {"max_tokens", 1}, {"messages", json::array()}};
  for (size_t i = 0; i <= kMaxMessages; ++i) {
    body["messages"].push_back({{"role", "user"}, {"content", "x"}});
  }
  auto r = AnthropicDialect().Parse(body, ParseMode::kGenerate);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(ErrorField(r.status()), "messages");
}

TEST(AnthropicStreamTest, GoldenEventSequence) {
  AnthropicDialect d;
  ApiRequest req;
  auto s = d.NewStream({"msg_01", 0}, req);
  std::string out = s->Start({"sim-small", 3});
  out += s->Text("Hi \"you\"");
  out += s->Finish({"stop_sequence", "END", 30, 2, 20, 5});
  EXPECT_EQ(
      out,
      "event: message_start\n"
      R"(data: {"message":{"content":[],"id":"msg_01","model":"sim-small","role":"assistant","stop_reason":null,"stop_sequence":null,"type":"message","usage":{"input_tokens":3,"output_tokens":1}},"type":"message_start"})"
      "\n\n"
      "event: content_block_start\n"
      R"(data: {"content_block":{"text":"","type":"text"},"index":0,"type":"content_block_start"})"
      "\n\n"
      "event: ping\n"
      R"(data: {"type":"ping"})"
      "\n\n"
      "event: content_block_delta\n"
      R"(data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hi \"you\""}})"
      "\n\n"
      "event: content_block_stop\n"
      R"(data: {"type":"content_block_stop","index":0})"
      "\n\n"
      "event: message_delta\n"
      R"(data: {"delta":{"stop_reason":"stop_sequence","stop_sequence":"END"},"type":"message_delta","usage":{"cache_creation":{"ephemeral_1h_input_tokens":0,"ephemeral_5m_input_tokens":5},"cache_creation_input_tokens":5,"cache_read_input_tokens":20,"input_tokens":5,"output_tokens":2}})"
      "\n\n"
      "event: message_stop\n"
      R"(data: {"type":"message_stop"})"
      "\n\n");
  EXPECT_EQ(s->Error(absl::UnavailableError("no capacity")),
            "event: error\n"
            R"(data: {"error":{"message":"no capacity","type":"overloaded_error"},"type":"error"})"
            "\n\n");
}

TEST(AnthropicStreamTest, EventsCanCarryTheirOwnIds) {
  EXPECT_EQ(anthropic_events::MessageStop("m1:9"),
            "id: m1:9\nevent: message_stop\ndata: {\"type\":\"message_stop\"}\n\n");
}

TEST(AnthropicWholeTest, GoldenMessage) {
  AnthropicDialect d;
  EXPECT_EQ(
      d.Whole({"msg_01", 0}, {{"sim-small", 3}, "Hello", {"end_turn", "", 3, 1}}),
      R"({"content":[{"text":"Hello","type":"text"}],"id":"msg_01","model":"sim-small",)"
      R"("role":"assistant","stop_reason":"end_turn","stop_sequence":null,"type":"message",)"
      R"("usage":{"cache_creation":{"ephemeral_1h_input_tokens":0,"ephemeral_5m_input_tokens":0},)"
      R"("cache_creation_input_tokens":0,"cache_read_input_tokens":0,"input_tokens":3,)"
      R"("output_tokens":1}})");
}

// A refusal by output safety: stop_reason "refusal" with stop_details, on
// message_delta when streamed and on the message when whole.
TEST(AnthropicRefusalTest, StopDetailsGoWithTheRefusal) {
  pipeline::FinishInfo info{.stop_reason = "refusal", .input_tokens = 3, .output_tokens = 4};
  info.refusal = pipeline::Refusal{"pii.email", "the output contained an e-mail address"};
  const std::string delta = anthropic_events::MessageDelta(info, "");
  EXPECT_NE(delta.find(R"("stop_details":{"category":"pii.email","explanation":"the output )"
                       R"(contained an e-mail address","type":"refusal"})"),
            std::string::npos)
      << delta;
  EXPECT_NE(delta.find(R"("stop_reason":"refusal")"), std::string::npos) << delta;
  const json whole = json::parse(AnthropicDialect().Whole({"msg_01", 0}, {{"m", 3}, "Hi", info}));
  EXPECT_EQ(whole["stop_reason"], "refusal");
  EXPECT_EQ(whole["stop_details"]["type"], "refusal");
  EXPECT_EQ(whole["stop_details"]["category"], "pii.email");
  // Only a refusal carries them.
  info.refusal.reset();
  info.stop_reason = "end_turn";
  EXPECT_EQ(anthropic_events::MessageDelta(info, "").find("stop_details"), std::string::npos);
}

struct ErrorCase {
  absl::Status status;
  int http_status;
  std::string type;
  int retry_after;
};

void PrintTo(const ErrorCase& c, std::ostream* os) { *os << c.status.ToString(); }

class AnthropicErrorTest : public ::testing::TestWithParam<ErrorCase> {};

TEST_P(AnthropicErrorTest, EveryCodeHasItsStatusAndType) {
  const auto e = AnthropicDialect().Error(GetParam().status);
  EXPECT_EQ(e.http_status, GetParam().http_status);
  EXPECT_EQ(e.retry_after_seconds, GetParam().retry_after);
  EXPECT_EQ(
      e.body,
      json({{"type", "error"},
            {"error",
             {{"type", GetParam().type}, {"message", std::string(GetParam().status.message())}}}})
          .dump());
}

INSTANTIATE_TEST_SUITE_P(
    Codes, AnthropicErrorTest,
    ::testing::Values(ErrorCase{absl::InvalidArgumentError("bad"), 400, "invalid_request_error", 0},
                      ErrorCase{absl::UnauthenticatedError("key"), 401, "authentication_error", 0},
                      ErrorCase{absl::PermissionDeniedError("no"), 403, "permission_error", 0},
                      ErrorCase{absl::NotFoundError("model: x"), 404, "not_found_error", 0},
                      ErrorCase{absl::AbortedError("conflict"), 409, "invalid_request_error", 0},
                      ErrorCase{absl::ResourceExhaustedError("slow down"), 429, "rate_limit_error",
                                1},
                      ErrorCase{absl::InternalError("oops"), 500, "api_error", 0},
                      ErrorCase{absl::DeadlineExceededError("slow"), 504, "timeout_error", 0},
                      ErrorCase{absl::UnavailableError("busy"), 529, "overloaded_error", 1},
                      ErrorCase{BillingError("budget spent"), 402, "billing_error", 0}));

TEST(AnthropicErrorTest, MethodNotAllowedKeepsTheShape) {
  const auto e = AnthropicDialect().Error(absl::InvalidArgumentError("use POST"), 405);
  EXPECT_EQ(e.http_status, 405);
  EXPECT_NE(e.body.find(R"("type":"invalid_request_error")"), std::string::npos);
}

TEST(AnthropicModelsTest, ListShape) {
  AnthropicDialect d;
  const auto body = json::parse(d.ModelList({{"a", 0}, {"b", 1'700'000'000'000}}, true));
  EXPECT_EQ(body["data"][1], json({{"type", "model"},
                                   {"id", "b"},
                                   {"display_name", "b"},
                                   {"created_at", "2023-11-14T22:13:20Z"}}));
  EXPECT_EQ(body["has_more"], true);
  EXPECT_EQ(body["first_id"], "a");
  EXPECT_EQ(body["last_id"], "b");
  EXPECT_TRUE(json::parse(d.ModelList({}, false))["first_id"].is_null());
}

}  // namespace
}  // namespace sb::gateway
