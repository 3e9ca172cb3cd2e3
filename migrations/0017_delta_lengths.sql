-- A reply's token boundaries (issue 10): the byte length of each text delta
-- of its stream, in order, comma-separated ("5,3,7"). With them a reader
-- resumes from the middle of the text exactly once the Redis buffer has
-- expired. Empty for user messages and replies stored before.
ALTER TABLE messages ADD COLUMN delta_lengths text NOT NULL DEFAULT '';
