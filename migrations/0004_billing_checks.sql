-- Rows that cannot be true cannot be stored: the consumer validates usage
-- events before it writes them, and these constraints hold whatever writes
-- next (another consumer version, a hand-written fix). Adding a constraint
-- checks the rows already there: if this migration fails with "is violated by
-- some row", find them with the constraint's condition negated, e.g.
--   SELECT * FROM usage_ledger WHERE input_tokens < 0 OR output_tokens < 0 OR org_id = '';
-- and correct them before migrating again.

ALTER TABLE usage_ledger
  ADD CONSTRAINT usage_ledger_request_id_present CHECK (request_id <> ''),
  ADD CONSTRAINT usage_ledger_org_present CHECK (org_id <> ''),
  ADD CONSTRAINT usage_ledger_input_tokens_nonnegative CHECK (input_tokens >= 0),
  ADD CONSTRAINT usage_ledger_output_tokens_nonnegative CHECK (output_tokens >= 0),
  ADD CONSTRAINT usage_ledger_occurred_after_epoch CHECK (occurred_at > 'epoch'::timestamptz);

-- A rollup row exists because at least one request was recorded.
ALTER TABLE usage_hourly
  ADD CONSTRAINT usage_hourly_org_present CHECK (org_id <> ''),
  ADD CONSTRAINT usage_hourly_requests_positive CHECK (requests > 0),
  ADD CONSTRAINT usage_hourly_input_tokens_nonnegative CHECK (input_tokens >= 0),
  ADD CONSTRAINT usage_hourly_output_tokens_nonnegative CHECK (output_tokens >= 0);

ALTER TABLE consumer_offsets
  ADD CONSTRAINT consumer_offsets_partition_nonnegative CHECK (partition >= 0),
  ADD CONSTRAINT consumer_offsets_next_offset_nonnegative CHECK (next_offset >= 0);

ALTER TABLE prices
  ADD CONSTRAINT prices_input_nonnegative CHECK (input_per_mtok_micros >= 0),
  ADD CONSTRAINT prices_output_nonnegative CHECK (output_per_mtok_micros >= 0);
