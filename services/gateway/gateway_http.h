// The public HTTP API: routing, authentication, and the calls behind each
// route. Handlers never block an HTTP thread: key look-ups that miss the
// cache go to a worker pool, and every backend call uses gRPC's callback
// API with a deadline.
//
// Routes:
//   POST /v1/messages                                       Anthropic Messages API
//   POST /v1/conversations                                  create a conversation
//   GET  /v1/conversations/{id}/messages                    list messages (ULID order)
//   POST /v1/conversations/{id}/messages                    send a message (202)
//   GET  /v1/conversations/{id}/messages/{message_id}/stream  SSE, resumable
#pragma once

#include <atomic>
#include <memory>
#include <string>

#include "core/thread_pool.h"
#include "core/ulid.h"
#include "gateway/auth.h"
#include "http/http_server.h"
#include "switchboard/chat/v1/chat.grpc.pb.h"
#include "switchboard/connection/v1/connection.grpc.pb.h"
#include "switchboard/safety/v1/safety.grpc.pb.h"
#include "switchboard/scheduler/v1/scheduler.grpc.pb.h"

namespace sb::gateway {

struct GatewayDeps {
  Authenticator& auth;
  ThreadPool& pool;
  switchboard::safety::v1::Safety::Stub& safety;
  switchboard::scheduler::v1::TenantScheduler::Stub& scheduler;
  switchboard::chat::v1::Chat::Stub& chat;
  switchboard::connection::v1::ConnectionManager::Stub& connections;
  UlidGenerator& ids;
};

class GatewayHttp {
 public:
  explicit GatewayHttp(GatewayDeps deps) : deps_(deps) {}

  void Handle(std::shared_ptr<http::Exchange> ex);
  int64_t in_flight_streams() const { return in_flight_streams_.load(); }

  // Shared with the per-request call objects.
  GatewayDeps& deps() { return deps_; }
  std::atomic<int64_t>& in_flight_counter() { return in_flight_streams_; }

 private:
  GatewayDeps deps_;
  std::atomic<int64_t> in_flight_streams_{0};
};

}  // namespace sb::gateway
