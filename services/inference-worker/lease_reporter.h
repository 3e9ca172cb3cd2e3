// A worker's side of the scheduler's leases (core/lease_token.h): checks
// the lease a Generate call carries, and reports to the replica that
// granted it what the request has served (its fairness charges) and when it
// ended (its slot is free). Reports are totals, sent together per replica
// every `interval`, and at once when a request ends; a report the replica
// did not take is sent again with the next (totals make that harmless).
//
// Thread-safe. The replicas are those this worker is registered with
// (Registrar calls Registered); a lease from any other is refused.
#pragma once

#include <atomic>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "core/periodic.h"
#include "switchboard/scheduler/v1/scheduler.grpc.pb.h"

namespace sb::worker {

class LeaseReporter {
 public:
  explicit LeaseReporter(std::string worker_id, absl::Duration interval = absl::Milliseconds(100));
  ~LeaseReporter();  // stops (see Stop)

  // A replica took this worker's registration: its leases are accepted
  // from now on, and reports go to it through `scheduler` (which outlives
  // this object). `replaces`: the id this replica had before, if any (its
  // leases are refused from now on).
  void Registered(const std::string& scheduler_id, const std::string& lease_key,
                  const std::string& session,
                  switchboard::scheduler::v1::TenantScheduler::StubInterface* scheduler,
                  const std::string& replaces = "");

  // Checks a lease for `request_id` and starts tracking it: PermissionDenied
  // for a lease not granted to this worker for this request by a replica it
  // knows, FailedPrecondition for an expired one.
  absl::Status Accept(const std::string& lease, const std::string& request_id, absl::Time now);
  // What the lease's request has served so far; `done` once, at its end.
  void Update(const std::string& lease, int input_tokens, int output_tokens, bool done = false,
              bool failed = false);
  // The leases whose requests are running (for the heartbeats).
  std::vector<std::string> Active() const;

  // Sends what is left (within `deadline`) and stops the sending thread.
  void Stop(absl::Time deadline = absl::Now() + absl::Seconds(2));

 private:
  struct Replica {
    std::string key;
    std::string session;
    switchboard::scheduler::v1::TenantScheduler::StubInterface* stub = nullptr;
  };
  struct Tracked {
    std::string scheduler_id;
    switchboard::scheduler::v1::LeaseReport report;
    bool dirty = false;
    absl::Time done_at = absl::InfiniteFuture();
  };
  // How long the end of a lease is offered to a replica that does not
  // answer before it is dropped (the replica frees leases of workers it
  // stops hearing from anyway).
  static constexpr absl::Duration kGiveUp = absl::Seconds(30);

  // Sends every dirty report; false when some replica did not take them.
  bool SendDirty(absl::Time deadline);

  const std::string worker_id_;
  mutable std::mutex mu_;
  std::map<std::string, Replica> replicas_;
  std::map<std::string, Tracked> leases_;
  std::atomic<bool> stopped_{false};
  Periodic rounds_;  // last: stopped before the members it uses go
};

}  // namespace sb::worker
