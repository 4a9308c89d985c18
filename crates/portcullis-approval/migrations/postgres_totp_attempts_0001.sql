-- Attempts at TOTP codes, for every instance sharing the database: per user (the SHA-256 of
-- the name, never the name), the times (Unix seconds) of the attempts counted in the window.
-- An attempt is appended by one upsert only while fewer than the limit are in the window.
CREATE TABLE IF NOT EXISTS portcullis_totp_attempts (
    user_hash TEXT PRIMARY KEY,
    attempts  BIGINT[] NOT NULL,
    last_at   BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS portcullis_totp_attempts_by_last ON portcullis_totp_attempts (last_at);
