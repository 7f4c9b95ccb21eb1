-- Consent choices counted per day as they are written, for the console's
-- chart of the last 30 days: reading them from the ledger grouped every
-- entry of the tenant (2.3 s at 1 million records, minutes at 50 million)
-- on each view of the dashboard. Each row names a ledger partition (on
-- PostgreSQL, one the writing batch holds the lock of, so that concurrent
-- writers never wait on a counter); SQLite has one writer, so here every
-- count is in partition 0. No personal data: counts per purpose, channel
-- and action.
CREATE TABLE choice_days (
    tenant  TEXT NOT NULL,
    day     INTEGER NOT NULL,   -- occurred_at / 86400000000: days since 1970 (UTC)
    purpose TEXT NOT NULL,
    channel TEXT NOT NULL,      -- '' for a choice that covers every channel
    action  TEXT NOT NULL,
    part    INTEGER NOT NULL,   -- the ledger partition of the entries counted (0 here)
    n       INTEGER NOT NULL,
    PRIMARY KEY (tenant, day, purpose, channel, action, part)
) WITHOUT ROWID;

INSERT INTO choice_days (tenant, day, purpose, channel, action, part, n)
    SELECT tenant, occurred_at / 86400000000, purpose, COALESCE(channel, ''), action, 0,
           COUNT(*)
    FROM ledger
    GROUP BY tenant, occurred_at / 86400000000, purpose, COALESCE(channel, ''), action;
