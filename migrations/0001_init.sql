-- Switchboard schema, first version. Applied by `sbadmin migrate`, never by
-- hand; every file runs once, in name order, inside one transaction.

CREATE TABLE orgs (
  id                 text PRIMARY KEY,
  name               text NOT NULL,
  tier               text NOT NULL DEFAULT 'standard',
  fair_share_weight  integer NOT NULL DEFAULT 1 CHECK (fair_share_weight > 0),
  rpm_limit          integer,
  tpm_limit          integer,
  concurrency_limit  integer,
  monthly_budget_tokens bigint,
  created_at         timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE users (
  id          text NOT NULL,
  org_id      text NOT NULL REFERENCES orgs(id),
  name        text NOT NULL DEFAULT '',
  created_at  timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (org_id, id)
);

-- Only a prefix (to find and show the key) and the SHA-256 of the whole
-- secret are stored.
CREATE TABLE api_keys (
  id          text PRIMARY KEY,
  org_id      text NOT NULL REFERENCES orgs(id),
  user_id     text,
  prefix      text NOT NULL,
  secret_sha256 bytea NOT NULL UNIQUE,
  name        text NOT NULL DEFAULT '',
  created_at  timestamptz NOT NULL DEFAULT now(),
  revoked_at  timestamptz
);

CREATE TABLE conversations (
  id               text PRIMARY KEY,
  org_id           text NOT NULL REFERENCES orgs(id),
  user_id          text NOT NULL,
  title            text NOT NULL DEFAULT '',
  model            text NOT NULL,
  version          bigint NOT NULL DEFAULT 1,
  message_count    integer NOT NULL DEFAULT 0,
  created_at       timestamptz NOT NULL DEFAULT now(),
  last_message_at  timestamptz NOT NULL DEFAULT now(),
  archived_at      timestamptz,
  deleted_at       timestamptz
);
CREATE INDEX conversations_recent ON conversations (org_id, user_id, last_message_at DESC);

-- Hash-partitioned by conversation: a conversation's messages live together,
-- and the same key distributes the table on a distributed PostgreSQL.
CREATE TABLE messages (
  conversation_id    text NOT NULL,
  message_id         text NOT NULL,
  parent_id          text,
  role               text NOT NULL CHECK (role IN ('user', 'assistant')),
  content            text NOT NULL DEFAULT '',
  status             text NOT NULL DEFAULT 'complete',
  client_message_id  text,
  input_tokens       integer NOT NULL DEFAULT 0,
  output_tokens      integer NOT NULL DEFAULT 0,
  model              text NOT NULL DEFAULT '',
  safety_result      text NOT NULL DEFAULT '',
  stop_reason        text NOT NULL DEFAULT '',
  metadata           jsonb NOT NULL DEFAULT '{}',
  created_at         timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (conversation_id, message_id)
) PARTITION BY HASH (conversation_id);
CREATE TABLE messages_p0 PARTITION OF messages FOR VALUES WITH (MODULUS 4, REMAINDER 0);
CREATE TABLE messages_p1 PARTITION OF messages FOR VALUES WITH (MODULUS 4, REMAINDER 1);
CREATE TABLE messages_p2 PARTITION OF messages FOR VALUES WITH (MODULUS 4, REMAINDER 2);
CREATE TABLE messages_p3 PARTITION OF messages FOR VALUES WITH (MODULUS 4, REMAINDER 3);
-- The same client_message_id twice in a conversation is one message.
CREATE UNIQUE INDEX messages_client_id ON messages (conversation_id, client_message_id)
  WHERE client_message_id IS NOT NULL;

CREATE TABLE usage_ledger (
  request_id     text PRIMARY KEY,
  org_id         text NOT NULL,
  model          text NOT NULL,
  worker_id      text NOT NULL DEFAULT '',
  source         text NOT NULL DEFAULT '',
  input_tokens   integer NOT NULL,
  output_tokens  integer NOT NULL,
  stop_reason    text NOT NULL DEFAULT '',
  occurred_at    timestamptz NOT NULL,
  recorded_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX usage_ledger_org_time ON usage_ledger (org_id, occurred_at);

CREATE TABLE usage_hourly (
  org_id         text NOT NULL,
  model          text NOT NULL,
  hour           timestamptz NOT NULL,
  requests       bigint NOT NULL DEFAULT 0,
  input_tokens   bigint NOT NULL DEFAULT 0,
  output_tokens  bigint NOT NULL DEFAULT 0,
  PRIMARY KEY (org_id, model, hour)
);

CREATE TABLE prices (
  model                   text PRIMARY KEY,
  input_per_mtok_micros   bigint NOT NULL,
  output_per_mtok_micros  bigint NOT NULL
);

-- Kafka positions stored in the same transaction as the rows they produced.
CREATE TABLE consumer_offsets (
  consumer_group  text NOT NULL,
  topic           text NOT NULL,
  partition       integer NOT NULL,
  next_offset     bigint NOT NULL,
  PRIMARY KEY (consumer_group, topic, partition)
);

CREATE TABLE models (
  name         text PRIMARY KEY,
  alias_of     text,
  canary_of    text,
  canary_weight integer NOT NULL DEFAULT 0,
  created_at   timestamptz NOT NULL DEFAULT now()
);
