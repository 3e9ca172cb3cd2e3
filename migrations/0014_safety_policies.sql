-- Per-org safety policies (issue 11): each `sbadmin safety set-policy` (or
-- SafetyAdmin/SetPolicy) adds a version; the highest is the org's policy.
-- Versions are never changed or removed, so a decision's recorded version
-- always names the document it was made under.
CREATE TABLE safety_policies (
  org_id     text        NOT NULL REFERENCES orgs(id),
  version    bigint      NOT NULL CHECK (version > 0),
  document   jsonb       NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  created_by text        NOT NULL DEFAULT '',
  PRIMARY KEY (org_id, version)
);

CREATE FUNCTION safety_policies_append_only() RETURNS trigger AS $$
BEGIN
  RAISE EXCEPTION 'safety_policies is append-only: add a version instead';
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER safety_policies_append_only
  BEFORE UPDATE OR DELETE ON safety_policies
  FOR EACH ROW EXECUTE FUNCTION safety_policies_append_only();
