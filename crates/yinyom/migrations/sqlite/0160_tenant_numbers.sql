-- Fewer bytes per consent record (issue 13, item 4): the ledger, current
-- state and outbox rows name their tenant by a small number instead of its
-- 36-character id. The id was stored in six B-trees per consent record
-- (the ledger, its three indexes, consent_states and the outbox), about
-- 220 of the 700 bytes each record took; a number of one or two bytes
-- takes its place. Nothing hashed changes (entries are hashed over their
-- canonical content, which names the tenant by id as before).
--
-- An upgraded database file keeps the pages the old tables held, free for
-- new rows, until a `VACUUM` (which cannot run inside a migration) returns
-- them; a new one is small from the start.
--
-- `ledger`, `consent_states` and `outbox` stay, as views that put the
-- tenant's id back: every query reads them as before. They are read-only:
-- the consent writer (store/sql/ledger/sqlite.rs), an erasure and the
-- outbox's pruning write the tables (`ledger_rows`, `consent_state_rows`,
-- `outbox_rows`) themselves. (The views name those tables without an
-- alias, so that a query plan shows which of them it reads: tests/queries.rs
-- fails on a scan of one.)

-- A tenant's number. (A table of its own, keyed by the id, rather than a
-- column of `tenants`: looking a tenant up by id is then one seek of this
-- table's own B-tree, which SQLite's planner always prefers to scanning
-- it. On a rowid table the same seek costs an index and a table lookup,
-- and with one tenant in its statistics the planner scanned instead, and
-- then sorted a query's whole range to apply its ORDER BY … LIMIT.)
CREATE TABLE tenant_numbers (
    id  TEXT NOT NULL PRIMARY KEY,      -- tenants.id
    no  INTEGER NOT NULL UNIQUE
) WITHOUT ROWID;
INSERT INTO tenant_numbers (id, no) SELECT id, rowid FROM tenants;
-- A tenant named by rows but missing from `tenants` (`consent_states` and
-- `outbox` never had a foreign key; only a hand-edited database has such
-- rows) is numbered too, after the others: no row is left behind below.
INSERT INTO tenant_numbers (id, no)
    SELECT tenant, (SELECT COALESCE(MAX(no), 0) FROM tenant_numbers)
                   + ROW_NUMBER() OVER (ORDER BY tenant)
    FROM (SELECT tenant FROM ledger UNION SELECT tenant FROM consent_states
          UNION SELECT tenant FROM outbox)
    WHERE tenant NOT IN (SELECT id FROM tenant_numbers);
-- A new tenant is numbered after the last (SQLite has one writer at a time).
CREATE TRIGGER tenants_numbered AFTER INSERT ON tenants
BEGIN
    INSERT INTO tenant_numbers (id, no)
        VALUES (NEW.id, (SELECT COALESCE(MAX(no), 0) + 1 FROM tenant_numbers));
END;

CREATE TABLE ledger_rows (
    tenant_no       INTEGER NOT NULL,   -- tenant_numbers.no
    seq             INTEGER NOT NULL,
    part            INTEGER NOT NULL,
    pseq            INTEGER NOT NULL,
    subject_uid     TEXT NOT NULL,
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
INSERT INTO ledger_rows (tenant_no, seq, part, pseq, subject_uid, purpose, channel, action,
        notice_key, notice_version, notice_hash, source, actor, evidence_hash, evidence_kept,
        occurred_at, recorded_at, expires_at, receipt_id, prev_hash, hash, guardian)
    SELECT t.no, l.seq, l.part, l.pseq, l.subject_uid, l.purpose, l.channel, l.action,
        l.notice_key, l.notice_version, l.notice_hash, l.source, l.actor, l.evidence_hash,
        l.evidence_kept, l.occurred_at, l.recorded_at, l.expires_at, l.receipt_id, l.prev_hash,
        l.hash, l.guardian
    FROM ledger l JOIN tenant_numbers t ON t.id = l.tenant
    ORDER BY t.no, l.seq;
DROP TABLE ledger;
CREATE INDEX ledger_by_subject ON ledger_rows (tenant_no, subject_uid, seq);
CREATE UNIQUE INDEX ledger_by_part ON ledger_rows (part, tenant_no, pseq);
CREATE VIEW ledger AS
    SELECT t.id AS tenant, seq, part, pseq, subject_uid, purpose, channel, action, notice_key,
        notice_version, notice_hash, source, actor, evidence_hash, evidence_kept, occurred_at,
        recorded_at, expires_at, receipt_id, prev_hash, hash, guardian
    FROM ledger_rows JOIN tenant_numbers t ON t.no = ledger_rows.tenant_no;

CREATE TABLE consent_state_rows (
    tenant_no       INTEGER NOT NULL,   -- tenant_numbers.no
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
    PRIMARY KEY (tenant_no, subject_uid, purpose, channel)
) WITHOUT ROWID;
INSERT INTO consent_state_rows (tenant_no, subject_uid, purpose, channel, state, seq,
        occurred_at, expires_at, notice_key, notice_version, source, guardian)
    SELECT t.no, c.subject_uid, c.purpose, c.channel, c.state, c.seq, c.occurred_at,
        c.expires_at, c.notice_key, c.notice_version, c.source, c.guardian
    FROM consent_states c JOIN tenant_numbers t ON t.id = c.tenant
    ORDER BY t.no, c.subject_uid, c.purpose, c.channel;
DROP TABLE consent_states;
CREATE INDEX consent_states_expiry ON consent_state_rows (expires_at)
    WHERE state = 'granted' AND expires_at IS NOT NULL;
CREATE VIEW consent_states AS
    SELECT t.id AS tenant, subject_uid, purpose, channel, state, seq, occurred_at, expires_at,
        notice_key, notice_version, source, guardian
    FROM consent_state_rows JOIN tenant_numbers t ON t.no = consent_state_rows.tenant_no;

CREATE TABLE outbox_rows (
    tenant_no    INTEGER NOT NULL,      -- tenant_numbers.no
    seq          INTEGER NOT NULL,
    before_state TEXT NOT NULL,
    after_state  TEXT NOT NULL,
    PRIMARY KEY (tenant_no, seq)
) WITHOUT ROWID;
INSERT INTO outbox_rows (tenant_no, seq, before_state, after_state)
    SELECT t.no, o.seq, o.before_state, o.after_state
    FROM outbox o JOIN tenant_numbers t ON t.id = o.tenant
    ORDER BY t.no, o.seq;
DROP TABLE outbox;
CREATE VIEW outbox AS
    SELECT t.id AS tenant, seq, before_state, after_state
    FROM outbox_rows JOIN tenant_numbers t ON t.no = outbox_rows.tenant_no;
