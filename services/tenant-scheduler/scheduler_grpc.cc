#include "tenant-scheduler/scheduler_grpc.h"

#include <spdlog/spdlog.h>

#include "absl/time/clock.h"
#include "core/crypto.h"
#include "core/lease_token.h"
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
  std::string version;  // shown to the caller in Started.model, when set
  int64_t safety_policy_version = 0;  // in Started: the version's pinned platform policy
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

metrics::Counter& LeaseEnded(const std::string& how) {
  return metrics::Default().GetCounter("sb_scheduler_leases_ended_total",
                                       "Leases ended, by how: done, failed (an engine error), "
                                       "released (never used), expired, lost (no end report), "
                                       "worker_dead",
                                       {{"how", how}});
}

metrics::Gauge& ActiveLeases() {
  static auto& g = metrics::Default().GetGauge("sb_scheduler_leases", "Leases held on workers");
  return g;
}

// Refused for capacity: the model's workers are full and the wait would be
// too long (529 at the gateway).
// Output tokens served per org (the tenants dashboard's top orgs): one
// series per org that has used a model since the replica started.
void CountServed(const std::string& org, int output) {
  metrics::Default()
      .GetCounter("sb_scheduler_org_output_tokens_total", "Output tokens served, by org",
                  {{"org", org}})
      .Inc(output);
}

grpc::Status AtCapacity(const std::string& model) {
  return grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                      "every worker serving model " + model + " is at capacity");
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

// The hashes of the prompt's first blocks, for cache-aware routing (under
// the simulator's tokenizer and 16-token block hashes). Only the first
// kRoutedPromptBytes count: affinity is measured from the start, and this
// bounds the cost of a long prompt.
constexpr size_t kRoutedPromptBytes = 16 * 1024;

std::vector<uint64_t> PromptPrefix(const inf::GenerateRequest& req) {
  std::string text = worker::ToEngineRequest(req, nullptr).Flatten();
  if (text.size() > kRoutedPromptBytes) text.resize(kRoutedPromptBytes);
  return worker::sim::PrefixBlockHashes(text);
}

std::chrono::system_clock::time_point UpstreamDeadline(grpc::CallbackServerContext* ctx) {
  const auto cap = std::chrono::system_clock::now() + std::chrono::hours(1);
  return std::min(ctx->deadline(), cap);
}

}  // namespace

SchedulerServiceImpl::SchedulerServiceImpl(WorkerRegistry& registry,
                                           absl::Duration heartbeat_interval, QueueOptions queue,
                                           SchedulerHooks hooks)
    : registry_(registry),
      heartbeat_interval_(heartbeat_interval),
      queue_options_(queue),
      hooks_(std::move(hooks)),
      id_(RandomHex(6)) {}

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
  resp->set_scheduler_id(id_);
  {
    // One key per worker for this replica's life: a lease granted just
    // before the worker registered again stays good.
    std::lock_guard<std::mutex> lock(mu_);
    auto& key = lease_keys_[req->worker_id()];
    if (key.empty()) key = RandomHex(32);
    resp->set_lease_key(key);
  }
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
  // Leases of other replicas take room here too; this replica's own ones
  // tell which of its started leases still run.
  const std::string own = id_ + ".";
  std::set<std::string_view> listed;
  for (const auto& lease : req->leases()) {
    if (lease.compare(0, own.size(), own) == 0) {
      listed.insert(lease);
    } else {
      ++load.foreign_in_flight;
    }
  }
  const auto beat = registry_.Heartbeat(req->worker_id(), req->in_flight(), absl::Now(),
                                        req->session(), std::move(load));
  if (beat == WorkerRegistry::Beat::kOk) {
    std::vector<std::string> freed;
    {
      std::lock_guard<std::mutex> lock(queue_mu_);
      for (auto it = leases_.begin(); it != leases_.end();) {
        LeaseState& l = it->second;
        if (l.worker_id != req->worker_id() || !l.started || listed.count(it->first)) {
          if (l.worker_id == req->worker_id()) l.missing_beats = 0;
          ++it;
          continue;
        }
        if (++l.missing_beats < 3) {
          ++it;
          continue;
        }
        // Its end report was lost: the worker no longer runs it.
        LeaseEnded("lost").Inc();
        freed.push_back(EndLeaseLocked(it++, LeaseOutcome::kUnknown));
      }
    }
    for (const auto& m : freed) Dispatch(m);
  }
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

