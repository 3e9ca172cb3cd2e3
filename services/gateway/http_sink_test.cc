#include "gateway/http_sink.h"

#include "absl/strings/match.h"
#include "gateway/dialects/anthropic.h"
#include "gateway/dialects/openai.h"
#include "gtest/gtest.h"
#include "testing/fake_exchange.h"
#include "testing/manual_clock.h"

namespace sb::gateway {
namespace {

using sb::testing::FakeExchange;
using sb::testing::MakeRequest;
using sb::testing::ManualClock;
using sb::testing::ManualTimers;

size_t Count(const std::string& s, const std::string& what) {
  size_t n = 0;
  for (size_t p = s.find(what); p != std::string::npos; p = s.find(what, p + 1)) ++n;
  return n;
}

class HttpSinkTest : public ::testing::Test {
 protected:
  std::shared_ptr<HttpSink> Make(bool stream, const Dialect& dialect) {
    exchange_ = std::make_shared<FakeExchange>(MakeRequest("POST", "/v1/messages"));
    ctx_ = std::make_shared<RequestContext>(exchange_, "req_9", clock_, metrics_);
    ctx_->route_name = "/v1/messages";
    ctx_->dialect = &dialect;
    ctx_->api.stream = stream;
    return std::make_shared<HttpSink>(ctx_, ReplyIds{"msg_1", 1}, timers_, absl::Seconds(10));
  }
  // A ready callback; RunPending() completes the exchange's writes, which
  // is when a streaming sink answers.
  bool ready_ = false;
  int readies_ = 0;
  pipeline::Sink::Ready Ready() {
    ready_ = false;
    return [this](bool ok) {
      ready_ = ok;
      ++readies_;
    };
  }

  ManualClock clock_;
  ManualTimers timers_{clock_};
  metrics::Registry registry_;
  GatewayMetrics metrics_{registry_};
  AnthropicDialect anthropic_;
  OpenAiDialect openai_;
  std::shared_ptr<FakeExchange> exchange_;
  std::shared_ptr<RequestContext> ctx_;
};

TEST_F(HttpSinkTest, StreamsEventsAndPingsOnlyWhenIdle) {
  auto sink = Make(true, anthropic_);
  sink->OnStart({"sim-small", 2}, Ready());
  EXPECT_FALSE(ready_) << "ready only once the write completed";
  exchange_->RunPending();
  EXPECT_TRUE(ready_);
  EXPECT_EQ(exchange_->status(), 200);
  EXPECT_EQ(exchange_->header("content-type"), "text/event-stream; charset=utf-8");
  EXPECT_EQ(exchange_->header("request-id"), "req_9");
  EXPECT_EQ(Count(exchange_->body(), "event: ping"), 1u) << "a ping early in every stream";

  timers_.Advance(absl::Seconds(6));
  sink->OnText("a", Ready());
  timers_.Advance(absl::Seconds(6));  // 12 s after the start, 6 s after the text
  EXPECT_EQ(Count(exchange_->body(), "event: ping"), 1u) << "not idle for 10 s yet";
  timers_.Advance(absl::Seconds(4));
  EXPECT_EQ(Count(exchange_->body(), "event: ping"), 2u) << "idle 10 s: a ping";
  timers_.Advance(absl::Seconds(10));
  EXPECT_EQ(Count(exchange_->body(), "event: ping"), 3u);

  sink->OnFinish({"end_turn", "", 2, 1});
  EXPECT_TRUE(exchange_->done());
  const std::string body = exchange_->body();
  EXPECT_TRUE(absl::EndsWith(body, "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"))
      << body;
  timers_.Advance(absl::Seconds(60));
  EXPECT_EQ(exchange_->body(), body) << "nothing after the end";
  EXPECT_EQ(timers_.pending(), 0u);

  // TTFT and inter-token latency were recorded under the resolved model.
  const auto& series = metrics_.For("/v1/messages", "anthropic", "sim-small");
  EXPECT_EQ(series.ttft->CumulativeCounts().back(), 1u);
  EXPECT_DOUBLE_EQ(series.ttft->Sum(), 6.0);
  EXPECT_EQ(series.duration->CumulativeCounts().back(), 1u);
}

TEST_F(HttpSinkTest, AWholeReplyIsOneJsonResponse) {
  auto sink = Make(false, openai_);
  sink->OnStart({"sim-small", 2}, Ready());
  sink->OnText("Hel", Ready());
  sink->OnText("lo", Ready());
  EXPECT_EQ(exchange_->responses(), 0);
  sink->OnFinish({"max_tokens", "", 2, 2});
  EXPECT_EQ(exchange_->status(), 200);
  const auto j = nlohmann::json::parse(exchange_->body());
  EXPECT_EQ(j["choices"][0]["message"]["content"], "Hello");
  EXPECT_EQ(j["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(timers_.pending(), 0u) << "no pings for a whole reply";
}

TEST_F(HttpSinkTest, AnErrorBeforeTheStartIsAPlainHttpError) {
  auto sink = Make(true, anthropic_);
  sink->OnError(absl::UnavailableError("no capacity to serve model m right now; retry shortly"));
  EXPECT_EQ(exchange_->status(), 529);
  EXPECT_EQ(exchange_->header("retry-after"), "1");
  EXPECT_NE(exchange_->body().find("overloaded_error"), std::string::npos);
}

TEST_F(HttpSinkTest, AnErrorMidStreamIsAnErrorEventThenTheEnd) {
  auto sink = Make(true, openai_);
  sink->OnStart({"m", 1}, Ready());
  sink->OnError(absl::UnavailableError("interrupted"));
  EXPECT_TRUE(exchange_->done());
  EXPECT_NE(exchange_->body().find(R"(data: {"error":)"), std::string::npos) << exchange_->body();
}

TEST_F(HttpSinkTest, AGoneClientMakesTheSinkRefuseMore) {
  auto sink = Make(true, anthropic_);
  sink->OnStart({"m", 1}, Ready());
  exchange_->RunPending();
  exchange_->ClientLeaves();
  sink->OnText("x", Ready());
  exchange_->RunPending();
  EXPECT_EQ(readies_, 2);
  EXPECT_FALSE(ready_) << "ready(false) tells the pipeline to cancel";
}

TEST_F(HttpSinkTest, ACancelledRequestIsNotAnsweredAsAReply) {
  auto whole = Make(false, anthropic_);
  whole->OnStart({"m", 1}, Ready());
  whole->OnFinish({"cancelled", "", 1, 3});
  EXPECT_EQ(exchange_->status(), 499) << "counted as a cancelled request, not a 200";
}

}  // namespace
}  // namespace sb::gateway
