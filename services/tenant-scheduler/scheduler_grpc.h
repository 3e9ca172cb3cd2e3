// switchboard.scheduler.v1.TenantScheduler: worker registration and
// heartbeats, the models the workers serve, and Generate, which picks a
// live worker with room and relays its token stream with backpressure (one
// message in flight each way). A worker whose stream breaks is marked down
// and the caller gets UNAVAILABLE; so does a caller no worker has room for.
#pragma once

#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "switchboard/inference/v1/inference.grpc.pb.h"
#include "switchboard/scheduler/v1/scheduler.grpc.pb.h"
#include "tenant-scheduler/worker_registry.h"

namespace sb::scheduler {

class SchedulerServiceImpl final : public switchboard::scheduler::v1::TenantScheduler::CallbackService {
 public:
  SchedulerServiceImpl(WorkerRegistry& registry, absl::Duration heartbeat_interval);

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
  switchboard::inference::v1::InferenceWorker::Stub* StubFor(const std::string& address);
  static grpc::Status NoWorker(const std::string& model, NoPick why);

  WorkerRegistry& registry_;
  absl::Duration heartbeat_interval_;
  std::mutex mu_;
  std::map<std::string, std::unique_ptr<switchboard::inference::v1::InferenceWorker::Stub>> stubs_;
};

}  // namespace sb::scheduler
