#include "billing/billing_grpc.h"

#include "grpcx/authz.h"
#include "grpcx/status.h"

namespace sb::billing {

grpc::ServerUnaryReactor* BillingServiceImpl::GetUsage(
    grpc::CallbackServerContext* ctx, const switchboard::billing::v1::GetUsageRequest* req,
    switchboard::billing::v1::GetUsageResponse* resp) {
  if (auto* refused = grpcx::RefuseUnlessAllowed(ctx, "/switchboard.billing.v1.Billing/GetUsage"))
    return refused;
  auto* reactor = ctx->DefaultReactor();
  if (req->org_id().empty()) {
    reactor->Finish(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "org_id is required"));
    return reactor;
  }
  const bool queued = pool_.Submit([this, reactor, req, resp] {
    auto result = ledger_.Query(*req);
    if (result.ok()) *resp = std::move(*result);
    reactor->Finish(ToGrpcStatus(result.status()));
  });
  if (!queued) {
    reactor->Finish(grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED, "billing is overloaded"));
  }
  return reactor;
}

}  // namespace sb::billing
