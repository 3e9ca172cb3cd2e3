// Fakes of the pipeline's backends (safety and the scheduler's Generate
// stream) that behave like the gRPC ones: events one at a time, each only
// after the consumer asked for it; a cancel ends the stream with CANCELLED
// once no event is with the consumer.
//
//   FakeGenerator gen;
//   auto gen_handle = pipeline.Run(request, sink);
//   auto call = gen.last();
//   call->Emit(Started("sim-small", 3));   // returns false if not asked for
//   call->Emit(Token("Hello"));
//   call->End(absl::OkStatus());
//
// With `script` set, a call plays it by itself as fast as the consumer
// asks (inline, on the consumer's stack, as gRPC may do).
#pragma once

#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "pipeline/pipeline.h"

namespace sb::testing {

pipeline::Event Started(const std::string& model, int input_tokens);
pipeline::Event Token(const std::string& text, int index = 0);
pipeline::Event Finished(const std::string& stop_reason, int input_tokens, int output_tokens,
                         const std::string& stop_sequence = "");

class FakeGenerator final : public pipeline::Generator {
 public:
  class Call final : public pipeline::GenerateCall, public std::enable_shared_from_this<Call> {
   public:
    // Delivers an event; false when the consumer has not asked for one
    // (it is still busy with the previous event, or the call ended).
    bool Emit(pipeline::Event e);
    // Ends the stream; false when an event is still with the consumer.
    bool End(absl::Status status);
    void Cancel() override;

    bool wants_more() const;
    bool cancelled() const;
    bool ended() const;
    const pipeline::Request& request() const { return *request_; }
    const trace::SpanContext& trace() const { return trace_; }

   private:
    friend class FakeGenerator;
    void OnNext(bool more);
    void Play();
    void Finish(const absl::Status& status);

    mutable std::mutex mu_;
    std::shared_ptr<const pipeline::Request> request_;
    trace::SpanContext trace_;
    Callbacks callbacks_;
    bool wants_more_ = true;  // a "read" is pending
    bool cancelled_ = false;
    bool ended_ = false;
    std::deque<pipeline::Event> script_;
    bool scripted_ = false;
    absl::Status script_status_;
  };

  std::shared_ptr<pipeline::GenerateCall> Generate(std::shared_ptr<const pipeline::Request> request,
                                                   const trace::SpanContext& trace,
                                                   Callbacks callbacks) override;

  // Played by every later call: the events, then the final status.
  void set_script(std::vector<pipeline::Event> events, absl::Status end = absl::OkStatus()) {
    std::lock_guard<std::mutex> lock(mu_);
    script_ = std::move(events);
    script_status_ = std::move(end);
    scripted_ = true;
  }
  std::shared_ptr<Call> last() const;
  std::shared_ptr<Call> call(size_t i) const;
  size_t calls() const;

 private:
  mutable std::mutex mu_;
  std::vector<std::shared_ptr<Call>> calls_;
  std::vector<pipeline::Event> script_;
  absl::Status script_status_;
  bool scripted_ = false;
};

// Input safety: a verdict for every check, or held until Release().
class FakeInputGuard final : public pipeline::InputGuard {
 public:
  void Check(const pipeline::CheckContext& ctx, std::string text, Done done) override;
  void set_verdict(absl::Status verdict) { verdict_ = std::move(verdict); }
  // An allowed input is flagged (the org's policy lets it through and records it).
  void set_flagged(bool flagged) { flagged_ = flagged; }
  void set_hold(bool hold) { hold_ = hold; }
  // Answers the held checks with the verdict.
  void Release();
  const std::vector<std::string>& texts() const { return texts_; }
  const std::vector<pipeline::CheckContext>& contexts() const { return contexts_; }

 private:
  absl::Status verdict_;
  bool flagged_ = false;
  std::vector<pipeline::CheckContext> contexts_;
  bool hold_ = false;
  std::vector<std::string> texts_;
  std::vector<Done> held_;
};

// Output safety: releases each piece at once (or, with set_hold, when
// Answer() is called: a check under way); a piece that contains
// `blocked_substring` is released up to it and refused there (category
// "test.rule"); every Push is answered with `status` when it is set (safety
// down).
class FakeOutputGates final : public pipeline::OutputGates {
 public:
  std::unique_ptr<pipeline::OutputGate> Open(const pipeline::CheckContext& ctx) override;
  void set_blocked_substring(std::string s) { blocked_ = std::move(s); }
  // A piece holding `s` comes back as "[REDACTED]" (one redaction), or
  // whole and flagged.
  void set_redacted_substring(std::string s) { redacted_ = std::move(s); }
  void set_flagged_substring(std::string s) { flagged_ = std::move(s); }
  void set_status(absl::Status st) { status_ = std::move(st); }
  void set_hold(bool hold) { hold_ = hold; }
  // Answers the oldest held piece; false when none is held.
  bool Answer();
  size_t held() const { return held_.size(); }
  int pushes() const { return pushes_; }
  // Every piece pushed, in order.
  const std::vector<std::string>& pieces() const { return pieces_; }
  const std::vector<pipeline::CheckContext>& opened() const { return opened_; }

 private:
  friend class FakeOutputGate;
  std::vector<pipeline::CheckContext> opened_;
  std::string blocked_, redacted_, flagged_;
  absl::Status status_;
  int pushes_ = 0;
  bool hold_ = false;
  std::vector<std::string> pieces_;
  std::deque<std::function<void()>> held_;
};

}  // namespace sb::testing
