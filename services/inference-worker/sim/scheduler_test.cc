// The vLLM machinery, on the virtual clock: chunked prefill, preemption by
// recomputation, prefix caching, block accounting, determinism.
#include <map>
#include <random>

#include "gtest/gtest.h"
#include "inference-worker/sim/sim_testing.h"
#include "inference-worker/sim_engine.h"

namespace sb::worker::sim {
namespace {

using testing::Joined;
using testing::Recorder;
using testing::Req;
using testing::RunUntilIdle;
using testing::Words;

std::string FullReply(const EngineRequest& r) {
  return Joined(SimulatedEngine::ReplyTokens(r.model, r.Flatten()));
}

TEST(SchedulerTest, DecodeStepOfEightBAtBatchOneTakes5To7Ms) {
  SimulatedEngine e({}, false);
  ASSERT_TRUE(e.Submit(Req(1000, Words(500)), std::make_shared<Recorder>()).ok());
  const StepResult prefill = e.Step();
  EXPECT_EQ(prefill.prefill_tokens, 502);  // "user", ":" and the words
  const StepResult decode = e.Step();
  ASSERT_EQ(decode.decode_tokens, 1);
  EXPECT_GE(absl::ToDoubleMilliseconds(decode.duration), 5.0);
  EXPECT_LE(absl::ToDoubleMilliseconds(decode.duration), 7.0);
  EXPECT_EQ(e.Now(), decode.start + decode.duration) << "virtual time moved by the step";
}

// An observer whose token deliveries take `cost` of the clock's time, as
// writing to clients does on the real clock.
class SlowObserver : public TokenObserver {
 public:
  SlowObserver(StepClock& clock, absl::Duration cost) : clock_(clock), cost_(cost) {}
  void OnToken(std::string_view, int) override { clock_.Sleep(cost_); }
  void OnFinished(const FinishInfo&) override {}

