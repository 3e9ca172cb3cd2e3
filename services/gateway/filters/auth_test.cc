#include "gateway/filters/auth.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <thread>

#include "core/api_key.h"
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

constexpr const char* kGoodId = "01JD5Z7Q8R9S0T1V2W3X4Y5Z6A";
const std::string kGood = FormatApiKey(kGoodId, "0123456789abcdef0123456789abcdef");
// Well formed, with a valid check, but in no store.
std::string Unknown(int i) {
  char secret[33];
  std::snprintf(secret, sizeof secret, "%032x", i);
  return FormatApiKey("01JD5Z7Q8R9S0T1V2W3X4Y5Z6B", secret);
}

class AuthenticatorTest : public ::testing::Test {
 protected:
  void SetUp() override { store_.Add(kGood, Principal{kGoodId, "org1", ""}); }
  absl::StatusOr<Principal> Auth(const std::string& key, absl::Time at,
                                 const std::string& ip = "10.0.0.1") {
    return auth_.Authenticate(key, ip, at);
  }
  double Result(const std::string& result) {
    return registry_.GetCounter("sb_gateway_auth_total", "", {{"result", result}}).Value();
  }
  FakeKeyStore store_;
  metrics::Registry registry_;
  Authenticator auth_{store_,
                      {.ttl = absl::Seconds(60),
                       .negative_ttl = absl::Seconds(5),
                       .stale = absl::Seconds(300),
                       .lookups_per_second_per_ip = 1,
                       .lookup_burst_per_ip = 3},
                      registry_};
};

TEST_F(AuthenticatorTest, AcceptsKnownKeysAndCachesThem) {
  auto p = Auth(kGood, kT0);
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->org_id, "org1");
  EXPECT_TRUE(Auth(kGood, kT0 + absl::Seconds(30)).ok());
  EXPECT_EQ(store_.lookups(), 1);
  EXPECT_TRUE(Auth(kGood, kT0 + absl::Seconds(61)).ok());
  EXPECT_EQ(store_.lookups(), 2) << "the cached entry expired";
}

