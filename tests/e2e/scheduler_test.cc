// The tenant scheduler's fair queue end to end: when every worker of a model
// is full, a request waits for the next free slot (instead of an immediate
// 529), and one that would wait too long is refused with 529.
#include <atomic>
#include <thread>

#include "e2e/e2e_helpers.h"
#include "gtest/gtest.h"
#include "http/http_client.h"

namespace sb::testing {
namespace {

using namespace std::chrono_literals;

TEST(FairQueueE2eTest, ARequestWaitsForTheNextFreeSlotInsteadOfA529) {
  // One sequence at a time, 20 tokens a second: a 10-token reply holds the
  // only slot for about half a second.
  auto worker =
      g_cluster->StartWorker("worker-one-slot", "sim-one-slot",
                             {"--max_num_seqs=1", "--max_waiting=0", "--tokens_per_second=20"});
  ASSERT_TRUE(worker.ok()) << worker.status();
  const int sched_metrics = g_cluster->metrics_port("tenant-scheduler");
  const std::string queued = R"(sb_scheduler_generate_total{outcome="queued"})";
  const double queued_before = MetricValue(sched_metrics, queued);

  std::atomic<bool> first_started{false};
  std::thread first([&] {
    auto r = http::FetchStreaming(
        {.port = g_cluster->http_port(),
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
  auto second = Post("/v1/messages", MessagesBody("then me", false, 5, "sim-one-slot"));
  const auto waited = std::chrono::steady_clock::now() - start;
  first.join();
  EXPECT_EQ(second.status, 200) << second.body;
  EXPECT_LT(waited, 2s) << "within --max_queue_wait_ms";
  EXPECT_GE(MetricValue(sched_metrics, queued), queued_before + 1);
}

}  // namespace
}  // namespace sb::testing
