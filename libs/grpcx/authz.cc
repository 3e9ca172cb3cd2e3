#include "grpcx/authz.h"

#include <spdlog/spdlog.h>

#include "core/metrics.h"
#include "grpcx/tls.h"

namespace sb::grpcx {

const std::map<std::string, std::vector<std::string_view>, std::less<>>& MethodCallers() {
  static const auto* table = new std::map<std::string, std::vector<std::string_view>, std::less<>>{
      {"/switchboard.billing.v1.Billing/GetUsage", {kGateway, kOperator}},
      {"/switchboard.chat.v1.Chat/CreateConversation", {kGateway}},
      {"/switchboard.chat.v1.Chat/SendMessage", {kGateway}},
      {"/switchboard.chat.v1.Chat/ListMessages", {kGateway, kConnectionManager}},
      {"/switchboard.chat.v1.Chat/GetMessage", {kGateway, kConnectionManager}},
      {"/switchboard.chat.v1.Chat/ListConversations", {kGateway}},
      {"/switchboard.chat.v1.Chat/SearchMessages", {kGateway}},
      {"/switchboard.chat.v1.Chat/GetConversation", {kGateway}},
      {"/switchboard.chat.v1.Chat/UpdateConversation", {kGateway}},
      {"/switchboard.chat.v1.Chat/DeleteConversation", {kGateway}},
      {"/switchboard.chat.v1.Chat/CancelMessage", {kGateway}},
      {"/switchboard.chat.v1.Chat/RegenerateMessage", {kGateway}},
      {"/switchboard.connection.v1.ConnectionManager/Subscribe", {kGateway}},
      {"/switchboard.connection.v1.ConnectionManager/SubscribeEvents", {kGateway}},
      {"/switchboard.gateway.v1.Gateway/GetInfo", {kOperator}},
      // The gateway and chat stream from a worker under a scheduler's lease.
      {"/switchboard.inference.v1.InferenceWorker/Generate", {kScheduler, kGateway, kChat}},
      {"/switchboard.inference.v1.InferenceWorker/CountTokens", {kScheduler}},
      {"/switchboard.inference.v1.InferenceWorker/ListModels", {kScheduler, kOperator}},
      {"/switchboard.safety.v1.Safety/CheckInput", {kGateway, kChat}},
      {"/switchboard.safety.v1.Safety/CheckOutput", {kGateway, kChat}},
      {"/switchboard.safety.v1.Safety/ModerateOutput", {kGateway, kChat}},
      {"/switchboard.safety.v1.SafetyAdmin/SetPolicy", {kOperator}},
      {"/switchboard.safety.v1.SafetyAdmin/GetPolicy", {kOperator}},
      {"/switchboard.safety.v1.SafetyAdmin/ListAudit", {kOperator}},
      {"/switchboard.scheduler.v1.TenantScheduler/RegisterWorker", {kWorker}},
      {"/switchboard.scheduler.v1.TenantScheduler/Heartbeat", {kWorker}},
      {"/switchboard.scheduler.v1.TenantScheduler/ListWorkers", {kOperator}},
      {"/switchboard.scheduler.v1.TenantScheduler/ListModels", {kGateway, kChat, kOperator}},
      {"/switchboard.scheduler.v1.TenantScheduler/Generate", {kGateway, kChat}},
      {"/switchboard.scheduler.v1.TenantScheduler/CountTokens", {kGateway, kChat}},
      {"/switchboard.scheduler.v1.TenantScheduler/Admit", {kGateway, kChat}},
      {"/switchboard.scheduler.v1.TenantScheduler/ReleaseLease", {kGateway, kChat}},
      {"/switchboard.scheduler.v1.TenantScheduler/ReportServed", {kWorker}},
      {"/switchboard.scheduler.v1.TenantScheduler/GetFairness", {kOperator}},
      {"/switchboard.scheduler.v1.ModelAdmin/CreateVersion", {kOperator}},
      {"/switchboard.scheduler.v1.ModelAdmin/SetAlias", {kOperator}},
      {"/switchboard.scheduler.v1.ModelAdmin/SetCanary", {kOperator}},
      {"/switchboard.scheduler.v1.ModelAdmin/Rollback", {kOperator}},
      {"/switchboard.scheduler.v1.ModelAdmin/ListModels", {kOperator}},
  };
  return *table;
}

grpc::Status Authorize(const grpc::ServerContextBase& ctx, std::string_view method) {
  auto auth = ctx.auth_context();
  if (!auth || !auth->IsPeerAuthenticated()) return grpc::Status::OK;  // plaintext server
  const std::string caller = CallerIdentity(ctx);
  const auto& table = MethodCallers();
  if (auto it = table.find(method); it != table.end()) {
    for (std::string_view allowed : it->second) {
      if (allowed == caller) return grpc::Status::OK;
    }
  }
  metrics::Default()
      .GetCounter("sb_grpc_denied_total", "Calls refused because the caller may not make them",
                  {{"method", std::string(method)}, {"caller", caller}})
      .Inc();
  spdlog::warn("denied {} to caller identity '{}' ({})", method, caller, ctx.peer());
  return grpc::Status(grpc::StatusCode::PERMISSION_DENIED,
                      "this identity may not call " + std::string(method));
}

grpc::ServerUnaryReactor* RefuseUnlessAllowed(grpc::CallbackServerContext* ctx,
                                              std::string_view method) {
  grpc::Status st = Authorize(*ctx, method);
  if (st.ok()) return nullptr;
  auto* reactor = ctx->DefaultReactor();
  reactor->Finish(st);
  return reactor;
}

}  // namespace sb::grpcx
