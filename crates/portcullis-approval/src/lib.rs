#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
// docs.rs builds with `--cfg docsrs` on nightly: badges name the feature each item needs.
#![cfg_attr(docsrs, feature(doc_cfg))]

mod approvals;
#[cfg(feature = "duo")]
pub mod duo;
mod error;
mod factor;
#[cfg(feature = "mock")]
pub mod mock;
mod model;
mod store;
pub mod totp;

pub use approvals::{Approvals, NewRequest, params_hash};
#[cfg(feature = "duo")]
pub use duo::{DuoClient, DuoConfig, DuoSignature};
pub use error::{ApprovalError, TotpError};
pub use factor::{Confirmation, FactorOutcome, InAppFactor, Prompt, SecondFactor};
pub use model::{
    ApprovalReceipt, ApprovalRecord, ApprovalRequest, ApprovalRule, Approvers, RequestState, Vote,
    VoteDecision,
};
#[cfg(feature = "postgres")]
pub use store::PostgresApprovalStore;
#[cfg(feature = "sqlite")]
pub use store::SqliteApprovalStore;
pub use store::{
    ApprovalStore, MemoryApprovalStore, StoredTotpSecret, TotpEnrollmentState, TotpStore,
};
#[cfg(feature = "postgres")]
pub use totp::PostgresTotpAttempts;
pub use totp::{
    MemoryTotpAttempts, SealedTotpSecret, TotpAlgorithm, TotpAttempts, TotpConfig, TotpEnrollment,
    TotpFactor, TotpSecret, TotpSecretKey,
};

/// The `async_trait` attribute this crate's traits are declared with, re-exported so an
/// implementation outside the crate need not depend on (and match the version of)
/// `async-trait` itself: `#[portcullis_approval::async_trait]`.
pub use async_trait::async_trait;
