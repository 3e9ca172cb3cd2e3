#include "tenant-scheduler/fair_queue.h"

#include <cmath>
#include <cstdio>
#include <map>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "tenant-scheduler/wait_estimator.h"

namespace sb::scheduler {
namespace {

const absl::Time kT0 = absl::FromUnixSeconds(1'800'000'000);

QueuedRequest Req(uint64_t id, const std::string& org, int input = 10, int max_tokens = 10,
                  Priority p = Priority::kInteractive) {
  return {.id = id,
          .org = org,
          .priority = p,
          .input_tokens = input,
          .max_tokens = max_tokens,
          .enqueued = kT0};
}

TEST(FairQueueTest, TheOrgWithTheSmallestCounterGoesNextInArrivalOrder) {
  FairQueue q;
  ASSERT_TRUE(q.Push(Req(1, "a")).ok());
  ASSERT_TRUE(q.Push(Req(2, "a")).ok());
  ASSERT_TRUE(q.Push(Req(3, "b")).ok());
  // Both at 0: the most recently backlogged (b) first; then a, in its
  // arrival order.
  EXPECT_EQ(q.Pop()->id, 3u);
  EXPECT_EQ(q.Pop()->id, 1u);
  EXPECT_EQ(q.Pop()->id, 2u);
  EXPECT_FALSE(q.Pop());
  EXPECT_DOUBLE_EQ(q.counter("a", Priority::kInteractive), 20);
}

// A newly backlogged org is lifted to the smallest counter, and goes ahead
// of the orgs already at it: it has waited for nothing so far.
TEST(FairQueueTest, ANewcomerAtTheSmallestCounterGoesFirst) {
  FairQueue q;
  for (uint64_t id = 1; id <= 4; ++id) ASSERT_TRUE(q.Push(Req(id, "flood")).ok());
  EXPECT_EQ(q.Pop()->org, "flood");  // flood at 10
  ASSERT_TRUE(q.Push(Req(5, "light")).ok());
  EXPECT_DOUBLE_EQ(q.counter("light", Priority::kInteractive), 10);
  EXPECT_EQ(q.Pop()->id, 5u);
}

TEST(FairQueueTest, OutputIsChargedAtItsWeightAndDividedByTheOrgs) {
  FairQueue q({.w_in = 1, .w_out = 2});
  q.SetWeight("heavy", 4);
  ASSERT_TRUE(q.Push(Req(1, "heavy", 8)).ok());
  ASSERT_TRUE(q.Pop());
  q.ChargeOutput("heavy", Priority::kInteractive, 10);
  EXPECT_DOUBLE_EQ(q.counter("heavy", Priority::kInteractive), (8 + 2 * 10) / 4.0);
}

// Idle time banks no credit: an org that comes back is lifted to the
// smallest counter among the backlogged, not left far below them.
TEST(FairQueueTest, AnOrgThatComesBackIsLiftedToTheBackloggedMinimum) {
  FairQueue q;
  for (uint64_t i = 0; i < 50; ++i) ASSERT_TRUE(q.Push(Req(i, "busy", 10)).ok());
  for (int i = 0; i < 40; ++i) ASSERT_TRUE(q.Pop());
  ASSERT_DOUBLE_EQ(q.counter("busy", Priority::kInteractive), 400);
  ASSERT_TRUE(q.Push(Req(100, "idle", 10)).ok());
  EXPECT_DOUBLE_EQ(q.counter("idle", Priority::kInteractive), 400);
  // So it alternates with busy instead of taking the next 40 slots.
  int idle_first = 0;
  for (int i = 0; i < 2; ++i) idle_first += q.Pop()->org == "idle";
  EXPECT_EQ(idle_first, 1);
}

TEST(FairQueueTest, WhenNobodyIsBackloggedTheLiftIsToTheLastServed) {
  FairQueue q;
  ASSERT_TRUE(q.Push(Req(1, "a", 100)).ok());
  ASSERT_TRUE(q.Pop());
  ASSERT_TRUE(q.Push(Req(2, "b", 5)).ok());
  EXPECT_DOUBLE_EQ(q.counter("b", Priority::kInteractive), 100);
}

// Who may take a kept slot: an org holding none; not an org alone (the
// slots are kept from it); and otherwise one that would hold no more than
// its weighted share of the slots among the active orgs.
TEST(FairQueueTest, UnderShareCountsSlotsAgainstTheActiveOrgsWeights) {
  FairQueue q;
  EXPECT_TRUE(q.UnderShare("light", 16)) << "holding nothing";
  for (uint64_t i = 0; i < 20; ++i) ASSERT_TRUE(q.Push(Req(i, "flood")).ok());
  for (int i = 0; i < 15; ++i) ASSERT_EQ(q.Pop()->org, "flood");
  EXPECT_FALSE(q.UnderShare("flood", 16)) << "alone";
  q.AdmitDirect("light", Priority::kInteractive, 10);
  // Two active orgs of weight 1: a share of 8 slots each.
  EXPECT_TRUE(q.UnderShare("light", 16));
  EXPECT_FALSE(q.UnderShare("flood", 16));
  for (int i = 0; i < 6; ++i) q.AdmitDirect("light", Priority::kBatch, 10);  // any priority
  EXPECT_TRUE(q.UnderShare("light", 16)) << "7 held, the 8th is its share";
  q.AdmitDirect("light", Priority::kInteractive, 10);
  EXPECT_FALSE(q.UnderShare("light", 16)) << "8 held";
  // Weights move the share: 3 of 4 of the slots are the flood's now.
  q.SetWeight("flood", 3);
  EXPECT_FALSE(q.UnderShare("light", 16));
  EXPECT_FALSE(q.UnderShare("light", 32)) << "a share of 8 of 32";
  EXPECT_TRUE(q.UnderShare("light", 40)) << "a share of 10 of 40";
  // Its requests end: no longer active, it holds nothing.
  for (int i = 0; i < 2; ++i) q.Finished("light", Priority::kInteractive);
  for (int i = 0; i < 6; ++i) q.Finished("light", Priority::kBatch);
  EXPECT_EQ(q.in_service("light", Priority::kInteractive), 0);
  EXPECT_FALSE(q.UnderShare("flood", 16)) << "alone again";
}

// An org under its share of the slots whose running requests were charged
// past the flood's counter comes back at the backlogged minimum, ahead of
// the flood, instead of waiting until the flood is charged as much.
TEST(FairQueueTest, AnOrgUnderItsShareComesBackAtTheMinimumEvenFromAbove) {
  for (const int capacity : {0, 16}) {
    FairQueue q;
    q.SetCapacity(capacity);
    for (uint64_t i = 0; i < 40; ++i) ASSERT_TRUE(q.Push(Req(i, "flood", 10)).ok());
    for (int i = 0; i < 14; ++i) ASSERT_EQ(q.Pop()->org, "flood");  // counter 140
    ASSERT_TRUE(q.Push(Req(100, "light", 300)).ok());
    ASSERT_EQ(q.Pop()->id, 100u);  // the newcomer first; charged 300 from 140
    ASSERT_DOUBLE_EQ(q.counter("light", Priority::kInteractive), 440);
    ASSERT_TRUE(q.Push(Req(101, "light", 300)).ok());
    if (capacity == 0) {
      // Capacity unknown: lifted only, so behind the flood's 30 tokens.
      EXPECT_DOUBLE_EQ(q.counter("light", Priority::kInteractive), 440);
      EXPECT_EQ(q.Pop()->org, "flood");
    } else {
      EXPECT_DOUBLE_EQ(q.counter("light", Priority::kInteractive), 140);
      EXPECT_EQ(q.Pop()->id, 101u);
    }
  }
}

TEST(FairQueueTest, BatchGetsOnlyWhatInteractiveLeaves) {
  FairQueue q;
  ASSERT_TRUE(q.Push(Req(1, "a", 10, 10, Priority::kBatch)).ok());
  ASSERT_TRUE(q.Push(Req(2, "b", 10, 10, Priority::kInteractive)).ok());
  ASSERT_TRUE(q.Push(Req(3, "b", 10, 10, Priority::kInteractive)).ok());
  EXPECT_EQ(q.Pop()->id, 2u);
  EXPECT_EQ(q.Pop()->id, 3u);
  EXPECT_EQ(q.Pop()->id, 1u);
  // Counters are per priority.
  EXPECT_DOUBLE_EQ(q.counter("a", Priority::kInteractive), 0);
  EXPECT_DOUBLE_EQ(q.counter("a", Priority::kBatch), 10);
}

TEST(FairQueueTest, AnOrgAtItsConcurrencyCapIsSkippedUntilOneFinishes) {
  FairQueue q;
  q.SetConcurrencyCap("capped", 1);
  ASSERT_TRUE(q.Push(Req(3, "other", 1000)).ok());
  ASSERT_TRUE(q.Push(Req(1, "capped", 1)).ok());
  ASSERT_TRUE(q.Push(Req(2, "capped", 1)).ok());
  EXPECT_EQ(q.Pop()->id, 1u);
  EXPECT_EQ(q.Pop()->id, 3u) << "capped has the smaller counter but no room";
  EXPECT_FALSE(q.Pop());
  q.Finished("capped", Priority::kInteractive);
  EXPECT_EQ(q.Pop()->id, 2u);
}

TEST(FairQueueTest, BoundedRemovableAndNoDuplicates) {
  FairQueue q({.max_queued = 2});
  ASSERT_TRUE(q.Push(Req(1, "a", 3, 7)).ok());
  EXPECT_EQ(q.Push(Req(1, "a")).code(), absl::StatusCode::kInvalidArgument);
  ASSERT_TRUE(q.Push(Req(2, "b")).ok());
  EXPECT_EQ(q.Push(Req(3, "c")).code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(q.queued_tokens(Priority::kInteractive), 3 + 7 + 10 + 10);
  EXPECT_TRUE(q.Remove(1));
  EXPECT_FALSE(q.Remove(1));
  EXPECT_EQ(q.queued(Priority::kInteractive), 1u);
  EXPECT_EQ(q.Pop()->id, 2u);
  EXPECT_FALSE(q.Pop());
}

// A full queue: the org holding the most gives up its newest request to a
// newcomer, and one that already holds the most is refused.
TEST(FairQueueTest, AFullQueueMakesRoomFromItsLongestOrgNotTheNewcomer) {
  FairQueue q({.max_queued = 4});
  for (uint64_t id = 1; id <= 4; ++id) ASSERT_TRUE(q.Push(Req(id, "flood")).ok());
  std::optional<uint64_t> evicted;
  EXPECT_EQ(q.Push(Req(5, "flood"), &evicted).code(), absl::StatusCode::kResourceExhausted);
  EXPECT_FALSE(evicted);
  ASSERT_TRUE(q.Push(Req(6, "light"), &evicted).ok());
  EXPECT_EQ(evicted, 4u) << "the flood's newest";
  EXPECT_EQ(q.queued(Priority::kInteractive), 4u);
  evicted.reset();
  ASSERT_TRUE(q.Push(Req(7, "light"), &evicted).ok());
  EXPECT_EQ(evicted, 3u);
  // Two each now: nobody holds more than the newcomer would.
  evicted.reset();
  EXPECT_EQ(q.Push(Req(8, "light"), &evicted).code(), absl::StatusCode::kResourceExhausted);
  EXPECT_FALSE(evicted);
  // Without a way to report an eviction, a full queue just refuses.
  EXPECT_EQ(q.Push(Req(9, "other")).code(), absl::StatusCode::kResourceExhausted);
}

// The admission estimate counts what goes before a request in the fair
// order: a light org behind a flood waits for about its own share, not for
// the whole backlog.
TEST(FairQueueTest, TokensAheadFollowTheFairOrder) {
  FairQueue q;
  for (uint64_t id = 1; id <= 100; ++id) ASSERT_TRUE(q.Push(Req(id, "flood", 10, 10)).ok());
  EXPECT_EQ(q.TokensAhead("light", Priority::kInteractive, 20), 20 + 20);
  EXPECT_EQ(q.TokensAhead("flood", Priority::kInteractive, 20), 2000 + 20);
  q.SetWeight("light", 4);
  EXPECT_EQ(q.TokensAhead("light", Priority::kInteractive, 20), 20 + 5);
  ASSERT_TRUE(q.Push(Req(101, "batch", 10, 10, Priority::kBatch)).ok());
  EXPECT_EQ(q.TokensAhead("batch", Priority::kBatch, 20), 20 + 20 + 2000);
}

// A deterministic model of a model's capacity: `slots` sequences at once,
// each decoding `tps` tokens a second, on a manual clock in 10 ms ticks.
// Orgs keep `depth` requests queued (always backlogged); requests have
// random input and output lengths. Returns each org's weighted service
// (w_in * input + w_out * output) over `seconds`, and the largest gap seen
// between two orgs' service divided by their weights.
struct Workload {
  std::map<std::string, double> weights;
  std::map<std::string, int> depth;  // requests each keeps queued
  int slots = 8;
  double tps = 50;
  int seconds = 60;
  int max_input = 200;
  int max_output = 100;
};
struct Outcome {
  std::map<std::string, double> service;
  double max_gap = 0;  // max over time of |S_a/w_a - S_b/w_b|
};

Outcome Simulate(const Workload& w, uint32_t seed = 7) {
  FairQueue::Options options{.w_in = 1, .w_out = 2};
  FairQueue q(options);
  for (const auto& [org, weight] : w.weights) q.SetWeight(org, weight);
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> input(1, w.max_input), output(1, w.max_output);
  struct Running {
    QueuedRequest r;
    int output = 0;
    double progress = 0;
  };
  std::vector<Running> running;
  std::map<std::string, int> queued;
  Outcome out;
  uint64_t next_id = 1;
  const double tick = 0.01;
  for (int step = 0; step * tick < w.seconds; ++step) {
    for (const auto& [org, d] : w.depth) {
      while (queued[org] < d) {
        QueuedRequest r = Req(next_id++, org, input(rng), w.max_output);
        EXPECT_TRUE(q.Push(r).ok());
        ++queued[org];
      }
    }
    while (static_cast<int>(running.size()) < w.slots) {
      auto r = q.Pop();
      if (!r) break;
      --queued[r->org];
      out.service[r->org] += options.w_in * r->input_tokens;
      running.push_back({*r, output(rng), 0});
    }
    for (auto it = running.begin(); it != running.end();) {
      const double before = it->progress;
      it->progress = std::min<double>(it->output, it->progress + w.tps * tick);
      const int tokens = static_cast<int>(it->progress) - static_cast<int>(before);
      q.ChargeOutput(it->r.org, it->r.priority, tokens);
      out.service[it->r.org] += options.w_out * tokens;
      if (it->progress >= it->output) {
        q.Finished(it->r.org, it->r.priority);
        it = running.erase(it);
      } else {
        ++it;
      }
    }
    for (const auto& [a, wa] : w.weights) {
      for (const auto& [b, wb] : w.weights) {
        out.max_gap = std::max(out.max_gap, std::abs(out.service[a] / wa - out.service[b] / wb));
      }
    }
  }
  return out;
}

double Share(const Outcome& o, const std::string& org) {
  double total = 0;
  for (const auto& [_, s] : o.service) total += s;
  const double share = o.service.at(org) / total;
  std::printf("[figure] %s: %.1f%% of the weighted service\n", org.c_str(), 100 * share);
  return share;
}

TEST(FairQueueSimulationTest, EqualWeightsShareEqually) {
  const Outcome o = Simulate({.weights = {{"a", 1}, {"b", 1}}, .depth = {{"a", 20}, {"b", 20}}});
  EXPECT_NEAR(Share(o, "a"), 0.5, 0.05);
  EXPECT_NEAR(Share(o, "b"), 0.5, 0.05);
}

TEST(FairQueueSimulationTest, WeightsOneToThreeShareAQuarterAndThreeQuarters) {
  const Outcome o = Simulate({.weights = {{"a", 1}, {"b", 3}}, .depth = {{"a", 20}, {"b", 20}}});
  EXPECT_NEAR(Share(o, "a"), 0.25, 0.05);
  EXPECT_NEAR(Share(o, "b"), 0.75, 0.05);
}

TEST(FairQueueSimulationTest, SendingTenTimesTheRequestsBuysNoMoreThanTheShare) {
  const Outcome o =
      Simulate({.weights = {{"flood", 1}, {"light", 1}}, .depth = {{"flood", 200}, {"light", 20}}});
  EXPECT_LE(Share(o, "flood"), 0.55);
  EXPECT_NEAR(Share(o, "light"), 0.5, 0.05);
}

// The paper's bound on the service gap between two backlogged clients:
// 2 * max(w_in * L_input, w_out * M), plus what is in flight (every slot's
// request can be charged its whole output after the decision).
TEST(FairQueueSimulationTest, TheServiceGapStaysWithinTheBound) {
  for (uint32_t seed : {1u, 2u, 3u}) {
    const Workload w{.weights = {{"a", 1}, {"b", 1}, {"c", 1}},
                     .depth = {{"a", 5}, {"b", 30}, {"c", 60}}};
    const Outcome o = Simulate(w, seed);
    const double bound = 2 * std::max(1.0 * w.max_input, 2.0 * w.max_output) +
                         w.slots * (w.max_input + 2.0 * w.max_output);
    EXPECT_LE(o.max_gap, bound) << "seed " << seed;
    EXPECT_GT(o.max_gap, 0);
  }
}

TEST(FairQueueSimulationTest, TheSameWorkloadGivesTheSameOutcome) {
  const Workload w{.weights = {{"a", 1}, {"b", 2}}, .depth = {{"a", 10}, {"b", 10}}};
  EXPECT_EQ(Simulate(w, 11).service, Simulate(w, 11).service);
}

TEST(WaitEstimatorTest, WaitIsTokensAheadOverTheServedRate) {
  WaitEstimator e(absl::Seconds(10));
  EXPECT_FALSE(e.Wait(1000, kT0)) << "no history: no basis to refuse";
  for (int i = 0; i <= 100; ++i) e.Served(100, kT0 + absl::Milliseconds(100) * i);  // ~1,000/s
  const absl::Time now = kT0 + absl::Seconds(10);
  ASSERT_TRUE(e.Rate(now));
  EXPECT_NEAR(*e.Rate(now), 1000, 60);
  EXPECT_NEAR(absl::ToDoubleSeconds(*e.Wait(5000, now)), 5, 0.3);
  // Nothing served for a whole window: no rate.
  EXPECT_FALSE(e.Rate(now + absl::Seconds(12)));
}

}  // namespace
}  // namespace sb::scheduler
