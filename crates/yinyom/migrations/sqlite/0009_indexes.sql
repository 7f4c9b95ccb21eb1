-- Indexes that let every hot query of the request paths seek instead of
-- scan (docs/queries.md), and that let rights requests page by keyset.

-- The duplicate-open-request check and a subject's requests, in list order.
DROP INDEX rights_requests_by_subject;
CREATE INDEX rights_requests_by_subject ON rights_requests (tenant, subject_uid, due_at, id);
-- The request list pages by (due_at, id); by status; open ones (overdue).
DROP INDEX rights_requests_by_due;
CREATE INDEX rights_requests_by_due ON rights_requests (tenant, due_at, id);
CREATE INDEX rights_requests_by_status ON rights_requests (tenant, status, due_at, id);
CREATE INDEX rights_requests_open ON rights_requests (tenant, due_at, id)
    WHERE status NOT IN ('completed', 'rejected');

-- Third-party acquisitions page by (due_at, subject_uid); the pending ones
-- (not yet told) have their own.
DROP INDEX acquisitions_by_due;
CREATE INDEX acquisitions_by_due ON acquisitions (tenant, due_at, subject_uid);
CREATE INDEX acquisitions_pending ON acquisitions (tenant, due_at, subject_uid)
    WHERE notified_at IS NULL;

-- Follow's resync reads subjects changed since a time.
CREATE INDEX subjects_by_updated ON subjects (updated_at);
-- A subject's messages: the access bundle and erasure.
CREATE INDEX messages_by_subject ON messages (tenant, subject_uid);
-- Subjects waiting for a queued delivery (delivered rows accumulate).
CREATE INDEX deliveries_pending ON webhook_deliveries (tenant, webhook, subject_uid, seq)
    WHERE status = 'pending';

-- The planner chooses between indexes by statistics; without any, SQLite
-- guesses, and picked the due-date index for a subject's requests. The
-- server runs PRAGMA optimize on every connection and from the minute job.
ANALYZE rights_requests;
