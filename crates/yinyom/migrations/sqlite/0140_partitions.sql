-- Partitioned chains (issue 15): a tenant's ledger is `tenants.partitions`
-- independent hash chains; a subject always lands in the same one (a keyed
-- hash of its uid). `part` is an entry's partition and `pseq` its position
-- there (1, 2, 3, …); `prev_hash` links to the previous entry of the same
-- partition. `seq` stays the tenant's order over all partitions.
--
-- A ledger written before is partition 0 (`pseq = seq`), and continues as
-- partition 0: its head becomes that partition's head, so it keeps
-- verifying, and checkpoints already published (partition 0) stay valid.
ALTER TABLE tenants ADD COLUMN partitions INTEGER NOT NULL DEFAULT 64;
ALTER TABLE ledger ADD COLUMN part INTEGER NOT NULL DEFAULT 0;
ALTER TABLE ledger ADD COLUMN pseq INTEGER NOT NULL DEFAULT 0;
UPDATE ledger SET pseq = seq;
-- A partition's entries by position: checkpoints (the Merkle tree of each
-- partition grows by position) and inclusion proofs read it.
-- (Partition first: a query of a tenant's ledger by other columns never
-- takes this index for its tenant prefix.)
CREATE UNIQUE INDEX ledger_by_part ON ledger (part, tenant, pseq);

-- The head of each partition. On SQLite (one writer at a time)
-- `ledger_heads.seq` still numbers the tenant's entries; its hash is
-- no longer kept up to date.
CREATE TABLE ledger_partitions (
    tenant  TEXT NOT NULL,
    part    INTEGER NOT NULL,
    size    INTEGER NOT NULL,      -- entries in the partition (the last pseq)
    hash    TEXT NOT NULL,         -- hex: the last entry's hash
    last_seq INTEGER NOT NULL,    -- the last entry's seq (names an entry cut off the end)
    PRIMARY KEY (tenant, part)
) WITHOUT ROWID;
INSERT INTO ledger_partitions (tenant, part, size, hash, last_seq)
    SELECT tenant, 0, seq, hash, seq FROM ledger_heads WHERE seq > 0;
