-- Ledger verifications run as jobs: progress and result, readable from any
-- node and kept across restarts. A job whose process died stops sending
-- heartbeats and is marked failed by the next reader.
CREATE TABLE verifications (
    tenant          TEXT NOT NULL REFERENCES tenants(id),
    id              TEXT NOT NULL,
    status          TEXT NOT NULL,      -- running, done, failed
    total           INTEGER NOT NULL,    -- the chain's length when it started
    checked         INTEGER NOT NULL,    -- entries verified so far
    ok              INTEGER,             -- 1 intact, 0 broken; NULL until done
    broken_seq      INTEGER,             -- the first altered, missing or unreadable entry
    broken_problem  TEXT,
    error           TEXT,               -- why a failed job failed
    started_by      TEXT NOT NULL,
    started_at      INTEGER NOT NULL,
    heartbeat_at    INTEGER NOT NULL,
    finished_at     INTEGER,
    PRIMARY KEY (tenant, id)
);
-- At most one running verification per tenant.
CREATE UNIQUE INDEX verifications_running ON verifications (tenant) WHERE status = 'running';
CREATE INDEX verifications_recent ON verifications (tenant, started_at);
