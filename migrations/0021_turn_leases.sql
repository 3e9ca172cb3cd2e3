-- Turns survive their chat replica (issue 10): a reply in progress is
-- leased by the replica that runs it, which renews the lease while it runs;
-- once the lease has expired (the replica died) another replica takes the
-- turn over and continues it. Replies written before this have no lease and
-- are never taken over.
ALTER TABLE messages ADD COLUMN lease_owner text, ADD COLUMN lease_until timestamptz;
CREATE INDEX messages_leases ON messages (lease_until) WHERE status = 'in_progress';
