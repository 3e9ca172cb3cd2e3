#include "gateway/handlers/chat.h"

#include <grpcpp/grpcpp.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <charconv>

#include "core/crypto.h"
#include "core/public_status.h"
#include "gateway/dialects/fields.h"
#include "gateway/handlers/unary.h"
#include "gateway/last_event_id.h"
#include "gateway/router.h"
#include "gateway/sse.h"
#include "gateway/sse_stream.h"
#include "grpcx/status.h"
#include "grpcx/streams.h"
#include "json/bounded_json.h"

namespace sb::gateway {

namespace cpb = switchboard::chat::v1;
namespace conn = switchboard::connection::v1;
using nlohmann::json;

namespace {

constexpr std::chrono::milliseconds kUnaryDeadline{5000};
constexpr auto kStreamDeadline = std::chrono::minutes(30);
constexpr size_t kMaxTitleBytes = 512;
constexpr size_t kMaxQueryBytes = 512;
constexpr size_t kMaxContentBytes = 200 * 1024;
constexpr int kMaxChatOutputTokens = 8192;

std::string Iso8601(int64_t unix_ms) {
  return absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", absl::FromUnixMillis(unix_ms),
                          absl::UTCTimeZone());
}

json NullIfEmpty(const std::string& s) { return s.empty() ? json(nullptr) : json(s); }

json MessageToJson(const cpb::ChatMessage& m) {
  return {{"id", m.id()},
          {"type", "chat.message"},
          {"conversation_id", m.conversation_id()},
          {"parent_id", NullIfEmpty(m.parent_id())},
          {"role", m.role()},
          {"content", m.content()},
          {"status", m.status()},
          {"stop_reason", NullIfEmpty(m.stop_reason())},
          {"safety_result", NullIfEmpty(m.safety_result())},
          {"sibling_ids",
           json(std::vector<std::string>(m.sibling_ids().begin(), m.sibling_ids().end()))},
          {"model", NullIfEmpty(m.model())},
          {"usage", {{"input_tokens", m.input_tokens()}, {"output_tokens", m.output_tokens()}}},
          {"created_at", Iso8601(m.created_at_unix_ms())}};
}

json ConversationToJson(const cpb::Conversation& c) {
  return {{"id", c.id()},
          {"type", "conversation"},
          {"title", c.title()},
          {"model", c.model()},
          {"version", c.version()},
          {"archived", c.archived()},
          {"current_leaf_id", NullIfEmpty(c.current_leaf_id())},
          {"message_count", c.message_count()},
          {"created_at", Iso8601(c.created_at_unix_ms())},
          {"last_message_at", Iso8601(c.last_message_at_unix_ms())}};
}

// A path id: bounded, and nothing that could not be an id.
absl::Status CheckId(const std::string& id, const char* field) {
  return CheckText(id, field, kMaxIdBytes);
}

// The public form of a backend failure, logged with the request id.
absl::Status Public(const RequestContext& ctx, const grpc::Status& st, const char* what) {
  return PublicStatus(FromGrpcStatus(st), ctx.request_id(), what);
}

// 200 with one page of a list: {data, has_more, next_cursor}.
void RespondPage(RequestContext& ctx, json data, bool has_more, const std::string& next_cursor) {
  json out = {
      {"data", std::move(data)}, {"has_more", has_more}, {"next_cursor", NullIfEmpty(next_cursor)}};
  ctx.RespondJson(200, sb::json::Dump(out));
}

// A conversation's ETag: its version, quoted.
std::string ETag(int64_t version) { return "\"" + std::to_string(version) + "\""; }

// Optimistic concurrency: the version a change expects, from `If-Match`
// (one ETag of the conversation, or "*": any) and/or the body's
// `expected_version` (which must agree); nullopt when neither is given.
absl::StatusOr<std::optional<int64_t>> ExpectedVersion(const RequestContext& ctx,
                                                       const json* body) {
  std::optional<int64_t> expected;
  if (body != nullptr) {
    if (auto v = body->find("expected_version"); v != body->end() && !v->is_null()) {
      if (!v->is_number_integer() || v->get<int64_t>() < 1) {
        return FieldError("expected_version", "must be a positive integer");
      }
      expected = v->get<int64_t>();
    }
  }
  const std::string header = ctx.request().Header("if-match");
  std::string_view tag = header;
  while (!tag.empty() && (tag.front() == ' ' || tag.front() == '\t')) tag.remove_prefix(1);
  while (!tag.empty() && (tag.back() == ' ' || tag.back() == '\t')) tag.remove_suffix(1);
  if (tag.empty() || tag == "*") return expected;
  int64_t version = 0;
  const bool quoted = tag.size() >= 3 && tag.front() == '"' && tag.back() == '"';
  const char* begin = tag.data() + 1;
  const char* end = tag.data() + tag.size() - 1;
  if (!quoted || std::from_chars(begin, end, version).ptr != end || version < 1) {
    return absl::InvalidArgumentError(
        "If-Match must be one ETag of the conversation, as its GET returned it (or *)");
  }
  if (expected && *expected != version) {
    return absl::InvalidArgumentError("If-Match and expected_version name different versions");
  }
  return version;
}

// A change chat refused: a version conflict is 409 with the version the
// conversation is at (in the message and as its ETag); anything else as
// Public.
void FailChange(const std::shared_ptr<RequestContext>& ctx, const grpc::ClientContext& call,
                const grpc::Status& st, const char* what) {
  if (st.error_code() == grpc::StatusCode::ABORTED) {
    const auto& trailers = call.GetServerTrailingMetadata();
    if (auto it = trailers.find("sb-conversation-version"); it != trailers.end()) {
      const std::string version(it->second.data(), it->second.size());
      ctx->Fail(absl::AbortedError("the conversation has changed: it is at version " + version +
                                   "; reload it and retry with that version"),
                409, {{"etag", "\"" + version + "\""}});
      return;
    }
  }
  ctx->Fail(Public(*ctx, st, what));
}

// 202 for a turn chat started: its user message, its reply's id and
// stream, and the conversation's version after it (with the ETag).
void RespondTurn(RequestContext& ctx, const cpb::SendMessageResponse& resp,
                 const std::string& conversation_id) {
  const std::string& reply = resp.assistant_message_id();
  json out = {
      {"user_message", MessageToJson(resp.user_message())},
      {"assistant_message_id", reply},
      {"stream_url", "/v1/conversations/" + conversation_id + "/messages/" + reply + "/stream"}};
  http::Headers headers;
  // A replayed send does not know the version: no ETag then.
  if (const int64_t v = resp.conversation_version(); v > 0) {
    out["conversation_version"] = v;
    headers.push_back({"etag", ETag(v)});
  }
  ctx.Respond(202, "application/json", sb::json::Dump(out), std::move(headers));
}

// A path id and the caller's scope, on a request of type Req.
template <typename Req>
bool ScopeTo(const std::shared_ptr<RequestContext>& ctx, Req& req) {
  const std::string& conversation_id = ctx->params.at(0);
  if (auto st = CheckId(conversation_id, "conversation_id"); !st.ok()) {
    ctx->Fail(st);
    return false;
  }
  req.set_org_id(ctx->principal->org_id);
  req.set_user_id(ctx->user_id);
  req.set_conversation_id(conversation_id);
  return true;
}

// A `limit` query parameter: the whole value a number in [1, max].
absl::StatusOr<int> LimitParam(const RequestContext& ctx, int max) {
  const std::string limit = ctx.request().QueryParam("limit");
  if (limit.empty()) return 0;
  int n = 0;
  const char* end = limit.data() + limit.size();
  // The whole value must be the number ("5x" is not 5).
  const auto [stop, ec] = std::from_chars(limit.data(), end, n);
  if (ec != std::errc() || stop != end || n < 1 || n > max) {
    return FieldError("limit", "must be an integer between 1 and " + std::to_string(max));
  }
  return n;
}

// GET .../messages/{message_id}/stream: connection-manager's events, one
// SSE event each, with its own id.
class ChatStream : public std::enable_shared_from_this<ChatStream> {
 public:
  ChatStream(GatewayDeps& deps, std::shared_ptr<RequestContext> ctx)
      : deps_(deps),
        ctx_(ctx),
        stream_(std::make_shared<SseStream>(std::move(ctx), deps.timers, deps.options.ping_interval,
                                            anthropic_events::Ping())) {}

