#include "gateway/gateway_http.h"

#include <charconv>

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "core/metrics.h"
#include "gateway/api_error.h"
#include "gateway/messages_api.h"
#include "grpcx/status.h"
#include "grpcx/streams.h"
#include "safety/output_window.h"

namespace sb::gateway {

namespace cpb = switchboard::chat::v1;
namespace conn = switchboard::connection::v1;
namespace inf = switchboard::inference::v1;
namespace spb = switchboard::safety::v1;
using nlohmann::json;

namespace {

constexpr auto kUnaryDeadline = std::chrono::seconds(5);
constexpr auto kStreamDeadline = std::chrono::minutes(30);

std::chrono::system_clock::time_point In(std::chrono::system_clock::duration d) {
  return std::chrono::system_clock::now() + d;
}

http::Headers BaseHeaders(const std::string& rid, const std::string& content_type) {
  return {{"content-type", content_type}, {"request-id", rid}};
}

void CountResponse(const std::string& route, int status) {
  metrics::Default()
      .GetCounter("sb_gateway_responses_total", "HTTP responses by route and status",
                  {{"route", route}, {"code", std::to_string(status)}})
      .Inc();
}

void RespondJson(http::Exchange& ex, const std::string& rid, const std::string& route, int status,
                 const std::string& body) {
  CountResponse(route, status);
  ex.Respond(status, BaseHeaders(rid, "application/json"), body);
}

void RespondError(http::Exchange& ex, const std::string& rid, const std::string& route,
                  const ApiError& e) {
  auto headers = BaseHeaders(rid, "application/json");
  if (e.retry_after_seconds > 0) headers.emplace_back("retry-after", std::to_string(e.retry_after_seconds));
  CountResponse(route, e.http_status);
  ex.Respond(e.http_status, std::move(headers), ErrorBody(e));
}

void RespondStatus(http::Exchange& ex, const std::string& rid, const std::string& route,
                   const absl::Status& st) {
  RespondError(ex, rid, route, ToApiError(st));
}

http::Headers SseHeaders(const std::string& rid) {
  auto h = BaseHeaders(rid, "text/event-stream; charset=utf-8");
  h.emplace_back("cache-control", "no-cache");
  h.emplace_back("x-accel-buffering", "no");
  return h;
}

std::string ApiKeyOf(const http::Request& r) {
  std::string key = r.Header("x-api-key");
  if (key.empty()) {
    const std::string auth = r.Header("authorization");
    if (auth.rfind("Bearer ", 0) == 0) key = auth.substr(7);
  }
  return key;
}

std::string UserOf(const Principal& p, const http::Request& r) {
  if (!p.user_id.empty()) return p.user_id;
  const std::string header = r.Header("x-switchboard-user");
  return header.empty() ? "default" : header;
}

std::string Iso8601(int64_t unix_ms) {
  return absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", absl::FromUnixMillis(unix_ms), absl::UTCTimeZone());
}

json MessageToJson(const cpb::ChatMessage& m) {
  return {{"id", m.id()},
          {"type", "chat.message"},
          {"conversation_id", m.conversation_id()},
          {"parent_id", m.parent_id().empty() ? json(nullptr) : json(m.parent_id())},
          {"role", m.role()},
          {"content", m.content()},
          {"status", m.status()},
          {"stop_reason", m.stop_reason().empty() ? json(nullptr) : json(m.stop_reason())},
          {"model", m.model().empty() ? json(nullptr) : json(m.model())},
          {"usage", {{"input_tokens", m.input_tokens()}, {"output_tokens", m.output_tokens()}}},
          {"created_at", Iso8601(m.created_at_unix_ms())}};
}

json ConversationToJson(const cpb::Conversation& c) {
  return {{"id", c.id()},
          {"type", "conversation"},
          {"title", c.title()},
          {"model", c.model()},
          {"version", c.version()},
          {"message_count", c.message_count()},
          {"created_at", Iso8601(c.created_at_unix_ms())},
          {"last_message_at", Iso8601(c.last_message_at_unix_ms())}};
}

// Resolves the caller's key (from the cache inline, else on the pool) and
// continues with `fn`, or answers 401/529.
void WithPrincipal(GatewayHttp& gw, std::shared_ptr<http::Exchange> ex, const std::string& rid,
                   const std::string& route, std::function<void(const Principal&)> fn) {
  const std::string key = ApiKeyOf(ex->request());
  auto finish = [ex, rid, route, fn = std::move(fn)](const absl::StatusOr<Principal>& p) {
    if (!p.ok()) {
      RespondStatus(*ex, rid, route, p.status());
      return;
    }
    fn(*p);
  };
  if (auto cached = gw.deps().auth.Cached(key, absl::Now())) {
    finish(*cached);
    return;
  }
  auto* auth = &gw.deps().auth;
  if (!gw.deps().pool.Submit([auth, key, finish] { finish(auth->Authenticate(key, absl::Now())); })) {
    RespondStatus(*ex, rid, route, absl::UnavailableError("the gateway is overloaded; retry"));
  }
}

template <typename Req, typename Resp>
struct Unary {
  grpc::ClientContext ctx;
  Req req;
  Resp resp;
};

// ---------------------------------------------------------------------------
// POST /v1/messages

class MessagesCall : public std::enable_shared_from_this<MessagesCall> {
 public:
  MessagesCall(GatewayHttp& gw, std::shared_ptr<http::Exchange> ex, std::string rid)
      : gw_(gw), ex_(std::move(ex)), rid_(std::move(rid)) {}

