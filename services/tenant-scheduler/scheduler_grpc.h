// switchboard.scheduler.v1.TenantScheduler: worker registration and
// heartbeats, the models the workers serve, and Generate, which picks a
// live worker with room and relays its token stream with backpressure (one
// message in flight each way). A worker whose stream breaks is marked down
// and the caller gets UNAVAILABLE.
//
// When every worker of the model is full, a request waits in the model's
// fair queue (fair_queue.h: weighted VTC across orgs) for a slot, unless its
// estimated wait (wait_estimator.h: tokens queued ahead over the model's
// served rate) already exceeds the longest wait allowed; it is refused with
// UNAVAILABLE (529 at the gateway) then, when the queue is full, or when it
// has waited that long.
#pragma once

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>

#include "core/timers.h"
#include "grpcx/streams.h"
#include "switchboard/inference/v1/inference.grpc.pb.h"
#include "switchboard/scheduler/v1/scheduler.grpc.pb.h"
#include "tenant-scheduler/fair_queue.h"
#include "tenant-scheduler/wait_estimator.h"
#include "tenant-scheduler/worker_registry.h"

namespace sb::scheduler {

struct QueueOptions {
  absl::Duration max_wait = absl::Seconds(2);         // interactive requests
  absl::Duration max_batch_wait = absl::Minutes(10);  // batch requests
  double input_weight = 1;                     // VTC charge per input token
  double output_weight = 2;                    // and per output token
  size_t max_queued = 10000;                   // per model
};

class SchedulerServiceImpl final : public switchboard::scheduler::v1::TenantScheduler::CallbackService {
 public:
  SchedulerServiceImpl(WorkerRegistry& registry, absl::Duration heartbeat_interval,
                       QueueOptions queue = {});

  grpc::ServerUnaryReactor* RegisterWorker(
      grpc::CallbackServerContext* ctx, const switchboard::scheduler::v1::RegisterWorkerRequest* req,
      switchboard::scheduler::v1::RegisterWorkerResponse* resp) override;
  grpc::ServerUnaryReactor* Heartbeat(grpc::CallbackServerContext* ctx,
                                      const switchboard::scheduler::v1::HeartbeatRequest* req,
                                      switchboard::scheduler::v1::HeartbeatResponse* resp) override;
  grpc::ServerUnaryReactor* ListWorkers(grpc::CallbackServerContext* ctx,
                                        const switchboard::scheduler::v1::ListWorkersRequest* req,
                                        switchboard::scheduler::v1::ListWorkersResponse* resp) override;
  grpc::ServerUnaryReactor* ListModels(grpc::CallbackServerContext* ctx,
                                       const switchboard::scheduler::v1::ListModelsRequest* req,
                                       switchboard::scheduler::v1::ListModelsResponse* resp) override;
  grpc::ServerWriteReactor<switchboard::inference::v1::GenerateEvent>* Generate(
      grpc::CallbackServerContext* ctx,
      const switchboard::inference::v1::GenerateRequest* req) override;
  grpc::ServerUnaryReactor* CountTokens(grpc::CallbackServerContext* ctx,
                                        const switchboard::inference::v1::GenerateRequest* req,
                                        switchboard::inference::v1::CountTokensResponse* resp) override;

 private:
  using Out = std::shared_ptr<ServerStream<switchboard::inference::v1::GenerateEvent>::Handle>;
  struct ModelQueue {
    explicit ModelQueue(const QueueOptions& o)
        : fair({.w_in = o.input_weight, .w_out = o.output_weight, .max_queued = o.max_queued}) {}
    FairQueue fair;
    WaitEstimator rate;
    // What runs when a queued request gets a worker.
    std::unordered_map<uint64_t, std::function<void(const Pick&)>> waiting;
  };

  switchboard::inference::v1::InferenceWorker::Stub* StubFor(const std::string& address);
  static grpc::Status NoWorker(const std::string& model, NoPick why);
  // Relays the worker's stream to `out`. `queued`: it came through the
  // fair queue (its org's slot there is freed at the end).
  void StartRelay(const switchboard::inference::v1::GenerateRequest& req, const Pick& pick, Out out,
                  std::chrono::system_clock::time_point deadline, bool queued);
  void Enqueue(const switchboard::inference::v1::GenerateRequest& req, Out out,
               std::chrono::system_clock::time_point deadline);
  // Takes a queued request out before it was served; false when it already was.
  bool RemoveQueued(const std::string& model, uint64_t id);
  // Hands free slots of `model` (or of every model) to its queued requests.
  void Dispatch(const std::string& model);
  void DispatchAll();
  // Charges what a request of `org` was served to its model's fair queue.
  void Served(const switchboard::inference::v1::GenerateRequest& req, int input, int output);

  WorkerRegistry& registry_;
  absl::Duration heartbeat_interval_;
  QueueOptions queue_options_;
  std::mutex mu_;
  std::map<std::string, std::unique_ptr<switchboard::inference::v1::InferenceWorker::Stub>> stubs_;
  std::mutex queue_mu_;  // taken before the registry's lock, never after
  std::map<std::string, ModelQueue> queues_;
  uint64_t next_queued_id_ = 1;
  TimerThread timers_;
};

}  // namespace sb::scheduler