  void Start(conn::SubscribeRequest req) {
    req_ = std::move(req);
    auto self = shared_from_this();
    auto* stub = &deps_.connections;
    auto canceller = ClientStream<conn::StreamEvent>::Start(
        std::chrono::system_clock::now() + kStreamDeadline,
        [stub, self](grpc::ClientContext* c, grpc::ClientReadReactor<conn::StreamEvent>* r) {
          trace::Inject(*c, self->ctx_->trace_context());
          stub->async()->Subscribe(c, &self->req_, r);
        },
        [self](conn::StreamEvent&& e, ClientStream<conn::StreamEvent>::Next next) {
          self->OnEvent(std::move(e), std::move(next));
        },
        [self](const grpc::Status& st) { self->OnDone(st); });
    ctx_->exchange().OnClientGone([canceller] { canceller->Cancel(); });
  }

 private:
  std::string Encode(const conn::StreamEvent& e) {
    const std::string id = req_.message_id() + ":" + std::to_string(e.offset());
    switch (e.event_case()) {
      case conn::StreamEvent::kMessageStart:
        return anthropic_events::MessageStart(req_.message_id(), e.message_start().model(),
                                              e.message_start().input_tokens(), id);
      case conn::StreamEvent::kContentBlockStart:
        return anthropic_events::ContentBlockStart(id);
      case conn::StreamEvent::kDelta:
        return anthropic_events::TextDelta(e.delta().text(), id);
      case conn::StreamEvent::kContentBlockStop:
        return anthropic_events::ContentBlockStop(id);
      case conn::StreamEvent::kMessageDelta: {
        const auto& d = e.message_delta();
        return anthropic_events::MessageDelta(
            {d.stop_reason(), d.stop_sequence(), d.input_tokens(), d.output_tokens()}, id);
      }
      case conn::StreamEvent::kMessageStop:
        ended_ = true;
        return anthropic_events::MessageStop(id);
      case conn::StreamEvent::kError:
        ended_ = true;
        return anthropic_events::Error(
            absl::Status(static_cast<absl::StatusCode>(e.error().code()), e.error().message()), id);
      case conn::StreamEvent::EVENT_NOT_SET:
        break;
    }
    return "";
  }

