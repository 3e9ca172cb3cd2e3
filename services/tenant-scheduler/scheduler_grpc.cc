#include "tenant-scheduler/scheduler_grpc.h"

#include <spdlog/spdlog.h>

#include "absl/time/clock.h"
#include "core/crypto.h"
#include "core/metrics.h"
#include "grpcx/authz.h"
#include "grpcx/streams.h"
#include "grpcx/tls.h"
#include "inference-worker/engine_request.h"
#include "inference-worker/sim/kv_cache.h"

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

metrics::Counter& Outcome(const std::string& outcome) {
  return metrics::Default().GetCounter("sb_scheduler_generate_total", "Generate calls by outcome",
                                       {{"outcome", outcome}});
}

Priority PriorityOf(const inf::GenerateRequest& req) {
  return req.priority() == "batch" ? Priority::kBatch : Priority::kInteractive;
}

const char* PriorityName(Priority p) { return p == Priority::kBatch ? "batch" : "interactive"; }

metrics::Gauge& QueueDepth(const std::string& model, Priority priority) {
  return metrics::Default().GetGauge("sb_scheduler_queue_depth",
                                     "Requests waiting in the fair queue for a worker",
                                     {{"model", model}, {"priority", PriorityName(priority)}});
}

metrics::Histogram& QueueWait() {
  static auto& h = metrics::Default().GetHistogram(
      "sb_scheduler_queue_wait_seconds", "Time a request waited in the fair queue for a worker");
  return h;
}

// About four bytes a token: the fair queue's charge for a request's input
// before a worker has counted it.
int EstimatedInputTokens(const inf::GenerateRequest& req) {
  size_t bytes = 0;
  for (const auto& b : req.system()) bytes += b.text().size();
  for (const auto& m : req.messages()) {
    for (const auto& b : m.content()) bytes += b.text().size();
  }
  return static_cast<int>(bytes / 4 + 1);
}

std::chrono::system_clock::time_point UpstreamDeadline(grpc::CallbackServerContext* ctx) {
  const auto cap = std::chrono::system_clock::now() + std::chrono::hours(1);
  return std::min(ctx->deadline(), cap);
}

}  // namespace

SchedulerServiceImpl::SchedulerServiceImpl(WorkerRegistry& registry,
                                           absl::Duration heartbeat_interval, QueueOptions queue)
    : registry_(registry), heartbeat_interval_(heartbeat_interval), queue_options_(queue) {}

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
  DispatchAll();  // a new worker: room for what waits
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
  if (beat == WorkerRegistry::Beat::kOk) DispatchAll();
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
  if (req->max_tokens() <= 0) {
    out->Finish(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "max_tokens must be positive"));
    return reactor;
  }
  NoPick why = NoPick::kUnknownModel;
  std::optional<Pick> pick;
  {
    // Nobody overtakes the queue: a request finds a worker directly only
    // when nothing of its model waits.
    // Routed to the worker that has most of its prompt's prefix cached
    // (under the simulator's tokenizer and block hashes), load allowing;
    // hashed before the queue's lock is taken.
    const std::vector<uint64_t> prefix =
        worker::sim::PrefixBlockHashes(worker::ToEngineRequest(*req, nullptr).Flatten());
    std::lock_guard<std::mutex> lock(queue_mu_);
    auto q = queues_.find(req->model());
    if (q != queues_.end() && !q->second.waiting.empty()) {
      why = NoPick::kAllFull;
    } else {
      pick = registry_.Acquire(req->model(), absl::Now(), &why, prefix);
    }
  }
  if (!pick) {
    if (why == NoPick::kAllFull) {
      Enqueue(*req, out, UpstreamDeadline(ctx));
      return reactor;
    }
    if (why != NoPick::kUnknownModel) Outcome("no_worker").Inc();
    out->Finish(NoWorker(req->model(), why));
    return reactor;
  }
  StartRelay(*req, *pick, out, UpstreamDeadline(ctx), /*queued=*/false);
  return reactor;
}

void SchedulerServiceImpl::Enqueue(const inf::GenerateRequest& req, Out out,
                                   std::chrono::system_clock::time_point deadline) {
  const absl::Time now = absl::Now();
  const Priority priority = PriorityOf(req);
  const absl::Duration max_wait =
      priority == Priority::kBatch ? queue_options_.max_batch_wait : queue_options_.max_wait;
  const QueuedRequest queued{.id = 0,
                             .org = req.org_id(),
                             .priority = priority,
                             .input_tokens = EstimatedInputTokens(req),
                             .max_tokens = req.max_tokens(),
                             .enqueued = now};
  uint64_t id = 0;
  absl::Status refused;
  {
    std::lock_guard<std::mutex> lock(queue_mu_);
    ModelQueue& mq = queues_.try_emplace(req.model(), queue_options_).first->second;
    const int64_t ahead =
        mq.fair.queued_tokens(Priority::kInteractive) + queued.input_tokens + queued.max_tokens;
    const auto wait = mq.rate.Wait(ahead, now);
    if (wait && *wait > queue_options_.max_wait) {
      refused = absl::UnavailableError("estimated wait " + absl::FormatDuration(*wait));
      Outcome("refused_wait").Inc();
    } else {
      id = next_queued_id_++;
      QueuedRequest r = queued;
      r.id = id;
      if (auto st = mq.fair.Push(std::move(r)); !st.ok()) {
        refused = st;
        Outcome("refused_queue_full").Inc();
      } else {
        mq.waiting[id] = [this, req, out, deadline, now](const Pick& pick) {
          QueueWait().Observe(absl::ToDoubleSeconds(absl::Now() - now));
          StartRelay(req, pick, out, deadline, /*queued=*/true);
        };
        QueueDepth(req.model(), priority).Set(static_cast<double>(mq.fair.queued(priority)));
      }
    }
  }
  if (!refused.ok()) {
    spdlog::info("request_id={} org={} model={} refused: {}", req.request_id(), req.org_id(),
                 req.model(), std::string(refused.message()));
    out->Finish(NoWorker(req.model(), NoPick::kAllFull));
    return;
  }
  Outcome("queued").Inc();
  const std::string model = req.model();
  out->SetOnCancel([this, model, id] { RemoveQueued(model, id); });
  timers_.After(max_wait, [this, model, id, out] {
    if (RemoveQueued(model, id)) {
      Outcome("timed_out").Inc();
      out->Finish(NoWorker(model, NoPick::kAllFull));
    }
  });
  // A slot may have freed while this request was being queued.
  Dispatch(model);
}

