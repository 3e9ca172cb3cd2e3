// The one generation pipeline, shared by the gateway (API requests) and
// chat (turns):
//
//   input safety -> schedule (Generate stream) -> output safety -> sink
//
// It is callback-driven end to end: no thread per generation and no
// blocking call anywhere; every step continues from the completion of the
// one before. One piece of output is with output safety (and then the sink)
// at a time; tokens that arrive meanwhile are read ahead, up to
// RunOptions::read_ahead_bytes, and go to safety together as the next piece
// (batching that costs no latency: a batch forms only while a check is under
// way). A pipeline may also batch by time (OutputBatching): a piece then
// waits up to a set time (at most 20 ms) for more text, unless it has
// gathered enough bytes first — fewer messages to safety for a little
// latency. Beyond the read-ahead bound a slow sink or a slow check holds back its own
// generation (backpressure reaches the worker through the gRPC stream).
//
//   auto gen = pipeline.Run(request, sink, {.check_input = true});
//   exchange->OnClientGone([gen] { gen->Cancel(); });
//
// Every backend sits behind an interface below (gRPC implementations in
// grpc_backends.h, fakes in libs/testing), so the pipeline's logic is
// tested without servers.
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/clock.h"
#include "core/timers.h"
#include "switchboard/inference/v1/inference.pb.h"
#include "trace/trace.h"

namespace sb::metrics {
class Counter;
class Gauge;
class Histogram;
}  // namespace sb::metrics

