-- Session signing keys shared by the instances of a service (`PostgresSessionKeys`): each
-- key's secret sealed (AES-256-GCM) under a key kept outside the database, with the window
-- in which it signs and the time until which it verifies.
CREATE TABLE IF NOT EXISTS portcullis_session_keys (
    key_set TEXT NOT NULL,
    kid TEXT NOT NULL,
    algorithm TEXT NOT NULL,
    sealed BYTEA NOT NULL,
    signs_from BIGINT NOT NULL,
    signs_until BIGINT NOT NULL,
    verifies_until BIGINT NOT NULL,
    PRIMARY KEY (key_set, kid)
);
-- A key added or dropped: tell the instances listening. Per row, so a statement that
-- changes nothing (a purge with nothing to purge) wakes nobody.
CREATE OR REPLACE FUNCTION portcullis_session_keys_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('portcullis_session_keys', '');
    RETURN NULL;
END
$$;
DROP TRIGGER IF EXISTS portcullis_session_keys_notify ON portcullis_session_keys;
CREATE TRIGGER portcullis_session_keys_notify
    AFTER INSERT OR DELETE ON portcullis_session_keys
    FOR EACH ROW EXECUTE FUNCTION portcullis_session_keys_notify();
