-- Listing a user's conversations (issue 10): most recent last message
-- first, archived ones apart, deleted ones never. A partial index for each
-- archived state serves every page of its list (keyset on last_message_at,
-- id); the queries spell the state out so the planner matches it.
CREATE INDEX conversations_active ON conversations
  (org_id, user_id, last_message_at DESC, id DESC)
  WHERE deleted_at IS NULL AND archived_at IS NULL;
CREATE INDEX conversations_archived ON conversations
  (org_id, user_id, last_message_at DESC, id DESC)
  WHERE deleted_at IS NULL AND archived_at IS NOT NULL;
DROP INDEX conversations_recent;
-- Deleted conversations waiting to be erased (chat's eraser sweeps them).
CREATE INDEX conversations_deleted ON conversations (deleted_at) WHERE deleted_at IS NOT NULL;
