-- Workers report usage ahead of delivery (a token reaches the client only
-- once a report covering it is stored), so a running report may hold more
-- than the request ends with. The final report is the exact figure: once a
-- row has it, it is settled and later reports (redeliveries) change nothing.
-- Rows from before this migration count as not settled: a later report can
-- still only raise them, as before.
ALTER TABLE usage_ledger ADD COLUMN final boolean NOT NULL DEFAULT false;
