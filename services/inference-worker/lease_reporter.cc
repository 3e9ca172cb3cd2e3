#include "inference-worker/lease_reporter.h"

#include <grpcpp/grpcpp.h>
#include <spdlog/spdlog.h>

#include "core/lease_token.h"
#include "core/metrics.h"

namespace sb::worker {

namespace sched = switchboard::scheduler::v1;

LeaseReporter::LeaseReporter(std::string worker_id, absl::Duration interval)
    : worker_id_(std::move(worker_id)),
      rounds_(interval, [this] { SendDirty(absl::Now() + absl::Seconds(1)); }) {
  rounds_.Start();
}

LeaseReporter::~LeaseReporter() { Stop(absl::Now()); }

void LeaseReporter::Registered(const std::string& scheduler_id, const std::string& lease_key,
                               const std::string& session,
                               sched::TenantScheduler::StubInterface* scheduler,
                               const std::string& replaces) {
  std::lock_guard<std::mutex> lock(mu_);
  if (!replaces.empty() && replaces != scheduler_id) {
    replicas_.erase(replaces);
    // What that replica leased it has forgotten (it restarted): nobody to
    // report to.
    for (auto it = leases_.begin(); it != leases_.end();) {
      it = it->second.scheduler_id == replaces ? leases_.erase(it) : std::next(it);
    }
  }
  replicas_[scheduler_id] = Replica{lease_key, session, scheduler};
}

absl::Status LeaseReporter::Accept(const std::string& lease, const std::string& request_id,
                                   absl::Time now) {
  auto claims = ParseLease(lease);
  std::lock_guard<std::mutex> lock(mu_);
  if (!claims.ok()) return absl::PermissionDeniedError("malformed lease");
  auto r = replicas_.find(claims->scheduler_id);
  if (r == replicas_.end()) {
    return absl::PermissionDeniedError("lease from a scheduler this worker is not registered with");
  }
  if (!VerifyLease(r->second.key, lease, worker_id_, request_id)) {
    return absl::PermissionDeniedError("lease not granted to this worker for this request");
  }
  if (absl::ToUnixMillis(now) > claims->expires_unix_ms) {
    return absl::FailedPreconditionError("lease expired");
  }
  auto [it, fresh] = leases_.try_emplace(lease);
  if (!fresh) return absl::FailedPreconditionError("lease already used");
  it->second.scheduler_id = claims->scheduler_id;
  it->second.report.set_lease_id(lease);
  // The replica learns that it started with the next round of reports
  // (its expiry is seconds away); only ends are sent at once.
  it->second.dirty = true;
  return absl::OkStatus();
}

void LeaseReporter::Update(const std::string& lease, int input_tokens, int output_tokens, bool done,
                           bool failed) {
  std::unique_lock<std::mutex> lock(mu_);
  auto it = leases_.find(lease);
  if (it == leases_.end() || it->second.report.done()) return;
  auto& r = it->second.report;
  if (r.input_tokens() == input_tokens && r.output_tokens() == output_tokens && !done) return;
  r.set_input_tokens(input_tokens);
  r.set_output_tokens(output_tokens);
  r.set_done(done);
  r.set_failed(failed);
  it->second.dirty = true;
  if (done) it->second.done_at = absl::Now();
  lock.unlock();
  if (done) rounds_.Wake();
}

std::vector<std::string> LeaseReporter::Active() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<std::string> out;
  for (const auto& [lease, t] : leases_) {
    if (!t.report.done()) out.push_back(lease);
  }
  return out;
}

void LeaseReporter::Stop(absl::Time deadline) {
  if (stopped_.exchange(true)) return;
  rounds_.Stop();
  SendDirty(deadline);
}

bool LeaseReporter::SendDirty(absl::Time deadline) {
  struct Batch {
    sched::TenantScheduler::StubInterface* stub;
    sched::ReportServedRequest request;
  };
  std::map<std::string, Batch> batches;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& [lease, t] : leases_) {
      if (!t.dirty) continue;
      auto r = replicas_.find(t.scheduler_id);
      if (r == replicas_.end()) continue;
      auto& b = batches[t.scheduler_id];
      if (b.stub == nullptr) {
        b.stub = r->second.stub;
        b.request.set_worker_id(worker_id_);
        b.request.set_session(r->second.session);
      }
      *b.request.add_reports() = t.report;
      t.dirty = false;
    }
  }
  bool all = true;
  for (auto& [scheduler_id, b] : batches) {
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(deadline));
    sched::ReportServedResponse resp;
    const grpc::Status st = b.stub->ReportServed(&ctx, b.request, &resp);
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& sent : b.request.reports()) {
      auto it = leases_.find(sent.lease_id());
      if (it == leases_.end()) continue;
      if (!st.ok() && st.error_code() == grpc::StatusCode::UNAVAILABLE &&
          absl::Now() - it->second.done_at < kGiveUp) {
        it->second.dirty = true;  // again with the next round
      } else if (it->second.report.done() && !it->second.dirty) {
        leases_.erase(it);  // its end was taken (or refused for good)
      }
    }
    if (!st.ok()) {
      all = false;
      metrics::Default()
          .GetCounter("sb_worker_lease_report_failures_total",
                      "Lease reports a scheduler replica did not take")
          .Inc();
      spdlog::warn("lease report to scheduler {} failed: {}", scheduler_id, st.error_message());
    }
  }
  return all;
}

}  // namespace sb::worker
