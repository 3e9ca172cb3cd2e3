// Turns on the pipeline: the per-event entries a reply's stream gets, and
// what is stored, with the generation faked and the store a real
// PostgreSQL started for the suite.
#include "chat/turns.h"

#include <chrono>
#include <thread>
#include <tuple>

#include "gtest/gtest.h"
#include "sbadmin/admin.h"
#include "support/infra.h"
#include "testing/fake_pipeline.h"
#include "testing/fake_storage.h"
#include "testing/manual_clock.h"

namespace sb::chat {
namespace {

using sb::testing::FakeGenerator;
using sb::testing::FakeInputGuard;
using sb::testing::FakeOutputGates;
using sb::testing::FakeTokenStream;
using sb::testing::Infra;
using Kind = StreamEntry::Kind;

StreamEntry Entry(int64_t offset, Kind kind) {
  StreamEntry e;
  e.offset = offset;
  e.kind = kind;
  return e;
}

class TurnsTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto infra = Infra::Start({.postgres = true, .redis = false, .kafka = false});
    ASSERT_TRUE(infra.ok()) << infra.status();
    infra_ = std::move(*infra).release();
    ASSERT_TRUE(admin::Admin(infra_->pg_uri()).CreateOrg("acme", "Acme").ok());
  }
  static void TearDownTestSuite() {
    delete infra_;
    infra_ = nullptr;
  }

  // A stored user message and its in-progress reply, as SendMessage leaves them.
  TurnSpec NewTurn() {
    auto conv = store_.CreateConversation(scope_, "sim-small", "t");
    EXPECT_TRUE(conv.ok()) << conv.status();
    auto turn = store_.AppendTurn(scope_, conv->id(), "hello", "");
    EXPECT_TRUE(turn.ok()) << turn.status();
    return {scope_,
            turn->assistant_message_id,
            conv->id(),
            turn->user_message.id(),
            turn->assistant_message_id,
            "sim-small",
            16};
  }

  // The events in the outbox for a conversation, oldest first (left there).
  std::vector<switchboard::chat::v1::ChatEvent> OutboxOf(const std::string& conversation_id) {
    std::vector<switchboard::chat::v1::ChatEvent> out;
    auto st = store_.RelayOutbox(100000, [&](const std::vector<ChatStore::OutboxRow>& rows) {
      for (const auto& r : rows) {
        if (r.conversation_id != conversation_id) continue;
        out.emplace_back();
        EXPECT_TRUE(out.back().ParseFromString(r.event));
      }
      return size_t{0};
    });
    EXPECT_TRUE(st.ok()) << st.status();
    return out;
  }

