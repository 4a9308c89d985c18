//! [`mockall`] mocks of this crate's traits (feature `mock`), for unit tests of code that
//! takes an [`AclStore`] (a failing store, say). Integration tests should use the memory,
//! SQLite or PostgreSQL stores.
//!
//! ```
//! use portcullis_acl::mock::MockAclStore;
//! use portcullis_acl::{AclError, AclStore};
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let mut store = MockAclStore::new();
//! store
//!     .expect_revision()
//!     .returning(|| Err(AclError::Store("the database is down".into())));
//! assert!(store.revision().await.is_err());
//! # }
//! ```

#![allow(missing_docs, reason = "mockall generates the items")]

use async_trait::async_trait;
use portcullis_core::Resource;

use crate::{
    AclError, AclStore, BindingFilter, Page, PageRequest, RoleBinding, StoreContents, Subject,
};

mockall::mock! {
    /// A mock [`AclStore`].
    pub AclStore {}

    #[async_trait]
    impl AclStore for AclStore {
        async fn insert(&self, binding: &RoleBinding) -> Result<(), AclError>;
        async fn update(&self, binding: &RoleBinding) -> Result<RoleBinding, AclError>;
        async fn delete(&self, subject: &Subject, resource: &Resource)
            -> Result<RoleBinding, AclError>;
        async fn get(
            &self,
            subject: &Subject,
            resource: &Resource,
        ) -> Result<Option<RoleBinding>, AclError>;
        async fn list(&self, filter: &BindingFilter, page: &PageRequest) -> Result<Page, AclError>;
        async fn revision(&self) -> Result<u64, AclError>;
        async fn load_all(&self) -> Result<StoreContents, AclError>;
    }
}

impl std::fmt::Debug for MockAclStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MockAclStore")
    }
}
