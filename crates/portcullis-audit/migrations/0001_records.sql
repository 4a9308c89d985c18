-- One schema for SQLite and PostgreSQL: the types and syntax used here mean the same in both.
CREATE TABLE IF NOT EXISTS portcullis_audit_records (
    seq            BIGINT PRIMARY KEY,
    id             TEXT NOT NULL UNIQUE,
    time_ms        BIGINT NOT NULL,
    kind           TEXT NOT NULL,
    actor          TEXT NOT NULL,
    action         TEXT NOT NULL,
    resource       TEXT NOT NULL,
    effect         TEXT,
    correlation_id TEXT,
    outcome_of     TEXT,
    hash           TEXT NOT NULL,
    line           TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS portcullis_audit_by_actor ON portcullis_audit_records (actor, seq);
CREATE INDEX IF NOT EXISTS portcullis_audit_by_resource ON portcullis_audit_records (resource, seq);
CREATE INDEX IF NOT EXISTS portcullis_audit_by_time ON portcullis_audit_records (time_ms);
CREATE INDEX IF NOT EXISTS portcullis_audit_by_correlation ON portcullis_audit_records (correlation_id);
CREATE INDEX IF NOT EXISTS portcullis_audit_by_outcome_of ON portcullis_audit_records (outcome_of);
