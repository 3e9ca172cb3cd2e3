#include "tenant-scheduler/scheduler_grpc.h"

#include <spdlog/spdlog.h>

#include "absl/time/clock.h"
#include "core/crypto.h"
#include "core/metrics.h"
#include "grpcx/authz.h"
#include "grpcx/streams.h"
#include "grpcx/tls.h"

namespace sb::scheduler {

namespace inf = switchboard::inference::v1;
namespace sched = switchboard::scheduler::v1;

namespace {

constexpr size_t kRelayCapacity = 32;

// One relayed Generate call: the worker's stream in, the caller's stream out.
struct Relay {
  inf::GenerateRequest request;
  std::string worker_id;
  std::shared_ptr<ServerStream<inf::GenerateEvent>::Handle> out;
  std::mutex mu;
  ClientStream<inf::GenerateEvent>::Next pending_next;  // waiting for room downstream
  bool saw_finished = false;

  // Continue reading upstream once the caller's queue has room.
  void ResumeWhenRoom(ClientStream<inf::GenerateEvent>::Next next) {
    {
      std::lock_guard<std::mutex> lock(mu);
      pending_next = std::move(next);
    }
    if (out->has_space()) OnSpace();
  }
  void OnSpace() {
    ClientStream<inf::GenerateEvent>::Next next;
    {
      std::lock_guard<std::mutex> lock(mu);
      next = std::move(pending_next);
      pending_next = nullptr;
    }
    if (next) next(true);
  }
};

std::chrono::system_clock::time_point UpstreamDeadline(grpc::CallbackServerContext* ctx) {
  const auto cap = std::chrono::system_clock::now() + std::chrono::hours(1);
  return std::min(ctx->deadline(), cap);
}

}  // namespace

SchedulerServiceImpl::SchedulerServiceImpl(WorkerRegistry& registry,
                                           absl::Duration heartbeat_interval)
    : registry_(registry), heartbeat_interval_(heartbeat_interval) {}

inf::InferenceWorker::Stub* SchedulerServiceImpl::StubFor(const std::string& address) {
  std::lock_guard<std::mutex> lock(mu_);
  auto& stub = stubs_[address];
  if (!stub) {
    // Only an inference-worker certificate is accepted at the other end: an
    // address is dialled only to reach a worker.
    stub = inf::InferenceWorker::NewStub(grpcx::Dial(address, grpcx::kWorker));
  }
  return stub.get();
}

grpc::ServerUnaryReactor* SchedulerServiceImpl::RegisterWorker(
    grpc::CallbackServerContext* ctx, const sched::RegisterWorkerRequest* req,
    sched::RegisterWorkerResponse* resp) {
  if (auto* refused = grpcx::RefuseUnlessAllowed(
          ctx, "/switchboard.scheduler.v1.TenantScheduler/RegisterWorker"))
    return refused;
  auto* reactor = ctx->DefaultReactor();
  if (req->worker_id().empty() || req->address().empty() || req->models().empty()) {
    reactor->Finish(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                                 "worker_id, address and at least one model are required"));
    return reactor;
  }
  auto session = registry_.Register(
      req->worker_id(), req->address(), {req->models().begin(), req->models().end()},
      req->max_concurrency(), absl::Now(), req->session(), RandomHex(16));
  if (!session.ok()) {
    spdlog::warn("refused registration of worker {} at {} from {}: {}", req->worker_id(),
                 req->address(), ctx->peer(), session.status().ToString());
    reactor->Finish(
        grpc::Status(grpc::StatusCode::ALREADY_EXISTS, "this worker id is held by a live worker"));
    return reactor;
  }
  spdlog::info("worker {} registered at {} serving {} model(s)", req->worker_id(), req->address(),
               req->models_size());
  resp->set_heartbeat_interval_ms(static_cast<int>(absl::ToInt64Milliseconds(heartbeat_interval_)));
  resp->set_session(*session);
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

grpc::ServerUnaryReactor* SchedulerServiceImpl::Heartbeat(grpc::CallbackServerContext* ctx,
                                                          const sched::HeartbeatRequest* req,
                                                          sched::HeartbeatResponse* resp) {
  if (auto* refused =
          grpcx::RefuseUnlessAllowed(ctx, "/switchboard.scheduler.v1.TenantScheduler/Heartbeat"))
    return refused;
  const auto& l = req->load();
  ReportedLoad load{.running = l.running(),
                    .waiting = l.waiting(),
                    .kv_blocks_total = l.kv_blocks_total(),
                    .kv_blocks_free = l.kv_blocks_free(),
                    .kv_cache_usage = l.kv_cache_usage(),
                    .cached_prefixes = {l.cached_prefixes().begin(), l.cached_prefixes().end()}};
  const auto beat = registry_.Heartbeat(req->worker_id(), req->in_flight(), absl::Now(),
                                        req->session(), std::move(load));
  auto* reactor = ctx->DefaultReactor();
  if (beat == WorkerRegistry::Beat::kWrongSession) {
    reactor->Finish(grpc::Status(grpc::StatusCode::PERMISSION_DENIED,
                                 "not the session of this worker's registration"));
    return reactor;
  }
  resp->set_known(beat == WorkerRegistry::Beat::kOk);
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

grpc::ServerUnaryReactor* SchedulerServiceImpl::ListWorkers(grpc::CallbackServerContext* ctx,
                                                            const sched::ListWorkersRequest*,
                                                            sched::ListWorkersResponse* resp) {
  if (auto* refused =
          grpcx::RefuseUnlessAllowed(ctx, "/switchboard.scheduler.v1.TenantScheduler/ListWorkers"))
    return refused;
  const absl::Time now = absl::Now();
  for (const auto& w : registry_.List()) {
    auto* out = resp->add_workers();
    out->set_worker_id(w.id);
    out->set_address(w.address);
    for (const auto& m : w.models) out->add_models(m);
    out->set_live(registry_.IsLive(w, now));
    out->set_in_flight(w.in_flight);
    out->set_last_heartbeat_unix_ms(absl::ToUnixMillis(w.last_heartbeat));
    auto* load = out->mutable_load();
    load->set_running(w.load.running);
    load->set_waiting(w.load.waiting);
    load->set_kv_blocks_total(w.load.kv_blocks_total);
    load->set_kv_blocks_free(w.load.kv_blocks_free);
    load->set_kv_cache_usage(w.load.kv_cache_usage);
    for (uint64_t h : w.load.cached_prefixes) load->add_cached_prefixes(h);
  }
  auto* reactor = ctx->DefaultReactor();
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

grpc::ServerUnaryReactor* SchedulerServiceImpl::ListModels(grpc::CallbackServerContext* ctx,
                                                           const sched::ListModelsRequest*,
                                                           sched::ListModelsResponse* resp) {
  if (auto* refused =
          grpcx::RefuseUnlessAllowed(ctx, "/switchboard.scheduler.v1.TenantScheduler/ListModels"))
    return refused;
  for (const auto& m : registry_.ListModels(absl::Now())) {
    auto* out = resp->add_models();
    out->set_id(m.id);
    out->set_created_unix_ms(absl::ToUnixMillis(m.first_seen));
    out->set_live_workers(m.live_workers);
  }
  auto* reactor = ctx->DefaultReactor();
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

grpc::Status SchedulerServiceImpl::NoWorker(const std::string& model, NoPick why) {
  switch (why) {
    case NoPick::kUnknownModel:
      return grpc::Status(grpc::StatusCode::NOT_FOUND, "model: " + model);
    case NoPick::kNoLiveWorker:
      return grpc::Status(grpc::StatusCode::UNAVAILABLE, "no live worker serves model " + model);
    case NoPick::kAllFull:
      break;
  }
  return grpc::Status(grpc::StatusCode::UNAVAILABLE,
                      "every worker serving model " + model + " is at capacity");
}

grpc::ServerUnaryReactor* SchedulerServiceImpl::CountTokens(grpc::CallbackServerContext* ctx,
                                                            const inf::GenerateRequest* req,
                                                            inf::CountTokensResponse* resp) {
  if (auto* refused =
          grpcx::RefuseUnlessAllowed(ctx, "/switchboard.scheduler.v1.TenantScheduler/CountTokens"))
    return refused;
  auto* reactor = ctx->DefaultReactor();
  const absl::Time now = absl::Now();
  NoPick why = NoPick::kUnknownModel;
  auto pick = registry_.AnyLive(req->model(), now, &why);
  if (!pick) {
    reactor->Finish(NoWorker(req->model(), why));
    return reactor;
  }
  struct Call {
    grpc::ClientContext ctx;
    inf::GenerateRequest req;
  };
  auto call = std::make_shared<Call>();
  call->ctx.set_deadline(
      std::min(ctx->deadline(), std::chrono::system_clock::now() + std::chrono::seconds(5)));
  call->req = *req;
  StubFor(pick->address)
      ->async()
      ->CountTokens(&call->ctx, &call->req, resp,
                    [reactor, call](grpc::Status st) { reactor->Finish(st); });
  return reactor;
}

grpc::ServerWriteReactor<inf::GenerateEvent>* SchedulerServiceImpl::Generate(
    grpc::CallbackServerContext* ctx, const inf::GenerateRequest* req) {
  if (auto st = grpcx::Authorize(*ctx, "/switchboard.scheduler.v1.TenantScheduler/Generate");
      !st.ok()) {
    return new grpcx::RefusedWriter<inf::GenerateEvent>(st);
  }
  auto [reactor, out] = ServerStream<inf::GenerateEvent>::Create(kRelayCapacity);
  auto& requests = metrics::Default().GetCounter(
      "sb_scheduler_generate_total", "Generate calls by outcome", {{"outcome", "routed"}});
  if (req->max_tokens() <= 0) {
    out->Finish(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "max_tokens must be positive"));
    return reactor;
  }
  NoPick why = NoPick::kUnknownModel;
  auto pick = registry_.Acquire(req->model(), absl::Now(), &why);
  if (!pick) {
    if (why != NoPick::kUnknownModel) {
      metrics::Default()
          .GetCounter("sb_scheduler_generate_total", "Generate calls by outcome",
                      {{"outcome", why == NoPick::kAllFull ? "at_capacity" : "no_worker"}})
          .Inc();
    }
    out->Finish(NoWorker(req->model(), why));
    return reactor;
  }
  requests.Inc();
  auto relay = std::make_shared<Relay>();
  relay->request = *req;
  relay->worker_id = pick->worker_id;
  relay->out = out;
  auto* stub = StubFor(pick->address);
  spdlog::info("request_id={} org={} model={} -> worker {}", req->request_id(), req->org_id(),
               req->model(), pick->worker_id);

  auto canceller = ClientStream<inf::GenerateEvent>::Start(
      UpstreamDeadline(ctx),
      [stub, relay](grpc::ClientContext* c, grpc::ClientReadReactor<inf::GenerateEvent>* r) {
        stub->async()->Generate(c, &relay->request, r);
      },
      [relay](inf::GenerateEvent&& e, ClientStream<inf::GenerateEvent>::Next next) {
        if (e.has_finished()) relay->saw_finished = true;
        if (!relay->out->Push(std::move(e))) {
          next(false);  // the caller has gone: cancel the worker's generation
          return;
        }
        relay->ResumeWhenRoom(std::move(next));
      },
      [this, relay](const grpc::Status& st) {
        registry_.Release(relay->worker_id);
        if (st.ok() && relay->saw_finished) {
          relay->out->Finish(grpc::Status::OK);
          return;
        }
        if (relay->out->ended()) return;  // the caller cancelled; nothing to report
        if (st.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED) {
          // A full engine is busy, not dead: keep routing to it.
          relay->out->Finish(grpc::Status(
              grpc::StatusCode::UNAVAILABLE,
              "every worker serving model " + relay->request.model() + " is at capacity"));
          return;
        }
        if (st.error_code() == grpc::StatusCode::UNAVAILABLE || (st.ok() && !relay->saw_finished)) {
          registry_.MarkDown(relay->worker_id);
          spdlog::error("request_id={} worker {} failed mid-generation: {}",
                        relay->request.request_id(), relay->worker_id, st.error_message());
          relay->out->Finish(
              grpc::Status(grpc::StatusCode::UNAVAILABLE,
                           "worker " + relay->worker_id + " failed: " + st.error_message()));
          return;
        }
        relay->out->Finish(st);
      },
      relay);
  out->SetOnSpace([relay] { relay->OnSpace(); });
  out->SetOnCancel([canceller] { canceller->Cancel(); });
  return reactor;
}

}  // namespace sb::scheduler
