#include "pipeline/pipeline.h"

#include <spdlog/spdlog.h>

#include "core/metrics.h"
#include "core/public_status.h"

namespace sb::pipeline {
namespace {

metrics::Counter& Outcome(const std::string& pipeline, const char* outcome) {
  return metrics::Default().GetCounter("sb_pipeline_generations_total",
                                       "Generations by how they ended",
                                       {{"pipeline", pipeline}, {"outcome", outcome}});
}

// What input safety reads: every text block, system first, one per line.
std::string InputText(const Request& r) {
  std::string text;
  auto add = [&text](const switchboard::inference::v1::ContentBlock& b) {
    if (!text.empty()) text += '\n';
    text += b.text();
  };
  for (const auto& b : r.system()) add(b);
  for (const auto& m : r.messages()) {
    for (const auto& b : m.content()) add(b);
  }
  return text;
}

}  // namespace

Pipeline::Pipeline(std::string name, InputGuard& input, Generator& generator, OutputGates& gates,
                   Clock& clock, FailClosedRecorder on_fail_closed)
    : name_(std::move(name)),
      input_(input),
      generator_(generator),
      gates_(gates),
      clock_(clock),
      on_fail_closed_(std::move(on_fail_closed)),
      active_gauge_(metrics::Default().GetGauge("sb_pipeline_active_generations",
                                                "Generations in progress", {{"pipeline", name_}})),
      finished_(Outcome(name_, "finished")),
      cancelled_(Outcome(name_, "cancelled")),
      failed_(Outcome(name_, "failed")),
      refused_(Outcome(name_, "refused")),
      checks_(metrics::Default().GetCounter(
          "sb_pipeline_output_checks_total",
          "Pieces of output handed to output safety (tokens read while one is checked go as one)",
          {{"pipeline", name_}})),
      queue_seconds_(metrics::Default().GetHistogram(
          "sb_pipeline_queue_seconds", "From asking the scheduler to the worker's first event",
          {{"pipeline", name_}})) {}

void Pipeline::set_output_batching(OutputBatching batching) {
  batching.wait = std::clamp(batching.wait, absl::ZeroDuration(), OutputBatching::kMaxWait);
  if (batching.timers == nullptr) batching.wait = absl::ZeroDuration();
  batching_ = batching;
}

std::shared_ptr<Generation> Pipeline::Run(std::shared_ptr<Request> request,
                                          std::shared_ptr<Sink> sink, RunOptions options) {
  std::shared_ptr<Generation> gen(new Generation(*this, std::move(request), std::move(sink)));
  gen->self_ = gen;
  active_.fetch_add(1);
  active_gauge_.Add(1);
  {
    std::lock_guard<std::mutex> lock(live_mu_);
    live_.emplace(gen.get(), gen);
  }
  gen->Start(options);
  return gen;
}

void Pipeline::CancelAll() {
  std::vector<std::shared_ptr<Generation>> live;
  {
    std::lock_guard<std::mutex> lock(live_mu_);
    for (const auto& [ptr, weak] : live_) {
      if (auto g = weak.lock()) live.push_back(std::move(g));
    }
  }
  for (auto& g : live) g->Cancel();
}

Generation::Generation(Pipeline& pipeline, std::shared_ptr<Request> request,
                       std::shared_ptr<Sink> sink)
    : pipeline_(pipeline), request_(std::move(request)), sink_(std::move(sink)) {}

void Generation::Start(const RunOptions& options) {
  trace_ = options.trace;
  read_ahead_bytes_ = options.read_ahead_bytes;
  if (!options.check_input) {
    StartGenerate();
    return;
  }
  pipeline_.input_.Check(Context(), InputText(*request_),
                         [self = shared_from_this()](absl::Status verdict, InputVerdict) {
                           self->OnInputChecked(verdict);
                         });
}

void Generation::OnInputChecked(const absl::Status& verdict) {
  bool cancelled;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (state_ == State::kDone) return;
    cancelled = cancel_requested_;
  }
  if (cancelled) {
    Finish({.stop_reason = "cancelled"});
    return;
  }
  if (IsInputRefusal(verdict)) {
    pipeline_.refused_.Inc();
    Fail(verdict);
    return;
  }
  if (!verdict.ok()) {
    // Fail closed: no verdict, no generation.
    spdlog::warn("request_id={} input safety unavailable: {}", request_id(), verdict.ToString());
    RecordFailClosed("input");
    Fail(absl::UnavailableError(
        "the safety check is unavailable, so the request was not run; retry"));
    return;
  }
  StartGenerate();
}

