#include "gateway/dialects/openai.h"

#include "gateway/dialects/fields.h"
#include "gtest/gtest.h"

namespace sb::gateway {
namespace {

using nlohmann::json;

absl::StatusOr<ApiRequest> Parse(const std::string& body) {
  return OpenAiDialect().Parse(json::parse(body), ParseMode::kGenerate);
}

TEST(OpenAiParseTest, MessagesSystemAndDeveloperInstructions) {
  auto r = Parse(R"({
    "model": "sim-small",
    "messages": [
      {"role": "system", "content": "be brief"},
      {"role": "developer", "content": [{"type": "text", "text": "be kind"}]},
      {"role": "user", "content": [{"type": "text", "text": "hello"}, {"type": "text", "text": "world"}]},
      {"role": "assistant", "content": "hi"},
      {"role": "developer", "content": "now answer in French"},
      {"role": "user", "content": "again", "name": "bob"}],
    "max_completion_tokens": 32, "max_tokens": 99, "stop": ["END", "STOP"],
    "temperature": 1.5, "top_p": 0.5, "user": "end-user-2", "seed": 7,
    "stream": true, "stream_options": {"include_usage": true}})");
  ASSERT_TRUE(r.ok()) << r.status();
  const auto& g = *r->generate;
  ASSERT_EQ(g.system_size(), 2) << "leading system and developer messages are the system prompt";
  EXPECT_EQ(g.system(1).text(), "be kind");
  ASSERT_EQ(g.messages_size(), 4);
  EXPECT_EQ(g.messages(0).content_size(), 2);
  EXPECT_EQ(g.messages(2).role(), "system") << "later instructions stay in place";
  EXPECT_EQ(g.messages(2).content(0).text(), "now answer in French");
  EXPECT_EQ(g.max_tokens(), 32) << "max_completion_tokens wins over the legacy max_tokens";
  ASSERT_EQ(g.stop_sequences_size(), 2);
  EXPECT_FLOAT_EQ(g.temperature(), 1.5f);
  EXPECT_FLOAT_EQ(g.top_p(), 0.5f);
  EXPECT_EQ(g.end_user_id(), "end-user-2");
  EXPECT_TRUE(r->stream);
  EXPECT_TRUE(r->include_usage);
}

TEST(OpenAiParseTest, DefaultsAndAStringStop) {
  auto r = Parse(R"({"model":"m","messages":[{"role":"user","content":"x"}],"stop":"END","n":1})");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->generate->max_tokens(), kOpenAiDefaultMaxTokens);
  ASSERT_EQ(r->generate->stop_sequences_size(), 1);
  EXPECT_EQ(r->generate->stop_sequences(0), "END");
  EXPECT_FALSE(r->stream);
  auto legacy = Parse(R"({"model":"m","messages":[{"role":"user","content":"x"}],"max_tokens":7})");
  EXPECT_EQ(legacy->generate->max_tokens(), 7);
}

struct BadCase {
  std::string body;
  std::string param;
  std::string message;
};

// How a case reads in test names: the field it is about.
void PrintTo(const BadCase& c, std::ostream* os) { *os << c.param; }

class OpenAiBadRequestTest : public ::testing::TestWithParam<BadCase> {};

TEST_P(OpenAiBadRequestTest, IsA400NamingTheParam) {
  auto r = Parse(GetParam().body);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ErrorField(r.status()), GetParam().param) << r.status();
  EXPECT_NE(r.status().message().find(GetParam().message), std::string::npos) << r.status();
  const auto reply = OpenAiDialect().Error(r.status());
  EXPECT_EQ(reply.http_status, 400);
  EXPECT_EQ(json::parse(reply.body)["error"]["param"], GetParam().param);
}

const std::string kM = R"("model":"m","messages":[{"role":"user","content":"x"}])";

