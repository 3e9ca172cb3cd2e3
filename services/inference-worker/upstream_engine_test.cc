#include "inference-worker/upstream_engine.h"

#include <atomic>
#include <boost/asio/ip/tcp.hpp>
#include <condition_variable>
#include <nlohmann/json.hpp>
#include <thread>

#include "gtest/gtest.h"
#include "inference-worker/upstream_flags.h"
#include "tools/mock-upstream/mock_upstream.h"

namespace sb::worker {
namespace {

using json = nlohmann::json;
using namespace std::chrono_literals;

bool WaitUntil(const std::function<bool()>& cond, std::chrono::milliseconds limit = 5s) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (!cond()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(1ms);
  }
  return true;
}

class Recorder : public TokenObserver {
 public:
  void OnToken(std::string_view text, int tokens) override {
    std::lock_guard<std::mutex> lock(mu_);
    text_.append(text);
    tokens_ += tokens;
    ++pieces_;
    cv_.notify_all();
  }
  void OnFinished(const FinishInfo& info) override {
    std::lock_guard<std::mutex> lock(mu_);
    info_ = info;
    ++finishes_;
    cv_.notify_all();
  }
  // The FinishInfo, waiting up to 10 s for it.
  FinishInfo Wait() {
    std::unique_lock<std::mutex> lock(mu_);
    EXPECT_TRUE(cv_.wait_for(lock, 10s, [&] { return finishes_ > 0; })) << "never finished";
    return info_;
  }
  bool WaitForPieces(int n) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, 10s, [&] { return pieces_ >= n; });
  }
  std::string text() {
    std::lock_guard<std::mutex> lock(mu_);
    return text_;
  }
  int pieces() {
    std::lock_guard<std::mutex> lock(mu_);
    return pieces_;
  }
  int finishes() {
    std::lock_guard<std::mutex> lock(mu_);
    return finishes_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::string text_;
  int tokens_ = 0;
  int pieces_ = 0;
  int finishes_ = 0;
  FinishInfo info_;
};

std::string Reply(int n) {
  std::string out;
  for (const auto& t : mock::MockReplyTokens(n)) out += t;
  return out;
}

class UpstreamEngineTest : public ::testing::Test {
 protected:
  void SetUp() override {
    mock_ = std::make_unique<mock::MockUpstream>(
        mock::MockUpstreamOptions{.models = {"up-model"}, .reply_tokens = 12});
    ASSERT_TRUE(mock_->Start().ok());
  }

  UpstreamOptions Options() {
    return {.url = mock_->base_url(),
            .models = {"llama-8b"},
            .upstream_model = "up-model",
            .metrics_url = "none"};
  }

  EngineRequest Request(std::string text, int max_tokens = 100) {
    EngineRequest r;
    r.id = ++next_id_;
    r.request_id = "req-" + std::to_string(r.id);
    r.model = "llama-8b";
    r.messages = {{"user", std::move(text)}};
    r.max_tokens = max_tokens;
    return r;
  }

  // Submits and waits for the end.
  FinishInfo Run(Engine& engine, EngineRequest r, std::shared_ptr<Recorder>* out = nullptr) {
    auto rec = std::make_shared<Recorder>();
    EXPECT_TRUE(engine.Submit(std::move(r), rec).ok());
    if (out != nullptr) *out = rec;
    return rec->Wait();
  }

  json LastBody() { return json::parse(mock_->LastRequestBody()); }

  std::unique_ptr<mock::MockUpstream> mock_;
  uint64_t next_id_ = 0;
};

TEST_F(UpstreamEngineTest, OpenAIStreamsTextWithTheUpstreamsUsage) {
  OpenAIEngine engine(Options());
  std::shared_ptr<Recorder> rec;
  FinishInfo info = Run(engine, Request("one two three"), &rec);
  EXPECT_EQ(info.stop_reason, "end_turn");
  EXPECT_TRUE(info.error.ok());
  EXPECT_EQ(rec->text(), Reply(12));
  EXPECT_EQ(rec->pieces(), 12);
  EXPECT_EQ(info.input_tokens, 3);  // the mock counts words
  EXPECT_EQ(info.output_tokens, 12);
  EXPECT_EQ(rec->finishes(), 1);
  // The slot is released right after OnFinished returns.
  EXPECT_TRUE(WaitUntil([&] { return engine.Load().running == 0; }));
}

