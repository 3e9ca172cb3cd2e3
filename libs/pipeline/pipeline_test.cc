#include "pipeline/pipeline.h"

#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "testing/fake_pipeline.h"
#include "testing/manual_clock.h"

namespace sb::pipeline {
namespace {

using sb::testing::FakeGenerator;
using sb::testing::FakeInputGuard;
using sb::testing::FakeOutputGates;
using sb::testing::Finished;
using sb::testing::ManualClock;
using sb::testing::Started;
using sb::testing::Token;

// Records what reaches it; answers ready(true) at once unless told to hold,
// in which case the test answers for it (a slow client).
class RecordingSink final : public Sink {
 public:
  void OnStart(const StartInfo& info, Ready ready) override {
    log.push_back("start:" + info.model + ":" + std::to_string(info.input_tokens));
    Answer(std::move(ready));
  }
  void OnText(std::string text, Ready ready) override {
    log.push_back("text:" + text);
    Answer(std::move(ready));
  }
  void OnFinish(const FinishInfo& info) override {
    log.push_back("finish:" + info.stop_reason + ":" + std::to_string(info.input_tokens) + ":" +
                  std::to_string(info.output_tokens));
    finish = info;
    ++terminal;
  }
  void OnError(const absl::Status& status) override {
    error = status;
    log.push_back("error:" + std::string(absl::StatusCodeToString(status.code())));
    ++terminal;
  }

  void Answer(Ready ready) {
    if (hold) {
      held = std::move(ready);
    } else {
      ready(!gone);
    }
  }
  // Answers the held ready callback.
  void Resume(bool more = true) {
    auto r = std::move(held);
    held = nullptr;
    ASSERT_TRUE(r) << "nothing was waiting for the sink";
    r(more);
  }

