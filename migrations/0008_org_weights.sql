-- Fairness weights (issue 9): when a model's capacity is short, every
-- backlogged org gets a share of the tokens served proportional to its
-- weight (set with `sbadmin set-org ORG --weight=N [--tier=NAME]`). The
-- tenant scheduler reloads weights, tiers and concurrency caps every couple
-- of seconds.
--
-- 0001 already had orgs.fair_share_weight (an integer nothing read) and
-- orgs.tier (a label, default 'standard'). The weight becomes a real number
-- named `weight`, keeping any value already set by hand; a weight is > 0 and
-- finite (PostgreSQL sorts NaN above 'Infinity', so one bound excludes both).
-- The tier stays a label: it does not imply a weight.
ALTER TABLE orgs RENAME COLUMN fair_share_weight TO weight;
ALTER TABLE orgs ALTER COLUMN weight TYPE double precision;
ALTER TABLE orgs RENAME CONSTRAINT orgs_fair_share_weight_check TO orgs_weight_positive;
ALTER TABLE orgs ADD CONSTRAINT orgs_weight_finite CHECK (weight < 'Infinity'::double precision);

-- When a row last changed, whoever changed it (sbadmin or a hand-written
-- UPDATE): readers can tell what changed since they last looked.
ALTER TABLE orgs ADD COLUMN updated_at timestamptz NOT NULL DEFAULT clock_timestamp();

CREATE FUNCTION orgs_touch_updated_at() RETURNS trigger AS $$
BEGIN
  NEW.updated_at := clock_timestamp();
  RETURN NEW;
END
$$ LANGUAGE plpgsql;

CREATE TRIGGER orgs_updated_at BEFORE UPDATE ON orgs
  FOR EACH ROW EXECUTE FUNCTION orgs_touch_updated_at();

CREATE INDEX orgs_updated ON orgs (updated_at);