INSTANTIATE_TEST_SUITE_P(
    Cases, OpenAiBadRequestTest,
    ::testing::Values(
        BadCase{"{" + kM + R"(,"n":2})", "n", "only n=1"},
        BadCase{"{" + kM + R"(,"tools":[{"type":"function","function":{"name":"f"}}]})", "tools",
                "not supported"},
        BadCase{"{" + kM + R"(,"tool_choice":"auto"})", "tool_choice", "not supported"},
        BadCase{"{" + kM + R"(,"logprobs":true})", "logprobs", "not supported"},
        BadCase{"{" + kM + R"(,"response_format":{"type":"json_schema","json_schema":{}}})",
                "response_format", "not supported"},
        BadCase{"{" + kM + R"(,"logit_bias":{"50256":-100}})", "logit_bias", "not supported"},
        BadCase{R"({"model":"m","messages":[{"role":5,"content":"x"}]})", "messages[0].role",
                "Input should be"},
        BadCase{R"({"model":"m","messages":[{"role":"user","content":[{"type":7}]}]})",
                "messages[0].content[0].type", "Input should be 'text'"},
        BadCase{
            R"({"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"look"},{"type":"image_url","image_url":{"url":"x"}}]}]})",
            "messages[0].content[1]", "image_url content parts are not supported"},
        BadCase{R"({"model":"m","messages":[{"role":"tool","content":"x","tool_call_id":"c"}]})",
                "messages[0].role", "tool messages"},
        BadCase{R"({"model":"m","messages":[{"role":"system","content":"only instructions"}]})",
                "messages", "user or assistant"},
        BadCase{R"({"model":"m"})", "messages", "Field required"},
        BadCase{R"({"messages":[{"role":"user","content":"x"}]})", "model", "Field required"},
        BadCase{"{" + kM + R"(,"stop":["a","b","c","d","e"]})", "stop", "at most 4"},
        BadCase{"{" + kM + R"(,"stop":7})", "stop", "string or a list"},
        BadCase{"{" + kM + R"(,"temperature":2.5})", "temperature", "between 0 and 2"},
        BadCase{"{" + kM + R"(,"max_completion_tokens":0})", "max_completion_tokens",
                "greater than or equal to 1"},
        BadCase{"{" + kM + R"(,"stream_options":{"include_usage":true}})", "stream_options",
                "only allowed when stream is true"},
        BadCase{"{" + kM + R"(,"user":["x"]})", "user", "valid string"}));

TEST(OpenAiStreamTest, GoldenChunksWithUsage) {
  OpenAiDialect d;
  ApiRequest req;
  req.include_usage = true;
  auto s = d.NewStream({"chatcmpl-01", 1700000000}, req);
  std::string out = s->Start({"sim-small", 3});
  out += s->Text("Hi");
  out += s->Finish({"max_tokens", "", 3, 1, 2, 0});
  const std::string base =
      R"({"choices":[{"delta":%s,"finish_reason":%s,"index":0,"logprobs":null}],"created":1700000000,"id":"chatcmpl-01","model":"sim-small","object":"chat.completion.chunk","system_fingerprint":null,"usage":null})";
  auto chunk = [&](const std::string& delta, const std::string& finish) {
    std::string c = base;
    c.replace(c.find("%s"), 2, delta);
    c.replace(c.find("%s"), 2, finish);
    return "data: " + c + "\n\n";
  };
  EXPECT_EQ(
      out,
      chunk(R"({"content":"","role":"assistant"})", "null") + chunk(R"({"content":"Hi"})", "null") +
          chunk("{}", R"("length")") +
          R"(data: {"choices":[],"created":1700000000,"id":"chatcmpl-01","model":"sim-small","object":"chat.completion.chunk","system_fingerprint":null,"usage":{"completion_tokens":1,"prompt_tokens":3,"prompt_tokens_details":{"cached_tokens":2},"total_tokens":4}})"
          "\n\ndata: [DONE]\n\n");
}

TEST(OpenAiStreamTest, WithoutUsageThereIsNoUsageChunkOrField) {
  OpenAiDialect d;
  auto s = d.NewStream({"chatcmpl-01", 1}, ApiRequest{});
  s->Start({"m", 1});
  const std::string end = s->Finish({"end_turn", "", 1, 1});
  EXPECT_EQ(end.find("usage"), std::string::npos) << end;
  EXPECT_NE(end.find(R"("finish_reason":"stop")"), std::string::npos);
  EXPECT_EQ(end.substr(end.size() - 14), "data: [DONE]\n\n");
  EXPECT_EQ(s->Ping(), ": ping\n\n");
  EXPECT_EQ(
      s->Error(absl::UnavailableError("busy")),
      R"(data: {"error":{"code":"overloaded","message":"busy","param":null,"type":"server_error"}})"
      "\n\n");
}

