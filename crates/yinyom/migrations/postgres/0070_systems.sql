-- Connected systems (issue 14): the tenant's own databases and teams that
-- rights requests and consent changes reach, with their data map.
CREATE TABLE systems (
    tenant      TEXT NOT NULL REFERENCES tenants(id),
    key         TEXT NOT NULL,
    name        TEXT NOT NULL,
    kind        TEXT NOT NULL,          -- postgres, mysql, http, manual
    config      TEXT NOT NULL,          -- JSON: the data map and settings, no secrets
    secret      BYTEA,                   -- the connection URL, sealed with the tenant key
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL,
    PRIMARY KEY (tenant, key)
);

-- What a rights request does in each connected system, and how far it got.
CREATE TABLE request_systems (
    tenant       TEXT NOT NULL,
    request_id   TEXT NOT NULL,
    system       TEXT NOT NULL,
    status       TEXT NOT NULL,          -- pending, running, done, failed, manual
    rows         BIGINT NOT NULL DEFAULT 0,
    error        TEXT,
    attempts     BIGINT NOT NULL DEFAULT 0,
    next_at      BIGINT,                -- due (pending, failed) or lease end (running)
    finished_at  BIGINT,
    detail       TEXT,                   -- JSON: per table action, rows, reason; staff note
    payload      BYTEA,                   -- sealed: the subject's identifiers, corrections; dropped when done
    result       BYTEA,                   -- sealed: rows collected for an access request
    updated_at   BIGINT NOT NULL,
    PRIMARY KEY (tenant, request_id, system)
);
CREATE INDEX request_systems_due ON request_systems (next_at) WHERE next_at IS NOT NULL;

-- Consent changes carried to each system's consent columns, per subject.
CREATE TABLE consent_propagations (
    tenant       TEXT NOT NULL,
    subject_uid  TEXT NOT NULL,
    system       TEXT NOT NULL,
    status       TEXT NOT NULL,          -- pending, running, done, failed
    rows         BIGINT NOT NULL DEFAULT 0,
    error        TEXT,
    attempts     BIGINT NOT NULL DEFAULT 0,
    next_at      BIGINT,
    finished_at  BIGINT,
    payload      BYTEA,                   -- sealed: identifiers and the values to set
    updated_at   BIGINT NOT NULL,
    PRIMARY KEY (tenant, subject_uid, system)
);
CREATE INDEX consent_propagations_due ON consent_propagations (next_at) WHERE next_at IS NOT NULL;
