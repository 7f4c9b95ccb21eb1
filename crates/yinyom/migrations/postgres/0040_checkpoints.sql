-- Signed checkpoints of the ledger (signed tree heads, as Certificate
-- Transparency publishes them): a Merkle tree (RFC 9162) over each chain's
-- entry hashes, its root signed with the receipt key. Today a tenant has one
-- chain, partition 0.

-- Perfect subtrees of the tree of level >= 8 (2^level leaves from
-- idx * 2^level): stored as the tree grows, so an inclusion proof or a root
-- costs a few indexed reads. Lower subtrees are computed from one block of
-- 256 leaves (ledger rows read by primary key).
CREATE TABLE ledger_nodes (
    tenant     TEXT NOT NULL REFERENCES tenants(id),
    part       BIGINT NOT NULL,
    level      BIGINT NOT NULL,
    idx        BIGINT NOT NULL,
    hash       TEXT NOT NULL,          -- hex SHA-256
    PRIMARY KEY (tenant, part, level, idx)
);

CREATE TABLE ledger_checkpoints (
    tenant      TEXT NOT NULL REFERENCES tenants(id),
    number      BIGINT NOT NULL,         -- 1, 2, ... per tenant
    size        BIGINT NOT NULL,         -- entries covered (all partitions)
    root        TEXT NOT NULL,         -- hex: the signed root
    body        TEXT NOT NULL,         -- JSON: the signed claims
    jws         TEXT NOT NULL,         -- the claims signed (EdDSA, JWS compact)
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (tenant, number)
);
