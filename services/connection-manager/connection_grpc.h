// switchboard.connection.v1.ConnectionManager: Subscribe hands each call to
// the SubscriptionHub, SubscribeEvents to the EventHub.
#pragma once

#include "connection-manager/event_hub.h"
#include "connection-manager/subscription_hub.h"
#include "switchboard/connection/v1/connection.grpc.pb.h"

namespace sb::connection {

class ConnectionServiceImpl final
    : public switchboard::connection::v1::ConnectionManager::CallbackService {
 public:
  ConnectionServiceImpl(SubscriptionHub& hub, EventHub& events) : hub_(hub), events_(events) {}

  grpc::ServerWriteReactor<switchboard::connection::v1::StreamEvent>* Subscribe(
      grpc::CallbackServerContext* ctx,
      const switchboard::connection::v1::SubscribeRequest* req) override;
  grpc::ServerWriteReactor<switchboard::connection::v1::UserEvent>* SubscribeEvents(
      grpc::CallbackServerContext* ctx,
      const switchboard::connection::v1::SubscribeEventsRequest* req) override;

 private:
  SubscriptionHub& hub_;
  EventHub& events_;
};

}  // namespace sb::connection
