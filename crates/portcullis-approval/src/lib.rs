#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

mod approvals;
#[cfg(feature = "duo")]
pub mod duo;
mod error;
mod factor;
mod model;
mod store;
pub mod totp;

pub use approvals::{Approvals, NewRequest, params_hash};
#[cfg(feature = "duo")]
pub use duo::{DuoClient, DuoConfig, DuoSignature};
pub use error::ApprovalError;
pub use factor::{Confirmation, FactorOutcome, InAppFactor, Prompt, SecondFactor};
pub use model::{
    ApprovalRecord, ApprovalRequest, ApprovalRule, Approvers, Receipt, RequestState, Vote,
    VoteDecision,
};
#[cfg(feature = "sqlite")]
pub use store::SqliteApprovalStore;
pub use store::{ApprovalStore, MemoryApprovalStore};
pub use totp::{TotpAlgorithm, TotpConfig, TotpFactor, TotpSecret};
