// The public HTTP API. Every request is routed (router.h), its route's
// filters run (filters/), and its handler (handlers/) answers in the
// route's dialect (dialects/). Handlers never block an HTTP thread: key
// look-ups that miss the cache go to a worker pool, generations run on the
// pipeline, every backend call uses gRPC's callback API with a deadline.
//
// Routes:
//   POST /v1/messages                      Anthropic Messages API
//   POST /v1/messages/count_tokens         Anthropic token counting
//   POST /v1/chat/completions              OpenAI Chat Completions
//   GET  /v1/models, /v1/models/{id}       both dialects (by anthropic-version)
//   POST /v1/conversations                 chat: create a conversation
//   GET  /v1/conversations/{id}/messages   chat: list messages (ULID order)
//   POST /v1/conversations/{id}/messages   chat: send a message (202)
//   GET  /v1/conversations/{id}/messages/{message_id}/stream   SSE, resumable
//   GET  /healthz
#pragma once

#include <functional>
#include <memory>

#include "core/clock.h"
#include "core/thread_pool.h"
#include "core/timers.h"
#include "core/ulid.h"
#include "gateway/admission/admission_filter.h"
#include "gateway/budgets/budgets.h"
#include "gateway/context.h"
#include "gateway/dialects/anthropic.h"
#include "gateway/dialects/openai.h"
#include "gateway/filters/auth.h"
#include "gateway/filters/body.h"
#include "gateway/idempotency/idempotency_filter.h"
#include "gateway/reports/reports.h"
#include "gateway/router.h"
#include "http/http_server.h"
#include "pipeline/pipeline.h"
#include "switchboard/chat/v1/chat.grpc.pb.h"
#include "switchboard/connection/v1/connection.grpc.pb.h"
#include "switchboard/scheduler/v1/scheduler.grpc.pb.h"

namespace sb::gateway {

struct GatewayOptions {
  // A stream with nothing written for this long gets the dialect's ping.
  absl::Duration ping_interval = absl::Seconds(10);
  // Concurrency leases live this long unless renewed (a third of it).
  absl::Duration lease_ttl = absl::Seconds(30);
};

struct GatewayDeps {
  Authenticator& auth;
  ThreadPool& pool;
  pipeline::Pipeline& pipeline;
  // The scheduler replica for calls about `model` (its home, or the next
  // that answers; "" for calls about no one model).
  std::function<switchboard::scheduler::v1::TenantScheduler::StubInterface&(const std::string&)>
      scheduler;
  switchboard::chat::v1::Chat::StubInterface& chat;
  switchboard::connection::v1::ConnectionManager::StubInterface& connections;
  UlidGenerator& ids;
  Clock& clock;
  Timers& timers;
  LimitsCache& limits;
  Admission& admission;
  IdempotencyStore& idempotency;
  const BudgetCache& budgets;
  ReportSource& reports;
  GatewayOptions options;
};

class Gateway {
 public:
  explicit Gateway(GatewayDeps deps);

  void Handle(std::shared_ptr<http::Exchange> exchange);
  int64_t active_streams() const { return metrics_.active_streams(); }
  // Every route as "METHOD /pattern" (the authorization matrix test's input).
  std::vector<std::string> RouteList() const { return router_.List(); }

 private:
  void AddRoutes();
  const Dialect& DialectFor(DialectChoice choice, const http::Request& r) const;

  GatewayDeps deps_;
  GatewayMetrics metrics_;
  AnthropicDialect anthropic_;
  OpenAiDialect openai_;
  AuthFilter auth_;
  JsonBodyFilter json_body_;
  ChatUserFilter chat_user_;
  ParseFilter parse_generate_{ParseMode::kGenerate};
  ParseFilter parse_count_{ParseMode::kCountTokens};
  IdempotencyFilter idempotency_;
  AdmissionFilter admission_;
  BudgetFilter budget_;
  KeyKindFilter api_key_{false};
  KeyKindFilter admin_key_{true};
  Router router_;
};

}  // namespace sb::gateway
