#include "testing/fake_pipeline.h"

namespace sb::testing {

pipeline::Event Started(const std::string& model, int input_tokens) {
  pipeline::Event e;
  e.mutable_started()->set_model(model);
  e.mutable_started()->set_worker_id("fake-worker");
  e.mutable_started()->set_input_tokens(input_tokens);
  return e;
}

pipeline::Event Token(const std::string& text, int index) {
  pipeline::Event e;
  e.mutable_token()->set_text(text);
  e.mutable_token()->set_index(index);
  return e;
}

pipeline::Event Finished(const std::string& stop_reason, int input_tokens, int output_tokens,
                         const std::string& stop_sequence) {
  pipeline::Event e;
  auto* f = e.mutable_finished();
  f->set_stop_reason(stop_reason);
  f->set_stop_sequence(stop_sequence);
  f->set_input_tokens(input_tokens);
  f->set_output_tokens(output_tokens);
  return e;
}

bool FakeGenerator::Call::Emit(pipeline::Event e) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!wants_more_ || ended_ || cancelled_) return false;
    wants_more_ = false;
  }
  callbacks_.on_event(std::move(e), [self = shared_from_this()](bool more) { self->OnNext(more); });
  return true;
}

bool FakeGenerator::Call::End(absl::Status status) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!wants_more_ || ended_) return false;
    ended_ = true;
  }
  Finish(status);
  return true;
}

void FakeGenerator::Call::Cancel() {
  bool end_now;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (cancelled_ || ended_) return;
    cancelled_ = true;
    end_now = wants_more_;  // else: when the consumer hands the event back
    if (end_now) ended_ = true;
  }
  if (end_now) Finish(absl::CancelledError("cancelled"));
}

void FakeGenerator::Call::OnNext(bool more) {
  bool end_now;
  {
    std::lock_guard<std::mutex> lock(mu_);
    wants_more_ = true;
    if (!more) cancelled_ = true;
    end_now = cancelled_ && !ended_;
    if (end_now) ended_ = true;
  }
  if (end_now) {
    Finish(absl::CancelledError("cancelled"));
    return;
  }
  Play();
}

void FakeGenerator::Call::Finish(const absl::Status& status) {
  // Like a gRPC reactor that deletes itself: the consumer's callbacks (and
  // what they hold) are released once the stream is done.
  Callbacks callbacks = std::move(callbacks_);
  callbacks_ = {};
  callbacks.on_done(status);
}

void FakeGenerator::Call::Play() {
  pipeline::Event next;
  bool end = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!scripted_ || !wants_more_ || ended_) return;
    if (script_.empty()) {
      end = true;
    } else {
      next = std::move(script_.front());
      script_.pop_front();
    }
  }
  if (end) {
    End(script_status_);
  } else {
    Emit(std::move(next));
  }
}

bool FakeGenerator::Call::wants_more() const {
  std::lock_guard<std::mutex> lock(mu_);
  return wants_more_ && !ended_;
}

bool FakeGenerator::Call::cancelled() const {
  std::lock_guard<std::mutex> lock(mu_);
  return cancelled_;
}

bool FakeGenerator::Call::ended() const {
  std::lock_guard<std::mutex> lock(mu_);
  return ended_;
}

std::shared_ptr<pipeline::GenerateCall> FakeGenerator::Generate(
    std::shared_ptr<const pipeline::Request> request, const trace::SpanContext& trace,
    Callbacks callbacks) {
  auto call = std::make_shared<Call>();
  call->request_ = std::move(request);
  call->trace_ = trace;
  call->callbacks_ = std::move(callbacks);
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (scripted_) {
      call->scripted_ = true;
      call->script_.assign(script_.begin(), script_.end());
      call->script_status_ = script_status_;
    }
    calls_.push_back(call);
  }
  call->Play();
  return call;
}

std::shared_ptr<FakeGenerator::Call> FakeGenerator::last() const {
  std::lock_guard<std::mutex> lock(mu_);
  return calls_.empty() ? nullptr : calls_.back();
}

std::shared_ptr<FakeGenerator::Call> FakeGenerator::call(size_t i) const {
  std::lock_guard<std::mutex> lock(mu_);
  return i < calls_.size() ? calls_[i] : nullptr;
}

size_t FakeGenerator::calls() const {
  std::lock_guard<std::mutex> lock(mu_);
  return calls_.size();
}

void FakeInputGuard::Check(const pipeline::CheckContext& ctx, std::string text, Done done) {
  contexts_.push_back(ctx);
  texts_.push_back(std::move(text));
  if (hold_) {
    held_.push_back(std::move(done));
    return;
  }
  done(verdict_, {.flagged = verdict_.ok() && flagged_});
}

void FakeInputGuard::Release() {
  auto held = std::move(held_);
  held_.clear();
  for (auto& done : held) done(verdict_, {.flagged = verdict_.ok() && flagged_});
}

class FakeOutputGate final : public pipeline::OutputGate {
 public:
  explicit FakeOutputGate(FakeOutputGates& gates) : gates_(gates) {}
  void Push(std::string piece, Done done) override {
    ++gates_.pushes_;
    gates_.pieces_.push_back(piece);
    if (gates_.hold_) {
      gates_.held_.push_back([this, piece = std::move(piece), done = std::move(done)]() mutable {
        Decide(std::move(piece), std::move(done));
      });
      return;
    }
    Decide(std::move(piece), std::move(done));
  }
  void Flush(Done done) override { done(Released{}); }

 private:
  void Decide(std::string piece, const Done& done) {
    if (!gates_.status_.ok()) {
      done(gates_.status_);
    } else if (const size_t at =
                   gates_.blocked_.empty() ? std::string::npos : piece.find(gates_.blocked_);
               at != std::string::npos) {
      // What came before the match goes out; the reply stops there.
      done(Released{.text = piece.substr(0, at),
                    .refusal = pipeline::Refusal{"test.rule", "the output matched a test rule"}});
    } else if (Holds(piece, gates_.redacted_)) {
      done(Released{.text = "[REDACTED]", .redacted = 1});
    } else {
      const int flagged = Holds(piece, gates_.flagged_) ? 1 : 0;
      done(Released{.text = std::move(piece), .flagged = flagged});
    }
  }

  static bool Holds(const std::string& piece, const std::string& s) {
    return !s.empty() && piece.find(s) != std::string::npos;
  }

  FakeOutputGates& gates_;
};

bool FakeOutputGates::Answer() {
  if (held_.empty()) return false;
  auto answer = std::move(held_.front());
  held_.pop_front();
  answer();
  return true;
}

std::unique_ptr<pipeline::OutputGate> FakeOutputGates::Open(const pipeline::CheckContext& ctx) {
  opened_.push_back(ctx);
  return std::make_unique<FakeOutputGate>(*this);
}

}  // namespace sb::testing
