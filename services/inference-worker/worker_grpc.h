// switchboard.inference.v1.InferenceWorker over an Engine. Generate streams
// Started (with the first token, or 50 ms after the engine took the request
// if that comes first), the tokens, then Finished. An engine error before
// Started ends the call with its status instead (RESOURCE_EXHAUSTED for an
// overloaded upstream, as for a full engine: overload, not a dead worker;
// DEADLINE_EXCEEDED for a timeout; INTERNAL otherwise); a later one ends the
// call with that status in place of Finished.
//
// Metering, keyed by request id: running reports ahead of delivery (a token
// reaches the stream only once a stored report covers it, see StreamSink),
// and a final one with the engine's counts when the request ends (finished,
// cancelled or failed), which billing takes as the exact figure.
//
// Leases: a request from the gateway or chat carries the scheduler's lease
// (GenerateRequest.lease_id), checked by the LeaseReporter, which reports
// the tokens the request was served and its end to the granting replica.
// Only the scheduler itself (its relay) may call without one.
#pragma once

#include <atomic>
#include <functional>
#include <string>

#include "absl/time/time.h"
#include "core/timers.h"
#include "inference-worker/engine.h"
#include "inference-worker/engine_request.h"
#include "inference-worker/lease_reporter.h"
#include "switchboard/billing/v1/billing.pb.h"
#include "switchboard/inference/v1/inference.grpc.pb.h"

namespace sb::worker {

// Where metering events go (a UsageOutbox over Kafka in production, a
// vector in tests). `stored`, when given, runs once the event is durably
// stored (OK) or refused for good.
using UsageStored = std::function<void(const absl::Status&)>;
using UsageSink =
    std::function<void(const switchboard::billing::v1::UsageEvent&, UsageStored stored)>;

class WorkerServiceImpl final : public switchboard::inference::v1::InferenceWorker::CallbackService {
 public:
  // `usage` gets each request's running reports (about two a
  // `report_interval` at the request's rate) and its final one.
  // While `admitting` answers false (metering is backed up) Generate is
  // refused with RESOURCE_EXHAUSTED.
  WorkerServiceImpl(Engine& engine, std::string worker_id, UsageSink usage,
                    absl::Duration report_interval = absl::Seconds(1),
                    std::function<bool()> admitting = nullptr, LeaseReporter* leases = nullptr);

  grpc::ServerWriteReactor<switchboard::inference::v1::GenerateEvent>* Generate(
      grpc::CallbackServerContext* ctx,
      const switchboard::inference::v1::GenerateRequest* req) override;
  grpc::ServerUnaryReactor* ListModels(grpc::CallbackServerContext* ctx,
                                       const switchboard::inference::v1::ListModelsRequest* req,
                                       switchboard::inference::v1::ListModelsResponse* resp) override;
  grpc::ServerUnaryReactor* CountTokens(grpc::CallbackServerContext* ctx,
                                        const switchboard::inference::v1::GenerateRequest* req,
                                        switchboard::inference::v1::CountTokensResponse* resp) override;

  int in_flight() const { return in_flight_.load(); }

 private:
  class StreamSink;
  bool Serves(const std::string& model) const;
  // A leased request refused before the engine took it: its slot is free.
  void EndLeaseUnserved(const switchboard::inference::v1::GenerateRequest& req);

  Engine& engine_;
  std::string worker_id_;
  UsageSink usage_;
  absl::Duration report_interval_;
  std::function<bool()> admitting_;
  LeaseReporter* leases_;
  std::atomic<int> in_flight_{0};
  std::atomic<uint64_t> next_id_{1};
  TimerThread timers_;
};

}  // namespace sb::worker
