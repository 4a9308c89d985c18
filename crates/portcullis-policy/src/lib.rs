#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
// docs.rs builds with `--cfg docsrs` on nightly: badges name the feature each item needs.
#![cfg_attr(docsrs, feature(doc_cfg))]

mod authorizer;
mod builtins;
mod bundle;
mod check;
#[cfg(feature = "audit")]
mod decision_log;
mod engine;
mod error;
#[cfg(feature = "mock")]
pub mod mock;
mod nesting;
mod rollout;
mod signing;
#[cfg(feature = "sources")]
mod source;
mod store;

pub use authorizer::RegoAuthorizer;
pub use bundle::{Bundle, BundleLimits, Manifest, PolicyFile};
pub use check::CheckError;
#[cfg(feature = "audit")]
pub use decision_log::{
    ACTIVATE, DecisionEntry, DecisionLog, EVALUATE, MASK_RULE, POLICY_BUNDLE, POLICY_RULE,
};
pub use engine::{EvalLimits, Evaluation, PolicyEngine, RegoEngine, rule_path};
pub use error::PolicyError;
pub use nesting::MAX_NESTING;
pub use rollout::{
    ArtifactConfig, ArtifactState, Candidate, Metrics, Promotion, Readiness, Rollout,
    RolloutConfig, RolloutEvent, SpiffePattern, StepConfig, Thresholds, counts_as_denial,
};
pub use signing::{Algorithm, BundleSigner, BundleVerifier, SIGNATURES_FILE, VerificationKey};
#[cfg(feature = "sources")]
pub use source::{
    BundleSource, DirSource, Fetched, HttpSource, PollOptions, poll_once, spawn_poller,
};
pub use store::{Activated, BundleStatus, PolicyStore};