  void Start(const Principal& principal, MessagesRequest req) {
    req_ = std::move(req);
    auto& g = req_.generate;
    g.set_request_id(rid_);
    g.set_org_id(principal.org_id);
    g.set_source("api");
    message_id_ = "msg_" + gw_.deps().ids.Next(absl::Now());
    CheckInput();
  }

 private:
  static constexpr const char* kRoute = "/v1/messages";

  void CheckInput() {
    auto call = std::make_shared<Unary<spb::CheckRequest, spb::CheckResponse>>();
    call->ctx.set_deadline(In(std::chrono::seconds(2)));
    call->req.set_request_id(rid_);
    call->req.set_org_id(req_.generate.org_id());
    std::string text = req_.generate.system();
    for (const auto& m : req_.generate.messages()) text += "\n" + m.content();
    call->req.set_text(std::move(text));
    gw_.deps().safety.async()->CheckInput(
        &call->ctx, &call->req, &call->resp, [self = shared_from_this(), call](grpc::Status st) {
          if (!st.ok()) {
            // Fail closed: no safety verdict, no generation.
            self->Fail(absl::UnavailableError("safety check unavailable: " + st.error_message()));
            return;
          }
          if (call->resp.verdict() != spb::CheckResponse::ALLOW) {
            self->Fail(absl::InvalidArgumentError("input blocked by safety policy: " +
                                                  call->resp.reason()));
            return;
          }
          self->Generate();
        });
  }

  void Generate() {
    auto self = shared_from_this();
    auto* stub = &gw_.deps().scheduler;
    canceller_ = ClientStream<inf::GenerateEvent>::Start(
        In(kStreamDeadline),
        [stub, self](grpc::ClientContext* c, grpc::ClientReadReactor<inf::GenerateEvent>* r) {
          stub->async()->Generate(c, &self->req_.generate, r);
        },
        [self](inf::GenerateEvent&& e, ClientStream<inf::GenerateEvent>::Next next) {
          self->OnEvent(std::move(e), std::move(next));
        },
        [self](const grpc::Status& st) { self->OnDone(st); });
  }

  void OnEvent(inf::GenerateEvent&& e, ClientStream<inf::GenerateEvent>::Next next) {
    if (e.has_started()) {
      model_ = e.started().model();
      usage_.input_tokens = e.started().input_tokens();
      if (!req_.stream) {
        next(true);
        return;
      }
      streaming_ = true;
      gw_.in_flight_counter().fetch_add(1);
      CountResponse(kRoute, 200);
      ex_->StartStream(200, SseHeaders(rid_));
      Usage start_usage{usage_.input_tokens, 1};
      Write(MessageStartEvent(message_id_, model_, start_usage) + ContentBlockStartEvent(),
            std::move(next));
      return;
    }
    if (e.has_token()) {
      CheckOutput(e.token().text(), std::move(next));
      return;
    }
    if (e.has_finished()) {
      finished_ = true;
      stop_reason_ = e.finished().stop_reason();
      stop_sequence_ = e.finished().stop_sequence();
      usage_.input_tokens = e.finished().input_tokens();
      usage_.output_tokens = e.finished().output_tokens();
    }
    next(true);
  }