  // Waits for the turn's final entry and for the turn to be counted done.
  std::vector<StreamEntry> WaitForEnd(const std::string& message_id) {
    for (int i = 0; i < 1000; ++i) {
      auto entries = stream_.entries(message_id);
      if (!entries.empty() && entries.back().final() && turns_.active() == 0) return entries;
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    ADD_FAILURE() << "the turn did not end";
    return stream_.entries(message_id);
  }

  static Infra* infra_;
  PgPool pg_{infra_->pg_uri(), 2};
  UlidGenerator ids_;
  ChatStore store_{pg_, ids_};
  const Scope scope_{"acme", "alice"};
  FakeTokenStream stream_;
  FakeInputGuard input_;
  FakeGenerator generator_;
  FakeOutputGates gates_;
  sb::testing::ManualClock clock_;
  pipeline::Pipeline pipeline_{"chat-test", input_, generator_, gates_, clock_};
  ThreadPool pool_{2, 1000};
  Turns turns_{store_, stream_, pipeline_, pool_, /*max_turns=*/2};
};

Infra* TurnsTest::infra_ = nullptr;

std::vector<Kind> Kinds(const std::vector<StreamEntry>& entries) {
  std::vector<Kind> out;
  for (const auto& e : entries) out.push_back(e.kind);
  return out;
}

TEST_F(TurnsTest, EveryEventOfTheReplyIsAnEntryWithContiguousOffsets) {
  generator_.set_script({sb::testing::Started("sim-small", 3), sb::testing::Token("Hel"),
                         sb::testing::Token("lo"), sb::testing::Finished("end_turn", 3, 2)});
  const TurnSpec spec = NewTurn();
  turns_.Start(spec);
  auto entries = WaitForEnd(spec.assistant_message_id);
  EXPECT_EQ(Kinds(entries),
            (std::vector<Kind>{Kind::kMessageStart, Kind::kBlockStart, Kind::kDelta, Kind::kDelta,
                               Kind::kBlockStop, Kind::kMessageDelta, Kind::kMessageStop}));
  for (size_t i = 0; i < entries.size(); ++i)
    EXPECT_EQ(entries[i].offset, static_cast<int64_t>(i + 1));
  EXPECT_EQ(entries[0].model, "sim-small");
  EXPECT_EQ(entries[0].input_tokens, 3);
  EXPECT_EQ(entries[3].text, "lo");
  EXPECT_EQ(entries[5].stop_reason, "end_turn");
  EXPECT_EQ(entries[5].output_tokens, 2);
  EXPECT_TRUE(input_.texts().empty()) << "the turn's input was checked before it was stored";
  EXPECT_EQ(generator_.last()->request().source(), "chat");
  ASSERT_EQ(generator_.last()->request().messages_size(), 1);
  EXPECT_EQ(generator_.last()->request().messages(0).content(0).text(), "hello");

  auto stored = store_.GetMessage(scope_, spec.conversation_id, spec.assistant_message_id);
  ASSERT_TRUE(stored.ok()) << stored.status();
  EXPECT_EQ(stored->status(), "complete");
  EXPECT_EQ(stored->content(), "Hello");
  EXPECT_EQ(stored->stream_last_offset(), 7);
  EXPECT_EQ(std::vector<int>(stored->delta_lengths().begin(), stored->delta_lengths().end()),
            (std::vector<int>{3, 2}));
  EXPECT_EQ(stored->safety_result(), "pass");
  // Announced through the outbox, with the reply: after the user
  // message's event, in the same conversation's order.
  auto events = OutboxOf(spec.conversation_id);
  ASSERT_EQ(events.size(), 3u);
  EXPECT_EQ(events[0].type(), "conversation.created");
  EXPECT_EQ(events[1].type(), "message.created");
  EXPECT_EQ(events[2].type(), "message.completed");
  EXPECT_EQ(events[2].message().id(), spec.assistant_message_id);
  EXPECT_EQ(events[2].message().content(), "Hello");
  EXPECT_FALSE(events[2].event_id().empty());
}

// Output safety's refusal ends a chat reply as it does an API one: readers
// get the text before the match and a message_delta with stop_reason
// "refusal", and the stored reply holds exactly the text they were sent.
TEST_F(TurnsTest, ARefusedReplyStoresExactlyWhatReadersWereSent) {
  gates_.set_blocked_substring("@");
  generator_.set_script({sb::testing::Started("sim-small", 3), sb::testing::Token("mail "),
                         sb::testing::Token("me@x.io"), sb::testing::Token(" later"),
                         sb::testing::Finished("end_turn", 3, 3)});
  const TurnSpec spec = NewTurn();
  turns_.Start(spec);
  auto entries = WaitForEnd(spec.assistant_message_id);
  std::string sent;
  std::string stop_reason;
  for (const auto& e : entries) {
    if (e.kind == Kind::kDelta) sent += e.text;
    if (e.kind == Kind::kMessageDelta) stop_reason = e.stop_reason;
  }
  EXPECT_EQ(sent, "mail me");
  EXPECT_EQ(stop_reason, "refusal");
  EXPECT_EQ(entries.back().kind, Kind::kMessageStop);
  auto stored = store_.GetMessage(scope_, spec.conversation_id, spec.assistant_message_id);
  ASSERT_TRUE(stored.ok()) << stored.status();
  EXPECT_EQ(stored->content(), sent);
  EXPECT_EQ(stored->stop_reason(), "refusal");
  EXPECT_EQ(stored->safety_result(), "filtered");
}

// A reply output safety changed records what it did: redacted (what readers
// were sent, with the data replaced, is what is stored) or flagged.
TEST_F(TurnsTest, AReplyRecordsWhetherSafetyRedactedOrFlaggedIt) {
  gates_.set_redacted_substring("@");
  gates_.set_flagged_substring("suspicious");
  for (const auto& [token, result, content] :
       {std::tuple{"me@x.io", "redacted", "mail [REDACTED] later"},
        std::tuple{"suspicious", "flagged", "mail suspicious later"}}) {
    SCOPED_TRACE(result);
    generator_.set_script({sb::testing::Started("sim-small", 3), sb::testing::Token("mail "),
                           sb::testing::Token(token), sb::testing::Token(" later"),
                           sb::testing::Finished("end_turn", 3, 3)});
    const TurnSpec spec = NewTurn();
    turns_.Start(spec);
    std::string sent;
    for (const auto& e : WaitForEnd(spec.assistant_message_id)) {
      if (e.kind == Kind::kDelta) sent += e.text;
    }
    EXPECT_EQ(sent, content);
    auto stored = store_.GetMessage(scope_, spec.conversation_id, spec.assistant_message_id);
    ASSERT_TRUE(stored.ok()) << stored.status();
    EXPECT_EQ(stored->content(), sent);
    EXPECT_EQ(stored->safety_result(), result);
  }
}

TEST_F(TurnsTest, AFailureEndsTheStreamWithAnErrorAndAFailedReply) {
  generator_.set_script({sb::testing::Started("sim-small", 3), sb::testing::Token("par")},
                        absl::UnavailableError("worker w-9 at 10.0.0.9 failed"));
  const TurnSpec spec = NewTurn();
  turns_.Start(spec);
  auto entries = WaitForEnd(spec.assistant_message_id);
  EXPECT_EQ(Kinds(entries), (std::vector<Kind>{Kind::kMessageStart, Kind::kBlockStart, Kind::kDelta,
                                               Kind::kError}));
  EXPECT_EQ(entries.back().offset, 4);
  EXPECT_EQ(entries.back().error_code, static_cast<int>(absl::StatusCode::kUnavailable));
  EXPECT_EQ(entries.back().error_message.find("10.0.0.9"), std::string::npos)
      << "no internals reach readers: " << entries.back().error_message;
  auto stored = store_.GetMessage(scope_, spec.conversation_id, spec.assistant_message_id);
  ASSERT_TRUE(stored.ok());
  EXPECT_EQ(stored->status(), "failed");
  EXPECT_EQ(stored->content(), "par");
  EXPECT_EQ(stored->stream_last_offset(), 4);
}

// No silent hole: an event the stream did not take (the appender gave up
// retrying) stops the generation, and the reply ends failed with an error
// right after the last event written, holding exactly the text written.
TEST_F(TurnsTest, AnEventTheStreamDidNotTakeFailsTheTurnVisiblyWithoutAHole) {
  const TurnSpec spec = NewTurn();
  stream_.fail_call(3);  // 1: message_start and content_block_start, 2: "Hel", 3: "lo"
  turns_.Start(spec);
  for (int i = 0; i < 500 && generator_.calls() < 1; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  ASSERT_EQ(generator_.calls(), 1u);
  auto call = generator_.last();
  ASSERT_TRUE(call->Emit(sb::testing::Started("sim-small", 3)));
  for (const char* token : {"Hel", "lo"}) {
    for (int i = 0; i < 500 && !call->wants_more(); ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    ASSERT_TRUE(call->Emit(sb::testing::Token(token)));
  }
  auto entries = WaitForEnd(spec.assistant_message_id);
  EXPECT_TRUE(call->cancelled()) << "the generation is stopped";
  EXPECT_EQ(Kinds(entries), (std::vector<Kind>{Kind::kMessageStart, Kind::kBlockStart, Kind::kDelta,
                                               Kind::kError}));
  for (size_t i = 0; i < entries.size(); ++i) EXPECT_EQ(entries[i].offset, i + 1) << "no hole";
  EXPECT_EQ(entries[2].text, "Hel");
  auto stored = store_.GetMessage(scope_, spec.conversation_id, spec.assistant_message_id);
  ASSERT_TRUE(stored.ok());
  EXPECT_EQ(stored->status(), "failed");
  EXPECT_EQ(stored->content(), "Hel") << "what readers could have: not the lost \"lo\"";
  EXPECT_EQ(stored->stream_last_offset(), 4);
}

// A turn whose replica died (its lease lapsed) is taken over: it goes on
// after the last event its buffer holds — no second message_start, the
// text so far given to the model as the start of its reply — and the stored
// reply is the whole text, as one uninterrupted stream.
TEST_F(TurnsTest, ATurnWhoseReplicaDiedIsContinuedAfterItsLastEvent) {
  const TurnSpec spec = NewTurn();
  // What the dead replica wrote before it died.
  StreamEntry start = Entry(1, Kind::kMessageStart);
  start.model = "sim-small";
  start.input_tokens = 3;
  StreamEntry hel = Entry(3, Kind::kDelta);
  hel.text = "Hel";
  stream_.Append(spec.assistant_message_id, {start, Entry(2, Kind::kBlockStart), hel},
                 [](absl::Status) {});
  ASSERT_TRUE(store_
                  .LeaseReply(spec.conversation_id, spec.assistant_message_id, "dead-replica",
                              absl::Milliseconds(1))
                  .ok());
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  generator_.set_script({sb::testing::Started("sim-small", 5), sb::testing::Token("lo!"),
                         sb::testing::Finished("end_turn", 5, 1)});
  turns_.StartLeases("this-replica", absl::Seconds(30),
                     [this](const std::string& id) -> absl::StatusOr<std::vector<StreamEntry>> {
                       return stream_.entries(id);
                     });
  EXPECT_EQ(turns_.TakeOverOnce(), 1);
  EXPECT_EQ(turns_.TakeOverOnce(), 0) << "this replica holds it now";
  auto entries = WaitForEnd(spec.assistant_message_id);
  turns_.StopLeases();
  EXPECT_EQ(Kinds(entries),
            (std::vector<Kind>{Kind::kMessageStart, Kind::kBlockStart, Kind::kDelta, Kind::kDelta,
                               Kind::kBlockStop, Kind::kMessageDelta, Kind::kMessageStop}));
  for (size_t i = 0; i < entries.size(); ++i) EXPECT_EQ(entries[i].offset, i + 1);
  EXPECT_EQ(entries[3].text, "lo!");
  ASSERT_NE(generator_.last(), nullptr);
  const auto& request = generator_.last()->request();
  ASSERT_GE(request.messages_size(), 2);
  EXPECT_EQ(request.messages(request.messages_size() - 1).role(), "assistant");
  EXPECT_EQ(request.messages(request.messages_size() - 1).content(0).text(), "Hel")
      << "the text so far starts the model's reply";
  auto stored = store_.GetMessage(scope_, spec.conversation_id, spec.assistant_message_id);
  ASSERT_TRUE(stored.ok());
  EXPECT_EQ(stored->status(), "complete");
  EXPECT_EQ(stored->content(), "Hello!");
  EXPECT_EQ(std::vector<int>(stored->delta_lengths().begin(), stored->delta_lengths().end()),
            (std::vector<int>{3, 3}));
  EXPECT_EQ(stored->stream_last_offset(), 7);
  EXPECT_EQ(stored->input_tokens(), 3) << "as its message_start said";
}

TEST_F(TurnsTest, TurnsBeyondTheLimitFailAtOnceAsOverloaded) {
  // Two turns wait for their worker; the third is refused.
  std::vector<TurnSpec> specs = {NewTurn(), NewTurn(), NewTurn()};
  turns_.Start(specs[0]);
  turns_.Start(specs[1]);
  for (int i = 0; i < 500 && generator_.calls() < 2; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  turns_.Start(specs[2]);
  auto refused = stream_.entries(specs[2].assistant_message_id);
  ASSERT_EQ(refused.size(), 1u);
  EXPECT_EQ(refused[0].kind, Kind::kError);
  EXPECT_EQ(refused[0].offset, 1);
  EXPECT_EQ(refused[0].error_code, static_cast<int>(absl::StatusCode::kUnavailable));
  EXPECT_EQ(turns_.active(), 2);
  for (size_t i = 0; i < 2; ++i)
    ASSERT_TRUE(generator_.call(i)->End(absl::UnavailableError("no worker")));
  for (size_t i = 0; i < 2; ++i) WaitForEnd(specs[i].assistant_message_id);
}

// A stop: the generation is cancelled, the reply ends with the text so far
// and stop_reason "cancelled" (stream and store), and the turn is no
// longer this replica's to stop.
TEST_F(TurnsTest, AStoppedTurnEndsCancelledWithTheTextSoFar) {
  const TurnSpec spec = NewTurn();
  turns_.Start(spec);
  for (int i = 0; i < 500 && generator_.calls() < 1; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  ASSERT_EQ(generator_.calls(), 1u);
  auto call = generator_.last();
  ASSERT_TRUE(call->Emit(sb::testing::Started("sim-small", 3)));
  for (int i = 0; i < 500 && !call->wants_more(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  ASSERT_TRUE(call->Emit(sb::testing::Token("Hel")));
  for (int i = 0; i < 500 && stream_.entries(spec.assistant_message_id).size() < 3; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  EXPECT_FALSE(turns_.Cancel("01ZZZZZZZZZZZZZZZZZZZZZZZZ")) << "not a turn of this replica";
  EXPECT_TRUE(turns_.Cancel(spec.assistant_message_id));
  auto entries = WaitForEnd(spec.assistant_message_id);
  EXPECT_TRUE(call->cancelled());
  EXPECT_EQ(Kinds(entries),
            (std::vector<Kind>{Kind::kMessageStart, Kind::kBlockStart, Kind::kDelta,
                               Kind::kBlockStop, Kind::kMessageDelta, Kind::kMessageStop}));
  EXPECT_EQ(entries[4].stop_reason, "cancelled");
  auto stored = store_.GetMessage(scope_, spec.conversation_id, spec.assistant_message_id);
  ASSERT_TRUE(stored.ok());
  EXPECT_EQ(stored->status(), "complete");
  EXPECT_EQ(stored->stop_reason(), "cancelled");
  EXPECT_EQ(stored->content(), "Hel");
  EXPECT_EQ(std::vector<int>(stored->delta_lengths().begin(), stored->delta_lengths().end()),
            std::vector<int>{3})
      << "the stream's token boundaries are stored with the reply";
  EXPECT_FALSE(turns_.Cancel(spec.assistant_message_id)) << "ended: no longer running here";
}

// A stop that comes before the generation starts (the history still
// loading) is applied as soon as it does: nothing is generated.
TEST_F(TurnsTest, AStopBeforeTheGenerationStartsStopsItAtOnce) {
  const TurnSpec spec = NewTurn();
  pool_.Submit([] { std::this_thread::sleep_for(std::chrono::milliseconds(200)); });
  pool_.Submit([] { std::this_thread::sleep_for(std::chrono::milliseconds(200)); });
  turns_.Start(spec);  // queued behind the two sleeps
  EXPECT_TRUE(turns_.Cancel(spec.assistant_message_id));
  auto entries = WaitForEnd(spec.assistant_message_id);
  ASSERT_GE(entries.size(), 2u);
  EXPECT_EQ(entries[entries.size() - 2].stop_reason, "cancelled");
  auto stored = store_.GetMessage(scope_, spec.conversation_id, spec.assistant_message_id);
  ASSERT_TRUE(stored.ok());
  EXPECT_EQ(stored->stop_reason(), "cancelled");
  EXPECT_EQ(stored->content(), "");
}

// The prompt is the most recent history that fits the model's context
// window with the reply: oldest turns leave first, the newest message
// always goes, and the prompt starts with a user message.
TEST(FirstThatFitsTest, TheMostRecentTurnsThatFitStartingWithTheUser) {
  using History = std::vector<std::pair<std::string, std::string>>;
  const std::string kb(3000, 'x');  // 1,004 tokens each by the estimate
  const History h = {
      {"user", kb}, {"assistant", kb}, {"user", kb}, {"assistant", kb}, {"user", kb}};
  EXPECT_EQ(EstimateTokens(kb), 1004);
  EXPECT_EQ(FirstThatFits(h, 100000), 0u) << "all fit";
  EXPECT_EQ(FirstThatFits(h, 3 * 1004), 2u) << "the last three";
  EXPECT_EQ(FirstThatFits(h, 2 * 1004), 4u) << "two fit, but not starting with the reply";
  EXPECT_EQ(FirstThatFits(h, 10), 4u) << "the newest goes whatever its size";
  EXPECT_EQ(FirstThatFits(h, -5), 4u);
  // And one gRPC message at most, whatever the window.
  const std::string mib(1 << 20, 'x');
  const History big = {
      {"user", mib}, {"assistant", mib}, {"user", mib}, {"assistant", mib}, {"user", mib}};
  EXPECT_EQ(FirstThatFits(big, 100000000), 2u);
}

}  // namespace
}  // namespace sb::chat
