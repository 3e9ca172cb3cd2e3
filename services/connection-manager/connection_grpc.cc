#include "connection-manager/connection_grpc.h"

#include "grpcx/authz.h"

namespace sb::connection {

namespace conn = switchboard::connection::v1;

// Room for several XREAD rounds (the hub reads 64 entries at a time).
constexpr size_t kQueueCapacity = 256;

grpc::ServerWriteReactor<conn::StreamEvent>* ConnectionServiceImpl::Subscribe(
    grpc::CallbackServerContext* ctx, const conn::SubscribeRequest* req) {
  if (auto st = grpcx::Authorize(*ctx, "/switchboard.connection.v1.ConnectionManager/Subscribe");
      !st.ok()) {
    return new grpcx::RefusedWriter<conn::StreamEvent>(st);
  }
  auto [reactor, out] = ServerStream<conn::StreamEvent>::Create(kQueueCapacity);
  if (req->org_id().empty() || req->user_id().empty() || req->conversation_id().empty() ||
      req->message_id().empty() || req->after_offset() < 0) {
    out->Finish(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                             "org_id, user_id, conversation_id, message_id are required and "
                             "after_offset must not be negative"));
    return reactor;
  }
  hub_.Subscribe(*req, out);
  return reactor;
}

grpc::ServerWriteReactor<conn::UserEvent>* ConnectionServiceImpl::SubscribeEvents(
    grpc::CallbackServerContext* ctx, const conn::SubscribeEventsRequest* req) {
  if (auto st =
          grpcx::Authorize(*ctx, "/switchboard.connection.v1.ConnectionManager/SubscribeEvents");
      !st.ok()) {
    return new grpcx::RefusedWriter<conn::UserEvent>(st);
  }
  auto [reactor, out] = ServerStream<conn::UserEvent>::Create(kQueueCapacity);
  if (req->org_id().empty() || req->user_id().empty() ||
      (!req->after().empty() && !StreamId::Parse(req->after()))) {
    out->Finish(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                             "org_id and user_id are required, and after must be an event's "
                             "cursor"));
    return reactor;
  }
  events_.Subscribe(*req, out);
  return reactor;
}

}  // namespace sb::connection
