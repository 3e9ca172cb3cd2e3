// grpc.health.v1.Health on the callback API: Check answers from a table of
// statuses ("" is the whole server); Watch sends the current status and then
// every change until the client leaves or the server drains.
#pragma once

#include <map>
#include <mutex>
#include <set>
#include <string>

#include "grpc/health/v1/health.grpc.pb.h"

namespace sb {

class HealthService final : public grpc::health::v1::Health::CallbackService {
 public:
  using Status = grpc::health::v1::HealthCheckResponse::ServingStatus;

  void SetStatus(const std::string& service, Status status);
  // True when `service` ("" for the whole server) is SERVING.
  bool Serving(const std::string& service);
  // Ends every Watch stream (so that a draining server need not wait).
  void Shutdown();

  grpc::ServerUnaryReactor* Check(grpc::CallbackServerContext* ctx,
                                  const grpc::health::v1::HealthCheckRequest* req,
                                  grpc::health::v1::HealthCheckResponse* resp) override;
  grpc::ServerWriteReactor<grpc::health::v1::HealthCheckResponse>* Watch(
      grpc::CallbackServerContext* ctx, const grpc::health::v1::HealthCheckRequest* req) override;

 private:
  class Watcher;
  Status Lookup(const std::string& service);  // requires mu_

  std::mutex mu_;
  std::map<std::string, Status> statuses_;
  std::set<Watcher*> watchers_;
  bool shutdown_ = false;
};

}  // namespace sb
