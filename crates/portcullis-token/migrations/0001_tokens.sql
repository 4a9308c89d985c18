-- One schema for SQLite and PostgreSQL. Only the HMAC of a token is stored, never the token.
CREATE TABLE IF NOT EXISTS portcullis_tokens (
    id             TEXT PRIMARY KEY,
    hash           TEXT NOT NULL UNIQUE,
    kind           TEXT NOT NULL,
    name           TEXT NOT NULL,
    owner          TEXT NOT NULL,
    scope_resource TEXT,
    scope_role     TEXT,
    created_at     BIGINT NOT NULL,
    expires_at     BIGINT NOT NULL,
    last_used_at   BIGINT,
    revoked_at     BIGINT
);
CREATE INDEX IF NOT EXISTS portcullis_tokens_by_owner ON portcullis_tokens (owner);
