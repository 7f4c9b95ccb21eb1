-- Fewer bytes per consent record (issue 13, item 4), after 0160: the
-- ledger, current-state and outbox rows name their subject, purpose,
-- channel, action and states by numbers.
--
-- * The subject's 36-character uid was stored three times per consent
--   record (the ledger row, its by-subject index and the current-state
--   row), about 110 of the 460 bytes a record took; a number of three or
--   four bytes takes its place.
-- * Purposes, channels, actions and states are few distinct strings
--   repeated in every row (about 50 bytes a record): each is stored once in
--   `terms` and the rows hold its number (one or two bytes).
--
-- Nothing hashed changes (entries are hashed over their canonical content,
-- which names all of these by their text as before).
--
-- The number is the subject's row number, now an explicit
-- `INTEGER PRIMARY KEY` (`no`): an implicit rowid may change in a `VACUUM`,
-- an explicit one never does, and it costs no byte more. Subjects are never
-- deleted (an erasure blanks the row), so a number names one subject for
-- good.
--
-- `ledger`, `consent_states` and `outbox` stay views that put the text
-- back (as they put the tenant's id back since 0160): every query reads
-- them as before; the consent writer (store/sql/ledger/sqlite.rs) writes
-- the rows. The views join `subjects` and `terms` with LEFT JOINs on their
-- primary keys, which SQLite leaves out of a query that does not read
-- their column (it cannot leave out an inner join): a count or a walk by
-- `seq` costs no lookup per row. A query on a subject's uid makes it an
-- inner join, subject first. A term column read through a view is
-- `COALESCE(term, the row's value)`: a row edited by hand to hold text
-- reads as that text (and a verification then finds the entry altered)
-- rather than as nothing.
--
-- `subjects.tenant` no longer references `tenants`: no code deletes a
-- tenant, and a row named by a hand-edited database's ledger may have a
-- tenant missing from `tenants` (0160 numbered those too); its subject is
-- given a row below rather than its rows being left behind.

-- The distinct purposes, channels, actions and states, numbered. The
-- states come first, with fixed numbers: `consent_states_expiry` is a
-- partial index on `state = 2` ('granted'), and the expiry job's query
-- (`DUE_EXPIRIES_SQLITE`) names the same number. Terms are never deleted.
CREATE TABLE terms (
    no    INTEGER PRIMARY KEY,
    term  TEXT NOT NULL UNIQUE
);
INSERT INTO terms (no, term) VALUES (1, 'unspecified'), (2, 'granted'), (3, 'denied'),
    (4, 'withdrawn'), (5, 'expired'), (6, 'erased'), (7, '');
INSERT OR IGNORE INTO terms (term)
    SELECT purpose FROM ledger_rows UNION SELECT channel FROM ledger_rows
    UNION SELECT action FROM ledger_rows UNION SELECT purpose FROM consent_state_rows
    UNION SELECT channel FROM consent_state_rows UNION SELECT state FROM consent_state_rows
    UNION SELECT before_state FROM outbox_rows UNION SELECT after_state FROM outbox_rows;

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
    purpose         INTEGER NOT NULL,   -- terms.no (as are channel and action)
    channel         INTEGER,
    action          INTEGER NOT NULL,
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
    SELECT l.tenant_no, l.seq, l.part, l.pseq, s.no,
        (SELECT no FROM terms WHERE term = l.purpose), (SELECT no FROM terms WHERE term = l.channel),
        (SELECT no FROM terms WHERE term = l.action),
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
    SELECT t.id AS tenant, seq, part, pseq, subjects.uid AS subject_uid,
        COALESCE(purpose_term.term, ledger_rows.purpose) AS purpose,
        COALESCE(channel_term.term, ledger_rows.channel) AS channel,
        COALESCE(action_term.term, ledger_rows.action) AS action,
        notice_key, notice_version, notice_hash, source, actor, evidence_hash,
        evidence_kept, occurred_at, recorded_at, expires_at, receipt_id, prev_hash, hash,
        guardian
    FROM ledger_rows JOIN tenant_numbers t ON t.no = ledger_rows.tenant_no
    LEFT JOIN subjects ON subjects.no = ledger_rows.subject_no
    LEFT JOIN terms purpose_term ON purpose_term.no = ledger_rows.purpose
    LEFT JOIN terms channel_term ON channel_term.no = ledger_rows.channel
    LEFT JOIN terms action_term ON action_term.no = ledger_rows.action;

CREATE TABLE consent_states_numbered (
    tenant_no       INTEGER NOT NULL,   -- tenant_numbers.no
    subject_no      INTEGER NOT NULL,   -- subjects.no
    purpose         INTEGER NOT NULL,   -- terms.no (as are channel and state)
    channel         INTEGER NOT NULL,
    state           INTEGER NOT NULL,
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
    SELECT c.tenant_no, s.no, p.no, ch.no, st.no, c.seq, c.occurred_at,
        c.expires_at, c.notice_key, c.notice_version, c.source, c.guardian
    FROM consent_state_rows c JOIN subjects s ON s.uid = c.subject_uid
    JOIN terms p ON p.term = c.purpose JOIN terms ch ON ch.term = c.channel
    JOIN terms st ON st.term = c.state
    ORDER BY c.tenant_no, s.no, p.no, ch.no;
DROP VIEW consent_states;
DROP TABLE consent_state_rows;
ALTER TABLE consent_states_numbered RENAME TO consent_state_rows;
CREATE INDEX consent_states_expiry ON consent_state_rows (expires_at)
    WHERE state = 2 AND expires_at IS NOT NULL;   -- 2: 'granted' in terms
CREATE VIEW consent_states AS
    SELECT t.id AS tenant, subjects.uid AS subject_uid,
        COALESCE(purpose_term.term, consent_state_rows.purpose) AS purpose,
        COALESCE(channel_term.term, consent_state_rows.channel) AS channel,
        COALESCE(state_term.term, consent_state_rows.state) AS state,
        seq, occurred_at, expires_at, notice_key, notice_version, source, guardian
    FROM consent_state_rows JOIN tenant_numbers t ON t.no = consent_state_rows.tenant_no
    LEFT JOIN subjects ON subjects.no = consent_state_rows.subject_no
    LEFT JOIN terms purpose_term ON purpose_term.no = consent_state_rows.purpose
    LEFT JOIN terms channel_term ON channel_term.no = consent_state_rows.channel
    LEFT JOIN terms state_term ON state_term.no = consent_state_rows.state;

CREATE TABLE outbox_numbered (
    tenant_no    INTEGER NOT NULL,      -- tenant_numbers.no
    seq          INTEGER NOT NULL,
    before_state INTEGER NOT NULL,      -- terms.no
    after_state  INTEGER NOT NULL,      -- terms.no
    PRIMARY KEY (tenant_no, seq)
) WITHOUT ROWID;
INSERT INTO outbox_numbered (tenant_no, seq, before_state, after_state)
    SELECT o.tenant_no, o.seq, b.no, a.no
    FROM outbox_rows o JOIN terms b ON b.term = o.before_state JOIN terms a ON a.term = o.after_state
    ORDER BY o.tenant_no, o.seq;
DROP VIEW outbox;
DROP TABLE outbox_rows;
ALTER TABLE outbox_numbered RENAME TO outbox_rows;
CREATE VIEW outbox AS
    SELECT t.id AS tenant, seq,
        COALESCE(before_term.term, outbox_rows.before_state) AS before_state,
        COALESCE(after_term.term, outbox_rows.after_state) AS after_state
    FROM outbox_rows JOIN tenant_numbers t ON t.no = outbox_rows.tenant_no
    LEFT JOIN terms before_term ON before_term.no = outbox_rows.before_state
    LEFT JOIN terms after_term ON after_term.no = outbox_rows.after_state;
