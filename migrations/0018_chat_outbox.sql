-- The transactional outbox of chat.events (issue 10): every event is
-- written in the transaction that makes the change it announces, and
-- chat's relay publishes the rows in id order, deleting each once Kafka has
-- stored it. A crash between the commit and the publish loses nothing; a
-- crash between the publish and the delete publishes again (consumers
-- tolerate duplicates: each event has its own event_id).
CREATE TABLE chat_outbox (
  id               bigserial   PRIMARY KEY,
  conversation_id  text        NOT NULL,  -- the Kafka key: a conversation's events stay in order
  event            bytea       NOT NULL,  -- a serialized switchboard.chat.v1.ChatEvent
  created_at       timestamptz NOT NULL DEFAULT now()
);