 private:
  StepClock& clock_;
  absl::Duration cost_;
};

// Delivering a step's tokens overlaps the next step, as an engine's output
// processing overlaps the GPU's next step: a step starts where the last one
// ended, not after its deliveries, unless they took longer than the step
// itself. A replica that went idle starts its next step when work comes.
TEST(SchedulerTest, DeliveringTokensOverlapsTheNextStep) {
  for (const absl::Duration delivery : {absl::Milliseconds(4), absl::Milliseconds(15)}) {
    VirtualClock clock;
    auto deployment = DeploymentFor("sim-small");
    ASSERT_TRUE(deployment.ok());
    CostModel cost(*std::move(deployment));
    Replica replica(std::move(cost), 1000, {.min_step_time = absl::Milliseconds(10)}, clock);
    const EngineRequest r = Req(6);
    ASSERT_TRUE(replica
                    .Submit(r, std::make_shared<SlowObserver>(clock, delivery), r.Flatten(),
                            SimulatedEngine::ReplyTokens(r.model, r.Flatten()))
                    .ok());
    const absl::Time t0 = clock.Now();
    std::vector<StepResult> steps;
    while (replica.HasWork()) steps.push_back(replica.RunStep());
    ASSERT_EQ(steps.size(), 6u);
    EXPECT_EQ(steps[0].start, t0);
    for (size_t i = 1; i < steps.size(); ++i) {
      const absl::Time last_end = steps[i - 1].start + steps[i - 1].duration;
      ASSERT_EQ(steps[i].duration, absl::Milliseconds(10));
      if (delivery < absl::Milliseconds(10)) {
        EXPECT_EQ(steps[i].start, last_end) << "step " << i;
      } else {
        // Deliveries longer than a step: it ends as they do.
        EXPECT_EQ(steps[i].start + steps[i].duration, last_end + delivery) << "step " << i;
      }
    }
    // Idle, then new work: the step starts now, not in the past.
    clock.Sleep(absl::Seconds(1));
    const absl::Time t1 = clock.Now();
    ASSERT_TRUE(replica
                    .Submit(r, std::make_shared<SlowObserver>(clock, delivery), r.Flatten(),
                            SimulatedEngine::ReplyTokens(r.model, r.Flatten()))
                    .ok());
    EXPECT_EQ(replica.RunStep().start, t1);
  }
}

TEST(SchedulerTest, DecodesGoFirstAndALongPromptIsChunkedUnderTheBudget) {
  SimulatedEngine e({.max_num_batched_tokens = 64}, false);
  ASSERT_TRUE(e.Submit(Req(1000, "a", "", 1), std::make_shared<Recorder>()).ok());
  ASSERT_TRUE(e.Submit(Req(1000, "b", "", 2), std::make_shared<Recorder>()).ok());
  e.Step();  // both prefilled, first tokens out
  auto longer = std::make_shared<Recorder>();
  const EngineRequest big = Req(1000, Words(300), "", 3);
  const int prompt = CountWordTokens(big.Flatten());
  ASSERT_TRUE(e.Submit(big, longer).ok());
  int prefilled = 0;
  int steps = 0;
  while (prefilled < prompt) {
    const StepResult r = e.Step();
    ++steps;
    ASSERT_EQ(r.scheduled.size(), 3u);
    EXPECT_EQ(r.scheduled[0].id, 1u);
    EXPECT_TRUE(r.scheduled[0].decode);
    EXPECT_EQ(r.scheduled[1].id, 2u);
    EXPECT_TRUE(r.scheduled[1].decode);
    EXPECT_EQ(r.scheduled[2].id, 3u);
    EXPECT_FALSE(r.scheduled[2].decode);
    EXPECT_EQ(r.scheduled[2].context, prefilled);
    EXPECT_EQ(r.scheduled[2].tokens, std::min(62, prompt - prefilled)) << "the budget left";
    EXPECT_LE(r.prefill_tokens + r.decode_tokens, 64);
    prefilled += r.scheduled[2].tokens;
    EXPECT_EQ(longer->pieces.empty(), prefilled < prompt) << "first token once all is in";
  }
  EXPECT_EQ(steps, (prompt + 61) / 62);
}

TEST(SchedulerTest, PreemptsLowestPriorityThenLatestAndRecomputesSilently) {
  // 12 blocks of 16 tokens: three 60-token prompts growing to ~110 tokens
  // each cannot all fit.
  SimulatedEngine e({.kv_cache_blocks = 12, .enable_prefix_caching = false}, false);
  std::map<uint64_t, std::shared_ptr<Recorder>> obs;
  std::map<uint64_t, EngineRequest> reqs;
  auto submit = [&](uint64_t id, int priority) {
    EngineRequest r = Req(1000, Words(58, "p" + std::to_string(id)), "", id);
    r.priority = priority;
    obs[id] = std::make_shared<Recorder>();
    reqs[id] = r;
    ASSERT_TRUE(e.Submit(r, obs[id]).ok());
  };
  submit(1, 0);
  submit(2, 5);
  submit(3, 0);
  std::vector<uint64_t> preempted;
  while (e.HasWork()) {
    const StepResult r = e.Step();
    preempted.insert(preempted.end(), r.preempted.begin(), r.preempted.end());
  }
  ASSERT_FALSE(preempted.empty());
  EXPECT_EQ(preempted.front(), 3u) << "lowest priority, latest arrival";
  EXPECT_EQ(std::count(preempted.begin(), preempted.end(), 2u), 0) << "the high priority stays";
  EXPECT_GT(e.replica("sim-small")->Stats().preemptions, 0);
  for (auto& [id, o] : obs) {
    ASSERT_TRUE(o->finished);
    EXPECT_EQ(o->info.stop_reason, "end_turn");
    EXPECT_EQ(o->Text(), FullReply(reqs[id])) << "no token repeated after recomputation";
    EXPECT_EQ(o->token_calls, o->info.output_tokens);
  }
  const auto st = e.replica("sim-small")->Stats();
  EXPECT_EQ(st.blocks_free, st.blocks_total);
}

// vLLM's priority policy: a full batch makes room for a higher priority.
TEST(SchedulerTest, AFullBatchPreemptsItsLowestPriorityForAHigherOneWaiting) {
  SimulatedEngine e({.max_num_seqs = 2, .enable_prefix_caching = false}, false);
  std::map<uint64_t, std::shared_ptr<Recorder>> obs;
  std::map<uint64_t, EngineRequest> reqs;
  auto submit = [&](uint64_t id, int priority) {
    EngineRequest r = Req(1000, Words(20, "p" + std::to_string(id)), "", id);
    r.priority = priority;
    obs[id] = std::make_shared<Recorder>();
    reqs[id] = r;
    ASSERT_TRUE(e.Submit(r, obs[id]).ok());
  };
  submit(1, 1);
  submit(2, 1);
  for (int i = 0; i < 3; ++i) e.Step();  // both running, decoding
  submit(3, 1);                          // same priority: waits
  e.Step();
  EXPECT_TRUE(obs[3]->pieces.empty());
  submit(4, 2);
  std::vector<uint64_t> preempted;
  for (int i = 0; i < 2; ++i) {
    const StepResult r = e.Step();
    preempted.insert(preempted.end(), r.preempted.begin(), r.preempted.end());
  }
  EXPECT_EQ(preempted, (std::vector<uint64_t>{2})) << "the latest of the lowest priority";
  EXPECT_FALSE(obs[4]->pieces.empty()) << "the higher priority started at once";
  EXPECT_TRUE(obs[3]->pieces.empty()) << "an equal priority never preempts";
  RunUntilIdle(e);
  for (auto& [id, o] : obs) {
    ASSERT_TRUE(o->finished);
    EXPECT_EQ(o->Text(), FullReply(reqs[id])) << "no token repeated after recomputation";
  }
  const auto st = e.replica("sim-small")->Stats();
  EXPECT_EQ(st.blocks_free, st.blocks_total);
}

TEST(SchedulerTest, ASharedSystemPromptMakesTheSecondRequestsFirstTokenSeveralTimesSooner) {
  SimulatedEngine e({}, false);
  const std::string system = Words(2000, "sys");
  auto& hits = metrics::Default().GetCounter("vllm:prefix_cache_hits_total", "",
                                             {{"model_name", "sim-small"}});
  auto first = std::make_shared<Recorder>(&e);
  absl::Time sent = e.Now();
  ASSERT_TRUE(e.Submit(Req(1000, "what is a fair queue", system), first).ok());
  RunUntilIdle(e);
  const absl::Duration cold = first->first_token_at - sent;

  const double hits_before = hits.Value();
  auto second = std::make_shared<Recorder>(&e);
  sent = e.Now();
  ASSERT_TRUE(e.Submit(Req(1000, "how do pages work", system), second).ok());
  RunUntilIdle(e);
  const absl::Duration warm = second->first_token_at - sent;
  EXPECT_GE(hits.Value() - hits_before, 1984) << "the system prompt's full blocks";
  EXPECT_GT(cold, 4 * warm) << "cold " << cold << " warm " << warm;
  EXPECT_LT(warm, absl::Milliseconds(10));
}

TEST(SchedulerTest, TheLeastRecentlyUsedPrefixIsEvictedFirst) {
  // a and b take 9 blocks each (8 full, cached); c needs 13, so 9 cached
  // blocks go: all of b, the least recently used, and a's last one (a
  // sequence's tail is evicted before its head).
  SimulatedEngine e({.kv_cache_blocks = 20}, false);
  const EngineRequest a = Req(1, "x", Words(128, "a"));
  const EngineRequest b = Req(1, "x", Words(128, "b"));
  const EngineRequest c = Req(1, "x", Words(192, "c"));
  for (const auto& r : {a, b, a, c}) {
    ASSERT_TRUE(e.Submit(r, std::make_shared<Recorder>()).ok());
    RunUntilIdle(e);
  }
  const std::vector<uint64_t> cached = e.Load().cached_prefixes;
  auto has = [&](const EngineRequest& r) {
    const uint64_t h = PrefixBlockHashes(r.Flatten()).front();
    return std::find(cached.begin(), cached.end(), h) != cached.end();
  };
  EXPECT_TRUE(has(c));
  EXPECT_TRUE(has(a)) << "used again after b";
  EXPECT_FALSE(has(b)) << "least recently used: evicted for c";
  EXPECT_EQ(cached.front(), PrefixBlockHashes(c.Flatten()).back()) << "most recent first";
}

TEST(SchedulerTest, PartialBlocksWasteUnderFourPercent) {
  SimulatedEngine e({.enable_prefix_caching = false}, false);
  std::mt19937 rng(7);
  for (int i = 0; i < 200; ++i) {
    const int n = std::uniform_int_distribution<int>(500, 1500)(rng);
    ASSERT_TRUE(
        e.Submit(Req(1000, Words(n, "r" + std::to_string(i))), std::make_shared<Recorder>()).ok());
  }
  int samples = 0;
  while (e.HasWork()) {
    e.Step();
    const ReplicaStats st = e.replica("sim-small")->Stats();
    if (st.blocks_in_use == 0) continue;
    const double slots = static_cast<double>(st.blocks_in_use) * kBlockSize;
    EXPECT_LT((slots - st.tokens_stored) / slots, 0.04);
    EXPECT_LE(slots - st.tokens_stored, st.running * (kBlockSize - 1));
    ++samples;
  }
  EXPECT_GT(samples, 20);
}

// A random workload; returns a digest of its timeline.
std::string RunWorkload(uint32_t seed, int requests, SimOptions options, int64_t* preemptions,
                        absl::Duration* simulated) {
  SimulatedEngine e(std::move(options), false);
  std::mt19937 rng(seed);
  std::vector<std::shared_ptr<Recorder>> obs;
  std::vector<EngineRequest> reqs;
  std::string timeline;
  int submitted = 0;
  int finished_checked = 0;
  std::vector<uint64_t> live;
  auto check_finished = [&] {
    for (; finished_checked < static_cast<int>(obs.size()) && obs[finished_checked]->finished;
         ++finished_checked) {
    }
  };
  while (submitted < requests || e.HasWork()) {
    while (submitted < requests && e.waiting() < 64) {
      const uint64_t id = static_cast<uint64_t>(submitted) + 1;
      // A few shared system prompts, so the prefix cache is exercised.
      const int sys = std::uniform_int_distribution<int>(0, 5)(rng);
      const int len = std::uniform_int_distribution<int>(1, 300)(rng);
      EngineRequest r = Req(std::uniform_int_distribution<int>(1, 60)(rng),
                            Words(len, "u" + std::to_string(id % 997) + "_"),
                            sys == 0 ? "" : Words(100 * sys, "s" + std::to_string(sys)), id);
      r.priority = std::uniform_int_distribution<int>(0, 2)(rng);
      obs.push_back(std::make_shared<Recorder>());
      reqs.push_back(r);
      const absl::Status s = e.Submit(r, obs.back());
      if (!s.ok()) {
        ADD_FAILURE() << s;
        return "";
      }
      live.push_back(id);
      ++submitted;
    }
    if (std::uniform_int_distribution<int>(0, 9)(rng) == 0 && !live.empty()) {
      const size_t k = std::uniform_int_distribution<size_t>(0, live.size() - 1)(rng);
      e.Cancel(live[k]);
      live[k] = live.back();
      live.pop_back();
    }
    const StepResult r = e.Step();
    timeline += std::to_string(absl::ToInt64Nanoseconds(r.duration)) + ":" +
                std::to_string(r.tokens_emitted) + ":" + std::to_string(r.preempted.size()) + ";";
  }
  check_finished();
  const ReplicaStats st = e.replica("sim-small")->Stats();
  EXPECT_EQ(st.blocks_free, st.blocks_total) << "a block leaked";
  EXPECT_EQ(st.running + st.waiting, 0);
  for (size_t i = 0; i < obs.size(); ++i) {
    const Recorder& o = *obs[i];
    EXPECT_TRUE(o.finished);
    EXPECT_EQ(o.token_calls, o.info.output_tokens);
    if (o.info.stop_reason != "cancelled") {
      EXPECT_EQ(o.Text(), FullReply(reqs[i]).substr(0, o.Text().size()));
      EXPECT_EQ(o.info.output_tokens, CountWordTokens(o.Text()));
    }
    if (::testing::Test::HasFailure()) return "";
  }
  *preemptions = st.preemptions;
  *simulated = e.Now() - absl::UnixEpoch();
  return timeline;
}

TEST(SchedulerTest, NoBlockLeaksAfterAHundredThousandRandomRequests) {
  int64_t preemptions = 0;
  absl::Duration simulated;
  const std::string timeline = RunWorkload(1, 100'000, {.kv_cache_blocks = 400, .max_num_seqs = 64},
                                           &preemptions, &simulated);
  ASSERT_FALSE(timeline.empty());
  EXPECT_GT(preemptions, 100);
  std::printf("simulated %s, %lld preemptions\n", absl::FormatDuration(simulated).c_str(),
              static_cast<long long>(preemptions));
}

TEST(SchedulerTest, TheSameWorkloadGivesTheSameTimeline) {
  int64_t p1 = 0, p2 = 0;
  absl::Duration s1, s2;
  const SimOptions options{.kv_cache_blocks = 300, .max_num_seqs = 32};
  const std::string a = RunWorkload(42, 2000, options, &p1, &s1);
  const std::string b = RunWorkload(42, 2000, options, &p2, &s2);
  ASSERT_FALSE(a.empty());
  EXPECT_EQ(a, b);
  EXPECT_EQ(s1, s2);
  EXPECT_EQ(p1, p2);
  EXPECT_NE(a, RunWorkload(43, 2000, options, &p2, &s2));
}

TEST(SchedulerTest, TwoModelsStepOnOneVirtualClockInTimeOrder) {
  SimulatedEngine e({.models = {"sim-small", "sim-large"}}, false);
  auto small = std::make_shared<Recorder>(&e);
  auto large = std::make_shared<Recorder>(&e);
  EngineRequest r = Req(1000, "same");
  ASSERT_TRUE(e.Submit(r, small).ok());
  r.model = "sim-large";
  ASSERT_TRUE(e.Submit(r, large).ok());
  absl::Time last = e.Now();
  int small_steps = 0, large_steps = 0;
  while (e.HasWork()) {
    const StepResult s = e.Step();
    EXPECT_GE(s.start + s.duration, last);
    last = s.start + s.duration;
    (s.model == "sim-small" ? small_steps : large_steps)++;
  }
  EXPECT_LT(small->finished_at, large->finished_at) << "the 8B model is faster";
  EXPECT_GT(small_steps, 0);
  EXPECT_GT(large_steps, 0);
}

}  // namespace
}  // namespace sb::worker::sim
