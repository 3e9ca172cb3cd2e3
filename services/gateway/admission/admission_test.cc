// Admission logic on a manual clock: the token bucket, the in-process
// limiter (the fallback and the reference for the Redis script), the limits
// cache, the headers of both dialects, and the filter.
#include <memory>

#include "core/thread_pool.h"
#include "gateway/admission/admission_filter.h"
#include "gateway/admission/local_admission.h"
#include "gateway/admission/token_bucket.h"
#include "gateway/context.h"
#include "gateway/dialects/anthropic.h"
#include "gateway/dialects/fields.h"
#include "gateway/dialects/openai.h"
#include "gtest/gtest.h"
#include "testing/fake_exchange.h"
#include "testing/manual_clock.h"

namespace sb::gateway {
namespace {

using sb::testing::ManualClock;
using sb::testing::ManualTimers;

const absl::Time kT0 = absl::FromUnixSeconds(1'800'000'000);

TEST(TokenBucketTest, StartsFullAndRefillsContinuouslyUpToTheLimit) {
  TokenBucket b(60, kT0);  // one a second
  EXPECT_TRUE(b.TryTake(60, kT0));
  EXPECT_FALSE(b.TryTake(1, kT0));
  EXPECT_EQ(b.TimeUntil(1, kT0), absl::Seconds(1));
  EXPECT_DOUBLE_EQ(b.tokens(kT0 + absl::Milliseconds(2500)), 2.5);
  EXPECT_DOUBLE_EQ(b.tokens(kT0 + absl::Hours(1)), 60) << "never above the limit";
  EXPECT_EQ(b.FullAt(kT0 + absl::Hours(1)), kT0 + absl::Hours(1));
}

TEST(TokenBucketTest, RefundsAreCappedAndCorrectionsMayGoBelowZero) {
  TokenBucket b(1000, kT0);
  ASSERT_TRUE(b.TryTake(1000, kT0));  // max_tokens 1,000 reserved
  b.Give(990, kT0);                   // the reply stopped at 10
  EXPECT_DOUBLE_EQ(b.tokens(kT0), 990);
  b.Give(5000, kT0);
  EXPECT_DOUBLE_EQ(b.tokens(kT0), 1000);
  b.Give(-1500, kT0);  // the exact input was far above the estimate
  EXPECT_DOUBLE_EQ(b.tokens(kT0), -500);
  EXPECT_EQ(b.TimeUntil(1, kT0), absl::Seconds(30.06));
  EXPECT_FALSE(b.TryTake(1, kT0 + absl::Seconds(30)));
  EXPECT_TRUE(b.TryTake(1, kT0 + absl::Seconds(31)));
}

TEST(TokenBucketTest, AClockThatStepsBackAddsNothing) {
  TokenBucket b(60, kT0);
  ASSERT_TRUE(b.TryTake(60, kT0));
  EXPECT_DOUBLE_EQ(b.tokens(kT0 - absl::Seconds(5)), 0);
  EXPECT_DOUBLE_EQ(b.tokens(kT0 + absl::Seconds(1)), 1);
}

LimitRow Row(int64_t rpm, int64_t in, int64_t out, int64_t conc, std::string key = "",
             std::string model = "") {
  LimitRow r;
  r.org_id = "org";
  r.key_id = std::move(key);
  r.model = std::move(model);
  r.rpm = rpm;
  r.input_tpm = in;
  r.output_tpm = out;
  r.concurrency = conc;
  return r;
}

AdmissionDecision Decide(Admission& a, const AdmissionRequest& req,
                         const std::vector<LimitRow>& rows, absl::Time now) {
  AdmissionDecision out;
  a.Admit(req, rows, now, [&](absl::StatusOr<AdmissionDecision> d) {
    ASSERT_TRUE(d.ok()) << d.status();
    out = *d;
  });
  return out;
}

AdmissionRequest Req(std::string id, int64_t in = 10, int64_t max_tokens = 100) {
  return {"org", "k1", "m", std::move(id), in, max_tokens};
}

TEST(LocalAdmissionTest, AllOrNothingAcrossRowsAndDimensions) {
  LocalAdmission a(1, absl::Seconds(30));
  const std::vector<LimitRow> rows = {Row(10, 0, 0, 0), Row(0, 0, 150, 0, "k1")};
  auto first = Decide(a, Req("r1"), rows, kT0);
  ASSERT_TRUE(first.admitted);
  EXPECT_EQ(first.view.requests.remaining, 9);
  EXPECT_EQ(first.view.output_tokens.remaining, 50);
  // The key's output row refuses the second: the org's request bucket is
  // not charged for it.
  auto second = Decide(a, Req("r2"), rows, kT0);
  ASSERT_FALSE(second.admitted);
  EXPECT_EQ(second.refusal.dimension, Dimension::kOutputTokens);
  EXPECT_EQ(second.refusal.scope, "org/key=k1");
  EXPECT_EQ(second.refusal.retry_after, absl::Seconds(20));  // 50 missing at 150 a minute
  auto third = Decide(a, Req("r3", 10, 10), rows, kT0);
  ASSERT_TRUE(third.admitted);
  EXPECT_EQ(third.view.requests.remaining, 8) << "the refusal took nothing";
}

TEST(LocalAdmissionTest, OutputTokensUnusedComeBackAndInputIsCorrected) {
  LocalAdmission a(1, absl::Seconds(30));
  const std::vector<LimitRow> rows = {Row(0, 100, 1000, 0)};
  ASSERT_TRUE(Decide(a, Req("r1", 40, 1000), rows, kT0).admitted);
  EXPECT_FALSE(Decide(a, Req("r2", 1, 1), rows, kT0).admitted) << "1,000 reserved";
  a.Complete(Req("r1", 40, 1000), rows, kT0, /*input_tokens=*/70, /*output_tokens=*/10);
  auto after = Decide(a, Req("r3", 1, 990), rows, kT0);
  ASSERT_TRUE(after.admitted) << "990 came back";
  EXPECT_EQ(after.view.output_tokens.remaining, 0);
  EXPECT_EQ(after.view.input_tokens.remaining, 100 - 70 - 1) << "charged the exact 70, not 40";
}

TEST(LocalAdmissionTest, ARequestThatCanNeverFitIsToldSo) {
  LocalAdmission a(1, absl::Seconds(30));
  auto d = Decide(a, Req("r1", 10, 5000), {Row(0, 0, 1000, 0)}, kT0);
  ASSERT_FALSE(d.admitted);
  EXPECT_TRUE(d.refusal.never);
  const absl::Status st = RefusalStatus(d.refusal, Req("r1", 10, 5000));
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ErrorField(st), "max_tokens");
}

TEST(LocalAdmissionTest, ConcurrencyLeasesAreHeldReturnedAndExpire) {
  LocalAdmission a(1, absl::Seconds(30));
  const std::vector<LimitRow> rows = {Row(0, 0, 0, 2)};
  ASSERT_TRUE(Decide(a, Req("r1"), rows, kT0).admitted);
  ASSERT_TRUE(Decide(a, Req("r2"), rows, kT0).admitted);
  auto full = Decide(a, Req("r3"), rows, kT0);
  ASSERT_FALSE(full.admitted);
  EXPECT_EQ(full.refusal.dimension, Dimension::kConcurrency);
  a.Complete(Req("r1"), rows, kT0, 10, 0);  // returned at the end
  EXPECT_TRUE(Decide(a, Req("r3"), rows, kT0).admitted);
  // r2's gateway "died": nobody renews it; r3 is renewed.
  a.Renew(Req("r3"), rows, kT0 + absl::Seconds(20));
  EXPECT_EQ(a.leases(rows[0], kT0 + absl::Seconds(29)), 2u);
  EXPECT_EQ(a.leases(rows[0], kT0 + absl::Seconds(31)), 1u) << "r2 expired, r3 lives on";
  EXPECT_EQ(a.leases(rows[0], kT0 + absl::Seconds(51)), 0u);
}

// Over the replica's share but within the limit: it fits once Redis is
// back, so it is a 429 to retry, not a 400.
TEST(LocalAdmissionTest, NeverIsJudgedAgainstTheWholeLimit) {
  LocalAdmission a(/*share=*/2, absl::Seconds(30));
  const std::vector<LimitRow> rows = {Row(0, 0, 4000, 0)};
  auto over_share = Decide(a, Req("r1", 10, 3000), rows, kT0);
  ASSERT_FALSE(over_share.admitted);
  EXPECT_FALSE(over_share.refusal.never);
  EXPECT_EQ(over_share.refusal.retry_after, absl::Seconds(1));
  auto over_limit = Decide(a, Req("r2", 10, 5000), rows, kT0);
  ASSERT_FALSE(over_limit.admitted);
  EXPECT_TRUE(over_limit.refusal.never);
  EXPECT_EQ(over_limit.refusal.limit, 4000);
}

TEST(LocalAdmissionTest, TheFallbackAdmitsTheReplicasShare) {
  LocalAdmission a(/*share=*/2, absl::Seconds(30));
  const std::vector<LimitRow> rows = {Row(20, 0, 0, 0)};
  int admitted = 0;
  for (int i = 0; i < 50; ++i)
    admitted += Decide(a, Req("r" + std::to_string(i)), rows, kT0).admitted;
  EXPECT_EQ(admitted, 10);
}

class FakeLimitsSource final : public LimitsSource {
 public:
  absl::StatusOr<std::vector<LimitRow>> ChangedSince(absl::Time since) override {
    std::vector<LimitRow> out;
    for (const auto& r : rows) {
      if (r.updated_at >= since) out.push_back(r);
    }
    return out;
  }
  std::vector<LimitRow> rows;
};

TEST(LimitsCacheTest, TheRowsThatApplyAndChangesThatArrive) {
  FakeLimitsSource source;
  auto row = [](std::string key, std::string model, int64_t rpm, absl::Time at) {
    LimitRow r = Row(rpm, 0, 0, 0, std::move(key), std::move(model));
    r.updated_at = at;
    return r;
  };
  source.rows = {row("", "", 100, kT0), row("", "m", 50, kT0), row("k1", "", 10, kT0),
                 row("k1", "m", 5, kT0), row("k2", "", 1, kT0)};
  LimitsCache cache(source);
  ASSERT_TRUE(cache.Refresh().ok());
  EXPECT_EQ(cache.For("org", "k1", "m").size(), 4u);
  EXPECT_EQ(cache.For("org", "k1", "other").size(), 2u);
  EXPECT_EQ(cache.For("org", "k3", "other").size(), 1u);
  EXPECT_TRUE(cache.For("another", "k1", "m").empty());
  // A limit removed (every field 0) stops applying at the next refresh.
  source.rows.push_back(row("k1", "m", 0, kT0 + absl::Seconds(1)));
  ASSERT_TRUE(cache.Refresh().ok());
  EXPECT_EQ(cache.For("org", "k1", "m").size(), 3u);
}

TEST(RateLimitHeadersTest, AnthropicRfc3339AndOpenAiDurations) {
  RateLimitView view;
  view.requests = {true, 20, 19, kT0 + absl::Seconds(3)};
  view.input_tokens = {true, 10000, 9000, kT0 + absl::Seconds(6) + absl::Milliseconds(200)};
  view.output_tokens = {true, 5000, 1000, kT0 + absl::Seconds(48)};
  const http::Headers a = AnthropicDialect().RateLimitHeaders(view, kT0);
  const http::Headers want_a = {
      {"anthropic-ratelimit-requests-limit", "20"},
      {"anthropic-ratelimit-requests-remaining", "19"},
      {"anthropic-ratelimit-requests-reset", "2027-01-15T08:00:03Z"},
      {"anthropic-ratelimit-input-tokens-limit", "10000"},
      {"anthropic-ratelimit-input-tokens-remaining", "9000"},
      {"anthropic-ratelimit-input-tokens-reset", "2027-01-15T08:00:07Z"},
      {"anthropic-ratelimit-output-tokens-limit", "5000"},
      {"anthropic-ratelimit-output-tokens-remaining", "1000"},
      {"anthropic-ratelimit-output-tokens-reset", "2027-01-15T08:00:48Z"}};
  EXPECT_EQ(a, want_a);
  const http::Headers o = OpenAiDialect().RateLimitHeaders(view, kT0);
  const http::Headers want_o = {
      {"x-ratelimit-limit-requests", "20"},     {"x-ratelimit-remaining-requests", "19"},
      {"x-ratelimit-reset-requests", "3s"},     {"x-ratelimit-limit-tokens", "5000"},
      {"x-ratelimit-remaining-tokens", "1000"}, {"x-ratelimit-reset-tokens", "48s"}};
  EXPECT_EQ(o, want_o) << "the tighter of the token limits";
  EXPECT_TRUE(AnthropicDialect().RateLimitHeaders(RateLimitView{}, kT0).empty());
  EXPECT_EQ(OpenAiDuration(absl::Milliseconds(20)), "20ms");
  EXPECT_EQ(OpenAiDuration(absl::Milliseconds(1500)), "1.5s");
  EXPECT_EQ(OpenAiDuration(absl::Minutes(6)), "6m0s");
  EXPECT_EQ(OpenAiDuration(absl::Microseconds(59'999'600)), "1m0s") << "as rounded";
  EXPECT_EQ(OpenAiDuration(absl::Microseconds(999'600)), "1s");
}

TEST(RateLimitErrorTest, Is429WithRetryAfterInBothDialects) {
  Refusal r{Dimension::kRequests, 20, absl::Milliseconds(2300), false, "org"};
  const absl::Status st = RefusalStatus(r, Req("r"));
  const ErrorReply a = AnthropicDialect().Error(st);
  EXPECT_EQ(a.http_status, 429);
  EXPECT_EQ(a.retry_after_seconds, 3);
  EXPECT_NE(a.body.find("rate_limit_error"), std::string::npos);
  EXPECT_NE(a.body.find("requests per minute (20)"), std::string::npos) << a.body;
  const ErrorReply o = OpenAiDialect().Error(st);
  EXPECT_EQ(o.http_status, 429);
  EXPECT_EQ(o.retry_after_seconds, 3);
  EXPECT_NE(o.body.find(R"("type":"requests")"), std::string::npos) << o.body;
  Refusal tokens{Dimension::kOutputTokens, 1000, absl::Seconds(1), false, "org"};
  EXPECT_NE(OpenAiDialect().Error(RefusalStatus(tokens, Req("r"))).body.find(R"("type":"tokens")"),
            std::string::npos);
}

// The filter: admitted requests carry the headers and give back at the
// end; refused ones are 429s that consume nothing.
class AdmissionFilterTest : public ::testing::Test {
 protected:
  AdmissionFilterTest() { source_.rows = {}; }

  std::shared_ptr<RequestContext> Run(int max_tokens, bool* continued) {
    auto exchange = std::make_shared<sb::testing::FakeExchange>(
        sb::testing::MakeRequest("POST", "/v1/messages"));
    exchanges_.push_back(exchange);
    auto ctx =
        std::make_shared<RequestContext>(exchange, "req_" + std::to_string(n_++), clock_, metrics_);
    ctx->route_name = "/v1/messages";
    ctx->dialect = &anthropic_;
    ctx->principal = Principal{"k1", "org", ""};
    ctx->api.generate = std::make_shared<pipeline::Request>();
    ctx->api.generate->set_model("m");
    ctx->api.generate->set_max_tokens(max_tokens);
    auto* msg = ctx->api.generate->add_messages();
    msg->add_content()->set_text(std::string(40, 'x'));  // about 10 tokens
    *continued = false;
    filter_.Handle(ctx, [continued] { *continued = true; });
    return ctx;
  }

  ManualClock clock_{kT0};
  ManualTimers timers_{clock_};
  metrics::Registry registry_;
  GatewayMetrics metrics_{registry_};
  FakeLimitsSource source_;
  LimitsCache limits_{source_};
  LocalAdmission admission_{1, absl::Seconds(30)};
  ThreadPool pool_{1, 16};
  AdmissionFilter filter_{limits_, admission_, timers_, pool_, absl::Seconds(30)};
  AnthropicDialect anthropic_;
  std::vector<std::shared_ptr<sb::testing::FakeExchange>> exchanges_;
  int n_ = 0;
};

TEST_F(AdmissionFilterTest, WithoutLimitsNothingHappens) {
  bool continued;
  auto ctx = Run(100, &continued);
  EXPECT_TRUE(continued);
  ctx->RespondJson(200, "{}");
  EXPECT_EQ(exchanges_.back()->header("anthropic-ratelimit-requests-limit"), "");
}

TEST_F(AdmissionFilterTest, HeadersRefundsLeasesAndRefusals) {
  limits_.Put(Row(2, 0, 2000, 1));
  bool continued;
  auto first = Run(1000, &continued);
  ASSERT_TRUE(continued);
  EXPECT_EQ(timers_.pending(), 1u) << "a concurrency lease is being renewed";
  // The second: the lease is held.
  auto second = Run(10, &continued);
  EXPECT_FALSE(continued);
  EXPECT_EQ(exchanges_.back()->status(), 429);
  EXPECT_EQ(exchanges_.back()->header("retry-after"), "1");
  EXPECT_NE(exchanges_.back()->body().find("concurrent requests (1)"), std::string::npos);
  // The first ends having used 10 of its 1,000 output tokens.
  first->outcome() = {.started = true, .input_tokens = 10, .output_tokens = 10};
  first->RespondJson(200, "{}");
  EXPECT_EQ(exchanges_[0]->header("anthropic-ratelimit-requests-remaining"), "1");
  EXPECT_EQ(exchanges_[0]->header("anthropic-ratelimit-output-tokens-remaining"), "1000");
  EXPECT_EQ(timers_.pending(), 0u) << "the renewal stopped with the request";
  auto third = Run(1990, &continued);
  EXPECT_TRUE(continued) << "the slot and 990 output tokens came back";
  third->RespondJson(200, "{}");
  auto fourth = Run(1, &continued);
  EXPECT_FALSE(continued) << "two requests a minute";
  EXPECT_NE(exchanges_.back()->body().find("requests per minute (2)"), std::string::npos);
  EXPECT_EQ(exchanges_.back()->header("anthropic-ratelimit-requests-remaining"), "0");
}

// A client that sends again the moment it has a response must find the
// first one's slot given back: the release runs before the response goes.
TEST_F(AdmissionFilterTest, TheSlotIsBackBeforeTheResponseReachesTheClient) {
  limits_.Put(Row(0, 0, 0, 1));
  bool continued;
  auto first = Run(10, &continued);
  ASSERT_TRUE(continued);
  int status_when_released = -1;
  first->OnComplete(
      [&](const RequestContext::Outcome&) { status_when_released = exchanges_[0]->status(); });
  first->RespondJson(200, "{}");
  EXPECT_EQ(status_when_released, 0) << "nothing had been written yet";
  Run(10, &continued);
  EXPECT_TRUE(continued);
}

}  // namespace
}  // namespace sb::gateway
