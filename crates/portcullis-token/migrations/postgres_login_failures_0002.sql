-- Login attempts counted *before* the password is checked (`PostgresLoginAttempts`): per user
-- name (its SHA-256, never the name), the times (Unix seconds) of the attempts counted in the
-- window. An attempt is appended by one upsert only while fewer than the limit are in the
-- window (the row lock serialises concurrent logins of one name), and removed again when the
-- password was right. The table of failures noted after the check (0001) let every login in
-- flight at once through, and goes.
CREATE TABLE IF NOT EXISTS portcullis_login_attempts (
    user_hash TEXT PRIMARY KEY,
    attempts  BIGINT[] NOT NULL,
    last_at   BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS portcullis_login_attempts_by_last ON portcullis_login_attempts (last_at);
DROP TABLE IF EXISTS portcullis_login_failures;
