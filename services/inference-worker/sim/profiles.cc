#include "inference-worker/sim/profiles.h"

namespace sb::worker::sim {

ModelProfile Llama31_8B() {
  return {.name = "Llama-3.1-8B",
          .parameters = 8.03e9,
          .layers = 32,
          .attention_heads = 32,
          .kv_heads = 8,
          .head_dim = 128,
          .bytes_per_parameter = 2};
}

ModelProfile Llama31_70B() {
  return {.name = "Llama-3.1-70B",
          .parameters = 70.6e9,
          .layers = 80,
          .attention_heads = 64,
          .kv_heads = 8,
          .head_dim = 128,
          .bytes_per_parameter = 2};
}

GpuProfile H100Sxm() {
  return {.name = "H100-SXM-80GB",
          .memory_bytes = 80.0 * (1ull << 30),
          .bandwidth_bytes_per_second = 3.35e12,
          .dense_flops = 989e12};
}

GpuProfile H200Sxm() {
  return {.name = "H200-SXM-141GB",
          .memory_bytes = 141e9,
          .bandwidth_bytes_per_second = 4.8e12,
          .dense_flops = 989e12};
}

GpuProfile A100Sxm40() {
  return {.name = "A100-SXM-40GB",
          .memory_bytes = 40.0 * (1ull << 30),
          .bandwidth_bytes_per_second = 1.555e12,
          .dense_flops = 312e12};
}

absl::StatusOr<Deployment> DeploymentFor(const std::string& served_name, int num_gpus) {
  Deployment d;
  d.served_name = served_name;
  d.gpu = H100Sxm();
  if (served_name == "sim-small") {
    d.model = Llama31_8B();
    d.num_gpus = 1;
  } else if (served_name == "sim-large") {
    d.model = Llama31_70B();
    d.num_gpus = 4;
  } else {
    // Any other name is served as sim-small is.
    d.model = Llama31_8B();
    d.num_gpus = 1;
  }
  if (num_gpus > 0) d.num_gpus = num_gpus;
  if (d.model.WeightBytes() >= 0.9 * d.gpu.memory_bytes * d.num_gpus) {
    return absl::InvalidArgumentError(d.model.name + " does not fit on " +
                                      std::to_string(d.num_gpus) + " x " + d.gpu.name);
  }
  return d;
}

}  // namespace sb::worker::sim