void Generation::StartGenerate() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (state_ == State::kDone) return;
    state_ = State::kWaiting;
    generate_at_ = pipeline_.clock_.Now();
  }
  auto self = shared_from_this();
  auto call = pipeline_.generator_.Generate(
      request_, trace_,
      {.on_event = [self](Event&& e,
                          Generator::Next next) { self->OnEvent(std::move(e), std::move(next)); },
       .on_done = [self](const absl::Status& st) { self->OnStreamDone(st); }});
  bool cancel_now;
  {
    std::lock_guard<std::mutex> lock(mu_);
    call_ = call;
    cancel_now = cancel_requested_ && state_ != State::kDone;
  }
  if (cancel_now) call->Cancel();
}

void Generation::Cancel() {
  std::shared_ptr<GenerateCall> call;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (state_ == State::kDone || cancel_requested_) return;
    cancel_requested_ = true;
    call = call_;
  }
  // While the input check runs there is no call yet: OnInputChecked ends it.
  if (call) call->Cancel();
}

void Generation::OnEvent(Event&& e, Generator::Next next) {
  auto sink_ready = [self = shared_from_this(), next](bool more) {
    if (!more) {
      std::lock_guard<std::mutex> lock(self->mu_);
      self->sink_gone_ = true;
    }
    next(more);
  };
  if (e.has_started()) {
    StartInfo info;
    bool proceed, out_of_order;
    {
      std::lock_guard<std::mutex> lock(mu_);
      proceed = !cancel_requested_ && state_ == State::kWaiting;
      out_of_order = !cancel_requested_ && state_ != State::kWaiting;
      if (proceed) {
        // The output gate, under the policy the serving version pins.
        gate_ = pipeline_.gates_.Open(Context(e.started().safety_policy_version()));
        state_ = State::kStreaming;
        start_ = {e.started().model(), e.started().input_tokens()};
        info = start_;
        pipeline_.queue_seconds_.Observe(
            absl::ToDoubleSeconds(pipeline_.clock_.Now() - generate_at_));
      }
    }
    // Never call out with mu_ held: next() may complete the stream inline.
    if (out_of_order) RecordFailure(ProtocolError("a second start"));
    if (!proceed) {
      next(false);
      return;
    }
    sink_->OnStart(info, sink_ready);
    return;
  }
  if (e.has_token()) {
    std::string& text = *e.mutable_token()->mutable_text();
    bool in_order, check = false, hold = false, stopped;
    uint64_t wait_seq = 0;
    {
      std::lock_guard<std::mutex> lock(mu_);
      in_order = state_ == State::kStreaming;
      stopped = stopped_reading_;
      if (in_order && !stopped) {
        ++tokens_received_;
        const absl::Time now = pipeline_.clock_.Now();
        if (!checking_ && pipeline_.batching_.wait > absl::ZeroDuration()) {
          // Nothing with the gate: this piece starts a batch, which waits
          // for more unless it is ready at once (below).
          checking_ = batch_waiting_ = true;
          wait_seq = ++batch_seq_;
        }
        if (checking_) {
          // Read ahead while the previous piece is checked, or while a batch
          // fills; past the bound the worker's stream waits.
          if (ahead_.empty()) ahead_since_ = now;
          ahead_ += text;
          if (batch_waiting_ && BatchReady(now)) {
            batch_waiting_ = false;
            wait_seq = 0;  // no timer now; one armed earlier finds its batch gone
            text = std::move(ahead_);
            ahead_.clear();
            check = true;
          } else {
            hold = ahead_.size() >= read_ahead_bytes_;
            if (hold) held_next_ = next;
          }
        } else {
          checking_ = check = true;
        }
      }
    }
    if (!in_order) {
      RecordFailure(ProtocolError("a token before its start"));
      next(false);
      return;
    }
    if (stopped) {
      next(false);
      return;
    }
    if (check) Check(std::move(text));
    if (wait_seq != 0) WaitForBatch(pipeline_.batching_.wait, wait_seq);
    if (hold) return;
    {
      std::lock_guard<std::mutex> lock(mu_);
      stopped = stopped_reading_;
    }
    next(!stopped);
    return;
  }
  if (e.has_finished()) {
    std::lock_guard<std::mutex> lock(mu_);
    saw_finished_ = true;
    const auto& f = e.finished();
    finish_ = {f.stop_reason(),   f.stop_sequence(),           f.input_tokens(),
               f.output_tokens(), f.cache_read_input_tokens(), f.cache_creation_input_tokens()};
  }
  next(true);
}

void Generation::CountSafety(const OutputGate::Released& released) {
  std::lock_guard<std::mutex> lock(mu_);
  redacted_ += released.redacted;
  flagged_ += released.flagged;
}

void Generation::Check(std::string piece) {
  pipeline_.checks_.Inc();
  gate_->Push(std::move(piece),
              [self = shared_from_this()](absl::StatusOr<OutputGate::Released> released) {
                self->Release(std::move(released));
              });
}