  // Every output token passes the safety gate before it reaches the client.
  void CheckOutput(std::string piece, ClientStream<inf::GenerateEvent>::Next next) {
    auto call = std::make_shared<Unary<spb::CheckRequest, spb::CheckResponse>>();
    call->ctx.set_deadline(In(std::chrono::seconds(2)));
    call->req.set_request_id(rid_);
    call->req.set_org_id(req_.generate.org_id());
    call->req.set_text(safety::OutputCheckText(text_, piece));
    gw_.deps().safety.async()->CheckOutput(
        &call->ctx, &call->req, &call->resp,
        [self = shared_from_this(), call, piece = std::move(piece),
         next = std::move(next)](grpc::Status st) mutable {
          if (!st.ok() || call->resp.verdict() != spb::CheckResponse::ALLOW) {
            self->failure_ = st.ok() ? absl::InvalidArgumentError("output blocked by safety policy: " +
                                                                  call->resp.reason())
                                     : absl::UnavailableError("output safety unavailable: " +
                                                              st.error_message());
            next(false);  // cancel the generation; OnDone reports the failure
            return;
          }
          self->text_ += piece;
          if (!self->streaming_) {
            next(true);
            return;
          }
          self->Write(TextDeltaEvent(piece), std::move(next));
        });
  }

  void Write(std::string data, ClientStream<inf::GenerateEvent>::Next next) {
    ex_->Write(std::move(data), [self = shared_from_this(), next = std::move(next)](bool ok) {
      if (!ok) {
        // The client went away: cancel upstream, which frees the worker.
        self->client_gone_ = true;
        spdlog::info("request_id={} client disconnected; cancelling", self->rid_);
      }
      next(ok);
    });
  }

  void OnDone(const grpc::Status& st) {
    if (streaming_) gw_.in_flight_counter().fetch_sub(1);
    if (client_gone_) return;
    absl::Status failure = failure_;
    if (failure.ok() && !st.ok()) {
      failure = FromGrpcStatus(st);
      if (st.error_code() == grpc::StatusCode::NOT_FOUND) {
        failure = absl::NotFoundError("model: " + req_.generate.model());
      }
    }
    if (failure.ok() && !finished_) failure = absl::InternalError("generation ended early");
    if (!failure.ok()) {
      spdlog::warn("request_id={} failed: {}", rid_, failure.ToString());
      if (streaming_) {
        ex_->Write(ErrorEvent(ToApiError(failure)), nullptr);
        ex_->EndStream();
      } else {
        Fail(failure);
      }
      return;
    }
    if (streaming_) {
      ex_->Write(ContentBlockStopEvent() + MessageDeltaEvent(stop_reason_, stop_sequence_, usage_) +
                     MessageStopEvent(),
                 nullptr);
      ex_->EndStream();
    } else {
      RespondJson(*ex_, rid_, kRoute, 200,
                  MessageJson(message_id_, model_, text_, stop_reason_, stop_sequence_, usage_));
    }
  }

  void Fail(const absl::Status& st) { RespondStatus(*ex_, rid_, kRoute, st); }

  GatewayHttp& gw_;
  std::shared_ptr<http::Exchange> ex_;
  std::string rid_;
  MessagesRequest req_;
  std::string message_id_;
  std::string model_;
  std::string text_;
  std::string stop_reason_, stop_sequence_;
  Usage usage_;
  bool streaming_ = false;
  bool finished_ = false;
  bool client_gone_ = false;
  absl::Status failure_;
  std::shared_ptr<ClientStream<inf::GenerateEvent>::Canceller> canceller_;
};

// ---------------------------------------------------------------------------
// GET /v1/conversations/{id}/messages/{message_id}/stream

class ChatStreamCall : public std::enable_shared_from_this<ChatStreamCall> {
 public:
  ChatStreamCall(GatewayHttp& gw, std::shared_ptr<http::Exchange> ex, std::string rid)
      : gw_(gw), ex_(std::move(ex)), rid_(std::move(rid)) {}

