#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
// docs.rs builds with `--cfg docsrs` on nightly: badges name the feature each item needs.
#![cfg_attr(docsrs, feature(doc_cfg))]

mod action;
mod authorizer;
mod clock;
mod combinator;
pub mod danger;
mod decision;
mod error;
mod forward_path;
#[cfg(feature = "https")]
pub mod https;
mod ident;
mod principal;
mod resource;
mod unique;

#[cfg(feature = "mock")]
pub mod mock;

pub use action::Action;
pub use authorizer::{AccessRequest, Authorizer, Context, DenyAll, FnAuthorizer, from_fn};
pub use clock::{Clock, ManualClock, SystemClock};
pub use combinator::{AllOf, AnyOf, DenyOverrides};
pub use decision::{Decision, Effect};
pub use error::{Error, Field};
pub use forward_path::{ForwardPathError, MAX_FORWARD_PATH, check_forward_path};
pub use ident::{is_hidden_char, is_unfit_for_label, validate_name};
pub use principal::{AuthMethod, Principal, PrincipalBuilder, PrincipalKind};
pub use resource::{Resource, ResourceKind};
pub use unique::{RandomError, unique_bytes};
