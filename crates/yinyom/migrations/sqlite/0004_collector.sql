-- The consent-gated tracking collector: sources (write keys) and the
-- events they were allowed to store.

CREATE TABLE sources (
    tenant        TEXT NOT NULL REFERENCES tenants(id),
    id            TEXT NOT NULL,
    name          TEXT NOT NULL,
    key_hash      TEXT NOT NULL UNIQUE,  -- SHA-256 of the write key
    key_prefix    TEXT NOT NULL,
    purposes      TEXT NOT NULL,         -- JSON list: every one must allow an event
    store_events  INTEGER NOT NULL,
    forward       INTEGER NOT NULL,         -- publish allowed events to NATS
    accepted      INTEGER NOT NULL DEFAULT 0,
    dropped       INTEGER NOT NULL DEFAULT 0,
    created_at    INTEGER NOT NULL,
    deleted_at    INTEGER,
    PRIMARY KEY (tenant, id)
);

-- Only events whose subject's tracking purposes allowed them; kept until
-- the shortest retention of those purposes ends.
CREATE TABLE events (
    tenant       TEXT NOT NULL,
    id           TEXT NOT NULL,          -- the message id (retries are stored once)
    source       TEXT NOT NULL,
    subject_uid  TEXT NOT NULL,
    type         TEXT NOT NULL,          -- track, page, identify, alias
    name         TEXT,                   -- the event or page name
    body         TEXT NOT NULL,          -- the message as received (JSON)
    occurred_at  INTEGER NOT NULL,
    received_at  INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL,
    PRIMARY KEY (tenant, id)
);
CREATE INDEX events_by_subject ON events (tenant, subject_uid, occurred_at);
CREATE INDEX events_by_name ON events (tenant, name, occurred_at);
CREATE INDEX events_by_expiry ON events (expires_at);
