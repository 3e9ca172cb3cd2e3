// switchboard.chat.v1.Chat. Database and safety calls run on a worker pool;
// turns run on the TurnRunner's pool.
#pragma once

#include "chat/chat_store.h"
#include "chat/turn_runner.h"
#include "core/thread_pool.h"
#include "switchboard/chat/v1/chat.grpc.pb.h"

namespace sb::chat {

class ChatServiceImpl final : public switchboard::chat::v1::Chat::CallbackService {
 public:
  ChatServiceImpl(ChatStore& store, TurnRunner& turns,
                  switchboard::safety::v1::Safety::StubInterface& safety, EventPublisher publish,
                  ThreadPool& pool);

  grpc::ServerUnaryReactor* CreateConversation(
      grpc::CallbackServerContext* ctx, const switchboard::chat::v1::CreateConversationRequest* req,
      switchboard::chat::v1::Conversation* resp) override;
  grpc::ServerUnaryReactor* SendMessage(grpc::CallbackServerContext* ctx,
                                        const switchboard::chat::v1::SendMessageRequest* req,
                                        switchboard::chat::v1::SendMessageResponse* resp) override;
  grpc::ServerUnaryReactor* ListMessages(grpc::CallbackServerContext* ctx,
                                         const switchboard::chat::v1::ListMessagesRequest* req,
                                         switchboard::chat::v1::ListMessagesResponse* resp) override;
  grpc::ServerUnaryReactor* GetMessage(grpc::CallbackServerContext* ctx,
                                       const switchboard::chat::v1::GetMessageRequest* req,
                                       switchboard::chat::v1::ChatMessage* resp) override;

 private:
  absl::Status Send(const switchboard::chat::v1::SendMessageRequest& req,
                    switchboard::chat::v1::SendMessageResponse* resp);
  // Runs `fn` on the pool and finishes the call with its status.
  grpc::ServerUnaryReactor* OnPool(grpc::CallbackServerContext* ctx, std::function<absl::Status()> fn);

  ChatStore& store_;
  TurnRunner& turns_;
  switchboard::safety::v1::Safety::StubInterface& safety_;
  EventPublisher publish_;
  ThreadPool& pool_;
};

}  // namespace sb::chat