  void OnEvent(conn::StreamEvent&& e, ClientStream<conn::StreamEvent>::Next next) {
    stream_->Start();
    std::string out = Encode(e);
    if (out.empty()) {
      next(true);
      return;
    }
    stream_->Write(std::move(out), [next = std::move(next)](bool ok) { next(ok); });
  }

  void OnDone(const grpc::Status& st) {
    if (!stream_->started()) {
      if (st.ok()) {
        // The client's Last-Event-ID was the end: nothing remains. 204 is
        // what tells an EventSource to stop reconnecting.
        ctx_->Respond(204, "text/event-stream", "");
        return;
      }
      ctx_->Fail(st.error_code() == grpc::StatusCode::NOT_FOUND
                     ? absl::NotFoundError("message " + req_.message_id() + " not found")
                     : Public(*ctx_, st, "the reply stream"));
      return;
    }
    std::string last;
    if (!ended_ && st.error_code() != grpc::StatusCode::CANCELLED) {
      last = anthropic_events::Error(
          st.ok() ? PublicStatus(absl::InternalError("the stream ended early"), ctx_->request_id(),
                                 "the reply stream")
                  : Public(*ctx_, st, "the reply stream"));
    }
    stream_->End(std::move(last));
  }

  GatewayDeps& deps_;
  std::shared_ptr<RequestContext> ctx_;
  std::shared_ptr<SseStream> stream_;
  conn::SubscribeRequest req_;
  bool ended_ = false;  // the last event (message_stop or error) was sent
};

// GET /v1/events: the caller's chat events, one SSE event each, named by
// its type and with its cursor as the id. The response starts once
// connection-manager has the subscription in place (a comment line marks
// it), so a failure before that is a plain error response.
class EventsStream : public std::enable_shared_from_this<EventsStream> {
 public:
  EventsStream(GatewayDeps& deps, std::shared_ptr<RequestContext> ctx)
      : ctx_(ctx),
        stream_(std::make_shared<SseStream>(std::move(ctx), deps.timers, deps.options.ping_interval,
                                            anthropic_events::Ping())),
        stub_(deps.connections) {}