bool SchedulerServiceImpl::RemoveQueued(const std::string& model, uint64_t id) {
  std::lock_guard<std::mutex> lock(queue_mu_);
  auto q = queues_.find(model);
  if (q == queues_.end() || q->second.waiting.erase(id) == 0) return false;
  q->second.fair.Remove(id);
  for (Priority p : {Priority::kInteractive, Priority::kBatch}) {
    QueueDepth(model, p).Set(static_cast<double>(q->second.fair.queued(p)));
  }
  return true;
}

void SchedulerServiceImpl::Dispatch(const std::string& model) {
  while (true) {
    std::function<void(const Pick&)> start;
    std::optional<Pick> pick;
    {
      std::lock_guard<std::mutex> lock(queue_mu_);
      auto q = queues_.find(model);
      if (q == queues_.end() || q->second.waiting.empty()) return;
      NoPick why;
      pick = registry_.Acquire(model, absl::Now(), &why);
      if (!pick) return;
      auto next = q->second.fair.Pop();
      if (!next) {
        registry_.Release(pick->worker_id);
        return;
      }
      q->second.rate.Served(next->input_tokens, absl::Now());
      auto w = q->second.waiting.find(next->id);
      start = std::move(w->second);
      q->second.waiting.erase(w);
      QueueDepth(model, next->priority)
          .Set(static_cast<double>(q->second.fair.queued(next->priority)));
    }
    start(*pick);
  }
}

void SchedulerServiceImpl::DispatchAll() {
  std::vector<std::string> models;
  {
    std::lock_guard<std::mutex> lock(queue_mu_);
    for (const auto& [model, q] : queues_) {
      if (!q.waiting.empty()) models.push_back(model);
    }
  }
  for (const auto& m : models) Dispatch(m);
}

void SchedulerServiceImpl::Served(const inf::GenerateRequest& req, int input, int output) {
  std::lock_guard<std::mutex> lock(queue_mu_);
  ModelQueue& mq = queues_.try_emplace(req.model(), queue_options_).first->second;
  if (output > 0) mq.fair.ChargeOutput(req.org_id(), PriorityOf(req), output);
  mq.rate.Served(input + output, absl::Now());
}

void SchedulerServiceImpl::StartRelay(const inf::GenerateRequest& req, const Pick& pick, Out out,
                                      std::chrono::system_clock::time_point deadline, bool queued) {
  Outcome("routed").Inc();
  auto relay = std::make_shared<Relay>();
  relay->request = req;
  relay->worker_id = pick.worker_id;
  relay->out = out;
  auto* stub = StubFor(pick.address);
  spdlog::info("request_id={} org={} model={} -> worker {}", req.request_id(), req.org_id(),
               req.model(), pick.worker_id);
  if (!queued) Served(req, EstimatedInputTokens(req), 0);

  auto canceller = ClientStream<inf::GenerateEvent>::Start(
      deadline,
      [stub, relay](grpc::ClientContext* c, grpc::ClientReadReactor<inf::GenerateEvent>* r) {
        stub->async()->Generate(c, &relay->request, r);
      },
      [this, relay](inf::GenerateEvent&& e, ClientStream<inf::GenerateEvent>::Next next) {
        if (e.has_finished()) relay->saw_finished = true;
        if (e.has_token()) Served(relay->request, 0, 1);
        if (!relay->out->Push(std::move(e))) {
          next(false);  // the caller has gone: cancel the worker's generation
          return;
        }
        relay->ResumeWhenRoom(std::move(next));
      },
      [this, relay, queued](const grpc::Status& st) {
        registry_.Release(relay->worker_id);
        if (queued) {
          std::lock_guard<std::mutex> lock(queue_mu_);
          auto q = queues_.find(relay->request.model());
          if (q != queues_.end()) {
            q->second.fair.Finished(relay->request.org_id(), PriorityOf(relay->request));
          }
        }
        // The freed slot goes to whoever waits for the model.
        Dispatch(relay->request.model());
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
}

}  // namespace sb::scheduler
