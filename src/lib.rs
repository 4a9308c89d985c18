#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
// docs.rs builds with `--cfg docsrs` on nightly: badges name the feature each item needs.
#![cfg_attr(docsrs, feature(doc_cfg))]

/// `mockall` mocks of the vocabulary traits (feature `mock`): `MockAuthorizer`, `MockClock`.
#[cfg(feature = "mock")]
pub use portcullis_core::mock;

pub use portcullis_core::{
    AccessRequest, Action, AllOf, AnyOf, AuthMethod, Authorizer, Clock, Context, Decision, DenyAll,
    DenyOverrides, Effect, Error, Field, ForwardPathError, MAX_FORWARD_PATH, ManualClock,
    Principal, PrincipalBuilder, PrincipalKind, Resource, ResourceKind, SystemClock,
    check_forward_path, danger, from_fn, is_hidden_char, is_unfit_for_label, validate_name,
};

/// Role-based access control: tiered roles bound to users, teams, tokens and services on
/// typed resources, checked against an in-memory snapshot (crate `portcullis-acl`).
#[cfg(feature = "acl")]
pub use portcullis_acl as acl;

/// Fail-closed, tamper-evident audit logging: write-before-act, group commit, hash chain,
/// signed checkpoints, JSONL / SQLite / Postgres (crate `portcullis-audit`).
#[cfg(feature = "audit")]
pub use portcullis_audit as audit;

#[cfg(feature = "token")]
pub use portcullis_token as token;

#[cfg(feature = "token")]
pub use portcullis_directory as directory;

#[cfg(feature = "approval")]
pub use portcullis_approval as approval;

#[cfg(feature = "vend")]
pub use portcullis_vend as vend;

/// The server side of staged policy delivery: immutable, content-addressed revisions
/// validated before they exist, pipeline state and history (crate `portcullis-delivery`).
#[cfg(feature = "delivery")]
pub use portcullis_delivery as delivery;
/// Rego policy on regorus: OPA-layout bundles validated (compile, roots, `test_*` rules)
/// before an atomic activation, last known good kept on disk (crate `portcullis-policy`).
#[cfg(feature = "policy")]
pub use portcullis_policy as policy;

#[cfg(feature = "gate")]
pub mod gate;

#[cfg(feature = "edge")]
pub mod edge;

#[cfg(feature = "axum")]
pub mod http;

#[cfg(feature = "tls")]
pub mod tls;