bool Generation::BatchReady(absl::Time now) const {
  const OutputBatching& batching = pipeline_.batching_;
  return ahead_.size() >= std::min(batching.bytes, read_ahead_bytes_) ||
         now - ahead_since_ >= batching.wait;
}

void Generation::WaitForBatch(absl::Duration delay, uint64_t seq) {
  std::weak_ptr<Generation> weak = shared_from_this();
  pipeline_.batching_.timers->After(delay, [weak, seq] {
    if (auto self = weak.lock()) self->BatchDue(seq);
  });
}

void Generation::BatchDue(uint64_t seq) {
  std::string piece;
  {
    std::lock_guard<std::mutex> lock(mu_);
    // A stale timer: its batch already went (full, or the stream ended).
    if (!batch_waiting_ || seq != batch_seq_) return;
    batch_waiting_ = false;
    piece = std::move(ahead_);
    ahead_.clear();
  }
  Check(std::move(piece));
}

void Generation::Release(absl::StatusOr<OutputGate::Released> released) {
  if (!released.ok()) RecordFailure(GateFailure(released.status()));
  if (released.ok()) CountSafety(*released);
  bool stop;
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop = !released.ok() || cancel_requested_;
    if (!stop && released->refusal) refusal_ = released->refusal;
  }
  if (stop) {
    StopReading();
    Checked();
    return;
  }
  // A refusal stops the generation once the text before it is out.
  const bool refused = released->refusal.has_value();
  if (released->text.empty()) {
    if (refused) StopReading();
    Checked();
    return;
  }
  sink_->OnText(std::move(released->text), [self = shared_from_this(), refused](bool more) {
    if (!more) {
      std::lock_guard<std::mutex> lock(self->mu_);
      self->sink_gone_ = true;
    }
    if (!more || refused) self->StopReading();
    self->Checked();
  });
}

void Generation::StopReading() {
  Generator::Next held;
  std::shared_ptr<GenerateCall> call;
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopped_reading_ = true;
    ahead_.clear();
    held = std::move(held_next_);
    held_next_ = nullptr;
    call = call_;
  }
  if (held) held(false);
  if (call) call->Cancel();
}

void Generation::Checked() {
  std::string piece;
  Generator::Next held;
  std::optional<absl::Status> end;
  uint64_t wait_seq = 0;
  absl::Duration wait;
  {
    std::lock_guard<std::mutex> lock(mu_);
    const absl::Time now = pipeline_.clock_.Now();
    if (!stopped_reading_ && !ahead_.empty() && !deferred_end_ && !BatchReady(now)) {
      // What was read meanwhile waits for more (checking_ stays set).
      batch_waiting_ = true;
      wait_seq = ++batch_seq_;
      wait = pipeline_.batching_.wait - (now - ahead_since_);
    } else if (!stopped_reading_ && !ahead_.empty()) {
      // What was read meanwhile is the next piece (checking_ stays set).
      piece = std::move(ahead_);
      ahead_.clear();
    } else {
      checking_ = false;
      end = std::move(deferred_end_);
      deferred_end_.reset();
    }
    held = std::move(held_next_);
    held_next_ = nullptr;
  }
  if (!piece.empty()) Check(std::move(piece));
  if (wait_seq != 0) WaitForBatch(wait, wait_seq);
  if (held) held(true);  // room to read ahead again
  if (end) OnStreamDone(*end);
}

void Generation::RecordFailure(absl::Status failure) {
  std::lock_guard<std::mutex> lock(mu_);
  if (failure_.ok()) failure_ = std::move(failure);
}

absl::Status Generation::ProtocolError(const std::string& what) const {
  return PublicStatus(absl::InternalError("the worker's stream sent " + what), request_id(),
                      "the generation");
}

