#include "inference-worker/worker_grpc.h"

#include <spdlog/spdlog.h>

#include "absl/time/clock.h"
#include "core/metrics.h"
#include "grpcx/authz.h"
#include "grpcx/status.h"
#include "grpcx/streams.h"

namespace sb::worker {

namespace inf = switchboard::inference::v1;
using switchboard::billing::v1::UsageEvent;

EngineRequest ToEngineRequest(const inf::GenerateRequest& req, const Engine& engine) {
  EngineRequest out;
  out.request_id = req.request_id();
  out.model = req.model();
  out.max_tokens = req.max_tokens();
  out.stop_sequences.assign(req.stop_sequences().begin(), req.stop_sequences().end());
  int tokens = 0;
  for (const auto& b : req.system()) {
    out.prompt += b.text();
    tokens += engine.CountTokens(b.text());
  }
  for (const auto& m : req.messages()) {
    out.prompt += "\n" + m.role() + ":";
    for (const auto& b : m.content()) {
      out.prompt += " " + b.text();
      tokens += engine.CountTokens(b.text());
    }
  }
  out.input_tokens = tokens;
  return out;
}

// Bridges the engine's thread to one gRPC stream.
class WorkerServiceImpl::StreamSink final : public GenerationSink {
 public:
  StreamSink(std::shared_ptr<ServerStream<inf::GenerateEvent>::Handle> out, WorkerServiceImpl* svc,
             const inf::GenerateRequest& req, int input_tokens)
      : out_(std::move(out)), svc_(svc), last_report_(absl::Now()) {
    usage_.set_input_tokens(input_tokens);
    usage_.set_request_id(req.request_id());
    usage_.set_org_id(req.org_id());
    usage_.set_model(req.model());
    usage_.set_worker_id(svc->worker_id_);
    usage_.set_source(req.source());
    usage_.set_end_user_id(req.end_user_id());
  }

  // Until Started is queued, the engine's offers are refused (and repeated
  // at its next step), so that Started is always the first event.
  void MarkStarted() { started_.store(true); }

  bool OnToken(const std::string& text, int index) override {
    if (!started_.load()) return false;
    inf::GenerateEvent e;
    e.mutable_token()->set_text(text);
    e.mutable_token()->set_index(index);
    if (!out_->Push(std::move(e))) return false;
    // A running report every interval: if this process dies, billing still
    // holds what it had delivered up to the last report.
    ++delivered_;
    const absl::Time now = absl::Now();
    if (now - last_report_ >= svc_->report_interval_) {
      last_report_ = now;
      UsageEvent running = usage_;
      running.set_output_tokens(delivered_);
      running.set_at_unix_ms(absl::ToUnixMillis(now));
      running.set_final(false);
      svc_->usage_(running);
    }
    return true;
  }

  bool OnFinished(const FinishInfo& info) override {
    if (!started_.load() && !out_->ended()) return false;
    inf::GenerateEvent e;
    auto* f = e.mutable_finished();
    f->set_stop_reason(info.stop_reason);
    f->set_stop_sequence(info.stop_sequence);
    f->set_input_tokens(info.input_tokens);
    f->set_output_tokens(info.output_tokens);
    if (!out_->Push(std::move(e)) && !out_->ended()) return false;  // full: later
    out_->Finish(grpc::Status::OK);
    usage_.set_input_tokens(info.input_tokens);
    usage_.set_output_tokens(info.output_tokens);
    usage_.set_stop_reason(info.stop_reason);
    usage_.set_at_unix_ms(absl::ToUnixMillis(absl::Now()));
    usage_.set_final(true);
    svc_->usage_(usage_);
    svc_->in_flight_.fetch_sub(1);
    metrics::Default()
        .GetCounter("sb_worker_requests_finished_total", "Requests ended, by stop reason",
                    {{"stop_reason", info.stop_reason}})
        .Inc();
    spdlog::info("request_id={} finished: {} input={} output={}", usage_.request_id(),
                 info.stop_reason, info.input_tokens, info.output_tokens);
    return true;
  }

  bool cancelled() const override { return out_->ended(); }

 private:
  std::shared_ptr<ServerStream<inf::GenerateEvent>::Handle> out_;
  WorkerServiceImpl* svc_;
  UsageEvent usage_;
  std::atomic<bool> started_{false};
  // The engine calls OnToken from one thread at a time for a request.
  int delivered_ = 0;
  absl::Time last_report_;
};

WorkerServiceImpl::WorkerServiceImpl(Engine& engine, std::string worker_id, UsageSink usage,
                                     absl::Duration report_interval)
    : engine_(engine),
      worker_id_(std::move(worker_id)),
      usage_(std::move(usage)),
      report_interval_(report_interval) {}

grpc::ServerWriteReactor<inf::GenerateEvent>* WorkerServiceImpl::Generate(
    grpc::CallbackServerContext* ctx, const inf::GenerateRequest* req) {
  if (auto st = grpcx::Authorize(*ctx, "/switchboard.inference.v1.InferenceWorker/Generate");
      !st.ok()) {
    return new grpcx::RefusedWriter<inf::GenerateEvent>(st);
  }
  auto [reactor, out] = ServerStream<inf::GenerateEvent>::Create(64);
  EngineRequest er = ToEngineRequest(*req, engine_);
  inf::GenerateEvent started;
  started.mutable_started()->set_model(req->model());
  started.mutable_started()->set_worker_id(worker_id_);
  started.mutable_started()->set_input_tokens(er.input_tokens);
  auto sink = std::make_shared<StreamSink>(out, this, *req, er.input_tokens);
  in_flight_.fetch_add(1);
  absl::Status st = engine_.Submit(std::move(er), sink);
  if (!st.ok()) {
    in_flight_.fetch_sub(1);
    spdlog::warn("request_id={} refused: {}", req->request_id(), st.ToString());
    out->Finish(ToGrpcStatus(st));
    return reactor;
  }
  out->Push(std::move(started));
  sink->MarkStarted();
  metrics::Default().GetCounter("sb_worker_requests_total", "Generate calls accepted").Inc();
  return reactor;
}

bool WorkerServiceImpl::Serves(const std::string& model) const {
  for (const auto& m : engine_.Models()) {
    if (m == model) return true;
  }
  return false;
}

grpc::ServerUnaryReactor* WorkerServiceImpl::CountTokens(grpc::CallbackServerContext* ctx,
                                                         const inf::GenerateRequest* req,
                                                         inf::CountTokensResponse* resp) {
  if (auto* refused =
          grpcx::RefuseUnlessAllowed(ctx, "/switchboard.inference.v1.InferenceWorker/CountTokens"))
    return refused;
  auto* reactor = ctx->DefaultReactor();
  if (!Serves(req->model())) {
    reactor->Finish(grpc::Status(grpc::StatusCode::NOT_FOUND, "model: " + req->model()));
    return reactor;
  }
  resp->set_model(req->model());
  resp->set_input_tokens(ToEngineRequest(*req, engine_).input_tokens);
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

grpc::ServerUnaryReactor* WorkerServiceImpl::ListModels(grpc::CallbackServerContext* ctx,
                                                        const inf::ListModelsRequest*,
                                                        inf::ListModelsResponse* resp) {
  if (auto* refused =
          grpcx::RefuseUnlessAllowed(ctx, "/switchboard.inference.v1.InferenceWorker/ListModels"))
    return refused;
  for (const auto& m : engine_.Models()) resp->add_models(m);
  auto* reactor = ctx->DefaultReactor();
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

}  // namespace sb::worker