  void Start(conn::SubscribeEventsRequest req) {
    req_ = std::move(req);
    auto self = shared_from_this();
    auto canceller = ClientStream<conn::UserEvent>::Start(
        std::chrono::system_clock::now() + kStreamDeadline,
        [self](grpc::ClientContext* c, grpc::ClientReadReactor<conn::UserEvent>* r) {
          trace::Inject(*c, self->ctx_->trace_context());
          self->stub_.async()->SubscribeEvents(c, &self->req_, r);
        },
        [self](conn::UserEvent&& e, ClientStream<conn::UserEvent>::Next next) {
          self->OnEvent(std::move(e), std::move(next));
        },
        [self](const grpc::Status& st) { self->OnDone(st); });
    ctx_->exchange().OnClientGone([canceller] { canceller->Cancel(); });
  }

 private:
  static std::string Encode(const conn::UserEvent& e) {
    if (e.reset()) {
      const json data = {{"type", "events.reset"},
                         {"message",
                          "events after Last-Event-ID are no longer kept: reload the "
                          "conversations, then follow this stream"}};
      return sse::Event("events.reset", sb::json::Dump(data), e.cursor());
    }
    if (!e.has_event()) return sse::Comment("subscribed");
    const cpb::ChatEvent& ev = e.event();
    json data = {{"id", ev.event_id()},
                 {"type", ev.type()},
                 {"conversation_id", NullIfEmpty(ev.conversation_id())},  // null: user.erased
                 {"created_at", Iso8601(ev.at_unix_ms())}};
    if (ev.has_conversation()) data["conversation"] = ConversationToJson(ev.conversation());
    if (ev.has_message()) data["message"] = MessageToJson(ev.message());
    return sse::Event(ev.type(), sb::json::Dump(data), e.cursor());
  }

  void OnEvent(conn::UserEvent&& e, ClientStream<conn::UserEvent>::Next next) {
    stream_->Start();
    stream_->Write(Encode(e), [next = std::move(next)](bool ok) { next(ok); });
  }

  void OnDone(const grpc::Status& st) {
    if (!stream_->started()) {
      ctx_->Fail(Public(*ctx_, st, "the event stream"));
      return;
    }
    // The deadline, a draining connection-manager or a client gone: the
    // device reconnects with Last-Event-ID and misses nothing.
    std::string last;
    const auto code = st.error_code();
    if (code != grpc::StatusCode::DEADLINE_EXCEEDED && code != grpc::StatusCode::CANCELLED &&
        code != grpc::StatusCode::UNAVAILABLE && !st.ok()) {
      last = anthropic_events::Error(Public(*ctx_, st, "the event stream"));
    }
    stream_->End(std::move(last));
  }

  std::shared_ptr<RequestContext> ctx_;
  std::shared_ptr<SseStream> stream_;
  conn::ConnectionManager::StubInterface& stub_;
  conn::SubscribeEventsRequest req_;
};

}  // namespace

void HandleCreateConversation(GatewayDeps& deps, const std::shared_ptr<RequestContext>& ctx) {
  const json& body = ctx->body;
  auto model = RequiredString(body, "model", "model", kMaxModelIdBytes);
  if (!model.ok()) {
    ctx->Fail(model.status());
    return;
  }
  auto call = NewUnary<cpb::CreateConversationRequest, cpb::Conversation>(kUnaryDeadline,
                                                                          ctx->trace_context());
  call->req.set_org_id(ctx->principal->org_id);
  call->req.set_user_id(ctx->user_id);
  call->req.set_model(*model);
  if (auto t = body.find("title"); t != body.end() && !t->is_null()) {
    if (!t->is_string()) {
      ctx->Fail(FieldError("title", "Input should be a valid string"));
      return;
    }
    if (auto st = CheckText(t->get_ref<const std::string&>(), "title", kMaxTitleBytes); !st.ok()) {
      ctx->Fail(st);
      return;
    }
    call->req.set_title(t->get<std::string>());
  }
  deps.chat.async()->CreateConversation(
      &call->ctx, &call->req, &call->resp, [ctx, call](grpc::Status st) {
        if (!st.ok()) {
          ctx->Fail(Public(*ctx, st, "creating the conversation"));
          return;
        }
        ctx->RespondJson(201, sb::json::Dump(ConversationToJson(call->resp)));
      });
}

