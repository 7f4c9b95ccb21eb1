-- Reminders of deadlines (rights requests, a breach's 72 hours to the
-- regulator, PDPA s.25 notices): one row per reminder that went out, so each
-- goes out once whatever the number of runs or nodes (the key is claimed by
-- an insert that does nothing when it exists). The email to the DPO is
-- retried from here until sent.
CREATE TABLE deadline_reminders (
    tenant         TEXT NOT NULL REFERENCES tenants(id),
    kind           TEXT NOT NULL,      -- request, breach, notice
    ref_id         TEXT NOT NULL,      -- request or breach id; notice: s25:<day>
    reminder       TEXT NOT NULL,      -- seconds before the deadline ("86400"), or "missed"
    due_at         BIGINT NOT NULL,    -- micros
    created_at     BIGINT NOT NULL,
    email_status   TEXT NOT NULL,      -- pending, sent, failed, skipped
    email_attempts BIGINT NOT NULL,
    email_error    TEXT,
    PRIMARY KEY (tenant, kind, ref_id, reminder)
);
CREATE INDEX deadline_reminders_email ON deadline_reminders (email_status, created_at);

-- The people affected by a breach, told through the relay (PDPA s.37(4),
-- GDPR Art. 34): one row per subject, queued in batches by the leader;
-- the delivery is the message's own status.
CREATE TABLE breach_recipients (
    tenant       TEXT NOT NULL REFERENCES tenants(id),
    breach       TEXT NOT NULL,
    subject_uid  TEXT NOT NULL,
    status       TEXT NOT NULL,      -- pending, queued (see the message), failed (not queued: why)
    message_id   TEXT,
    error        TEXT,
    created_at   BIGINT NOT NULL,
    PRIMARY KEY (tenant, breach, subject_uid)
);
CREATE INDEX breach_recipients_by_status ON breach_recipients (tenant, breach, status, subject_uid);

-- A PDPA s.25 notice sent through the relay: its message.
ALTER TABLE acquisitions ADD COLUMN message_id TEXT;
