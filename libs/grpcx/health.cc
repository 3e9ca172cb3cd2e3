#include "grpcx/health.h"

namespace sb {

using grpc::health::v1::HealthCheckRequest;
using grpc::health::v1::HealthCheckResponse;

// One Watch call. State is guarded by the service's mutex; at most one write
// is in flight, and a status that changes meanwhile is sent after it.
class HealthService::Watcher final : public grpc::ServerWriteReactor<HealthCheckResponse> {
 public:
  Watcher(HealthService* service, std::string name) : service_(service), name_(std::move(name)) {}

  // Requires service_->mu_.
  void Notify(Status status) {
    if (finishing_) return;
    pending_ = status;
    has_pending_ = true;
    MaybeWrite();
  }
  // Requires service_->mu_.
  void End() {
    if (finishing_) return;
    finishing_ = true;
    if (!writing_) Finish(grpc::Status::OK);
  }

  void OnWriteDone(bool ok) override {
    std::lock_guard<std::mutex> lock(service_->mu_);
    writing_ = false;
    if (!ok) {
      if (!finishing_) {
        finishing_ = true;
        Finish(grpc::Status::CANCELLED);
      }
      return;
    }
    if (finishing_) {
      Finish(grpc::Status::OK);
      return;
    }
    MaybeWrite();
  }

  void OnCancel() override {
    std::lock_guard<std::mutex> lock(service_->mu_);
    End();
  }

  void OnDone() override {
    {
      std::lock_guard<std::mutex> lock(service_->mu_);
      service_->watchers_.erase(this);
    }
    delete this;
  }

 private:
  void MaybeWrite() {
    if (writing_ || !has_pending_) return;
    has_pending_ = false;
    response_.set_status(pending_);
    writing_ = true;
    StartWrite(&response_);
  }

  HealthService* service_;
  std::string name_;
  HealthCheckResponse response_;
  Status pending_ = HealthCheckResponse::UNKNOWN;
  bool has_pending_ = false;
  bool writing_ = false;
  bool finishing_ = false;

  friend class HealthService;
};

HealthService::Status HealthService::Lookup(const std::string& service) {
  auto it = statuses_.find(service);
  return it == statuses_.end() ? HealthCheckResponse::SERVICE_UNKNOWN : it->second;
}

bool HealthService::Serving(const std::string& service) {
  std::lock_guard<std::mutex> lock(mu_);
  return Lookup(service) == grpc::health::v1::HealthCheckResponse::SERVING;
}

void HealthService::SetStatus(const std::string& service, Status status) {
  std::lock_guard<std::mutex> lock(mu_);
  statuses_[service] = status;
  for (Watcher* w : watchers_) {
    if (w->name_ == service) w->Notify(status);
  }
}

void HealthService::Shutdown() {
  std::lock_guard<std::mutex> lock(mu_);
  shutdown_ = true;
  for (Watcher* w : watchers_) w->End();
}

grpc::ServerUnaryReactor* HealthService::Check(grpc::CallbackServerContext* ctx,
                                               const HealthCheckRequest* req,
                                               HealthCheckResponse* resp) {
  auto* reactor = ctx->DefaultReactor();
  std::lock_guard<std::mutex> lock(mu_);
  auto it = statuses_.find(req->service());
  if (it == statuses_.end()) {
    reactor->Finish(grpc::Status(grpc::StatusCode::NOT_FOUND, "unknown service"));
  } else {
    resp->set_status(it->second);
    reactor->Finish(grpc::Status::OK);
  }
  return reactor;
}

grpc::ServerWriteReactor<HealthCheckResponse>* HealthService::Watch(
    grpc::CallbackServerContext* ctx, const HealthCheckRequest* req) {
  auto* watcher = new Watcher(this, req->service());
  std::lock_guard<std::mutex> lock(mu_);
  watchers_.insert(watcher);
  if (shutdown_) {
    watcher->End();
  } else {
    watcher->Notify(Lookup(req->service()));
  }
  return watcher;
}

}  // namespace sb
