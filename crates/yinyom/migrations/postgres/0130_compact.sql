-- Fewer bytes per consent record (issue 13, item 4). Nothing hashed changes:
-- a hash is computed over canonical content, and each stored hash reads
-- back as the same 64 hex digits, so every chain verifies as before.
--
-- ledger: `hash`, `prev_hash` and `evidence_hash` as 32-byte BYTEA instead
-- of 64-character hex; the evidence itself stored once per distinct value
-- in `evidence` (keyed by its hash, which the chain already holds), the row
-- keeping only whether its evidence is still kept (`evidence_kept`, unset
-- by an erasure).
CREATE TABLE evidence (
    tenant  TEXT NOT NULL,
    hash    BYTEA NOT NULL,     -- SHA-256 of the canonical JSON (the entry's evidence_hash)
    body    TEXT NOT NULL,      -- the JSON
    refs    BIGINT NOT NULL,    -- ledger rows keeping it; deleted at 0 (erasure)
    PRIMARY KEY (tenant, hash)
);
INSERT INTO evidence (tenant, hash, body, refs)
    SELECT tenant, decode(evidence_hash, 'hex'), MIN(evidence), COUNT(*) FROM ledger
    WHERE evidence IS NOT NULL AND evidence_hash IS NOT NULL
    GROUP BY tenant, evidence_hash;

ALTER TABLE ledger ADD COLUMN evidence_kept SMALLINT NOT NULL DEFAULT 0;
UPDATE ledger SET evidence_kept = 1 WHERE evidence IS NOT NULL AND evidence_hash IS NOT NULL;
ALTER TABLE ledger
    DROP COLUMN evidence,
    ALTER COLUMN evidence_hash TYPE BYTEA USING decode(evidence_hash, 'hex'),
    ALTER COLUMN prev_hash TYPE BYTEA USING decode(prev_hash, 'hex'),
    ALTER COLUMN hash TYPE BYTEA USING decode(hash, 'hex');

-- outbox: the event is the ledger row (read joined with it) plus the state
-- before and after; the subject, purpose and kind it repeated, and a time
-- nothing read, are gone.
ALTER TABLE outbox
    DROP COLUMN subject_uid,
    DROP COLUMN purpose,
    DROP COLUMN kind,
    DROP COLUMN created_at;
