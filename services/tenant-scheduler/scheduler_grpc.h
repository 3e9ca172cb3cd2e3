// switchboard.scheduler.v1.TenantScheduler: worker registration and
// heartbeats, the models the workers serve, and the admission of requests.
//
// Admit decides and the worker streams: it finds a worker with room for the
// request (router.h) or waits in the model's fair queue (fair_queue.h:
// weighted VTC across orgs) for one, and returns a lease on that worker
// (core/lease_token.h). The caller streams from the worker directly; the
// worker reports the tokens the lease served (the fair queue's charges) and
// its end (which frees the slot) with ReportServed. A lease not used before
// it expires, whose worker dies, or that the worker stops listing in its
// heartbeats, is freed.
//
// A request whose estimated wait (wait_estimator.h: tokens queued ahead over
// the model's served rate) already exceeds the longest wait allowed is
// refused at once with RESOURCE_EXHAUSTED (529 at the gateway), as is one
// that finds the queue full or waits that long.
//
// Generate is the older path, kept for comparison (--direct_streaming=false
// at the gateway): the same admission, then the scheduler relays the
// worker's stream itself.
//
// Several replicas may serve together: each worker registers and
// heartbeats with every replica, each replica grants leases from its own
// queue, and counts the requests other replicas leased on a worker (from
// its heartbeats) as taking room there.
#pragma once

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/timers.h"
#include "grpcx/streams.h"
#include "switchboard/inference/v1/inference.grpc.pb.h"
#include "switchboard/scheduler/v1/scheduler.grpc.pb.h"
#include "tenant-scheduler/fair_queue.h"
#include "tenant-scheduler/wait_estimator.h"
#include "tenant-scheduler/worker_registry.h"

namespace sb::scheduler {

struct QueueOptions {
  absl::Duration max_wait = absl::Seconds(2);         // interactive requests
  absl::Duration max_batch_wait = absl::Minutes(10);  // batch requests
  double input_weight = 1;                            // VTC charge per input token
  double output_weight = 2;                           // and per output token
  size_t max_queued = 10000;                          // per model
  absl::Duration lease_ttl = absl::Seconds(10);       // a lease unused this long is freed
  // Slots of a model kept for orgs under their share of its slots (at most
  // an eighth of its capacity): a newcomer does not wait for a flood's
  // sequences to end. An org alone cannot use them (bench/RESULTS.md).
  int reserved_slots = 1;
};

// Where a request's model name leads: the model the workers serve and the
// version clients are told (the model registry; by default the name itself).
struct ResolvedModel {
  std::string model;
  std::string version;
  int64_t safety_policy_version = 0;  // the version's pinned platform policy (0: none)
};

struct SchedulerHooks {
  std::function<ResolvedModel(const switchboard::inference::v1::GenerateRequest&)> resolve;
  // How a request on a version ended (for its circuit breaker).
  std::function<void(const std::string& version, bool ok)> outcome;
  // An org's weight and concurrency cap (0: none) for a model, applied to
  // the model's fair queue when the org is next seen there.
  std::function<std::pair<double, int>(const std::string& org, const std::string& model)>
      org_policy;
};

class SchedulerServiceImpl final : public switchboard::scheduler::v1::TenantScheduler::CallbackService {
 public:
  SchedulerServiceImpl(WorkerRegistry& registry, absl::Duration heartbeat_interval,
                       QueueOptions queue = {}, SchedulerHooks hooks = {});

  // This replica's id (new at every start): the prefix of its leases.
  const std::string& id() const { return id_; }

  // Declares workers whose heartbeats stopped dead and frees their leases,
  // and those never used before their expiry; returns the dead workers.
  std::vector<std::string> Sweep(absl::Time now);
  // The org policy changed: applied to every model's queue.
  void ApplyOrgPolicy();

  grpc::ServerUnaryReactor* RegisterWorker(
      grpc::CallbackServerContext* ctx, const switchboard::scheduler::v1::RegisterWorkerRequest* req,
      switchboard::scheduler::v1::RegisterWorkerResponse* resp) override;
  grpc::ServerUnaryReactor* Heartbeat(grpc::CallbackServerContext* ctx,
                                      const switchboard::scheduler::v1::HeartbeatRequest* req,
                                      switchboard::scheduler::v1::HeartbeatResponse* resp) override;
  grpc::ServerUnaryReactor* ListWorkers(grpc::CallbackServerContext* ctx,
                                        const switchboard::scheduler::v1::ListWorkersRequest* req,
                                        switchboard::scheduler::v1::ListWorkersResponse* resp) override;
  grpc::ServerUnaryReactor* ListModels(grpc::CallbackServerContext* ctx,
                                       const switchboard::scheduler::v1::ListModelsRequest* req,
                                       switchboard::scheduler::v1::ListModelsResponse* resp) override;
  grpc::ServerWriteReactor<switchboard::inference::v1::GenerateEvent>* Generate(
      grpc::CallbackServerContext* ctx,
      const switchboard::inference::v1::GenerateRequest* req) override;
  grpc::ServerUnaryReactor* CountTokens(grpc::CallbackServerContext* ctx,
                                        const switchboard::inference::v1::GenerateRequest* req,
                                        switchboard::inference::v1::CountTokensResponse* resp) override;
  grpc::ServerUnaryReactor* Admit(grpc::CallbackServerContext* ctx,
                                  const switchboard::inference::v1::GenerateRequest* req,
                                  switchboard::scheduler::v1::Lease* resp) override;
  grpc::ServerUnaryReactor* ReleaseLease(
      grpc::CallbackServerContext* ctx, const switchboard::scheduler::v1::ReleaseLeaseRequest* req,
      switchboard::scheduler::v1::ReleaseLeaseResponse* resp) override;
  grpc::ServerUnaryReactor* ReportServed(
      grpc::CallbackServerContext* ctx, const switchboard::scheduler::v1::ReportServedRequest* req,
      switchboard::scheduler::v1::ReportServedResponse* resp) override;
  grpc::ServerUnaryReactor* GetFairness(
      grpc::CallbackServerContext* ctx, const switchboard::scheduler::v1::GetFairnessRequest* req,
      switchboard::scheduler::v1::GetFairnessResponse* resp) override;

