#include "safety/safety_grpc.h"

#include <spdlog/spdlog.h>

#include "core/metrics.h"
#include "grpcx/authz.h"
#include "safety/gate.h"
#include "safety/policy.h"

namespace sb::safety {
namespace {

using switchboard::safety::v1::CheckRequest;
using switchboard::safety::v1::CheckResponse;
using switchboard::safety::v1::ModerateOutputRequest;
using switchboard::safety::v1::ModerateOutputResponse;
using ModerateReactorBase = grpc::ServerBidiReactor<ModerateOutputRequest, ModerateOutputResponse>;

void ToProto(const PiiFinding& f, switchboard::safety::v1::Finding* out) {
  out->set_category(f.category);
  out->set_start(static_cast<int>(f.start));
  out->set_end(static_cast<int>(f.end));
}

grpc::ServerUnaryReactor* Check(grpc::CallbackServerContext* ctx, const CheckRequest* req,
                                CheckResponse* resp, Direction direction) {
  const char* dir = direction == Direction::kInput ? "input" : "output";
  const Verdict v = Evaluate(req->text(), direction);
  resp->set_verdict(v.allowed ? CheckResponse::ALLOW : CheckResponse::BLOCK);
  resp->set_reason(v.reason);
  for (const auto& f : v.findings) ToProto(f, resp->add_findings());
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

// Reads a message, answers it, reads the next: one message in flight each
// way, so the gate is only touched by one callback at a time.
class ModerateReactor final : public ModerateReactorBase {
 public:
  ModerateReactor(GateOptions options, grpc::Status refused) : gate_(options) {
    if (!refused.ok()) {
      Finish(refused);
      return;
    }
    StartRead(&request_);
  }

  void OnReadDone(bool ok) override {
    if (!ok) {
      // The client closed its side (or went away) without an end: nothing
      // more is released, so nothing more needs saying.
      Finish(grpc::Status::OK);
      return;
    }
    if (request_.has_start()) {
      request_id_ = request_.start().request_id();
      org_id_ = request_.start().org_id();
      started_ = true;
    }
    if (!started_) {
      Finish(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                          "the first message must name the generation (start)"));
      return;
    }
    response_.Clear();
    GateResult r = gate_.Push(request_.text());
    if (request_.end() && !r.stopped) {
      GateResult rest = gate_.Finish();
      r.release += rest.release;
      r.stopped = rest.stopped;
    }
    response_.set_release(std::move(r.release));
    done_ = request_.end() || r.stopped;
    if (r.stopped) {
      const Verdict v = Explain({*r.stopped}, Direction::kOutput);
      ToProto(*r.stopped, response_.mutable_stopped());
      response_.set_reason(v.reason);
      spdlog::info("request_id={} org={} output stopped: {}", request_id_, org_id_, v.reason);
    }
    // Once per message of every reply: the series is looked up once.
    static metrics::Counter& moderated = metrics::Default().GetCounter(
        "sb_safety_moderated_bytes_total", "Output bytes moderated by stream");
    moderated.Inc(static_cast<double>(request_.text().size()));
    if (done_) {
      metrics::Default()
          .GetCounter("sb_safety_checks_total", "Safety checks by direction and verdict",
                      {{"direction", "output"}, {"verdict", r.stopped ? "block" : "allow"}})
          .Inc();
    }
    StartWrite(&response_);
  }

  void OnWriteDone(bool ok) override {
    if (!ok || done_) {
      Finish(grpc::Status::OK);
      return;
    }
    StartRead(&request_);
  }

  void OnDone() override { delete this; }

 private:
  ModerateOutputRequest request_;
  ModerateOutputResponse response_;
  OutputGate gate_;
  std::string request_id_, org_id_;
  bool started_ = false;
  bool done_ = false;
};

}  // namespace

ModerateReactorBase* SafetyServiceImpl::ModerateOutput(grpc::CallbackServerContext* ctx) {
  return new ModerateReactor(
      gate_, grpcx::Authorize(*ctx, "/switchboard.safety.v1.Safety/ModerateOutput"));
}

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