  void Start(conn::SubscribeRequest req) {
    req_ = std::move(req);
    auto self = shared_from_this();
    auto* stub = &gw_.deps().connections;
    ClientStream<conn::StreamEvent>::Start(
        In(kStreamDeadline),
        [stub, self](grpc::ClientContext* c, grpc::ClientReadReactor<conn::StreamEvent>* r) {
          stub->async()->Subscribe(c, &self->req_, r);
        },
        [self](conn::StreamEvent&& e, ClientStream<conn::StreamEvent>::Next next) {
          self->OnEvent(std::move(e), std::move(next));
        },
        [self](const grpc::Status& st) { self->OnDone(st); });
  }

 private:
  static constexpr const char* kRoute = "/v1/conversations/{id}/messages/{id}/stream";

  std::string Id(int64_t offset) const { return req_.message_id() + ":" + std::to_string(offset); }

  void OnEvent(conn::StreamEvent&& e, ClientStream<conn::StreamEvent>::Next next) {
    std::string out;
    if (!started_) {
      started_ = true;
      gw_.in_flight_counter().fetch_add(1);
      CountResponse(kRoute, 200);
      ex_->StartStream(200, SseHeaders(rid_));
      if (req_.after_offset() == 0) {
        const std::string id = Id(0);
        out += MessageStartEvent(req_.message_id(), "", Usage{}, id) + ContentBlockStartEvent(id);
      }
    }
    const std::string id = Id(e.offset());
    if (e.has_delta()) {
      out += TextDeltaEvent(e.delta().text(), id);
    } else if (e.has_end()) {
      ended_ = true;
      const Usage usage{e.end().input_tokens(), e.end().output_tokens()};
      out += ContentBlockStopEvent(id) + MessageDeltaEvent(e.end().stop_reason(), "", usage, id) +
             MessageStopEvent(id);
    } else if (e.has_error()) {
      ended_ = true;
      ApiError err;
      err.type = e.error().type();
      err.message = e.error().message();
      out += SseEvent("error", ErrorBody(err), id);
    }
    ex_->Write(std::move(out), [next = std::move(next)](bool ok) { next(ok); });
  }

  void OnDone(const grpc::Status& st) {
    if (!started_) {
      if (st.ok()) {
        // The client's Last-Event-ID was the end: nothing remains. 204 is
        // what tells an EventSource to stop reconnecting.
        CountResponse(kRoute, 204);
        ex_->Respond(204, BaseHeaders(rid_, "text/event-stream"), "");
        return;
      }
      absl::Status failure = FromGrpcStatus(st);
      if (st.error_code() == grpc::StatusCode::NOT_FOUND) {
        failure = absl::NotFoundError("message " + req_.message_id() + " not found");
      }
      RespondStatus(*ex_, rid_, kRoute, failure);
      return;
    }
    gw_.in_flight_counter().fetch_sub(1);
    if (!ended_ && st.error_code() != grpc::StatusCode::CANCELLED) {
      ex_->Write(ErrorEvent(ToApiError(FromGrpcStatus(
                     st.ok() ? grpc::Status(grpc::StatusCode::INTERNAL, "stream ended early") : st))),
                 nullptr);
    }
    ex_->EndStream();
  }