namespace sb::pipeline {

using Request = switchboard::inference::v1::GenerateRequest;
using Event = switchboard::inference::v1::GenerateEvent;

struct StartInfo {
  std::string model;  // resolved by the scheduler
  int input_tokens = 0;
};

// Why output safety stopped a reply (Anthropic's stop_details).
struct Refusal {
  std::string category;     // the rule, e.g. "pii.email"
  std::string explanation;  // safe to show the caller
};

struct FinishInfo {
  std::string stop_reason;  // end_turn, max_tokens, stop_sequence, cancelled, refusal
  std::string stop_sequence;
  int input_tokens = 0;  // every prompt token, the cached ones included
  int output_tokens = 0;
  // Of input_tokens: read from the engine's prompt cache, and written to it.
  int cache_read_tokens = 0;
  int cache_creation_tokens = 0;
  std::optional<Refusal> refusal;  // with stop_reason "refusal"
  // Matches output safety replaced in the reply, and let through flagged.
  int safety_redacted = 0;
  int safety_flagged = 0;
};

// Where released output goes: an SSE encoder, a buffer for a whole reply,
// chat's Redis stream. Calls come one at a time, never concurrently, on
// whatever thread the previous step completed on. `ready(true)` asks for
// the next piece; `ready(false)` means the consumer has gone (the pipeline
// cancels the generation). Exactly one of OnFinish or OnError ends every
// generation, also one the sink gave up on; OnError may come without
// OnStart (nothing was generated).
class Sink {
 public:
  using Ready = std::function<void(bool more)>;
  virtual ~Sink() = default;
  virtual void OnStart(const StartInfo& info, Ready ready) = 0;
  virtual void OnText(std::string text, Ready ready) = 0;
  virtual void OnFinish(const FinishInfo& info) = 0;
  // `status` carries no internals (see core/public_status.h).
  virtual void OnError(const absl::Status& status) = 0;
};

struct CheckContext {
  std::string request_id;
  std::string org_id;
  std::string end_user_id;
  trace::SpanContext trace;  // the parent of the checks' calls
  // Output: the platform safety policy version the model version serving
  // the request pins (the scheduler's Started); 0: the version in force.
  int64_t platform_policy_version = 0;
};

// Input safety. done(OK): allowed, and InputVerdict says whether the
// org's policy flagged something in it (let through and recorded).
// done(InvalidArgument): refused, with a reason for the caller.
// done(ResourceExhausted): the end user is throttled (a reason, and a
// retry-after payload, core/retry_after.h). Anything else: no verdict (the
// pipeline fails closed).
// Whether an InputGuard's status is safety's verdict against the input
// (refused, or its end user throttled), which the caller is told, rather
// than no verdict (which fails closed).
inline bool IsInputRefusal(const absl::Status& verdict) {
  return verdict.code() == absl::StatusCode::kInvalidArgument ||
         verdict.code() == absl::StatusCode::kResourceExhausted;
}

struct InputVerdict {
  bool flagged = false;
};

class InputGuard {
 public:
  using Done = std::function<void(absl::Status status, InputVerdict verdict)>;
  virtual ~InputGuard() = default;
  virtual void Check(const CheckContext& ctx, std::string text, Done done) = 0;
};

// Output safety for one generation. Push() hands it the next piece of
// generated text and gets back the text that may now be released (possibly
// less than the piece, when a gate holds text back until no rule can still
// match it; possibly more, releasing what it held). Flush() releases the
// rest at the end. A refusal ends the reply after the text released with
// it (stop_reason "refusal"); an error status means no verdict was had and
// ends the generation as failed (fail closed: nothing unreleased is ever
// shown).
class OutputGate {
 public:
  struct Released {
    std::string text;
    std::optional<Refusal> refusal;
    int redacted = 0;  // matches replaced in `text`
    int flagged = 0;   // matches let through in it, flagged
  };
  using Done = std::function<void(absl::StatusOr<Released> released)>;
  virtual ~OutputGate() = default;
  virtual void Push(std::string piece, Done done) = 0;
  virtual void Flush(Done done) = 0;
};

class OutputGates {
 public:
  virtual ~OutputGates() = default;
  virtual std::unique_ptr<OutputGate> Open(const CheckContext& ctx) = 0;
};

// Records, in the safety audit trail, that a generation was refused
// (direction "input") or stopped ("output") because safety gave no verdict:
// the pipeline failed closed.
using FailClosedRecorder = std::function<void(const CheckContext& ctx, std::string_view direction)>;

// The scheduler's Generate stream.
class GenerateCall {
 public:
  virtual ~GenerateCall() = default;
  virtual void Cancel() = 0;  // safe at any time, also after the end
};

class Generator {
 public:
  using Next = std::function<void(bool more)>;
  struct Callbacks {
    // One event at a time; call next(true) for the following one or
    // next(false) to cancel.
    std::function<void(Event&& event, Next next)> on_event;
    // Once, last, with the stream's final status (raw, may hold internals).
    std::function<void(const absl::Status& status)> on_done;
  };
  virtual ~Generator() = default;
  // `trace`: the parent of the calls made for it.
  virtual std::shared_ptr<GenerateCall> Generate(std::shared_ptr<const Request> request,
                                                 const trace::SpanContext& trace,
                                                 Callbacks callbacks) = 0;
};

struct RunOptions {
  // False when the caller already checked the input (a chat turn checks the
  // new message before storing it, not the whole history again).
  bool check_input = true;
  // The span the generation runs for (the API request's, the chat call's):
  // the parent of every call it makes.
  trace::SpanContext trace;
  // Output read from the worker while the previous piece is being checked,
  // at most: it goes to output safety as one piece when that check is done.
  size_t read_ahead_bytes = 4096;
};

// Batching of output by time: a piece of output goes to safety once its
// first byte has waited `wait`, or once it holds `bytes`, whichever comes
// first (and, as always, only when the piece before it is done with). A
// zero `wait` sends each piece as soon as nothing else is being checked.
struct OutputBatching {
  static constexpr absl::Duration kMaxWait = absl::Milliseconds(20);
  Timers* timers = nullptr;  // required when wait > 0
  absl::Duration wait = absl::ZeroDuration();
  size_t bytes = 256;
};

class Generation;

class Pipeline {
 public:
  // `name` labels the metrics ("gateway", "chat").
  // `on_fail_closed` (may be null) records each fail-closed stop.
  Pipeline(std::string name, InputGuard& input, Generator& generator, OutputGates& gates,
           Clock& clock, FailClosedRecorder on_fail_closed = nullptr);

  // Starts a generation; the returned handle may be dropped (the pipeline
  // keeps the generation alive until the sink's terminal call).
  std::shared_ptr<Generation> Run(std::shared_ptr<Request> request, std::shared_ptr<Sink> sink,
                                  RunOptions options = {});

  // Before the first Run. `batching.wait` is clamped to kMaxWait.
  void set_output_batching(OutputBatching batching);

  int64_t active() const { return active_.load(); }
  // Cancels every generation in progress: for shutdown, once the drain
  // grace is over, so that none outlives the objects it calls.
  void CancelAll();

