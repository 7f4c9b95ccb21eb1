-- Data-subject rights requests (PDPA ss.30-36, GDPR Arts. 12-22).

CREATE TABLE rights_requests (
    tenant       TEXT NOT NULL REFERENCES tenants(id),
    id           TEXT NOT NULL,
    subject_uid  TEXT NOT NULL,
    kind         TEXT NOT NULL,          -- access, portability, rectification, erasure, ...
    status       TEXT NOT NULL,          -- received, verified, in_progress, completed, rejected
    purposes     TEXT NOT NULL,          -- JSON list (restriction, objection, withdrawal)
    changes      BLOB,                   -- rectification, sealed with the subject's key
    via          TEXT NOT NULL,          -- how it arrived
    received_at  INTEGER NOT NULL,
    due_at       INTEGER NOT NULL,
    extended     INTEGER NOT NULL DEFAULT 0,
    closed_at    INTEGER,
    steps        TEXT NOT NULL,          -- JSON list: who did what, when, why
    verification TEXT,                   -- JSON: the pending one-time code (hashed)
    updated_at   INTEGER NOT NULL,
    PRIMARY KEY (tenant, id)
);
CREATE INDEX rights_requests_by_due ON rights_requests (tenant, due_at);
CREATE INDEX rights_requests_by_subject ON rights_requests (tenant, subject_uid);

-- The lifecycle job's query: grants past their validity.
CREATE INDEX consent_states_expiry ON consent_states (expires_at)
    WHERE state = 'granted' AND expires_at IS NOT NULL;

-- The breach register (PDPA s.37(4), GDPR Arts. 33-34).
CREATE TABLE breaches (
    tenant            TEXT NOT NULL REFERENCES tenants(id),
    id                TEXT NOT NULL,
    discovered_at     INTEGER NOT NULL,
    body              TEXT NOT NULL,      -- JSON: description, categories, risk, notifications, ...
    created_at        INTEGER NOT NULL,
    updated_at        INTEGER NOT NULL,
    PRIMARY KEY (tenant, id)
);

-- Subjects whose data came from someone else (PDPA s.25): the source, when
-- it was acquired, and the notice given to the subject (due in 30 days).
CREATE TABLE acquisitions (
    tenant        TEXT NOT NULL REFERENCES tenants(id),
    subject_uid   TEXT NOT NULL,
    source        TEXT NOT NULL,
    acquired_at   INTEGER NOT NULL,
    due_at        INTEGER NOT NULL,
    notified_at   INTEGER,
    method        TEXT,                 -- email, sms, letter, ...
    notice        TEXT,                 -- notice key@version shown
    recorded_by   TEXT NOT NULL,
    updated_at    INTEGER NOT NULL,
    PRIMARY KEY (tenant, subject_uid)
);
CREATE INDEX acquisitions_by_due ON acquisitions (tenant, due_at);

-- A guardian gave or joined the consent (PDPA s.20); hashed in the chain
-- only when set.
ALTER TABLE ledger ADD COLUMN guardian INTEGER NOT NULL DEFAULT 0;
ALTER TABLE consent_states ADD COLUMN guardian INTEGER NOT NULL DEFAULT 0;

-- Double opt-in: a grant held until the subject confirms it by link.
CREATE TABLE opt_ins (
    tenant        TEXT NOT NULL REFERENCES tenants(id),
    id            TEXT NOT NULL,
    subject_id    TEXT NOT NULL,
    request       BLOB NOT NULL,          -- the consent request, sealed with the tenant key
    actor         TEXT NOT NULL,
    channel       TEXT NOT NULL,
    message       TEXT NOT NULL,        -- the confirmation message
    created_at    INTEGER NOT NULL,
    expires_at    INTEGER NOT NULL,
    confirmed_at  INTEGER,
    PRIMARY KEY (tenant, id)
);
