-- Erasure at home (issue 14, part 0). A stored response of an idempotent
-- request names its subject, so an erasure deletes it; and responses
-- expire (the lifecycle job deletes those older than a day, oldest first,
-- in batches).
ALTER TABLE idempotency_keys ADD COLUMN subject_uid TEXT;
CREATE INDEX idempotency_keys_by_subject ON idempotency_keys (tenant, subject_uid);
CREATE INDEX idempotency_keys_by_age ON idempotency_keys (created_at);

-- Deadline reminders (part 6): each sent once per deadline and lead time.
CREATE TABLE reminders (
    tenant      TEXT NOT NULL,
    kind        TEXT NOT NULL,      -- request, breach, acquisition
    ref         TEXT NOT NULL,      -- the request id, breach id, subject uid
    due_at      BIGINT NOT NULL,    -- the deadline reminded of
    lead        TEXT NOT NULL,      -- 7d, 24h
    sent_at     BIGINT NOT NULL,
    detail      TEXT NOT NULL,      -- how it went out (email message id, event)
    PRIMARY KEY (tenant, kind, ref, due_at, lead)
);
