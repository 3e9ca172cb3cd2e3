// switchboard.scheduler.v1.ModelAdmin: the model registry's operations for
// operators (callers with the operator identity only; grpcx/authz.cc),
// over ModelRegistry. Database work runs on `pool`, never on gRPC's
// callback threads. After a write this scheduler reloads the registry at
// once, so its own ListModels and routing see the change; other
// schedulers see it within their refresh period.
//
// Errors: INVALID_ARGUMENT, NOT_FOUND, ALREADY_EXISTS and
// FAILED_PRECONDITION carry the registry's message (written for the
// operator); anything else carries a plain message, and the details go to
// the log.
#pragma once

#include <functional>
#include <string_view>

#include "absl/status/status.h"
#include "switchboard/scheduler/v1/admin.grpc.pb.h"

namespace sb {
class ThreadPool;
}

namespace sb::scheduler {

class Breaker;
class ModelRegistry;

class ModelAdminServiceImpl final : public switchboard::scheduler::v1::ModelAdmin::CallbackService {
 public:
  // `breaker` (optional) fills each version's breaker state in ListModels.
  ModelAdminServiceImpl(ModelRegistry& registry, ThreadPool& pool, Breaker* breaker = nullptr)
      : registry_(registry), pool_(pool), breaker_(breaker) {}

  grpc::ServerUnaryReactor* CreateVersion(
      grpc::CallbackServerContext* ctx, const switchboard::scheduler::v1::CreateVersionRequest* req,
      switchboard::scheduler::v1::CreateVersionResponse* resp) override;
  grpc::ServerUnaryReactor* SetAlias(grpc::CallbackServerContext* ctx,
                                     const switchboard::scheduler::v1::SetAliasRequest* req,
                                     switchboard::scheduler::v1::SetAliasResponse* resp) override;
  grpc::ServerUnaryReactor* SetCanary(grpc::CallbackServerContext* ctx,
                                      const switchboard::scheduler::v1::SetCanaryRequest* req,
                                      switchboard::scheduler::v1::SetCanaryResponse* resp) override;
  grpc::ServerUnaryReactor* Rollback(grpc::CallbackServerContext* ctx,
                                     const switchboard::scheduler::v1::RollbackRequest* req,
                                     switchboard::scheduler::v1::RollbackResponse* resp) override;
  grpc::ServerUnaryReactor* ListModels(
      grpc::CallbackServerContext* ctx,
      const switchboard::scheduler::v1::ListModelRegistryRequest* req,
      switchboard::scheduler::v1::ListModelRegistryResponse* resp) override;

 private:
  // Runs `work` on the pool and finishes the call with its status.
  grpc::ServerUnaryReactor* Offload(grpc::CallbackServerContext* ctx, std::string_view method,
                                    std::function<absl::Status()> work);

  ModelRegistry& registry_;
  ThreadPool& pool_;
  Breaker* breaker_;
};

}  // namespace sb::scheduler
