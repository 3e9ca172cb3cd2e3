-- The front door (issue 6): the caller's end user on every metered request,
-- and where a chat reply's event stream ended, so that a reader can resume
-- exactly from the stored message once the live buffer has expired.

ALTER TABLE usage_ledger ADD COLUMN end_user_id text NOT NULL DEFAULT '';

ALTER TABLE messages ADD COLUMN stream_last_offset bigint NOT NULL DEFAULT 0;
