// switchboard.connection.v1.ConnectionManager: Subscribe hands each call to
// the SubscriptionHub.
#pragma once

#include "connection-manager/subscription_hub.h"
#include "switchboard/connection/v1/connection.grpc.pb.h"

namespace sb::connection {

class ConnectionServiceImpl final
    : public switchboard::connection::v1::ConnectionManager::CallbackService {
 public:
  explicit ConnectionServiceImpl(SubscriptionHub& hub) : hub_(hub) {}

  grpc::ServerWriteReactor<switchboard::connection::v1::StreamEvent>* Subscribe(
      grpc::CallbackServerContext* ctx,
      const switchboard::connection::v1::SubscribeRequest* req) override;

 private:
  SubscriptionHub& hub_;
};

}  // namespace sb::connection