void HandleListMessages(GatewayDeps& deps, const std::shared_ptr<RequestContext>& ctx) {
  const std::string& conversation_id = ctx->params.at(0);
  if (auto st = CheckId(conversation_id, "conversation_id"); !st.ok()) {
    ctx->Fail(st);
    return;
  }
  auto call = NewUnary<cpb::ListMessagesRequest, cpb::ListMessagesResponse>(kUnaryDeadline,
                                                                            ctx->trace_context());
  call->req.set_org_id(ctx->principal->org_id);
  call->req.set_user_id(ctx->user_id);
  call->req.set_conversation_id(conversation_id);
  const std::string cursor = ctx->request().QueryParam("cursor");
  if (auto st = CheckId(cursor, "cursor"); !st.ok()) {
    ctx->Fail(st);
    return;
  }
  call->req.set_cursor(cursor);
  auto limit = LimitParam(*ctx, 200);
  if (!limit.ok()) {
    ctx->Fail(limit.status());
    return;
  }
  call->req.set_limit(*limit);
  deps.chat.async()->ListMessages(
      &call->ctx, &call->req, &call->resp, [ctx, call](grpc::Status st) {
        if (!st.ok()) {
          ctx->Fail(Public(*ctx, st, "listing messages"));
          return;
        }
        json data = json::array();
        for (const auto& m : call->resp.messages()) data.push_back(MessageToJson(m));
        RespondPage(*ctx, std::move(data), call->resp.has_more(), call->resp.next_cursor());
      });
}

void HandleSendMessage(GatewayDeps& deps, const std::shared_ptr<RequestContext>& ctx) {
  const std::string& conversation_id = ctx->params.at(0);
  if (auto st = CheckId(conversation_id, "conversation_id"); !st.ok()) {
    ctx->Fail(st);
    return;
  }
  const json& body = ctx->body;
  auto content = body.find("content");
  if (content == body.end() || !content->is_string() ||
      content->get_ref<const std::string&>().empty()) {
    ctx->Fail(FieldError("content", "Field required (a non-empty string)"));
    return;
  }
  if (auto st = CheckText(content->get_ref<const std::string&>(), "content", kMaxContentBytes);
      !st.ok()) {
    ctx->Fail(st);
    return;
  }
  auto call = NewUnary<cpb::SendMessageRequest, cpb::SendMessageResponse>(kUnaryDeadline,
                                                                          ctx->trace_context());
  call->req.set_org_id(ctx->principal->org_id);
  call->req.set_user_id(ctx->user_id);
  call->req.set_conversation_id(conversation_id);
  call->req.set_content(content->get<std::string>());
  call->req.set_request_id(ctx->request_id());
  if (auto c = body.find("client_message_id"); c != body.end() && !c->is_null()) {
    if (!c->is_string()) {
      ctx->Fail(FieldError("client_message_id", "Input should be a valid string"));
      return;
    }
    if (auto st = CheckId(c->get_ref<const std::string&>(), "client_message_id"); !st.ok()) {
      ctx->Fail(st);
      return;
    }
    call->req.set_client_message_id(c->get<std::string>());
  } else if (const std::string key = ctx->request().Header("idempotency-key"); !key.empty()) {
    // Chat dedupes on it too: if this send times out after chat took it,
    // the retry (which the gateway runs again) gets the same turn.
    call->req.set_client_message_id("idem-" + HexEncode(Sha256(key)).substr(0, 40));
  }
  if (auto m = body.find("max_tokens"); m != body.end() && !m->is_null()) {
    if (!m->is_number_integer() || m->get<int64_t>() < 1 ||
        m->get<int64_t>() > kMaxChatOutputTokens) {
      ctx->Fail(FieldError("max_tokens", "must be an integer between 1 and " +
                                             std::to_string(kMaxChatOutputTokens)));
      return;
    }
    call->req.set_max_tokens(m->get<int>());
  }
  if (auto p = body.find("parent_id"); p != body.end()) {
    // null: the first message (an edit of it); a string: the reply the
    // message answers (an edit of the message that answered it before).
    if (!p->is_null() && !p->is_string()) {
      ctx->Fail(FieldError("parent_id", "Input should be a valid string or null"));
      return;
    }
    const std::string parent = p->is_null() ? "" : p->get<std::string>();
    if (auto st = CheckId(parent, "parent_id"); !st.ok()) {
      ctx->Fail(st);
      return;
    }
    call->req.set_parent_id(parent);
  }
  auto expected = ExpectedVersion(*ctx, &body);
  if (!expected.ok()) {
    ctx->Fail(expected.status());
    return;
  }
  if (*expected) call->req.set_expected_version(**expected);
  deps.chat.async()->SendMessage(
      &call->ctx, &call->req, &call->resp, [ctx, call, conversation_id](grpc::Status st) {
        if (!st.ok()) {
          FailChange(ctx, call->ctx, st, "sending the message");
          return;
        }
        RespondTurn(*ctx, call->resp, conversation_id);
      });
}

