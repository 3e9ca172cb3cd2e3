// Billing killed again and again under a steady load (issue 13): 100 kill -9
// of the billing service while clients keep sending requests, each kill at a
// random moment once billing has been consuming; afterwards the ledger holds
// every answered request exactly as its client was told (input and output
// tokens), request by request, none lost and none counted twice, and
// `sbadmin billing reconcile` finds no drift from the topic.
//
// Its own cluster (billing with the shortest consumer-group session the dev
// broker takes, 6 s, so that a killed billing's partitions move on soon),
// its own ctest: about 10 s a kill.
#include <atomic>
#include <chrono>
#include <cstdio>
#include <map>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "e2e/cluster.h"
#include "e2e/e2e_helpers.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "storage/pg.h"
#include "support/process.h"

namespace sb::testing {

namespace {

using json = nlohmann::json;
using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

// Usage events billing has handled since it last started (its own counter).
double Handled() {
  double sum = 0;
  for (const char* outcome : {"recorded", "raised", "settled", "duplicate"}) {
    sum += MetricValue(g_cluster->metrics_port("billing"),
                       std::string("sb_billing_events_total{outcome=\"") + outcome + "\"}");
  }
  return sum;
}

TEST(BillingChaosTest, AHundredKillsUnderLoadLoseAndDoubleNothing) {
  const int kills = std::getenv("SB_CHAOS_KILLS") ? std::atoi(std::getenv("SB_CHAOS_KILLS")) : 100;
  const std::string org = "chaos";
  const std::string key = KeyOfNewOrg(org);
  const auto since = absl::Now();

  // Steady load: what each answered request's client was told.
  std::mutex mu;
  std::map<std::string, std::pair<int, int>> told;  // request id -> input, output
  std::atomic<bool> stop{false};
  std::atomic<int> failed{0};
  std::vector<std::thread> clients;
  for (int t = 0; t < 4; ++t) {
    clients.emplace_back([&, t] {
      for (int i = 0; !stop.load(); ++i) {
        auto r =
            Post("/v1/messages", MessagesBody("keep billing busy", false, 4 + (t + i) % 17), key);
        if (r.status != 200) {
          ++failed;
          continue;
        }
        const json body = json::parse(r.body);
        std::lock_guard<std::mutex> lock(mu);
        told[r.headers["request-id"]] = {body["usage"]["input_tokens"].get<int>(),
                                         body["usage"]["output_tokens"].get<int>()};
      }
    });
  }

  std::mt19937 rng(42);
  int consuming_kills = 0;
  for (int k = 0; k < kills; ++k) {
    // Once billing is consuming again (the group moves a killed member's
    // partitions on after its session, 6 s: the dev broker's least), at a
    // random moment; or after 20 s.
    const auto until = Clock::now() + 20s;
    while (Handled() <= 0 && Clock::now() < until) std::this_thread::sleep_for(20ms);
    if (Handled() > 0) ++consuming_kills;
    std::this_thread::sleep_for(std::chrono::milliseconds(rng() % 400));
    g_cluster->Kill("billing");
    auto st = g_cluster->Restart("billing");
    ASSERT_TRUE(st.ok()) << "after kill " << k + 1 << ": " << st;
  }
  stop = true;
  for (auto& c : clients) c.join();
  std::printf(
      "[ figure   ] %d kill -9 of billing (%d while it was consuming), %zu requests "
      "answered, %d refused or failed\n",
      kills, consuming_kills, told.size(), failed.load());
  ASSERT_GT(told.size(), static_cast<size_t>(kills));
  EXPECT_GE(consuming_kills, kills * 9 / 10);

  // Every answered request, in the ledger as its client was told (read
  // straight from PostgreSQL: GetUsage pages at 1,000 records).
  std::map<std::string, std::pair<int, int>> ledger;
  int64_t rows = 0;
  for (auto until = Clock::now() + 120s; Clock::now() < until;) {
    pqxx::connection c(g_cluster->infra().pg_uri());
    pqxx::read_transaction tx(c);
    ledger.clear();
    for (const auto& r :
         tx.exec_params("SELECT request_id, input_tokens, output_tokens FROM usage_ledger "
                        "WHERE org_id = $1 AND final",
                        org)) {
      ledger[r[0].as<std::string>()] = {r[1].as<int>(), r[2].as<int>()};
    }
    rows = tx.exec_params1("SELECT count(*) FROM usage_ledger WHERE org_id = $1", org)[0]
               .as<int64_t>();
    if (ledger.size() >= told.size()) break;
    std::this_thread::sleep_for(500ms);
  }
  int lost = 0, differing = 0;
  int64_t told_out = 0, ledger_out = 0;
  for (const auto& [id, counts] : told) {
    told_out += counts.second;
    auto it = ledger.find(id);
    if (it == ledger.end()) {
      ++lost;
    } else if (it->second != counts) {
      ++differing;
    }
  }
  for (const auto& [id, counts] : ledger) {
    if (told.contains(id)) ledger_out += counts.second;
  }
  std::printf(
      "[ figure   ] ledger: %zu rows for %zu answered requests; lost %d, differing %d; "
      "output tokens told %lld, in the ledger %lld\n",
      ledger.size(), told.size(), lost, differing, static_cast<long long>(told_out),
      static_cast<long long>(ledger_out));
  EXPECT_EQ(lost, 0);
  EXPECT_EQ(differing, 0);
  EXPECT_EQ(ledger_out, told_out);
  // One row per answered request (a request id is the ledger's key, so a
  // repeat could only have raised a row's counts), and no others but those
  // of requests that failed on their own.
  EXPECT_GE(rows, static_cast<int64_t>(told.size()));
  EXPECT_LE(rows, static_cast<int64_t>(told.size()) + failed.load());

  // And it equals the topic.
  std::string out;
  const int rc = RunCommand(
      {Infra::BuildDir() + "/tools/sbadmin", "--pg=" + g_cluster->infra().pg_uri(), "billing",
       "reconcile", "--since=" + absl::FormatTime(absl::RFC3339_full, since, absl::UTCTimeZone()),
       "--kafka_brokers=" + g_cluster->infra().kafka(),
       "--usage_signing_key_file=" + g_cluster->infra().dir() + "/usage_signing.key"},
      &out);
  EXPECT_EQ(rc, 0) << out;
  EXPECT_NE(out.find("no drift"), std::string::npos) << out;
}

}  // namespace
}  // namespace sb::testing

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  // The dev broker's shortest consumer-group session, so that a killed
  // billing's partitions move on soon.
  ::testing::AddGlobalTestEnvironment(
      new sb::testing::ClusterEnvironment({.billing_flags = {"--kafka_session_timeout_ms=6000"}}));
  return RUN_ALL_TESTS();
}
