// switchboard.chat.v1.Chat. Database calls run on a worker pool; input
// safety is asked asynchronously; turns run on the pipeline (turns.h).
#pragma once

#include "chat/chat_store.h"
#include "chat/turns.h"
#include "core/metrics.h"
#include "core/thread_pool.h"
#include "pipeline/pipeline.h"
#include "switchboard/chat/v1/chat.grpc.pb.h"

namespace sb::chat {

// The trailing metadata of an ABORTED change that expected another version
// of the conversation: the version it is at.
inline constexpr char kVersionTrailer[] = "sb-conversation-version";

class ChatServiceImpl final : public switchboard::chat::v1::Chat::CallbackService {
 public:
  // `on_fail_closed` (may be null) records a send refused because input
  // safety could not be asked (the safety audit trail).
  // `publish_cancel` (may be null) tells the other replicas to stop a
  // reply this one does not run (cancel_bus.h).
  ChatServiceImpl(ChatStore& store, Turns& turns, pipeline::InputGuard& input, ThreadPool& pool,
                  pipeline::FailClosedRecorder on_fail_closed = nullptr,
                  std::function<absl::Status(const std::string&)> publish_cancel = nullptr);

  // Told of every conversation deleted (the eraser); set before serving.
  void set_on_deleted(std::function<void(const std::string& conversation_id)> fn) {
    on_deleted_ = std::move(fn);
  }

  grpc::ServerUnaryReactor* CreateConversation(
      grpc::CallbackServerContext* ctx, const switchboard::chat::v1::CreateConversationRequest* req,
      switchboard::chat::v1::Conversation* resp) override;
  grpc::ServerUnaryReactor* SendMessage(grpc::CallbackServerContext* ctx,
                                        const switchboard::chat::v1::SendMessageRequest* req,
                                        switchboard::chat::v1::SendMessageResponse* resp) override;
  grpc::ServerUnaryReactor* ListMessages(
      grpc::CallbackServerContext* ctx, const switchboard::chat::v1::ListMessagesRequest* req,
      switchboard::chat::v1::ListMessagesResponse* resp) override;
  grpc::ServerUnaryReactor* GetMessage(grpc::CallbackServerContext* ctx,
                                       const switchboard::chat::v1::GetMessageRequest* req,
                                       switchboard::chat::v1::ChatMessage* resp) override;
  grpc::ServerUnaryReactor* SearchMessages(
      grpc::CallbackServerContext* ctx, const switchboard::chat::v1::SearchMessagesRequest* req,
      switchboard::chat::v1::SearchMessagesResponse* resp) override;
  grpc::ServerUnaryReactor* ListConversations(
      grpc::CallbackServerContext* ctx, const switchboard::chat::v1::ListConversationsRequest* req,
      switchboard::chat::v1::ListConversationsResponse* resp) override;
  grpc::ServerUnaryReactor* GetConversation(
      grpc::CallbackServerContext* ctx, const switchboard::chat::v1::GetConversationRequest* req,
      switchboard::chat::v1::Conversation* resp) override;
  grpc::ServerUnaryReactor* UpdateConversation(
      grpc::CallbackServerContext* ctx, const switchboard::chat::v1::UpdateConversationRequest* req,
      switchboard::chat::v1::Conversation* resp) override;
  grpc::ServerUnaryReactor* CancelMessage(grpc::CallbackServerContext* ctx,
                                          const switchboard::chat::v1::CancelMessageRequest* req,
                                          switchboard::chat::v1::ChatMessage* resp) override;
  grpc::ServerUnaryReactor* RegenerateMessage(
      grpc::CallbackServerContext* ctx, const switchboard::chat::v1::RegenerateMessageRequest* req,
      switchboard::chat::v1::SendMessageResponse* resp) override;
  grpc::ServerUnaryReactor* DeleteConversation(
      grpc::CallbackServerContext* ctx, const switchboard::chat::v1::DeleteConversationRequest* req,
      switchboard::chat::v1::DeleteConversationResponse* resp) override;

 private:
  // After input safety allowed the message: stores it (on the pool) and
  // starts the turn.
  absl::Status Store(const switchboard::chat::v1::SendMessageRequest& req,
                     const trace::SpanContext& trace, bool flagged,
                     switchboard::chat::v1::SendMessageResponse* resp);
  // Starts the reply of a stored turn.
  void StartTurn(const Scope& scope, const std::string& conversation_id, const NewTurn& turn,
                 int max_tokens, const trace::SpanContext& trace);
  // Runs `fn` on the pool and finishes the call with its status; a version
  // conflict's current version goes in the trailing metadata
  // kVersionTrailer.
  void OnPool(grpc::CallbackServerContext* ctx, grpc::ServerUnaryReactor* reactor,
              std::function<absl::Status()> fn);

  ChatStore& store_;
  Turns& turns_;
  pipeline::InputGuard& input_;
  ThreadPool& pool_;
  const pipeline::FailClosedRecorder on_fail_closed_;
  metrics::Counter& conflicts_;
  const std::function<absl::Status(const std::string&)> publish_cancel_;
  metrics::Counter& cancels_here_;
  metrics::Counter& cancels_elsewhere_;
  std::function<void(const std::string&)> on_deleted_;
};

}  // namespace sb::chat