ResolvedModel SchedulerServiceImpl::Resolve(const inf::GenerateRequest& req) const {
  if (hooks_.resolve) return hooks_.resolve(req);
  return ResolvedModel{req.model(), ""};
}

SchedulerServiceImpl::ModelQueue& SchedulerServiceImpl::QueueFor(const std::string& model,
                                                                 const std::string& org) {
  ModelQueue& mq = queues_.try_emplace(model, queue_options_).first->second;
  if (hooks_.org_policy && mq.orgs_seen.insert(org).second) {
    const auto [weight, cap] = hooks_.org_policy(org, model);
    mq.fair.SetWeight(org, weight);
    mq.fair.SetConcurrencyCap(org, cap);
  }
  return mq;
}

void SchedulerServiceImpl::ApplyOrgPolicy() {
  if (!hooks_.org_policy) return;
  {
    std::lock_guard<std::mutex> lock(queue_mu_);
    for (auto& [model, mq] : queues_) {
      for (const auto& org : mq.orgs_seen) {
        const auto [weight, cap] = hooks_.org_policy(org, model);
        mq.fair.SetWeight(org, weight);
        mq.fair.SetConcurrencyCap(org, cap);
      }
    }
  }
  DispatchAll();  // a raised cap may let queued requests go
}

bool SchedulerServiceImpl::MayTakeSlot(ModelQueue& mq, const std::string& model,
                                       const std::string& org, absl::Time now) {
  const WorkerRegistry::Room room = registry_.RoomFor(model, now);
  mq.fair.SetCapacity(static_cast<int>(std::min<int64_t>(room.capacity, 1 << 30)));
  if (queue_options_.reserved_slots <= 0) return true;
  const int64_t reserve = std::min<int64_t>(queue_options_.reserved_slots, room.capacity / 8);
  return room.free > reserve || mq.fair.UnderShare(org, static_cast<int>(room.capacity));
}

SchedulerServiceImpl::Decision SchedulerServiceImpl::TryDirect(
    const inf::GenerateRequest& req, const std::string& model,
    const std::vector<uint64_t>& prefix) {
  const absl::Time now = absl::Now();
  const Priority priority = PriorityOf(req);
  Decision d;
  std::lock_guard<std::mutex> lock(queue_mu_);
  ModelQueue& mq = QueueFor(model, req.org_id());
  // Nobody overtakes the queue, and an org at its cap waits in it.
  if (mq.waiting.empty() && mq.fair.UnderCap(req.org_id(), priority) &&
      MayTakeSlot(mq, model, req.org_id(), now)) {
    d.pick = registry_.Acquire(model, now, &d.why, prefix);
    if (d.pick) {
      const int input = EstimatedInputTokens(req);
      mq.fair.AdmitDirect(req.org_id(), priority, input);
      mq.rate.Served(input, now);
    }
    return d;
  }
  d.why = registry_.AnyLive(model, now, &d.why) ? NoPick::kAllFull : d.why;
  return d;
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
  const ResolvedModel res = Resolve(*req);
  const auto deadline = UpstreamDeadline(ctx);
  std::vector<uint64_t> prefix = PromptPrefix(*req);
  Decision d = TryDirect(*req, res.model, prefix);
  if (d.pick) {
    StartRelay(*req, res, *d.pick, out, deadline);
  } else if (d.why == NoPick::kAllFull) {
    Enqueue(
        *req, res.model, std::move(prefix),
        [this, req = *req, res, out, deadline](const Pick& pick) {
          StartRelay(req, res, pick, out, deadline);
        },
        [out](const grpc::Status& st) { out->Finish(st); },
        [out](std::function<void()> remove) { out->SetOnCancel(std::move(remove)); });
  } else {
    if (d.why != NoPick::kUnknownModel) Outcome("no_worker").Inc();
    out->Finish(NoWorker(req->model(), d.why));
  }
  return reactor;
}

