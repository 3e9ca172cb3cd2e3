// The model registry, circuit breakers, org weights and the scheduler's
// replicas end to end (issue 9): a canary takes its share of an alias's
// requests and a rollback takes effect within seconds; a version whose
// worker fails every request is cut off by its breaker and the alias falls
// back to the previous stable version; backlogged orgs share a small model's
// tokens in proportion to their weights (in one replica's fair queue); a
// replica killed under load loses
// no request, and knows every worker again soon after it is back.
//
// Each test has its own models and workers, so that they do not share a
// fair queue or a breaker with another test.
#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <functional>
#include <map>
#include <mutex>
#include <set>
#include <thread>
#include <vector>

#include "e2e/e2e_helpers.h"
#include "gtest/gtest.h"
#include "http/http_client.h"
#include "nlohmann/json.hpp"
#include "sbadmin/admin.h"
#include "support/process.h"
#include "switchboard/scheduler/v1/admin.grpc.pb.h"
#include "switchboard/scheduler/v1/scheduler.grpc.pb.h"

namespace sb::testing {
namespace {

namespace sched = switchboard::scheduler::v1;
using json = nlohmann::json;
using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

std::unique_ptr<sched::ModelAdmin::Stub> ModelAdmin(int replica = 0) {
  return sched::ModelAdmin::NewStub(g_cluster->SchedulerChannel(replica));
}

std::unique_ptr<grpc::ClientContext> Context() {
  auto ctx = std::make_unique<grpc::ClientContext>();
  ctx->set_deadline(std::chrono::system_clock::now() + 5s);
  return ctx;
}

void CreateVersion(const std::string& version, const std::string& served_model) {
  sched::CreateVersionRequest req;
  req.set_version(version);
  req.set_served_model(served_model);
  sched::CreateVersionResponse resp;
  auto st = ModelAdmin()->CreateVersion(Context().get(), req, &resp);
  ASSERT_TRUE(st.ok()) << st.error_message();
}

void SetAlias(const std::string& alias, const std::string& version) {
  sched::SetAliasRequest req;
  req.set_alias(alias);
  req.set_version(version);
  sched::SetAliasResponse resp;
  auto st = ModelAdmin()->SetAlias(Context().get(), req, &resp);
  ASSERT_TRUE(st.ok()) << st.error_message();
}

// Until every replica routes `alias` with this stable version and canary
// ("": none).
bool WaitForAlias(const std::string& alias, const std::string& stable, const std::string& canary,
                  std::chrono::seconds timeout = 10s) {
  const auto deadline = Clock::now() + timeout;
  while (Clock::now() < deadline) {
    int matching = 0;
    for (int i = 0; i < Cluster::kSchedulerReplicas; ++i) {
      sched::ListModelRegistryResponse resp;
      if (!ModelAdmin(i)->ListModels(Context().get(), {}, &resp).ok()) continue;
      for (const auto& a : resp.aliases()) {
        if (a.alias() == alias && a.stable_version() == stable && a.canary_version() == canary) {
          ++matching;
        }
      }
    }
    if (matching == Cluster::kSchedulerReplicas) return true;
    std::this_thread::sleep_for(100ms);
  }
  return false;
}

// The `model` of a non-streamed reply ("" when it failed).
std::string ModelOfReply(const http::Response& r) {
  if (r.status != 200) return "";
  const json j = json::parse(r.body, nullptr, false);
  return j.is_object() && j["model"].is_string() ? j["model"].get<std::string>() : "";
}

// Runs `fn(thread index)` on `threads` threads and waits for them.
void RunConcurrently(int threads, const std::function<void(int)>& fn) {
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) pool.emplace_back(fn, t);
  for (auto& t : pool) t.join();
}

// A canary at 10% takes 10% of the alias's requests (the request id picks,
// through a hash); a rollback sends every request back to the old stable
// version within 10 s.
TEST(ModelRegistryE2eTest, ACanaryTakesItsShareAndARollbackTakesEffectWithinTenSeconds) {
  auto worker = g_cluster->StartWorker("worker-canary", "sim-ca,sim-cb");
  ASSERT_TRUE(worker.ok()) << worker.status();
  const std::string key = KeyOfNewOrg("canary");
  CreateVersion("sim-c-v1", "sim-ca");
  CreateVersion("sim-c-v2", "sim-cb");
  SetAlias("sim-c", "sim-c-v1");
  {
    sched::SetCanaryRequest req;
    req.set_alias("sim-c");
    req.set_version("sim-c-v2");
    req.set_weight(10);
    sched::SetCanaryResponse resp;
    auto st = ModelAdmin()->SetCanary(Context().get(), req, &resp);
    ASSERT_TRUE(st.ok()) << st.error_message();
  }
  ASSERT_TRUE(WaitForAlias("sim-c", "sim-c-v1", "sim-c-v2")) << "every replica reloaded";

  constexpr int kRequests = 2000, kThreads = 32;
  std::atomic<int> next{0}, v1{0}, v2{0};
  std::mutex mu;
  std::map<std::string, int> other;  // anything else: a failure or another name
  const auto start = Clock::now();
  RunConcurrently(kThreads, [&](int) {
    while (next.fetch_add(1) < kRequests) {
      auto r = Post("/v1/messages", MessagesBody("which version", false, 1, "sim-c"), key);
      const std::string model = ModelOfReply(r);
      if (model == "sim-c-v1") {
        ++v1;
      } else if (model == "sim-c-v2") {
        ++v2;
      } else {
        std::lock_guard<std::mutex> lock(mu);
        ++other[std::to_string(r.status) + " " + r.body.substr(0, 200)];
      }
    }
  });
  const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  const double share = static_cast<double>(v2) / kRequests;
  std::cout << "canary: " << v2 << " of " << kRequests << " requests (" << share * 100
            << "%) named sim-c-v2, " << v1 << " sim-c-v1, in " << seconds << " s\n";
  EXPECT_TRUE(other.empty()) << other.size() << " other replies, e.g. " << other.begin()->first;
  EXPECT_NEAR(share, 0.10, 0.03);

  // Promoted, then rolled back.
  SetAlias("sim-c", "sim-c-v2");
  const auto promoted = Clock::now();
  ASSERT_TRUE(WaitForAlias("sim-c", "sim-c-v2", ""))
      << "every replica routes by the promotion (which ends the canary)";
  std::cout << "promotion reached both replicas in "
            << std::chrono::duration<double>(Clock::now() - promoted).count() << " s\n";
  for (int i = 0; i < 10; ++i) {
    ASSERT_EQ(ModelOfReply(Post("/v1/messages", MessagesBody("promoted", false, 1, "sim-c"), key)),
              "sim-c-v2");
  }
  {
    sched::RollbackRequest req;
    req.set_alias("sim-c");
    sched::RollbackResponse resp;
    auto st = ModelAdmin()->Rollback(Context().get(), req, &resp);
    ASSERT_TRUE(st.ok()) << st.error_message();
    EXPECT_EQ(resp.alias().stable_version(), "sim-c-v1");
    EXPECT_EQ(resp.alias().canary_version(), "");
  }
  const auto rolled_back = Clock::now();
  // Back when 20 replies in a row (both replicas, round-robin) name v1.
  int in_a_row = 0;
  auto run_start = Clock::now();
  while (in_a_row < 20 && Clock::now() - rolled_back < 15s) {
    const auto sent = Clock::now();
    const std::string model =
        ModelOfReply(Post("/v1/messages", MessagesBody("rolled back?", false, 1, "sim-c"), key));
    if (model == "sim-c-v1") {
      if (in_a_row++ == 0) run_start = sent;
    } else {
      in_a_row = 0;
      std::this_thread::sleep_for(20ms);
    }
  }
  ASSERT_EQ(in_a_row, 20) << "still not rolled back after 15 s";
  const double took = std::chrono::duration<double>(run_start - rolled_back).count();
  std::cout << "rollback: every reply named sim-c-v1 again " << took << " s after it\n";
  EXPECT_LT(took, 10.0);
}

// A version whose worker fails every request opens its breaker (on every
// replica: each keeps its own), and the alias's requests go to the previous
// stable version.
TEST(ModelRegistryE2eTest, AnOpenBreakerSendsTheAliasToThePreviousStableVersion) {
  // An upstream engine whose upstream answers every request with a 500.
  const int mock_port = FreePort();
  Process mock("mock-upstream-broken",
               {Infra::BuildDir() + "/tools/mock-upstream/mock-upstream",
                "--port=" + std::to_string(mock_port), "--models=mock-broken", "--mode=fail=500"},
               g_cluster->infra().dir() + "/mock-upstream-broken.log");
  for (int i = 0; i < 100; ++i) {
    auto r = http::Fetch({.port = mock_port, .target = "/v1/models"});
    if (r.ok() && r->status == 200) break;
    std::this_thread::sleep_for(50ms);
  }
  auto broken = g_cluster->StartWorker(
      "worker-brk-broken", "sim-brk-b",
      {"--engine=openai", "--upstream_url=http://127.0.0.1:" + std::to_string(mock_port) + "/v1",
       "--upstream_model=mock-broken"});
  ASSERT_TRUE(broken.ok()) << broken.status();
  auto healthy = g_cluster->StartWorker("worker-brk-ok", "sim-brk-a");
  ASSERT_TRUE(healthy.ok()) << healthy.status();
  const std::string key = KeyOfNewOrg("breaker");
  CreateVersion("sim-brk-v1", "sim-brk-a");
  CreateVersion("sim-brk-v2", "sim-brk-b");
  SetAlias("sim-brk", "sim-brk-v1");
  SetAlias("sim-brk", "sim-brk-v2");  // v1 is the previous stable version
  ASSERT_TRUE(WaitForAlias("sim-brk", "sim-brk-v2", ""));

  const std::string state = R"(sb_scheduler_breaker_state{version="sim-brk-v2"})";
  const std::string opened =
      R"(sb_scheduler_breaker_transitions_total{version="sim-brk-v2",to="open"})";
  // The alias's requests all go to its home replica (the gateway hashes the
  // model name), whose breaker opens.
  auto open_on = [&](int i) {
    return MetricValue(g_cluster->scheduler_metrics_port(i), state) == 2;
  };
  auto home = [&] {
    for (int i = 0; i < Cluster::kSchedulerReplicas; ++i) {
      if (open_on(i)) return i;
    }
    return -1;
  };
  int failed = 0, sent = 0;
  while (home() < 0 && sent < 300) {
    auto r = Post("/v1/messages", MessagesBody("break me", false, 5, "sim-brk"), key);
    ++sent;
    if (r.status != 200) ++failed;
  }
  const int h = home();
  std::cout << "breaker: open on replica " << h << " after " << sent << " requests, " << failed
            << " of them failed\n";
  ASSERT_GE(h, 0) << "after " << sent << " requests";
  EXPECT_GE(failed, 20 * 0.5) << "the default --breaker_min_requests (20)";
  EXPECT_GE(MetricValue(g_cluster->scheduler_metrics_port(h), opened), 1);
  sched::ListModelRegistryResponse resp;
  ASSERT_TRUE(ModelAdmin(h)->ListModels(Context().get(), {}, &resp).ok());
  for (const auto& v : resp.versions()) {
    if (v.version() == "sim-brk-v2") {
      EXPECT_EQ(v.breaker(), sched::BREAKER_STATE_OPEN);
    } else if (v.version() == "sim-brk-v1") {
      EXPECT_EQ(v.breaker(), sched::BREAKER_STATE_CLOSED);
    }
  }
  // Within the cool-down (10 s by default), the previous stable serves.
  for (int i = 0; i < 20; ++i) {
    auto r = Post("/v1/messages", MessagesBody("served after all", false, 5, "sim-brk"), key);
    EXPECT_EQ(r.status, 200) << r.body;
    EXPECT_EQ(ModelOfReply(r), "sim-brk-v1") << r.body;
  }
}

// Output tokens each org was served of `model`, over every replica.
std::map<std::string, int64_t> OutputTokensServed(const std::string& model) {
  std::map<std::string, int64_t> out;
  for (int i = 0; i < Cluster::kSchedulerReplicas; ++i) {
    auto stub = sched::TenantScheduler::NewStub(g_cluster->SchedulerChannel(i));
    sched::GetFairnessRequest req;
    req.set_model(model);
    sched::GetFairnessResponse resp;
    auto st = stub->GetFairness(Context().get(), req, &resp);
    EXPECT_TRUE(st.ok()) << st.error_message();
    for (const auto& m : resp.models()) {
      for (const auto& o : m.orgs()) out[o.org_id()] += o.output_tokens_served();
    }
  }
  return out;
}

// Two orgs flood one small model; returns the first org's share of the
// output tokens served between the end of a warm-up and the end.
//
// Through the cluster's gateway, which admits through both replicas: a
// model's requests all go to its home replica (while it lives), so one fair
// queue orders them. (When the gateway spread them round-robin, each replica
// ordered only what reached it and the weight-1 org got 33% and 41% instead
// of 25%.)
double FloodShare(const std::string& model, const std::string& org_a, double weight_a,
                  const std::string& org_b, double weight_b) {
  auto worker = g_cluster->StartWorker(
      "worker-" + model, model, {"--max_num_seqs=2", "--max_waiting=0", "--tokens_per_second=50"});
  EXPECT_TRUE(worker.ok()) << worker.status();
  if (!worker.ok()) return -1;
  const std::string key_a = KeyOfNewOrg(org_a), key_b = KeyOfNewOrg(org_b);
  admin::Admin admin(g_cluster->infra().pg_uri());
  for (const auto& [org, weight] : {std::pair{org_a, weight_a}, std::pair{org_b, weight_b}}) {
    if (weight != 1) {
      EXPECT_TRUE(admin.SetOrg(org, {.weight = weight}).ok());
    }
  }
  std::this_thread::sleep_for(4s);  // the scheduler reloads org policy every 2 s

  // Enough to keep both orgs queued, few enough that the estimated wait
  // stays under --max_queue_wait_ms (a refused request is not queued).
  constexpr int kThreadsPerOrg = 4;
  std::atomic<bool> stop{false};
  std::atomic<int> ok{0}, refused{0}, failed{0};
  std::thread flood([&] {
    RunConcurrently(2 * kThreadsPerOrg, [&](int t) {
      const std::string& key = t % 2 == 0 ? key_a : key_b;
      while (!stop.load()) {
        auto r = Post("/v1/messages", MessagesBody("share the model", false, 16, model), key);
        if (r.status == 200) {
          ++ok;
        } else if (r.status == 529) {
          ++refused;
          std::this_thread::sleep_for(20ms);
        } else {
          ++failed;
        }
      }
    });
  });
  std::this_thread::sleep_for(4s);  // both orgs backlogged
  const auto before = OutputTokensServed(model);
  std::this_thread::sleep_for(20s);
  const auto after = OutputTokensServed(model);
  stop = true;
  flood.join();
  auto served = [&](const std::string& org) {
    auto a = after.find(org);
    auto b = before.find(org);
    return (a == after.end() ? 0 : a->second) - (b == before.end() ? 0 : b->second);
  };
  const int64_t a = served(org_a), b = served(org_b);
  std::cout << "shares " << weight_a << ":" << weight_b << " on " << model << ": " << org_a << " "
            << a << " output tokens, " << org_b << " " << b << " (" << ok << " replies, " << refused
            << " refused with 529, " << failed << " failed)\n";
  EXPECT_EQ(failed, 0);
  EXPECT_GT(a + b, 0);
  return a + b > 0 ? static_cast<double>(a) / static_cast<double>(a + b) : -1;
}

TEST(OrgWeightsE2eTest, BackloggedOrgsWithWeightsOneAndThreeShareTokensAQuarterAndThreeQuarters) {
  const double share = FloodShare("sim-shares-13", "light-13", 1, "heavy-13", 3);
  std::cout << "weight 1 got " << share * 100 << "%\n";
  EXPECT_NEAR(share, 0.25, 0.05);
}

TEST(OrgWeightsE2eTest, BackloggedOrgsWithEqualWeightsShareTokensEvenly) {
  const double share = FloodShare("sim-shares-11", "even-a", 1, "even-b", 1);
  std::cout << "first of two equal orgs got " << share * 100 << "%\n";
  EXPECT_NEAR(share, 0.50, 0.05);
}

// The time to the first content_block_delta of `n` streamed requests, one at
// a time, sorted.
std::vector<double> TtftsMs(const std::string& key, const std::string& model, int n) {
  std::vector<double> out;
  for (int i = 0; i < n; ++i) {
    const auto t0 = Clock::now();
    double first = -1;
    auto r = http::FetchStreaming(
        {.port = g_cluster->http_port(),
         .method = "POST",
         .target = "/v1/messages",
         .headers = {{"x-api-key", key}, {"content-type", "application/json"}},
         .body = MessagesBody("a quick question", true, 2, model)},
        [&](std::string_view d) {
          if (first < 0 && d.find("content_block_delta") != std::string_view::npos) {
            first = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
          }
          return true;
        });
    EXPECT_TRUE(r.ok() && r->status == 200);
    EXPECT_GE(first, 0);
    out.push_back(first);
  }
  std::sort(out.begin(), out.end());
  return out;
}

double P99(const std::vector<double>& sorted) {
  return sorted.empty() ? 0 : sorted[std::min(sorted.size() - 1, sorted.size() * 99 / 100)];
}

// A light org's requests while a heavy org keeps every slot of the model
// busy and more of its requests queued: each is served (the fair queue puts
// it first, and the slot kept for an org under its share, --reserved_slots,
// means it does not wait for a flood's sequence to end). Its TTFT alone and
// under the flood is printed as a figure, never asserted: timings on a
// shared machine are for bench/fairness_bench (RESULTS.md, "Light-org TTFT
// under a flood"), which measures the ratio over 60 s runs.
TEST(OrgWeightsE2eTest, ALightOrgIsServedThroughAFloodThatFillsTheModel) {
  const std::string model = "sim-ttft";
  auto worker = g_cluster->StartWorker(
      "worker-ttft", model, {"--max_num_seqs=16", "--max_waiting=0", "--tokens_per_second=200"});
  ASSERT_TRUE(worker.ok()) << worker.status();
  const std::string light = KeyOfNewOrg("ttft-light"), heavy = KeyOfNewOrg("ttft-heavy");
  (void)TtftsMs(light, model, 5);  // warm the connections
  const std::vector<double> alone = TtftsMs(light, model, 100);

  // Replies of 20 to 60 tokens at most, as real ones vary: sequences of one
  // length started together would end together, and free the slots in waves.
  constexpr int kFlooders = 24;  // 16 running, 8 queued
  std::atomic<bool> stop{false};
  std::atomic<int> flood_ok{0};
  std::thread flood([&] {
    RunConcurrently(kFlooders, [&](int t) {
      for (int i = 0; !stop.load(); ++i) {
        const int max_tokens = 20 + (t * 7 + i * 5) % 41;
        auto r =
            Post("/v1/messages", MessagesBody("flood the model", false, max_tokens, model), heavy);
        if (r.status == 200) ++flood_ok;
      }
    });
  });
  std::this_thread::sleep_for(2s);
  const double queued_before = SchedulerMetric("sb_scheduler_generate_total{outcome=\"queued\"}");
  const std::vector<double> flooded = TtftsMs(light, model, 100);
  const double queued =
      SchedulerMetric("sb_scheduler_generate_total{outcome=\"queued\"}") - queued_before;
  stop = true;
  flood.join();
  std::cout << "[ figure   ] light org TTFT p50/p99 alone " << alone[alone.size() / 2] << " / "
            << P99(alone) << " ms, under the flood " << flooded[flooded.size() / 2] << " / "
            << P99(flooded) << " ms; " << flood_ok << " flood replies, " << queued
            << " requests queued\n";
  EXPECT_GT(queued, 100) << "the flood kept the model full";
  EXPECT_EQ(flooded.size(), 100u);
  EXPECT_GE(flooded.front(), 0) << "every request of the light org streamed its reply";
}

std::set<std::string> LiveWorkers(int replica) {
  auto stub = sched::TenantScheduler::NewStub(g_cluster->SchedulerChannel(replica));
  sched::ListWorkersResponse resp;
  std::set<std::string> out;
  if (!stub->ListWorkers(Context().get(), {}, &resp).ok()) return out;
  for (const auto& w : resp.workers()) {
    if (w.live()) out.insert(w.worker_id());
  }
  return out;
}

// kill -9 of one replica under steady load: admissions in flight on it are
// retried on the other, streams already running do not pass through it, so
// no request fails. Started again, it knows every worker within about one
// heartbeat.
TEST(SchedulerReplicasE2eTest, KillingOneReplicaUnderLoadLosesNoRequest) {
  auto worker = g_cluster->StartWorker("worker-kill", "sim-kill", {"--tokens_per_second=100"});
  ASSERT_TRUE(worker.ok()) << worker.status();
  const std::string key = KeyOfNewOrg("replica-kill");
  std::atomic<bool> stop{false};
  std::atomic<int> ok{0};
  std::mutex mu;
  std::vector<std::string> errors;
  std::thread load([&] {
    RunConcurrently(10, [&](int) {
      while (!stop.load()) {
        auto r = Post("/v1/messages", MessagesBody("steady", false, 5, "sim-kill"), key);
        if (r.status == 200) {
          ++ok;
        } else {
          std::lock_guard<std::mutex> lock(mu);
          errors.push_back(std::to_string(r.status) + " " + r.body);
        }
      }
    });
  });
  std::this_thread::sleep_for(5s);
  const int before_kill = ok.load();
  g_cluster->KillScheduler(1);
  std::this_thread::sleep_for(5s);
  stop = true;
  load.join();
  std::cout << "kill -9 of replica B: " << ok << " requests served (" << before_kill
            << " before the kill), " << errors.size() << " failed\n";
  EXPECT_GT(ok - before_kill, 0) << "served after the kill";
  EXPECT_TRUE(errors.empty()) << errors.size() << " failed, e.g. " << errors.front();

  // Model lists and token counts go to a replica that answers: with B
  // dead, to A, whichever model's home B is (after the gateway's channel
  // to B has seen it fail).
  for (const std::string model : {"sim-kill", "sim-small", "sim-large"}) {
    int status = 0;
    for (int i = 0; i < 30 && status != 200; ++i) {
      status = Post("/v1/messages/count_tokens", MessagesBody("count me", false, 5, model)).status;
      if (status != 200) std::this_thread::sleep_for(100ms);
    }
    EXPECT_EQ(status, 200) << model;
  }
  EXPECT_EQ(Get("/v1/models").status, 200);

  // Back on the same ports: every worker registers again with it.
  const std::set<std::string> workers = LiveWorkers(0);
  ASSERT_TRUE(workers.count("worker-kill"));
  ASSERT_TRUE(g_cluster->StartScheduler(1).ok());
  const auto restarted = Clock::now();
  std::set<std::string> listed;
  while (Clock::now() - restarted < 10s) {
    listed = LiveWorkers(1);
    if (std::includes(listed.begin(), listed.end(), workers.begin(), workers.end())) break;
    std::this_thread::sleep_for(20ms);
  }
  const double took = std::chrono::duration<double>(Clock::now() - restarted).count();
  std::cout << "restarted replica B listed all " << workers.size() << " workers after " << took
            << " s\n";
  EXPECT_TRUE(std::includes(listed.begin(), listed.end(), workers.begin(), workers.end()));
  EXPECT_LT(took, 0.2 + 0.25 + 0.3)
      << "one heartbeat (200 ms), the workers' longest reconnect backoff (250 ms), and slack";
  // And it admits again.
  for (int i = 0; i < 4; ++i) {
    auto r = Post("/v1/messages", MessagesBody("after the restart", false, 5, "sim-kill"), key);
    EXPECT_EQ(r.status, 200) << r.body;
  }
}

}  // namespace
}  // namespace sb::testing
