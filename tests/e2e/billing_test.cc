// Billing end to end (issue 13): prices set with sbadmin are what the
// cluster's requests cost in the ledger.
#include <atomic>
#include <chrono>
#include <cstdio>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "e2e/e2e_helpers.h"
#include "gtest/gtest.h"
#include "http/http_client.h"
#include "nlohmann/json.hpp"
#include "sbadmin/admin.h"
#include "storage/kafka.h"
#include "storage/pg.h"
#include "support/process.h"

namespace sb::testing {
namespace {

using json = nlohmann::json;
using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

// Runs sbadmin against the cluster's database; its exit code and output.
int Sbadmin(const std::vector<std::string>& args, std::string* out) {
  std::vector<std::string> argv = {Infra::BuildDir() + "/tools/sbadmin",
                                   "--pg=" + g_cluster->infra().pg_uri()};
  argv.insert(argv.end(), args.begin(), args.end());
  return RunCommand(argv, out);
}

// An org's spend this month as gateways read it (spend_monthly), in
// micro-dollars.
int64_t SpendOf(pqxx::transaction_base& tx, const std::string& org) {
  return tx
      .exec_params1(
          "SELECT coalesce(sum(cost_micros), 0)::bigint FROM spend_monthly WHERE org_id = $1 "
          " AND key_id = '' AND month = date_trunc('month', now() AT TIME ZONE 'UTC')::date",
          org)[0]
      .as<int64_t>();
}

TEST(PricingE2eTest, ARequestCostsWhatItsModelsPriceSaysInTheLedger) {
  std::string out;
  ASSERT_EQ(Sbadmin({"price", "set", "sim-small", "--input=3.00", "--output=15.00",
                     "--cache_read=0.30", "--cache_write=3.75"},
                    &out),
            0)
      << out;
  EXPECT_NE(out.find("input $3.000000, output $15.000000"), std::string::npos) << out;

  const std::string org = "priced-e2e";
  const std::string key = KeyOfNewOrg(org);
  auto r = Post("/v1/messages", MessagesBody("what does this cost", false, 40), key);
  ASSERT_EQ(r.status, 200) << r.body;
  const json reply = json::parse(r.body);
  const auto usage = UsageFor(org, r.headers["request-id"]);
  ASSERT_EQ(usage.records_size(), 1);
  const auto& rec = usage.records(0);
  // Too short a prompt for a cached block: every input token at $3.
  EXPECT_EQ(reply["usage"]["cache_read_input_tokens"], 0);
  EXPECT_EQ(rec.input_tokens(), reply["usage"]["input_tokens"].get<int>());
  EXPECT_EQ(rec.output_tokens(), reply["usage"]["output_tokens"].get<int>());
  // In integer micro-dollars: $3 and $15 per million tokens.
  const int64_t expected =
      (rec.input_tokens() * 3'000'000LL + rec.output_tokens() * 15'000'000LL + 500'000) / 1'000'000;
  EXPECT_GT(expected, 0);
  EXPECT_EQ(rec.cost_micros(), expected);
  EXPECT_EQ(usage.total_cost_micros(), expected);

  ASSERT_EQ(Sbadmin({"price", "list", "sim-small"}, &out), 0) << out;
  EXPECT_NE(out.find("15.000000"), std::string::npos) << out;
}

// A long system prompt marked with cache_control is written to the
// engine's prompt cache by the first request and read by the next ones, in
// both dialects' usage, and each kind of input token is billed at its price.
TEST(PromptCacheE2eTest, CacheReadsAndWritesAreReportedAndBilledAtTheirPrices) {
  std::string out;
  ASSERT_EQ(Sbadmin({"price", "set", "sim-small", "--input=3.00", "--output=15.00",
                     "--cache_read=0.30", "--cache_write=3.75"},
                    &out),
            0)
      << out;
  const std::string org = "cache-e2e";
  const std::string key = KeyOfNewOrg(org);
  std::string system;  // 300 words of this test's own
  for (int i = 0; i < 300; ++i) system += "cachedword" + std::to_string(i) + " ";
  auto body = [&](const std::string& question, bool stream) {
    return json({{"model", "sim-small"},
                 {"max_tokens", 8},
                 {"stream", stream},
                 {"system", json::array({{{"type", "text"},
                                          {"text", system},
                                          {"cache_control", {{"type", "ephemeral"}}}}})},
                 {"messages", json::array({{{"role", "user"}, {"content", question}}})}})
        .dump();
  };
  // Ledger input counts every prompt token; the API's only the uncached.
  auto expect_billed = [&](const std::string& request_id, const json& usage) {
    const auto u = UsageFor(org, request_id);
    ASSERT_EQ(u.records_size(), 1) << request_id;
    const auto& rec = u.records(0);
    const int64_t uncached = usage["input_tokens"].get<int64_t>();
    const int64_t read = usage["cache_read_input_tokens"].get<int64_t>();
    const int64_t written = usage["cache_creation_input_tokens"].get<int64_t>();
    const int64_t output = usage["output_tokens"].get<int64_t>();
    EXPECT_EQ(rec.input_tokens(), uncached + read + written);
    EXPECT_EQ(rec.cache_read_tokens(), read);
    EXPECT_EQ(rec.cache_write_tokens(), written);
    EXPECT_EQ(rec.output_tokens(), output);
    // $3, $0.30, $3.75 and $15 per million tokens, in micro-dollars.
    const int64_t pico =
        uncached * 3'000'000 + read * 300'000 + written * 3'750'000 + output * 15'000'000;
    EXPECT_EQ(rec.cost_micros(), (pico + 500'000) / 1'000'000) << request_id;
  };

  auto first = Post("/v1/messages", body("first question", false), key);
  ASSERT_EQ(first.status, 200) << first.body;
  const json u1 = json::parse(first.body)["usage"];
  EXPECT_EQ(u1["cache_read_input_tokens"], 0) << u1;
  EXPECT_GE(u1["cache_creation_input_tokens"].get<int>(), 280) << "the system's full blocks";
  EXPECT_EQ(u1["cache_creation"]["ephemeral_5m_input_tokens"], u1["cache_creation_input_tokens"]);
  EXPECT_LT(u1["input_tokens"].get<int>(), 20) << u1;
  expect_billed(first.headers["request-id"], u1);

  // Streamed, the same system prompt: read, not written; message_start
  // counts every prompt token, message_delta carries the split.
  auto second = Post("/v1/messages", body("second question", true), key);
  ASSERT_EQ(second.status, 200) << second.body;
  json start, delta;
  for (const auto& e : ParseSse(second.body)) {
    if (e.event == "message_start") start = e.data["message"]["usage"];
    if (e.event == "message_delta") delta = e.data["usage"];
  }
  ASSERT_FALSE(delta.is_null()) << second.body;
  EXPECT_GE(delta["cache_read_input_tokens"].get<int>(), 280) << delta;
  EXPECT_EQ(delta["cache_creation_input_tokens"], 0) << delta;
  EXPECT_EQ(start["input_tokens"].get<int>(),
            delta["input_tokens"].get<int>() + delta["cache_read_input_tokens"].get<int>());
  expect_billed(second.headers["request-id"], delta);

  // The OpenAI dialect: every prompt token in prompt_tokens, the cached ones
  // in prompt_tokens_details.cached_tokens.
  auto openai = Post("/v1/chat/completions",
                     json({{"model", "sim-small"},
                           {"max_tokens", 8},
                           {"messages", json::array({{{"role", "system"}, {"content", system}},
                                                     {{"role", "user"}, {"content", "third"}}})}})
                         .dump(),
                     key);
  ASSERT_EQ(openai.status, 200) << openai.body;
  const json u3 = json::parse(openai.body)["usage"];
  EXPECT_GE(u3["prompt_tokens_details"]["cached_tokens"].get<int>(), 280) << u3;
  const auto rec3 = UsageFor(org, openai.headers["request-id"]);
  ASSERT_EQ(rec3.records_size(), 1);
  EXPECT_EQ(rec3.records(0).input_tokens(), u3["prompt_tokens"].get<int>());
  EXPECT_EQ(rec3.records(0).cache_read_tokens(),
            u3["prompt_tokens_details"]["cached_tokens"].get<int>());

  const auto all = UsageOfOrg(org, 3);
  const int64_t read =
      delta["cache_read_input_tokens"].get<int64_t>() + rec3.records(0).cache_read_tokens();
  const int64_t written = u1["cache_creation_input_tokens"].get<int64_t>();
  EXPECT_EQ(all.total_cache_read_tokens(), read);
  EXPECT_EQ(all.total_cache_write_tokens(), written);
  std::printf("[ figure   ] prompt cache: %lld tokens written, %lld read over 3 requests\n",
              static_cast<long long>(written), static_cast<long long>(read));

  // The Admin API's usage report splits the org's input the same way.
  admin::Admin admin(g_cluster->infra().pg_uri());
  const std::string admin_key = *admin.CreateKey(org, "", /*admin=*/true);
  const std::string today =
      absl::FormatTime("%Y-%m-%dT00:00:00Z", absl::Now(), absl::UTCTimeZone());
  auto report = http::Fetch(
      {.port = g_cluster->http_port(),
       .target = "/v1/organizations/usage_report/messages?bucket_width=1d&starting_at=" + today,
       .headers = {{"anthropic-version", "2023-06-01"}, {"x-api-key", admin_key}}});
  ASSERT_TRUE(report.ok()) << report.status();
  ASSERT_EQ(report->status, 200) << report->body;
  const json results = json::parse(report->body)["data"][0]["results"];
  ASSERT_EQ(results.size(), 1u) << report->body;
  EXPECT_EQ(results[0]["cache_read_input_tokens"], read);
  EXPECT_EQ(results[0]["cache_creation"]["ephemeral_5m_input_tokens"], written);
  EXPECT_EQ(results[0]["uncached_input_tokens"].get<int64_t>() + read + written,
            all.total_input_tokens());
}

TEST(PricingE2eTest, SbadminRefusesPricesItCannotKeepExactly) {
  std::string out;
  for (const std::vector<std::string>& bad :
       {std::vector<std::string>{"price", "set", "sim-x", "--input=3.0000001", "--output=1"},
        {"price", "set", "sim-x", "--input=-1", "--output=1"},
        {"price", "set", "sim-x", "--input=1", "--output=1e3"},
        {"price", "set", "sim-x", "--input=1", "--output=1", "--from=2020-01-01"},
        {"price", "set", "sim-x", "--input=1", "--output=1", "--from=tomorrow"}}) {
    EXPECT_EQ(Sbadmin(bad, &out), 1) << bad[3] << " " << bad[4];
    EXPECT_NE(out.find("INVALID_ARGUMENT"), std::string::npos) << out;
  }
  EXPECT_EQ(Sbadmin({"price", "set"}, &out), 2) << out;
  ASSERT_EQ(Sbadmin({"price", "list", "sim-x"}, &out), 0) << out;
  EXPECT_EQ(out.find("sim-x"), std::string::npos) << "nothing stored: " << out;
}

// An org's spend crossing its monthly budget stops its new requests (402,
// both dialects) within 2 s of the ledger recording it, and billing
// publishes the 80 % and 100 % alerts on billing.alerts.
TEST(BudgetE2eTest, SpendCrossingTheBudgetStopsAdmissionsWithinTwoSeconds) {
  std::string out;
  // A tenth of a cent a token, so that a handful of requests spend $0.50.
  ASSERT_EQ(Sbadmin({"price", "set", "sim-small", "--input=1000", "--output=1000"}, &out), 0)
      << out;
  const std::string org = "budget-e2e";
  const std::string key = KeyOfNewOrg(org);
  ASSERT_EQ(Sbadmin({"budget", "set", org, "--monthly=0.50"}, &out), 0) << out;
  auto alerts =
      KafkaConsumer::Create(g_cluster->infra().kafka(), "budget-e2e-test", {"billing.alerts"});
  ASSERT_TRUE(alerts.ok()) << alerts.status();

  // Spend until the ledger holds the budget.
  std::optional<Clock::time_point> crossed;
  int sent = 0;
  for (; sent < 100 && !crossed; ++sent) {
    auto r = Post("/v1/messages", MessagesBody("spend it", false, 40), key);
    ASSERT_EQ(r.status, 200) << "before the budget is spent: " << r.body;
    // Every request so far, settled in the ledger.
    const auto usage = UsageOfOrg(org, sent + 1);
    if (usage.total_cost_micros() >= 500'000) crossed = Clock::now();
  }
  ASSERT_TRUE(crossed.has_value()) << "spent less than $0.50 in " << sent << " requests";

  // New requests are refused within 2 s.
  http::Response refused;
  while (Clock::now() - *crossed < 5s) {
    refused = Post("/v1/messages", MessagesBody("one more", false, 1), key);
    if (refused.status == 402) break;
    std::this_thread::sleep_for(20ms);
  }
  const auto took = Clock::now() - *crossed;
  ASSERT_EQ(refused.status, 402) << refused.body;
  std::printf(
      "[ figure   ] new requests refused %lld ms after the ledger held the budget's spend\n",
      static_cast<long long>(std::chrono::duration_cast<std::chrono::milliseconds>(took).count()));
  EXPECT_LT(took, 2s);
  const json body = json::parse(refused.body);
  EXPECT_EQ(body["type"], "error");
  EXPECT_EQ(body["error"]["type"], "billing_error");
  EXPECT_NE(body["error"]["message"].get<std::string>().find("$0.50"), std::string::npos)
      << refused.body;
  auto openai = Post("/v1/chat/completions",
                     R"({"model":"sim-small","messages":[{"role":"user","content":"hi"}]})", key);
  EXPECT_EQ(openai.status, 402) << openai.body;
  EXPECT_EQ(json::parse(openai.body)["error"]["type"], "insufficient_quota") << openai.body;
  // Another org is unaffected.
  EXPECT_EQ(
      Post("/v1/messages", MessagesBody("not mine", false, 1), KeyOfNewOrg("budget-other")).status,
      200);

  // Both thresholds were published, once each.
  std::vector<int> percents;
  for (auto until = Clock::now() + 20s; Clock::now() < until && percents.size() < 2;) {
    auto m = (*alerts)->Poll(200ms);
    if (!m.ok() || !m->has_value()) continue;
    const json a = json::parse((*m)->value);
    if (a["org_id"] != org) continue;
    EXPECT_EQ(a["type"], "budget_alert");
    EXPECT_EQ(a["budget_usd"], "0.500000");
    percents.push_back(a["percent"].get<int>());
  }
  EXPECT_EQ(percents, (std::vector<int>{80, 100}));
  ASSERT_EQ(Sbadmin({"budget", "show", org}, &out), 0) << out;
  EXPECT_NE(out.find("0.500000"), std::string::npos) << out;

  // Raising the budget lets the org in again.
  ASSERT_EQ(Sbadmin({"budget", "set", org, "--monthly=1000"}, &out), 0) << out;
  int status = 0;
  for (auto until = Clock::now() + 5s; Clock::now() < until && status != 200;) {
    status = Post("/v1/messages", MessagesBody("again", false, 1), key).status;
    if (status != 200) std::this_thread::sleep_for(50ms);
  }
  EXPECT_EQ(status, 200);
}

// Eight clients of one org send at once until they are refused: the budget
// holds under concurrency. Every request sent more than 2 s after the
// ledger held the budget's spend is refused (402), the overspend comes only
// from requests the ledger had not settled when it last showed room and
// that were sent before that moment + 2 s (running, or admitted before the
// gateway's next refresh could know), the ledger charges each answered
// request what its client was told, and once the running ones have settled
// the spend grows no more.
TEST(BudgetE2eTest, ConcurrentRequestsOverspendOnlyWhatWasRunning) {
  std::string out;
  // The price of the test above; cached prompt tokens at the same price, so
  // that a request costs a tenth of a cent a token however its prompt is
  // split.
  ASSERT_EQ(Sbadmin({"price", "set", "sim-small", "--input=1000", "--output=1000",
                     "--cache_read=1000", "--cache_write=1000"},
                    &out),
            0)
      << out;
  constexpr int64_t kMicrosPerToken = 1'000;
  constexpr int64_t kBudgetMicros = 2'000'000;  // about 40 requests
  constexpr int kClients = 8;
  const std::string org = "budget-concurrent-e2e";
  const std::string key = KeyOfNewOrg(org);
  ASSERT_EQ(Sbadmin({"budget", "set", org, "--monthly=2.00"}, &out), 0) << out;

  struct Sent {
    std::string request_id;
    Clock::time_point sent, ended;
    int status = 0;
    int64_t cost_micros = 0;  // what the client was told it used, at the price
  };
  std::mutex mu;
  std::vector<Sent> sent;
  // The ledger as the gateway reads it, polled: the first moment its spend
  // held the budget, and the requests it had settled when it last showed
  // room.
  std::atomic<bool> done{false};
  std::optional<Clock::time_point> crossed;
  std::set<std::string> settled_with_room;
  std::thread poller([&] {
    pqxx::connection c(g_cluster->infra().pg_uri());
    for (; !done.load(); std::this_thread::sleep_for(25ms)) {
      int64_t spend = 0;
      std::set<std::string> settled;
      {
        pqxx::read_transaction tx(c);  // one snapshot: the spend and its rows
        spend = SpendOf(tx, org);
        for (const auto& r : tx.exec_params(
                 "SELECT request_id FROM usage_ledger WHERE org_id = $1 AND final", org)) {
          settled.insert(r[0].as<std::string>());
        }
      }
      const auto at = Clock::now();
      std::lock_guard<std::mutex> lock(mu);
      if (spend >= kBudgetMicros) {
        crossed = at;
        return;
      }
      settled_with_room = std::move(settled);
    }
  });
  // Each client sends until it is refused (or for 60 s at most).
  const auto give_up = Clock::now() + 60s;
  std::vector<std::thread> clients;
  for (int t = 0; t < kClients; ++t) {
    clients.emplace_back([&] {
      while (Clock::now() < give_up) {
        Sent s;
        s.sent = Clock::now();
        auto r = Post("/v1/messages", MessagesBody("spend it together", false, 40), key);
        s.ended = Clock::now();
        s.status = r.status;
        s.request_id = r.headers["request-id"];
        if (r.status == 200) {
          const json usage = json::parse(r.body)["usage"];
          const int64_t tokens = usage["input_tokens"].get<int64_t>() +
                                 usage.value("cache_read_input_tokens", int64_t{0}) +
                                 usage.value("cache_creation_input_tokens", int64_t{0}) +
                                 usage["output_tokens"].get<int64_t>();
          s.cost_micros = tokens * kMicrosPerToken;
        }
        std::lock_guard<std::mutex> lock(mu);
        sent.push_back(std::move(s));
        if (r.status == 402) return;
      }
    });
  }
  for (auto& c : clients) c.join();
  done = true;
  poller.join();
  ASSERT_TRUE(crossed.has_value()) << "the ledger never held the budget's spend";

  // Every answered request settled in the ledger: its cost, and the spend
  // the gateway reads.
  std::map<std::string, int64_t> ledger;  // request id -> cost
  std::set<std::string> settled_now;
  int64_t spend = 0;
  size_t answered = 0;
  for (const auto& s : sent) answered += s.status == 200;
  for (auto until = Clock::now() + 30s; Clock::now() < until;) {
    pqxx::connection c(g_cluster->infra().pg_uri());
    pqxx::read_transaction tx(c);
    ledger.clear();
    settled_now.clear();
    for (const auto& r : tx.exec_params(
             "SELECT request_id, cost_micros, final FROM usage_ledger WHERE org_id = $1", org)) {
      ledger[r[0].as<std::string>()] = r[1].as<int64_t>();
      if (r[2].as<bool>()) settled_now.insert(r[0].as<std::string>());
    }
    spend = SpendOf(tx, org);
    if (settled_now.size() >= answered) break;
    std::this_thread::sleep_for(200ms);
  }

  const auto known_by = *crossed + 2s;
  int refused = 0, other = 0, late_answered = 0, running_at_crossing = 0, admitted_after = 0;
  int64_t told_micros = 0, unsettled_before_micros = 0, mismatched = 0;
  std::optional<Clock::duration> first_refusal;
  std::set<std::string> ids;
  for (const auto& s : sent) {
    ids.insert(s.request_id);
    if (s.status == 402) {
      ++refused;
      if (!first_refusal || s.sent - *crossed < *first_refusal) first_refusal = s.sent - *crossed;
      continue;
    }
    if (s.status != 200) {
      ++other;
      continue;
    }
    if (s.sent > known_by && ++late_answered <= 5) {
      ADD_FAILURE()
          << s.request_id << " sent "
          << std::chrono::duration_cast<std::chrono::milliseconds>(s.sent - *crossed).count()
          << " ms after the ledger held the budget's spend, and answered";
    }
    if (s.sent <= *crossed && s.ended > *crossed) ++running_at_crossing;
    if (s.sent > *crossed) ++admitted_after;
    told_micros += s.cost_micros;
    auto it = ledger.find(s.request_id);
    if ((it == ledger.end() || !settled_now.contains(s.request_id) ||
         it->second != s.cost_micros) &&
        ++mismatched <= 5) {
      ADD_FAILURE() << s.request_id << ": told $" << s.cost_micros / 1e6 << ", ledger "
                    << (it == ledger.end()
                            ? std::string("none")
                            : "$" + std::to_string(it->second / 1e6) +
                                  (settled_now.contains(s.request_id) ? "" : " (not settled)"));
    }
    if (s.sent <= known_by && !settled_with_room.contains(s.request_id)) {
      unsettled_before_micros += s.cost_micros;
    }
  }
  const int64_t overspend = spend - kBudgetMicros;
  std::printf(
      "[ figure   ] %d clients, %zu requests (%zu answered, %d refused, %d other): the budget "
      "of $%.2f overspent by $%.3f; %d requests running when the ledger held it, %d admitted "
      "after it; first refusal sent %lld ms after it\n",
      kClients, sent.size(), answered, refused, other, kBudgetMicros / 1e6, overspend / 1e6,
      running_at_crossing, admitted_after,
      first_refusal
          ? static_cast<long long>(
                std::chrono::duration_cast<std::chrono::milliseconds>(*first_refusal).count())
          : -1LL);
  // Every client was refused in the end, and none was answered after the
  // gateway had had 2 s to learn the spend.
  EXPECT_EQ(refused, kClients);
  EXPECT_EQ(late_answered, 0);
  // The ledger charged what the clients were told, nothing else, and the
  // spend the gateway reads is its sum.
  EXPECT_EQ(mismatched, 0);
  for (const auto& [id, cost] : ledger) {
    EXPECT_TRUE(ids.contains(id)) << id << " in the ledger, not sent by this test";
  }
  EXPECT_EQ(spend, told_micros);
  // The overspend: only requests the ledger had not settled when it last
  // showed room, sent before the gateway could know.
  EXPECT_GE(overspend, 0);
  EXPECT_LE(overspend, unsettled_before_micros);

  // Refused from now on, and the spend grows no more.
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(Post("/v1/messages", MessagesBody("still spent", false, 40), key).status, 402);
    std::this_thread::sleep_for(500ms);
  }
  std::this_thread::sleep_for(1s);
  {
    pqxx::connection c(g_cluster->infra().pg_uri());
    pqxx::read_transaction tx(c);
    EXPECT_EQ(SpendOf(tx, org), spend);
  }
}

// The Admin API's reports, on rows of known times in the ledger: bucket
// edges, grouping, paging, cost as dollars, the org's own rows only, and an
// admin key required (and refused on inference).
TEST(ReportsE2eTest, AnAdminKeySeesItsOrgsUsageAndCostInBucketsGroupedAndPaged) {
  admin::Admin admin(g_cluster->infra().pg_uri());
  ASSERT_TRUE(admin.CreateOrg("reports", "reports").ok());
  ASSERT_TRUE(admin.CreateOrg("reports-other", "reports-other").ok());
  const std::string admin_key = *admin.CreateKey("reports", "", /*admin=*/true);
  const std::string api_key = *admin.CreateKey("reports", "");
  const std::string other_admin = *admin.CreateKey("reports-other", "", /*admin=*/true);
  {
    pqxx::connection c(g_cluster->infra().pg_uri());
    pqxx::work tx(c);
    // request, org, model, key, time, input, output, cost (micro-dollars)
    const std::vector<std::tuple<std::string, std::string, std::string, std::string, std::string,
                                 int, int, int64_t>>
        rows = {
            {"rep-1", "reports", "m-a", "k1", "2026-11-20T10:00:00Z", 10, 20, 1'000},
            {"rep-2", "reports", "m-b", "k2", "2026-11-20T10:00:59.999Z", 1, 2, 10},
            {"rep-3", "reports", "m-a", "k1", "2026-11-20T10:01:00Z", 5, 5, 500},
            {"rep-4", "reports-other", "m-a", "k9", "2026-11-20T10:00:30Z", 1000, 1000, 9'999},
            {"rep-5", "reports", "m-a", "k1", "2026-11-20T09:59:59.999Z", 7, 7, 7},
        };
    for (const auto& [id, org, model, key, at, in, out, cost] : rows) {
      tx.exec_params(
          "INSERT INTO usage_ledger (request_id, org_id, model, worker_id, source, input_tokens, "
          " output_tokens, stop_reason, occurred_at, end_user_id, final, cost_micros, api_key_id) "
          "VALUES ($1, $2, $3, 'w', 'api', $6, $7, 'end_turn', $5::timestamptz, '', true, $8, $4)",
          id, org, model, key, at, in, out, cost);
    }
    tx.commit();
  }
  auto get = [](const std::string& target, const std::string& key) {
    http::Headers headers = {{"anthropic-version", "2023-06-01"}};
    if (!key.empty()) headers.push_back({"x-api-key", key});
    auto r = http::Fetch({.port = g_cluster->http_port(), .target = target, .headers = headers});
    return r.ok() ? *r : http::Response{};
  };
  const std::string window =
      "starting_at=2026-11-20T10:00:00Z&ending_at=2026-11-20T10:03:00Z&bucket_width=1m";

  auto usage = get("/v1/organizations/usage_report/messages?" + window, admin_key);
  ASSERT_EQ(usage.status, 200) << usage.body;
  json u = json::parse(usage.body);
  ASSERT_EQ(u["data"].size(), 3u) << usage.body;
  EXPECT_EQ(u["data"][0]["starting_at"], "2026-11-20T10:00:00Z");
  ASSERT_EQ(u["data"][0]["results"].size(), 1u);
  EXPECT_EQ(u["data"][0]["results"][0]["uncached_input_tokens"], 11) << "10:00:00 and 10:00:59.999";
  EXPECT_EQ(u["data"][0]["results"][0]["output_tokens"], 22);
  EXPECT_EQ(u["data"][1]["results"][0]["uncached_input_tokens"], 5) << "10:01:00 starts the next";
  EXPECT_TRUE(u["data"][2]["results"].empty());
  EXPECT_EQ(u["has_more"], false);

  auto grouped = get("/v1/organizations/usage_report/messages?" + window +
                         "&group_by[]=model&group_by[]=api_key_id",
                     admin_key);
  ASSERT_EQ(grouped.status, 200) << grouped.body;
  const json g = json::parse(grouped.body)["data"][0]["results"];
  ASSERT_EQ(g.size(), 2u) << grouped.body;
  EXPECT_EQ(g[0]["model"], "m-a");
  EXPECT_EQ(g[0]["api_key_id"], "k1");
  EXPECT_EQ(g[1]["model"], "m-b");
  EXPECT_EQ(g[1]["output_tokens"], 2);

  auto cost = get("/v1/organizations/cost_report?" + window, admin_key);
  ASSERT_EQ(cost.status, 200) << cost.body;
  const json c = json::parse(cost.body);
  EXPECT_EQ(c["data"][0]["results"][0]["amount"], "0.001010");
  EXPECT_EQ(c["data"][0]["results"][0]["currency"], "USD");
  EXPECT_EQ(c["data"][1]["results"][0]["amount"], "0.000500");

  // Two buckets a page.
  auto first = get("/v1/organizations/usage_report/messages?" + window + "&limit=2", admin_key);
  const json p1 = json::parse(first.body);
  ASSERT_EQ(p1["data"].size(), 2u) << first.body;
  ASSERT_EQ(p1["has_more"], true);
  auto second = get("/v1/organizations/usage_report/messages?" + window +
                        "&limit=2&page=" + p1["next_page"].get<std::string>(),
                    admin_key);
  const json p2 = json::parse(second.body);
  ASSERT_EQ(p2["data"].size(), 1u) << second.body;
  EXPECT_EQ(p2["data"][0]["starting_at"], "2026-11-20T10:02:00Z");
  EXPECT_EQ(p2["has_more"], false);

  // The other org sees its own row only.
  const json o =
      json::parse(get("/v1/organizations/usage_report/messages?" + window, other_admin).body);
  EXPECT_EQ(o["data"][0]["results"][0]["uncached_input_tokens"], 1000);
  EXPECT_TRUE(o["data"][1]["results"].empty());

  // Keys: an API key is refused here, an admin key on inference.
  auto refused = get("/v1/organizations/cost_report?" + window, api_key);
  EXPECT_EQ(refused.status, 403) << refused.body;
  EXPECT_EQ(json::parse(refused.body)["error"]["type"], "permission_error");
  EXPECT_EQ(get("/v1/organizations/cost_report?" + window, "").status, 401);
  EXPECT_EQ(
      Post("/v1/messages", MessagesBody("admin keys do not chat", false, 1), admin_key).status,
      403);
  auto bad = get("/v1/organizations/usage_report/messages?bucket_width=1m", admin_key);
  EXPECT_EQ(bad.status, 400) << bad.body;
  EXPECT_NE(bad.body.find("starting_at"), std::string::npos) << bad.body;
}

// The ledger, after the cluster's own traffic, equals what the workers
// published: sbadmin billing reconcile reads the topic and finds no drift.
TEST(ReconcileE2eTest, TheLedgerEqualsWhatTheWorkersPublished) {
  const std::string since = absl::FormatTime(absl::RFC3339_full, absl::Now(), absl::UTCTimeZone());
  const std::string org = "reconcile-e2e";
  const std::string key = KeyOfNewOrg(org);
  constexpr int kRequests = 20;
  for (int i = 0; i < kRequests; ++i) {
    auto r = Post("/v1/messages", MessagesBody("count me", i % 2 == 0, 8 + i), key);
    ASSERT_EQ(r.status, 200) << r.body;
  }
  UsageOfOrg(org, kRequests);  // every request settled in the ledger
  std::string out;
  const int rc = Sbadmin(
      {"billing", "reconcile", "--since=" + since, "--kafka_brokers=" + g_cluster->infra().kafka(),
       "--usage_signing_key_file=" + g_cluster->infra().dir() + "/usage_signing.key"},
      &out);
  EXPECT_EQ(rc, 0) << out;
  EXPECT_NE(out.find("no drift"), std::string::npos) << out;
  EXPECT_NE(out.find("missing from the ledger: 0"), std::string::npos) << out;
}

}  // namespace
}  // namespace sb::testing
