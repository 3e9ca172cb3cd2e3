#include "chat/chat_grpc.h"

#include <spdlog/spdlog.h>

#include "absl/time/clock.h"
#include "core/metrics.h"
#include "grpcx/authz.h"
#include "grpcx/status.h"
#include "trace/grpc_trace.h"

namespace sb::chat {

namespace cpb = switchboard::chat::v1;

namespace {

constexpr int kDefaultMaxTokens = 1024;
constexpr int kMaxMaxTokens = 8192;
constexpr size_t kMaxContentBytes = 200 * 1024;
constexpr size_t kMaxTitleBytes = 512;

absl::Status RequireScope(const std::string& org, const std::string& user) {
  if (org.empty() || user.empty())
    return absl::InvalidArgumentError("org_id and user_id are required");
  return absl::OkStatus();
}

}  // namespace

ChatServiceImpl::ChatServiceImpl(ChatStore& store, Turns& turns, pipeline::InputGuard& input,
                                 ThreadPool& pool, pipeline::FailClosedRecorder on_fail_closed,
                                 std::function<absl::Status(const std::string&)> publish_cancel)
    : store_(store),
      turns_(turns),
      input_(input),
      pool_(pool),
      on_fail_closed_(std::move(on_fail_closed)),
      conflicts_(metrics::Default().GetCounter(
          "sb_chat_version_conflicts_total",
          "Chat changes refused because the conversation had left the version they expected")),
      publish_cancel_(std::move(publish_cancel)),
      cancels_here_(metrics::Default().GetCounter(
          "sb_chat_cancels_total", "Stops of replies in progress, by where the reply ran",
          {{"where", "here"}})),
      cancels_elsewhere_(metrics::Default().GetCounter(
          "sb_chat_cancels_total", "Stops of replies in progress, by where the reply ran",
          {{"where", "elsewhere"}})) {}

void ChatServiceImpl::OnPool(grpc::CallbackServerContext* ctx, grpc::ServerUnaryReactor* reactor,
                             std::function<absl::Status()> fn) {
  if (!pool_.Submit([this, ctx, reactor, fn = std::move(fn)] {
        const absl::Status st = fn();
        if (auto version = ConflictVersion(st)) {
          ctx->AddTrailingMetadata(kVersionTrailer, std::to_string(*version));
          conflicts_.Inc();
        }
        reactor->Finish(ToGrpcStatus(st));
      })) {
    reactor->Finish(grpc::Status(grpc::StatusCode::UNAVAILABLE, "chat is overloaded; retry"));
  }
}

grpc::ServerUnaryReactor* ChatServiceImpl::CreateConversation(
    grpc::CallbackServerContext* ctx, const cpb::CreateConversationRequest* req,
    cpb::Conversation* resp) {
  if (auto* refused =
          grpcx::RefuseUnlessAllowed(ctx, "/switchboard.chat.v1.Chat/CreateConversation"))
    return refused;
  auto* reactor = ctx->DefaultReactor();
  OnPool(ctx, reactor, [this, req, resp]() -> absl::Status {
    if (auto st = RequireScope(req->org_id(), req->user_id()); !st.ok()) return st;
    if (req->model().empty()) return absl::InvalidArgumentError("model is required");
    if (req->title().size() > kMaxTitleBytes) {
      return absl::InvalidArgumentError("title is too long");
    }
    if (req->title().find('\0') != std::string::npos) {
      return absl::InvalidArgumentError("title must not contain NUL characters");
    }
    auto conv =
        store_.CreateConversation({req->org_id(), req->user_id()}, req->model(), req->title());
    if (!conv.ok()) return conv.status();
    *resp = std::move(*conv);
    return absl::OkStatus();
  });
  return reactor;
}

absl::Status ChatServiceImpl::Store(const cpb::SendMessageRequest& req,
                                    const trace::SpanContext& trace, bool flagged,
                                    cpb::SendMessageResponse* resp) {
  const Scope scope{req.org_id(), req.user_id()};
  auto turn = store_.AppendTurn(
      scope, req.conversation_id(), req.content(), req.client_message_id(),
      req.has_expected_version() ? std::optional(req.expected_version()) : std::nullopt,
      req.has_parent_id() ? std::optional(req.parent_id()) : std::nullopt,
      flagged ? "flagged" : "pass");
  if (!turn.ok()) return turn.status();
  *resp->mutable_user_message() = turn->user_message;
  resp->set_assistant_message_id(turn->assistant_message_id);
  resp->set_conversation_version(turn->conversation_version);
  if (turn->replayed) return absl::OkStatus();  // the first send already started the turn
  StartTurn(scope, req.conversation_id(), *turn, req.max_tokens(), trace);
  return absl::OkStatus();
}

void ChatServiceImpl::StartTurn(const Scope& scope, const std::string& conversation_id,
                                const NewTurn& turn, int max_tokens,
                                const trace::SpanContext& trace) {
  TurnSpec spec;
  spec.scope = scope;
  // The reply's id keys its metering event: one generation, one ledger row.
  spec.request_id = turn.assistant_message_id;
  spec.conversation_id = conversation_id;
  spec.user_message_id = turn.user_message.id();
  spec.assistant_message_id = turn.assistant_message_id;
  spec.model = turn.model;
  spec.max_tokens = max_tokens > 0 ? max_tokens : kDefaultMaxTokens;
  spec.trace = trace;
  turns_.Start(std::move(spec));
}

grpc::ServerUnaryReactor* ChatServiceImpl::SendMessage(grpc::CallbackServerContext* ctx,
                                                       const cpb::SendMessageRequest* req,
                                                       cpb::SendMessageResponse* resp) {
  if (auto* refused = grpcx::RefuseUnlessAllowed(ctx, "/switchboard.chat.v1.Chat/SendMessage"))
    return refused;
  auto* reactor = ctx->DefaultReactor();
  absl::Status invalid = RequireScope(req->org_id(), req->user_id());
  if (invalid.ok() && req->content().empty()) {
    invalid = absl::InvalidArgumentError("content must not be empty");
  } else if (invalid.ok() && req->content().find('\0') != std::string::npos) {
    invalid = absl::InvalidArgumentError("content must not contain NUL characters");
  } else if (invalid.ok() && req->content().size() > kMaxContentBytes) {
    invalid = absl::InvalidArgumentError("content exceeds " + std::to_string(kMaxContentBytes) +
                                         " bytes");
  } else if (invalid.ok() && (req->max_tokens() < 0 || req->max_tokens() > kMaxMaxTokens)) {
    invalid = absl::InvalidArgumentError("max_tokens must be between 1 and " +
                                         std::to_string(kMaxMaxTokens));
  }
  if (!invalid.ok()) {
    reactor->Finish(ToGrpcStatus(invalid));
    return reactor;
  }
  // Input safety before anything is stored: a refused message is never
  // persisted, and no safety verdict refuses it (fail closed).
  const trace::SpanContext trace = trace::ServerSpanContext(ctx);
  input_.Check(
      {req->request_id(), req->org_id(), req->user_id(), trace}, req->content(),
      [this, ctx, reactor, req, resp, trace](absl::Status verdict, pipeline::InputVerdict found) {
        // Refused, or the end user throttled (429): safety's reason.
        if (pipeline::IsInputRefusal(verdict)) {
          reactor->Finish(ToGrpcStatus(verdict));
          return;
        }
        if (!verdict.ok()) {
          spdlog::warn("request_id={} input safety unavailable: {}", req->request_id(),
                       verdict.ToString());
          if (on_fail_closed_) {
            on_fail_closed_({req->request_id(), req->org_id(), req->user_id(), trace}, "input");
          }
          reactor->Finish(grpc::Status(grpc::StatusCode::UNAVAILABLE,
                                       "the safety check is unavailable; retry"));
          return;
        }
        OnPool(ctx, reactor, [this, req, resp, trace, flagged = found.flagged] {
          return Store(*req, trace, flagged, resp);
        });
      });
  return reactor;
}

grpc::ServerUnaryReactor* ChatServiceImpl::ListMessages(grpc::CallbackServerContext* ctx,
                                                        const cpb::ListMessagesRequest* req,
                                                        cpb::ListMessagesResponse* resp) {
  if (auto* refused = grpcx::RefuseUnlessAllowed(ctx, "/switchboard.chat.v1.Chat/ListMessages"))
    return refused;
  auto* reactor = ctx->DefaultReactor();
  OnPool(ctx, reactor, [this, req, resp]() -> absl::Status {
    if (auto st = RequireScope(req->org_id(), req->user_id()); !st.ok()) return st;
    const int limit = req->limit() <= 0 ? 50 : std::min(req->limit(), 200);
    auto list = store_.ListMessages({req->org_id(), req->user_id()}, req->conversation_id(), limit,
                                    req->cursor());
    if (!list.ok()) return list.status();
    *resp = std::move(*list);
    return absl::OkStatus();
  });
  return reactor;
}

grpc::ServerUnaryReactor* ChatServiceImpl::GetMessage(grpc::CallbackServerContext* ctx,
                                                      const cpb::GetMessageRequest* req,
                                                      cpb::ChatMessage* resp) {
  if (auto* refused = grpcx::RefuseUnlessAllowed(ctx, "/switchboard.chat.v1.Chat/GetMessage"))
    return refused;
  auto* reactor = ctx->DefaultReactor();
  OnPool(ctx, reactor, [this, req, resp]() -> absl::Status {
    if (auto st = RequireScope(req->org_id(), req->user_id()); !st.ok()) return st;
    auto m = store_.GetMessage({req->org_id(), req->user_id()}, req->conversation_id(),
                               req->message_id());
    if (!m.ok()) return m.status();
    *resp = std::move(*m);
    return absl::OkStatus();
  });
  return reactor;
}

grpc::ServerUnaryReactor* ChatServiceImpl::ListConversations(
    grpc::CallbackServerContext* ctx, const cpb::ListConversationsRequest* req,
    cpb::ListConversationsResponse* resp) {
  if (auto* refused =
          grpcx::RefuseUnlessAllowed(ctx, "/switchboard.chat.v1.Chat/ListConversations"))
    return refused;
  auto* reactor = ctx->DefaultReactor();
  OnPool(ctx, reactor, [this, req, resp]() -> absl::Status {
    if (auto st = RequireScope(req->org_id(), req->user_id()); !st.ok()) return st;
    const int limit = req->limit() <= 0 ? 20 : std::min(req->limit(), 100);
    auto list = store_.ListConversations({req->org_id(), req->user_id()}, limit, req->cursor(),
                                         req->archived());
    if (!list.ok()) return list.status();
    *resp = std::move(*list);
    return absl::OkStatus();
  });
  return reactor;
}

grpc::ServerUnaryReactor* ChatServiceImpl::SearchMessages(grpc::CallbackServerContext* ctx,
                                                          const cpb::SearchMessagesRequest* req,
                                                          cpb::SearchMessagesResponse* resp) {
  if (auto* refused = grpcx::RefuseUnlessAllowed(ctx, "/switchboard.chat.v1.Chat/SearchMessages"))
    return refused;
  auto* reactor = ctx->DefaultReactor();
  OnPool(ctx, reactor, [this, req, resp]() -> absl::Status {
    if (auto st = RequireScope(req->org_id(), req->user_id()); !st.ok()) return st;
    if (req->query().empty() || req->query().size() > 512) {
      return absl::InvalidArgumentError("q must be 1 to 512 bytes");
    }
    const int limit = req->limit() <= 0 ? 20 : std::min(req->limit(), 50);
    auto found = store_.SearchMessages({req->org_id(), req->user_id()}, req->query(), limit);
    if (!found.ok()) return found.status();
    *resp = std::move(*found);
    return absl::OkStatus();
  });
  return reactor;
}

grpc::ServerUnaryReactor* ChatServiceImpl::GetConversation(grpc::CallbackServerContext* ctx,
                                                           const cpb::GetConversationRequest* req,
                                                           cpb::Conversation* resp) {
  if (auto* refused = grpcx::RefuseUnlessAllowed(ctx, "/switchboard.chat.v1.Chat/GetConversation"))
    return refused;
  auto* reactor = ctx->DefaultReactor();
  OnPool(ctx, reactor, [this, req, resp]() -> absl::Status {
    if (auto st = RequireScope(req->org_id(), req->user_id()); !st.ok()) return st;
    auto conv = store_.GetConversation({req->org_id(), req->user_id()}, req->conversation_id());
    if (!conv.ok()) return conv.status();
    *resp = std::move(*conv);
    return absl::OkStatus();
  });
  return reactor;
}

grpc::ServerUnaryReactor* ChatServiceImpl::UpdateConversation(
    grpc::CallbackServerContext* ctx, const cpb::UpdateConversationRequest* req,
    cpb::Conversation* resp) {
  if (auto* refused =
          grpcx::RefuseUnlessAllowed(ctx, "/switchboard.chat.v1.Chat/UpdateConversation"))
    return refused;
  auto* reactor = ctx->DefaultReactor();
  OnPool(ctx, reactor, [this, req, resp]() -> absl::Status {
    if (auto st = RequireScope(req->org_id(), req->user_id()); !st.ok()) return st;
    ConversationPatch patch;
    if (req->has_title()) {
      if (req->title().size() > kMaxTitleBytes) {
        return absl::InvalidArgumentError("title is too long");
      }
      if (req->title().find('\0') != std::string::npos) {
        return absl::InvalidArgumentError("title must not contain NUL characters");
      }
      patch.title = req->title();
    }
    if (req->has_archived()) patch.archived = req->archived();
    if (req->has_current_leaf_id()) patch.current_leaf_id = req->current_leaf_id();
    if (req->has_expected_version()) patch.expected_version = req->expected_version();
    const Scope scope{req->org_id(), req->user_id()};
    auto conv = store_.UpdateConversation(scope, req->conversation_id(), patch);
    if (!conv.ok()) return conv.status();
    *resp = std::move(*conv);
    return absl::OkStatus();
  });
  return reactor;
}

grpc::ServerUnaryReactor* ChatServiceImpl::CancelMessage(grpc::CallbackServerContext* ctx,
                                                         const cpb::CancelMessageRequest* req,
                                                         cpb::ChatMessage* resp) {
  if (auto* refused = grpcx::RefuseUnlessAllowed(ctx, "/switchboard.chat.v1.Chat/CancelMessage"))
    return refused;
  auto* reactor = ctx->DefaultReactor();
  OnPool(ctx, reactor, [this, req, resp]() -> absl::Status {
    if (auto st = RequireScope(req->org_id(), req->user_id()); !st.ok()) return st;
    auto m = store_.GetMessage({req->org_id(), req->user_id()}, req->conversation_id(),
                               req->message_id());
    if (!m.ok()) return m.status();
    if (m->role() != "assistant") {
      return absl::InvalidArgumentError("only a reply (an assistant message) can be stopped");
    }
    *resp = std::move(*m);
    if (resp->status() != "in_progress") return absl::OkStatus();  // already ended
    if (turns_.Cancel(req->message_id())) {
      cancels_here_.Inc();
      return absl::OkStatus();
    }
    // Another replica runs it (or none: the reply is being taken over).
    if (!publish_cancel_) return absl::UnavailableError("cannot reach the other chat replicas");
    if (auto st = publish_cancel_(req->message_id()); !st.ok()) return st;
    cancels_elsewhere_.Inc();
    return absl::OkStatus();
  });
  return reactor;
}

grpc::ServerUnaryReactor* ChatServiceImpl::RegenerateMessage(
    grpc::CallbackServerContext* ctx, const cpb::RegenerateMessageRequest* req,
    cpb::SendMessageResponse* resp) {
  if (auto* refused =
          grpcx::RefuseUnlessAllowed(ctx, "/switchboard.chat.v1.Chat/RegenerateMessage"))
    return refused;
  auto* reactor = ctx->DefaultReactor();
  if (req->max_tokens() < 0 || req->max_tokens() > kMaxMaxTokens) {
    reactor->Finish(ToGrpcStatus(absl::InvalidArgumentError("max_tokens must be between 1 and " +
                                                            std::to_string(kMaxMaxTokens))));
    return reactor;
  }
  const trace::SpanContext trace = trace::ServerSpanContext(ctx);
  OnPool(ctx, reactor, [this, req, resp, trace]() -> absl::Status {
    if (auto st = RequireScope(req->org_id(), req->user_id()); !st.ok()) return st;
    const Scope scope{req->org_id(), req->user_id()};
    auto turn = store_.Regenerate(
        scope, req->conversation_id(), req->message_id(),
        req->has_expected_version() ? std::optional(req->expected_version()) : std::nullopt);
    if (!turn.ok()) return turn.status();
    *resp->mutable_user_message() = turn->user_message;
    resp->set_assistant_message_id(turn->assistant_message_id);
    resp->set_conversation_version(turn->conversation_version);
    StartTurn(scope, req->conversation_id(), *turn, req->max_tokens(), trace);
    return absl::OkStatus();
  });
  return reactor;
}

grpc::ServerUnaryReactor* ChatServiceImpl::DeleteConversation(
    grpc::CallbackServerContext* ctx, const cpb::DeleteConversationRequest* req,
    cpb::DeleteConversationResponse*) {
  if (auto* refused =
          grpcx::RefuseUnlessAllowed(ctx, "/switchboard.chat.v1.Chat/DeleteConversation"))
    return refused;
  auto* reactor = ctx->DefaultReactor();
  OnPool(ctx, reactor, [this, req]() -> absl::Status {
    if (auto st = RequireScope(req->org_id(), req->user_id()); !st.ok()) return st;
    const Scope scope{req->org_id(), req->user_id()};
    auto st = store_.DeleteConversation(
        scope, req->conversation_id(),
        req->has_expected_version() ? std::optional(req->expected_version()) : std::nullopt);
    if (!st.ok()) return st;
    if (on_deleted_) on_deleted_(req->conversation_id());
    return absl::OkStatus();
  });
  return reactor;
}

}  // namespace sb::chat