// Admit's reply, which may wait in the queue: the caller leaving takes the
// request out of it.
class SchedulerServiceImpl::AdmitReactor final : public grpc::ServerUnaryReactor {
 public:
  void SetOnCancel(std::function<void()> fn) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (!cancelled_) {
        on_cancel_ = std::move(fn);
        return;
      }
    }
    fn();
  }
  void OnCancel() override {
    std::function<void()> fn;
    {
      std::lock_guard<std::mutex> lock(mu_);
      cancelled_ = true;
      fn = std::move(on_cancel_);
      on_cancel_ = nullptr;
    }
    if (fn) fn();
  }
  void OnDone() override { delete this; }

 private:
  std::mutex mu_;
  bool cancelled_ = false;
  std::function<void()> on_cancel_;
};

grpc::ServerUnaryReactor* SchedulerServiceImpl::Admit(grpc::CallbackServerContext* ctx,
                                                      const inf::GenerateRequest* req,
                                                      sched::Lease* resp) {
  if (auto* refused =
          grpcx::RefuseUnlessAllowed(ctx, "/switchboard.scheduler.v1.TenantScheduler/Admit"))
    return refused;
  auto* reactor = new AdmitReactor();
  if (req->max_tokens() <= 0) {
    reactor->Finish(
        grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "max_tokens must be positive"));
    return reactor;
  }
  if (req->request_id().empty()) {
    reactor->Finish(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "request_id is required"));
    return reactor;
  }
  const ResolvedModel res = Resolve(*req);
  std::vector<uint64_t> prefix = PromptPrefix(*req);
  Decision d = TryDirect(*req, res.model, prefix);
  if (d.pick) {
    Outcome("routed").Inc();
    GrantLease(*req, res, *d.pick, resp);
    reactor->Finish(grpc::Status::OK);
  } else if (d.why == NoPick::kAllFull) {
    Enqueue(
        *req, res.model, std::move(prefix),
        [this, req = *req, res, resp, reactor](const Pick& pick) {
          Outcome("routed").Inc();
          GrantLease(req, res, pick, resp);
          reactor->Finish(grpc::Status::OK);
        },
        [reactor](const grpc::Status& st) { reactor->Finish(st); },
        [reactor](std::function<void()> remove) { reactor->SetOnCancel(std::move(remove)); });
  } else {
    if (d.why != NoPick::kUnknownModel) Outcome("no_worker").Inc();
    reactor->Finish(NoWorker(req->model(), d.why));
  }
  return reactor;
}

std::string SchedulerServiceImpl::GrantLease(const inf::GenerateRequest& req,
                                             const ResolvedModel& res, const Pick& pick,
                                             sched::Lease* out) {
  const absl::Time now = absl::Now();
  const absl::Time expires = now + queue_options_.lease_ttl;
  std::string key;
  {
    std::lock_guard<std::mutex> lock(mu_);
    key = lease_keys_[pick.worker_id];
  }
  std::string lease;
  {
    std::lock_guard<std::mutex> lock(queue_mu_);
    const LeaseClaims claims{.scheduler_id = id_,
                             .sequence = next_lease_++,
                             .expires_unix_ms = absl::ToUnixMillis(expires)};
    lease = SignLease(key, claims, pick.worker_id, req.request_id());
    leases_[lease] = LeaseState{.worker_id = pick.worker_id,
                                .model = res.model,
                                .version = res.version,
                                .org = req.org_id(),
                                .priority = PriorityOf(req),
                                .expires = expires,
                                .input_charged = EstimatedInputTokens(req)};
    ActiveLeases().Set(static_cast<double>(leases_.size()));
  }
  spdlog::info("request_id={} org={} model={} leased on worker {}", req.request_id(), req.org_id(),
               res.model, pick.worker_id);
  out->set_lease_id(lease);
  out->set_worker_id(pick.worker_id);
  out->set_worker_address(pick.address);
  out->set_model(res.model);
  out->set_version(res.version);
  out->set_safety_policy_version(res.safety_policy_version);
  out->set_expires_unix_ms(absl::ToUnixMillis(expires));
  return lease;
}

std::string SchedulerServiceImpl::EndLeaseLocked(
    std::unordered_map<std::string, LeaseState>::iterator it, LeaseOutcome outcome) {
  const LeaseState l = std::move(it->second);
  leases_.erase(it);
  ActiveLeases().Set(static_cast<double>(leases_.size()));
  registry_.Release(l.worker_id);
  auto q = queues_.find(l.model);
  if (q != queues_.end()) q->second.fair.Finished(l.org, l.priority);
  if (hooks_.outcome && outcome != LeaseOutcome::kUnknown) {
    hooks_.outcome(l.version.empty() ? l.model : l.version, outcome == LeaseOutcome::kSucceeded);
  }
  return l.model;
}

