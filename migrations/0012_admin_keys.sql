-- Admin keys (issue 13): `sbadmin create-key ORG --admin` makes a key for
-- the org's Admin API routes (usage and cost reports,
-- /v1/organizations/...), which ordinary keys cannot call; an admin key
-- cannot call the inference or chat routes.
ALTER TABLE api_keys ADD COLUMN admin boolean NOT NULL DEFAULT false;
