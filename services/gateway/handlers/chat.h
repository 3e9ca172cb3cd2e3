// Handlers of the chat API: conversations and messages (through chat) and
// the resumable token stream of a reply (through connection-manager).
// Every call is scoped to the caller's org and user (ctx->user_id, set by
// ChatUserFilter).
#pragma once

#include <memory>

#include "gateway/gateway.h"

namespace sb::gateway {

void HandleCreateConversation(GatewayDeps& deps, const std::shared_ptr<RequestContext>& ctx);
void HandleListMessages(GatewayDeps& deps, const std::shared_ptr<RequestContext>& ctx);
// A send may carry `expected_version` or `If-Match` (409 when stale).
void HandleSendMessage(GatewayDeps& deps, const std::shared_ptr<RequestContext>& ctx);
// Conversations, most recent first (`limit`, `cursor`, `archived`), and
// one by id: GET (with its ETag), PATCH (title, archived), DELETE.
void HandleListConversations(GatewayDeps& deps, const std::shared_ptr<RequestContext>& ctx);
void HandleGetConversation(GatewayDeps& deps, const std::shared_ptr<RequestContext>& ctx);
// GET /v1/conversations/search?q=&limit=: the caller's matching messages,
// best first ({data: [{conversation_id, message_id, snippet, ...}], has_more}).
void HandleSearchMessages(GatewayDeps& deps, const std::shared_ptr<RequestContext>& ctx);
void HandleUpdateConversation(GatewayDeps& deps, const std::shared_ptr<RequestContext>& ctx);
void HandleDeleteConversation(GatewayDeps& deps, const std::shared_ptr<RequestContext>& ctx);
// Stops a reply in progress (202 with the reply as it was; a finished one
// unchanged): readers get its message_delta (stop_reason "cancelled") and
// message_stop, and the message keeps the text so far.
void HandleCancelMessage(GatewayDeps& deps, const std::shared_ptr<RequestContext>& ctx);
// A new reply to the user message an ended reply answered: a sibling of
// it, which ends the branch (202 as a send; If-Match as a send).
void HandleRegenerateMessage(GatewayDeps& deps, const std::shared_ptr<RequestContext>& ctx);
// SSE in the Messages API event shapes; every event has its own
// `id: {message_id}:{offset}`, and `Last-Event-ID` resumes after any of them.
void HandleChatStream(GatewayDeps& deps, const std::shared_ptr<RequestContext>& ctx);
// GET /v1/events: the caller's chat events (conversation.created, .updated,
// .deleted; message.created, .completed) as SSE, each named by its type with
// its cursor as `id:`; `Last-Event-ID` resumes after any of them. A cursor
// older than what is kept gets an `events.reset` event first (reload).
void HandleEvents(GatewayDeps& deps, const std::shared_ptr<RequestContext>& ctx);

}  // namespace sb::gateway