  GatewayHttp& gw_;
  std::shared_ptr<http::Exchange> ex_;
  std::string rid_;
  conn::SubscribeRequest req_;
  bool started_ = false;
  bool ended_ = false;
};

// Parses `Last-Event-ID: {message_id}:{offset}`; 0 when absent.
absl::StatusOr<int64_t> ResumeOffset(const http::Request& r, const std::string& message_id) {
  const std::string last = r.Header("last-event-id");
  if (last.empty()) return 0;
  const auto colon = last.rfind(':');
  int64_t offset = -1;
  if (colon == std::string::npos || last.substr(0, colon) != message_id ||
      std::from_chars(last.data() + colon + 1, last.data() + last.size(), offset).ec != std::errc() ||
      offset < 0) {
    return absl::InvalidArgumentError("Last-Event-ID must be '" + message_id +
                                      ":<offset>' as sent in this stream's id: lines");
  }
  return offset;
}

}  // namespace

void GatewayHttp::Handle(std::shared_ptr<http::Exchange> ex) {
  const http::Request& r = ex->request();
  const std::string rid = "req_" + deps_.ids.Next(absl::Now());
  std::vector<std::string> parts = absl::StrSplit(r.path, '/', absl::SkipEmpty());

  if (r.path == "/v1/messages") {
    if (r.method != "POST") {
      RespondStatus(*ex, rid, r.path, absl::InvalidArgumentError("use POST for /v1/messages"));
      return;
    }
    WithPrincipal(*this, ex, rid, r.path, [this, ex, rid](const Principal& p) {
      auto parsed = ParseMessagesRequest(ex->request().body);
      if (!parsed.ok()) {
        RespondStatus(*ex, rid, "/v1/messages", parsed.status());
        return;
      }
      std::make_shared<MessagesCall>(*this, ex, rid)->Start(p, std::move(*parsed));
    });
    return;
  }

  if (parts.size() >= 2 && parts[0] == "v1" && parts[1] == "conversations") {
    // POST /v1/conversations
    if (parts.size() == 2 && r.method == "POST") {
      const std::string route = "/v1/conversations";
      WithPrincipal(*this, ex, rid, route, [this, ex, rid, route](const Principal& p) {
        auto parsed = ParseJsonObject(ex->request().body);
        if (!parsed.ok()) {
          RespondStatus(*ex, rid, route, parsed.status());
          return;
        }
        const json& body = *parsed;
        auto model = body.find("model");
        if (model == body.end() || !model->is_string() || model->get<std::string>().empty()) {
          RespondStatus(*ex, rid, route, absl::InvalidArgumentError("model: Field required"));
          return;
        }
        auto call = std::make_shared<Unary<cpb::CreateConversationRequest, cpb::Conversation>>();
        call->ctx.set_deadline(In(kUnaryDeadline));
        call->req.set_org_id(p.org_id);
        call->req.set_user_id(UserOf(p, ex->request()));
        call->req.set_model(model->get<std::string>());
        if (auto t = body.find("title"); t != body.end() && t->is_string()) {
          call->req.set_title(t->get<std::string>());
        }
        deps_.chat.async()->CreateConversation(
            &call->ctx, &call->req, &call->resp, [ex, rid, route, call](grpc::Status st) {
              if (!st.ok()) {
                RespondStatus(*ex, rid, route, FromGrpcStatus(st));
                return;
              }
              RespondJson(*ex, rid, route, 201, ConversationToJson(call->resp).dump());
            });
      });
      return;
    }
    // /v1/conversations/{id}/messages
    if (parts.size() == 4 && parts[3] == "messages") {
      const std::string conversation_id = parts[2];
      const std::string route = "/v1/conversations/{id}/messages";
      if (r.method == "GET") {
        WithPrincipal(*this, ex, rid, route, [this, ex, rid, route, conversation_id](const Principal& p) {
          auto call = std::make_shared<Unary<cpb::ListMessagesRequest, cpb::ListMessagesResponse>>();
          call->ctx.set_deadline(In(kUnaryDeadline));
          call->req.set_org_id(p.org_id);
          call->req.set_user_id(UserOf(p, ex->request()));
          call->req.set_conversation_id(conversation_id);
          call->req.set_cursor(ex->request().QueryParam("cursor"));
          const std::string limit = ex->request().QueryParam("limit");
          if (!limit.empty()) {
            int n = 0;
            if (std::from_chars(limit.data(), limit.data() + limit.size(), n).ec != std::errc() ||
                n < 1 || n > 200) {
              RespondStatus(*ex, rid, route, absl::InvalidArgumentError("limit must be between 1 and 200"));
              return;
            }
            call->req.set_limit(n);
          }
          deps_.chat.async()->ListMessages(
              &call->ctx, &call->req, &call->resp, [ex, rid, route, call](grpc::Status st) {
                if (!st.ok()) {
                  RespondStatus(*ex, rid, route, FromGrpcStatus(st));
                  return;
                }
                json data = json::array();
                for (const auto& m : call->resp.messages()) data.push_back(MessageToJson(m));
                json out = {{"data", data},
                            {"has_more", call->resp.has_more()},
                            {"next_cursor", call->resp.next_cursor().empty()
                                                ? json(nullptr)
                                                : json(call->resp.next_cursor())}};
                RespondJson(*ex, rid, route, 200, out.dump());
              });
        });
        return;
      }
      if (r.method == "POST") {
        WithPrincipal(*this, ex, rid, route, [this, ex, rid, route, conversation_id](const Principal& p) {
          auto parsed = ParseJsonObject(ex->request().body);
          if (!parsed.ok()) {
            RespondStatus(*ex, rid, route, parsed.status());
            return;
          }
          const json& body = *parsed;
          auto content = body.find("content");
          if (content == body.end() || !content->is_string()) {
            RespondStatus(*ex, rid, route, absl::InvalidArgumentError("content: Field required (a string)"));
            return;
          }
          auto call = std::make_shared<Unary<cpb::SendMessageRequest, cpb::SendMessageResponse>>();
          call->ctx.set_deadline(In(kUnaryDeadline));
          call->req.set_org_id(p.org_id);
          call->req.set_user_id(UserOf(p, ex->request()));
          call->req.set_conversation_id(conversation_id);
          call->req.set_content(content->get<std::string>());
          call->req.set_request_id(rid);
          if (auto c = body.find("client_message_id"); c != body.end() && c->is_string()) {
            call->req.set_client_message_id(c->get<std::string>());
          }
          if (auto m = body.find("max_tokens"); m != body.end()) {
            if (!m->is_number_integer() || m->get<int64_t>() < 1 || m->get<int64_t>() > 8192) {
              RespondStatus(*ex, rid, route, absl::InvalidArgumentError("max_tokens must be an integer between 1 and 8192"));
              return;
            }
            call->req.set_max_tokens(m->get<int>());
          }
          deps_.chat.async()->SendMessage(
              &call->ctx, &call->req, &call->resp,
              [ex, rid, route, call, conversation_id](grpc::Status st) {
                if (!st.ok()) {
                  RespondStatus(*ex, rid, route, FromGrpcStatus(st));
                  return;
                }
                const std::string& reply = call->resp.assistant_message_id();
                json out = {{"user_message", MessageToJson(call->resp.user_message())},
                            {"assistant_message_id", reply},
                            {"stream_url", "/v1/conversations/" + conversation_id + "/messages/" +
                                               reply + "/stream"}};
                RespondJson(*ex, rid, route, 202, out.dump());
              });
        });
        return;
      }
    }
    // GET /v1/conversations/{id}/messages/{message_id}/stream
    if (parts.size() == 6 && parts[3] == "messages" && parts[5] == "stream" && r.method == "GET") {
      const std::string route = "/v1/conversations/{id}/messages/{id}/stream";
      const std::string conversation_id = parts[2], message_id = parts[4];
      WithPrincipal(*this, ex, rid, route,
                    [this, ex, rid, route, conversation_id, message_id](const Principal& p) {
                      auto offset = ResumeOffset(ex->request(), message_id);
                      if (!offset.ok()) {
                        RespondStatus(*ex, rid, route, offset.status());
                        return;
                      }
                      conn::SubscribeRequest req;
                      req.set_org_id(p.org_id);
                      req.set_user_id(UserOf(p, ex->request()));
                      req.set_conversation_id(conversation_id);
                      req.set_message_id(message_id);
                      req.set_after_offset(*offset);
                      std::make_shared<ChatStreamCall>(*this, ex, rid)->Start(std::move(req));
                    });
      return;
    }
  }

  if (r.path == "/healthz") {
    ex->Respond(200, BaseHeaders(rid, "text/plain"), "ok\n");
    return;
  }
  RespondStatus(*ex, rid, "other",
                absl::NotFoundError("no route for " + r.method + " " + r.path));
}

}  // namespace sb::gateway
