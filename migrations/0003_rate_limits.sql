-- Admission limits (issue 7): per org, optionally narrowed to one API key
-- and/or one model. A request passes every row that applies to it (the
-- org's, its model's, its key's, its key and model's). A NULL limit is no
-- limit; a row of NULLs limits nothing. Gateways poll rows by updated_at.
CREATE TABLE rate_limits (
  org_id       text NOT NULL REFERENCES orgs(id),
  key_id       text NOT NULL DEFAULT '',  -- '': every key of the org
  model        text NOT NULL DEFAULT '',  -- '': every model
  rpm          bigint CHECK (rpm > 0),
  input_tpm    bigint CHECK (input_tpm > 0),
  output_tpm   bigint CHECK (output_tpm > 0),
  concurrency  bigint CHECK (concurrency > 0),
  updated_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
  PRIMARY KEY (org_id, key_id, model)
);
CREATE INDEX rate_limits_updated ON rate_limits (updated_at);
