-- Partitioned chains (issue 15): a tenant's ledger is `tenants.partitions`
-- independent hash chains; a subject always lands in the same one (a keyed
-- hash of its uid). `part` is an entry's partition and `pseq` its position
-- there (1, 2, 3, …); `prev_hash` links to the previous entry of the same
-- partition. Writers lock only the partitions they write (advisory
-- locks on (tenant, partition)), so writers of different subjects, on one
-- node or many, never wait on each other.
--
-- `seq` stays the tenant's order over all partitions, but on PostgreSQL
-- it is no longer counted under one lock: a transaction's entries get
-- `seq = xid * 2^20 + i`, its transaction id taken after its partition
-- locks. Readers take entries below the horizon
-- `pg_snapshot_xmin(pg_current_snapshot()) * 2^20`, under which no
-- transaction is still running: nothing can appear behind a reader's
-- cursor, and within a partition `seq` follows the chain.
--
-- A ledger written before is partition 0 (`pseq = seq`), and continues as
-- partition 0: its head becomes that partition's head, so it keeps
-- verifying, and checkpoints already published (partition 0) stay valid.
ALTER TABLE tenants ADD COLUMN partitions INTEGER NOT NULL DEFAULT 64;
ALTER TABLE ledger ADD COLUMN part BIGINT NOT NULL DEFAULT 0;
ALTER TABLE ledger ADD COLUMN pseq BIGINT NOT NULL DEFAULT 0;
UPDATE ledger SET pseq = seq;
-- (Partition first: a query of a tenant's ledger by other columns never
-- takes this index for its tenant prefix.)
CREATE UNIQUE INDEX ledger_by_part ON ledger (part, tenant, pseq);

CREATE TABLE ledger_partitions (
    tenant  TEXT NOT NULL,
    part    BIGINT NOT NULL,
    size    BIGINT NOT NULL,       -- entries in the partition (the last pseq)
    hash    TEXT NOT NULL,         -- hex: the last entry's hash
    last_seq BIGINT NOT NULL,    -- the last entry's seq (names an entry cut off the end)
    PRIMARY KEY (tenant, part)
);
INSERT INTO ledger_partitions (tenant, part, size, hash, last_seq)
    SELECT tenant, 0, seq, hash, seq FROM ledger_heads WHERE seq > 0;
