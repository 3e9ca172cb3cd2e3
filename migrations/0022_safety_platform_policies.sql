-- The platform's safety policy (issue 11), versioned like an org's (0014):
-- each `sbadmin safety set-policy --platform` (or SafetyAdmin/SetPolicy
-- with platform set) adds a version; the highest is in force. An org's own
-- policy is layered on it; an org without one has it alone. Append-only, so
-- a decision's recorded platform version always names its document.
CREATE TABLE safety_platform_policies (
  version    bigint      PRIMARY KEY CHECK (version > 0),
  document   jsonb       NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  created_by text        NOT NULL DEFAULT ''
);

CREATE FUNCTION safety_platform_policies_append_only() RETURNS trigger AS $$
BEGIN
  RAISE EXCEPTION 'safety_platform_policies is append-only: add a version instead';
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER safety_platform_policies_append_only
  BEFORE UPDATE OR DELETE ON safety_platform_policies
  FOR EACH ROW EXECUTE FUNCTION safety_platform_policies_append_only();

-- Each decision's platform policy version (0: the built-in default, and
-- every decision recorded before this migration).
ALTER TABLE safety_audit ADD COLUMN platform_policy_version bigint NOT NULL DEFAULT 0;
