// Keeps this worker registered with the tenant scheduler: registers (with
// retries) and then heartbeats at the interval the scheduler asks for,
// registering again whenever the scheduler no longer knows the worker (it
// restarted, or declared the worker dead).
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

class Registrar {
 public:
  Registrar(switchboard::scheduler::v1::TenantScheduler::StubInterface& scheduler,
            switchboard::scheduler::v1::RegisterWorkerRequest registration,
            std::function<int()> in_flight,
            std::function<switchboard::scheduler::v1::WorkerLoad()> load = nullptr);
  ~Registrar();  // stops the thread

  void Start();
  void Stop();

 private:
  void Loop();

  switchboard::scheduler::v1::TenantScheduler::StubInterface& scheduler_;
  switchboard::scheduler::v1::RegisterWorkerRequest registration_;
  std::function<int()> in_flight_;
  std::function<switchboard::scheduler::v1::WorkerLoad()> load_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace sb::worker
