// switchboard.gateway.v1.Gateway: operational information.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "grpcx/authz.h"
#include "switchboard/gateway/v1/gateway.grpc.pb.h"

namespace sb::gateway {

class GatewayServiceImpl final : public switchboard::gateway::v1::Gateway::CallbackService {
 public:
  GatewayServiceImpl(int http_port, std::function<int64_t()> in_flight,
                     std::vector<std::string> routes)
      : http_port_(http_port), in_flight_(std::move(in_flight)), routes_(std::move(routes)) {}

  grpc::ServerUnaryReactor* GetInfo(grpc::CallbackServerContext* ctx,
                                    const switchboard::gateway::v1::GetInfoRequest* req,
                                    switchboard::gateway::v1::GetInfoResponse* resp) override {
    if (auto* refused =
            grpcx::RefuseUnlessAllowed(ctx, "/switchboard.gateway.v1.Gateway/GetInfo")) {
      return refused;
    }
    resp->set_version(SB_VERSION);
    resp->set_http_port(http_port_);
    resp->set_in_flight_streams(in_flight_());
    for (const auto& r : routes_) resp->add_routes(r);
    auto* reactor = ctx->DefaultReactor();
    reactor->Finish(grpc::Status::OK);
    return reactor;
  }

 private:
  int http_port_;
  std::function<int64_t()> in_flight_;
  std::vector<std::string> routes_;
};

}  // namespace sb::gateway
