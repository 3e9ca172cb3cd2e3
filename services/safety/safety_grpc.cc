#include "safety/safety_grpc.h"

#include <spdlog/spdlog.h>

#include "core/metrics.h"
#include "grpcx/authz.h"
#include "safety/policy.h"

namespace sb::safety {
namespace {

using switchboard::safety::v1::CheckRequest;
using switchboard::safety::v1::CheckResponse;

grpc::ServerUnaryReactor* Check(grpc::CallbackServerContext* ctx, const CheckRequest* req,
                                CheckResponse* resp, Direction direction) {
  const char* dir = direction == Direction::kInput ? "input" : "output";
  const Verdict v = Evaluate(req->text(), direction);
  resp->set_verdict(v.allowed ? CheckResponse::ALLOW : CheckResponse::BLOCK);
  resp->set_reason(v.reason);
  for (const auto& f : v.findings) {
    auto* out = resp->add_findings();
    out->set_category(f.category);
    out->set_start(static_cast<int>(f.start));
    out->set_end(static_cast<int>(f.end));
  }
  metrics::Default()
      .GetCounter("sb_safety_checks_total", "Safety checks by direction and verdict",
                  {{"direction", dir}, {"verdict", v.allowed ? "allow" : "block"}})
      .Inc();
  if (!v.allowed) {
    spdlog::info("request_id={} org={} {} blocked: {}", req->request_id(), req->org_id(), dir,
                 v.reason);
  }
  auto* reactor = ctx->DefaultReactor();
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

}  // namespace

grpc::ServerUnaryReactor* SafetyServiceImpl::CheckInput(grpc::CallbackServerContext* ctx,
                                                        const CheckRequest* req,
                                                        CheckResponse* resp) {
  if (auto* refused = grpcx::RefuseUnlessAllowed(ctx, "/switchboard.safety.v1.Safety/CheckInput"))
    return refused;
  return Check(ctx, req, resp, Direction::kInput);
}

grpc::ServerUnaryReactor* SafetyServiceImpl::CheckOutput(grpc::CallbackServerContext* ctx,
                                                         const CheckRequest* req,
                                                         CheckResponse* resp) {
  if (auto* refused = grpcx::RefuseUnlessAllowed(ctx, "/switchboard.safety.v1.Safety/CheckOutput"))
    return refused;
  return Check(ctx, req, resp, Direction::kOutput);
}

}  // namespace sb::safety
