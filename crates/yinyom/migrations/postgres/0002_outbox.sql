-- Transactional outbox: one row per ledger entry, written in the same
-- transaction, read by the dispatchers (webhooks, NATS) and the event stream.
CREATE TABLE outbox (
    tenant       TEXT NOT NULL,
    seq          BIGINT NOT NULL,      -- the ledger entry's seq
    subject_uid  TEXT NOT NULL,
    purpose      TEXT NOT NULL,
    kind         TEXT NOT NULL,      -- consent.granted, consent.withdrawn, ...
    before_state TEXT NOT NULL,      -- the state in force before the entry
    after_state  TEXT NOT NULL,      -- and after it (the rest of the event is the ledger row)
    created_at   BIGINT NOT NULL,
    PRIMARY KEY (tenant, seq)
);

CREATE TABLE webhooks (
    tenant       TEXT NOT NULL REFERENCES tenants(id),
    id           TEXT NOT NULL,
    url          TEXT NOT NULL,
    events       TEXT NOT NULL,      -- JSON list of event types; empty = all
    purposes     TEXT NOT NULL,      -- JSON list of purpose keys; empty = all
    description  TEXT NOT NULL,
    secret       TEXT NOT NULL,      -- whsec_… (Standard Webhooks)
    cursor       BIGINT NOT NULL,      -- outbox seq up to which deliveries exist
    created_at   BIGINT NOT NULL,
    deleted_at   BIGINT,
    PRIMARY KEY (tenant, id)
);

-- One row per (endpoint, event): pending until delivered or dead.
CREATE TABLE webhook_deliveries (
    tenant         TEXT NOT NULL,
    webhook        TEXT NOT NULL,
    seq            BIGINT NOT NULL,
    subject_uid    TEXT NOT NULL,
    status         TEXT NOT NULL,    -- pending, delivered, dead
    attempts       BIGINT NOT NULL,
    next_at        BIGINT NOT NULL,
    last_code      BIGINT,
    last_error     TEXT,
    created_at     BIGINT NOT NULL,
    updated_at     BIGINT NOT NULL,
    PRIMARY KEY (tenant, webhook, seq)
);
CREATE INDEX deliveries_due ON webhook_deliveries (status, next_at);
CREATE INDEX deliveries_by_subject ON webhook_deliveries (tenant, webhook, subject_uid, seq);

-- How far each sink (NATS) has published each tenant's outbox.
CREATE TABLE sink_cursors (
    sink    TEXT NOT NULL,
    tenant  TEXT NOT NULL,
    seq     BIGINT NOT NULL,
    PRIMARY KEY (sink, tenant)
);
