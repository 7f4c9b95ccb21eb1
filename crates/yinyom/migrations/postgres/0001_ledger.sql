-- Yinyom schema for PostgreSQL: the same tables as the SQLite schema, the
-- same statements run on both. Times are microseconds since the Unix epoch.

CREATE TABLE tenants (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    body        TEXT NOT NULL,          -- JSON: dpo, jurisdictions, default_lang, policy_url
    created_at  BIGINT NOT NULL
);

CREATE TABLE api_keys (
    id          TEXT PRIMARY KEY,
    tenant      TEXT NOT NULL REFERENCES tenants(id),
    role        TEXT NOT NULL,
    label       TEXT NOT NULL,
    hash        TEXT NOT NULL UNIQUE,   -- SHA-256 of the key; the key itself is never stored
    prefix      TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    revoked_at  BIGINT
);

CREATE TABLE signing_keys (
    kid         TEXT PRIMARY KEY,
    secret      BYTEA NOT NULL,
    created_at  BIGINT NOT NULL
);

CREATE TABLE purposes (
    tenant      TEXT NOT NULL REFERENCES tenants(id),
    key         TEXT NOT NULL,
    body        TEXT NOT NULL,          -- JSON of the domain Purpose
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL,
    PRIMARY KEY (tenant, key)
);

CREATE TABLE notices (
    tenant        TEXT NOT NULL REFERENCES tenants(id),
    key           TEXT NOT NULL,
    version       BIGINT NOT NULL,
    body          TEXT NOT NULL,        -- JSON of the domain Notice
    content_hash  TEXT NOT NULL,
    material      BOOLEAN NOT NULL,
    published_at  BIGINT NOT NULL,
    PRIMARY KEY (tenant, key, version)
);

CREATE TABLE subjects (
    tenant       TEXT NOT NULL REFERENCES tenants(id),
    id           TEXT NOT NULL,
    uid          TEXT NOT NULL UNIQUE,
    identifiers  TEXT NOT NULL DEFAULT '{}',
    attributes   TEXT NOT NULL DEFAULT '{}',
    flags        TEXT NOT NULL DEFAULT '{}',
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL,
    PRIMARY KEY (tenant, id)
);

-- The append-only, hash-chained consent ledger: one chain per tenant.
CREATE TABLE ledger (
    tenant          TEXT NOT NULL REFERENCES tenants(id),
    seq             BIGINT NOT NULL,
    subject_uid     TEXT NOT NULL,
    purpose         TEXT NOT NULL,
    channel         TEXT,
    action          TEXT NOT NULL,
    notice_key      TEXT,
    notice_version  BIGINT,
    notice_hash     TEXT,
    source          TEXT NOT NULL,
    actor           TEXT NOT NULL,
    evidence_hash   TEXT,
    evidence        TEXT,               -- JSON; erasable, its hash stays in the chain
    occurred_at     BIGINT NOT NULL,
    recorded_at     BIGINT NOT NULL,
    expires_at      BIGINT,
    receipt_id      TEXT,               -- the signed receipt handed out for this grant
    prev_hash       TEXT NOT NULL,
    hash            TEXT NOT NULL,
    PRIMARY KEY (tenant, seq)
);
CREATE INDEX ledger_by_subject ON ledger (tenant, subject_uid, seq);

CREATE TABLE ledger_heads (
    tenant  TEXT PRIMARY KEY REFERENCES tenants(id),
    seq     BIGINT NOT NULL,
    hash    TEXT NOT NULL
);

-- Current state per (subject, purpose, channel); '' is the purpose-wide channel.
CREATE TABLE consent_states (
    tenant          TEXT NOT NULL,
    subject_uid     TEXT NOT NULL,
    purpose         TEXT NOT NULL,
    channel         TEXT NOT NULL,
    state           TEXT NOT NULL,
    seq             BIGINT NOT NULL,
    occurred_at     BIGINT NOT NULL,
    expires_at      BIGINT,
    notice_key      TEXT,
    notice_version  BIGINT,
    source          TEXT NOT NULL,
    PRIMARY KEY (tenant, subject_uid, purpose, channel)
);

CREATE TABLE receipts (
    tenant       TEXT NOT NULL,
    id           TEXT NOT NULL,
    subject_uid  TEXT NOT NULL,
    jws          TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    PRIMARY KEY (tenant, id)
);
CREATE INDEX receipts_by_subject ON receipts (tenant, subject_uid);

CREATE TABLE idempotency_keys (
    tenant        TEXT NOT NULL,
    key           TEXT NOT NULL,
    request_hash  TEXT NOT NULL,
    response      TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    PRIMARY KEY (tenant, key)
);
