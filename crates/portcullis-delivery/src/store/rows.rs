//! Rows of the SQL pipeline stores read into records, the same for SQLite and PostgreSQL
//! (the tables have the same columns; only the SQL dialects differ).

use portcullis_policy::Metrics;
use sqlx::{ColumnIndex, Decode, Row, Type};

use super::{EventRecord, FetchRecord, HostCounts, HostStatus, RevisionRecord};
use crate::DeliveryError;

/// A row whose columns are read by name as text or 64-bit integers.
pub(super) trait Columns {
    fn text(&self, name: &str) -> Result<String, DeliveryError>;
    fn maybe_text(&self, name: &str) -> Result<Option<String>, DeliveryError>;
    fn int(&self, name: &str) -> Result<i64, DeliveryError>;
    /// A count or time in ms (never negative when written here; 0 if it is).
    fn unsigned(&self, name: &str) -> Result<u64, DeliveryError> {
        Ok(u64::try_from(self.int(name)?).unwrap_or(0))
    }
}

impl<R> Columns for R
where
    R: Row,
    for<'a> &'a str: ColumnIndex<R>,
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
{
    fn text(&self, name: &str) -> Result<String, DeliveryError> {
        Ok(self.try_get(name)?)
    }

    fn maybe_text(&self, name: &str) -> Result<Option<String>, DeliveryError> {
        Ok(self.try_get(name)?)
    }

    fn int(&self, name: &str) -> Result<i64, DeliveryError> {
        Ok(self.try_get(name)?)
    }
}

/// `revision, bundle_revision, size, published_by, published_at_ms` of `artifact`.
pub(super) fn revision(
    artifact: &str,
    row: &impl Columns,
) -> Result<RevisionRecord, DeliveryError> {
    Ok(RevisionRecord {
        artifact: artifact.to_owned(),
        revision: row.text("revision")?.parse()?,
        bundle_revision: row.text("bundle_revision")?,
        size: row.unsigned("size")?,
        published_by: row.text("published_by")?,
        published_at_ms: row.unsigned("published_at_ms")?,
    })
}

/// `id, at_ms, artifact, revision, kind, actor, message`.
pub(super) fn event(row: &impl Columns) -> Result<EventRecord, DeliveryError> {
    Ok(EventRecord {
        id: row.int("id")?,
        at_ms: row.unsigned("at_ms")?,
        artifact: row.text("artifact")?,
        revision: row.maybe_text("revision")?,
        kind: row.text("kind")?,
        actor: row.text("actor")?,
        message: row.text("message")?,
    })
}

/// `spiffe_id, bundle, active_revision, error, reported_at_ms`.
pub(super) fn host_status(row: &impl Columns) -> Result<HostStatus, DeliveryError> {
    Ok(HostStatus {
        spiffe_id: row.text("spiffe_id")?,
        bundle: row.text("bundle")?,
        active_revision: row.maybe_text("active_revision")?,
        error: row.maybe_text("error")?,
        reported_at_ms: row.unsigned("reported_at_ms")?,
    })
}

/// `at_ms, spiffe_id, artifact, revision`.
pub(super) fn fetch(row: &impl Columns) -> Result<FetchRecord, DeliveryError> {
    Ok(FetchRecord {
        at_ms: row.unsigned("at_ms")?,
        spiffe_id: row.text("spiffe_id")?,
        artifact: row.text("artifact")?,
        revision: row.text("revision")?,
    })
}

/// `artifact, revision, step, spiffe_id, decisions, denies, errors`.
pub(super) fn host_counts(row: &impl Columns) -> Result<HostCounts, DeliveryError> {
    let step = row.int("step")?;
    Ok(HostCounts {
        artifact: row.text("artifact")?,
        revision: row.text("revision")?,
        step: u32::try_from(step)
            .map_err(|_| DeliveryError::Store(format!("a stored step {step} is out of range")))?,
        spiffe_id: row.text("spiffe_id")?,
        metrics: Metrics {
            decisions: row.unsigned("decisions")?,
            denies: row.unsigned("denies")?,
            errors: row.unsigned("errors")?,
        },
    })
}
