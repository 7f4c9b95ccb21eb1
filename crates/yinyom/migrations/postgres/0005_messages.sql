-- The consent-gated messaging relay: channel connectors, messages and
-- what happened to each.

-- Per tenant and channel (email, sms, line): where and how to send.
CREATE TABLE connectors (
    tenant      TEXT NOT NULL REFERENCES tenants(id),
    channel     TEXT NOT NULL,
    config      TEXT NOT NULL,          -- JSON without secrets
    secret      BYTEA,                     -- password / token, sealed with the tenant key
    updated_at  BIGINT NOT NULL,
    PRIMARY KEY (tenant, channel)
);

CREATE TABLE messages (
    tenant       TEXT NOT NULL,
    id           TEXT NOT NULL,
    audience     TEXT,                  -- the audience send it belongs to
    subject_uid  TEXT NOT NULL,
    channel      TEXT NOT NULL,
    purpose      TEXT NOT NULL,
    status       TEXT NOT NULL,         -- queued, retrying, sent, suppressed, dead
    reason       TEXT,                  -- why suppressed, or the last error
    attempts     BIGINT NOT NULL,
    next_at      BIGINT NOT NULL,
    content      BYTEA,                    -- recipient and content, sealed with the subject's key
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL,
    PRIMARY KEY (tenant, id)
);
CREATE INDEX messages_due ON messages (status, next_at);
CREATE INDEX messages_by_audience ON messages (tenant, audience);

CREATE TABLE message_log (
    id BIGSERIAL PRIMARY KEY,
    tenant      TEXT NOT NULL,
    message     TEXT NOT NULL,
    at          BIGINT NOT NULL,
    status      TEXT NOT NULL,
    detail      TEXT
);
CREATE INDEX message_log_by_message ON message_log (tenant, message, id);
