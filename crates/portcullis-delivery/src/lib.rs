#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
// docs.rs builds with `--cfg docsrs` on nightly: badges name the feature each item needs.
#![cfg_attr(docsrs, feature(doc_cfg))]

mod artifact;
mod decisions;
mod error;
mod group;
mod pipeline;
mod revision;
mod status;
mod store;
mod validate;

pub use artifact::{ArtifactStore, FolderStore, MemoryStore};
#[cfg(feature = "s3")]
pub use artifact::{DEFAULT_MAX_OBJECT_BYTES, S3Options, S3Store};
pub use decisions::{DecisionCounts, MAX_EVENTS, MAX_LOG_BYTES};
pub use error::DeliveryError;
pub use pipeline::{
    Assignment, Expected, Operation, Pipeline, Published, Refresher, SCHEDULER, now_ms,
};
/// The `LISTEN` connection [`PostgresPipelineStore::listen`] opens (from `portcullis-sql`).
#[cfg(feature = "postgres")]
pub use portcullis_sql::postgres::ChangeListener;
pub use revision::{MAX_NAME, RevisionId, check_artifact_name};
pub use status::{BundleReport, MAX_BUNDLES, MAX_FIELD, MAX_STATUS_BYTES, StatusReport};
#[cfg(feature = "sqlite")]
pub use store::SqlitePipelineStore;
#[cfg(feature = "postgres")]
pub use store::{CHANGE_CHANNEL, PostgresPipelineStore};
pub use store::{
    Change, ChangeLock, EventRecord, FetchRecord, HostCounts, HostStatus, LocalLock,
    MemoryPipelineStore, PipelineStore, Pruned, Retention, RevisionRecord,
};
pub use validate::{Validated, Validator};
