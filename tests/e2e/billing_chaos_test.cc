// Billing killed again and again under a steady load (issue 13): 100 kill -9
// of the billing service while clients keep sending requests, each kill at a
// random moment once billing has been consuming, and among them 10 kill -9
// of the inference worker (the one that publishes the usage events); after
// them the ledger holds every answered request exactly as its client was
// told (input and output tokens), request by request, none lost and none
// counted twice, and `sbadmin billing reconcile` finds no drift from the
// topic. Requests a worker kill cuts fail (their clients get an error, not
// an answer); what they leave in the ledger is bounded by their number.
//
// Its own cluster (billing with the shortest consumer-group session the dev
// broker takes, 6 s, so that a killed billing's partitions move on soon),
// its own ctest: about 10 s a kill. SB_CHAOS_KILLS=N makes it N billing
// kills and N/10 worker kills (at least one).
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <limits>
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
  std::map<std::string, Clock::time_point> answered_at;
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
          // While the worker is down, not a spin of refusals.
          std::this_thread::sleep_for(20ms);
          continue;
        }
        const json usage = json::parse(r.body)["usage"];
        // The whole prompt, cached or not: the ledger's input_tokens.
        const int input = usage["input_tokens"].get<int>() +
                          usage.value("cache_read_input_tokens", 0) +
                          usage.value("cache_creation_input_tokens", 0);
        std::lock_guard<std::mutex> lock(mu);
        told[r.headers["request-id"]] = {input, usage["output_tokens"].get<int>()};
        answered_at[r.headers["request-id"]] = Clock::now();
      }
    });
  }

  auto answered = [&] {
    std::lock_guard<std::mutex> lock(mu);
    return told.size();
  };
  // The worker, killed in every tenth round (at least once) as soon as a
  // client has its answer (its final usage report was sent at the same
  // time: it must be in the ledger), cutting the others' requests; it is
  // back before billing's kill of the round.
  const int worker_kills = std::max(1, kills / 10);
  const int every = kills / worker_kills;
  std::vector<Clock::time_point> worker_killed_at;
  std::mt19937 rng(42);
  int consuming_kills = 0;
  for (int k = 0; k < kills; ++k) {
    if (k % every == every / 2 && static_cast<int>(worker_killed_at.size()) < worker_kills) {
      std::this_thread::sleep_for(std::chrono::milliseconds(rng() % 400));
      const size_t before = answered();
      for (auto until = Clock::now() + 20s; answered() == before && Clock::now() < until;) {
        std::this_thread::sleep_for(1ms);
      }
      g_cluster->Kill("inference-worker");
      worker_killed_at.push_back(Clock::now());
      auto st = g_cluster->Restart("inference-worker");
      ASSERT_TRUE(st.ok()) << "after worker kill " << worker_killed_at.size() << ": " << st;
      // Answers again (the schedulers list it at its next heartbeat).
      const size_t cut = answered();
      for (auto until = Clock::now() + 20s; answered() <= cut && Clock::now() < until;) {
        std::this_thread::sleep_for(20ms);
      }
      ASSERT_GT(answered(), cut) << "no answer after worker kill " << worker_killed_at.size()
                                 << ":\n"
                                 << g_cluster->Logs();
    }
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
      "[ figure   ] %d kill -9 of billing (%d while it was consuming), %zu of the worker; "
      "%zu requests answered, %d refused or failed\n",
      kills, consuming_kills, worker_killed_at.size(), told.size(), failed.load());
  ASSERT_GT(told.size(), static_cast<size_t>(kills));
  EXPECT_GE(consuming_kills, kills * 9 / 10);

  // Every answered request, in the ledger as its client was told (read
  // straight from PostgreSQL: GetUsage pages at 1,000 records).
  std::map<std::string, std::pair<int, int>> ledger, unsettled;
  int64_t rows = 0;
  for (auto until = Clock::now() + 120s; Clock::now() < until;) {
    pqxx::connection c(g_cluster->infra().pg_uri());
    pqxx::read_transaction tx(c);
    ledger.clear();
    unsettled.clear();
    for (const auto& r :
         tx.exec_params("SELECT request_id, input_tokens, output_tokens, final FROM usage_ledger "
                        "WHERE org_id = $1",
                        org)) {
      (r[3].as<bool>() ? ledger : unsettled)[r[0].as<std::string>()] = {r[1].as<int>(),
                                                                        r[2].as<int>()};
    }
    rows = tx.exec_params1("SELECT count(*) FROM usage_ledger WHERE org_id = $1", org)[0]
               .as<int64_t>();
    if (ledger.size() >= told.size()) break;
    std::this_thread::sleep_for(500ms);
  }
  int lost = 0, differing = 0;
  int64_t told_out = 0, ledger_out = 0;
  // When a request the ledger lost or got wrong was answered, against the
  // nearest worker kill.
  auto near_worker_kill = [&](const std::string& id) {
    long long nearest = std::numeric_limits<long long>::max();
    for (const auto& at : worker_killed_at) {
      const long long ms =
          std::chrono::duration_cast<std::chrono::milliseconds>(answered_at.at(id) - at).count();
      if (std::llabs(ms) < std::llabs(nearest)) nearest = ms;
    }
    return nearest;
  };
  for (const auto& [id, counts] : told) {
    told_out += counts.second;
    auto it = ledger.find(id);
    if (it == ledger.end()) {
      if (++lost > 10) continue;
      auto running = unsettled.find(id);
      ADD_FAILURE() << id << " (input " << counts.first << ", output " << counts.second
                    << ") answered " << near_worker_kill(id)
                    << " ms from a worker kill, has no settled row in the ledger; "
                    << (running == unsettled.end()
                            ? std::string("no row at all")
                            : "a running one: input " + std::to_string(running->second.first) +
                                  ", output " + std::to_string(running->second.second));
    } else if (it->second != counts && ++differing <= 10) {
      ADD_FAILURE() << id << " told input " << counts.first << ", output " << counts.second
                    << "; the ledger " << it->second.first << ", " << it->second.second
                    << " (answered " << near_worker_kill(id) << " ms from a worker kill)";
    }
  }
  for (const auto& [id, counts] : ledger) {
    if (told.contains(id)) ledger_out += counts.second;
  }
  std::printf(
      "[ figure   ] ledger: %zu settled rows for %zu answered requests; lost %d, differing %d; "
      "output tokens told %lld, in the ledger %lld; %lld other rows (requests a worker kill "
      "cut)\n",
      ledger.size(), told.size(), lost, differing, static_cast<long long>(told_out),
      static_cast<long long>(ledger_out),
      static_cast<long long>(rows) - static_cast<long long>(told.size()));
  EXPECT_EQ(lost, 0);
  EXPECT_EQ(differing, 0);
  EXPECT_EQ(ledger_out, told_out);
  // One row per answered request (a request id is the ledger's key, so a
  // repeat could only have raised a row's counts), and no others but those
  // of requests that failed on their own.
  EXPECT_GE(rows, static_cast<int64_t>(told.size()));
  EXPECT_LE(rows, static_cast<int64_t>(told.size()) + failed.load());
  // Those are requests a worker kill cut: at most one a client each time.
  EXPECT_LE(rows, static_cast<int64_t>(told.size() + clients.size() * worker_killed_at.size()));

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
  // billing's partitions move on soon. Eight partitions: the dev broker
  // keeps a bounded log per partition, and four no longer held the ~70,000
  // events of a run (reconcile then saw the oldest gone: drift).
  ::testing::AddGlobalTestEnvironment(new sb::testing::ClusterEnvironment(
      {.billing_flags = {"--kafka_session_timeout_ms=6000"}, .kafka_partitions = 8}));
  return RUN_ALL_TESTS();
}
