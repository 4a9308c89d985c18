#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

mod authorizer;
mod bundle;
mod engine;
mod error;
mod store;

pub use authorizer::RegoAuthorizer;
pub use bundle::{Bundle, BundleLimits, Manifest, PolicyFile};
pub use engine::{EvalLimits, Evaluation, PolicyEngine, RegoEngine, rule_path};
pub use error::PolicyError;
pub use store::{Activated, BundleStatus, PolicyStore};