  std::vector<std::string> log;
  FinishInfo finish;
  absl::Status error;
  int terminal = 0;
  bool hold = false;
  bool gone = false;
  Ready held;
};

std::shared_ptr<Request> MakeRequest() {
  auto r = std::make_shared<Request>();
  r->set_request_id("req_1");
  r->set_org_id("org");
  r->set_model("sim-small");
  r->set_max_tokens(16);
  auto* sys = r->add_system();
  sys->set_type("text");
  sys->set_text("be brief");
  auto* m = r->add_messages();
  m->set_role("user");
  auto* b = m->add_content();
  b->set_type("text");
  b->set_text("hello");
  return r;
}

class PipelineTest : public ::testing::Test {
 protected:
  ManualClock clock_;
  FakeInputGuard input_;
  FakeGenerator generator_;
  FakeOutputGates gates_;
  // The fail-closed stops recorded for the audit trail: "direction org request".
  std::vector<std::string> fail_closed_;
  Pipeline pipeline_{
      "test",
      input_,
      generator_,
      gates_,
      clock_,
      [this](const CheckContext& ctx, std::string_view direction) {
        fail_closed_.push_back(std::string(direction) + " " + ctx.org_id + " " + ctx.request_id);
      }};
  std::shared_ptr<RecordingSink> sink_ = std::make_shared<RecordingSink>();
};

TEST_F(PipelineTest, StreamsReleasedTextToTheSinkAndFinishes) {
  generator_.set_script(
      {Started("sim-small", 3), Token("Hel"), Token("lo"), Finished("end_turn", 3, 2)});
  std::weak_ptr<Generation> weak = pipeline_.Run(MakeRequest(), sink_);
  EXPECT_EQ(sink_->log, (std::vector<std::string>{"start:sim-small:3", "text:Hel", "text:lo",
                                                  "finish:end_turn:3:2"}));
  EXPECT_EQ(sink_->terminal, 1);
  ASSERT_EQ(input_.texts().size(), 1u);
  EXPECT_EQ(input_.texts()[0], "be brief\nhello");
  EXPECT_EQ(gates_.pushes(), 2);
  EXPECT_EQ(generator_.last()->request().model(), "sim-small");
  EXPECT_EQ(pipeline_.active(), 0);
  EXPECT_TRUE(weak.expired()) << "a finished generation is released";
}

TEST_F(PipelineTest, EveryCallOfAGenerationIsAChildOfItsSpan) {
  generator_.set_script({Started("m", 1), Finished("end_turn", 1, 0)});
  const auto parent =
      *trace::ParseTraceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
  pipeline_.Run(MakeRequest(), sink_, {.trace = parent});
  ASSERT_EQ(input_.contexts().size(), 1u);
  EXPECT_EQ(input_.contexts()[0].trace.Traceparent(), parent.Traceparent());
  ASSERT_EQ(gates_.opened().size(), 1u);
  EXPECT_EQ(gates_.opened()[0].trace.Traceparent(), parent.Traceparent());
  EXPECT_EQ(generator_.last()->trace().Traceparent(), parent.Traceparent());
}

// The output gate opens when the worker starts, under the platform safety
// policy version the serving model version pins (the scheduler's Started).
TEST_F(PipelineTest, TheOutputGateOpensUnderTheServingVersionsPolicyPin) {
  Event started = Started("m-v2", 1);
  started.mutable_started()->set_safety_policy_version(6);
  generator_.set_script({started, Token("a"), Finished("end_turn", 1, 1)});
  pipeline_.Run(MakeRequest(), sink_);
  ASSERT_EQ(gates_.opened().size(), 1u);
  EXPECT_EQ(gates_.opened()[0].platform_policy_version, 6);
  EXPECT_EQ(gates_.opened()[0].org_id, "org");
  EXPECT_EQ(sink_->log.back(), "finish:end_turn:1:1");
}

TEST_F(PipelineTest, AResultBeforeItsStartIsAProtocolError) {
  generator_.set_script({Finished("end_turn", 1, 1)});
  pipeline_.Run(MakeRequest(), sink_);
  EXPECT_TRUE(gates_.opened().empty());
  EXPECT_EQ(sink_->log, (std::vector<std::string>{"error:INTERNAL"}));
}

TEST_F(PipelineTest, RefusedInputNeverReachesTheScheduler) {
  input_.set_verdict(absl::InvalidArgumentError("input blocked by safety policy: e-mail address"));
  pipeline_.Run(MakeRequest(), sink_);
  EXPECT_EQ(generator_.calls(), 0u);
  EXPECT_EQ(sink_->log, (std::vector<std::string>{"error:INVALID_ARGUMENT"}));
  EXPECT_NE(sink_->error.message().find("e-mail"), std::string::npos);
  EXPECT_TRUE(fail_closed_.empty()) << "a verdict, not a failure to get one";
}

TEST_F(PipelineTest, NoInputVerdictFailsClosed) {
  input_.set_verdict(absl::UnavailableError("connect to 10.1.2.3:50053 refused"));
  pipeline_.Run(MakeRequest(), sink_);
  EXPECT_EQ(generator_.calls(), 0u);
  EXPECT_EQ(sink_->error.code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(sink_->error.message().find("10.1.2.3"), std::string::npos) << sink_->error;
  const auto request = MakeRequest();
  EXPECT_EQ(fail_closed_,
            (std::vector<std::string>{"input " + request->org_id() + " " + request->request_id()}));
}

TEST_F(PipelineTest, InputCheckCanBeSkippedByACallerThatDidIt) {
  generator_.set_script({Started("m", 1), Finished("end_turn", 1, 0)});
  pipeline_.Run(MakeRequest(), sink_, {.check_input = false});
  EXPECT_TRUE(input_.texts().empty());
  EXPECT_EQ(sink_->log.back(), "finish:end_turn:1:0");
}

// Backpressure: while the sink has not taken a piece, the stream is not
// read further.
TEST_F(PipelineTest, ASlowSinkHoldsBackItsStreamOnceItsReadAheadIsFull) {
  sink_->hold = true;
  pipeline_.Run(MakeRequest(), sink_, {.read_ahead_bytes = 8});
  auto call = generator_.last();
  ASSERT_TRUE(call->Emit(Started("sim-small", 3)));
  EXPECT_FALSE(call->wants_more()) << "the sink has not taken message_start yet";
  EXPECT_FALSE(call->Emit(Token("early")));
  sink_->Resume();
  ASSERT_TRUE(call->Emit(Token("one")));
  EXPECT_EQ(sink_->log.back(), "text:one");  // and the sink has not taken it
  ASSERT_TRUE(call->Emit(Token("two "))) << "read ahead";
  ASSERT_TRUE(call->Emit(Token("three")));
  EXPECT_FALSE(call->wants_more()) << "9 bytes read ahead: the stream waits";
  sink_->Resume();
  EXPECT_EQ(sink_->log.back(), "text:two three") << "what was read ahead, checked as one piece";
  EXPECT_TRUE(call->wants_more());
  sink_->Resume();
  ASSERT_TRUE(call->Emit(Finished("end_turn", 3, 3)));
  ASSERT_TRUE(call->End(absl::OkStatus()));
  EXPECT_EQ(sink_->log.back(), "finish:end_turn:3:3");
  EXPECT_EQ(gates_.pieces(), (std::vector<std::string>{"one", "two three"}));
}

// Batching on the output safety stream: tokens that arrive while a piece is
// being checked go to safety together, as the next piece; the end waits for
// both.
TEST_F(PipelineTest, TokensReadWhileAPieceIsCheckedAreCheckedAsOnePiece) {
  gates_.set_hold(true);
  generator_.set_script(
      {Started("m", 1), Token("a"), Token("b"), Token("c"), Finished("end_turn", 1, 3)});
  pipeline_.Run(MakeRequest(), sink_);
  EXPECT_EQ(sink_->log, (std::vector<std::string>{"start:m:1"}));
  EXPECT_EQ(gates_.pieces(), (std::vector<std::string>{"a"}));
  EXPECT_TRUE(generator_.last()->ended()) << "the worker's stream was read to its end";
  ASSERT_TRUE(gates_.Answer());
  EXPECT_EQ(gates_.pieces(), (std::vector<std::string>{"a", "bc"}));
  EXPECT_EQ(sink_->log.back(), "text:a");
  ASSERT_TRUE(gates_.Answer());
  EXPECT_EQ(sink_->log,
            (std::vector<std::string>{"start:m:1", "text:a", "text:bc", "finish:end_turn:1:3"}));
  EXPECT_EQ(sink_->terminal, 1);
}

TEST_F(PipelineTest, ARefusalDropsWhatWasReadAheadOfIt) {
  gates_.set_hold(true);
  gates_.set_blocked_substring("@");
  generator_.set_script({Started("m", 1), Token("mail "), Token("me@x.io"), Token(" later"),
                         Finished("end_turn", 1, 3)});
  pipeline_.Run(MakeRequest(), sink_);
  ASSERT_TRUE(gates_.Answer());
  ASSERT_TRUE(gates_.Answer());
  EXPECT_FALSE(gates_.Answer());
  EXPECT_EQ(sink_->log,
            (std::vector<std::string>{"start:m:1", "text:mail ", "text:me", "finish:refusal:1:3"}));
  EXPECT_EQ(gates_.pieces(), (std::vector<std::string>{"mail ", "me@x.io later"}));
}

TEST_F(PipelineTest, ACancelWhileAPieceIsCheckedReleasesNothingMore) {
  gates_.set_hold(true);
  generator_.set_script({Started("m", 1), Token("a"), Token("b")});
  auto gen = pipeline_.Run(MakeRequest(), sink_);
  gen->Cancel();
  EXPECT_EQ(sink_->terminal, 0) << "the piece under check comes first";
  ASSERT_TRUE(gates_.Answer());
  EXPECT_FALSE(gates_.Answer()) << "what was read ahead is not checked";
  EXPECT_EQ(sink_->log, (std::vector<std::string>{"start:m:1", "finish:cancelled:1:2"}));
}

TEST_F(PipelineTest, OutputSafetyFailingMidStreamDropsWhatWasReadAhead) {
  gates_.set_hold(true);
  generator_.set_script({Started("m", 1), Token("a"), Token("b"), Finished("end_turn", 1, 2)});
  pipeline_.Run(MakeRequest(), sink_);
  gates_.set_status(absl::UnavailableError("safety went away"));
  ASSERT_TRUE(gates_.Answer());
  EXPECT_FALSE(gates_.Answer());
  EXPECT_EQ(sink_->log, (std::vector<std::string>{"start:m:1", "error:UNAVAILABLE"}));
  EXPECT_EQ(fail_closed_.size(), 1u);
}

TEST_F(PipelineTest, CancelStopsTheStreamAndFinishesWithWhatWasGenerated) {
  auto gen = pipeline_.Run(MakeRequest(), sink_);
  auto call = generator_.last();
  ASSERT_TRUE(call->Emit(Started("sim-small", 4)));
  ASSERT_TRUE(call->Emit(Token("a")));
  ASSERT_TRUE(call->Emit(Token("b")));
  gen->Cancel();
  EXPECT_TRUE(call->cancelled());
  EXPECT_TRUE(call->ended());
  EXPECT_EQ(sink_->log.back(), "finish:cancelled:4:2");
  EXPECT_EQ(sink_->terminal, 1);
  gen->Cancel();  // again: nothing more
  EXPECT_EQ(sink_->terminal, 1);
}

TEST_F(PipelineTest, CancelAfterTheLastEventStillEndsAsCancelled) {
  auto gen = pipeline_.Run(MakeRequest(), sink_);
  auto call = generator_.last();
  ASSERT_TRUE(call->Emit(Started("sim-small", 1)));
  ASSERT_TRUE(call->Emit(Token("a")));
  ASSERT_TRUE(call->Emit(Finished("end_turn", 1, 1)));
  gen->Cancel();  // before the stream's end arrived
  EXPECT_EQ(sink_->log.back(), "finish:cancelled:1:1");
}

TEST_F(PipelineTest, CancelAllStopsEveryGenerationInProgress) {
  pipeline_.Run(MakeRequest(), sink_);
  auto other = std::make_shared<RecordingSink>();
  pipeline_.Run(MakeRequest(), other);
  ASSERT_TRUE(generator_.call(0)->Emit(Started("m", 1)));
  pipeline_.CancelAll();
  EXPECT_EQ(sink_->log.back(), "finish:cancelled:1:0");
  EXPECT_EQ(other->log.back(), "finish:cancelled:0:0");
  EXPECT_EQ(pipeline_.active(), 0);
}

TEST_F(PipelineTest, AnUnaskedCancelFromABackendIsAFailureNotTheClientsCancel) {
  pipeline_.Run(MakeRequest(), sink_);
  ASSERT_TRUE(generator_.last()->Emit(Started("m", 1)));
  ASSERT_TRUE(generator_.last()->End(absl::CancelledError("Cancelled on the server side")));
  EXPECT_EQ(sink_->error.code(), absl::StatusCode::kUnavailable);
}

TEST_F(PipelineTest, ASecondStartIsAProtocolError) {
  pipeline_.Run(MakeRequest(), sink_);
  auto call = generator_.last();
  ASSERT_TRUE(call->Emit(Started("m", 1)));
  ASSERT_TRUE(call->Emit(Started("m", 1)));
  EXPECT_EQ(sink_->error.code(), absl::StatusCode::kInternal);
  EXPECT_TRUE(call->cancelled());
}

TEST_F(PipelineTest, CancelWhileTheSinkIsBusyEndsWhenItIsDone) {
  sink_->hold = true;
  auto gen = pipeline_.Run(MakeRequest(), sink_);
  auto call = generator_.last();
  ASSERT_TRUE(call->Emit(Started("sim-small", 1)));
  gen->Cancel();
  EXPECT_EQ(sink_->terminal, 0) << "no terminal call while the sink still works";
  sink_->Resume();
  EXPECT_EQ(sink_->log.back(), "finish:cancelled:1:0");
}

TEST_F(PipelineTest, CancelDuringTheInputCheckNeverSchedules) {
  input_.set_hold(true);
  auto gen = pipeline_.Run(MakeRequest(), sink_);
  gen->Cancel();
  input_.Release();
  EXPECT_EQ(generator_.calls(), 0u);
  EXPECT_EQ(sink_->log, (std::vector<std::string>{"finish:cancelled:0:0"}));
}

TEST_F(PipelineTest, AClientThatGoesAwayCancelsTheGeneration) {
  pipeline_.Run(MakeRequest(), sink_);
  auto call = generator_.last();
  ASSERT_TRUE(call->Emit(Started("sim-small", 1)));
  sink_->gone = true;
  ASSERT_TRUE(call->Emit(Token("x")));
  EXPECT_TRUE(call->cancelled());
  EXPECT_EQ(sink_->log.back(), "error:CANCELLED");
  EXPECT_EQ(pipeline_.active(), 0);
}

TEST_F(PipelineTest, AFailureMidStreamReachesTheSinkWithoutInternals) {
  pipeline_.Run(MakeRequest(), sink_);
  auto call = generator_.last();
  ASSERT_TRUE(call->Emit(Started("sim-small", 1)));
  ASSERT_TRUE(call->Emit(Token("partial")));
  ASSERT_TRUE(call->End(absl::UnavailableError("worker worker-vm-7 failed: Socket closed")));
  EXPECT_EQ(sink_->log,
            (std::vector<std::string>{"start:sim-small:1", "text:partial", "error:UNAVAILABLE"}));
  EXPECT_EQ(sink_->error.message().find("worker-vm-7"), std::string::npos) << sink_->error;
  EXPECT_NE(sink_->error.message().find("interrupted"), std::string::npos) << sink_->error;
}

TEST_F(PipelineTest, NoCapacityBeforeTheStartIsOverloadNotARateLimit) {
  pipeline_.Run(MakeRequest(), sink_);
  ASSERT_TRUE(generator_.last()->End(absl::ResourceExhaustedError("engine queue is full")));
  EXPECT_EQ(sink_->error.code(), absl::StatusCode::kUnavailable);
  EXPECT_NE(sink_->error.message().find("no capacity"), std::string::npos);
}

TEST_F(PipelineTest, CallerFacingErrorsKeepTheirMessage) {
  pipeline_.Run(MakeRequest(), sink_);
  ASSERT_TRUE(generator_.last()->End(absl::NotFoundError("model: sim-nope")));
  EXPECT_EQ(sink_->error, absl::NotFoundError("model: sim-nope"));
}

TEST_F(PipelineTest, AStreamWithoutAResultIsAnError) {
  generator_.set_script({Started("m", 1), Token("t")});
  pipeline_.Run(MakeRequest(), sink_);
  EXPECT_EQ(sink_->error.code(), absl::StatusCode::kInternal);
  EXPECT_NE(sink_->error.message().find("req_1"), std::string::npos) << "names the request id";
}

// A refusal ends the reply after the text the gate released with it, as
// stop_reason "refusal" with its category and explanation, counting the
// tokens received up to it.
TEST_F(PipelineTest, RefusedOutputEndsTheReplyAsARefusalAfterTheTextBeforeIt) {
  gates_.set_blocked_substring("@");
  generator_.set_script({Started("m", 1), Token("mail me at "), Token("me@x.io"), Token("later"),
                         Finished("end_turn", 1, 3)});
  pipeline_.Run(MakeRequest(), sink_);
  EXPECT_EQ(sink_->log, (std::vector<std::string>{"start:m:1", "text:mail me at ", "text:me",
                                                  "finish:refusal:1:2"}));
  ASSERT_TRUE(sink_->finish.refusal);
  EXPECT_EQ(sink_->finish.refusal->category, "test.rule");
  EXPECT_FALSE(sink_->finish.refusal->explanation.empty());
  EXPECT_TRUE(generator_.last()->cancelled()) << "the worker stops generating";
  EXPECT_TRUE(fail_closed_.empty());
}

TEST_F(PipelineTest, TheFinishCountsWhatOutputSafetyRedactedAndFlagged) {
  gates_.set_redacted_substring("@");
  gates_.set_flagged_substring("odd");
  generator_.set_script({Started("m", 1), Token("a@b.io"), Token("odd"), Token("c@d.io"),
                         Token("fine"), Finished("end_turn", 1, 4)});
  pipeline_.Run(MakeRequest(), sink_);
  EXPECT_EQ(sink_->log,
            (std::vector<std::string>{"start:m:1", "text:[REDACTED]", "text:odd", "text:[REDACTED]",
                                      "text:fine", "finish:end_turn:1:4"}));
  EXPECT_EQ(sink_->finish.safety_redacted, 2);
  EXPECT_EQ(sink_->finish.safety_flagged, 1);
}

TEST_F(PipelineTest, OutputSafetyDownFailsClosed) {
  gates_.set_status(absl::DeadlineExceededError("deadline"));
  generator_.set_script({Started("m", 1), Token("secret"), Finished("end_turn", 1, 1)});
  pipeline_.Run(MakeRequest(), sink_);
  EXPECT_EQ(sink_->log, (std::vector<std::string>{"start:m:1", "error:UNAVAILABLE"}));
  const auto request = MakeRequest();
  EXPECT_EQ(fail_closed_, (std::vector<std::string>{"output " + request->org_id() + " " +
                                                    request->request_id()}));
}

// Batching by time (OutputBatching): a piece waits for more text until its
// first byte has waited `wait` or it holds `bytes`.
class BatchedPipelineTest : public PipelineTest {
 protected:
  void SetUp() override {
    pipeline_.set_output_batching({.timers = &timers_, .wait = absl::Milliseconds(20), .bytes = 8});
  }
  // Runs a generation and emits its start.
  std::shared_ptr<sb::testing::FakeGenerator::Call> Begin() {
    pipeline_.Run(MakeRequest(), sink_);
    auto call = generator_.last();
    EXPECT_TRUE(call->Emit(Started("m", 1)));
    return call;
  }
  sb::testing::ManualTimers timers_{clock_};
};

TEST_F(BatchedPipelineTest, TokensWithinTheWaitGoToSafetyTogetherWhenItIsUp) {
  auto call = Begin();
  ASSERT_TRUE(call->Emit(Token("ab")));
  timers_.Advance(absl::Milliseconds(10));
  ASSERT_TRUE(call->Emit(Token("cd")));
  timers_.Advance(absl::Milliseconds(9));
  EXPECT_TRUE(gates_.pieces().empty()) << "19 ms: the batch still waits";
  timers_.Advance(absl::Milliseconds(1));
  EXPECT_EQ(gates_.pieces(), (std::vector<std::string>{"abcd"}));
  EXPECT_EQ(sink_->log.back(), "text:abcd");
  // The next batch starts with the next token, and waits its own 20 ms.
  ASSERT_TRUE(call->Emit(Token("ef")));
  timers_.Advance(absl::Milliseconds(19));
  EXPECT_EQ(gates_.pieces().size(), 1u);
  timers_.Advance(absl::Milliseconds(1));
  EXPECT_EQ(gates_.pieces(), (std::vector<std::string>{"abcd", "ef"}));
}

TEST_F(BatchedPipelineTest, ABatchThatReachesItsSizeGoesAtOnce) {
  auto call = Begin();
  ASSERT_TRUE(call->Emit(Token("abcd")));
  EXPECT_TRUE(gates_.pieces().empty());
  ASSERT_TRUE(call->Emit(Token("efgh")));
  EXPECT_EQ(gates_.pieces(), (std::vector<std::string>{"abcdefgh"})) << "8 bytes, no wait";
  ASSERT_TRUE(call->Emit(Token("a whole sentence")));
  EXPECT_EQ(gates_.pieces().back(), "a whole sentence");
  timers_.Advance(absl::Milliseconds(20));
  EXPECT_EQ(gates_.pieces().size(), 2u) << "the stale timer sends nothing";
}

TEST_F(BatchedPipelineTest, TheEndOfTheStreamSendsAWaitingBatchAtOnce) {
  auto call = Begin();
  ASSERT_TRUE(call->Emit(Token("ab")));
  ASSERT_TRUE(call->Emit(Finished("end_turn", 1, 1)));
  ASSERT_TRUE(call->End(absl::OkStatus()));
  EXPECT_EQ(gates_.pieces(), (std::vector<std::string>{"ab"}));
  EXPECT_EQ(sink_->log, (std::vector<std::string>{"start:m:1", "text:ab", "finish:end_turn:1:1"}));
  timers_.Advance(absl::Milliseconds(20));
  EXPECT_EQ(sink_->terminal, 1);
}

TEST_F(BatchedPipelineTest, ACancelWhileABatchWaitsReleasesNothing) {
  auto call = Begin();
  ASSERT_TRUE(call->Emit(Token("ab")));
  pipeline_.CancelAll();
  EXPECT_TRUE(gates_.pieces().empty());
  EXPECT_EQ(sink_->log, (std::vector<std::string>{"start:m:1", "finish:cancelled:1:1"}));
  timers_.Advance(absl::Milliseconds(20));
  EXPECT_TRUE(gates_.pieces().empty());
  EXPECT_EQ(sink_->terminal, 1);
}

TEST_F(BatchedPipelineTest, TextReadDuringACheckWaitsOnlyWhatIsLeftOfItsTime) {
  gates_.set_hold(true);
  auto call = Begin();
  ASSERT_TRUE(call->Emit(Token("a")));
  timers_.Advance(absl::Milliseconds(20));
  EXPECT_EQ(gates_.pieces(), (std::vector<std::string>{"a"}));
  ASSERT_TRUE(call->Emit(Token("b")));  // read ahead while "a" is checked
  timers_.Advance(absl::Milliseconds(5));
  ASSERT_TRUE(gates_.Answer());
  EXPECT_EQ(gates_.pieces().size(), 1u) << "\"b\" has waited 5 ms of its 20";
  timers_.Advance(absl::Milliseconds(14));
  EXPECT_EQ(gates_.pieces().size(), 1u);
  timers_.Advance(absl::Milliseconds(1));
  EXPECT_EQ(gates_.pieces(), (std::vector<std::string>{"a", "b"}));
  // Text that has waited its time while a check ran goes as soon as it is done.
  ASSERT_TRUE(call->Emit(Token("c")));
  timers_.Advance(absl::Milliseconds(25));
  ASSERT_TRUE(gates_.Answer());
  EXPECT_EQ(gates_.pieces(), (std::vector<std::string>{"a", "b", "c"}));
}

TEST_F(BatchedPipelineTest, AWaitIsAtMostTwentyMilliseconds) {
  pipeline_.set_output_batching({.timers = &timers_, .wait = absl::Seconds(1), .bytes = 1024});
  auto call = Begin();
  ASSERT_TRUE(call->Emit(Token("ab")));
  timers_.Advance(absl::Milliseconds(20));
  EXPECT_EQ(gates_.pieces(), (std::vector<std::string>{"ab"}));
}

}  // namespace
}  // namespace sb::pipeline
