// How long one engine step takes on the simulated GPUs: a roofline.
//
// A step runs the model once over every token scheduled in it (decode tokens
// and prefill chunks together, as vLLM's v1 scheduler batches them). Its
// time is the larger of
//   compute: 2 * parameters FLOPs per token, plus attention over the context,
//            at dense peak * compute_efficiency, and
//   memory:  the weights once, plus every scheduled sequence's KV cache read
//            (and the new entries written), at bandwidth * memory_efficiency,
// plus a fixed per-step overhead (scheduler, sampling, kernel launches), a
// small per-sequence one, and an all-reduce cost per layer when tensor
// parallel. A lone decode is memory-bound (the weights dominate); a long
// prefill is compute-bound; a mixed step pays for whichever bound it hits.
//
//   CostModel cost(*DeploymentFor("sim-small"));
//   absl::Duration d = cost.StepTime({{.new_tokens = 1, .context = 512}});  // ~6.8 ms
#pragma once

#include <cstdint>
#include <vector>

#include "absl/time/time.h"
#include "inference-worker/sim/profiles.h"

namespace sb::worker::sim {

// Calibrated in bench/RESULTS.md ("Simulator calibration").
struct Efficiency {
  double memory = 0.82;   // achieved / peak HBM bandwidth
  double compute = 0.60;  // achieved / peak dense FLOP/s (prefill MFU)
  absl::Duration per_step = absl::Microseconds(900);
  absl::Duration per_sequence = absl::Microseconds(10);
  absl::Duration per_layer_all_reduce = absl::Microseconds(10);  // only when num_gpus > 1
};

struct SequenceWork {
  int new_tokens = 0;  // tokens computed this step (1 for a decode)
  int context = 0;     // tokens already in its KV cache
};

class CostModel {
 public:
  explicit CostModel(Deployment deployment, Efficiency efficiency = {});

  absl::Duration StepTime(const std::vector<SequenceWork>& work) const;

  // KV cache capacity in blocks: what vLLM's profiler leaves once the weights
  // and an activation reserve are placed in gpu_memory_utilization of memory.
  int64_t KvCacheBlocks(double gpu_memory_utilization, int block_size) const;

  const Deployment& deployment() const { return deployment_; }

 private:
  Deployment deployment_;
  Efficiency efficiency_;
};

// Per GPU, for activations, CUDA graphs and the sampler (vLLM profiles it;
// ~2 GiB for an 8B model at 8192 batched tokens).
inline constexpr double kActivationReserveBytes = 2.0 * (1ull << 30);

}  // namespace sb::worker::sim
