// End-to-end checks of admission and idempotency on the real cluster:
// limits set with the sbadmin binary reach running gateways within 5 s;
// rate-limit headers and 429s in both dialects; exactness across gateway
// replicas on one Redis and on a Redis Cluster; a killed gateway's
// concurrency slots coming back by lease expiry; output-token refunds; the
// official SDKs retrying by themselves; and Idempotency-Key: replays,
// retries that attach to a running generation, 422 on another body, keys
// not consumed by refusals, 503 without Redis, and 1,000 keys sent 10 times
// each at once running exactly 1,000 generations.
#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>

#include "e2e/e2e_helpers.h"
#include "gtest/gtest.h"
#include "sbadmin/admin.h"

namespace sb::testing {
namespace {

using nlohmann::json;
using namespace std::chrono_literals;

void SetLimits(const std::string& org, admin::Limits limits) {
  auto st = admin::Admin(g_cluster->infra().pg_uri()).SetLimits(org, limits);
  ASSERT_TRUE(st.ok()) << st;
}

http::Response Send(int port, const std::string& key, const std::string& target,
                    const std::string& body, http::Headers extra = {}) {
  extra.emplace_back(target == "/v1/chat/completions" ? "authorization" : "x-api-key",
                     target == "/v1/chat/completions" ? "Bearer " + key : key);
  extra.emplace_back("content-type", "application/json");
  extra.emplace_back("anthropic-version", "2023-06-01");
  auto r = http::Fetch(
      {.port = port, .method = "POST", .target = target, .headers = extra, .body = body});
  EXPECT_TRUE(r.ok()) << r.status();
  return r.ok() ? *r : http::Response{};
}

http::Response Message(int port, const std::string& key, const std::string& body,
                       http::Headers extra = {}) {
  return Send(port, key, "/v1/messages", body, std::move(extra));
}

std::string Header(const http::Response& r, const std::string& name) {
  auto it = r.headers.find(name);
  return it == r.headers.end() ? "" : it->second;
}

// A stream held open in its own thread until it ends (or its gateway
// dies); Wait() returns once its first bytes (the 200) have arrived.
class HeldStream {
 public:
  HeldStream(int port, const std::string& key, const std::string& body) {
    thread_ = std::thread([this, port, key, body] {
      auto r = http::FetchStreaming(
          {.port = port,
           .method = "POST",
           .target = "/v1/messages",
           .headers = {{"x-api-key", key}, {"content-type", "application/json"}},
           .body = body},
          [this](std::string_view) {
            started_ = true;
            return true;
          });
      status_ = r.ok() ? r->status : -1;
      done_ = true;
    });
  }
  ~HeldStream() { thread_.join(); }
  bool Wait() {
    for (int i = 0; i < 200 && !started_ && !done_; ++i) std::this_thread::sleep_for(50ms);
    return started_ && status_ != 429;
  }
  int status() const { return status_; }

