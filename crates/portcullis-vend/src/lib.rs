#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
// docs.rs builds with `--cfg docsrs` on nightly: badges name the feature each item needs.
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(feature = "aws")]
mod aws;
mod error;
mod mapping;
#[cfg(feature = "mock")]
pub mod mock;
mod sts;
mod vendor;

#[cfg(feature = "aws")]
pub use aws::AwsSts;
pub use error::VendError;
pub use mapping::{
    MAX_CHAINED_DURATION, MAX_DURATION, MAX_POLICY_ARNS, MIN_DURATION, Plan, VendConfig,
    is_valid_session_name, session_name,
};
pub use sts::{AssumeRoleRequest, Credentials, Secret, StsBackend};
pub use vendor::{CredentialVendor, VendRequest, Vended};

/// The `async_trait` attribute this crate's traits are declared with, re-exported so an
/// implementation outside the crate need not depend on (and match the version of)
/// `async-trait` itself: `#[portcullis_vend::async_trait]`.
pub use async_trait::async_trait;
