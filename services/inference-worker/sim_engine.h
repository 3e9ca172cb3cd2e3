// The simulated accelerator: vLLM serving a named model on named GPUs.
//
// Each served model runs on its own simulated GPUs (sim/profiles.h:
// sim-small is Llama-3.1-8B on one H100 SXM, sim-large Llama-3.1-70B on four)
// with vLLM's machinery: a paged KV cache of 16-token blocks sized from GPU
// memory, automatic prefix caching, continuous batching under a per-step
// token budget with chunked prefill, and preemption by recomputation when
// blocks run out (sim/replica.h). A step takes the time a roofline cost
// model gives (sim/cost_model.h), calibrated against published vLLM figures
// (bench/RESULTS.md, "Simulator calibration"). It exports vLLM's metrics
// (vllm:*, labelled model_name) in simulated seconds.
//
// The reply is a function of (model, Flatten()) only, so the same request
// always yields the same text, and token counts are exact under the
// word-level tokenizer.
//
// With `run_thread` a thread per model steps on the real clock, sleeping
// each step's time. Without it nothing happens until the caller calls
// Step(), and time is virtual: a step moves the clock by its cost, so tests
// and benchmarks run hours of load in seconds, deterministically.
//
//   SimulatedEngine engine({.models = {"sim-small"}}, /*run_thread=*/false);
//   engine.Submit(request, observer);
//   while (engine.HasWork()) engine.Step();  // observer sees every token
#pragma once

#include <atomic>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <thread>

#include "inference-worker/engine.h"
#include "inference-worker/sim/clock.h"
#include "inference-worker/sim/kv_cache.h"
#include "inference-worker/sim/replica.h"
#include "inference-worker/sim/tokenizer.h"

namespace sb::worker {

struct SimOptions {
  std::vector<std::string> models = {"sim-small"};
  int num_gpus = 0;  // per model; 0: the profile's (1 for sim-small, 4 for sim-large)
  // At most this many steps a second, so each sequence decodes at most this
  // many tokens a second (0: as fast as the simulated GPU).
  double max_steps_per_second = 0;
  double gpu_memory_utilization = 0.9;
  int64_t kv_cache_blocks = 0;  // 0: what the GPUs' memory holds
  int max_num_seqs = 256;
  int max_num_batched_tokens = 8192;
  size_t max_waiting = 1024;  // queued per model
  bool enable_prefix_caching = true;
};

class SimulatedEngine final : public Engine {
 public:
  // Aborts with a message for a model with no profile (bad configuration).
  SimulatedEngine(SimOptions options, bool run_thread);
  // Finishes what is left as "cancelled".
  ~SimulatedEngine() override;

  std::vector<std::string> Models() const override { return options_.models; }
  int CountTokens(std::string_view text) const override { return CountWordTokens(text); }
  absl::Status Submit(EngineRequest request, std::shared_ptr<TokenObserver> observer) override;
  void Cancel(uint64_t id) override;
  EngineLoad Load() const override;
  // With run_thread false, Drain steps the engine itself, until the virtual
  // clock passes `deadline` (it starts at absl::UnixEpoch()).
  void Drain(absl::Time deadline) override;

  // run_thread false only; one thread at a time. Runs the next step to
  // complete on the virtual clock (of whichever model finishes first) and
  // returns what it did; an empty result (model "") when there is no work.
  sim::StepResult Step();
  bool HasWork() const;
  absl::Time Now() const { return clock_->Now(); }

  // The full reply the engine produces for (model, prompt) when nothing
  // stops it early, as tokens.
  static std::vector<std::string> ReplyTokens(const std::string& model, const std::string& prompt);

  // nullptr for a model not served.
  const sim::Replica* replica(std::string_view model) const;
  size_t running() const;
  size_t waiting() const;

 private:
  sim::Replica* Find(std::string_view model) const;
  void Loop(sim::Replica& replica);

  SimOptions options_;
  bool run_thread_;
  std::unique_ptr<sim::StepClock> clock_;
  std::vector<std::unique_ptr<sim::Replica>> replicas_;
  std::atomic<bool> draining_{false};
  std::mutex step_mu_;  // Step() callers

  std::mutex wake_mu_;
  std::condition_variable wake_;
  bool stop_ = false;
  std::vector<std::thread> threads_;
};

}  // namespace sb::worker
