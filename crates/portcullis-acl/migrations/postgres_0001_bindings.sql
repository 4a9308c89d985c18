-- COLLATE "C": list order compares bytes, as the other stores do, whatever the database locale.
CREATE TABLE IF NOT EXISTS portcullis_acl_bindings (
    resource_kind TEXT COLLATE "C" NOT NULL,
    resource_id   TEXT COLLATE "C" NOT NULL,
    subject_kind  TEXT COLLATE "C" NOT NULL,
    subject_name  TEXT COLLATE "C" NOT NULL,
    role          TEXT NOT NULL,
    PRIMARY KEY (resource_kind, resource_id, subject_kind, subject_name)
);
CREATE INDEX IF NOT EXISTS portcullis_acl_bindings_by_subject
    ON portcullis_acl_bindings (subject_kind, subject_name);
CREATE TABLE IF NOT EXISTS portcullis_acl_revision (
    id       INTEGER PRIMARY KEY CHECK (id = 1),
    revision BIGINT NOT NULL
);
INSERT INTO portcullis_acl_revision (id, revision) VALUES (1, 0) ON CONFLICT (id) DO NOTHING;
