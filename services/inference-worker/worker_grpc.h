// switchboard.inference.v1.InferenceWorker over an Engine. Generate streams
// Started, the tokens, then Finished, and emits exactly one metering event
// per request to Kafka usage.events when the request ends (finished or
// cancelled), with the engine's exact counts.
#pragma once

#include <atomic>
#include <functional>
#include <string>

#include "absl/time/time.h"
#include "inference-worker/engine.h"
#include "switchboard/billing/v1/billing.pb.h"
#include "switchboard/inference/v1/inference.grpc.pb.h"

namespace sb::worker {

// Where metering events go (Kafka in production, a vector in tests).
using UsageSink = std::function<void(const switchboard::billing::v1::UsageEvent&)>;

// Flattens a request into the engine's prompt and counts its input tokens:
// every text block, with the engine's tokenizer. CountTokens answers with
// the same count, so it always equals the usage the request reports.
EngineRequest ToEngineRequest(const switchboard::inference::v1::GenerateRequest& req,
                              const Engine& engine);

class WorkerServiceImpl final : public switchboard::inference::v1::InferenceWorker::CallbackService {
 public:
  // `usage` gets a running report of each request every `report_interval`
  // while it generates, and a final one when it ends.
  WorkerServiceImpl(Engine& engine, std::string worker_id, UsageSink usage,
                    absl::Duration report_interval = absl::Seconds(1));

  grpc::ServerWriteReactor<switchboard::inference::v1::GenerateEvent>* Generate(
      grpc::CallbackServerContext* ctx,
      const switchboard::inference::v1::GenerateRequest* req) override;
  grpc::ServerUnaryReactor* ListModels(grpc::CallbackServerContext* ctx,
                                       const switchboard::inference::v1::ListModelsRequest* req,
                                       switchboard::inference::v1::ListModelsResponse* resp) override;
  grpc::ServerUnaryReactor* CountTokens(grpc::CallbackServerContext* ctx,
                                        const switchboard::inference::v1::GenerateRequest* req,
                                        switchboard::inference::v1::CountTokensResponse* resp) override;

  int in_flight() const { return in_flight_.load(); }

 private:
  class StreamSink;
  bool Serves(const std::string& model) const;

  Engine& engine_;
  std::string worker_id_;
  UsageSink usage_;
  absl::Duration report_interval_;
  std::atomic<int> in_flight_{0};
};

}  // namespace sb::worker
