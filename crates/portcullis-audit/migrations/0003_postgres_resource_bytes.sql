-- PostgreSQL only. `resource` compares byte by byte (collation "C"), as SQLite's BINARY does,
-- so that a scope query's range `resource >= 'kind:id/' AND resource < 'kind:id0'` holds
-- exactly the resources whose string starts with `kind:id/`, and the (resource, seq) index
-- serves it. Under a language collation (the database default, e.g. en_US.UTF-8) that range
-- would also hold `kind:id+x` or miss `kind:id/X`. Equality is unchanged: a deterministic
-- collation's equality is byte equality already. The column's values and the table stay as
-- they are; its index is rebuilt.
ALTER TABLE portcullis_audit_records ALTER COLUMN resource TYPE TEXT COLLATE "C";
