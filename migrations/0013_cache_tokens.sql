-- Prompt-cache accounting (issue 13): of a request's input tokens (every
-- prompt token), those read from the engine's prompt cache and those written
-- to it; billed at the model's cache read and write prices, the rest of the
-- input at the input price.
ALTER TABLE usage_ledger
  ADD COLUMN cache_read_tokens bigint NOT NULL DEFAULT 0,
  ADD COLUMN cache_write_tokens bigint NOT NULL DEFAULT 0,
  ADD CONSTRAINT usage_ledger_cache_tokens_within_input
    CHECK (cache_read_tokens >= 0 AND cache_write_tokens >= 0
           AND cache_read_tokens + cache_write_tokens <= input_tokens);

ALTER TABLE usage_hourly
  ADD COLUMN cache_read_tokens bigint NOT NULL DEFAULT 0,
  ADD COLUMN cache_write_tokens bigint NOT NULL DEFAULT 0,
  ADD CONSTRAINT usage_hourly_cache_tokens_nonnegative
    CHECK (cache_read_tokens >= 0 AND cache_write_tokens >= 0);
