-- Listing a user's conversations (issue 10): most recent last message
-- first, archived ones apart, deleted ones never. One index serves every
-- page (keyset on last_message_at, id) for either archived state.
CREATE INDEX conversations_list ON conversations
  (org_id, user_id, (archived_at IS NOT NULL), last_message_at DESC, id DESC)
  WHERE deleted_at IS NULL;
DROP INDEX conversations_recent;
