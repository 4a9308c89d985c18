-- A token issued, revoked or purged: tell the instances listening (`PostgresTokenStore::listen`).
-- Once per statement, delivered at commit; last-use updates (`last_used_at`) stay silent.
CREATE OR REPLACE FUNCTION portcullis_tokens_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('portcullis_tokens', '');
    RETURN NULL;
END
$$;
DROP TRIGGER IF EXISTS portcullis_tokens_notify ON portcullis_tokens;
CREATE TRIGGER portcullis_tokens_notify
    AFTER INSERT OR DELETE OR UPDATE OF revoked_at ON portcullis_tokens
    FOR EACH STATEMENT EXECUTE FUNCTION portcullis_tokens_notify();
