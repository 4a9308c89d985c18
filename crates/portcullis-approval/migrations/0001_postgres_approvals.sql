-- The schema of 0001_sqlite_approvals.sql in PostgreSQL's types. COLLATE "C": ids sort by
-- their bytes, as in SQLite, whatever the database locale.
CREATE TABLE IF NOT EXISTS portcullis_approval_requests (
    id           TEXT COLLATE "C" PRIMARY KEY,
    body         TEXT NOT NULL,
    state        TEXT NOT NULL,
    receipt_used BOOLEAN NOT NULL DEFAULT FALSE,
    created_at   BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS portcullis_approval_by_state ON portcullis_approval_requests (state, created_at);
CREATE TABLE IF NOT EXISTS portcullis_approval_votes (
    seq        BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    request_id TEXT COLLATE "C" NOT NULL REFERENCES portcullis_approval_requests (id),
    approver   TEXT NOT NULL,
    body       TEXT NOT NULL,
    UNIQUE (request_id, approver)
);
