// Conversations and messages in PostgreSQL. Every read and write is scoped
// to (org, user): another tenant's ids are NotFound, never PermissionDenied.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "core/ulid.h"
#include "storage/pg.h"
#include "switchboard/chat/v1/chat.pb.h"

namespace sb::chat {

struct Scope {
  std::string org_id;
  std::string user_id;
};

struct NewTurn {
  switchboard::chat::v1::ChatMessage user_message;
  std::string assistant_message_id;
  std::string model;
  bool replayed = false;  // the client_message_id was seen before: nothing new was written
};

struct TurnResult {
  std::string content;
  std::string status;  // complete | failed
  std::string stop_reason;
  int input_tokens = 0;
  int output_tokens = 0;
  std::string model;
  std::string safety_result;
  int64_t stream_last_offset = 0;  // the offset of the reply stream's last event
};

// A page of messages holds at most about this much text (it ends after the
// message that crosses it), whatever its limit.
inline constexpr size_t kMaxPageBytes = 2 << 20;

class ChatStore {
 public:
  ChatStore(PgPool& pg, UlidGenerator& ids) : pg_(pg), ids_(ids) {}

  absl::StatusOr<switchboard::chat::v1::Conversation> CreateConversation(const Scope& scope,
                                                                         const std::string& model,
                                                                         const std::string& title);
  // Appends the user's message and an in-progress assistant reply in one
  // transaction. The same client_message_id again returns the first turn.
  absl::StatusOr<NewTurn> AppendTurn(const Scope& scope, const std::string& conversation_id,
                                     const std::string& content,
                                     const std::string& client_message_id);
  // The conversation's completed messages up to `through_id`, oldest first.
  absl::StatusOr<std::vector<std::pair<std::string, std::string>>> History(
      const std::string& conversation_id, const std::string& through_id);
  absl::Status CompleteReply(const std::string& conversation_id, const std::string& message_id,
                             const TurnResult& result);
  absl::StatusOr<switchboard::chat::v1::ListMessagesResponse> ListMessages(
      const Scope& scope, const std::string& conversation_id, int limit, const std::string& cursor);
  absl::StatusOr<switchboard::chat::v1::ChatMessage> GetMessage(const Scope& scope,
                                                                const std::string& conversation_id,
                                                                const std::string& message_id);

 private:
  PgPool& pg_;
  UlidGenerator& ids_;
};

}  // namespace sb::chat
