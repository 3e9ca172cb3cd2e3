#include "inference-worker/registrar.h"

#include <grpcpp/grpcpp.h>
#include <spdlog/spdlog.h>

#include <chrono>

#include "inference-worker/lease_reporter.h"

namespace sb::worker {

namespace sched = switchboard::scheduler::v1;

Registrar::Registrar(sched::TenantScheduler::StubInterface& scheduler,
                     sched::RegisterWorkerRequest registration, std::function<int()> in_flight,
                     std::function<sched::WorkerLoad()> load, LeaseReporter* leases)
    : scheduler_(scheduler),
      registration_(std::move(registration)),
      in_flight_(std::move(in_flight)),
      load_(std::move(load)),
      leases_(leases) {}

Registrar::~Registrar() { Stop(); }

void Registrar::Start() { thread_ = std::thread([this] { Loop(); }); }

void Registrar::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void Registrar::Loop() {
  bool registered = false;
  auto interval = std::chrono::milliseconds(500);
  std::unique_lock<std::mutex> lock(mu_);
  while (!stop_) {
    bool forgotten = false;
    lock.unlock();
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(2));
    if (!registered) {
      sched::RegisterWorkerResponse resp;
      grpc::Status st = scheduler_.RegisterWorker(&ctx, registration_, &resp);
      if (st.ok()) {
        registered = true;
        registration_.set_session(resp.session());
        if (leases_ != nullptr && !resp.scheduler_id().empty()) {
          leases_->Registered(resp.scheduler_id(), resp.lease_key(), resp.session(), &scheduler_,
                              scheduler_id_);
          scheduler_id_ = resp.scheduler_id();
        }
        interval = std::chrono::milliseconds(std::max(100, resp.heartbeat_interval_ms()));
        spdlog::info("registered with the scheduler as {} at {}", registration_.worker_id(),
                     registration_.address());
      } else {
        spdlog::warn("scheduler registration failed: {}", st.error_message());
      }
    } else {
      sched::HeartbeatRequest req;
      req.set_worker_id(registration_.worker_id());
      req.set_in_flight(in_flight_());
      req.set_session(registration_.session());
      if (load_) *req.mutable_load() = load_();
      if (leases_ != nullptr) {
        for (auto& lease : leases_->Active()) req.add_leases(std::move(lease));
      }
      sched::HeartbeatResponse resp;
      grpc::Status st = scheduler_.Heartbeat(&ctx, req, &resp);
      if (st.ok() && !resp.known()) {
        spdlog::warn("scheduler forgot this worker; registering again");
        registered = false;
        forgotten = true;
      } else if (!st.ok()) {
        spdlog::warn("heartbeat failed: {}", st.error_message());
      }
    }
    lock.lock();
    // A replica that forgot this worker (it restarted) is answering: it
    // learns of the worker at once, not a retry period later.
    const auto wait = forgotten    ? std::chrono::milliseconds(0)
                      : registered ? interval
                                   : std::chrono::milliseconds(500);
    cv_.wait_for(lock, wait, [this] { return stop_; });
  }
}

}  // namespace sb::worker
