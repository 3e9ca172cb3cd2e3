#include "inference-worker/sim/cost_model.h"

#include <algorithm>

namespace sb::worker::sim {

CostModel::CostModel(Deployment deployment, Efficiency efficiency)
    : deployment_(std::move(deployment)), efficiency_(efficiency) {}

absl::Duration CostModel::StepTime(const std::vector<SequenceWork>& work) const {
  if (work.empty()) return absl::ZeroDuration();
  const ModelProfile& m = deployment_.model;
  const GpuProfile& g = deployment_.gpu;
  const double gpus = deployment_.num_gpus;
  double flops = 0;
  double bytes = m.WeightBytes();
  const double kv_per_token = static_cast<double>(m.KvBytesPerToken());
  for (const SequenceWork& w : work) {
    const double n = w.new_tokens;
    // Linear layers, then QK^T and AV over the context (causal within the
    // chunk: on average half of it).
    flops += 2.0 * m.parameters * n;
    flops += 4.0 * m.layers * m.Hidden() * n * (w.context + (n + 1) / 2);
    bytes += kv_per_token * (w.context + n);
  }
  const double compute_s = flops / (gpus * g.dense_flops * efficiency_.compute);
  const double memory_s = bytes / (gpus * g.bandwidth_bytes_per_second * efficiency_.memory);
  absl::Duration t = absl::Seconds(std::max(compute_s, memory_s)) + efficiency_.per_step +
                     efficiency_.per_sequence * static_cast<int64_t>(work.size());
  if (deployment_.num_gpus > 1) {
    t += efficiency_.per_layer_all_reduce * (2 * m.layers);  // after attention and after the MLP
  }
  return t;
}

int64_t CostModel::KvCacheBlocks(double gpu_memory_utilization, int block_size) const {
  const Deployment& d = deployment_;
  const double budget = gpu_memory_utilization * d.gpu.memory_bytes * d.num_gpus -
                        d.model.WeightBytes() - kActivationReserveBytes * d.num_gpus;
  if (budget <= 0) return 0;
  return static_cast<int64_t>(budget /
                              (static_cast<double>(d.model.KvBytesPerToken()) * block_size));
}

}  // namespace sb::worker::sim