TEST_F(AuthenticatorTest, RejectsUnknownAndMissingKeys) {
  EXPECT_EQ(Auth(Unknown(1), kT0).status().code(), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(Auth(Unknown(1), kT0 + absl::Seconds(1)).status().code(),
            absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(store_.lookups(), 1) << "refusals are cached briefly too";
  EXPECT_EQ(Auth("", kT0).status().code(), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(Result("unknown"), 2);
  EXPECT_EQ(Result("missing"), 1);
}

TEST_F(AuthenticatorTest, MalformedAndMistypedKeysNeverReachTheStore) {
  std::string typo = kGood;
  typo[20] = typo[20] == 'A' ? 'B' : 'A';
  EXPECT_EQ(Auth(typo, kT0).status().code(), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(Auth("sk-good", kT0).status().code(), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(Auth(std::string(5000, 'x'), kT0).status().code(), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(store_.lookups(), 0);
  EXPECT_EQ(Result("checksum"), 1);
  EXPECT_EQ(Result("malformed"), 2);
}

// Well-formed unknown keys cost a look-up each, so an address gets only so
// many: past its budget it is refused with 429 and the store is spared,
// while another address (and every cached key) is unaffected.
TEST_F(AuthenticatorTest, LookupsOfUnknownKeysAreRateLimitedPerAddress) {
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(Auth(Unknown(i), kT0, "6.6.6.6").status().code(), absl::StatusCode::kUnauthenticated);
  }
  for (int i = 3; i < 100; ++i) {
    EXPECT_EQ(Auth(Unknown(i), kT0, "6.6.6.6").status().code(),
              absl::StatusCode::kResourceExhausted);
  }
  EXPECT_EQ(store_.lookups(), 3);
  EXPECT_EQ(Result("rate_limited"), 97);
  EXPECT_TRUE(Auth(kGood, kT0, "10.0.0.2").ok()) << "another address still gets its look-ups";
  // The budget refills at lookups_per_second_per_ip.
  EXPECT_EQ(Auth(Unknown(500), kT0 + absl::Seconds(1), "6.6.6.6").status().code(),
            absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(store_.lookups(), 5);
}

// However many unknown keys are cached, known keys stay cached.
TEST_F(AuthenticatorTest, AFloodOfUnknownKeysCannotEvictKnownOnes) {
  Authenticator small(store_, {.lookups_per_second_per_ip = 0, .max_known = 10, .max_unknown = 10},
                      registry_);
  ASSERT_TRUE(small.Authenticate(kGood, "1.1.1.1", kT0).ok());
  for (int i = 0; i < 1000; ++i) {
    (void)small.Authenticate(Unknown(i), "2.2.2.2", kT0);
  }
  const int before = store_.lookups();
  EXPECT_TRUE(small.Authenticate(kGood, "1.1.1.1", kT0 + absl::Seconds(1)).ok());
  EXPECT_EQ(store_.lookups(), before) << "the known key was still cached";
}

// While the store is down a verified key is trusted for `stale` after it
// was last verified, then refused as unverifiable (it used to be forever).
TEST_F(AuthenticatorTest, KnownKeysAreTrustedForALimitedTimeWhileTheStoreIsDown) {
  ASSERT_TRUE(Auth(kGood, kT0).ok());
  store_.set_available(false);
  EXPECT_TRUE(Auth(kGood, kT0 + absl::Minutes(4)).ok());
  EXPECT_EQ(Result("stale"), 1);
  EXPECT_EQ(Auth(kGood, kT0 + absl::Seconds(301)).status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(Auth(Unknown(7), kT0 + absl::Seconds(301)).status().code(),
            absl::StatusCode::kUnavailable);
  store_.set_available(true);
  EXPECT_TRUE(Auth(kGood, kT0 + absl::Seconds(310)).ok());
}

// During an outage a busy client's stale key is served without a look-up
// (and a charge) per request: the store is tried again once a second.
TEST_F(AuthenticatorTest, AStaleKeyIsNotLookedUpOnEveryRequestDuringAnOutage) {
  ASSERT_TRUE(Auth(kGood, kT0).ok());
  store_.set_available(false);
  const int before = store_.lookups();
  for (int i = 0; i < 100; ++i) {
    EXPECT_TRUE(Auth(kGood, kT0 + absl::Seconds(61) + absl::Milliseconds(5 * i)).ok()) << i;
  }
  EXPECT_EQ(store_.lookups() - before, 1) << "one try in the first second, then stale answers";
  EXPECT_TRUE(Auth(kGood, kT0 + absl::Seconds(63)).ok());
  EXPECT_EQ(store_.lookups() - before, 2);
}

TEST_F(AuthenticatorTest, ARevokedKeyIsRefusedAtOnceCachedOrNot) {
  ASSERT_TRUE(Auth(kGood, kT0).ok());
  auth_.Revoke(kGoodId);
  const int before = store_.lookups();
  EXPECT_EQ(Auth(kGood, kT0 + absl::Seconds(1)).status().code(),
            absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(store_.lookups(), before) << "refused without asking the store";
  EXPECT_EQ(Result("revoked"), 1);
}

// A look-up that was already running when the revocation arrived does not
// bring the key back into the cache.
TEST_F(AuthenticatorTest, ALookupRacingARevocationLoses) {
  ASSERT_FALSE(auth_.Check(kGood, "10.0.0.1", kT0).has_value());  // a look-up is due
  auth_.Revoke(kGoodId);  // arrives before the store answers
  EXPECT_EQ(auth_.Lookup(kGood, kT0).status().code(), absl::StatusCode::kUnauthenticated);
}

// A client's first burst on a new key (many requests at once, all missing
// the cache) is one look-up, charged once: it is not mistaken for a flood.
TEST_F(AuthenticatorTest, ConcurrentMissesOfOneKeyShareOneLookup) {
  std::vector<bool> decided;
  for (int i = 0; i < 50; ++i) decided.push_back(auth_.Check(kGood, "10.0.0.9", kT0).has_value());
  // The first is charged and goes to look up; while it runs, the others
  // join it (the budget of 3 would otherwise refuse 47 of them).
  EXPECT_EQ(std::count(decided.begin(), decided.end(), true), 0);
  std::vector<std::thread> lookups;
  std::atomic<int> ok{0};
  for (int i = 0; i < 50; ++i) {
    lookups.emplace_back([&] { ok += auth_.Lookup(kGood, kT0).ok() ? 1 : 0; });
  }
  for (auto& t : lookups) t.join();
  EXPECT_EQ(ok.load(), 50);
  EXPECT_LE(store_.lookups(), 50);
  EXPECT_GE(store_.lookups(), 1);
}

TEST(ApiKeyOfTest, ReadsBothHeaderStyles) {
  EXPECT_EQ(ApiKeyOf(MakeRequest("GET", "/", {{"x-api-key", "k1"}})), "k1");
  EXPECT_EQ(ApiKeyOf(MakeRequest("GET", "/", {{"authorization", "Bearer k2"}})), "k2");
  EXPECT_EQ(ApiKeyOf(MakeRequest("GET", "/", {{"authorization", "Basic abc"}})), "");
}

class AuthFilterTest : public ::testing::Test {
 protected:
  void SetUp() override { store_.Add(kGood, Principal{kGoodId, "org1", "u1"}); }

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
  Authenticator auth_{store_, {}, registry_};
  ThreadPool pool_{1, 16};
  AuthFilter filter_{auth_, pool_};
  AnthropicDialect anthropic_;
  OpenAiDialect openai_;
  std::shared_ptr<FakeExchange> exchange_;
  std::shared_ptr<RequestContext> ctx_;
};

TEST_F(AuthFilterTest, SetsThePrincipalAndContinues) {
  ASSERT_TRUE(Run({{"x-api-key", kGood}}, anthropic_));
  EXPECT_EQ(ctx_->principal->org_id, "org1");
  EXPECT_EQ(ctx_->principal->user_id, "u1");
  ASSERT_TRUE(Run({{"authorization", "Bearer " + kGood}}, openai_));
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
  EXPECT_FALSE(Run({{"x-api-key", kGood}}, anthropic_));
  EXPECT_EQ(exchange_->status(), 529);
  EXPECT_EQ(exchange_->header("retry-after"), "1");
}

}  // namespace
}  // namespace sb::gateway
