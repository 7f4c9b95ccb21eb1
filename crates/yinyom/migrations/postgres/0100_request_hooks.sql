-- Request hooks (issue 14 part 5): endpoints of the tenant's own systems
-- that a rights request calls before approval, before execution and after
-- it, and whose answers can hold it.
CREATE TABLE request_hooks (
    tenant      TEXT NOT NULL REFERENCES tenants(id),
    id          TEXT NOT NULL,
    name        TEXT NOT NULL,
    url         TEXT NOT NULL,
    stage       TEXT NOT NULL,          -- pre_approval, pre_execution, post_execution
    kinds       TEXT NOT NULL,          -- JSON array of request kinds; [] = every kind
    secret      BYTEA NOT NULL,          -- the signing secret, sealed with the tenant key
    timeout_ms  BIGINT NOT NULL,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL,
    PRIMARY KEY (tenant, id)
);

-- One hook's call for one request, and its answer.
CREATE TABLE request_hook_calls (
    tenant       TEXT NOT NULL,
    request_id   TEXT NOT NULL,
    hook         TEXT NOT NULL,
    stage        TEXT NOT NULL,
    status       TEXT NOT NULL,          -- pending, approved, denied, failed, delivered, skipped
    reason       TEXT,                   -- the hook's reason (a denial's is the request's)
    error        TEXT,                   -- why the last attempt failed
    attempts     BIGINT NOT NULL DEFAULT 0,
    next_at      BIGINT,                -- due (pending, failed) or lease end; NULL: awaiting a reply
    answered_at  BIGINT,
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL,
    PRIMARY KEY (tenant, request_id, hook)
);
-- The reply endpoint names the request and the hook, not the tenant.
CREATE UNIQUE INDEX request_hook_calls_by_request ON request_hook_calls (request_id, hook);
CREATE INDEX request_hook_calls_due ON request_hook_calls (next_at) WHERE next_at IS NOT NULL;
-- A removed hook's calls not answered yet (few), to release them.
CREATE INDEX request_hook_calls_open ON request_hook_calls (tenant, hook)
    WHERE status IN ('pending', 'failed');
