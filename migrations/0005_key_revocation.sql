-- Revocation reaches every gateway within a second: every revocation (or
-- deletion) of an API key, whoever makes it, notifies the gateways that
-- LISTEN on api_key_revoked (payload: the key id).
CREATE FUNCTION notify_api_key_revoked() RETURNS trigger AS $$
BEGIN
  IF TG_OP = 'DELETE' THEN
    PERFORM pg_notify('api_key_revoked', OLD.id);
    RETURN OLD;
  END IF;
  PERFORM pg_notify('api_key_revoked', NEW.id);
  RETURN NEW;
END
$$ LANGUAGE plpgsql;

CREATE TRIGGER api_key_revoked AFTER UPDATE OF revoked_at ON api_keys
  FOR EACH ROW WHEN (NEW.revoked_at IS NOT NULL AND OLD.revoked_at IS NULL)
  EXECUTE FUNCTION notify_api_key_revoked();

CREATE TRIGGER api_key_deleted AFTER DELETE ON api_keys
  FOR EACH ROW EXECUTE FUNCTION notify_api_key_revoked();

-- A gateway (re)connecting catches up with recent revocations.
CREATE INDEX api_keys_revoked_at ON api_keys (revoked_at) WHERE revoked_at IS NOT NULL;
-- sbadmin list-keys ORG
CREATE INDEX api_keys_org ON api_keys (org_id, created_at);