 private:
  friend class Generation;
  std::mutex live_mu_;
  std::unordered_map<const Generation*, std::weak_ptr<Generation>> live_;
  std::string name_;
  InputGuard& input_;
  Generator& generator_;
  OutputGates& gates_;
  Clock& clock_;
  const FailClosedRecorder on_fail_closed_;
  OutputBatching batching_;
  std::atomic<int64_t> active_{0};
  metrics::Gauge& active_gauge_;
  metrics::Counter& finished_;
  metrics::Counter& cancelled_;
  metrics::Counter& failed_;
  metrics::Counter& refused_;
  metrics::Counter& checks_;
  metrics::Histogram& queue_seconds_;
};

// One generation's state machine:
//   kChecking -> kWaiting (Generate called) -> kStreaming (Started seen) -> kDone
// Cancel() may arrive in any state, from any thread.
class Generation : public std::enable_shared_from_this<Generation> {
 public:
  // Stops the generation: the upstream call is cancelled and the sink ends
  // with OnFinish(stop_reason "cancelled", output_tokens the tokens the
  // worker generated so far), also when the worker had just finished. Text
  // the output gate still holds is never released.
  void Cancel();

  const std::string& request_id() const { return request_->request_id(); }

 private:
  friend class Pipeline;
  enum class State { kChecking, kWaiting, kStreaming, kDone };

  Generation(Pipeline& pipeline, std::shared_ptr<Request> request, std::shared_ptr<Sink> sink);
  void Start(const RunOptions& options);
  void OnInputChecked(const absl::Status& verdict);
  void StartGenerate();
  void OnEvent(Event&& event, Generator::Next next);
  void OnStreamDone(const absl::Status& status);
  // Hands `piece` to the output gate (one piece at a time).
  void Check(std::string piece);
  // Whether what was read ahead should go to safety now rather than wait
  // for more (OutputBatching); mu_ held.
  bool BatchReady(absl::Time now) const;
  // Lets ahead_ wait for more text until its time is up (mu_ not held).
  void WaitForBatch(absl::Duration delay, uint64_t seq);
  // The batch waiting under `seq` is due.
  void BatchDue(uint64_t seq);
  void Release(absl::StatusOr<OutputGate::Released> released);
  // The piece being checked is done with (released, refused or failed):
  // what was read ahead goes next, or a deferred end is handled.
  void Checked();
  // No more of the worker's output is wanted (a refusal, a failed check,
  // a sink that went away): the stream is cancelled, read-ahead dropped.
  void StopReading();
  // Records the failure that ends the generation (the first one wins); it
  // must already be fit for the caller.
  void RecordFailure(absl::Status failure);
  absl::Status ProtocolError(const std::string& what) const;
  void Finish(FinishInfo info);
  void CountSafety(const OutputGate::Released& released);
  void Fail(const absl::Status& status);
  bool EnterDone();  // false when already done
  absl::Status PublicFailure(const absl::Status& raw, bool started) const;
  // What an output gate's error means for the caller (fail closed).
  absl::Status GateFailure(const absl::Status& raw) const;
  void RecordFailClosed(std::string_view direction) const;
  // What the safety calls for this generation are told.
  CheckContext Context(int64_t platform_policy_version = 0) const;

  Pipeline& pipeline_;
  std::shared_ptr<Request> request_;
  std::shared_ptr<Sink> sink_;
  std::unique_ptr<OutputGate> gate_;  // opened at the worker's start
  std::shared_ptr<Generation> self_;  // keeps us alive until kDone

  std::mutex mu_;  // guards the fields below; never held while calling out
  State state_ = State::kChecking;
  bool cancel_requested_ = false;
  bool sink_gone_ = false;
  bool saw_finished_ = false;
  absl::Status failure_;
  std::shared_ptr<GenerateCall> call_;
  StartInfo start_;
  FinishInfo finish_;
  std::optional<Refusal> refusal_;  // output safety stopped the reply
  int redacted_ = 0, flagged_ = 0;  // output safety's redactions and flags so far
  size_t read_ahead_bytes_ = 4096;
  bool checking_ = false;  // a piece is with the gate, or its text with the sink
  bool stopped_reading_ = false;
  std::string ahead_;          // read while checking_, checked next
  absl::Time ahead_since_;     // when ahead_'s first byte was read
  // ahead_ waits for more text (OutputBatching), nothing is with the gate;
  // the timer of batch_seq_ ends the wait.
  bool batch_waiting_ = false;
  uint64_t batch_seq_ = 0;
  Generator::Next held_next_;  // withheld while ahead_ is full
  // The stream ended while a piece was being checked: handled after it.
  std::optional<absl::Status> deferred_end_;
  int tokens_received_ = 0;
  absl::Time generate_at_;
  trace::SpanContext trace_;  // set by Start
};

}  // namespace sb::pipeline
