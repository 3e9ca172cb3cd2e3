#include "tenant-scheduler/admin_grpc.h"

#include <spdlog/spdlog.h>

#include "core/public_status.h"
#include "core/thread_pool.h"
#include "grpcx/authz.h"
#include "grpcx/status.h"
#include "tenant-scheduler/breaker.h"
#include "tenant-scheduler/model_registry.h"

namespace sb::scheduler {
namespace {

namespace pb = switchboard::scheduler::v1;

constexpr std::string_view kService = "/switchboard.scheduler.v1.ModelAdmin/";

void Fill(const ModelVersion& v, pb::ModelVersionInfo* out) {
  out->set_version(v.id);
  out->set_served_model(v.model);
  out->set_serving_config_json(v.serving_config);
  out->set_safety_policy_version(v.safety_policy_version);
  out->set_created_unix_ms(absl::ToUnixMillis(v.created_at));
}

void Fill(const ModelAlias& a, pb::ModelAliasInfo* out) {
  out->set_alias(a.name);
  out->set_stable_version(a.stable);
  out->set_previous_stable_version(a.previous_stable);
  out->set_canary_version(a.canary);
  out->set_canary_weight(a.canary_weight);
  out->set_updated_unix_ms(absl::ToUnixMillis(a.updated_at));
}

// The registry's messages for these codes are written for the operator;
// the others may carry library text (already logged by the registry).
grpc::Status ForCaller(const absl::Status& st, std::string_view method) {
  if (st.ok() || IsCallerFacing(st.code()) || st.code() == absl::StatusCode::kAlreadyExists) {
    return ToGrpcStatus(st);
  }
  spdlog::error("ModelAdmin/{}: {}", method, st.ToString());
  if (st.code() == absl::StatusCode::kUnavailable) {
    return grpc::Status(grpc::StatusCode::UNAVAILABLE,
                        "the model registry's database is unavailable; retry later");
  }
  if (st.code() == absl::StatusCode::kAborted) {
    return grpc::Status(grpc::StatusCode::ABORTED, "a concurrent change interfered; retry");
  }
  return grpc::Status(grpc::StatusCode::INTERNAL,
                      "the model registry failed; the scheduler's log has details");
}

}  // namespace

grpc::ServerUnaryReactor* ModelAdminServiceImpl::Offload(grpc::CallbackServerContext* ctx,
                                                         std::string_view method,
                                                         std::function<absl::Status()> work) {
  const std::string full = std::string(kService) + std::string(method);
  if (auto* refused = grpcx::RefuseUnlessAllowed(ctx, full)) return refused;
  auto* reactor = ctx->DefaultReactor();
  const bool queued = pool_.Submit(
      [reactor, method, work = std::move(work)] { reactor->Finish(ForCaller(work(), method)); });
  if (!queued) {
    reactor->Finish(
        grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED, "the scheduler is overloaded; retry"));
  }
  return reactor;
}

grpc::ServerUnaryReactor* ModelAdminServiceImpl::CreateVersion(grpc::CallbackServerContext* ctx,
                                                               const pb::CreateVersionRequest* req,
                                                               pb::CreateVersionResponse* resp) {
  return Offload(ctx, "CreateVersion", [this, req, resp] {
    auto stored = registry_.CreateVersion({.id = req->version(),
                                           .model = req->served_model(),
                                           .serving_config = req->serving_config_json(),
                                           .safety_policy_version = req->safety_policy_version()});
    if (!stored.ok()) return stored.status();
    Fill(*stored, resp->mutable_version());
    (void)registry_.Refresh();
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* ModelAdminServiceImpl::SetAlias(grpc::CallbackServerContext* ctx,
                                                          const pb::SetAliasRequest* req,
                                                          pb::SetAliasResponse* resp) {
  return Offload(ctx, "SetAlias", [this, req, resp] {
    auto stored = registry_.SetAlias(req->alias(), req->version());
    if (!stored.ok()) return stored.status();
    Fill(*stored, resp->mutable_alias());
    spdlog::info("model alias {}: {} promoted (previous {})", stored->name, stored->stable,
                 stored->previous_stable.empty() ? "none" : stored->previous_stable);
    (void)registry_.Refresh();
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* ModelAdminServiceImpl::SetCanary(grpc::CallbackServerContext* ctx,
                                                           const pb::SetCanaryRequest* req,
                                                           pb::SetCanaryResponse* resp) {
  return Offload(ctx, "SetCanary", [this, req, resp] {
    auto stored = registry_.SetCanary(req->alias(), req->version(), req->weight());
    if (!stored.ok()) return stored.status();
    Fill(*stored, resp->mutable_alias());
    spdlog::info("model alias {}: canary {} at {}%", stored->name,
                 stored->canary.empty() ? "none" : stored->canary, stored->canary_weight);
    (void)registry_.Refresh();
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* ModelAdminServiceImpl::Rollback(grpc::CallbackServerContext* ctx,
                                                          const pb::RollbackRequest* req,
                                                          pb::RollbackResponse* resp) {
  return Offload(ctx, "Rollback", [this, req, resp] {
    auto stored = registry_.Rollback(req->alias());
    if (!stored.ok()) return stored.status();
    Fill(*stored, resp->mutable_alias());
    spdlog::warn("model alias {}: rolled back to {}", stored->name, stored->stable);
    (void)registry_.Refresh();
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* ModelAdminServiceImpl::ListModels(grpc::CallbackServerContext* ctx,
                                                            const pb::ListModelRegistryRequest*,
                                                            pb::ListModelRegistryResponse* resp) {
  // The snapshot is in memory and Breaker::State takes one short lock: no
  // need to leave the callback thread.
  const std::string full = std::string(kService) + "ListModels";
  if (auto* refused = grpcx::RefuseUnlessAllowed(ctx, full)) return refused;
  auto catalog = registry_.Snapshot();
  for (const auto& [name, alias] : catalog->aliases()) Fill(alias, resp->add_aliases());
  for (const auto& [id, version] : catalog->versions()) {
    auto* v = resp->add_versions();
    Fill(version, v);
    if (breaker_ != nullptr) {
      v->set_breaker(static_cast<pb::BreakerState>(breaker_->State(id)));
    }
  }
  const absl::Time loaded = registry_.LastLoaded();
  resp->set_loaded_unix_ms(loaded == absl::InfinitePast() ? 0 : absl::ToUnixMillis(loaded));
  auto* reactor = ctx->DefaultReactor();
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

}  // namespace sb::scheduler
