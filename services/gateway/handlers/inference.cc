#include "gateway/handlers/inference.h"

#include <grpcpp/grpcpp.h>

#include "core/public_status.h"
#include "gateway/dialects/fields.h"
#include "gateway/handlers/unary.h"
#include "gateway/http_sink.h"
#include "gateway/model_pages.h"
#include "grpcx/status.h"
#include "json/bounded_json.h"

namespace sb::gateway {

namespace inf = switchboard::inference::v1;
namespace sched = switchboard::scheduler::v1;
using nlohmann::json;

namespace {

constexpr std::chrono::milliseconds kUnaryDeadline{5000};
constexpr int kDefaultModelPage = 20;
constexpr int kMaxModelPage = 1000;

void Identify(const RequestContext& ctx, pipeline::Request& req) {
  req.set_request_id(ctx.request_id());
  req.set_org_id(ctx.principal->org_id);
  req.set_api_key_id(ctx.principal->key_id);
  req.set_source("api");
}

// Calls the scheduler's ListModels and continues with the list, or fails
// the request.
void WithModels(GatewayDeps& deps, const std::shared_ptr<RequestContext>& ctx,
                std::function<void(std::vector<ModelEntry>)> fn) {
  auto call = NewUnary<sched::ListModelsRequest, sched::ListModelsResponse>(kUnaryDeadline,
                                                                            ctx->trace_context());
  deps.scheduler("").async()->ListModels(
      &call->ctx, &call->req, &call->resp, [ctx, call, fn = std::move(fn)](grpc::Status st) {
        if (!st.ok()) {
          ctx->Fail(PublicStatus(FromGrpcStatus(st), ctx->request_id(), "listing models"));
          return;
        }
        std::vector<ModelEntry> models;
        for (const auto& m : call->resp.models()) models.push_back({m.id(), m.created_unix_ms()});
        fn(std::move(models));
      });
}

}  // namespace

void HandleGenerate(GatewayDeps& deps, const std::shared_ptr<RequestContext>& ctx) {
  Identify(*ctx, *ctx->api.generate);
  // The header wins over the body's metadata.priority.
  if (const std::string p = ctx->request().Header("x-switchboard-priority"); !p.empty()) {
    if (p != "interactive" && p != "batch") {
      ctx->Fail(absl::InvalidArgumentError(
          "x-switchboard-priority: must be \"interactive\" or \"batch\""));
      return;
    }
    ctx->api.generate->set_priority(p);
  }
  const absl::Time now = deps.clock.Now();
  ReplyIds ids{ctx->dialect->ReplyId(deps.ids.Next(now)), absl::ToUnixSeconds(now)};
  auto sink =
      std::make_shared<HttpSink>(ctx, std::move(ids), deps.timers, deps.options.ping_interval);
  std::weak_ptr<pipeline::Generation> gen =
      deps.pipeline.Run(ctx->api.generate, std::move(sink), {.trace = ctx->trace_context()});
  auto cancel = [gen] {
    if (auto g = gen.lock()) g->Cancel();
  };
  ctx->set_cancel(cancel);
  // An idempotent request's reply is kept for the retry.
  if (ctx->detached) return;
  // Nobody will read the reply: stop generating (and paying for) it.
  ctx->exchange().OnClientGone(cancel);
}

void HandleCountTokens(GatewayDeps& deps, const std::shared_ptr<RequestContext>& ctx) {
  auto call = NewUnary<inf::GenerateRequest, inf::CountTokensResponse>(kUnaryDeadline,
                                                                       ctx->trace_context());
  call->req = std::move(*ctx->api.generate);
  Identify(*ctx, call->req);
  deps.scheduler(call->req.model())
      .async()
      ->CountTokens(&call->ctx, &call->req, &call->resp, [ctx, call](grpc::Status st) {
        if (!st.ok()) {
          ctx->Fail(PublicStatus(FromGrpcStatus(st), ctx->request_id(), "counting tokens"));
          return;
        }
        ctx->RespondJson(200, sb::json::Dump(json({{"input_tokens", call->resp.input_tokens()}})));
      });
}

void HandleListModels(GatewayDeps& deps, const std::shared_ptr<RequestContext>& ctx) {
  // Anthropic-style paging over the sorted ids; the OpenAI shape is the
  // whole list.
  int limit = kDefaultModelPage;
  const std::string limit_param = ctx->request().QueryParam("limit");
  if (!limit_param.empty()) {
    char* end = nullptr;
    const long v = std::strtol(limit_param.c_str(), &end, 10);
    if (end == nullptr || *end != '\0' || v < 1 || v > kMaxModelPage) {
      ctx->Fail(
          FieldError("limit", "must be an integer between 1 and " + std::to_string(kMaxModelPage)));
      return;
    }
    limit = static_cast<int>(v);
  }
  const std::string after = PercentDecode(ctx->request().QueryParam("after_id"));
  const std::string before = PercentDecode(ctx->request().QueryParam("before_id"));
  const bool paged = ctx->dialect->name() == "anthropic";
  WithModels(deps, ctx, [ctx, limit, after, before, paged](std::vector<ModelEntry> models) {
    if (!paged) {
      ctx->RespondJson(200, ctx->dialect->ModelList(models, false));
      return;
    }
    const ModelPage page = PageModels(models, static_cast<size_t>(limit), after, before);
    ctx->RespondJson(200, ctx->dialect->ModelList(page.models, page.has_more));
  });
}

void HandleGetModel(GatewayDeps& deps, const std::shared_ptr<RequestContext>& ctx) {
  const std::string id = ctx->params.at(0);
  if (auto st = CheckText(id, "model_id", kMaxModelIdBytes); !st.ok()) {
    ctx->Fail(st);
    return;
  }
  WithModels(deps, ctx, [ctx, id](std::vector<ModelEntry> models) {
    for (const auto& m : models) {
      if (m.id == id) {
        ctx->RespondJson(200, ctx->dialect->Model(m));
        return;
      }
    }
    ctx->Fail(absl::NotFoundError("model: " + id));
  });
}

}  // namespace sb::gateway
