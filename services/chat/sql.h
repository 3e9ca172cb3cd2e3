// Every SQL statement the chat service runs.
#pragma once

namespace sb::chat::sql {

inline constexpr const char* kInsertConversation =
    "INSERT INTO conversations (id, org_id, user_id, title, model) VALUES ($1, $2, $3, $4, $5) "
    "RETURNING version, message_count, (extract(epoch from created_at) * 1000)::bigint, "
    " (extract(epoch from last_message_at) * 1000)::bigint";

inline constexpr const char* kEnsureUser =
    "INSERT INTO users (org_id, id) VALUES ($1, $2) ON CONFLICT DO NOTHING";

// Locks the conversation row: concurrent sends to one conversation are
// serialised, and the version moves by one per accepted message pair.
inline constexpr const char* kLockConversation =
    "SELECT version, model FROM conversations "
    "WHERE id = $1 AND org_id = $2 AND user_id = $3 AND deleted_at IS NULL FOR UPDATE";

inline constexpr const char* kFindConversation =
    "SELECT 1 FROM conversations "
    "WHERE id = $1 AND org_id = $2 AND user_id = $3 AND deleted_at IS NULL";

inline constexpr const char* kFindByClientId =
    "SELECT message_id, conversation_id, coalesce(parent_id, ''), role, content, status, "
    " stop_reason, input_tokens, output_tokens, model, "
    " (extract(epoch from created_at) * 1000)::bigint, stream_last_offset, safety_result "
    "FROM messages WHERE conversation_id = $1 AND client_message_id = $2";

inline constexpr const char* kFindReply =
    "SELECT message_id FROM messages WHERE conversation_id = $1 AND parent_id = $2 "
    "AND role = 'assistant' ORDER BY message_id LIMIT 1";

inline constexpr const char* kInsertMessage =
    "INSERT INTO messages (conversation_id, message_id, parent_id, role, content, status, "
    " client_message_id, model) "
    "VALUES ($1, $2, NULLIF($3, ''), $4, $5, $6, NULLIF($7, ''), $8) "
    "RETURNING (extract(epoch from created_at) * 1000)::bigint";

inline constexpr const char* kBumpConversation =
    "UPDATE conversations SET version = version + 1, message_count = message_count + $2, "
    " last_message_at = now() WHERE id = $1";

inline constexpr const char* kHistory =
    "SELECT role, content FROM messages WHERE conversation_id = $1 AND status = 'complete' "
    "AND message_id <= $2 ORDER BY message_id";

inline constexpr const char* kCompleteMessage =
    "UPDATE messages SET content = $3, status = $4, stop_reason = $5, input_tokens = $6, "
    " output_tokens = $7, model = $8, safety_result = $9, stream_last_offset = $10 "
    "WHERE conversation_id = $1 AND message_id = $2";

inline constexpr const char* kListMessages =
    "SELECT message_id, conversation_id, coalesce(parent_id, ''), role, content, status, "
    " stop_reason, input_tokens, output_tokens, model, "
    " (extract(epoch from created_at) * 1000)::bigint, stream_last_offset, safety_result "
    "FROM messages WHERE conversation_id = $1 AND message_id > $2 "
    "ORDER BY message_id LIMIT $3";

inline constexpr const char* kGetMessage =
    "SELECT m.message_id, m.conversation_id, coalesce(m.parent_id, ''), m.role, m.content, "
    " m.status, m.stop_reason, m.input_tokens, m.output_tokens, m.model, "
    " (extract(epoch from m.created_at) * 1000)::bigint, m.stream_last_offset, m.safety_result "
    "FROM messages m JOIN conversations c ON c.id = m.conversation_id "
    "WHERE m.conversation_id = $1 AND m.message_id = $2 AND c.org_id = $3 AND c.user_id = $4 "
    " AND c.deleted_at IS NULL";

}  // namespace sb::chat::sql
