-- The model registry (issue 9). A version is immutable: the model workers
-- serve under it, its serving config and its safety policy version. An
-- alias names a stable version, the stable version before it (what a
-- rollback and an open circuit breaker fall back to) and optionally a
-- canary version that takes canary_weight percent of the alias's requests.
-- Written only by `sbadmin model ...` and the scheduler's ModelAdmin gRPC
-- service (services/tenant-scheduler/model_registry.cc); every scheduler
-- reloads the whole registry every couple of seconds. The `models` table of
-- 0001 predates this registry and is not read by it.
CREATE TABLE model_versions (
  version                text PRIMARY KEY CHECK (length(version) BETWEEN 1 AND 200),
  model                  text NOT NULL CHECK (length(model) BETWEEN 1 AND 200),
  serving_config         jsonb NOT NULL DEFAULT '{}'
                           CHECK (jsonb_typeof(serving_config) = 'object'),
  safety_policy_version  text NOT NULL DEFAULT '',
  created_at             timestamptz NOT NULL DEFAULT now()
);

-- What a response named as its model must keep meaning the same thing.
CREATE FUNCTION refuse_model_version_update() RETURNS trigger AS $$
BEGIN
  RAISE EXCEPTION 'model version % is immutable: create a new version instead', OLD.version
    USING ERRCODE = 'restrict_violation';
END
$$ LANGUAGE plpgsql;

CREATE TRIGGER model_versions_immutable BEFORE UPDATE ON model_versions
  FOR EACH ROW EXECUTE FUNCTION refuse_model_version_update();

CREATE TABLE model_aliases (
  alias                    text PRIMARY KEY CHECK (length(alias) BETWEEN 1 AND 200),
  stable_version           text NOT NULL REFERENCES model_versions(version),
  previous_stable_version  text REFERENCES model_versions(version),
  canary_version           text REFERENCES model_versions(version),
  canary_weight            integer NOT NULL DEFAULT 0 CHECK (canary_weight BETWEEN 0 AND 100),
  updated_at               timestamptz NOT NULL DEFAULT clock_timestamp(),
  CHECK ((canary_version IS NULL) = (canary_weight = 0)),
  CHECK (canary_version IS DISTINCT FROM stable_version)
);

-- Every change of an alias, as the alias stood after it. A rollback reads
-- it to find what the restored version had replaced. Kept without foreign
-- keys: it is an audit trail.
CREATE TABLE model_alias_history (
  id                       bigserial PRIMARY KEY,
  alias                    text NOT NULL,
  action                   text NOT NULL CHECK (action IN ('promote', 'canary', 'rollback')),
  stable_version           text NOT NULL,
  previous_stable_version  text,
  canary_version           text,
  canary_weight            integer NOT NULL,
  changed_at               timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX model_alias_history_alias ON model_alias_history (alias, id);
