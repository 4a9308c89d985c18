-- Single-use ids (broker tokens' `jti`) spent by any instance (`PostgresSpentIds`): the
-- primary key makes the insert that spends an id the one atomic check.
CREATE TABLE IF NOT EXISTS portcullis_spent_ids (
    scope TEXT NOT NULL,
    id TEXT NOT NULL,
    expires_at BIGINT NOT NULL,
    PRIMARY KEY (scope, id)
);
CREATE INDEX IF NOT EXISTS portcullis_spent_ids_expiry ON portcullis_spent_ids (expires_at);
