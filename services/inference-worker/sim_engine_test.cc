// The engine contract the worker and the e2e tests rely on: deterministic
// replies, exact counts, stop sequences, max_tokens, cancel, drain, errors.
#include "inference-worker/sim_engine.h"

#include "gtest/gtest.h"
#include "inference-worker/sim/sim_testing.h"

namespace sb::worker {
namespace {

using sim::testing::Joined;
using sim::testing::Recorder;
using sim::testing::Req;
using sim::testing::RunUntilIdle;

TEST(TokenizerTest, CountsWordsAndPunctuation) {
  EXPECT_EQ(CountWordTokens(""), 0);
  EXPECT_EQ(CountWordTokens("hello"), 1);
  EXPECT_EQ(CountWordTokens("Hello, world!"), 4);
  EXPECT_EQ(CountWordTokens("  a  b\tc\n"), 3);
  EXPECT_EQ(CountWordTokens("caf\xc3\xa9 ok"), 2);
}

TEST(SimEngineTest, DeterministicReplyWithExactCounts) {
  SimulatedEngine e({}, false);
  auto a = std::make_shared<Recorder>();
  auto b = std::make_shared<Recorder>();
  ASSERT_TRUE(e.Submit(Req(1000), a).ok());
  ASSERT_TRUE(e.Submit(Req(1000), b).ok());
  RunUntilIdle(e);
  ASSERT_TRUE(a->finished);
  EXPECT_EQ(a->Text(), b->Text());
  EXPECT_EQ(a->info.stop_reason, "end_turn");
  EXPECT_EQ(a->info.output_tokens, a->token_calls);
  EXPECT_EQ(a->info.output_tokens, CountWordTokens(a->Text()));
  EXPECT_EQ(a->info.input_tokens, Req(1).input_tokens);
  const auto reply = SimulatedEngine::ReplyTokens("sim-small", Req(1).Flatten());
  EXPECT_EQ(a->pieces, reply) << "one OnToken per token, nothing held back without stops";
}

TEST(SimEngineTest, BatchesSequencesOneTokenPerStep) {
  SimulatedEngine e({}, false);
  auto a = std::make_shared<Recorder>();
  auto b = std::make_shared<Recorder>();
  ASSERT_TRUE(e.Submit(Req(5, "one"), a).ok());
  ASSERT_TRUE(e.Submit(Req(5, "two"), b).ok());
  EXPECT_EQ(e.Step().tokens_emitted, 2);  // both prefills, in one step
  EXPECT_EQ(e.Step().tokens_emitted, 2);  // both decodes
  EXPECT_EQ(a->pieces.size(), 2u);
  EXPECT_EQ(b->pieces.size(), 2u);
}

TEST(SimEngineTest, StopsAtMaxTokens) {
  SimulatedEngine e({}, false);
  auto s = std::make_shared<Recorder>();
  ASSERT_TRUE(e.Submit(Req(3), s).ok());
  RunUntilIdle(e);
  EXPECT_EQ(s->pieces.size(), 3u);
  EXPECT_EQ(s->info.stop_reason, "max_tokens");
  EXPECT_EQ(s->info.output_tokens, 3);
}

TEST(SimEngineTest, StopSequenceIsNotEmitted) {
  const auto reply = SimulatedEngine::ReplyTokens("sim-small", Req(1).Flatten());
  ASSERT_GT(reply.size(), 4u);
  SimulatedEngine e({}, false);
  auto s = std::make_shared<Recorder>();
  auto r = Req(1000);
  r.stop_sequences = {reply[3]};
  ASSERT_TRUE(e.Submit(r, s).ok());
  RunUntilIdle(e);
  const std::string full = Joined(reply);
  EXPECT_EQ(s->info.stop_reason, "stop_sequence");
  EXPECT_EQ(s->info.stop_sequence, reply[3]);
  EXPECT_EQ(s->Text(), full.substr(0, full.find(reply[3])));
  EXPECT_EQ(s->token_calls, s->info.output_tokens);
}

// A stop sequence that starts inside one token and ends in the next: no
// byte of it is ever shown, and the text before it all is.
TEST(SimEngineTest, AStopSequenceAcrossTokensIsNeverPartlyShown) {
  const auto reply = SimulatedEngine::ReplyTokens("sim-small", Req(1).Flatten());
  ASSERT_GT(reply.size(), 4u);
  const std::string full = Joined(reply);
  const std::string stop = reply[2].substr(reply[2].size() - 2) + reply[3].substr(0, 3);
  const std::string expected = full.substr(0, full.find(stop));
  SimulatedEngine e({}, false);
  auto s = std::make_shared<Recorder>();
  auto r = Req(1000);
  r.stop_sequences = {stop, "never-in-the-reply"};
  ASSERT_TRUE(e.Submit(r, s).ok());
  while (e.HasWork()) {
    e.Step();
    EXPECT_EQ(s->Text().find(stop.substr(0, 2), expected.size()), std::string::npos)
        << "the stop's first bytes reached the client";
  }
  EXPECT_EQ(s->Text(), expected);
  EXPECT_EQ(s->info.stop_reason, "stop_sequence");
  EXPECT_EQ(s->info.stop_sequence, stop);
  EXPECT_EQ(s->token_calls, s->info.output_tokens);
}

TEST(SimEngineTest, HeldBackTextIsReleasedAtTheEndWithNoTokens) {
  const auto reply = SimulatedEngine::ReplyTokens("sim-small", Req(1).Flatten());
  SimulatedEngine e({}, false);
  auto s = std::make_shared<Recorder>();
  auto r = Req(1000);
  r.stop_sequences = {"a stop sequence the reply never has"};
  ASSERT_TRUE(e.Submit(r, s).ok());
  RunUntilIdle(e);
  EXPECT_EQ(s->Text(), Joined(reply));
  EXPECT_EQ(s->info.stop_reason, "end_turn");
  EXPECT_EQ(s->info.output_tokens, static_cast<int>(reply.size()));
  EXPECT_EQ(s->token_calls, s->info.output_tokens) << "the release carries 0 tokens";
}

TEST(SimEngineTest, CancelledSequenceFinishesAtTheNextStepAndFreesItsBlocks) {
  SimulatedEngine e({}, false);
  auto s = std::make_shared<Recorder>();
  ASSERT_TRUE(e.Submit(Req(1000, "hello", "", 7), s).ok());
  e.Step();
  e.Step();
  e.Cancel(7);
  e.Cancel(12345);  // unknown: ignored
  EXPECT_FALSE(s->finished);
  e.Step();
  EXPECT_TRUE(s->finished);
  EXPECT_EQ(s->info.stop_reason, "cancelled");
  EXPECT_EQ(s->info.output_tokens, 2);
  EXPECT_EQ(e.running(), 0u);
  const auto st = e.replica("sim-small")->Stats();
  EXPECT_EQ(st.blocks_free, st.blocks_total);
}

// Tests and demos slow the simulation down: each step takes at least
// 1 / max_steps_per_second. Any model name is served (as sim-small is).
TEST(SimEngineTest, APacedEngineStepsNoFasterThanAskedUnderAnyModelName) {
  SimulatedEngine e({.models = {"sim-paced"}, .max_steps_per_second = 10}, false);
  ASSERT_NE(e.replica("sim-paced"), nullptr);
  SimulatedEngine small({}, false);
  EXPECT_EQ(e.replica("sim-paced")->Stats().blocks_total,
            small.replica("sim-small")->Stats().blocks_total);
  auto r = Req(5);
  r.model = "sim-paced";
  auto s = std::make_shared<Recorder>();
  ASSERT_TRUE(e.Submit(r, s).ok());
  const absl::Time start = e.Now();
  RunUntilIdle(e);
  ASSERT_TRUE(s->finished);
  EXPECT_EQ(s->info.output_tokens, 5);
  // Five steps (the prefill samples the first token), 100 ms each.
  EXPECT_EQ(e.Now() - start, absl::Milliseconds(500));
}

// On the real clock the stepping thread takes the step lock back after
// every step; a drain still cancels what runs at its deadline instead of
// waiting for the sequences to end.
TEST(SimEngineTest, ADrainOnTheRealClockCancelsAtItsDeadline) {
  SimulatedEngine e({.models = {"sim-slow"}, .max_steps_per_second = 2}, /*run_thread=*/true);
  auto r = Req(1000);
  r.model = "sim-slow";
  auto s = std::make_shared<Recorder>();
  ASSERT_TRUE(e.Submit(r, s).ok());
  absl::SleepFor(absl::Milliseconds(1200));  // a token or two at 2 a second
  e.Drain(absl::Now());
  ASSERT_TRUE(s->finished) << "Drain returns once every observer has had OnFinished";
  EXPECT_EQ(s->info.stop_reason, "cancelled");
  EXPECT_LT(s->info.output_tokens, 12) << "cut well before the shortest reply ends";
}

TEST(SimEngineTest, RejectsUnknownModelAndNonPositiveMaxTokens) {
  SimulatedEngine e({}, false);
  auto r = Req(10);
  r.model = "nope";
  EXPECT_EQ(e.Submit(r, std::make_shared<Recorder>()).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(e.Submit(Req(0), std::make_shared<Recorder>()).code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(SimEngineTest, AFullEngineRefusesMoreUntilItHasRoom) {
  // Room for a batch of one and one waiting behind it.
  SimulatedEngine engine({.max_num_seqs = 1, .max_waiting = 1}, false);
  auto a = std::make_shared<Recorder>();
  auto b = std::make_shared<Recorder>();
  auto c = std::make_shared<Recorder>();
  ASSERT_TRUE(engine.Submit(Req(4), a).ok());
  ASSERT_TRUE(engine.Submit(Req(4), b).ok());
  const absl::Status full = engine.Submit(Req(4), c);
  EXPECT_EQ(full.code(), absl::StatusCode::kResourceExhausted) << full;
  while (!a->finished) engine.Step();
  EXPECT_TRUE(engine.Submit(Req(4), c).ok()) << "room again once one finished";
  RunUntilIdle(engine);
  EXPECT_TRUE(a->finished && b->finished && c->finished);
}

TEST(SimEngineTest, DrainLetsWorkFinishThenRefuses) {
  SimulatedEngine e({}, false);
  auto a = std::make_shared<Recorder>();
  ASSERT_TRUE(e.Submit(Req(1000), a).ok());
  e.Drain(absl::InfiniteFuture());
  ASSERT_TRUE(a->finished);
  EXPECT_EQ(a->info.stop_reason, "end_turn");
  EXPECT_EQ(e.Submit(Req(4), std::make_shared<Recorder>()).code(),
            absl::StatusCode::kFailedPrecondition);
}

TEST(SimEngineTest, DrainCancelsWhatOutlivesTheDeadline) {
  SimulatedEngine e({}, false);
  std::vector<std::shared_ptr<Recorder>> obs;
  for (int i = 0; i < 20; ++i) {
    obs.push_back(std::make_shared<Recorder>());
    ASSERT_TRUE(e.Submit(Req(1000, "q" + std::to_string(i)), obs.back()).ok());
  }
  // Time for a few steps only (~7 ms each).
  e.Drain(e.Now() + absl::Milliseconds(30));
  int cancelled = 0;
  for (const auto& o : obs) {
    EXPECT_TRUE(o->finished);
    cancelled += o->info.stop_reason == "cancelled";
    EXPECT_EQ(o->token_calls, o->info.output_tokens);
  }
  EXPECT_EQ(cancelled, 20);
  EXPECT_FALSE(e.HasWork());
  const auto st = e.replica("sim-small")->Stats();
  EXPECT_EQ(st.blocks_free, st.blocks_total);
}

TEST(SimEngineTest, RealClockThreadServesAndDrains) {
  SimulatedEngine e({}, true);
  auto a = std::make_shared<Recorder>();
  auto b = std::make_shared<Recorder>();
  ASSERT_TRUE(e.Submit(Req(1000, "first"), a).ok());
  ASSERT_TRUE(e.Submit(Req(1000000, "second"), b).ok());
  e.Drain(absl::Now() + absl::Seconds(10));
  ASSERT_TRUE(a->finished);
  ASSERT_TRUE(b->finished);
  EXPECT_EQ(a->info.stop_reason, "end_turn");
  EXPECT_EQ(a->Text(),
            Joined(SimulatedEngine::ReplyTokens("sim-small", Req(1, "first").Flatten())));
}

TEST(SimEngineTest, LoadReportsQueueKvAndCachedPrefixes) {
  SimulatedEngine e({}, false);
  const std::string system = sim::testing::Words(100, "sys");
  auto r = Req(1000, "hi", system);
  ASSERT_TRUE(e.Submit(r, std::make_shared<Recorder>()).ok());
  EngineLoad load = e.Load();
  EXPECT_EQ(load.waiting, 1);
  EXPECT_GT(load.kv_blocks_total, 20000);  // 8B on an H100: ~450k tokens
  EXPECT_EQ(load.kv_blocks_free, load.kv_blocks_total);
  e.Step();
  load = e.Load();
  EXPECT_EQ(load.running, 1);
  EXPECT_GT(load.kv_cache_usage, 0);
  const std::vector<uint64_t> hashes = sim::PrefixBlockHashes(r.Flatten());
  ASSERT_GE(hashes.size(), 6u);
  ASSERT_FALSE(load.cached_prefixes.empty());
  for (uint64_t h : hashes) {
    EXPECT_NE(std::find(load.cached_prefixes.begin(), load.cached_prefixes.end(), h),
              load.cached_prefixes.end());
  }
}

TEST(SimEngineTest, ReportsPromptCacheReadsAndWritesAtBreakpoints) {
  SimulatedEngine e({}, false);
  const std::string system = sim::testing::Words(100, "sys");  // 100 tokens
  auto run = [&](EngineRequest r) {
    auto rec = std::make_shared<Recorder>();
    EXPECT_TRUE(e.Submit(std::move(r), rec).ok());
    RunUntilIdle(e);
    EXPECT_TRUE(rec->finished);
    return rec->info;
  };
  // The system prompt marked for caching: its full 16-token blocks (96 of
  // its 100 tokens) are written, nothing is read.
  auto first = Req(4, "hello", system);
  first.system_cache_breakpoint = true;
  const FinishInfo a = run(first);
  EXPECT_EQ(a.input_tokens, 103);  // the system, "user", ":" and "hello"
  EXPECT_EQ(a.cache_read_tokens, 0);
  EXPECT_EQ(a.cache_creation_tokens, 96);
  // The same system prompt again, marked: read from the cache, not written.
  auto second = Req(4, "there", system);
  second.system_cache_breakpoint = true;
  const FinishInfo b = run(second);
  EXPECT_EQ(b.cache_read_tokens, 96);
  EXPECT_EQ(b.cache_creation_tokens, 0);
  // Unmarked: the cache is read all the same, and nothing counts as written.
  const FinishInfo c = run(Req(4, "again", system));
  EXPECT_EQ(c.cache_read_tokens, 96);
  EXPECT_EQ(c.cache_creation_tokens, 0);
  // Another prompt: nothing to read; unmarked, nothing written.
  const FinishInfo d = run(Req(4, "hello", sim::testing::Words(100, "other")));
  EXPECT_EQ(d.cache_read_tokens, 0);
  EXPECT_EQ(d.cache_creation_tokens, 0);
  // A breakpoint at the end of the conversation: everything but the blocks
  // already cached and the partial last block is written.
  auto longer = Req(4, sim::testing::Words(40, "u"), system);
  longer.messages.front().cache_breakpoint = true;
  const FinishInfo f = run(longer);
  EXPECT_EQ(f.input_tokens, 142);
  EXPECT_EQ(f.cache_read_tokens, 96);
  EXPECT_EQ(f.cache_creation_tokens, 128 - 96);
}

TEST(SimEngineTest, ReportsCacheTokensInTheApisTokens) {
  // The engine's prompt holds role markers the API does not count: reads
  // are scaled to input_tokens and never exceed it.
  SimulatedEngine e({}, false);
  const std::string system = sim::testing::Words(64, "sys");
  for (int i = 0; i < 2; ++i) {
    auto r = Req(2, "hi", system);
    r.input_tokens = 65;  // the system and "hi", without "user" and ":"
    auto rec = std::make_shared<Recorder>();
    ASSERT_TRUE(e.Submit(std::move(r), rec).ok());
    RunUntilIdle(e);
    ASSERT_TRUE(rec->finished);
    if (i == 1) {
      // 64 of the engine's 67 prompt tokens were cached: 64 * 65 / 67.
      EXPECT_EQ(rec->info.cache_read_tokens, 62);
      EXPECT_LE(rec->info.cache_read_tokens + rec->info.cache_creation_tokens, 65);
    }
  }
}

TEST(EngineRequestTest, CacheBreakpointBytesEndAtTheLastMarkedPart) {
  EngineRequest r;
  r.system = "sys";
  r.messages = {{"user", "hello"}, {"assistant", "hi"}, {"user", "more"}};
  EXPECT_EQ(r.CacheBreakpointBytes(), 0u);
  r.system_cache_breakpoint = true;
  EXPECT_EQ(r.CacheBreakpointBytes(), 3u);
  r.messages[1].cache_breakpoint = true;
  const std::string flat = r.Flatten();
  EXPECT_EQ(flat.substr(0, r.CacheBreakpointBytes()), "sys\nuser: hello\nassistant: hi");
}

}  // namespace
}  // namespace sb::worker
