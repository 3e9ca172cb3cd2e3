-- Prices and cost (issue 13). A model's price per million tokens (in
-- micro-dollars: $3.00 is 3000000) for input, output, cache reads and cache
-- writes, in force from `effective_from` until the model's next price
-- (`sbadmin price set MODEL --input=3.00 --output=15.00 [--from=DATE]`).
-- `model` is the model as the ledger names it (what the worker served).
-- Prices are history: rows are added, never changed.
CREATE TABLE model_prices (
  model                        text NOT NULL CHECK (model <> ''),
  effective_from               timestamptz NOT NULL,
  input_per_mtok_micros        bigint NOT NULL CHECK (input_per_mtok_micros >= 0),
  output_per_mtok_micros       bigint NOT NULL CHECK (output_per_mtok_micros >= 0),
  cache_read_per_mtok_micros   bigint NOT NULL DEFAULT 0 CHECK (cache_read_per_mtok_micros >= 0),
  cache_write_per_mtok_micros  bigint NOT NULL DEFAULT 0 CHECK (cache_write_per_mtok_micros >= 0),
  created_at                   timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (model, effective_from)
);

-- 0001's `prices` (one undated price per model, which nothing read) becomes
-- each model's price since the beginning.
INSERT INTO model_prices (model, effective_from, input_per_mtok_micros, output_per_mtok_micros)
  SELECT model, '-infinity', input_per_mtok_micros, output_per_mtok_micros FROM prices
  WHERE model <> '';
DROP TABLE prices;

-- A request's cost at the price in force when it started (its first event's
-- time), in micro-dollars, set whenever its counts change; 0 for a model
-- without a price (billing counts those, sb_billing_unpriced_events_total).
-- The hourly rollup sums it.
ALTER TABLE usage_ledger
  ADD COLUMN cost_micros bigint NOT NULL DEFAULT 0 CHECK (cost_micros >= 0);
ALTER TABLE usage_hourly
  ADD COLUMN cost_micros bigint NOT NULL DEFAULT 0 CHECK (cost_micros >= 0);
