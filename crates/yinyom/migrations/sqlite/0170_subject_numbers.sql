-- Fewer bytes per consent record (issue 13, item 4), after 0160: the
-- ledger and current-state rows name their subject by a number instead of
-- its 36-character uid. The uid was stored three times per consent record
-- (the ledger row, its by-subject index and the current-state row), about
-- 110 of the 460 bytes a record took; a number of three or four bytes takes
-- its place. Nothing hashed changes (entries are hashed over their
-- canonical content, which names the subject by uid as before).
--
-- The number is the subject's row number, now an explicit
-- `INTEGER PRIMARY KEY` (`no`): an implicit rowid may change in a `VACUUM`,
-- an explicit one never does, and it costs no byte more. Subjects are never
-- deleted (an erasure blanks the row), so a number names one subject for
-- good.
--
-- `ledger` and `consent_states` stay views that put the uid back (as they
-- put the tenant's id back since 0160): every query reads them as before;
-- the consent writer (store/sql/ledger/sqlite.rs) writes the rows. The
-- views join `subjects` with a LEFT JOIN on its primary key, which SQLite
-- leaves out of a query that does not read the uid (it cannot leave out
-- an inner join): a count or a walk by `seq` costs no lookup per row. A
-- query on a subject's uid makes it an inner join, subject first.
--
-- `subjects.tenant` no longer references `tenants`: no code deletes a
-- tenant, and a row named by a hand-edited database's ledger may have a
-- tenant missing from `tenants` (0160 numbered those too); its subject is
-- given a row below rather than its rows being left behind.

CREATE TABLE subjects_numbered (
    no           INTEGER PRIMARY KEY,
    tenant       TEXT NOT NULL,
    id           TEXT NOT NULL,
    uid          TEXT NOT NULL UNIQUE,
    identifiers  TEXT NOT NULL DEFAULT '{}',
    attributes   TEXT NOT NULL DEFAULT '{}',
    flags        TEXT NOT NULL DEFAULT '{}',
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL,
    data_key     BLOB,
    profile      BLOB,
    profile_rev  INTEGER NOT NULL DEFAULT 0,
    UNIQUE (tenant, id)
);
INSERT INTO subjects_numbered (no, tenant, id, uid, identifiers, attributes, flags, created_at,
        updated_at, data_key, profile, profile_rev)
    SELECT rowid, tenant, id, uid, identifiers, attributes, flags, created_at, updated_at,
        data_key, profile, profile_rev
    FROM subjects ORDER BY rowid;
-- A subject the rows name but `subjects` does not (only a hand-edited
-- database has one): a row of its own, its uid as its id, so that its
-- entries and state are numbered and kept.
INSERT OR IGNORE INTO subjects_numbered (tenant, id, uid, created_at, updated_at)
    SELECT t.id, o.subject_uid, o.subject_uid, 0, 0
    FROM (SELECT DISTINCT tenant_no, subject_uid FROM ledger_rows
          UNION SELECT tenant_no, subject_uid FROM consent_state_rows) o
    JOIN tenant_numbers t ON t.no = o.tenant_no
    WHERE o.subject_uid NOT IN (SELECT uid FROM subjects_numbered);
DROP TABLE subjects;
ALTER TABLE subjects_numbered RENAME TO subjects;
CREATE INDEX subjects_by_updated ON subjects (updated_at);
CREATE INDEX subjects_flagged ON subjects (tenant) WHERE flags <> '{}';

CREATE TABLE ledger_numbered (
    tenant_no       INTEGER NOT NULL,   -- tenant_numbers.no
    seq             INTEGER NOT NULL,
    part            INTEGER NOT NULL,
    pseq            INTEGER NOT NULL,
    subject_no      INTEGER NOT NULL,   -- subjects.no
    purpose         TEXT NOT NULL,
    channel         TEXT,
    action          TEXT NOT NULL,
    notice_key      TEXT,
    notice_version  INTEGER,
    notice_hash     TEXT,
    source          TEXT NOT NULL,
    actor           TEXT NOT NULL,
    evidence_hash   BLOB,
    evidence_kept   INTEGER NOT NULL DEFAULT 0,  -- 1: `evidence` holds it for this entry
    occurred_at     INTEGER NOT NULL,
    recorded_at     INTEGER NOT NULL,
    expires_at      INTEGER,
    receipt_id      TEXT,
    prev_hash       BLOB NOT NULL,
    hash            BLOB NOT NULL,
    guardian        INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_no, seq)
);
INSERT INTO ledger_numbered (tenant_no, seq, part, pseq, subject_no, purpose, channel, action,
        notice_key, notice_version, notice_hash, source, actor, evidence_hash, evidence_kept,
        occurred_at, recorded_at, expires_at, receipt_id, prev_hash, hash, guardian)
    SELECT l.tenant_no, l.seq, l.part, l.pseq, s.no, l.purpose, l.channel, l.action,
        l.notice_key, l.notice_version, l.notice_hash, l.source, l.actor, l.evidence_hash,
        l.evidence_kept, l.occurred_at, l.recorded_at, l.expires_at, l.receipt_id, l.prev_hash,
        l.hash, l.guardian
    FROM ledger_rows l JOIN subjects s ON s.uid = l.subject_uid
    ORDER BY l.tenant_no, l.seq;
