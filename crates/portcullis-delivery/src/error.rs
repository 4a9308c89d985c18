//! [`DeliveryError`]: everything that can go wrong publishing, storing or rolling out a
//! revision.

use portcullis_policy::PolicyError;

/// A delivery failure. None of them leaves a half-written revision or a pipeline state
/// that differs from what is stored.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DeliveryError {
    /// The uploaded bundle failed the validation a sidecar makes before activating one
    /// (layout, signature, compile, roots, a `test_*` rule); it was not stored.
    #[error("revision refused: {0}")]
    Refused(#[source] PolicyError),
    /// The bundle's manifest roots reach outside the data namespace its artifact owns (by
    /// default the bundle's name): published under one artifact, it would claim policy or
    /// data of others on every host that loads both. A manifest without `roots` claims the
    /// whole tree.
    #[error(
        "revision refused: bundle {bundle:?} claims root {root:?}, outside its namespace \
         (roots must be {allowed} or below)"
    )]
    OutsideNamespace {
        /// The bundle.
        bundle: String,
        /// The first root outside (`""` for the whole tree).
        root: String,
        /// The namespaces it may claim, for the message.
        allowed: String,
    },
    /// Another revision of the artifact already carries this manifest revision: hosts
    /// report the manifest revision they run, so it must name one content only.
    #[error(
        "artifact {artifact:?}: manifest revision {bundle_revision:?} is already revision \
         {existing}; give the new content a new revision"
    )]
    RevisionNameTaken {
        /// The artifact.
        artifact: String,
        /// The manifest revision.
        bundle_revision: String,
        /// The revision (content id) that carries it.
        existing: String,
    },
    /// A revision with this content already exists: revisions are immutable.
    #[error("artifact {artifact:?}: revision {revision} already exists (revisions are immutable)")]
    Exists {
        /// The artifact.
        artifact: String,
        /// The revision (the tarball's SHA-256).
        revision: String,
    },
    /// No artifact of that name is configured.
    #[error("artifact {0:?} is not configured")]
    UnknownArtifact(String),
    /// A name, revision id or configuration is not acceptable.
    #[error("{0}")]
    Invalid(String),
    /// The artifact store has no such revision.
    #[error("artifact {artifact:?}: no revision {revision} in the artifact store")]
    NotFound {
        /// The artifact.
        artifact: String,
        /// The revision.
        revision: String,
    },
    /// A stored revision's content no longer hashes to its id: it was changed on disk.
    #[error(
        "artifact {artifact:?}: revision {revision} in the artifact store hashes to {actual}: \
         it was changed after it was stored; restore it or publish again"
    )]
    Corrupt {
        /// The artifact.
        artifact: String,
        /// The revision asked for.
        revision: String,
        /// What the stored content hashes to.
        actual: String,
    },
    /// The artifact store could not be read or written.
    #[error("artifact store: {path}: {source}")]
    Io {
        /// The file or folder.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A stored revision is larger than the artifact store reads (or writes): refused
    /// before its body was read.
    #[error(
        "artifact {artifact:?}: revision {revision} is {size} bytes, more than the artifact \
         store's limit of {max}; raise the limit if the revision is right"
    )]
    TooLarge {
        /// The artifact.
        artifact: String,
        /// The revision.
        revision: String,
        /// Its size in bytes (as announced, or as read so far).
        size: u64,
        /// The limit.
        max: u64,
    },
    /// A remote artifact store (S3) refused a request or could not be reached; nothing was
    /// stored or read.
    #[error("artifact store {location}: {message}")]
    Remote {
        /// What was asked for: `s3://BUCKET/KEY` (never a credential).
        location: String,
        /// The store's error code (`NoSuchBucket`, `AccessDenied`, `SlowDown`, …), when it
        /// answered with one.
        code: Option<String>,
        /// What went wrong and what to check.
        message: String,
    },
    /// The pipeline store failed.
    #[error("pipeline store: {0}")]
    Store(String),
    /// The pipeline store cannot be reached now (its database is down, or every connection
    /// is busy past the wait): nothing changed, and the same request may succeed later.
    #[error("pipeline store unavailable: {0}")]
    StoreUnavailable(String),
    /// The rollout refused the operation (no candidate, not ready, paused, …).
    #[error("{0}")]
    Rollout(#[source] PolicyError),
    /// A host's status report or decision log upload is not OPA's shape or exceeds a
    /// limit.
    #[error("host report: {0}")]
    Status(String),
}

impl DeliveryError {
    pub(crate) fn io(path: impl std::fmt::Display, source: std::io::Error) -> Self {
        DeliveryError::Io {
            path: path.to_string(),
            source,
        }
    }
}

#[cfg(any(feature = "sqlite", feature = "postgres"))]
impl From<sqlx::Error> for DeliveryError {
    fn from(err: sqlx::Error) -> Self {
        match err {
            sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => {
                DeliveryError::StoreUnavailable(err.to_string())
            }
            _ => DeliveryError::Store(err.to_string()),
        }
    }
}

#[cfg(all(test, any(feature = "sqlite", feature = "postgres")))]
mod tests {
    use super::*;

    #[test]
    fn an_unreachable_store_is_unavailable_not_failed() {
        assert!(matches!(
            DeliveryError::from(sqlx::Error::PoolTimedOut),
            DeliveryError::StoreUnavailable(_)
        ));
        assert!(matches!(
            DeliveryError::from(sqlx::Error::Io(std::io::Error::from(
                std::io::ErrorKind::ConnectionRefused
            ))),
            DeliveryError::StoreUnavailable(_)
        ));
        assert!(matches!(
            DeliveryError::from(sqlx::Error::RowNotFound),
            DeliveryError::Store(_)
        ));
    }
}