void Generation::OnStreamDone(const absl::Status& status) {
  absl::Status failure;
  bool sink_gone, cancelled, saw_finished, started;
  FinishInfo cancelled_info, refused_info;
  std::optional<Refusal> refusal;
  std::string batch;
  bool deferred;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (state_ == State::kDone) return;
    if (batch_waiting_) {
      // The batch will get no more text: it goes now (the end follows it),
      // unless the generation was cancelled (held text is never released).
      batch_waiting_ = false;
      batch = std::move(ahead_);
      ahead_.clear();
      if (cancel_requested_) {
        batch.clear();
        checking_ = false;
      }
    }
    deferred = checking_;
    if (deferred) {
      // A piece is still with the gate or the sink (or is the batch): the
      // end comes after it (and after what was read ahead).
      deferred_end_ = status;
    } else {
      failure = failure_;
      sink_gone = sink_gone_;
      cancelled = cancel_requested_;
      saw_finished = saw_finished_;
      started = state_ == State::kStreaming;
      cancelled_info = {.stop_reason = "cancelled",
                        .input_tokens = start_.input_tokens,
                        .output_tokens = tokens_received_};
      refusal = refusal_;
      // The tokens up to the refusal (as for a cancel), or all of them when
      // the worker had finished.
      refused_info = saw_finished ? finish_ : cancelled_info;
    }
  }
  if (deferred) {
    if (!batch.empty()) Check(std::move(batch));
    return;
  }
  if (!failure.ok()) {  // already fit for the caller
    Fail(failure);
    return;
  }
  if (sink_gone) {
    Fail(absl::CancelledError("the client went away"));
    return;
  }
  if (refusal) {
    refused_info.stop_reason = "refusal";
    refused_info.stop_sequence.clear();
    refused_info.refusal = std::move(refusal);
    Finish(refused_info);
    return;
  }
  if (cancelled) {
    Finish(cancelled_info);
    return;
  }
  if (!status.ok()) {
    Fail(PublicFailure(status, started));
    return;
  }
  if (!saw_finished) {
    Fail(PublicFailure(absl::InternalError("the generation stream ended without a result"),
                       started));
    return;
  }
  if (!started) {  // a result with no start before it: no gate was opened
    Fail(ProtocolError("a result before its start"));
    return;
  }
  // The end: what the gate still holds is checked and released last.
  gate_->Flush([self = shared_from_this()](absl::StatusOr<OutputGate::Released> rest) {
    if (!rest.ok()) {
      self->Fail(self->GateFailure(rest.status()));
      return;
    }
    self->CountSafety(*rest);
    FinishInfo info = self->finish_;
    if (rest->refusal) {
      info.stop_reason = "refusal";
      info.stop_sequence.clear();
      info.refusal = std::move(rest->refusal);
    }
    if (rest->text.empty()) {
      self->Finish(info);
      return;
    }
    self->sink_->OnText(std::move(rest->text), [self, info](bool) { self->Finish(info); });
  });
}

absl::Status Generation::GateFailure(const absl::Status& raw) const {
  spdlog::warn("request_id={} output safety unavailable: {}", request_id(), raw.ToString());
  RecordFailClosed("output");
  return absl::UnavailableError(
      "the output safety check is unavailable, so the generation was stopped; retry");
}

void Generation::RecordFailClosed(std::string_view direction) const {
  if (!pipeline_.on_fail_closed_) return;
  pipeline_.on_fail_closed_(Context(), direction);
}

CheckContext Generation::Context(int64_t platform_policy_version) const {
  return {request_->request_id(), request_->org_id(), request_->end_user_id(), trace_,
          platform_policy_version};
}

absl::Status Generation::PublicFailure(const absl::Status& raw, bool started) const {
  switch (raw.code()) {
    case absl::StatusCode::kUnavailable:
    case absl::StatusCode::kResourceExhausted:
    case absl::StatusCode::kCancelled:  // not asked for: a backend gave up
      // A backend's overload is never the caller's rate limit (429): it is
      // capacity (529), or a failure mid-stream.
      spdlog::warn("request_id={} generation failed: {}", request_id(), raw.ToString());
      return absl::UnavailableError(
          started
              ? "the generation was interrupted by a backend failure; retry the request"
              : "no capacity to serve model " + request_->model() + " right now; retry shortly");
    case absl::StatusCode::kDeadlineExceeded:
      spdlog::warn("request_id={} generation failed: {}", request_id(), raw.ToString());
      return absl::DeadlineExceededError("the generation took too long");
    default:
      return PublicStatus(raw, request_id(), "the generation");
  }
}

bool Generation::EnterDone() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (state_ == State::kDone) return false;
    state_ = State::kDone;
  }
  std::lock_guard<std::mutex> lock(pipeline_.live_mu_);
  pipeline_.live_.erase(this);
  return true;
}

void Generation::Finish(FinishInfo info) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    info.safety_redacted = redacted_;
    info.safety_flagged = flagged_;
  }
  if (!EnterDone()) return;
  auto keep = std::move(self_);
  (info.stop_reason == "cancelled" ? pipeline_.cancelled_
   : info.stop_reason == "refusal" ? pipeline_.refused_
                                   : pipeline_.finished_)
      .Inc();
  pipeline_.active_.fetch_sub(1);
  pipeline_.active_gauge_.Add(-1);
  sink_->OnFinish(info);
}

void Generation::Fail(const absl::Status& status) {
  if (!EnterDone()) return;
  auto keep = std::move(self_);
  if (status.code() == absl::StatusCode::kCancelled) {
    pipeline_.cancelled_.Inc();
  } else if (!IsInputRefusal(status)) {
    pipeline_.failed_.Inc();
  }
  pipeline_.active_.fetch_sub(1);
  pipeline_.active_gauge_.Add(-1);
  sink_->OnError(status);
}

}  // namespace sb::pipeline