void HandleListConversations(GatewayDeps& deps, const std::shared_ptr<RequestContext>& ctx) {
  auto call = NewUnary<cpb::ListConversationsRequest, cpb::ListConversationsResponse>(
      kUnaryDeadline, ctx->trace_context());
  call->req.set_org_id(ctx->principal->org_id);
  call->req.set_user_id(ctx->user_id);
  auto limit = LimitParam(*ctx, 100);
  if (!limit.ok()) {
    ctx->Fail(limit.status());
    return;
  }
  call->req.set_limit(*limit);
  const std::string cursor = ctx->request().QueryParam("cursor");
  if (auto st = CheckText(cursor, "cursor", 2 * kMaxIdBytes); !st.ok()) {
    ctx->Fail(st);
    return;
  }
  call->req.set_cursor(cursor);
  const std::string archived = ctx->request().QueryParam("archived");
  if (archived != "" && archived != "true" && archived != "false") {
    ctx->Fail(FieldError("archived", "must be true or false"));
    return;
  }
  call->req.set_archived(archived == "true");
  deps.chat.async()->ListConversations(
      &call->ctx, &call->req, &call->resp, [ctx, call](grpc::Status st) {
        if (!st.ok()) {
          ctx->Fail(Public(*ctx, st, "listing conversations"));
          return;
        }
        json data = json::array();
        for (const auto& c : call->resp.conversations()) data.push_back(ConversationToJson(c));
        RespondPage(*ctx, std::move(data), call->resp.has_more(), call->resp.next_cursor());
      });
}

void HandleSearchMessages(GatewayDeps& deps, const std::shared_ptr<RequestContext>& ctx) {
  auto call = NewUnary<cpb::SearchMessagesRequest, cpb::SearchMessagesResponse>(
      kUnaryDeadline, ctx->trace_context());
  call->req.set_org_id(ctx->principal->org_id);
  call->req.set_user_id(ctx->user_id);
  auto limit = LimitParam(*ctx, 50);
  if (!limit.ok()) {
    ctx->Fail(limit.status());
    return;
  }
  call->req.set_limit(*limit);
  // As a form or a search box encodes it: percent escapes, '+' for a space.
  std::string raw = ctx->request().QueryParam("q");
  std::replace(raw.begin(), raw.end(), '+', ' ');
  const std::string q = PercentDecode(raw);
  if (q.empty()) {
    ctx->Fail(FieldError("q", "is required: the words to search for"));
    return;
  }
  if (auto st = CheckText(q, "q", kMaxQueryBytes); !st.ok()) {
    ctx->Fail(st);
    return;
  }
  call->req.set_query(q);
  deps.chat.async()->SearchMessages(
      &call->ctx, &call->req, &call->resp, [ctx, call](grpc::Status st) {
        if (!st.ok()) {
          ctx->Fail(Public(*ctx, st, "searching messages"));
          return;
        }
        json data = json::array();
        for (const auto& h : call->resp.hits()) {
          data.push_back({{"type", "search_result"},
                          {"conversation_id", h.conversation_id()},
                          {"conversation_title", h.conversation_title()},
                          {"message_id", h.message_id()},
                          {"role", h.role()},
                          {"snippet", h.snippet()},
                          {"created_at", Iso8601(h.created_at_unix_ms())}});
        }
        ctx->RespondJson(200, sb::json::Dump(json{{"data", std::move(data)},
                                                  {"has_more", call->resp.has_more()}}));
      });
}