TEST(OpenAiWholeTest, GoldenCompletion) {
  EXPECT_EQ(
      OpenAiDialect().Whole({"chatcmpl-01", 1700000000},
                            {{"sim-small", 3}, "Hello", {"stop_sequence", "END", 3, 1}}),
      R"({"choices":[{"finish_reason":"stop","index":0,"logprobs":null,"message":{"content":"Hello","refusal":null,"role":"assistant"}}],)"
      R"("created":1700000000,"id":"chatcmpl-01","model":"sim-small","object":"chat.completion","system_fingerprint":null,)"
      R"("usage":{"completion_tokens":1,"prompt_tokens":3,"prompt_tokens_details":{"cached_tokens":0},)"
      R"("total_tokens":4}})");
}

TEST(OpenAiWholeTest, ARefusalIsContentFilter) {
  pipeline::FinishInfo info{.stop_reason = "refusal", .input_tokens = 3, .output_tokens = 1};
  info.refusal = pipeline::Refusal{"pii.email", "an e-mail address"};
  const json whole =
      json::parse(OpenAiDialect().Whole({"chatcmpl-01", 1700000000}, {{"m", 3}, "Hi", info}));
  EXPECT_EQ(whole["choices"][0]["finish_reason"], "content_filter");
}

struct ErrorCase {
  absl::Status status;
  int http_status;
  std::string type;
  json code;
};

void PrintTo(const ErrorCase& c, std::ostream* os) { *os << c.status.ToString(); }

class OpenAiErrorTest : public ::testing::TestWithParam<ErrorCase> {};

// The statuses the official SDK maps to its typed errors.
TEST_P(OpenAiErrorTest, EveryCodeHasTheSdksStatus) {
  const auto e = OpenAiDialect().Error(GetParam().status);
  EXPECT_EQ(e.http_status, GetParam().http_status);
  const json body = json::parse(e.body);
  EXPECT_EQ(body["error"]["type"], GetParam().type);
  EXPECT_EQ(body["error"]["code"], GetParam().code);
  EXPECT_EQ(body["error"]["message"], std::string(GetParam().status.message()));
  EXPECT_TRUE(body["error"].contains("param"));
}

INSTANTIATE_TEST_SUITE_P(
    Codes, OpenAiErrorTest,
    ::testing::Values(
        ErrorCase{absl::InvalidArgumentError("bad"), 400, "invalid_request_error", nullptr},
        ErrorCase{absl::UnauthenticatedError("key"), 401, "invalid_request_error",
                  "invalid_api_key"},
        ErrorCase{absl::PermissionDeniedError("no"), 403, "invalid_request_error",
                  "permission_denied"},
        ErrorCase{absl::NotFoundError("model: x"), 404, "invalid_request_error", "model_not_found"},
        ErrorCase{absl::NotFoundError("conversation c"), 404, "invalid_request_error", "not_found"},
        ErrorCase{absl::AlreadyExistsError("dup"), 409, "invalid_request_error", "conflict"},
        ErrorCase{absl::ResourceExhaustedError("slow down"), 429, "requests",
                  "rate_limit_exceeded"},
        ErrorCase{absl::InternalError("oops"), 500, "server_error", nullptr},
        ErrorCase{absl::UnavailableError("busy"), 503, "server_error", "overloaded"},
        ErrorCase{absl::DeadlineExceededError("slow"), 504, "server_error", "timeout"},
        ErrorCase{BillingError("budget spent"), 402, "insufficient_quota", "insufficient_quota"}));

TEST(OpenAiModelsTest, ListShape) {
  const auto body =
      json::parse(OpenAiDialect().ModelList({{"sim-small", 1'700'000'000'123}}, false));
  EXPECT_EQ(body["object"], "list");
  EXPECT_EQ(body["data"][0], json({{"id", "sim-small"},
                                   {"object", "model"},
                                   {"created", 1700000000},
                                   {"owned_by", "switchboard"}}));
}

}  // namespace
}  // namespace sb::gateway
