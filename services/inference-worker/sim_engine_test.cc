#include "inference-worker/sim_engine.h"

#include "gtest/gtest.h"

namespace sb::worker {
namespace {

// Records what the engine hands over.
class RecordingSink : public TokenObserver {
 public:
  void OnToken(std::string_view text, int count) override {
    // One piece per token, unless a stop sequence held text back.
    if (count == 0) {
      ASSERT_FALSE(tokens.empty());
      tokens.back() += text;
    } else {
      tokens.emplace_back(text);
    }
  }
  void OnFinished(const FinishInfo& f) override {
    EXPECT_FALSE(finished) << "finished twice";
    finished = true;
    info = f;
  }

  std::string Text() const {
    std::string s;
    for (const auto& t : tokens) s += t;
    return s;
  }

  std::vector<std::string> tokens;
  bool finished = false;
  FinishInfo info;
};

EngineRequest Req(int max_tokens, std::string prompt = "hello") {
  EngineRequest r;
  r.request_id = "r1";
  r.model = "sim-small";
  r.messages = {{"user", std::move(prompt)}};
  r.input_tokens = CountWordTokens(r.messages[0].text);
  r.max_tokens = max_tokens;
  return r;
}

void RunToEnd(SimulatedEngine& e, const RecordingSink& s) {
  for (int i = 0; i < 1000 && !s.finished; ++i) e.Step();
}

TEST(TokenizerTest, CountsWordsAndPunctuation) {
  EXPECT_EQ(CountWordTokens(""), 0);
  EXPECT_EQ(CountWordTokens("hello"), 1);
  EXPECT_EQ(CountWordTokens("Hello, world!"), 4);
  EXPECT_EQ(CountWordTokens("  a  b\tc\n"), 3);
}

TEST(SimEngineTest, DeterministicReplyWithExactCounts) {
  SimulatedEngine e({}, false);
  auto a = std::make_shared<RecordingSink>();
  auto b = std::make_shared<RecordingSink>();
  ASSERT_TRUE(e.Submit(Req(1000), a).ok());
  ASSERT_TRUE(e.Submit(Req(1000), b).ok());
  RunToEnd(e, *a);
  RunToEnd(e, *b);
  EXPECT_EQ(a->Text(), b->Text());
  EXPECT_EQ(a->info.stop_reason, "end_turn");
  EXPECT_EQ(a->info.output_tokens, static_cast<int>(a->tokens.size()));
  EXPECT_EQ(a->info.output_tokens, CountWordTokens(a->Text()));
  EXPECT_EQ(a->info.input_tokens, 1);
  const auto reply = SimulatedEngine::ReplyTokens("sim-small", Req(1).Flatten());
  EXPECT_EQ(a->tokens, reply);
}

TEST(SimEngineTest, BatchesSequencesOneTokenPerStep) {
  SimulatedEngine e({}, false);
  auto a = std::make_shared<RecordingSink>();
  auto b = std::make_shared<RecordingSink>();
  ASSERT_TRUE(e.Submit(Req(5, "one"), a).ok());
  ASSERT_TRUE(e.Submit(Req(5, "two"), b).ok());
  EXPECT_EQ(e.Step(), 2);
  EXPECT_EQ(a->tokens.size(), 1u);
  EXPECT_EQ(b->tokens.size(), 1u);
}

TEST(SimEngineTest, StopsAtMaxTokens) {
  SimulatedEngine e({}, false);
  auto s = std::make_shared<RecordingSink>();
  ASSERT_TRUE(e.Submit(Req(3), s).ok());
  RunToEnd(e, *s);
  EXPECT_EQ(s->tokens.size(), 3u);
  EXPECT_EQ(s->info.stop_reason, "max_tokens");
  EXPECT_EQ(s->info.output_tokens, 3);
}

TEST(SimEngineTest, StopSequenceIsNotEmitted) {
  const auto reply = SimulatedEngine::ReplyTokens("sim-small", Req(1).Flatten());
  ASSERT_GT(reply.size(), 4u);
  SimulatedEngine e({}, false);
  auto s = std::make_shared<RecordingSink>();
  auto r = Req(1000);
  r.stop_sequences = {reply[3]};  // e.g. " tokens"
  ASSERT_TRUE(e.Submit(r, s).ok());
  RunToEnd(e, *s);
  EXPECT_EQ(s->info.stop_reason, "stop_sequence");
  EXPECT_EQ(s->info.stop_sequence, reply[3]);
  EXPECT_EQ(s->Text().find(reply[3]), std::string::npos);
}

// A stop sequence that starts inside one token and ends in the next: no
// byte of it is ever shown, and the text before it all is.
TEST(SimEngineTest, AStopSequenceAcrossTokensIsNeverPartlyShown) {
  const auto reply = SimulatedEngine::ReplyTokens("sim-small", Req(1).Flatten());
  ASSERT_GT(reply.size(), 4u);
  std::string full;
  for (const auto& t : reply) full += t;
  const std::string stop = reply[2].substr(reply[2].size() - 2) + reply[3].substr(0, 3);
  const std::string expected = full.substr(0, full.find(stop));
  SimulatedEngine e({}, false);
  auto s = std::make_shared<RecordingSink>();
  auto r = Req(1000);
  r.stop_sequences = {stop, "never-in-the-reply"};
  ASSERT_TRUE(e.Submit(r, s).ok());
  for (int i = 0; i < 1000 && !s->finished; ++i) {
    e.Step();
    EXPECT_EQ(s->Text().find(stop.substr(0, 2), expected.size()), std::string::npos)
        << "the stop's first bytes reached the client";
  }
  EXPECT_EQ(s->Text(), expected);
  EXPECT_EQ(s->info.stop_reason, "stop_sequence");
  EXPECT_EQ(s->info.stop_sequence, stop);
}

TEST(SimEngineTest, HeldBackTextIsReleasedAtTheEnd) {
  const auto reply = SimulatedEngine::ReplyTokens("sim-small", Req(1).Flatten());
  std::string full;
  for (const auto& t : reply) full += t;
  SimulatedEngine e({}, false);
  auto s = std::make_shared<RecordingSink>();
  auto r = Req(1000);
  r.stop_sequences = {"a stop sequence the reply never has"};
  ASSERT_TRUE(e.Submit(r, s).ok());
  RunToEnd(e, *s);
  EXPECT_EQ(s->Text(), full);
  EXPECT_EQ(s->info.stop_reason, "end_turn");
  EXPECT_EQ(s->info.output_tokens, static_cast<int>(reply.size()));
}

TEST(SimEngineTest, CancelledSequenceFinishesAndLeavesTheBatch) {
  SimulatedEngine e({}, false);
  auto s = std::make_shared<RecordingSink>();
  auto r = Req(1000);
  r.id = 7;
  ASSERT_TRUE(e.Submit(r, s).ok());
  e.Step();
  e.Step();
  e.Cancel(7);
  e.Step();
  EXPECT_TRUE(s->finished);
  EXPECT_EQ(s->info.stop_reason, "cancelled");
  EXPECT_EQ(s->info.output_tokens, 2);
  EXPECT_EQ(e.running(), 0u);
}

TEST(SimEngineTest, RejectsUnknownModel) {
  SimulatedEngine e({}, false);
  auto r = Req(10);
  r.model = "nope";
  EXPECT_EQ(e.Submit(r, std::make_shared<RecordingSink>()).code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(SimEngineTest, AFullEngineRefusesMoreUntilItHasRoom) {
  SimulatedEngine engine({.models = {"sim-small"}, .max_batch = 1, .max_waiting = 1}, false);
  auto a = std::make_shared<RecordingSink>();
  auto b = std::make_shared<RecordingSink>();
  auto c = std::make_shared<RecordingSink>();
  ASSERT_TRUE(engine.Submit(Req(4), a).ok());
  ASSERT_TRUE(engine.Submit(Req(4), b).ok());
  const absl::Status full = engine.Submit(Req(4), c);
  EXPECT_EQ(full.code(), absl::StatusCode::kResourceExhausted) << full;
  RunToEnd(engine, *a);
  RunToEnd(engine, *b);
  EXPECT_TRUE(engine.Submit(Req(4), c).ok()) << "room again once they finished";
}

}  // namespace
}  // namespace sb::worker
