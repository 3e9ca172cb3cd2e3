-- Never skip silently (issue 13): when billing finds the offset it stored
-- for a partition outside the partition's log (the broker lost its data, a
-- topic was recreated, a cluster restored from an older backup), it stops
-- consuming that partition and waits for an operator decision, made with
-- `sbadmin billing reset-offsets --to=earliest|latest|OFFSET`. The decision
-- waits here until the consumer holding the partition applies it: it stores
-- the new offset in consumer_offsets and deletes the row in one transaction.
-- A decision made while billing is down is applied when the partition is
-- next assigned.
CREATE TABLE consumer_offset_resets (
  consumer_group  text NOT NULL,
  topic           text NOT NULL,
  partition       integer NOT NULL CHECK (partition >= 0),
  -- 'earliest' and 'latest' are the log's ends when applied.
  to_position     text NOT NULL
                  CHECK (to_position IN ('earliest', 'latest') OR to_position ~ '^[0-9]{1,18}$'),
  requested_at    timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (consumer_group, topic, partition)
);
