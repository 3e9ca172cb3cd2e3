// The simulated accelerator: deterministic text at a configured token rate.
//
// It runs decode steps like a continuously batching server: each step emits
// one token for every running sequence, and waiting requests join the batch
// at the next step, up to `max_batch`. The text is a function of (model,
// prompt) only, so the same request always yields the same reply, and the
// token counts are exact under its word-level tokenizer.
//
// Step() is public so that tests drive the engine step by step with no
// thread and no clock.
#pragma once

#include <atomic>
#include <condition_variable>
#include <deque>
#include <list>
#include <mutex>
#include <thread>
#include <vector>

#include "inference-worker/engine.h"

namespace sb::worker {

// Word-level tokenizer: a run of letters and digits is one token, and so is
// every other non-space character.
int CountWordTokens(std::string_view text);

struct SimOptions {
  std::vector<std::string> models = {"sim-small"};
  double tokens_per_second = 50;  // per sequence: one token per step
  int max_batch = 64;
  size_t max_waiting = 1024;  // queued beyond a full batch
};

class SimulatedEngine final : public Engine {
 public:
  // With `run_thread` false nothing happens until the caller calls Step().
  SimulatedEngine(SimOptions options, bool run_thread);
  ~SimulatedEngine() override;

  std::vector<std::string> Models() const override { return options_.models; }
  int CountTokens(std::string_view text) const override { return CountWordTokens(text); }
  absl::Status Submit(EngineRequest request, std::shared_ptr<TokenObserver> observer) override;
  void Cancel(uint64_t id) override;
  EngineLoad Load() const override;
  void Drain(absl::Time deadline) override;

  // One decode step over the batch. Returns the number of tokens emitted.
  int Step();
  // The full reply the engine produces for (model, prompt) when nothing
  // stops it early, as tokens.
  static std::vector<std::string> ReplyTokens(const std::string& model, const std::string& prompt);

  size_t running() const;
  size_t waiting() const;

 private:
  struct Sequence {
    EngineRequest request;
    std::shared_ptr<TokenObserver> sink;
    std::vector<std::string> tokens;
    size_t next = 0;        // tokens generated
    std::string generated;  // their text
    size_t released = 0;    // bytes of it handed to the sink
    bool cancelled = false;
  };

  void Loop();
  bool Advance(Sequence& seq);  // true when the sequence is done

  SimOptions options_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Sequence> waiting_;
  std::list<Sequence> running_;
  bool stop_ = false;
  bool draining_ = false;
  std::vector<uint64_t> cancels_;  // ids to cancel at the next step
  std::thread thread_;
};

}  // namespace sb::worker