DROP VIEW ledger;
DROP TABLE ledger_rows;
ALTER TABLE ledger_numbered RENAME TO ledger_rows;
CREATE INDEX ledger_by_subject ON ledger_rows (tenant_no, subject_no, seq);
CREATE UNIQUE INDEX ledger_by_part ON ledger_rows (part, tenant_no, pseq);
CREATE VIEW ledger AS
    SELECT t.id AS tenant, seq, part, pseq, subjects.uid AS subject_uid, purpose, channel,
        action, notice_key, notice_version, notice_hash, source, actor, evidence_hash,
        evidence_kept, occurred_at, recorded_at, expires_at, receipt_id, prev_hash, hash,
        guardian
    FROM ledger_rows JOIN tenant_numbers t ON t.no = ledger_rows.tenant_no
    LEFT JOIN subjects ON subjects.no = ledger_rows.subject_no;

CREATE TABLE consent_states_numbered (
    tenant_no       INTEGER NOT NULL,   -- tenant_numbers.no
    subject_no      INTEGER NOT NULL,   -- subjects.no
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
    PRIMARY KEY (tenant_no, subject_no, purpose, channel)
) WITHOUT ROWID;
INSERT INTO consent_states_numbered (tenant_no, subject_no, purpose, channel, state, seq,
        occurred_at, expires_at, notice_key, notice_version, source, guardian)
    SELECT c.tenant_no, s.no, c.purpose, c.channel, c.state, c.seq, c.occurred_at,
        c.expires_at, c.notice_key, c.notice_version, c.source, c.guardian
    FROM consent_state_rows c JOIN subjects s ON s.uid = c.subject_uid
    ORDER BY c.tenant_no, s.no, c.purpose, c.channel;
DROP VIEW consent_states;
DROP TABLE consent_state_rows;
ALTER TABLE consent_states_numbered RENAME TO consent_state_rows;
CREATE INDEX consent_states_expiry ON consent_state_rows (expires_at)
    WHERE state = 'granted' AND expires_at IS NOT NULL;
CREATE VIEW consent_states AS
    SELECT t.id AS tenant, subjects.uid AS subject_uid, purpose, channel, state, seq,
        occurred_at, expires_at, notice_key, notice_version, source, guardian
    FROM consent_state_rows JOIN tenant_numbers t ON t.no = consent_state_rows.tenant_no
    LEFT JOIN subjects ON subjects.no = consent_state_rows.subject_no;
