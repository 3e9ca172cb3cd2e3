// The tenant scheduler's fair queue end to end: when every worker of a model
// is full, a request waits for the next free slot (instead of an immediate
// 529), and one that would wait too long is refused with 529.
//
// A fair queue, and the load a replica sees between heartbeats, belong to
// one scheduler replica: these tests go through a gateway of their own that
// admits through the first replica only (a second replica learns of the
// first's leases with the worker's next heartbeat, 200 ms here).
#include <atomic>
#include <thread>

#include "e2e/e2e_helpers.h"
#include "gtest/gtest.h"
#include "http/http_client.h"
#include "nlohmann/json.hpp"

namespace sb::testing {
namespace {

using namespace std::chrono_literals;

class OneSchedulerReplica : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto g = g_cluster->StartGateway("gateway-one-replica",
                                     {"--scheduler_address=" + g_cluster->scheduler_address(0)});
    ASSERT_TRUE(g.ok()) << g.status();
    gateway_ = new Cluster::Gateway(*std::move(g));
  }
  static void TearDownTestSuite() {
    delete gateway_;
    gateway_ = nullptr;
  }
  static int port() { return gateway_->http_port; }

  static inline Cluster::Gateway* gateway_ = nullptr;
};

class FairQueueE2eTest : public OneSchedulerReplica {};
class RoutingE2eTest : public OneSchedulerReplica {};

TEST_F(FairQueueE2eTest, ARequestWaitsForTheNextFreeSlotInsteadOfA529) {
  // One sequence at a time, 20 tokens a second: a 10-token reply holds the
  // only slot for about half a second.
  auto worker =
      g_cluster->StartWorker("worker-one-slot", "sim-one-slot",
                             {"--max_num_seqs=1", "--max_waiting=0", "--tokens_per_second=20"});
  ASSERT_TRUE(worker.ok()) << worker.status();
  const int sched_metrics = g_cluster->scheduler_metrics_port(0);
  const std::string queued = R"(sb_scheduler_generate_total{outcome="queued"})";
  const double queued_before = MetricValue(sched_metrics, queued);

  std::atomic<bool> first_started{false};
  std::thread first([&] {
    auto r = http::FetchStreaming(
        {.port = port(),
         .method = "POST",
         .target = "/v1/messages",
         .headers = {{"x-api-key", g_cluster->api_key()}, {"content-type", "application/json"}},
         .body = MessagesBody("hold the slot briefly", true, 10, "sim-one-slot")},
        [&](std::string_view d) {
          if (d.find("content_block_delta") != std::string_view::npos) first_started = true;
          return true;
        });
    EXPECT_TRUE(r.ok() && r->status == 200);
  });
  for (int i = 0; i < 200 && !first_started; ++i) std::this_thread::sleep_for(10ms);
  ASSERT_TRUE(first_started.load());
  // The slot is taken: this one waits in the fair queue, then runs.
  const auto start = std::chrono::steady_clock::now();
  auto second = Post("/v1/messages", MessagesBody("then me", false, 5, "sim-one-slot"), "", port());
  const auto waited = std::chrono::steady_clock::now() - start;
  first.join();
  EXPECT_EQ(second.status, 200) << second.body;
  EXPECT_LT(waited, 2s) << "within --max_queue_wait_ms";
  EXPECT_GE(MetricValue(sched_metrics, queued), queued_before + 1);
}

