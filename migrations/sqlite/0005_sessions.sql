-- Browser sessions of the web UI, so that a restart does not log everyone out. `key` is the
-- SHA-256 of the session cookie's value: the cookie itself is never stored. `csrf` is the
-- session's CSRF token, worthless without the cookie. Expired rows are deleted as new sessions
-- are made. BLOB is BYTEA in PostgreSQL.
CREATE TABLE sessions (
    key        BLOB PRIMARY KEY,
    csrf       TEXT NOT NULL,
    created_at TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX sessions_by_age ON sessions (created_at);