void HandleGetConversation(GatewayDeps& deps, const std::shared_ptr<RequestContext>& ctx) {
  auto call = NewUnary<cpb::GetConversationRequest, cpb::Conversation>(kUnaryDeadline,
                                                                       ctx->trace_context());
  if (!ScopeTo(ctx, call->req)) return;
  deps.chat.async()->GetConversation(
      &call->ctx, &call->req, &call->resp, [ctx, call](grpc::Status st) {
        if (!st.ok()) {
          ctx->Fail(Public(*ctx, st, "reading the conversation"));
          return;
        }
        ctx->Respond(200, "application/json", sb::json::Dump(ConversationToJson(call->resp)),
                     {{"etag", ETag(call->resp.version())}});
      });
}

void HandleUpdateConversation(GatewayDeps& deps, const std::shared_ptr<RequestContext>& ctx) {
  auto call = NewUnary<cpb::UpdateConversationRequest, cpb::Conversation>(kUnaryDeadline,
                                                                          ctx->trace_context());
  if (!ScopeTo(ctx, call->req)) return;
  const json& body = ctx->body;
  for (const auto& [key, value] : body.items()) {
    if (key == "title") {
      if (!value.is_string()) {
        ctx->Fail(FieldError("title", "Input should be a valid string"));
        return;
      }
      if (auto st = CheckText(value.get_ref<const std::string&>(), "title", kMaxTitleBytes);
          !st.ok()) {
        ctx->Fail(st);
        return;
      }
      call->req.set_title(value.get<std::string>());
    } else if (key == "archived") {
      if (!value.is_boolean()) {
        ctx->Fail(FieldError("archived", "Input should be a valid boolean"));
        return;
      }
      call->req.set_archived(value.get<bool>());
    } else if (key == "current_leaf_id") {
      if (!value.is_string()) {
        ctx->Fail(FieldError("current_leaf_id", "Input should be a valid string"));
        return;
      }
      if (auto st = CheckId(value.get_ref<const std::string&>(), "current_leaf_id"); !st.ok()) {
        ctx->Fail(st);
        return;
      }
      call->req.set_current_leaf_id(value.get<std::string>());
    } else if (key != "expected_version") {
      ctx->Fail(FieldError(key,
                           "is not a field a conversation update takes (title, archived, "
                           "current_leaf_id, expected_version)"));
      return;
    }
  }
  if (!call->req.has_title() && !call->req.has_archived() && !call->req.has_current_leaf_id()) {
    ctx->Fail(absl::InvalidArgumentError(
        "nothing to change: send title, archived and/or current_leaf_id"));
    return;
  }
  auto expected = ExpectedVersion(*ctx, &body);
  if (!expected.ok()) {
    ctx->Fail(expected.status());
    return;
  }
  if (*expected) call->req.set_expected_version(**expected);
  deps.chat.async()->UpdateConversation(
      &call->ctx, &call->req, &call->resp, [ctx, call](grpc::Status st) {
        if (!st.ok()) {
          FailChange(ctx, call->ctx, st, "updating the conversation");
          return;
        }
        ctx->Respond(200, "application/json", sb::json::Dump(ConversationToJson(call->resp)),
                     {{"etag", ETag(call->resp.version())}});
      });
}

void HandleDeleteConversation(GatewayDeps& deps, const std::shared_ptr<RequestContext>& ctx) {
  auto call = NewUnary<cpb::DeleteConversationRequest, cpb::DeleteConversationResponse>(
      kUnaryDeadline, ctx->trace_context());
  if (!ScopeTo(ctx, call->req)) return;
  auto expected = ExpectedVersion(*ctx, nullptr);
  if (!expected.ok()) {
    ctx->Fail(expected.status());
    return;
  }
  if (*expected) call->req.set_expected_version(**expected);
  deps.chat.async()->DeleteConversation(
      &call->ctx, &call->req, &call->resp, [ctx, call](grpc::Status st) {
        if (!st.ok()) {
          FailChange(ctx, call->ctx, st, "deleting the conversation");
          return;
        }
        json out = {{"id", call->req.conversation_id()}, {"type", "conversation_deleted"}};
        ctx->RespondJson(200, sb::json::Dump(out));
      });
}

