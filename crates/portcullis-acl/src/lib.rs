#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
// docs.rs builds with `--cfg docsrs` on nightly: badges name the feature each item needs.
#![cfg_attr(docsrs, feature(doc_cfg))]

mod acl;
mod authorizer;
mod binding;
mod config;
mod error;
mod hierarchy;
#[cfg(feature = "mock")]
pub mod mock;
mod policy;
mod reverse;
mod role;
mod snapshot;
pub mod store;
mod subject;

pub use acl::Acl;
#[cfg(feature = "refresh")]
pub use acl::AclRefresher;
pub use authorizer::RoleAuthorizer;
pub use binding::RoleBinding;
pub use config::{
    AclConfig, BindingsConfig, EdgeConfig, HierarchyConfig, LoadedConfig, RequirementsConfig,
};
pub use error::AclError;
pub use hierarchy::{Hierarchy, ParentRule};
pub use policy::{AclPolicy, AclPolicyBuilder};
#[cfg(feature = "postgres")]
pub use portcullis_sql::postgres::ChangeListener;
pub use reverse::{Holding, Permission};
pub use role::{Role, RoleName, Roles};
pub use snapshot::{AclSnapshot, EffectiveRole};
#[cfg(feature = "postgres")]
pub use store::PostgresAclStore;
#[cfg(feature = "sqlite")]
pub use store::SqliteAclStore;
pub use store::{
    AclStore, BindingFilter, BindingKey, MemoryAclStore, Page, PageRequest, StoreContents,
};
pub use subject::{Subject, SubjectKind};

/// The `async_trait` attribute this crate's traits are declared with, re-exported so an
/// implementation outside the crate need not depend on (and match the version of)
/// `async-trait` itself: `#[portcullis_acl::async_trait]`.
pub use async_trait::async_trait;