TEST_F(UpstreamEngineTest, OpenAIMaxTokensAndStopSequence) {
  OpenAIEngine engine(Options());
  FinishInfo info = Run(engine, Request("hi", 5));
  EXPECT_EQ(info.stop_reason, "max_tokens");
  EXPECT_EQ(info.output_tokens, 5);

  EngineRequest r = Request("hi");
  r.stop_sequences = {"nothing-like-it", "lazy"};
  std::shared_ptr<Recorder> rec;
  info = Run(engine, std::move(r), &rec);
  EXPECT_EQ(info.stop_reason, "stop_sequence");
  EXPECT_EQ(info.stop_sequence, "lazy");
  EXPECT_EQ(rec->text(), "The quick brown fox jumps over the ");
  EXPECT_EQ(info.output_tokens, 8);
}

TEST_F(UpstreamEngineTest, OpenAIRequestCarriesEverythingAsked) {
  UpstreamOptions o = Options();
  o.api_key = "sk-test";
  OpenAIEngine engine(o);
  EngineRequest r = Request("question");
  r.system = "be brief";
  r.messages = {{"user", "q1"}, {"assistant", "a1"}, {"user", "q2"}};
  r.sampling = {.temperature = 0.5f, .top_p = 0.25f, .top_k = 40};
  r.stop_sequences = {"END"};
  r.end_user_id = "user-7";
  r.max_tokens = 33;
  r.traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
  Run(engine, std::move(r));
  json body = LastBody();
  EXPECT_EQ(body["model"], "up-model");
  EXPECT_EQ(body["stream"], true);
  EXPECT_EQ(body["stream_options"]["include_usage"], true);
  EXPECT_EQ(body["max_tokens"], 33);
  EXPECT_EQ(body["stop"], json::array({"END"}));
  EXPECT_DOUBLE_EQ(body["temperature"].get<double>(), 0.5);
  EXPECT_DOUBLE_EQ(body["top_p"].get<double>(), 0.25);
  EXPECT_EQ(body["top_k"], 40);
  EXPECT_EQ(body["user"], "user-7");
  EXPECT_EQ(body["messages"], json::parse(R"([{"role":"system","content":"be brief"},
      {"role":"user","content":"q1"},{"role":"assistant","content":"a1"},
      {"role":"user","content":"q2"}])"));
  auto headers = mock_->LastRequestHeaders();
  EXPECT_EQ(headers["authorization"], "Bearer sk-test");
  EXPECT_EQ(headers["x-request-id"], "req-1");
  // vLLM and others join the request's trace.
  EXPECT_EQ(headers["traceparent"], "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");

  Run(engine, Request("plain"));  // unset sampling parameters are not sent
  body = LastBody();
  EXPECT_FALSE(body.contains("top_k"));
  EXPECT_FALSE(body.contains("temperature"));
  EXPECT_FALSE(body.contains("user"));
}

