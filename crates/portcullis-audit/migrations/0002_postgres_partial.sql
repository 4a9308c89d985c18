-- PostgreSQL: the outcome_of and correlation_id indexes hold only the rows that have one (an
-- intent has no outcome_of). `x = $1` and `x IN (…)` imply `x IS NOT NULL`, so lookups still
-- use them.
DROP INDEX IF EXISTS portcullis_audit_by_correlation;
CREATE INDEX portcullis_audit_by_correlation ON portcullis_audit_records (correlation_id)
    WHERE correlation_id IS NOT NULL;
DROP INDEX IF EXISTS portcullis_audit_by_outcome_of;
CREATE INDEX portcullis_audit_by_outcome_of ON portcullis_audit_records (outcome_of)
    WHERE outcome_of IS NOT NULL;
