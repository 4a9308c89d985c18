-- SQLite only. `seq BIGINT PRIMARY KEY` made SQLite keep a rowid table and a separate index
-- on seq; `INTEGER PRIMARY KEY` makes seq the rowid itself, one B-tree fewer on every insert.
-- The outcome_of and correlation_id indexes now hold only the rows that have one (an intent
-- has no outcome_of): `x = ?` and `x IN (…)` imply `x IS NOT NULL`, so lookups still use them.
-- The table is rebuilt in seq order, so existing records keep their sequence and bytes.
CREATE TABLE portcullis_audit_records_v2 (
    seq            INTEGER PRIMARY KEY,
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
INSERT INTO portcullis_audit_records_v2
    (seq, id, time_ms, kind, actor, action, resource, effect, correlation_id, outcome_of, hash, line)
    SELECT seq, id, time_ms, kind, actor, action, resource, effect, correlation_id, outcome_of, hash, line
    FROM portcullis_audit_records ORDER BY seq;
DROP TABLE portcullis_audit_records;
ALTER TABLE portcullis_audit_records_v2 RENAME TO portcullis_audit_records;
CREATE INDEX portcullis_audit_by_actor ON portcullis_audit_records (actor, seq);
CREATE INDEX portcullis_audit_by_resource ON portcullis_audit_records (resource, seq);
CREATE INDEX portcullis_audit_by_time ON portcullis_audit_records (time_ms);
CREATE INDEX portcullis_audit_by_correlation ON portcullis_audit_records (correlation_id)
    WHERE correlation_id IS NOT NULL;
CREATE INDEX portcullis_audit_by_outcome_of ON portcullis_audit_records (outcome_of)
    WHERE outcome_of IS NOT NULL;
