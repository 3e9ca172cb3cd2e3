-- Full-text search over a user's messages (issue 10): each message's words
-- ('simple': no stemming and no stop words, so every language is searched
-- alike), kept by PostgreSQL with the content, in a GIN index. A message's
-- entry goes with its row, so erasure removes it too.
ALTER TABLE messages
  ADD COLUMN search tsvector GENERATED ALWAYS AS (to_tsvector('simple', content)) STORED;
CREATE INDEX messages_search ON messages USING GIN (search);
