// Simulator calibration (issue 8): step time and throughput of the simulated
// vLLM at batch 1/8/32/128 and prompts of 512/2,048 tokens, time to first
// token alone, and the prefix cache's cold vs warm TTFT, all on the virtual
// clock. No timed assertions: the figures go to bench/RESULTS.md.
//
//   build/bench/sim_bench
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "inference-worker/sim_engine.h"

namespace sb::worker {
namespace {

class Stamp : public TokenObserver {
 public:
  explicit Stamp(const SimulatedEngine& e) : engine_(e) {}
  void OnToken(std::string_view, int tokens) override {
    if (tokens > 0 && first == absl::InfinitePast()) first = engine_.Now();
  }
  void OnFinished(const FinishInfo&) override {}
  absl::Time first = absl::InfinitePast();

 private:
  const SimulatedEngine& engine_;
};

// A prompt of exactly `tokens` tokens once flattened ("\nuser: " is two).
EngineRequest Prompt(const std::string& model, int tokens, const std::string& tag,
                     const std::string& system = "") {
  EngineRequest r;
  r.model = model;
  r.system = system;
  std::string text;
  for (int i = 0; i < tokens - 2 - CountWordTokens(system); ++i) {
    text += tag + std::to_string(i) + " ";
  }
  r.messages = {{"user", text}};
  r.input_tokens = CountWordTokens(r.Flatten());
  r.max_tokens = 1 << 20;
  return r;
}

struct DecodeFigures {
  double prefill_ms = 0;  // until every sequence had its first token
  double step_ms = 0;     // mean decode step with the whole batch running
  double tokens_per_second = 0;
};

DecodeFigures MeasureBatch(const std::string& model, int batch, int prompt) {
  // One prefill step for the whole batch: with chunking, the first replies
  // (12 to 51 tokens) would end before the last prompt is in.
  SimulatedEngine e(
      {.models = {model}, .max_num_batched_tokens = 1 << 20, .enable_prefix_caching = false},
      false);
  for (int i = 0; i < batch; ++i) {
    e.Submit(Prompt(model, prompt, "r" + std::to_string(i) + "w"), std::make_shared<Stamp>(e))
        .IgnoreError();
  }
  DecodeFigures f;
  while (true) {
    const sim::StepResult r = e.Step();
    if (r.model.empty()) return f;  // never whole: report zeros
    if (r.decode_tokens == batch && r.prefill_tokens == 0) {
      // The first all-decode step.
      f.prefill_ms = absl::ToDoubleMilliseconds(r.start - absl::UnixEpoch());
      double total = absl::ToDoubleMilliseconds(r.duration);
      int n = 1;
      // Every reply has at least 12 tokens, so the batch stays whole for 10.
      for (; n < 10; ++n) {
        const sim::StepResult d = e.Step();
        if (d.decode_tokens != batch) break;
        total += absl::ToDoubleMilliseconds(d.duration);
      }
      f.step_ms = total / n;
      f.tokens_per_second = batch / (f.step_ms / 1000);
      return f;
    }
  }
}

double TtftMs(SimulatedEngine& e, const EngineRequest& r) {
  auto stamp = std::make_shared<Stamp>(e);
  const absl::Time sent = e.Now();
  e.Submit(r, stamp).IgnoreError();
  while (e.HasWork()) e.Step();
  return absl::ToDoubleMilliseconds(stamp->first - sent);
}

double Ms(absl::Duration d) { return absl::ToDoubleMilliseconds(d); }

// A fixed-length run straight from the cost model (the engine's replies are
// 12 to 51 tokens, too short for these): one prefill step of the batch, then
// `output - 1` decode steps. Returns (total ms, mean decode step ms).
std::pair<double, double> FixedRun(const sim::CostModel& cost, int batch, int input, int output) {
  std::vector<sim::SequenceWork> prefill(batch, {.new_tokens = input, .context = 0});
  double total = Ms(cost.StepTime(prefill));
  double decode = 0;
  for (int i = 1; i < output; ++i) {
    const double step = Ms(cost.StepTime(
        std::vector<sim::SequenceWork>(batch, {.new_tokens = 1, .context = input + i})));
    decode += step;
    total += step;
  }
  return {total, decode / (output - 1)};
}

void Published() {
  std::printf("\nAgainst published vLLM figures (cost model, same shapes)\n\n");
  std::printf("| case | published | simulated | difference |\n|---|---|---|---|\n");
  auto on = [](sim::GpuProfile gpu) {
    sim::Deployment d = *sim::DeploymentFor("sim-small");
    d.gpu = std::move(gpu);
    return sim::CostModel(d);
  };
  auto row = [](const char* what, double published, double simulated, const char* unit) {
    std::printf("| %s | %.1f %s | %.1f %s | %+.0f%% |\n", what, published, unit, simulated, unit,
                100 * (simulated / published - 1));
  };
  {  // vLLM perf dashboard, latency_llama8B_tp1: batch 8, 32 in, 128 out, H200.
    const auto [total, step] = FixedRun(on(sim::H200Sxm()), 8, 32, 128);
    row("8B, H200, batch 8, 32 in / 128 out: mean latency", 833.4, total, "ms");
  }
  {  // A100 40GB sweep, vLLM 0.23: 1024 in / 128 out; C=1 75 tok/s, C=8 6.6x.
    const sim::CostModel a100 = on(sim::A100Sxm40());
    const auto [t1, s1] = FixedRun(a100, 1, 1024, 128);
    const auto [t8, s8] = FixedRun(a100, 8, 1024, 128);
    row("8B, A100 40GB, C=1, 1024 in: decode tok/s", 75, 1000 / s1, "tok/s");
    row("8B, A100 40GB: C=8 / C=1 decode throughput", 6.6, 8 * s1 / s8, "x");
  }
  {  // The 8B on one H100 itself, for the table.
    const auto [t1, s1] = FixedRun(on(sim::H100Sxm()), 1, 1024, 128);
    std::printf(
        "| 8B, H100, C=1, 1024 in: decode step (no published vLLM figure used) | - | %.2f ms | - "
        "|\n",
        s1);
  }
}

void Run() {
  std::printf(
      "Decode on the virtual clock (prefix caching off, distinct prompts, the batch prefilled "
      "in one step)\n\n");
  std::printf(
      "| model | GPUs | batch | prompt | prefill all (ms) | decode step (ms) | output tok/s |\n");
  std::printf("|---|---|---|---|---|---|---|\n");
  for (const std::string model : {"sim-small", "sim-large"}) {
    const int gpus = sim::DeploymentFor(model)->num_gpus;
    for (int prompt : {512, 2048}) {
      for (int batch : {1, 8, 32, 128}) {
        const DecodeFigures f = MeasureBatch(model, batch, prompt);
        std::printf("| %s | %d | %d | %d | %.1f | %.2f | %.0f |\n", model.c_str(), gpus, batch,
                    prompt, f.prefill_ms, f.step_ms, f.tokens_per_second);
      }
    }
  }

  std::printf("\nTime to first token, one request alone\n\n");
  std::printf("| model | prompt | TTFT (ms) |\n|---|---|---|\n");
  for (const std::string model : {"sim-small", "sim-large"}) {
    for (int prompt : {128, 512, 2048, 8192}) {
      SimulatedEngine e({.models = {model}}, false);
      std::printf("| %s | %d | %.1f |\n", model.c_str(), prompt,
                  TtftMs(e, Prompt(model, prompt, "t")));
    }
  }

  std::printf("\nPrefix cache: a 2,000-token system prompt shared by two requests\n\n");
  std::printf("| model | cold TTFT (ms) | warm TTFT (ms) | ratio |\n|---|---|---|---|\n");
  std::string system;
  for (int i = 0; i < 2000; ++i) system += "s" + std::to_string(i) + " ";
  for (const std::string model : {"sim-small", "sim-large"}) {
    SimulatedEngine e({.models = {model}}, false);
    const double cold = TtftMs(e, Prompt(model, 2040, "first", system));
    const double warm = TtftMs(e, Prompt(model, 2040, "second", system));
    std::printf("| %s | %.1f | %.1f | %.1fx |\n", model.c_str(), cold, warm, cold / warm);
  }

  Published();

  std::printf("\nKV cache\n\n| model | blocks | tokens |\n|---|---|---|\n");
  for (const std::string model : {"sim-small", "sim-large"}) {
    SimulatedEngine e({.models = {model}}, false);
    const EngineLoad load = e.Load();
    std::printf("| %s | %lld | %lld |\n", model.c_str(),
                static_cast<long long>(load.kv_blocks_total),
                static_cast<long long>(load.kv_blocks_total * sim::kBlockSize));
  }
}

}  // namespace
}  // namespace sb::worker

int main() {
  sb::worker::Run();
  return 0;
}