// Batch gets only the capacity interactive leaves: with the one slot busy,
// an interactive request that arrives after a batch one still runs first.
TEST_F(FairQueueE2eTest, InteractiveGoesBeforeBatchAndABadPriorityIs400) {
  auto worker = g_cluster->StartWorker(
      "worker-prio", "sim-prio", {"--max_num_seqs=1", "--max_waiting=0", "--tokens_per_second=20"});
  ASSERT_TRUE(worker.ok()) << worker.status();
  auto post = [](const std::string& prompt, const std::string& priority) {
    http::Headers headers = {{"x-api-key", g_cluster->api_key()},
                             {"content-type", "application/json"}};
    if (!priority.empty()) headers.push_back({"x-switchboard-priority", priority});
    auto r = http::Fetch({.port = port(),
                          .method = "POST",
                          .target = "/v1/messages",
                          .headers = headers,
                          .body = MessagesBody(prompt, false, 8, "sim-prio")});
    return r.ok() ? *r : http::Response{};
  };
  auto bad = post("which priority", "urgent");
  ExpectError(bad, 400, "invalid_request_error");
  EXPECT_NE(bad.body.find("x-switchboard-priority"), std::string::npos) << bad.body;

  std::atomic<bool> holding{false};
  std::thread holder([&] {
    auto r = http::FetchStreaming(
        {.port = port(),
         .method = "POST",
         .target = "/v1/messages",
         .headers = {{"x-api-key", g_cluster->api_key()}, {"content-type", "application/json"}},
         .body = MessagesBody("hold the slot", true, 20, "sim-prio")},
        [&](std::string_view d) {
          if (d.find("content_block_delta") != std::string_view::npos) holding = true;
          return true;
        });
    EXPECT_TRUE(r.ok() && r->status == 200);
  });
  for (int i = 0; i < 200 && !holding; ++i) std::this_thread::sleep_for(10ms);
  ASSERT_TRUE(holding.load());
  std::atomic<int> order{0};
  int batch_done = 0, interactive_done = 0;
  std::thread batch([&] {
    EXPECT_EQ(post("batch job", "batch").status, 200);
    batch_done = ++order;
  });
  std::this_thread::sleep_for(100ms);  // the batch request is queued first
  std::thread interactive([&] {
    EXPECT_EQ(post("a person waiting", "").status, 200);
    interactive_done = ++order;
  });
  holder.join();
  batch.join();
  interactive.join();
  EXPECT_EQ(interactive_done, 1) << "interactive ran before the batch request queued earlier";
  EXPECT_EQ(batch_done, 2);
}

// Requests sharing a long system prompt land on the worker that has it
// cached (the prefix hashes workers report with their heartbeats).
TEST_F(RoutingE2eTest, ASharedSystemPromptLandsOnTheWorkerThatHasItCached) {
  auto a = g_cluster->StartWorker("worker-aff-a", "sim-affinity", {"--tokens_per_second=200"});
  auto b = g_cluster->StartWorker("worker-aff-b", "sim-affinity", {"--tokens_per_second=200"});
  ASSERT_TRUE(a.ok() && b.ok());
  std::string system;
  for (int i = 0; i < 600; ++i) system += "rule" + std::to_string(i % 97) + " ";
  auto body = [&](const std::string& question) {
    return nlohmann::json({{"model", "sim-affinity"},
                           {"max_tokens", 5},
                           {"system", system},
                           {"messages", {{{"role", "user"}, {"content", question}}}}})
        .dump();
  };
  const std::string served = "sb_worker_requests_total";
  // Equal load ties go to worker-aff-a; so the prefix is first served by b
  // while a is busy with something else, and then only the cached prefix
  // can draw the next requests to b.
  std::atomic<bool> busy{false}, release{false};
  std::thread elsewhere([&] {
    auto r = http::FetchStreaming(
        {.port = port(),
         .method = "POST",
         .target = "/v1/messages",
         .headers = {{"x-api-key", g_cluster->api_key()}, {"content-type", "application/json"}},
         .body = MessagesBody("keep a busy", true, 400, "sim-affinity")},
        [&](std::string_view d) {
          if (d.find("content_block_delta") != std::string_view::npos) busy = true;
          return !release.load();
        });
  });
  for (int i = 0; i < 200 && !busy; ++i) std::this_thread::sleep_for(10ms);
  ASSERT_TRUE(busy.load());
  ASSERT_EQ(MetricValue(a->metrics_port, served), 1) << "ties go to worker-aff-a";
  ASSERT_EQ(Post("/v1/messages", body("first"), "", port()).status, 200);
  ASSERT_EQ(MetricValue(b->metrics_port, served), 1) << "a was busy: the prefix went to b";
  release = true;
  elsewhere.join();
  std::this_thread::sleep_for(1500ms);  // heartbeats: a is idle again, b reports the prefix
  for (int i = 0; i < 4; ++i) {
    ASSERT_EQ(Post("/v1/messages", body("question " + std::to_string(i)), "", port()).status, 200);
  }
  EXPECT_EQ(MetricValue(b->metrics_port, served), 5)
      << "every request followed the cached prefix to b (a tie would have gone to a)";
  EXPECT_EQ(MetricValue(a->metrics_port, served), 1);
}

}  // namespace
}  // namespace sb::testing
