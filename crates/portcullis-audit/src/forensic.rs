//! Reading a log without opening it for appending: a verifier beside a live service, or a
//! log that [`AuditLog`](crate::AuditLog) refuses to open because its head does not verify.

use crate::{AuditError, Checkpoint, VerifyReport, Violation};

/// Verifies the log in the database at `url` (`sqlite://FILE` with the `sqlite` feature,
/// `postgres://…` with `postgres`) and `checkpoints` signed by `trusted_key`, without
/// opening it for appending: nothing is migrated, written or locked, and a log whose head
/// does not verify is read all the same (that is what this reports on). It can run beside
/// a live writer. The outer error is a failure to read (an unknown URL, a missing file or
/// table); the inner one is the first violation, as [`AuditLog::verify`] reports it.
///
/// For a JSONL folder, see [`verify_jsonl_dir`](crate::verify_jsonl_dir); the
/// `portcullis-audit verify` command runs one or the other.
///
/// [`AuditLog::verify`]: crate::AuditLog::verify
///
/// # Errors
///
/// [`AuditError::Invalid`] for a URL of no backend compiled in, [`AuditError::Database`]
/// if the database or its table cannot be read.
pub async fn verify_database(
    url: &str,
    checkpoints: &[Checkpoint],
    trusted_key: &[u8],
) -> Result<Result<VerifyReport, Violation>, AuditError> {
    #[cfg(feature = "sqlite")]
    if url.starts_with("sqlite:") {
        let backend = crate::sink::sql::SqliteBackend::connect_read_only(url).await?;
        return verify_backend(&backend, checkpoints, trusted_key).await;
    }
    #[cfg(feature = "postgres")]
    if url.starts_with("postgres:") || url.starts_with("postgresql:") {
        let backend = crate::sink::sql::PostgresBackend::connect_read_only(url).await?;
        return verify_backend(&backend, checkpoints, trusted_key).await;
    }
    let _ = (checkpoints, trusted_key);
    Err(AuditError::Invalid(format!(
        "`{url}`: this build has no audit backend for that URL"
    )))
}

#[cfg(any(feature = "sqlite", feature = "postgres"))]
async fn verify_backend(
    backend: &dyn crate::AuditStorage,
    checkpoints: &[Checkpoint],
    trusted_key: &[u8],
) -> Result<Result<VerifyReport, Violation>, AuditError> {
    let verifier = crate::Verifier::with_checkpoints(checkpoints);
    Ok(match backend.verify(0, verifier).await? {
        Ok(verifier) => verifier.finish(checkpoints, trusted_key),
        Err(violation) => Err(violation),
    })
}
