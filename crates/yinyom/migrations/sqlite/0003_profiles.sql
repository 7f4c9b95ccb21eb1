-- Profiles encrypted per subject (see src/vault.rs), lookups by keyed hash,
-- and the audit log of clear-text reads of personal data.

-- A random key per tenant, wrapped by the master key (never stored here).
CREATE TABLE tenant_keys (
    tenant      TEXT PRIMARY KEY REFERENCES tenants(id),
    master_id   TEXT NOT NULL,          -- fingerprint of the master key that wraps it
    wrapped     BLOB NOT NULL,
    created_at  INTEGER NOT NULL
);

-- The subject's data key (wrapped by the tenant key) and its sealed profile.
-- The clear identifiers/attributes columns of 0001 are emptied at start-up.
ALTER TABLE subjects ADD COLUMN data_key BLOB;
ALTER TABLE subjects ADD COLUMN profile BLOB;
ALTER TABLE subjects ADD COLUMN profile_rev INTEGER NOT NULL DEFAULT 0;

-- HMAC-SHA-256 of normalised identifiers (email, phone, line_id,
-- customer_id, anonymous_id) under a per-tenant key.
CREATE TABLE subject_lookups (
    tenant  TEXT NOT NULL,
    kind    TEXT NOT NULL,
    hash    TEXT NOT NULL,
    uid     TEXT NOT NULL,
    PRIMARY KEY (tenant, kind, hash, uid)
);
CREATE INDEX subject_lookups_by_uid ON subject_lookups (tenant, uid);

CREATE TABLE audit_log (
    id INTEGER PRIMARY KEY,
    tenant       TEXT NOT NULL,
    at           INTEGER NOT NULL,
    actor        TEXT NOT NULL,
    subject_uid  TEXT NOT NULL,
    fields       TEXT NOT NULL,         -- JSON list of the fields shown in clear
    context      TEXT NOT NULL
);
CREATE INDEX audit_log_by_tenant ON audit_log (tenant, id);
