-- Budgets (issue 13): a monthly spending limit per org and per API key, in
-- micro-dollars (`sbadmin budget set ORG [--key=KEY_ID] --monthly=500.00`).
-- Gateways refuse new requests of an org or key whose month's spend has
-- reached its budget (402 billing_error); billing records an alert at 80 %
-- and 100 % and publishes it on Kafka billing.alerts.

-- Which API key a request came in with ('' for chat turns and events from
-- workers older than this migration).
ALTER TABLE usage_ledger ADD COLUMN api_key_id text NOT NULL DEFAULT '';

-- Each month's spend (UTC, by the month a request started in) per org
-- (key_id '') and per org and key, kept by billing in the same transaction
-- as the ledger rows, so it is exact; gateways read it every second.
CREATE TABLE spend_monthly (
  org_id       text NOT NULL,
  key_id       text NOT NULL,
  month        date NOT NULL CHECK (extract(day from month) = 1),
  cost_micros  bigint NOT NULL CHECK (cost_micros >= 0),
  PRIMARY KEY (org_id, key_id, month)
);

CREATE TABLE budgets (
  org_id          text NOT NULL REFERENCES orgs(id),
  key_id          text NOT NULL DEFAULT '',  -- '': the whole org
  monthly_micros  bigint NOT NULL CHECK (monthly_micros > 0),
  updated_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
  PRIMARY KEY (org_id, key_id)
);

-- One row per budget, month and threshold crossed: written with the ledger
-- rows that crossed it, then published to billing.alerts (an outbox:
-- published_at is set once Kafka has it, and billing publishes what is left
-- when it starts).
CREATE TABLE budget_alerts (
  org_id          text NOT NULL,
  key_id          text NOT NULL,
  month           date NOT NULL,
  percent         integer NOT NULL CHECK (percent IN (80, 100)),
  spend_micros    bigint NOT NULL,
  budget_micros   bigint NOT NULL,
  created_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
  published_at    timestamptz,
  PRIMARY KEY (org_id, key_id, month, percent)
);
CREATE INDEX budget_alerts_unpublished ON budget_alerts (created_at) WHERE published_at IS NULL;
