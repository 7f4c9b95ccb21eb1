-- Fewer bytes per consent record (issue 13, item 4). Nothing hashed changes:
-- a hash is computed over canonical content, and each stored hash reads
-- back as the same 64 hex digits, so every chain verifies as before.
--
-- ledger: `hash`, `prev_hash` and `evidence_hash` as 32-byte blobs instead
-- of 64-character hex; the evidence itself stored once per distinct value
-- in `evidence` (keyed by its hash, which the chain already holds), the row
-- keeping only whether its evidence is still kept (`evidence_kept`, unset
-- by an erasure). (It stays a rowid table: as a WITHOUT ROWID table it
-- would lose the index of (tenant, seq) SQLite keeps for the primary key,
-- but without statistics the planner then reads a subject's history
-- through the primary key, every entry of the tenant, instead of
-- ledger_by_subject.)
CREATE TABLE evidence (
    tenant  TEXT NOT NULL,
    hash    BLOB NOT NULL,      -- SHA-256 of the canonical JSON (the entry's evidence_hash)
    body    TEXT NOT NULL,      -- the JSON
    refs    INTEGER NOT NULL,   -- ledger rows keeping it; deleted at 0 (erasure)
    PRIMARY KEY (tenant, hash)
) WITHOUT ROWID;
INSERT INTO evidence (tenant, hash, body, refs)
    SELECT tenant, unhex(evidence_hash), MIN(evidence), COUNT(*) FROM ledger
    WHERE evidence IS NOT NULL AND evidence_hash IS NOT NULL
    GROUP BY tenant, evidence_hash;

CREATE TABLE ledger_new (
    tenant          TEXT NOT NULL REFERENCES tenants(id),
    seq             INTEGER NOT NULL,
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
    PRIMARY KEY (tenant, seq)
);
INSERT INTO ledger_new (tenant, seq, subject_uid, purpose, channel, action, notice_key,
        notice_version, notice_hash, source, actor, evidence_hash, evidence_kept, occurred_at,
        recorded_at, expires_at, receipt_id, prev_hash, hash, guardian)
    SELECT tenant, seq, subject_uid, purpose, channel, action, notice_key,
        notice_version, notice_hash, source, actor, unhex(evidence_hash),
        evidence IS NOT NULL AND evidence_hash IS NOT NULL, occurred_at,
        recorded_at, expires_at, receipt_id, unhex(prev_hash), unhex(hash), guardian
    FROM ledger;
DROP TABLE ledger;
ALTER TABLE ledger_new RENAME TO ledger;
CREATE INDEX ledger_by_subject ON ledger (tenant, subject_uid, seq);

-- outbox: the event is the ledger row (read joined with it) plus the state
-- before and after; the subject, purpose and kind it repeated, and a time
-- nothing read, are gone.
CREATE TABLE outbox_new (
    tenant       TEXT NOT NULL,
    seq          INTEGER NOT NULL,
    before_state TEXT NOT NULL,
    after_state  TEXT NOT NULL,
    PRIMARY KEY (tenant, seq)
) WITHOUT ROWID;
INSERT INTO outbox_new (tenant, seq, before_state, after_state)
    SELECT tenant, seq, before_state, after_state FROM outbox;
DROP TABLE outbox;
ALTER TABLE outbox_new RENAME TO outbox;