grpc::ServerUnaryReactor* SchedulerServiceImpl::ReleaseLease(grpc::CallbackServerContext* ctx,
                                                             const sched::ReleaseLeaseRequest* req,
                                                             sched::ReleaseLeaseResponse*) {
  if (auto* refused =
          grpcx::RefuseUnlessAllowed(ctx, "/switchboard.scheduler.v1.TenantScheduler/ReleaseLease"))
    return refused;
  std::string model;
  {
    std::lock_guard<std::mutex> lock(queue_mu_);
    auto it = leases_.find(req->lease_id());
    // A started lease is the worker's to end.
    if (it != leases_.end() && !it->second.started) {
      LeaseEnded("released").Inc();
      model = EndLeaseLocked(it, LeaseOutcome::kUnknown);
    }
  }
  if (!model.empty()) Dispatch(model);
  auto* reactor = ctx->DefaultReactor();
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

grpc::ServerUnaryReactor* SchedulerServiceImpl::ReportServed(grpc::CallbackServerContext* ctx,
                                                             const sched::ReportServedRequest* req,
                                                             sched::ReportServedResponse*) {
  if (auto* refused =
          grpcx::RefuseUnlessAllowed(ctx, "/switchboard.scheduler.v1.TenantScheduler/ReportServed"))
    return refused;
  auto* reactor = ctx->DefaultReactor();
  if (!registry_.SessionMatches(req->worker_id(), req->session())) {
    // Not a registration this replica knows (it restarted): the worker
    // registers again, and the leases it reports are gone with the old one.
    reactor->Finish(grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                                 "not the session of a registration of this worker"));
    return reactor;
  }
  const absl::Time now = absl::Now();
  std::set<std::string> freed;
  {
    std::lock_guard<std::mutex> lock(queue_mu_);
    for (const auto& r : req->reports()) {
      auto it = leases_.find(r.lease_id());
      if (it == leases_.end() || it->second.worker_id != req->worker_id()) continue;
      LeaseState& l = it->second;
      l.started = true;
      l.missing_beats = 0;
      ModelQueue& mq = QueueFor(l.model, l.org);
      const int input = std::max(0, r.input_tokens());
      const int output = std::max(0, r.output_tokens());
      if (input > 0 && input != l.input_charged) {
        // The worker's count replaces the estimate charged at admission.
        mq.fair.ChargeInput(l.org, l.priority, input - l.input_charged);
        l.input_charged = input;
      }
      if (output > l.output_charged) {
        mq.fair.ChargeOutput(l.org, l.priority, output - l.output_charged);
        mq.rate.Served(output - l.output_charged, now);
        CountServed(l.org, output - l.output_charged);
        l.output_charged = output;
      }
      if (r.done()) {
        LeaseEnded(r.failed() ? "failed" : "done").Inc();
        freed.insert(
            EndLeaseLocked(it, r.failed() ? LeaseOutcome::kFailed : LeaseOutcome::kSucceeded));
      }
    }
  }
  for (const auto& m : freed) Dispatch(m);
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

std::vector<std::string> SchedulerServiceImpl::Sweep(absl::Time now) {
  std::vector<std::string> dead = registry_.Sweep(now);
  std::set<std::string> live;
  for (const auto& w : registry_.List()) {
    if (registry_.IsLive(w, now)) live.insert(w.id);
  }
  std::set<std::string> freed;
  {
    std::lock_guard<std::mutex> lock(queue_mu_);
    for (auto it = leases_.begin(); it != leases_.end();) {
      const LeaseState& l = it->second;
      if (!live.count(l.worker_id)) {
        LeaseEnded("worker_dead").Inc();
        freed.insert(EndLeaseLocked(it++, LeaseOutcome::kFailed));
      } else if (!l.started && now > l.expires + kLeaseGrace) {
        // Never used: its holder left, or died, before calling the worker.
        LeaseEnded("expired").Inc();
        freed.insert(EndLeaseLocked(it++, LeaseOutcome::kUnknown));
      } else {
        ++it;
      }
    }
  }
  for (const auto& m : freed) Dispatch(m);
  return dead;
}

grpc::ServerUnaryReactor* SchedulerServiceImpl::GetFairness(grpc::CallbackServerContext* ctx,
                                                            const sched::GetFairnessRequest* req,
                                                            sched::GetFairnessResponse* resp) {
  if (auto* refused =
          grpcx::RefuseUnlessAllowed(ctx, "/switchboard.scheduler.v1.TenantScheduler/GetFairness"))
    return refused;
  {
    std::lock_guard<std::mutex> lock(queue_mu_);
    for (const auto& [model, mq] : queues_) {
      if (!req->model().empty() && req->model() != model) continue;
      auto* m = resp->add_models();
      m->set_model(model);
      for (Priority p : {Priority::kInteractive, Priority::kBatch}) {
        const auto orgs = mq.fair.Orgs(p);
        auto cost = [&](const FairQueue::OrgView& o) {
          return queue_options_.input_weight * static_cast<double>(o.input_served) +
                 queue_options_.output_weight * static_cast<double>(o.output_served);
        };
        double total = 0;
        for (const auto& o : orgs) total += cost(o);
        for (const auto& o : orgs) {
          auto* out = m->add_orgs();
          out->set_org_id(o.org);
          out->set_priority(PriorityName(p));
          out->set_weight(mq.fair.Weight(o.org));
          out->set_counter(o.counter);
          out->set_queued(o.queued);
          out->set_in_service(o.in_service);
          out->set_input_tokens_served(o.input_served);
          out->set_output_tokens_served(o.output_served);
          out->set_share(total > 0 ? cost(o) / total : 0);
        }
      }
    }
  }
  auto* reactor = ctx->DefaultReactor();
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

void SchedulerServiceImpl::Enqueue(const inf::GenerateRequest& req, const std::string& model,
                                   std::vector<uint64_t> prefix, Start start,
                                   std::function<void(const grpc::Status&)> refuse,
                                   const std::function<void(std::function<void()>)>& on_cancel) {
  const absl::Time now = absl::Now();
  const Priority priority = PriorityOf(req);
  const absl::Duration max_wait =
      priority == Priority::kBatch ? queue_options_.max_batch_wait : queue_options_.max_wait;
  QueuedRequest queued{.id = 0,
                       .org = req.org_id(),
                       .priority = priority,
                       .input_tokens = EstimatedInputTokens(req),
                       .max_tokens = req.max_tokens(),
                       .enqueued = now};
  uint64_t id = 0;
  absl::Status refused;
  std::function<void(const grpc::Status&)> refuse_evicted;
  {
    std::lock_guard<std::mutex> lock(queue_mu_);
    ModelQueue& mq = QueueFor(model, req.org_id());
    // The tokens served before it in the fair order, not every token queued:
    // a light org's request is not refused for a flood's backlog.
    const int64_t ahead = mq.fair.TokensAhead(req.org_id(), priority,
                                              int64_t{queued.input_tokens} + queued.max_tokens);
    const auto wait = mq.rate.Wait(ahead, now);
    if (wait && *wait > max_wait) {
      refused = absl::ResourceExhaustedError("estimated wait " + absl::FormatDuration(*wait));
      Outcome("refused_wait").Inc();
    } else {
      id = next_queued_id_++;
      queued.id = id;
      std::optional<uint64_t> evicted;
      if (auto st = mq.fair.Push(queued, &evicted); !st.ok()) {
        refused = st;
        Outcome("refused_queue_full").Inc();
      } else {
        if (evicted) {
          // The org holding the most of the full queue gave up its newest.
          auto e = mq.waiting.find(*evicted);
          refuse_evicted = std::move(e->second.refuse);
          mq.waiting.erase(e);
          Outcome("refused_queue_full").Inc();
        }
        mq.waiting[id] = Waiting{[start = std::move(start), now](const Pick& pick) {
                                   QueueWait().Observe(absl::ToDoubleSeconds(absl::Now() - now));
                                   start(pick);
                                 },
                                 std::move(prefix), refuse};
        QueueDepth(model, priority).Set(static_cast<double>(mq.fair.queued(priority)));
      }
    }
  }
  if (refuse_evicted) refuse_evicted(AtCapacity(model));
  if (!refused.ok()) {
    spdlog::info("request_id={} org={} model={} refused: {}", req.request_id(), req.org_id(), model,
                 std::string(refused.message()));
    refuse(AtCapacity(model));
    return;
  }
  Outcome("queued").Inc();
  on_cancel([this, model, id, refuse] {
    if (RemoveQueued(model, id)) refuse(grpc::Status(grpc::StatusCode::CANCELLED, "caller left"));
  });
  timers_.After(max_wait, [this, model, id, refuse] {
    if (RemoveQueued(model, id)) {
      Outcome("timed_out").Inc();
      refuse(AtCapacity(model));
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
    Start start;
    std::optional<Pick> pick;
    {
      std::lock_guard<std::mutex> lock(queue_mu_);
      auto q = queues_.find(model);
      if (q == queues_.end() || q->second.waiting.empty()) return;
      const QueuedRequest* next_up = q->second.fair.Peek();
      if (next_up == nullptr) return;  // every backlogged org is at its cap
      if (!MayTakeSlot(q->second, model, next_up->org, absl::Now())) return;
      auto w = q->second.waiting.find(next_up->id);
      // The worker is chosen for the request that goes next, with its prefix.
      NoPick why;
      pick = registry_.Acquire(model, absl::Now(), &why, w->second.prefix);
      if (!pick) return;
      auto next = q->second.fair.Pop();
      q->second.rate.Served(next->input_tokens, absl::Now());
      start = std::move(w->second.start);
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

void SchedulerServiceImpl::Served(const std::string& model, const std::string& org,
                                  Priority priority, int output) {
  std::lock_guard<std::mutex> lock(queue_mu_);
  ModelQueue& mq = QueueFor(model, org);
  mq.fair.ChargeOutput(org, priority, output);
  mq.rate.Served(output, absl::Now());
  CountServed(org, output);
}

void SchedulerServiceImpl::StartRelay(const inf::GenerateRequest& req, const ResolvedModel& res,
                                      const Pick& pick, Out out,
                                      std::chrono::system_clock::time_point deadline) {
  Outcome("routed").Inc();
  auto relay = std::make_shared<Relay>();
  relay->request = req;
  relay->request.set_model(res.model);
  relay->version = res.version;
  relay->safety_policy_version = res.safety_policy_version;
  relay->worker_id = pick.worker_id;
  relay->out = out;
  auto* stub = StubFor(pick.address);
  spdlog::info("request_id={} org={} model={} -> worker {}", req.request_id(), req.org_id(),
               res.model, pick.worker_id);

  auto canceller = ClientStream<inf::GenerateEvent>::Start(
      deadline,
      [stub, relay](grpc::ClientContext* c, grpc::ClientReadReactor<inf::GenerateEvent>* r) {
        stub->async()->Generate(c, &relay->request, r);
      },
      [this, relay](inf::GenerateEvent&& e, ClientStream<inf::GenerateEvent>::Next next) {
        if (e.has_finished()) relay->saw_finished = true;
        if (e.has_started() && !relay->version.empty())
          e.mutable_started()->set_model(relay->version);
        if (e.has_started()) {
          e.mutable_started()->set_safety_policy_version(relay->safety_policy_version);
        }
        if (e.has_token()) {
          Served(relay->request.model(), relay->request.org_id(), PriorityOf(relay->request), 1);
        }
        if (!relay->out->Push(std::move(e))) {
          next(false);  // the caller has gone: cancel the worker's generation
          return;
        }
        relay->ResumeWhenRoom(std::move(next));
      },
      [this, relay](const grpc::Status& st) {
        {
          std::lock_guard<std::mutex> lock(queue_mu_);
          registry_.Release(relay->worker_id);
          auto q = queues_.find(relay->request.model());
          if (q != queues_.end()) {
            q->second.fair.Finished(relay->request.org_id(), PriorityOf(relay->request));
          }
        }
        const bool failed = !st.ok() && st.error_code() != grpc::StatusCode::CANCELLED &&
                            st.error_code() != grpc::StatusCode::RESOURCE_EXHAUSTED;
        if (hooks_.outcome) {
          hooks_.outcome(relay->version.empty() ? relay->request.model() : relay->version, !failed);
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
          relay->out->Finish(AtCapacity(relay->request.model()));
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
