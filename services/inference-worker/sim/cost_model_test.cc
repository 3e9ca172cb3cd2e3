// The calibration points of the roofline (bench/RESULTS.md has the figures
// they come from).
#include "inference-worker/sim/cost_model.h"

#include "gtest/gtest.h"

namespace sb::worker::sim {
namespace {

std::vector<SequenceWork> Decodes(int batch, int context) {
  return std::vector<SequenceWork>(batch, {.new_tokens = 1, .context = context});
}

double Ms(absl::Duration d) { return absl::ToDoubleMilliseconds(d); }

TEST(ProfilesTest, KvBytesPerToken) {
  EXPECT_EQ(Llama31_8B().KvBytesPerToken(), 128 * 1024);
  EXPECT_EQ(Llama31_70B().KvBytesPerToken(), 320 * 1024);
  EXPECT_EQ(DeploymentFor("sim-small")->num_gpus, 1);
  EXPECT_EQ(DeploymentFor("sim-large")->num_gpus, 4);
  EXPECT_EQ(DeploymentFor("sim-large", 2)->num_gpus, 2);
  EXPECT_FALSE(DeploymentFor("sim-large", 1).ok()) << "140 GB of weights on one 80 GB GPU";
  // Any other name is simulated as sim-small.
  EXPECT_EQ(DeploymentFor("sim-anything")->model.name, DeploymentFor("sim-small")->model.name);
  EXPECT_EQ(DeploymentFor("sim-anything")->num_gpus, 1);
}

TEST(CostModelTest, KvCacheIsWhatMemoryLeavesAfterWeights) {
  const CostModel small(*DeploymentFor("sim-small"));
  const int64_t blocks = small.KvCacheBlocks(0.9, 16);
  // 0.9 x 80 GiB - 15 GiB of weights - 2 GiB reserve = ~55 GiB at 128 KiB a token.
  EXPECT_GT(blocks * 16, 420'000);
  EXPECT_LT(blocks * 16, 480'000);
  const CostModel large(*DeploymentFor("sim-large"));
  EXPECT_GT(large.KvCacheBlocks(0.9, 16), 0);
  EXPECT_LT(small.KvCacheBlocks(0.5, 16), blocks);
}

TEST(CostModelTest, EightBOnOneH100DecodesIn5To7MsAtBatchOne) {
  const CostModel cost(*DeploymentFor("sim-small"));
  EXPECT_GE(Ms(cost.StepTime(Decodes(1, 512))), 5.0);
  EXPECT_LE(Ms(cost.StepTime(Decodes(1, 512))), 7.0);
  EXPECT_LE(Ms(cost.StepTime(Decodes(1, 2048))), 7.0);
}

TEST(CostModelTest, StepTimeRisesWithBatchAndContext) {
  const CostModel cost(*DeploymentFor("sim-small"));
  double last = 0;
  for (int batch : {1, 8, 32, 128, 256}) {
    const double t = Ms(cost.StepTime(Decodes(batch, 1024)));
    EXPECT_GT(t, last) << "batch " << batch;
    last = t;
  }
  EXPECT_GT(Ms(cost.StepTime(Decodes(32, 4096))), Ms(cost.StepTime(Decodes(32, 512))));
  // Batching is nearly free while the weights dominate: 32 sequences cost
  // far less than 32 times one.
  EXPECT_LT(Ms(cost.StepTime(Decodes(32, 512))), 2 * Ms(cost.StepTime(Decodes(1, 512))));
}

TEST(CostModelTest, PrefillIsComputeBoundAndMixedStepsPayForBoth) {
  const CostModel cost(*DeploymentFor("sim-small"));
  const double p512 = Ms(cost.StepTime({{.new_tokens = 512, .context = 0}}));
  const double p2048 = Ms(cost.StepTime({{.new_tokens = 2048, .context = 0}}));
  EXPECT_GT(p2048, 3.5 * p512 - 2) << "compute-bound: about linear in tokens";
  EXPECT_GT(p512, Ms(cost.StepTime(Decodes(1, 512))));
  std::vector<SequenceWork> mixed = Decodes(64, 1024);
  mixed.push_back({.new_tokens = 2048, .context = 0});
  EXPECT_GE(Ms(cost.StepTime(mixed)), p2048);
  EXPECT_GE(Ms(cost.StepTime(mixed)), Ms(cost.StepTime(Decodes(64, 1024))));
}

TEST(CostModelTest, SeventyBOnFourH100s) {
  const CostModel cost(*DeploymentFor("sim-large"));
  const double t = Ms(cost.StepTime(Decodes(1, 512)));
  EXPECT_GT(t, 10.0);
  EXPECT_LT(t, 20.0);
}

}  // namespace
}  // namespace sb::worker::sim
