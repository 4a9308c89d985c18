//! The in-memory store: for tests, examples and single-process embedders that seed their
//! bindings from configuration.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;
use portcullis_core::Resource;

use super::{AclStore, BindingFilter, BindingKey, Page, PageRequest, StoreContents};
use crate::{AclError, RoleBinding, RoleName, Subject};

#[derive(Debug, Default)]
struct State {
    bindings: BTreeMap<BindingKey, RoleName>,
    revision: u64,
}

/// Role bindings in a `BTreeMap` behind a mutex. Not durable: everything is lost with the
/// process.
#[derive(Debug, Default)]
pub struct MemoryAclStore {
    state: Mutex<State>,
}

impl MemoryAclStore {
    /// An empty store.
    #[must_use]
    pub fn new() -> Self {
        MemoryAclStore::default()
    }

    /// A store holding `bindings`.
    ///
    /// # Errors
    ///
    /// [`AclError::DuplicateBinding`] if two bind one subject on one resource.
    pub fn with_bindings(
        bindings: impl IntoIterator<Item = RoleBinding>,
    ) -> Result<Self, AclError> {
        let store = MemoryAclStore::new();
        {
            let mut state = store.lock();
            for binding in bindings {
                insert(&mut state, &binding)?;
            }
        }
        Ok(store)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state is never left half-changed across a panic (each change is one map
        // operation plus a counter bump), so a poisoned lock is still consistent.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn key(subject: &Subject, resource: &Resource) -> BindingKey {
    BindingKey {
        resource: resource.clone(),
        subject: subject.clone(),
    }
}

fn binding(key: &BindingKey, role: &RoleName) -> RoleBinding {
    RoleBinding::new(key.subject.clone(), key.resource.clone(), role.clone())
}

fn insert(state: &mut State, new: &RoleBinding) -> Result<(), AclError> {
    let key = BindingKey::of(new);
    if state.bindings.contains_key(&key) {
        return Err(AclError::DuplicateBinding {
            subject: key.subject,
            resource: key.resource,
        });
    }
    state.bindings.insert(key, new.role.clone());
    state.revision += 1;
    Ok(())
}

#[async_trait]
impl AclStore for MemoryAclStore {
    async fn insert(&self, binding: &RoleBinding) -> Result<(), AclError> {
        insert(&mut self.lock(), binding)
    }

    async fn update(&self, new: &RoleBinding) -> Result<RoleBinding, AclError> {
        let mut state = self.lock();
        let key = BindingKey::of(new);
        let Some(role) = state.bindings.get_mut(&key) else {
            return Err(AclError::BindingNotFound {
                subject: key.subject,
                resource: key.resource,
            });
        };
        let old = std::mem::replace(role, new.role.clone());
        state.revision += 1;
        Ok(binding(&key, &old))
    }

    async fn delete(
        &self,
        subject: &Subject,
        resource: &Resource,
    ) -> Result<RoleBinding, AclError> {
        let mut state = self.lock();
        let key = key(subject, resource);
        let role = state
            .bindings
            .remove(&key)
            .ok_or_else(|| AclError::BindingNotFound {
                subject: subject.clone(),
                resource: resource.clone(),
            })?;
        state.revision += 1;
        Ok(binding(&key, &role))
    }

    async fn get(
        &self,
        subject: &Subject,
        resource: &Resource,
    ) -> Result<Option<RoleBinding>, AclError> {
        let key = key(subject, resource);
        Ok(self
            .lock()
            .bindings
            .get(&key)
            .map(|role| binding(&key, role)))
    }

    async fn list(&self, filter: &BindingFilter, page: &PageRequest) -> Result<Page, AclError> {
        page.validate()?;
        let state = self.lock();
        let start = page
            .after
            .as_ref()
            .map_or(Bound::Unbounded, Bound::Excluded);
        let fetched = state
            .bindings
            .range((start, Bound::Unbounded))
            .map(|(key, role)| binding(key, role))
            .filter(|b| filter.matches(b))
            .take(
                usize::try_from(page.limit)
                    .unwrap_or(usize::MAX)
                    .saturating_add(1),
            )
            .collect();
        Ok(Page::from_fetched(fetched, page.limit))
    }

    async fn revision(&self) -> Result<u64, AclError> {
        Ok(self.lock().revision)
    }

    async fn load_all(&self) -> Result<StoreContents, AclError> {
        let state = self.lock();
        Ok(StoreContents {
            revision: state.revision,
            bindings: state
                .bindings
                .iter()
                .map(|(key, role)| binding(key, role))
                .collect(),
        })
    }
}