void HandleRegenerateMessage(GatewayDeps& deps, const std::shared_ptr<RequestContext>& ctx) {
  auto call = NewUnary<cpb::RegenerateMessageRequest, cpb::SendMessageResponse>(
      kUnaryDeadline, ctx->trace_context());
  if (!ScopeTo(ctx, call->req)) return;
  const std::string& message_id = ctx->params.at(1);
  if (auto st = CheckId(message_id, "message_id"); !st.ok()) {
    ctx->Fail(st);
    return;
  }
  call->req.set_message_id(message_id);
  call->req.set_request_id(ctx->request_id());
  auto expected = ExpectedVersion(*ctx, nullptr);
  if (!expected.ok()) {
    ctx->Fail(expected.status());
    return;
  }
  if (*expected) call->req.set_expected_version(**expected);
  const std::string conversation_id = call->req.conversation_id();
  deps.chat.async()->RegenerateMessage(&call->ctx, &call->req, &call->resp,
                                       [ctx, call, conversation_id](grpc::Status st) {
                                         if (!st.ok()) {
                                           FailChange(ctx, call->ctx, st, "regenerating the reply");
                                           return;
                                         }
                                         RespondTurn(*ctx, call->resp, conversation_id);
                                       });
}

void HandleCancelMessage(GatewayDeps& deps, const std::shared_ptr<RequestContext>& ctx) {
  auto call =
      NewUnary<cpb::CancelMessageRequest, cpb::ChatMessage>(kUnaryDeadline, ctx->trace_context());
  if (!ScopeTo(ctx, call->req)) return;
  const std::string& message_id = ctx->params.at(1);
  if (auto st = CheckId(message_id, "message_id"); !st.ok()) {
    ctx->Fail(st);
    return;
  }
  call->req.set_message_id(message_id);
  deps.chat.async()->CancelMessage(
      &call->ctx, &call->req, &call->resp, [ctx, call](grpc::Status st) {
        if (!st.ok()) {
          ctx->Fail(Public(*ctx, st, "stopping the reply"));
          return;
        }
        ctx->RespondJson(202, sb::json::Dump(MessageToJson(call->resp)));
      });
}

void HandleChatStream(GatewayDeps& deps, const std::shared_ptr<RequestContext>& ctx) {
  const std::string& conversation_id = ctx->params.at(0);
  const std::string& message_id = ctx->params.at(1);
  for (const auto& [id, field] :
       {std::pair{&conversation_id, "conversation_id"}, std::pair{&message_id, "message_id"}}) {
    if (auto st = CheckId(*id, field); !st.ok()) {
      ctx->Fail(st);
      return;
    }
  }
  auto offset = ParseLastEventId(ctx->request().Header("last-event-id"), message_id);
  if (!offset.ok()) {
    ctx->Fail(offset.status());
    return;
  }
  conn::SubscribeRequest req;
  req.set_org_id(ctx->principal->org_id);
  req.set_user_id(ctx->user_id);
  req.set_conversation_id(conversation_id);
  req.set_message_id(message_id);
  req.set_after_offset(*offset);
  std::make_shared<ChatStream>(deps, ctx)->Start(std::move(req));
}

void HandleEvents(GatewayDeps& deps, const std::shared_ptr<RequestContext>& ctx) {
  auto after = ParseEventCursor(ctx->request().Header("last-event-id"));
  if (!after.ok()) {
    ctx->Fail(after.status());
    return;
  }
  conn::SubscribeEventsRequest req;
  req.set_org_id(ctx->principal->org_id);
  req.set_user_id(ctx->user_id);
  req.set_after(*after);
  std::make_shared<EventsStream>(deps, ctx)->Start(std::move(req));
}

}  // namespace sb::gateway
