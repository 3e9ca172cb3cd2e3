// Every SQL statement the chat service runs.
#pragma once

#include <string>

namespace sb::chat::sql {

inline constexpr const char* kInsertConversation =
    "INSERT INTO conversations (id, org_id, user_id, title, model) VALUES ($1, $2, $3, $4, $5) "
    "RETURNING version, message_count, (extract(epoch from created_at) * 1000)::bigint, "
    " (extract(epoch from last_message_at) * 1000)::bigint";

inline constexpr const char* kEnsureUser =
    "INSERT INTO users (org_id, id) VALUES ($1, $2) ON CONFLICT DO NOTHING";

// Locks the conversation row: concurrent sends to one conversation are
// serialised, and the version moves by one per accepted change.
inline constexpr const char* kLockConversation =
    "SELECT version, model, title, coalesce(current_leaf_id, '') FROM conversations "
    "WHERE id = $1 AND org_id = $2 AND user_id = $3 AND deleted_at IS NULL FOR UPDATE";

// A message of the conversation, for a new turn's, a regenerate's or a
// branch switch's checks: its role, status and parent.
inline constexpr const char* kMessageRole =
    "SELECT role, status, coalesce(parent_id, '') FROM messages "
    "WHERE conversation_id = $1 AND message_id = $2";

// Every conversation read returns these columns, in this order.
#define SB_CONVERSATION_COLUMNS                                                     \
  "id, title, model, version, message_count, "                                      \
  "(extract(epoch from created_at) * 1000)::bigint, "                               \
  "(extract(epoch from last_message_at) * 1000)::bigint, archived_at IS NOT NULL, " \
  "(extract(epoch from last_message_at) * 1000000)::bigint, coalesce(current_leaf_id, '')"

inline constexpr const char* kGetConversation =
    "SELECT " SB_CONVERSATION_COLUMNS
    " FROM conversations "
    "WHERE id = $1 AND org_id = $2 AND user_id = $3 AND deleted_at IS NULL";

// Keyset pages over the partial index of the archived state asked for
// (conversations_active or conversations_archived): $3 limit; the next page
// starts below the cursor's (last_message_at in microseconds $4, id $5).
// The state is spelled out, not a parameter, so the planner can match the
// index's predicate.
inline const std::string& ListConversationsSql(bool archived, bool after_cursor) {
  static const auto make = [](bool archived, bool after) {
    return std::string("SELECT " SB_CONVERSATION_COLUMNS
                       " FROM conversations "
                       "WHERE org_id = $1 AND user_id = $2 AND deleted_at IS NULL AND ") +
           (archived ? "archived_at IS NOT NULL " : "archived_at IS NULL ") +
           (after ? "AND (last_message_at, id) < "
                    "('epoch'::timestamptz + $4::float8 * interval '1 microsecond', $5) "
                  : "") +
           "ORDER BY last_message_at DESC, id DESC LIMIT $3";
  };
  static const std::string sql[2][2] = {{make(false, false), make(false, true)},
                                        {make(true, false), make(true, true)}};
  return sql[archived][after_cursor];
}

// A PATCH: NULL leaves a field as it is.
inline constexpr const char* kUpdateConversation =
    "UPDATE conversations SET version = version + 1, title = coalesce($2, title), "
    " archived_at = CASE WHEN $3::boolean IS NULL THEN archived_at "
    "   WHEN $3 THEN coalesce(archived_at, now()) ELSE NULL END, "
    " current_leaf_id = coalesce($4, current_leaf_id) "
    "WHERE id = $1 RETURNING " SB_CONVERSATION_COLUMNS;

// Deleted: hidden from every read at once.
inline constexpr const char* kDeleteConversation =
    "UPDATE conversations SET version = version + 1, deleted_at = now() WHERE id = $1";

#undef SB_CONVERSATION_COLUMNS

// The outbox of chat.events (migration 0018). One relay at a time (a
// transaction-scoped advisory lock) keeps the events in order. Rows go by
// id, never "up to an id": a transaction that took a lower id may commit
// after a higher one was read. Each change inserts its event after taking
// its conversation's row lock, so a conversation's events are in id order.
inline constexpr const char* kEnqueueEvent =
    "INSERT INTO chat_outbox (conversation_id, event) VALUES ($1, $2)";
inline constexpr const char* kLockRelay = "SELECT pg_try_advisory_xact_lock($1)";
inline constexpr const char* kOutboxBatch =
    "SELECT id, conversation_id, event FROM chat_outbox ORDER BY id LIMIT $1";
inline constexpr const char* kDeleteOutbox = "DELETE FROM chat_outbox WHERE id = ANY($1::bigint[])";

// Erasure: deleted conversations at least $1 ms old, oldest first (and
// whether they are a minute old: erased even with a reply in progress).
inline constexpr const char* kErasableConversations =
    "SELECT id, deleted_at < now() - interval '1 minute' FROM conversations "
    "WHERE deleted_at IS NOT NULL AND deleted_at <= now() - $1::float8 * interval '1 millisecond' "
    "ORDER BY deleted_at LIMIT $2";
inline constexpr const char* kMessagesOf =
    "SELECT message_id, status FROM messages WHERE conversation_id = $1";
inline constexpr const char* kLockDeleted =
    "SELECT 1 FROM conversations WHERE id = $1 AND deleted_at IS NOT NULL FOR UPDATE";
inline constexpr const char* kEraseMessages = "DELETE FROM messages WHERE conversation_id = $1";
inline constexpr const char* kEraseConversation =
    "DELETE FROM conversations WHERE id = $1 AND deleted_at IS NOT NULL";

inline constexpr const char* kFindConversation =
    "SELECT 1 FROM conversations "
    "WHERE id = $1 AND org_id = $2 AND user_id = $3 AND deleted_at IS NULL";

inline constexpr const char* kFindMessage =
    "SELECT message_id, conversation_id, coalesce(parent_id, ''), role, content, status, "
    " stop_reason, input_tokens, output_tokens, model, "
    " (extract(epoch from created_at) * 1000)::bigint, stream_last_offset, safety_result "
    "FROM messages WHERE conversation_id = $1 AND message_id = $2";

// A regenerated reply: the version moves and the new reply ends the branch.
inline constexpr const char* kBumpForRegenerate =
    "UPDATE conversations SET version = version + 1, message_count = message_count + 1, "
    " last_message_at = now(), current_leaf_id = $2 WHERE id = $1 RETURNING version";

inline constexpr const char* kFindByClientId =
    "SELECT message_id, conversation_id, coalesce(parent_id, ''), role, content, status, "
    " stop_reason, input_tokens, output_tokens, model, "
    " (extract(epoch from created_at) * 1000)::bigint, stream_last_offset, safety_result "
    "FROM messages WHERE conversation_id = $1 AND client_message_id = $2";

inline constexpr const char* kFindReply =
    "SELECT message_id FROM messages WHERE conversation_id = $1 AND parent_id = $2 "
    "AND role = 'assistant' ORDER BY message_id LIMIT 1";

// $9, $10: the reply's lease (owner, seconds); no lease when $9 is ''.
inline constexpr const char* kInsertMessage =
    "INSERT INTO messages (conversation_id, message_id, parent_id, role, content, status, "
    " client_message_id, model, lease_owner, lease_until, safety_result) "
    "VALUES ($1, $2, NULLIF($3, ''), $4, $5, $6, NULLIF($7, ''), $8, NULLIF($9, ''),"
    " CASE WHEN $9 = '' THEN NULL ELSE now() + make_interval(secs => $10) END, $11) "
    "RETURNING (extract(epoch from created_at) * 1000)::bigint";

// A new turn: the version moves, and an untitled conversation takes the
// title made from its first message.
inline constexpr const char* kBumpForTurn =
    "UPDATE conversations SET version = version + 1, message_count = message_count + 2, "
    " last_message_at = now(), title = CASE WHEN title = '' THEN $2 ELSE title END, "
    " current_leaf_id = $3 "
    "WHERE id = $1 RETURNING version";

// A reply finished: the conversation's last message moved, its version not.
// Whether the conversation is still there (not deleted).
inline constexpr const char* kTouchConversation =
    "UPDATE conversations SET last_message_at = now() WHERE id = $1 "
    "RETURNING deleted_at IS NULL";

// The branch that ends at $2, root first: what the model is given.
inline constexpr const char* kHistory =
    "WITH RECURSIVE branch(message_id, parent_id, role, content, status, depth) AS ("
    " SELECT message_id, parent_id, role, content, status, 0 FROM messages "
    "  WHERE conversation_id = $1 AND message_id = $2 "
    " UNION ALL "
    " SELECT m.message_id, m.parent_id, m.role, m.content, m.status, b.depth + 1 "
    "  FROM messages m JOIN branch b ON m.conversation_id = $1 AND m.message_id = b.parent_id) "
    "SELECT role, content FROM branch WHERE status = 'complete' ORDER BY depth DESC";

inline constexpr const char* kCompleteMessage =
    "UPDATE messages SET content = $3, status = $4, stop_reason = $5, input_tokens = $6, "
    " output_tokens = $7, model = $8, safety_result = $9, stream_last_offset = $10, "
    " delta_lengths = $11 "
    "WHERE conversation_id = $1 AND message_id = $2";

// A message's siblings (its parent's children, itself included), by id.
#define SB_SIBLINGS(m)                                         \
  "array_to_string(ARRAY(SELECT s.message_id FROM messages s " \
  " WHERE s.conversation_id = " m                              \
  ".conversation_id "                                          \
  " AND s.parent_id IS NOT DISTINCT FROM " m ".parent_id ORDER BY s.message_id), ',')"

// The active branch (root to the conversation's current leaf), after the
// cursor: ids grow along a branch, so it pages by id.
inline constexpr const char* kListMessages =
    "WITH RECURSIVE branch AS ("
    " SELECT m.* FROM messages m JOIN conversations c ON c.id = m.conversation_id "
    "  WHERE m.conversation_id = $1 AND m.message_id = c.current_leaf_id "
    " UNION ALL "
    " SELECT m.* FROM messages m JOIN branch b "
    "  ON m.conversation_id = $1 AND m.message_id = b.parent_id) "
    "SELECT b.message_id, b.conversation_id, coalesce(b.parent_id, ''), b.role, b.content, "
    " b.status, b.stop_reason, b.input_tokens, b.output_tokens, b.model, "
    " (extract(epoch from b.created_at) * 1000)::bigint, b.stream_last_offset, b.safety_result, "
    " '', " SB_SIBLINGS("b") " "
    "FROM branch b WHERE b.message_id > $2 ORDER BY b.message_id LIMIT $3";

inline constexpr const char* kGetMessage =
    "SELECT m.message_id, m.conversation_id, coalesce(m.parent_id, ''), m.role, m.content, "
    " m.status, m.stop_reason, m.input_tokens, m.output_tokens, m.model, "
    " (extract(epoch from m.created_at) * 1000)::bigint, m.stream_last_offset, m.safety_result, "
    " m.delta_lengths, " SB_SIBLINGS("m") " "
    "FROM messages m JOIN conversations c ON c.id = m.conversation_id "
    "WHERE m.conversation_id = $1 AND m.message_id = $2 AND c.org_id = $3 AND c.user_id = $4 "
    " AND c.deleted_at IS NULL";

#undef SB_SIBLINGS

// Erasing a user ($1 org, $2 user): every conversation of theirs deleted
// (the eraser then removes the rows), and the user's row.
inline constexpr const char* kDeleteUsersConversations =
    "UPDATE conversations SET version = version + 1, deleted_at = now() "
    "WHERE org_id = $1 AND user_id = $2 AND deleted_at IS NULL RETURNING id";
inline constexpr const char* kDeleteUser = "DELETE FROM users WHERE org_id = $1 AND id = $2";

// Turn leases (migration 0021). A reply just inserted is leased to the
// replica that will run it ($1 conversation, $2 reply, $3 owner, $4 ttl in
// seconds).
inline constexpr const char* kLeaseReply =
    "UPDATE messages SET lease_owner = $3, lease_until = now() + make_interval(secs => $4) "
    "WHERE conversation_id = $1 AND message_id = $2";
// Every reply this replica ($1) still runs, renewed for $2 seconds.
inline constexpr const char* kRenewLeases =
    "UPDATE messages SET lease_until = now() + make_interval(secs => $2) "
    "WHERE status = 'in_progress' AND lease_owner = $1";
// Replies whose lease expired, taken over by $1 for $2 seconds (at most $3
// of them; another replica's sweep skips the rows this one holds; never
// $1's own, which it still runs if its renewals were only late; nor those
// of deleted conversations, which the eraser stops): with what continuing
// them needs.
inline constexpr const char* kTakeOverExpired =
    "WITH expired AS ("
    " SELECT m.conversation_id, m.message_id, c.org_id, c.user_id"
    " FROM messages m JOIN conversations c ON c.id = m.conversation_id"
    " WHERE m.status = 'in_progress' AND m.lease_until < now() AND m.lease_owner <> $1"
    "  AND c.deleted_at IS NULL"
    " ORDER BY m.lease_until LIMIT $3 FOR UPDATE OF m SKIP LOCKED) "
    "UPDATE messages m SET lease_owner = $1, lease_until = now() + make_interval(secs => $2) "
    "FROM expired e "
    "WHERE m.conversation_id = e.conversation_id AND m.message_id = e.message_id "
    "RETURNING m.conversation_id, m.message_id, m.parent_id, m.model, e.org_id, e.user_id";

// Search ($1 org, $2 user, $3 the words, $4 how many rows): the best
// matches of the GIN index (migration 0020) among the user's messages that
// are shown, then a passage of each (ts_headline reads the whole text: only
// for the rows returned).
inline constexpr const char* kSearchMessages =
    "SELECT h.conversation_id, h.title, h.message_id, h.role, h.created_ms,"
    " ts_headline('simple', h.content, websearch_to_tsquery('simple', $3),"
    "  'MaxWords=30, MinWords=10, MaxFragments=2, FragmentDelimiter=\" … \","
    "   StartSel=\"\", StopSel=\"\"') "
    "FROM (SELECT m.conversation_id, c.title, m.message_id, m.role, m.content,"
    "  ts_rank(m.search, q) AS rank,"
    "  (extract(epoch FROM m.created_at) * 1000)::bigint AS created_ms"
    " FROM messages m JOIN conversations c ON c.id = m.conversation_id,"
    "  websearch_to_tsquery('simple', $3) q"
    " WHERE c.org_id = $1 AND c.user_id = $2 AND c.deleted_at IS NULL AND m.search @@ q"
    "  AND m.status = 'complete' AND m.safety_result <> 'filtered'"
    " ORDER BY rank DESC, m.message_id DESC LIMIT $4) h "
    "ORDER BY h.rank DESC, h.message_id DESC";

}  // namespace sb::chat::sql
