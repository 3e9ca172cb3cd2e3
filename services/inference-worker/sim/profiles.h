// What the simulator pretends to run: a model's shape and a GPU's limits.
//
//   const Deployment d = DeploymentFor("sim-small", options);  // 8B on 1 x H100
//   d.model.KvBytesPerToken();  // 131072 (128 KiB)
//
// The figures are public ones (model configs on Hugging Face, NVIDIA's H100
// SXM datasheet); bench/RESULTS.md "Simulator calibration" lists them.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"

namespace sb::worker::sim {

struct ModelProfile {
  std::string name;  // e.g. "Llama-3.1-8B"
  double parameters = 0;
  int layers = 0;
  int attention_heads = 0;  // query heads
  int kv_heads = 0;         // grouped-query attention: fewer K/V heads
  int head_dim = 0;
  int bytes_per_parameter = 2;  // bf16 weights and KV cache

  double WeightBytes() const { return parameters * bytes_per_parameter; }
  // K and V, every layer, every KV head.
  int64_t KvBytesPerToken() const {
    return int64_t{2} * layers * kv_heads * head_dim * bytes_per_parameter;
  }
  int Hidden() const { return attention_heads * head_dim; }
};

struct GpuProfile {
  std::string name;
  double memory_bytes = 0;
  double bandwidth_bytes_per_second = 0;
  double dense_flops = 0;  // bf16, no sparsity
};

ModelProfile Llama31_8B();
ModelProfile Llama31_70B();
GpuProfile H100Sxm();
// For checking the calibration against figures published on other GPUs.
GpuProfile H200Sxm();
GpuProfile A100Sxm40();

// A served model on its GPUs (tensor parallel over `num_gpus`).
struct Deployment {
  std::string served_name;  // what requests name: "sim-small"
  ModelProfile model;
  GpuProfile gpu;
  int num_gpus = 1;
};

// sim-small: Llama-3.1-8B on one H100 SXM. sim-large: Llama-3.1-70B on four
// H100 SXM, tensor parallel (the size vLLM's own 70B benchmarks use). Any
// other name: as sim-small. `num_gpus` > 0 overrides the GPU count.
// InvalidArgument for a model that does not fit.
absl::StatusOr<Deployment> DeploymentFor(const std::string& served_name, int num_gpus = 0);

}  // namespace sb::worker::sim
