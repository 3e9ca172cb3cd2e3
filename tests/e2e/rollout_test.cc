// A rolling update on loopback (issue 12): a gateway replica gets SIGTERM
// while clients keep it busy with whole replies and streams; a stand-in for
// a load balancer moves them to a second replica once the first's /readyz
// says 503. Not one request may fail, and the first must exit cleanly.
#include <atomic>
#include <chrono>
#include <cstdio>
#include <thread>
#include <vector>

#include "e2e/e2e_helpers.h"
#include "gtest/gtest.h"

namespace sb::testing {
namespace {

using namespace std::chrono_literals;

TEST(GracefulRolloutTest, ASigtermedGatewayUnderLoadFailsNothingWhileAnotherTakesOver) {
  // A keeps its port open 1 s after turning not-ready (more than the
  // balancer's 500 ms probe period), then until what it holds is answered.
  // With --drain_delay_seconds=0 this fails: A closes between two requests
  // while the balancer still sends to it.
  auto a = g_cluster->StartGateway("rollout-a", {"--drain_delay_seconds=1", "--drain_seconds=5"});
  ASSERT_TRUE(a.ok()) << a.status();
  auto b = g_cluster->StartGateway("rollout-b");
  ASSERT_TRUE(b.ok()) << b.status();
  const std::string key = KeyOfNewOrg("rollout");

  // The load balancer: sends to A while its readiness probe, every 500 ms,
  // passes (Kubernetes takes seconds to drop an endpoint): the gateway's
  // --drain_delay_seconds must cover that.
  std::atomic<bool> a_ready{true};
  std::atomic<int> probes{0};
  std::atomic<bool> stop{false};
  std::thread probe([&] {
    while (!stop.load()) {
      auto r = http::Fetch({.port = a->metrics_port,
                            .target = "/readyz",
                            .timeout = std::chrono::milliseconds(200)});
      if (!r.ok() || r->status != 200) a_ready = false;
      ++probes;
      std::this_thread::sleep_for(500ms);
    }
  });
  std::atomic<int> served_a{0}, served_b{0}, failed{0};
  std::vector<std::thread> clients;
  // Light, bursty load: moments with nothing in flight come often, so the
  // port must stay open for the balancer's sake, not only for the requests.
  for (int t = 0; t < 2; ++t) {
    clients.emplace_back([&, t] {
      for (int i = 0; !stop.load(); ++i) {
        const bool to_a = a_ready.load();
        const bool stream = (t + i) % 2 == 0;
        auto r = Post("/v1/messages", MessagesBody("roll me over", stream, 20), key,
                      to_a ? a->http_port : b->http_port);
        const bool complete =
            r.status == 200 && (!stream || r.body.find("event: message_stop") != std::string::npos);
        if (!complete) {
          ++failed;
          ADD_FAILURE() << (to_a ? "A" : "B") << " answered " << r.status << ": "
                        << r.body.substr(0, 300);
        } else {
          ++(to_a ? served_a : served_b);
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(100 + 37 * t));
      }
    });
  }
  std::this_thread::sleep_for(2s);
  // Just after a probe: the balancer learns of the drain ~500 ms late.
  for (const int seen = probes.load(); probes.load() == seen;) std::this_thread::sleep_for(1ms);
  const int before = served_a.load();
  const auto sigterm = std::chrono::steady_clock::now();
  const int exit_code = a->process.Stop(15000);  // SIGTERM, and wait for the exit
  const auto took = std::chrono::steady_clock::now() - sigterm;
  std::this_thread::sleep_for(1s);
  stop = true;
  for (auto& c : clients) c.join();
  probe.join();
  std::printf(
      "[ figure   ] SIGTERM under load: A served %d (%d after the signal), B %d, failed %d; A "
      "exited %d after %lld ms\n",
      served_a.load(), served_a.load() - before, served_b.load(), failed.load(), exit_code,
      static_cast<long long>(std::chrono::duration_cast<std::chrono::milliseconds>(took).count()));
  EXPECT_EQ(failed.load(), 0);
  EXPECT_EQ(exit_code, 0);
  EXPECT_GT(before, 0);
  EXPECT_GT(served_b.load(), 0);
}

}  // namespace
}  // namespace sb::testing
