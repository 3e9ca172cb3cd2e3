// Conversations and messages in PostgreSQL. Every read and write is scoped
// to (org, user): another tenant's ids are NotFound, never PermissionDenied.
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
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
  int64_t conversation_version = 0;  // after the turn (0 when replayed)
  bool replayed = false;  // the client_message_id was seen before: nothing new was written
};

// Optimistic concurrency: a change that expected another version of the
// conversation is ABORTED, and the status carries the version it is at.
absl::Status VersionConflict(int64_t expected, int64_t current);
std::optional<int64_t> ConflictVersion(const absl::Status& status);

// The title an untitled conversation takes from its first message: its
// first words, whitespace collapsed, at most kMaxAutoTitleBytes (cut at a
// word when one ends in the second half, never inside a UTF-8 character),
// "…" when cut.
inline constexpr size_t kMaxAutoTitleBytes = 80;
std::string TitleFrom(std::string_view content);

struct ConversationPatch {
  std::optional<std::string> title;
  std::optional<bool> archived;
  std::optional<std::string> current_leaf_id;  // a reply of the conversation
  std::optional<int64_t> expected_version;
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
  std::vector<int> delta_lengths;  // of each text delta of the stream, in order
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
  // With expected_version, the turn is refused (VersionConflict) unless the
  // conversation is at it; a replay of a client_message_id is not. The
  // message answers `parent_id` (a reply of the conversation, or "" for
  // the first message: an edit adds a sibling), by default the end of the
  // current branch; the new reply becomes the branch's end. `input_safety`
  // is what input safety found in the message: "pass" or "flagged".
  absl::StatusOr<NewTurn> AppendTurn(const Scope& scope, const std::string& conversation_id,
                                     const std::string& content,
                                     const std::string& client_message_id,
                                     std::optional<int64_t> expected_version = std::nullopt,
                                     std::optional<std::string> parent_id = std::nullopt,
                                     const std::string& input_safety = "pass");
  // The conversation's completed messages up to `through_id`, oldest first.
  absl::StatusOr<std::vector<std::pair<std::string, std::string>>> History(
      const std::string& conversation_id, const std::string& through_id);
  // With `announce`, the event goes to the outbox in the same transaction.
  absl::Status CompleteReply(const std::string& conversation_id, const std::string& message_id,
                             const TurnResult& result,
                             const switchboard::chat::v1::ChatEvent* announce = nullptr);
  absl::StatusOr<switchboard::chat::v1::ListMessagesResponse> ListMessages(
      const Scope& scope, const std::string& conversation_id, int limit, const std::string& cursor);
  absl::StatusOr<switchboard::chat::v1::ChatMessage> GetMessage(const Scope& scope,
                                                                const std::string& conversation_id,
                                                                const std::string& message_id);

  // The user's conversations, most recent last message first; archived
  // ones only (and only they) with `archived`. `cursor` is a next_cursor
  // this returned (InvalidArgument otherwise).
  absl::StatusOr<switchboard::chat::v1::ListConversationsResponse> ListConversations(
      const Scope& scope, int limit, const std::string& cursor, bool archived);
  absl::StatusOr<switchboard::chat::v1::Conversation> GetConversation(
      const Scope& scope, const std::string& conversation_id);
  absl::StatusOr<switchboard::chat::v1::Conversation> UpdateConversation(
      const Scope& scope, const std::string& conversation_id, const ConversationPatch& patch);
  // A new reply to the user message that `reply_id` (a reply that has
  // ended) answered: a sibling of it, in progress, which ends the branch.
  absl::StatusOr<NewTurn> Regenerate(const Scope& scope, const std::string& conversation_id,
                                     const std::string& reply_id,
                                     std::optional<int64_t> expected_version);
  // The user's messages matching `query` (SearchMessagesRequest), best
  // first, at most `limit`; InvalidArgument for a query without a word.
  absl::StatusOr<switchboard::chat::v1::SearchMessagesResponse> SearchMessages(
      const Scope& scope, const std::string& query, int limit);
  // Hidden from every read at once; erased later (Eraser).
  absl::Status DeleteConversation(const Scope& scope, const std::string& conversation_id,
                                  std::optional<int64_t> expected_version);

  // Erases everything a user has (sbadmin erase-user): every conversation
  // is deleted as DeleteConversation does (its conversation.deleted event,
  // then the eraser removes its rows and replay buffers), the user's row
  // goes, and a `user.erased` tombstone follows the events (connection-
  // manager then drops the user's kept events). Returns how many
  // conversations were deleted.
  absl::StatusOr<int> EraseUser(const Scope& scope);

  // Turn leases (turns survive their replica). A reply in progress is
  // leased to the replica running it; the replica renews its leases while it
  // runs; a reply whose lease expired is taken over by another. With an
  // owner set, the replies AppendTurn and Regenerate insert are leased to it
  // (set before use; none by default).
  void set_lease(std::string owner, absl::Duration ttl) {
    lease_owner_ = std::move(owner);
    lease_ttl_ = ttl;
  }
  absl::Status LeaseReply(const std::string& conversation_id, const std::string& reply_id,
                          const std::string& owner, absl::Duration ttl);
  // Renews every lease `owner` holds on a reply in progress: how many.
  absl::StatusOr<int> RenewLeases(const std::string& owner, absl::Duration ttl);
  struct Orphan {
    Scope scope;
    std::string conversation_id;
    std::string user_message_id;
    std::string reply_id;
    std::string model;
  };
  // Takes over at most `limit` replies whose lease expired, leasing them to
  // `owner`: each is then this replica's to continue.
  absl::StatusOr<std::vector<Orphan>> TakeOverExpired(const std::string& owner, absl::Duration ttl,
                                                      int limit);

  // Erasure (eraser.h). Deleted conversations deleted at least
  // `deleted_for` ago, oldest first; `overdue` when a minute ago or more.
  struct Erasable {
    std::string conversation_id;
    bool overdue = false;
  };
  absl::StatusOr<std::vector<Erasable>> ErasableConversations(absl::Duration deleted_for,
                                                              int limit);
  // A conversation's messages: id and status.
  absl::StatusOr<std::vector<std::pair<std::string, std::string>>> MessagesOf(
      const std::string& conversation_id);
  // Removes a deleted conversation's rows: its messages and itself.
  absl::Status EraseConversation(const std::string& conversation_id);

  // The outbox of chat.events (outbox_relay.h): every change above writes
  // its event (conversation.created/updated/deleted, message.created/
  // completed) in its own transaction. RelayOutbox hands the oldest
  // `limit` to `publish`, which returns how many of them (a prefix) were
  // stored by Kafka; those rows are deleted. One relay runs at a time
  // across replicas: -1 when another holds the turn.
  struct OutboxRow {
    int64_t id = 0;
    std::string conversation_id;
    std::string event;  // a serialized ChatEvent
  };
  absl::StatusOr<int> RelayOutbox(
      int limit, const std::function<size_t(const std::vector<OutboxRow>&)>& publish);

 private:
  // Writes `ev` (its event_id and time set here) to the outbox.
  void Enqueue(pqxx::work& tx, switchboard::chat::v1::ChatEvent ev);

  PgPool& pg_;
  UlidGenerator& ids_;
  std::string lease_owner_;
  absl::Duration lease_ttl_ = absl::Seconds(10);
};

}  // namespace sb::chat
