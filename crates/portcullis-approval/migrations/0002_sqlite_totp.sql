-- TOTP state. Per user, the newest time step a code was accepted for: a code counts only if
-- its step is newer (one upsert), so no code is accepted twice, across restarts too.
CREATE TABLE IF NOT EXISTS portcullis_approval_totp_steps (
    subject   TEXT PRIMARY KEY,
    last_step BIGINT NOT NULL
);
-- Enrolled secrets, sealed: format byte, nonce, AES-256-GCM ciphertext and tag, under the
-- embedder's key with the subject as associated data. A pending secret approves nothing.
CREATE TABLE IF NOT EXISTS portcullis_approval_totp_secrets (
    subject   TEXT PRIMARY KEY,
    sealed    BLOB NOT NULL,
    confirmed BOOLEAN NOT NULL DEFAULT FALSE
);
