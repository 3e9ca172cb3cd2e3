// Keeps this worker registered with the tenant scheduler: registers (with
// retries) and then heartbeats at the interval the scheduler asks for,
// registering again whenever the scheduler no longer knows the worker (it
// restarted, or declared the worker dead). One Registrar per scheduler
// replica: a worker registers with every replica. With a LeaseReporter, each
// registration hands it the replica's lease key, and every heartbeat lists
// the leases running here.
#pragma once

#include <atomic>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "switchboard/scheduler/v1/scheduler.grpc.pb.h"

namespace sb::worker {

class LeaseReporter;

class Registrar {
 public:
  Registrar(switchboard::scheduler::v1::TenantScheduler::StubInterface& scheduler,
            switchboard::scheduler::v1::RegisterWorkerRequest registration,
            std::function<int()> in_flight,
            std::function<switchboard::scheduler::v1::WorkerLoad()> load = nullptr,
            LeaseReporter* leases = nullptr);
  ~Registrar();  // stops the thread

  void Start();
  void Stop();

 private:
  void Loop();

  switchboard::scheduler::v1::TenantScheduler::StubInterface& scheduler_;
  switchboard::scheduler::v1::RegisterWorkerRequest registration_;
  std::function<int()> in_flight_;
  std::function<switchboard::scheduler::v1::WorkerLoad()> load_;
  LeaseReporter* leases_;
  std::string scheduler_id_;  // of the replica's current registration
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace sb::worker
