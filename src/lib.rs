#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

pub use portcullis_core::{
    AccessRequest, Action, AllOf, AnyOf, AuthMethod, Authorizer, Clock, Context, Decision, DenyAll,
    DenyOverrides, Effect, Error, ManualClock, Principal, PrincipalBuilder, PrincipalKind,
    Resource, ResourceKind, SystemClock, danger, from_fn,
};