 private:
  class AdmitReactor;
  using Out = std::shared_ptr<ServerStream<switchboard::inference::v1::GenerateEvent>::Handle>;
  using Start = std::function<void(const Pick&)>;
  struct Waiting {
    Start start;                   // runs when the request gets a worker
    std::vector<uint64_t> prefix;  // its prompt's prefix hashes, for routing
    std::function<void(const grpc::Status&)> refuse;  // when it is pushed out
  };
  // How long after its expiry an unused lease is kept (the worker's report
  // that it started may be on its way).
  static constexpr absl::Duration kLeaseGrace = absl::Seconds(2);
  struct ModelQueue {
    explicit ModelQueue(const QueueOptions& o)
        : fair({.w_in = o.input_weight, .w_out = o.output_weight, .max_queued = o.max_queued}) {}
    FairQueue fair;
    WaitEstimator rate;
    std::unordered_map<uint64_t, Waiting> waiting;
    std::set<std::string> orgs_seen;  // their policy is applied
  };
  struct LeaseState {
    std::string worker_id;
    std::string model;
    std::string version;
    std::string org;
    Priority priority = Priority::kInteractive;
    absl::Time expires;
    bool started = false;
    int input_charged = 0;  // the estimate at admission, then the worker's count
    int output_charged = 0;
    int missing_beats = 0;  // heartbeats of its worker that did not list it
  };
  // What admission decided for a request.
  struct Decision {
    std::optional<Pick> pick;  // a worker now
    NoPick why = NoPick::kUnknownModel;
  };

  switchboard::inference::v1::InferenceWorker::Stub* StubFor(const std::string& address);
  static grpc::Status NoWorker(const std::string& model, NoPick why);
  ResolvedModel Resolve(const switchboard::inference::v1::GenerateRequest& req) const;
  // Whether a request of `org` may take one of the model's slots now: it
  // leaves the reserve alone, or the org is under its share of the slots
  // (FairQueue::UnderShare). Tells the fair queue the model's capacity.
  // Requires queue_mu_.
  bool MayTakeSlot(ModelQueue& mq, const std::string& model, const std::string& org,
                   absl::Time now);
  // A worker for the request now, when nothing waits ahead of it and its
  // org has room under its cap (it is then counted in service).
  Decision TryDirect(const switchboard::inference::v1::GenerateRequest& req,
                     const std::string& model, const std::vector<uint64_t>& prefix);
  // Queues the request; `start` runs when it gets a worker, `refuse` when
  // it is refused or times out (never both). `on_cancel` is given the
  // function that takes it out of the queue if the caller leaves.
  void Enqueue(const switchboard::inference::v1::GenerateRequest& req, const std::string& model,
               std::vector<uint64_t> prefix, Start start,
               std::function<void(const grpc::Status&)> refuse,
               const std::function<void(std::function<void()>)>& on_cancel);
  bool RemoveQueued(const std::string& model, uint64_t id);
  // Hands free slots of `model` (or of every model) to its queued requests.
  void Dispatch(const std::string& model);
  void DispatchAll();
  ModelQueue& QueueFor(const std::string& model, const std::string& org);  // requires queue_mu_
  // Charges output tokens served to a request of `org` (the relay path).
  void Served(const std::string& model, const std::string& org, Priority priority, int output);

  std::string GrantLease(const switchboard::inference::v1::GenerateRequest& req,
                         const ResolvedModel& res, const Pick& pick,
                         switchboard::scheduler::v1::Lease* out);
  // What a lease's end tells the version's breaker: a worker's report of
  // success or failure, or nothing (a lease given back unused, expired, or
  // whose end report was lost).
  enum class LeaseOutcome { kSucceeded, kFailed, kUnknown };
  // Ends a lease (requires queue_mu_); returns its model for Dispatch.
  std::string EndLeaseLocked(std::unordered_map<std::string, LeaseState>::iterator it,
                             LeaseOutcome outcome);

  // Relays the worker's stream to `out` (the Generate path).
  void StartRelay(const switchboard::inference::v1::GenerateRequest& req, const ResolvedModel& res,
                  const Pick& pick, Out out, std::chrono::system_clock::time_point deadline);

  WorkerRegistry& registry_;
  absl::Duration heartbeat_interval_;
  QueueOptions queue_options_;
  SchedulerHooks hooks_;
  const std::string id_;
  std::mutex mu_;
  std::map<std::string, std::unique_ptr<switchboard::inference::v1::InferenceWorker::Stub>> stubs_;
  std::map<std::string, std::string> lease_keys_;  // by worker id; under mu_
  std::mutex queue_mu_;  // taken before the registry's lock, never after
  std::map<std::string, ModelQueue> queues_;
  std::unordered_map<std::string, LeaseState> leases_;
  uint64_t next_queued_id_ = 1;
  uint64_t next_lease_ = 1;
  TimerThread timers_;
};

}  // namespace sb::scheduler
