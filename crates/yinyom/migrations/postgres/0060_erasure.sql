-- Erasure at home (issue 14, part 0). A stored response of an idempotent
-- request names its subject, so an erasure deletes it; and responses
-- expire (the lifecycle job deletes those older than a day, oldest first,
-- in batches).
ALTER TABLE idempotency_keys ADD COLUMN subject_uid TEXT;
CREATE INDEX idempotency_keys_by_subject ON idempotency_keys (tenant, subject_uid);
CREATE INDEX idempotency_keys_by_age ON idempotency_keys (created_at);

