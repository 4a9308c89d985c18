-- Failed password logins counted for every instance of a service (`PostgresLoginAttempts`),
-- by the SHA-256 of the user name (the names people mistype are not kept in clear).
CREATE TABLE IF NOT EXISTS portcullis_login_failures (
    user_hash TEXT NOT NULL,
    at BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS portcullis_login_failures_by_user ON portcullis_login_failures (user_hash, at);
CREATE INDEX IF NOT EXISTS portcullis_login_failures_by_time ON portcullis_login_failures (at);