TEST_F(UpstreamEngineTest, ModelMappingAndUnservedModels) {
  UpstreamOptions o = Options();
  o.model_map = {{"qwen-7b", "Qwen/Qwen2.5-7B-Instruct"}};
  OpenAIEngine engine(o);
  EXPECT_EQ(engine.Models(), (std::vector<std::string>{"llama-8b", "qwen-7b"}));
  EngineRequest r = Request("x");
  r.model = "qwen-7b";
  Run(engine, std::move(r));
  EXPECT_EQ(LastBody()["model"], "Qwen/Qwen2.5-7B-Instruct");
  r = Request("x");
  r.model = "other";
  EXPECT_EQ(engine.Submit(std::move(r), std::make_shared<Recorder>()).code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(UpstreamEngineTest, CancelClosesTheUpstreamConnectionAtOnce) {
  OpenAIEngine engine(Options());
  auto rec = std::make_shared<Recorder>();
  ASSERT_TRUE(engine.Submit(Request("slow please [mock:tps=20]"), rec).ok());
  ASSERT_TRUE(rec->WaitForPieces(1));
  const auto cancelled_at = std::chrono::steady_clock::now();
  engine.Cancel(1);
  FinishInfo info = rec->Wait();
  EXPECT_EQ(info.stop_reason, "cancelled");
  EXPECT_GE(info.output_tokens, 1);
  EXPECT_LT(info.output_tokens, 12);
  ASSERT_TRUE(WaitUntil([&] { return !mock_->Aborts().empty(); }, 2s));
  const auto abort = mock_->Aborts().front();
  EXPECT_LT(abort.at - cancelled_at, 100ms);
  EXPECT_EQ(mock_->Stats().completed, 0u);
  engine.Cancel(1);  // finished: ignored
  engine.Cancel(99);
  EXPECT_EQ(rec->finishes(), 1);
}

TEST_F(UpstreamEngineTest, OverloadedStatusesAreUnavailable) {
  OpenAIEngine engine(Options());
  for (int status : {429, 503, 529}) {
    FinishInfo info = Run(engine, Request("[mock:fail=" + std::to_string(status) + "]"));
    EXPECT_EQ(info.stop_reason, "error");
    EXPECT_EQ(info.error.code(), absl::StatusCode::kUnavailable) << status;
    EXPECT_EQ(info.output_tokens, 0);
  }
}

TEST_F(UpstreamEngineTest, OtherStatusesAreInternalWithAGenericMessage) {
  OpenAIEngine engine(Options());
  for (int status : {500, 400}) {
    FinishInfo info = Run(engine, Request("[mock:fail=" + std::to_string(status) + "]"));
    EXPECT_EQ(info.error.code(), absl::StatusCode::kInternal);
    EXPECT_EQ(info.error.message(),
              "upstream refused the request (status " + std::to_string(status) + ")");
  }
}

TEST_F(UpstreamEngineTest, TruncatedStreamIsInternalWithPartialCounts) {
  OpenAIEngine engine(Options());
  std::shared_ptr<Recorder> rec;
  FinishInfo info = Run(engine, Request("[mock:truncate=3]"), &rec);
  EXPECT_EQ(info.stop_reason, "error");
  EXPECT_EQ(info.error.code(), absl::StatusCode::kInternal);
  EXPECT_EQ(info.output_tokens, 3);
  EXPECT_EQ(rec->text(), Reply(3));
  EXPECT_GT(info.input_tokens, 0);  // estimated: the upstream sent no usage
}

// Some OpenAI-compatible servers close a complete stream without [DONE]:
// once the finish reason came, that is the end, not a truncation.
TEST_F(UpstreamEngineTest, ACompleteStreamWithoutDoneFinishesNormally) {
  OpenAIEngine engine(Options());
  std::shared_ptr<Recorder> rec;
  FinishInfo info = Run(engine, Request("[mock:nodone,tokens=4]"), &rec);
  EXPECT_TRUE(info.error.ok()) << info.error;
  EXPECT_EQ(info.stop_reason, "end_turn");
  EXPECT_EQ(info.output_tokens, 4);
  EXPECT_EQ(rec->text(), Reply(4));
}

TEST_F(UpstreamEngineTest, StalledStreamIsDeadlineExceeded) {
  UpstreamOptions o = Options();
  o.idle_timeout = 200ms;
  OpenAIEngine engine(o);
  std::shared_ptr<Recorder> rec;
  const auto start = std::chrono::steady_clock::now();
  FinishInfo info = Run(engine, Request("[mock:stall=2]"), &rec);
  EXPECT_GE(std::chrono::steady_clock::now() - start, 200ms);
  EXPECT_EQ(info.error.code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(info.output_tokens, 2);
  // The engine hung up, and the mock saw it.
  EXPECT_TRUE(WaitUntil([&] { return mock_->Stats().aborted == 1; }));
}

TEST_F(UpstreamEngineTest, ConnectionRefusedIsUnavailable) {
  int port;
  {
    boost::asio::io_context io;
    boost::asio::ip::tcp::acceptor a(io, {boost::asio::ip::make_address("127.0.0.1"), 0});
    port = a.local_endpoint().port();
  }
  UpstreamOptions o = Options();
  o.url = "http://127.0.0.1:" + std::to_string(port) + "/v1";
  OpenAIEngine engine(o);
  FinishInfo info = Run(engine, Request("hi"));
  EXPECT_EQ(info.stop_reason, "error");
  EXPECT_EQ(info.error.code(), absl::StatusCode::kUnavailable);
}

TEST_F(UpstreamEngineTest, LoadComesFromTheUpstreamsMetrics) {
  UpstreamOptions o = Options();
  o.metrics_url = "";  // derived: {url minus /v1}/metrics
  o.metrics_interval = 50ms;
  o.idle_timeout = 10s;
  mock_->SetReportedLoad(3, 0.4);
  OpenAIEngine engine(o);
  EXPECT_EQ(engine.metrics_url(), "http://127.0.0.1:" + std::to_string(mock_->port()) + "/metrics");
  auto rec = std::make_shared<Recorder>();
  ASSERT_TRUE(engine.Submit(Request("[mock:stall=1]"), rec).ok());
  EXPECT_TRUE(WaitUntil([&] {
    EngineLoad l = engine.Load();
    return l.running == 1 && l.waiting == 3 && std::abs(l.kv_cache_usage - 0.4) < 1e-9;
  }));
  engine.Cancel(1);
  EXPECT_EQ(rec->Wait().stop_reason, "cancelled");
  EXPECT_TRUE(WaitUntil([&] { return engine.Load().running == 0; }));
}

TEST_F(UpstreamEngineTest, WithoutMetricsLoadIsOwnInFlightAndConcurrencyIsCapped) {
  UpstreamOptions o = Options();
  o.max_concurrency = 2;
  OpenAIEngine engine(o);
  auto a = std::make_shared<Recorder>();
  auto b = std::make_shared<Recorder>();
  ASSERT_TRUE(engine.Submit(Request("[mock:stall=0]"), a).ok());
  ASSERT_TRUE(engine.Submit(Request("[mock:stall=0]"), b).ok());
  EXPECT_EQ(engine.Load().running, 2);
  EXPECT_EQ(engine.Submit(Request("x"), std::make_shared<Recorder>()).code(),
            absl::StatusCode::kResourceExhausted);
  engine.Cancel(1);
  a->Wait();
  ASSERT_TRUE(WaitUntil([&] { return engine.Load().running == 1; }));
  ASSERT_TRUE(engine.Submit(Request("x"), std::make_shared<Recorder>()).ok());
}

TEST_F(UpstreamEngineTest, DrainLetsShortStreamsFinishAndCancelsTheRest) {
  OpenAIEngine engine(Options());
  auto quick = std::make_shared<Recorder>();
  auto stuck = std::make_shared<Recorder>();
  ASSERT_TRUE(engine.Submit(Request("[mock:ttft=50]"), quick).ok());
  ASSERT_TRUE(engine.Submit(Request("[mock:stall=1]"), stuck).ok());
  engine.Drain(absl::Now() + absl::Milliseconds(500));
  EXPECT_EQ(quick->finishes(), 1);
  EXPECT_EQ(quick->Wait().stop_reason, "end_turn");
  EXPECT_EQ(stuck->finishes(), 1);
  EXPECT_EQ(stuck->Wait().stop_reason, "cancelled");
  EXPECT_EQ(engine.Submit(Request("x"), std::make_shared<Recorder>()).code(),
            absl::StatusCode::kFailedPrecondition);
}

TEST_F(UpstreamEngineTest, FiftyConcurrentStreamsOnOneClientThread) {
  auto client = std::make_shared<http::AsyncClient>(http::AsyncClientOptions{.threads = 1});
  UpstreamOptions o = Options();
  OpenAIEngine engine(o, client);
  std::vector<std::shared_ptr<Recorder>> recs;
  for (int i = 0; i < 50; ++i) {
    recs.push_back(std::make_shared<Recorder>());
    ASSERT_TRUE(engine.Submit(Request("[mock:tps=100]"), recs.back()).ok());
  }
  // All are in flight together (12 tokens at 100/s take 110 ms each).
  EXPECT_EQ(engine.Load().running, 50);
  for (auto& r : recs) {
    FinishInfo info = r->Wait();
    EXPECT_EQ(info.stop_reason, "end_turn");
    EXPECT_EQ(info.output_tokens, 12);
    EXPECT_EQ(r->text(), Reply(12));
  }
}

TEST_F(UpstreamEngineTest, AnthropicStreamsWithUsageAndStopSequence) {
  UpstreamOptions o = Options();
  o.api_key = "ak-test";
  AnthropicEngine engine(o);
  EXPECT_EQ(engine.metrics_url(), "");
  EngineRequest r = Request("alpha beta");
  r.system = "sys words here";
  r.messages.push_back({"system", "more system"});
  r.sampling.top_k = 5;
  std::shared_ptr<Recorder> rec;
  FinishInfo info = Run(engine, std::move(r), &rec);
  EXPECT_EQ(info.stop_reason, "end_turn");
  EXPECT_EQ(rec->text(), Reply(12));
  EXPECT_EQ(info.output_tokens, 12);
  EXPECT_EQ(info.input_tokens, 7);  // the mock counts the system's words too
  json body = LastBody();
  EXPECT_EQ(body["system"], "sys words here\n\nmore system");
  EXPECT_EQ(body["messages"], json::parse(R"([{"role":"user","content":"alpha beta"}])"));
  EXPECT_EQ(body["top_k"], 5);
  EXPECT_EQ(body["max_tokens"], 100);
  auto headers = mock_->LastRequestHeaders();
  EXPECT_EQ(headers["x-api-key"], "ak-test");
  EXPECT_EQ(headers["anthropic-version"], "2023-06-01");
  EXPECT_EQ(headers.count("authorization"), 0u);

  r = Request("go");
  r.stop_sequences = {"fox"};
  info = Run(engine, std::move(r), &rec);
  EXPECT_EQ(info.stop_reason, "stop_sequence");
  EXPECT_EQ(info.stop_sequence, "fox");
  EXPECT_EQ(rec->text(), "The quick brown ");
  EXPECT_EQ(LastBody()["stop_sequences"], json::array({"fox"}));

  info = Run(engine, Request("go", 4));
  EXPECT_EQ(info.stop_reason, "max_tokens");
  EXPECT_EQ(info.output_tokens, 4);
}

TEST_F(UpstreamEngineTest, AnthropicErrorsAndOverload) {
  AnthropicEngine engine(Options());
  std::shared_ptr<Recorder> rec;
  FinishInfo info = Run(engine, Request("[mock:error_event=overloaded_error]"), &rec);
  EXPECT_EQ(info.stop_reason, "error");
  EXPECT_EQ(info.error.code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(rec->text(), Reply(1));
  EXPECT_EQ(info.output_tokens, 1);

  info = Run(engine, Request("[mock:error_event=api_error]"));
  EXPECT_EQ(info.error.code(), absl::StatusCode::kInternal);
  info = Run(engine, Request("[mock:fail=529]"));
  EXPECT_EQ(info.error.code(), absl::StatusCode::kUnavailable);
  info = Run(engine, Request("[mock:truncate=2]"));
  EXPECT_EQ(info.error.code(), absl::StatusCode::kInternal);
  // No usage came: each text delta counts as its estimated tokens.
  int estimated = 0;
  for (const auto& t : mock::MockReplyTokens(2)) estimated += std::max(1, engine.CountTokens(t));
  EXPECT_EQ(info.output_tokens, estimated);
}

TEST_F(UpstreamEngineTest, OpenAIPassesOnCachedPromptTokens) {
  OpenAIEngine engine(Options());
  FinishInfo info = Run(engine, Request("one two three four [mock:cached=2]"));
  EXPECT_EQ(info.input_tokens, 5);  // the mock counts words, the tag too
  EXPECT_EQ(info.cache_read_tokens, 2);
  EXPECT_EQ(info.cache_creation_tokens, 0);
  info = Run(engine, Request("one two three"));
  EXPECT_EQ(info.cache_read_tokens, 0);
}

TEST_F(UpstreamEngineTest, AnthropicCacheBreakpointsAndCacheUsage) {
  AnthropicEngine engine(Options());
  EngineRequest r = Request("alpha beta [mock:cached=3,cache_written=2]");
  r.system = "sys words here";
  r.system_cache_breakpoint = true;
  r.messages.push_back({"assistant", "ok", true});
  r.messages.push_back({"user", "last"});
  FinishInfo info = Run(engine, std::move(r));
  // Anthropic's input_tokens leaves the cached tokens out; ours counts them.
  EXPECT_EQ(info.input_tokens, 8);
  EXPECT_EQ(info.cache_read_tokens, 3);
  EXPECT_EQ(info.cache_creation_tokens, 2);
  json body = LastBody();
  EXPECT_EQ(body["system"], json::parse(R"([{"type":"text","text":"sys words here",
      "cache_control":{"type":"ephemeral"}}])"));
  EXPECT_EQ(body["messages"][1]["content"], json::parse(R"([{"type":"text","text":"ok",
      "cache_control":{"type":"ephemeral"}}])"));
  EXPECT_EQ(body["messages"][2]["content"], "last");
  // No breakpoints: plain strings, as before.
  Run(engine, Request("plain"));
  EXPECT_EQ(LastBody()["messages"][0]["content"], "plain");
}

TEST(UpstreamFlagsTest, ModelMap) {
  auto m = ParseModelMap("a=b, c = org/d ");
  ASSERT_TRUE(m.ok());
  EXPECT_EQ(m->at("a"), "b");
  EXPECT_EQ(m->at("c"), "org/d");
  EXPECT_FALSE(ParseModelMap("a=").ok());
  EXPECT_FALSE(ParseModelMap("novalue").ok());
  EXPECT_TRUE(ParseModelMap("").ok());
}

}  // namespace
}  // namespace sb::worker
