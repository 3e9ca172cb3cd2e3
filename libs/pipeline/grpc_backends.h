// The pipeline's backends over gRPC: safety's CheckInput and ModerateOutput,
// and generation: a lease from the tenant-scheduler (Admit) and the
// worker's stream (LeasedGenerator), or the scheduler's relayed stream
// (GrpcGenerator, the older path). Every call has a deadline.
#pragma once

#include <atomic>
#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "core/timers.h"
#include "pipeline/pipeline.h"
#include "storage/publisher.h"
#include "switchboard/inference/v1/inference.grpc.pb.h"
#include "switchboard/safety/v1/safety.grpc.pb.h"
#include "switchboard/scheduler/v1/scheduler.grpc.pb.h"

namespace sb::pipeline {

class GrpcInputGuard final : public InputGuard {
 public:
  GrpcInputGuard(switchboard::safety::v1::Safety::StubInterface& safety,
                 std::chrono::milliseconds deadline)
      : safety_(safety), deadline_(deadline) {}
  void Check(const CheckContext& ctx, std::string text, Done done) override;

 private:
  switchboard::safety::v1::Safety::StubInterface& safety_;
  std::chrono::milliseconds deadline_;
};

// Moderates each generation's output over one ModerateOutput stream to
// safety (its hold-back gate): every piece is sent as it comes and the text
// the gate releases comes back. A piece whose answer takes longer than
// `deadline`, or a stream that breaks, ends the generation (fail closed:
// nothing the gate did not release is shown).
class StreamingOutputGates final : public OutputGates {
 public:
  StreamingOutputGates(switchboard::safety::v1::Safety::StubInterface& safety,
                       std::chrono::milliseconds deadline)
      : safety_(safety), deadline_(deadline) {}
  std::unique_ptr<OutputGate> Open(const CheckContext& ctx) override;

 private:
  switchboard::safety::v1::Safety::StubInterface& safety_;
  std::chrono::milliseconds deadline_;
  TimerThread timers_;  // each answer's deadline
};

// Publishes each fail-closed stop as a safety AuditEvent (action
// "fail_closed", rule "safety.unavailable") to Kafka safety.audit, where
// safety stores it with its own decisions. `source`: "gateway" or "chat".
FailClosedRecorder AuditFailClosed(Publisher& publisher, std::string source);

class GrpcGenerator final : public Generator {
 public:
  GrpcGenerator(switchboard::scheduler::v1::TenantScheduler::StubInterface& scheduler,
                std::chrono::seconds deadline)
      : scheduler_(scheduler), deadline_(deadline) {}
  std::shared_ptr<GenerateCall> Generate(std::shared_ptr<const Request> request,
                                         const trace::SpanContext& trace,
                                         Callbacks callbacks) override;

 private:
  switchboard::scheduler::v1::TenantScheduler::StubInterface& scheduler_;
  std::chrono::seconds deadline_;
};

// The tenant-scheduler's replicas, dialled from a comma-separated list of
// addresses. Each model has a home replica (by a hash of its name), so that
// one fair queue orders a model's requests from every gateway and chat
// replica; a model's calls go elsewhere only while its home is failing.
class SchedulerReplicas {
 public:
  explicit SchedulerReplicas(const std::string& addresses);
  size_t size() const { return stubs_.size(); }
  // The replica for the first try of a call for `model`: its home, or the
  // next whose channel is not failing.
  size_t Pick(const std::string& model);
  // The replica for the `attempt`th retry (1, 2, ...) of a call whose first
  // try went to `first`: each try a different one, whatever other calls
  // picked meanwhile.
  size_t Retry(size_t first, size_t attempt) const { return (first + attempt) % stubs_.size(); }
  switchboard::scheduler::v1::TenantScheduler::StubInterface& at(size_t i) { return *stubs_[i]; }

 private:
  std::vector<std::shared_ptr<grpc::Channel>> channels_;
  std::vector<std::unique_ptr<switchboard::scheduler::v1::TenantScheduler::StubInterface>> stubs_;
};

// Workers by address, each dialled once (it must prove the inference-worker
// identity).
class WorkerStubs {
 public:
  switchboard::inference::v1::InferenceWorker::StubInterface& For(const std::string& address);

 private:
  std::mutex mu_;
  std::map<std::string, std::unique_ptr<switchboard::inference::v1::InferenceWorker::StubInterface>>
      stubs_;
};

// The scheduler decides, the worker streams: Admit (waits in the fair
// queue) returns a lease on a worker, and the generation streams from that
// worker directly. Admit goes to another replica when one is unreachable;
// a worker that refuses the lease, or fails before its first event, gets
// one more Admit (another worker, maybe). The Started event names the
// version the scheduler resolved.
class LeasedGenerator final : public Generator {
 public:
  LeasedGenerator(SchedulerReplicas& schedulers, WorkerStubs& workers,
                  std::chrono::seconds deadline)
      : schedulers_(schedulers), workers_(workers), deadline_(deadline) {}
  std::shared_ptr<GenerateCall> Generate(std::shared_ptr<const Request> request,
                                         const trace::SpanContext& trace,
                                         Callbacks callbacks) override;

 private:
  SchedulerReplicas& schedulers_;
  WorkerStubs& workers_;
  std::chrono::seconds deadline_;
};

}  // namespace sb::pipeline
