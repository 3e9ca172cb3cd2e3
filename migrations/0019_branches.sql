-- Branches (issue 10): a conversation is a tree of messages. A user
-- message's parent is the reply it answers (NULL: the first message), a
-- reply's its user message; editing a message adds a sibling, regenerating
-- a reply adds a sibling reply. current_leaf_id is the end of the branch
-- the user sees (and the model is given).
ALTER TABLE conversations ADD COLUMN current_leaf_id text;

-- Conversations written before were linear: each user message answers the
-- message before it, and the branch ends at the newest.
UPDATE messages m SET parent_id = p.prev
FROM (SELECT conversation_id, message_id,
             lag(message_id) OVER (PARTITION BY conversation_id ORDER BY message_id) AS prev
      FROM messages) p
WHERE m.conversation_id = p.conversation_id AND m.message_id = p.message_id
  AND m.role = 'user' AND m.parent_id IS NULL AND p.prev IS NOT NULL;
UPDATE conversations c
SET current_leaf_id = (SELECT max(message_id) FROM messages m WHERE m.conversation_id = c.id);

-- A message's siblings: the messages with its parent.
CREATE INDEX messages_parent ON messages (conversation_id, parent_id);
