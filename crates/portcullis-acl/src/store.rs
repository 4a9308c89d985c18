//! Where role bindings live: the [`AclStore`] trait, paging, and its implementations.

use std::fmt;

use async_trait::async_trait;
use portcullis_core::Resource;
use serde::{Deserialize, Serialize};

use crate::{AclError, RoleBinding, Subject, SubjectKind};

mod memory;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod sql;

pub use memory::MemoryAclStore;
#[cfg(feature = "sqlite")]
pub use sql::SqliteAclStore;
#[cfg(feature = "postgres")]
pub use sql::{CHANGE_CHANNEL, PostgresAclStore};

/// The largest page a store returns.
pub const MAX_PAGE_LIMIT: u32 = 1000;

/// Which bindings to list; every field left `None` matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BindingFilter {
    /// Only bindings on exactly this resource.
    pub resource: Option<Resource>,
    /// Only bindings of this subject.
    pub subject: Option<Subject>,
    /// Only bindings of subjects of this kind (Teletraan's user_roles / group_roles /
    /// token_roles lists).
    pub subject_kind: Option<SubjectKind>,
}

impl BindingFilter {
    /// Whether `binding` passes the filter.
    #[must_use]
    pub fn matches(&self, binding: &RoleBinding) -> bool {
        self.resource
            .as_ref()
            .is_none_or(|r| r == &binding.resource)
            && self.subject.as_ref().is_none_or(|s| s == &binding.subject)
            && self
                .subject_kind
                .is_none_or(|k| k == binding.subject.kind())
    }
}

/// The position of a binding in list order: by resource (kind, id), then subject (kind,
/// name), comparing bytes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct BindingKey {
    /// The binding's resource.
    pub resource: Resource,
    /// The binding's subject.
    pub subject: Subject,
}

impl BindingKey {
    /// The key of `binding`.
    #[must_use]
    pub fn of(binding: &RoleBinding) -> Self {
        BindingKey {
            resource: binding.resource.clone(),
            subject: binding.subject.clone(),
        }
    }
}

/// Which page to list: up to `limit` bindings after `after` (keyset paging, stable under
/// concurrent changes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PageRequest {
    /// Start after this key; `None` starts at the beginning.
    pub after: Option<BindingKey>,
    /// At most this many bindings, 1..=[`MAX_PAGE_LIMIT`].
    pub limit: u32,
}

impl PageRequest {
    /// The first page of `limit` bindings.
    #[must_use]
    pub fn first(limit: u32) -> Self {
        PageRequest { after: None, limit }
    }

    /// Checks the limit.
    ///
    /// # Errors
    ///
    /// [`AclError::PageLimit`] when it is 0 or above [`MAX_PAGE_LIMIT`].
    pub fn validate(&self) -> Result<(), AclError> {
        if (1..=MAX_PAGE_LIMIT).contains(&self.limit) {
            Ok(())
        } else {
            Err(AclError::PageLimit {
                limit: self.limit,
                max: MAX_PAGE_LIMIT,
            })
        }
    }
}

/// One page of bindings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Page {
    /// The bindings, in key order.
    pub bindings: Vec<RoleBinding>,
    /// The request for the next page, if there may be more.
    pub next: Option<PageRequest>,
}

impl Page {
    /// Builds a page from up to `limit + 1` fetched bindings: the extra one only says that
    /// another page exists.
    pub(crate) fn from_fetched(mut fetched: Vec<RoleBinding>, limit: u32) -> Self {
        let limit = usize::try_from(limit).unwrap_or(usize::MAX);
        let more = fetched.len() > limit;
        fetched.truncate(limit);
        let next = more
            .then(|| fetched.last())
            .flatten()
            .map(|last| PageRequest {
                after: Some(BindingKey::of(last)),
                limit: u32::try_from(limit).unwrap_or(MAX_PAGE_LIMIT),
            });
        Page {
            bindings: fetched,
            next,
        }
    }
}

/// Everything a store holds, with the revision it was read at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreContents {
    /// The store's revision, read *before* the bindings, so a change that lands in between
    /// only makes the next refresh reload once more.
    pub revision: u64,
    /// All bindings.
    pub bindings: Vec<RoleBinding>,
}

/// Durable storage for role bindings. Every change bumps a revision number, which lets
/// instances sharing one store notice changes cheaply.
///
/// A subject has at most one role per resource: [`insert`](AclStore::insert) refuses a
/// second, [`update`](AclStore::update) changes the existing one.
#[async_trait]
pub trait AclStore: Send + Sync + fmt::Debug {
    /// Adds a binding.
    ///
    /// # Errors
    ///
    /// [`AclError::DuplicateBinding`] if the subject already has a role on the resource;
    /// [`AclError::Store`] on failure.
    async fn insert(&self, binding: &RoleBinding) -> Result<(), AclError>;

    /// Changes the role of an existing binding, returning the binding as it was.
    ///
    /// # Errors
    ///
    /// [`AclError::BindingNotFound`] if there is none; [`AclError::Store`] on failure.
    async fn update(&self, binding: &RoleBinding) -> Result<RoleBinding, AclError>;

    /// Removes a binding, returning it.
    ///
    /// # Errors
    ///
    /// [`AclError::BindingNotFound`] if there is none; [`AclError::Store`] on failure.
    async fn delete(&self, subject: &Subject, resource: &Resource)
    -> Result<RoleBinding, AclError>;

    /// The binding of `subject` on `resource`, if any.
    ///
    /// # Errors
    ///
    /// [`AclError::Store`] on failure.
    async fn get(
        &self,
        subject: &Subject,
        resource: &Resource,
    ) -> Result<Option<RoleBinding>, AclError>;

    /// A page of the bindings that pass `filter`, in [`BindingKey`] order.
    ///
    /// # Errors
    ///
    /// [`AclError::PageLimit`] for a bad limit; [`AclError::Store`] on failure.
    async fn list(&self, filter: &BindingFilter, page: &PageRequest) -> Result<Page, AclError>;

    /// The current revision: it changes whenever the bindings do.
    ///
    /// # Errors
    ///
    /// [`AclError::Store`] on failure.
    async fn revision(&self) -> Result<u64, AclError>;

    /// Every binding, for building a snapshot.
    ///
    /// # Errors
    ///
    /// [`AclError::Store`] on failure; [`AclError::Corrupt`] for rows that do not parse.
    async fn load_all(&self) -> Result<StoreContents, AclError>;
}
