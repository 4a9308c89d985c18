-- Token names are unique among active tokens of a kind — script tokens per scope resource,
-- personal tokens per owner — and the database enforces it, so two instances issuing one
-- name at the same moment cannot both succeed. An index sees only unrevoked rows (expiry
-- depends on the clock, which an index cannot), so a token past its expiry is marked
-- revoked at its expiry when its name is issued again (and here, once, for all of them).
UPDATE portcullis_tokens
   SET revoked_at = expires_at
 WHERE revoked_at IS NULL AND expires_at <= EXTRACT(EPOCH FROM now())::BIGINT;
-- Names issued twice before this index existed (instances racing): the later ones are
-- revoked, as the issuing instance should have refused them.
UPDATE portcullis_tokens AS t
   SET revoked_at = EXTRACT(EPOCH FROM now())::BIGINT
 WHERE t.revoked_at IS NULL
   AND EXISTS (
       SELECT 1 FROM portcullis_tokens AS o
        WHERE o.revoked_at IS NULL AND o.kind = t.kind AND o.name = t.name
          AND (CASE WHEN t.kind = 'script' THEN COALESCE(o.scope_resource, '') = COALESCE(t.scope_resource, '')
                    ELSE o.owner = t.owner END)
          AND (o.created_at, o.id) < (t.created_at, t.id));
CREATE UNIQUE INDEX IF NOT EXISTS portcullis_tokens_script_name
    ON portcullis_tokens (COALESCE(scope_resource, ''), name)
    WHERE revoked_at IS NULL AND kind = 'script';
CREATE UNIQUE INDEX IF NOT EXISTS portcullis_tokens_personal_name
    ON portcullis_tokens (owner, name)
    WHERE revoked_at IS NULL AND kind = 'personal';
