#include "gateway/gateway.h"

#include "core/crypto.h"
#include "gateway/filters/filter.h"
#include "gateway/handlers/chat.h"
#include "gateway/handlers/inference.h"

namespace sb::gateway {

Gateway::Gateway(GatewayDeps deps)
    : deps_(deps),
      auth_(deps.auth, deps.pool),
      idempotency_(deps.idempotency, deps.timers, deps.pool, deps.options.ping_interval),
      admission_(deps.limits, deps.admission, deps.timers, deps.pool, deps.options.lease_ttl),
      budget_(deps.budgets) {
  AddRoutes();
}

void Gateway::AddRoutes() {
  auto handler = [this](void (*fn)(GatewayDeps&, const std::shared_ptr<RequestContext>&)) {
    return [this, fn](const std::shared_ptr<RequestContext>& ctx) { fn(deps_, ctx); };
  };
  // Every authenticated route but the Admin API's refuses an admin key
  // (api_key_), and the Admin API's needs one (admin_key_).
  // Admission needs the parsed request (its model, max_tokens and input),
  // so it comes after the parser; idempotency comes between them, so that
  // a bad request never claims a key and a replay costs no limits. A spent
  // budget is known from the key alone: refused before the body is read.
  const std::vector<Filter*> generate = {&auth_,           &api_key_,     &budget_,   &json_body_,
                                         &parse_generate_, &idempotency_, &admission_};
  router_.Add(
      {"POST", "/v1/messages", DialectChoice::kAnthropic, generate, handler(&HandleGenerate)});
  router_.Add(
      {"POST", "/v1/chat/completions", DialectChoice::kOpenAi, generate, handler(&HandleGenerate)});
  router_.Add({"POST",
               "/v1/messages/count_tokens",
               DialectChoice::kAnthropic,
               {&auth_, &api_key_, &json_body_, &parse_count_},
               handler(&HandleCountTokens)});
  router_.Add({"GET",
               "/v1/models",
               DialectChoice::kByHeader,
               {&auth_, &api_key_},
               handler(&HandleListModels)});
  router_.Add({"GET",
               "/v1/models/{model_id}",
               DialectChoice::kByHeader,
               {&auth_, &api_key_},
               handler(&HandleGetModel)});

  const std::vector<Filter*> chat_read = {&auth_, &api_key_, &chat_user_};
  const std::vector<Filter*> chat_write = {&auth_, &api_key_, &chat_user_, &json_body_};
  router_.Add({"POST", "/v1/conversations", DialectChoice::kAnthropic, chat_write,
               handler(&HandleCreateConversation)});
  router_.Add({"GET", "/v1/conversations", DialectChoice::kAnthropic, chat_read,
               handler(&HandleListConversations)});
  // Before /v1/conversations/{conversation_id}: the first route that matches wins.
  router_.Add({"GET", "/v1/conversations/search", DialectChoice::kAnthropic, chat_read,
               handler(&HandleSearchMessages)});
  router_.Add({"GET", "/v1/conversations/{conversation_id}", DialectChoice::kAnthropic, chat_read,
               handler(&HandleGetConversation)});
  router_.Add({"PATCH", "/v1/conversations/{conversation_id}", DialectChoice::kAnthropic,
               chat_write, handler(&HandleUpdateConversation)});
  router_.Add({"DELETE", "/v1/conversations/{conversation_id}", DialectChoice::kAnthropic,
               chat_read, handler(&HandleDeleteConversation)});
  router_.Add({"GET", "/v1/conversations/{conversation_id}/messages", DialectChoice::kAnthropic,
               chat_read, handler(&HandleListMessages)});
  router_.Add({"POST",
               "/v1/conversations/{conversation_id}/messages",
               DialectChoice::kAnthropic,
               {&auth_, &api_key_, &chat_user_, &budget_, &json_body_, &idempotency_},
               handler(&HandleSendMessage)});
  router_.Add({"POST", "/v1/conversations/{conversation_id}/messages/{message_id}/cancel",
               DialectChoice::kAnthropic, chat_read, handler(&HandleCancelMessage)});
  router_.Add({"POST",
               "/v1/conversations/{conversation_id}/messages/{message_id}/regenerate",
               DialectChoice::kAnthropic,
               {&auth_, &api_key_, &chat_user_, &budget_},
               handler(&HandleRegenerateMessage)});
  router_.Add({"GET", "/v1/conversations/{conversation_id}/messages/{message_id}/stream",
               DialectChoice::kAnthropic, chat_read, handler(&HandleChatStream)});
  router_.Add({"GET", "/v1/events", DialectChoice::kAnthropic, chat_read, handler(&HandleEvents)});

  // The Admin API's usage and cost reports (an admin key of the org).
  auto report = [this](ReportKind kind) {
    return [this, kind](const std::shared_ptr<RequestContext>& ctx) {
      HandleReport(kind, deps_.reports, deps_.pool, ctx);
    };
  };
  router_.Add({"GET",
               "/v1/organizations/usage_report/messages",
               DialectChoice::kAnthropic,
               {&auth_, &admin_key_},
               report(ReportKind::kUsage)});
  router_.Add({"GET",
               "/v1/organizations/cost_report",
               DialectChoice::kAnthropic,
               {&auth_, &admin_key_},
               report(ReportKind::kCost)});

  router_.Add({"GET",
               "/healthz",
               DialectChoice::kAnthropic,
               {},
               [](const std::shared_ptr<RequestContext>& ctx) {
                 ctx->Respond(200, "text/plain", "ok\n");
               }});
}

const Dialect& Gateway::DialectFor(DialectChoice choice, const http::Request& r) const {
  switch (choice) {
    case DialectChoice::kAnthropic:
      return anthropic_;
    case DialectChoice::kOpenAi:
      return openai_;
    case DialectChoice::kByHeader:
      break;
  }
  return r.Header("anthropic-version").empty() ? static_cast<const Dialect&>(openai_) : anthropic_;
}

void Gateway::Handle(std::shared_ptr<http::Exchange> exchange) {
  const http::Request& r = exchange->request();
  // The request id is a ULID in hex, and the trace id of a trace that starts
  // here: one grep finds the request's lines in every service. A trace the
  // client started (`traceparent`) is continued; its id is the client's.
  const trace::TraceId id = deps_.ids.NextBytes(deps_.clock.Now());
  const auto remote = trace::ParseTraceparent(r.Header("traceparent"));
  auto ctx = std::make_shared<RequestContext>(
      exchange,
      "req_" + HexEncode(std::string_view(reinterpret_cast<const char*>(id.data()), id.size())),
      deps_.clock, metrics_);
  ctx->set_span(trace::StartSpan(r.method, trace::SpanKind::kServer,
                                 remote.value_or(trace::SpanContext{}), &id));
  const Router::Match match = router_.Find(r.method, r.path);
  if (match.route == nullptr) {
    ctx->route_name = "other";
    if (match.path_route == nullptr) {
      ctx->dialect = &DialectFor(Router::DialectForUnknownPath(r.path), r);
      // The path is the client's own: quoted short (dumped safely, as
      // every error body is).
      ctx->Fail(absl::NotFoundError("no route for " + r.method + " " + r.path.substr(0, 200)));
      return;
    }
    // 405: the path exists, in its route's dialect.
    ctx->dialect = &DialectFor(match.path_route->dialect, r);
    std::string allowed;
    for (const auto& m : match.allowed) allowed += (allowed.empty() ? "" : ", ") + m;
    ctx->Fail(absl::InvalidArgumentError("use " + allowed + " for " + r.path.substr(0, 200)), 405,
              {{"allow", allowed}});
    return;
  }
  ctx->route_name = match.route->pattern;
  ctx->dialect = &DialectFor(match.route->dialect, r);
  ctx->params = match.params;
  const Route* route = match.route;
  RunChain(route->filters, ctx, [route, ctx] { route->handler(ctx); });
}

}  // namespace sb::gateway
