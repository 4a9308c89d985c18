CREATE TABLE IF NOT EXISTS portcullis_approval_requests (
    id           TEXT PRIMARY KEY,
    body         TEXT NOT NULL,
    state        TEXT NOT NULL,
    receipt_used BOOLEAN NOT NULL DEFAULT 0,
    created_at   BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS portcullis_approval_by_state ON portcullis_approval_requests (state, created_at);
CREATE TABLE IF NOT EXISTS portcullis_approval_votes (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    request_id TEXT NOT NULL REFERENCES portcullis_approval_requests (id),
    approver   TEXT NOT NULL,
    body       TEXT NOT NULL,
    UNIQUE (request_id, approver)
);
