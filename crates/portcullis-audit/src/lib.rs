#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
// docs.rs builds with `--cfg docsrs` on nightly: badges name the feature each item needs.
#![cfg_attr(docsrs, feature(doc_cfg))]

mod chain;
mod checkpoint;
mod error;
mod event;
mod forensic;
mod guard;
mod log;
#[cfg(feature = "mock")]
pub mod mock;
mod query;
mod redact;
mod sink;
mod storage;
mod verify;

pub use chain::{AuditRecord, ChainHead, Decoded, GENESIS, Hash, RECORD_VERSION, Receipt, decode};
pub use checkpoint::{
    CHECKPOINTS_FILE, Checkpoint, CheckpointFile, CheckpointSigner, PUBLIC_KEY_FILE,
};
pub use error::AuditError;
pub use event::{Actor, AuditEvent, EventKind, Outcome, OutcomeStatus, RequestSummary};
pub use forensic::verify_database;
pub use guard::{Intent, IntentError, Recorded, WriteAhead};
pub use log::{AuditLog, AuditOptions, RETRY_QUEUE, VERIFY_ON_OPEN};
pub use query::{
    AuditPage, AuditQuery, MAX_QUERY_LIMIT, MAX_SCOPE_CHILDREN, ResourceScope, SCOPE_SEPARATOR,
    WithOutcome,
};
pub use redact::{HMAC_PREFIX, Redactor};
pub use sink::jsonl::{JsonlOptions, verify_jsonl_dir};
pub use sink::{AuditSink, FanOut, FanOutPolicy, TracingMirror};
pub use storage::{
    Appended, AuditStorage, Batch, MemoryStorage, PreparedEvent, RecordIndex, Sealed, SealedRecord,
    Visit,
};
pub use verify::{Verifier, VerifyReport, Violation, verify_lines};