 private:
  std::atomic<bool> started_{false}, done_{false};
  std::atomic<int> status_{0};
  std::thread thread_;
};

// Sends until the header shows `limit` (or, limit 0, shows no limit); the
// time that took.
std::chrono::milliseconds UntilLimitIs(int port, const std::string& key, const std::string& limit,
                                       std::chrono::milliseconds within) {
  const auto start = std::chrono::steady_clock::now();
  while (std::chrono::steady_clock::now() - start < within) {
    auto r = Message(port, key, MessagesBody("limits?", false, 1));
    if (Header(r, "anthropic-ratelimit-requests-limit") == limit) break;
    std::this_thread::sleep_for(100ms);
  }
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() -
                                                               start);
}

// Limits changed with the sbadmin binary reach a running gateway within 5 s.
TEST(RateLimitTest, SbadminChangesApplyWithinFiveSeconds) {
  const std::string key = KeyOfNewOrg("limits-live");
  const int port = g_cluster->http_port();
  auto sbadmin = [](std::vector<std::string> args) {
    std::vector<std::string> argv = {Infra::BuildDir() + "/tools/sbadmin",
                                     "--pg=" + g_cluster->infra().pg_uri()};
    argv.insert(argv.end(), args.begin(), args.end());
    std::string out;
    EXPECT_EQ(RunCommand(argv, &out), 0) << out;
    return out;
  };
  ASSERT_EQ(Header(Message(port, key, MessagesBody("no limits", false, 1)),
                   "anthropic-ratelimit-requests-limit"),
            "")
      << "no limits, no headers";

  sbadmin({"set-limits", "limits-live", "--rpm=1000", "--output_tpm=50000"});
  const auto applied = UntilLimitIs(port, key, "1000", 6s);
  EXPECT_LT(applied, 5s);
  std::printf("[ figure   ] a new limit applied after %lld ms\n",
              static_cast<long long>(applied.count()));
  EXPECT_NE(sbadmin({"show-limits", "limits-live"}).find("1000"), std::string::npos);
  sbadmin({"set-limits", "limits-live", "--rpm=500"});
  EXPECT_LT(UntilLimitIs(port, key, "500", 6s), 5s);
  auto r = Message(port, key, MessagesBody("both limits", false, 1));
  EXPECT_EQ(Header(r, "anthropic-ratelimit-output-tokens-limit"), "50000") << "kept";
  sbadmin({"set-limits", "limits-live", "--rpm=0", "--output_tpm=0"});
  EXPECT_LT(UntilLimitIs(port, key, "", 6s), 5s);
}

TEST(RateLimitTest, HeadersAndRefusalsInBothDialects) {
  const std::string key = KeyOfNewOrg("limits-3rpm");
  SetLimits("limits-3rpm", {.rpm = 3, .output_tpm = 100000});
  auto g = g_cluster->StartGateway("gateway-3rpm");  // reads the limits at start
  ASSERT_TRUE(g.ok()) << g.status();

  auto first = Message(g->http_port, key, MessagesBody("one", false, 10));
  ASSERT_EQ(first.status, 200) << first.body;
  EXPECT_EQ(Header(first, "anthropic-ratelimit-requests-limit"), "3");
  EXPECT_EQ(Header(first, "anthropic-ratelimit-requests-remaining"), "2");
  EXPECT_EQ(Header(first, "anthropic-ratelimit-output-tokens-limit"), "100000");
  EXPECT_EQ(Header(first, "anthropic-ratelimit-output-tokens-remaining"), "99990");
  EXPECT_EQ(Header(first, "anthropic-ratelimit-input-tokens-limit"), "") << "no input limit";
  EXPECT_EQ(Header(first, "anthropic-ratelimit-requests-reset").size(), 20u)
      << "RFC 3339 to the second: " << Header(first, "anthropic-ratelimit-requests-reset");

  auto second = Send(g->http_port, key, "/v1/chat/completions",
                     json({{"model", "sim-small"},
                           {"max_tokens", 10},
                           {"messages", {{{"role", "user"}, {"content", "two"}}}}})
                         .dump());
  ASSERT_EQ(second.status, 200) << second.body;
  EXPECT_EQ(Header(second, "x-ratelimit-limit-requests"), "3");
  EXPECT_EQ(Header(second, "x-ratelimit-remaining-requests"), "1");
  EXPECT_EQ(Header(second, "x-ratelimit-limit-tokens"), "100000");
  EXPECT_EQ(Header(second, "x-ratelimit-reset-requests"), "40s") << "two of three used";

  ASSERT_EQ(Message(g->http_port, key, MessagesBody("three", false, 10)).status, 200);
  auto refused = Message(g->http_port, key, MessagesBody("four", false, 10));
  ExpectError(refused, 429, "rate_limit_error");
  EXPECT_EQ(Header(refused, "retry-after"), "20") << "one request every 20 s";
  EXPECT_NE(refused.body.find("requests per minute (3)"), std::string::npos) << refused.body;
  EXPECT_EQ(Header(refused, "anthropic-ratelimit-requests-remaining"), "0");

  auto openai =
      Send(g->http_port, key, "/v1/chat/completions",
           json({{"model", "sim-small"}, {"messages", {{{"role", "user"}, {"content", "five"}}}}})
               .dump());
  EXPECT_EQ(openai.status, 429);
  json e = json::parse(openai.body, nullptr, false);
  EXPECT_EQ(e["error"]["type"], "requests") << openai.body;
  EXPECT_EQ(e["error"]["code"], "rate_limit_exceeded");

  // max_tokens above the output limit can never fit: 400, not 429.
  auto never = Message(g->http_port, key, MessagesBody("huge", false, 200000));
  ExpectError(never, 400, "invalid_request_error");
  EXPECT_NE(never.body.find("max_tokens"), std::string::npos);
}

// 50 clients at once over two gateway replicas sharing one Redis (and,
// second, a 3-master Redis Cluster): exactly the limit is admitted.
void TwentyOfFifty(const std::string& org, std::vector<std::string> flags) {
  const std::string key = KeyOfNewOrg(org);
  SetLimits(org, {.rpm = 20});
  auto a = g_cluster->StartGateway(org + "-a", flags);
  ASSERT_TRUE(a.ok()) << a.status();
  auto b = g_cluster->StartGateway(org + "-b", flags);
  ASSERT_TRUE(b.ok()) << b.status();
  std::atomic<int> admitted{0}, refused{0}, other{0};
  std::atomic<bool> go{false};
  std::vector<std::thread> clients;
  for (int i = 0; i < 50; ++i) {
    clients.emplace_back([&, i] {
      while (!go) std::this_thread::yield();
      auto r = Message(i % 2 ? a->http_port : b->http_port, key, MessagesBody("race", false, 1));
      (r.status == 200 ? admitted : r.status == 429 ? refused : other)++;
    });
  }
  const auto start = std::chrono::steady_clock::now();
  go = true;
  for (auto& t : clients) t.join();
  const auto took = std::chrono::steady_clock::now() - start;
  ASSERT_LT(took, 3s) << "the window refills one request every 3 s";
  EXPECT_EQ(admitted.load(), 20);
  EXPECT_EQ(refused.load(), 30);
  EXPECT_EQ(other.load(), 0);
}

TEST(RateLimitTest, TwentyOfFiftyOverTwoReplicasOnOneRedis) { TwentyOfFifty("exact-single", {}); }

TEST(RateLimitTest, TwentyOfFiftyOverTwoReplicasOnARedisCluster) {
  const auto& nodes = g_cluster->infra().redis_cluster_ports();
  ASSERT_EQ(nodes.size(), 3u);
  TwentyOfFifty("exact-cluster", {"--redis_cluster", "--redis_port=" + std::to_string(nodes[1])});
}

// A gateway killed with kill -9 while holding 10 concurrency slots: they
// come back within its lease TTL (3 s here), through another replica.
TEST(RateLimitTest, AKilledGatewaysSlotsComeBackWithinTheLeaseTtl) {
  // Two tokens a second: every reply (12 tokens at least) holds its slot
  // for 6 s or more.
  auto worker = g_cluster->StartWorker("worker-hold", "sim-hold", {"--tokens_per_second=2"});
  ASSERT_TRUE(worker.ok()) << worker.status();
  const std::string key = KeyOfNewOrg("kill9");
  SetLimits("kill9", {.concurrency = 10});
  auto doomed = g_cluster->StartGateway("gateway-doomed", {"--lease_ttl_seconds=3"});
  ASSERT_TRUE(doomed.ok()) << doomed.status();
  auto survivor = g_cluster->StartGateway("gateway-survivor", {"--lease_ttl_seconds=3"});
  ASSERT_TRUE(survivor.ok()) << survivor.status();

  const std::string slow = MessagesBody("hold the slot", true, 3000, "sim-hold");
  std::chrono::steady_clock::time_point killed_at;
  {
    std::vector<std::unique_ptr<HeldStream>> held;
    for (int i = 0; i < 10; ++i) {
      held.push_back(std::make_unique<HeldStream>(doomed->http_port, key, slow));
      ASSERT_TRUE(held.back()->Wait()) << "stream " << i << " admitted";
    }
    auto full = Message(survivor->http_port, key, MessagesBody("eleventh", false, 1));
    ExpectError(full, 429, "rate_limit_error");
    EXPECT_NE(full.body.find("concurrent requests (10)"), std::string::npos) << full.body;

    doomed->process.Kill();
    const auto killed = std::chrono::steady_clock::now();
    killed_at = killed;
    int status = 0;
    while (status != 200 && std::chrono::steady_clock::now() - killed < 10s) {
      status = Message(survivor->http_port, key, MessagesBody("again", false, 1)).status;
      if (status != 200) std::this_thread::sleep_for(100ms);
    }
    const auto back = std::chrono::steady_clock::now() - killed;
    EXPECT_EQ(status, 200);
    std::printf("[ figure   ] slots back %lld ms after kill -9 (lease 3 s)\n",
                static_cast<long long>(
                    std::chrono::duration_cast<std::chrono::milliseconds>(back).count()));
    EXPECT_LT(back, 3s + 1s) << "within the 3 s lease (renewals come every second)";
  }  // the held streams end: their gateway is gone
  // All ten are back once the last lease the dead gateway renewed has run
  // out (they were taken a stream's first token apart, so they expire
  // apart): ten held at once through the survivor, the 11th refused.
  std::this_thread::sleep_until(killed_at + 3s + 200ms);
  std::vector<std::unique_ptr<HeldStream>> again;
  for (int i = 0; i < 10; ++i) {
    again.push_back(std::make_unique<HeldStream>(survivor->http_port, key, slow));
    ASSERT_TRUE(again.back()->Wait()) << "stream " << i;
  }
  EXPECT_EQ(Message(survivor->http_port, key, MessagesBody("eleventh", false, 1)).status, 429);
  survivor->process.Stop(1000);  // ends the held streams
}

// max_tokens is reserved at admission and the unused part returned.
TEST(RateLimitTest, UnusedOutputTokensComeBack) {
  const std::string key = KeyOfNewOrg("refund");
  SetLimits("refund", {.output_tpm = 2000});
  auto g = g_cluster->StartGateway("gateway-refund");
  ASSERT_TRUE(g.ok()) << g.status();
  // A reply cut short by a stop sequence: a few tokens of 1,000.
  auto probe = Message(g->http_port, key, MessagesBody("refund me", false, 40));
  ASSERT_EQ(probe.status, 200) << probe.body;
  const std::string text = json::parse(probe.body)["content"][0]["text"];
  json body = json::parse(MessagesBody("refund me", false, 1000));
  body["stop_sequences"] = {text.substr(text.find(' ', text.find(' ') + 1), 4)};
  auto first = Message(g->http_port, key, body.dump());
  ASSERT_EQ(first.status, 200) << first.body;
  const int used = json::parse(first.body)["usage"]["output_tokens"];
  ASSERT_LT(used, 20);
  const int at_admission = std::stoi(Header(first, "anthropic-ratelimit-output-tokens-remaining"));
  EXPECT_LE(at_admission, 2000 - 1000 + 40) << "1,000 reserved";
  auto second = Message(g->http_port, key, MessagesBody("after", false, 10));
  ASSERT_EQ(second.status, 200);
  const int now = std::stoi(Header(second, "anthropic-ratelimit-output-tokens-remaining"));
  // Without the refund this would be about 2000 - 40 - 1000 - 10.
  EXPECT_GE(now, 2000 - 40 - used - 10 - 5) << "the unused " << 1000 - used << " came back";
}

// The official SDKs see RateLimitError with retry-after and, left to
// retry, succeed by themselves (tests/sdk/ratelimit_check.mjs).
TEST(RateLimitSdkTest, TheOfficialSdksRetryByThemselves) {
  const std::string dir = Infra::SourceDir() + "/tests/sdk";
  ASSERT_TRUE(std::filesystem::exists(dir + "/node_modules/openai"))
      << "the SDKs are not installed: run tools/setup";
  const std::string key = KeyOfNewOrg("sdk-limits");
  SetLimits("sdk-limits", {.rpm = 60, .concurrency = 1});
  auto g = g_cluster->StartGateway("gateway-sdk");
  ASSERT_TRUE(g.ok()) << g.status();
  std::string out;
  const int rc =
      RunCommand({"env", "SWITCHBOARD_URL=http://127.0.0.1:" + std::to_string(g->http_port),
                  "SWITCHBOARD_KEY=" + key, "node", dir + "/ratelimit_check.mjs"},
                 &out);
  EXPECT_EQ(rc, 0) << out << Tail(g_cluster->infra().dir() + "/gateway-sdk.log", 20);
  EXPECT_NE(out.find("ratelimit sdk checks passed"), std::string::npos) << out;
}

// ---- Idempotency-Key ----

http::Headers WithKey(const std::string& k) { return {{"idempotency-key", k}}; }

// What a response is, to compare a replay with its original: the body,
// its SSE data (pings left out) for streams.
std::string Essence(const http::Response& r) {
  if (Header(r, "content-type").rfind("text/event-stream", 0) != 0) return r.body;
  std::string out;
  for (const auto& e : ParseSse(r.body)) {
    if (e.event != "ping") out += e.event + "|" + e.raw_data + "\n";
  }
  return out;
}

TEST(IdempotencyTest, ARetryGetsTheSameResponseAndIsMeteredOnce) {
  const std::string key = KeyOfNewOrg("idem-replay");
  const int port = g_cluster->http_port();
  for (bool stream : {false, true}) {
    const std::string k = std::string("replay-") + (stream ? "stream" : "whole");
    const std::string body = MessagesBody("say it once", stream, 30);
    auto first = Message(port, key, body, WithKey(k));
    ASSERT_EQ(first.status, 200) << first.body;
    EXPECT_EQ(Header(first, "idempotent-replayed"), "");
    auto again = Message(port, key, body, WithKey(k));
    ASSERT_EQ(again.status, 200) << again.body;
    EXPECT_EQ(Header(again, "idempotent-replayed"), "true");
    EXPECT_EQ(Essence(again), Essence(first)) << "the same id, content and usage";
    EXPECT_NE(Header(again, "request-id"), Header(first, "request-id"));
  }
  // OpenAI's route too.
  const std::string oa = json({{"model", "sim-small"},
                               {"max_tokens", 20},
                               {"messages", {{{"role", "user"}, {"content", "once"}}}}})
                             .dump();
  auto o1 = Send(port, key, "/v1/chat/completions", oa, WithKey("replay-openai"));
  auto o2 = Send(port, key, "/v1/chat/completions", oa, WithKey("replay-openai"));
  ASSERT_EQ(o1.status, 200) << o1.body;
  EXPECT_EQ(o2.body, o1.body);
  EXPECT_EQ(Header(o2, "idempotent-replayed"), "true");
  // Three generations, three ledger rows.
  auto usage = UsageOfOrg("idem-replay", 3);
  std::this_thread::sleep_for(500ms);
  usage = UsageOfOrg("idem-replay", 3);
  EXPECT_EQ(usage.records_size(), 3);
}

TEST(IdempotencyTest, ARetryWhileTheFirstRunsJoinsIt) {
  auto worker =
      g_cluster->StartWorker("worker-idem-slow", "sim-idem-slow", {"--tokens_per_second=40"});
  ASSERT_TRUE(worker.ok()) << worker.status();
  const std::string key = KeyOfNewOrg("idem-join");
  const int port = g_cluster->http_port();
  auto finished = [&] {
    return MetricValue(worker->metrics_port,
                       "sb_worker_requests_finished_total{stop_reason=\"max_tokens\"}") +
           MetricValue(worker->metrics_port,
                       "sb_worker_requests_finished_total{stop_reason=\"end_turn\"}");
  };
  const double before = finished();
  for (bool stream : {true, false}) {
    const std::string k = std::string("join-") + (stream ? "stream" : "whole");
    const std::string body = MessagesBody("a slow reply", stream, 40, "sim-idem-slow");  // ~1 s
    http::Response first, second;
    std::thread original([&] { first = Message(port, key, body, WithKey(k)); });
    std::this_thread::sleep_for(300ms);  // it is running
    second = Message(port, key, body, WithKey(k));
    original.join();
    ASSERT_EQ(first.status, 200) << first.body;
    ASSERT_EQ(second.status, 200) << second.body;
    EXPECT_EQ(Header(second, "idempotent-replayed"), "true");
    EXPECT_EQ(Essence(second), Essence(first)) << (stream ? "the whole stream from the start" : "");
  }
  double after = before;
  for (int i = 0; i < 40 && after < before + 2; ++i) {
    std::this_thread::sleep_for(50ms);
    after = finished();
  }
  EXPECT_EQ(after, before + 2) << "one generation per key";
}

TEST(IdempotencyTest, TheSameKeyWithAnotherBodyIs422) {
  const std::string key = KeyOfNewOrg("idem-422");
  const int port = g_cluster->http_port();
  ASSERT_EQ(Message(port, key, MessagesBody("first body", false, 5), WithKey("k")).status, 200);
  auto other = Message(port, key, MessagesBody("second body", false, 5), WithKey("k"));
  ExpectError(other, 422, "invalid_request_error");
  EXPECT_NE(other.body.find("different request body"), std::string::npos) << other.body;
  // Keys are the org's own: another org's same key is another record.
  auto globex = Message(port, g_cluster->other_api_key(), MessagesBody("second body", false, 5),
                        WithKey("k"));
  EXPECT_EQ(globex.status, 200) << globex.body;
  EXPECT_EQ(Header(globex, "idempotent-replayed"), "");
  // A key longer than 255 characters is refused.
  ExpectError(Message(port, key, MessagesBody("x", false, 5), WithKey(std::string(256, 'k'))), 400,
              "invalid_request_error");
}

TEST(IdempotencyTest, ARefusedRequestDoesNotConsumeItsKey) {
  const std::string key = KeyOfNewOrg("idem-refused");
  SetLimits("idem-refused", {.concurrency = 1});
  auto g = g_cluster->StartGateway("gateway-idem-refused");
  ASSERT_TRUE(g.ok()) << g.status();
  const std::string body = MessagesBody("refused, then run", false, 5);
  {
    HeldStream holder(g->http_port, key, MessagesBody("hold", true, 30));
    ASSERT_TRUE(holder.Wait());
    auto refused = Message(g->http_port, key, body, WithKey("kept"));
    ExpectError(refused, 429, "rate_limit_error");
  }  // the holder ends
  auto ran = Message(g->http_port, key, body, WithKey("kept"));
  ASSERT_EQ(ran.status, 200) << ran.body;
  EXPECT_EQ(Header(ran, "idempotent-replayed"), "") << "it ran: the 429 did not consume the key";
  auto replay = Message(g->http_port, key, body, WithKey("kept"));
  EXPECT_EQ(Header(replay, "idempotent-replayed"), "true");
  EXPECT_EQ(replay.body, ran.body);
}

TEST(IdempotencyTest, AClientThatLeavesLeavesItsReplyForTheRetry) {
  const std::string key = KeyOfNewOrg("idem-leaver");
  const std::string body = MessagesBody("I will be back", true, 60);
  // The client reads the first bytes and leaves.
  auto r = http::FetchStreaming({.port = g_cluster->http_port(),
                                 .method = "POST",
                                 .target = "/v1/messages",
                                 .headers = {{"x-api-key", key},
                                             {"content-type", "application/json"},
                                             {"idempotency-key", "leaver"}},
                                 .body = body},
                                [](std::string_view) { return false; });
  auto retry = Message(g_cluster->http_port(), key, body, WithKey("leaver"));
  ASSERT_EQ(retry.status, 200) << retry.body;
  EXPECT_EQ(Header(retry, "idempotent-replayed"), "true");
  auto events = ParseSse(retry.body);
  ASSERT_FALSE(events.empty());
  EXPECT_EQ(events.back().event, "message_stop") << "the whole reply, not a cancelled one";
  auto usage = UsageOfOrg("idem-leaver", 1);
  ASSERT_EQ(usage.records_size(), 1);
  EXPECT_NE(usage.records(0).stop_reason(), "cancelled");
}

TEST(IdempotencyTest, ChatSendsAreIdempotentToo) {
  const std::string user = "idem-user";
  auto conv = http::Fetch({.port = g_cluster->http_port(),
                           .method = "POST",
                           .target = "/v1/conversations",
                           .headers = {{"x-api-key", g_cluster->api_key()},
                                       {"x-switchboard-user", user},
                                       {"content-type", "application/json"}},
                           .body = R"({"model": "sim-small"})"});
  ASSERT_TRUE(conv.ok() && conv->status == 201) << (conv.ok() ? conv->body : "");
  const std::string id = json::parse(conv->body)["id"];
  auto send = [&] {
    return http::Fetch({.port = g_cluster->http_port(),
                        .method = "POST",
                        .target = "/v1/conversations/" + id + "/messages",
                        .headers = {{"x-api-key", g_cluster->api_key()},
                                    {"x-switchboard-user", user},
                                    {"idempotency-key", "chat-send"},
                                    {"content-type", "application/json"}},
                        .body = R"({"content": "only once, please"})"});
  };
  auto first = send(), second = send();
  ASSERT_TRUE(first.ok() && second.ok());
  ASSERT_EQ(first->status, 202) << first->body;
  EXPECT_EQ(second->status, 202);
  EXPECT_EQ(second->body, first->body) << "the same assistant_message_id";
  EXPECT_EQ(second->headers["idempotent-replayed"], "true");
}

TEST(IdempotencyTest, WithoutRedisAKeyedRequestIs503AndOthersRun) {
  // A gateway whose Redis is nowhere: nothing listens on this port.
  auto g =
      g_cluster->StartGateway("gateway-no-redis", {"--redis_port=" + std::to_string(FreePort())});
  ASSERT_TRUE(g.ok()) << g.status();
  auto keyed = Message(g->http_port, g_cluster->api_key(), MessagesBody("keyed", false, 5),
                       WithKey("no-redis"));
  ExpectError(keyed, 503, "api_error");
  EXPECT_EQ(Header(keyed, "retry-after"), "1");
  EXPECT_EQ(Message(g->http_port, g_cluster->api_key(), MessagesBody("plain", false, 5)).status,
            200);
}

// 1,000 keys, each sent 10 times at once (half streamed, half not): exactly
// 1,000 generations and ledger rows, and every duplicate is its original.
TEST(IdempotencyTest, AThousandKeysSentTenTimesAtOnceRunAThousandTimes) {
  auto worker = g_cluster->StartWorker("worker-idem-1000", "sim-idem",
                                       {"--tokens_per_second=2000", "--max_num_seqs=256"});
  ASSERT_TRUE(worker.ok()) << worker.status();
  const std::string key = KeyOfNewOrg("idem-1000");
  const int port = g_cluster->http_port();
  constexpr int kKeys = 1000, kSends = 10, kParallelKeys = 10;
  std::atomic<int> next{0}, not_ok{0}, differing{0}, replayed{0};
  std::vector<std::thread> runners;
  for (int r = 0; r < kParallelKeys; ++r) {
    runners.emplace_back([&] {
      for (int k; (k = next++) < kKeys;) {
        const std::string body =
            MessagesBody("key " + std::to_string(k), k % 2 == 0, 8, "sim-idem");
        std::vector<http::Response> got(kSends);
        std::vector<std::thread> sends;
        for (int s = 0; s < kSends; ++s) {
          sends.emplace_back([&, s] {
            auto r = http::Fetch({.port = port,
                                  .method = "POST",
                                  .target = "/v1/messages",
                                  .headers = {{"x-api-key", key},
                                              {"content-type", "application/json"},
                                              {"idempotency-key", "bulk-" + std::to_string(k)}},
                                  .body = body});
            if (r.ok()) got[s] = std::move(*r);
          });
        }
        for (auto& t : sends) t.join();
        int originals = 0;
        for (const auto& r : got) {
          if (r.status != 200) ++not_ok;
          if (Header(r, "idempotent-replayed") == "true") {
            ++replayed;
          } else {
            ++originals;
          }
          if (Essence(r) != Essence(got[0])) ++differing;
        }
        if (originals != 1) ++not_ok;
      }
    });
  }
  for (auto& t : runners) t.join();
  EXPECT_EQ(not_ok.load(), 0);
  EXPECT_EQ(differing.load(), 0);
  EXPECT_EQ(replayed.load(), kKeys * (kSends - 1));
  double generations = 0;
  for (int i = 0; i < 100; ++i) {
    generations = MetricValue(worker->metrics_port,
                              "sb_worker_requests_finished_total{stop_reason=\"max_tokens\"}") +
                  MetricValue(worker->metrics_port,
                              "sb_worker_requests_finished_total{stop_reason=\"end_turn\"}");
    if (generations >= kKeys) break;
    std::this_thread::sleep_for(100ms);
  }
  EXPECT_EQ(generations, kKeys) << "the worker's count";
  auto usage = UsageOfOrg("idem-1000", kKeys);
  std::this_thread::sleep_for(1s);
  usage = UsageOfOrg("idem-1000", kKeys);
  EXPECT_EQ(usage.records_size(), kKeys) << "ledger rows";
}

}  // namespace
}  // namespace sb::testing
