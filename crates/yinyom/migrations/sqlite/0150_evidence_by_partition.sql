-- Evidence is stored once per distinct value within a ledger partition
-- (was: within a tenant). Its `refs` counter is then only touched by
-- writers of that partition, who already hold its lock: identical evidence
-- sent to many subjects (a campaign form, an integration's fixed fields) no
-- longer makes every writer of the tenant, on every node, wait on one row.
-- A shared value is kept at most once per partition (64 copies at most).
CREATE TABLE evidence_new (
    tenant  TEXT NOT NULL,
    part    INTEGER NOT NULL,   -- the ledger partition of the entries keeping it
    hash    BLOB NOT NULL,      -- SHA-256 of the canonical JSON (the entry's evidence_hash)
    body    TEXT NOT NULL,      -- the JSON
    refs    INTEGER NOT NULL,   -- ledger rows of the partition keeping it; deleted at 0
    PRIMARY KEY (tenant, part, hash)
) WITHOUT ROWID;
INSERT INTO evidence_new (tenant, part, hash, body, refs)
    SELECT e.tenant, l.part, e.hash, e.body, COUNT(*)
    FROM evidence e JOIN ledger l
        ON l.tenant = e.tenant AND l.evidence_hash = e.hash AND l.evidence_kept = 1
    GROUP BY e.tenant, e.hash, l.part;
DROP TABLE evidence;
ALTER TABLE evidence_new RENAME TO evidence;
