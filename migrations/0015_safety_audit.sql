-- The safety audit trail (issue 11): every decision other than a plain
-- allow (flag, redact, block, throttle, fail_closed), consumed from Kafka
-- safety.audit by safety. One row per event_id: a redelivered event is
-- stored once. Never the checked text: offsets and a keyed hash of the span.
-- Rows are never changed; the only delete is retention's (--audit_retention),
-- and a row stored less than a day ago cannot be deleted at all (by the
-- database's clock, whatever time the event claims); TRUNCATE is refused.
CREATE TABLE safety_audit (
  event_id       text        PRIMARY KEY,
  -- No reference to orgs: a record outlives whatever it names.
  org_id         text        NOT NULL,
  end_user_id    text        NOT NULL DEFAULT '',
  request_id     text        NOT NULL DEFAULT '',
  direction      text        NOT NULL CHECK (direction IN ('input', 'output')),
  rule           text        NOT NULL,
  action         text        NOT NULL
                             CHECK (action IN ('flag', 'redact', 'block', 'throttle', 'fail_closed')),
  policy_version bigint      NOT NULL DEFAULT 0,
  span_start     integer     NOT NULL DEFAULT 0,
  span_end       integer     NOT NULL DEFAULT 0,
  span_hash      text        NOT NULL DEFAULT '',
  source         text        NOT NULL,
  decided_at     timestamptz NOT NULL,
  stored_at      timestamptz NOT NULL DEFAULT now()
);

-- `sbadmin safety audit ORG --since=...`: an org's decisions in id (time) order.
CREATE INDEX safety_audit_org_event ON safety_audit (org_id, event_id);
-- Retention deletes by age.
CREATE INDEX safety_audit_decided_at ON safety_audit (decided_at);

CREATE FUNCTION safety_audit_append_only() RETURNS trigger AS $$
BEGIN
  IF TG_OP = 'DELETE' AND OLD.stored_at < now() - interval '1 day' THEN
    RETURN OLD;
  END IF;
  RAISE EXCEPTION 'safety_audit is append-only (retention removes rows stored over a day ago)';
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER safety_audit_append_only
  BEFORE UPDATE OR DELETE ON safety_audit
  FOR EACH ROW EXECUTE FUNCTION safety_audit_append_only();

CREATE TRIGGER safety_audit_no_truncate
  BEFORE TRUNCATE ON safety_audit
  FOR EACH STATEMENT EXECUTE FUNCTION safety_audit_append_only();
