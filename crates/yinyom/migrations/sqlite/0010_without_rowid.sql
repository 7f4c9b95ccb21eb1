-- consent_states and outbox are keyed by their primary key alone: as rowid
-- tables SQLite kept each key twice (the table and an automatic index of
-- the key), about 170 bytes per consent record. WITHOUT ROWID tables are
-- stored in their primary key's B-tree. Same columns, same rows.

CREATE TABLE consent_states_new (
    tenant          TEXT NOT NULL,
    subject_uid     TEXT NOT NULL,
    purpose         TEXT NOT NULL,
    channel         TEXT NOT NULL,
    state           TEXT NOT NULL,
    seq             INTEGER NOT NULL,
    occurred_at     INTEGER NOT NULL,
    expires_at      INTEGER,
    notice_key      TEXT,
    notice_version  INTEGER,
    source          TEXT NOT NULL,
    guardian        INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant, subject_uid, purpose, channel)
) WITHOUT ROWID;
INSERT INTO consent_states_new (tenant, subject_uid, purpose, channel, state, seq, occurred_at,
        expires_at, notice_key, notice_version, source, guardian)
    SELECT tenant, subject_uid, purpose, channel, state, seq, occurred_at,
        expires_at, notice_key, notice_version, source, guardian
    FROM consent_states;
DROP TABLE consent_states;
ALTER TABLE consent_states_new RENAME TO consent_states;
CREATE INDEX consent_states_expiry ON consent_states (expires_at)
    WHERE state = 'granted' AND expires_at IS NOT NULL;

CREATE TABLE outbox_new (
    tenant       TEXT NOT NULL,
    seq          INTEGER NOT NULL,
    subject_uid  TEXT NOT NULL,
    purpose      TEXT NOT NULL,
    kind         TEXT NOT NULL,
    before_state TEXT NOT NULL,
    after_state  TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    PRIMARY KEY (tenant, seq)
) WITHOUT ROWID;
INSERT INTO outbox_new (tenant, seq, subject_uid, purpose, kind, before_state, after_state, created_at)
    SELECT tenant, seq, subject_uid, purpose, kind, before_state, after_state, created_at FROM outbox;
DROP TABLE outbox;
ALTER TABLE outbox_new RENAME TO outbox;
