-- Staff of the admin console: people who log in with a password (argon2id),
-- with a role like API keys have; and their sessions (only a hash of the
-- session cookie is stored, as for API keys).

CREATE TABLE staff (
    id            TEXT PRIMARY KEY,
    tenant        TEXT NOT NULL REFERENCES tenants(id),
    email         TEXT NOT NULL UNIQUE,   -- the login name, lower case
    name          TEXT NOT NULL,
    role          TEXT NOT NULL,
    password_hash TEXT NOT NULL,          -- PHC string, argon2id
    created_at    BIGINT NOT NULL,
    disabled_at   BIGINT
);
CREATE INDEX staff_by_tenant ON staff (tenant);

CREATE TABLE staff_sessions (
    hash        TEXT PRIMARY KEY,         -- SHA-256 of the cookie value
    staff_id    TEXT NOT NULL REFERENCES staff(id),
    csrf        TEXT NOT NULL,            -- the token every form must carry
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL
);
CREATE INDEX staff_sessions_by_staff ON staff_sessions (staff_id);
