-- Every committed change to the bindings bumps the revision in the same transaction: tell the
-- instances listening (`PostgresAclStore::listen`). PostgreSQL delivers it at commit, and
-- not at all if the transaction rolls back.
CREATE OR REPLACE FUNCTION portcullis_acl_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('portcullis_acl', NEW.revision::text);
    RETURN NULL;
END
$$;
DROP TRIGGER IF EXISTS portcullis_acl_notify ON portcullis_acl_revision;
CREATE TRIGGER portcullis_acl_notify AFTER UPDATE ON portcullis_acl_revision
    FOR EACH ROW EXECUTE FUNCTION portcullis_acl_notify();
