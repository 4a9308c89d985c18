//! [`mockall`] mocks of this crate's traits (feature `mock`), for unit tests of code that
//! takes a [`Directory`]. Integration tests should use a real directory (the static one, or
//! a real `slapd` for LDAP).
//!
//! ```
//! use portcullis_directory::mock::MockDirectory;
//! use portcullis_directory::{Directory, DirectoryError};
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let mut directory = MockDirectory::new();
//! directory
//!     .expect_groups_of()
//!     .withf(|user| user == "alice")
//!     .returning(|_| Ok(vec!["deployers".to_owned()]));
//! directory
//!     .expect_groups_of()
//!     .returning(|user| Err(DirectoryError::UnknownUser(user.to_owned())));
//! assert_eq!(directory.groups_of("alice").await.unwrap(), ["deployers"]);
//! assert!(directory.groups_of("mallory").await.is_err());
//! # }
//! ```

#![allow(missing_docs, reason = "mockall generates the items")]

use async_trait::async_trait;

use crate::{Directory, DirectoryError, DirectoryUser, Password};

mockall::mock! {
    /// A mock [`Directory`].
    pub Directory {}

    #[async_trait]
    impl Directory for Directory {
        async fn authenticate(
            &self,
            user: &str,
            password: &Password,
        ) -> Result<DirectoryUser, DirectoryError>;
        async fn groups_of(&self, user: &str) -> Result<Vec<String>, DirectoryError>;
        async fn service_account(
            &self,
            name: &str,
        ) -> Result<Option<DirectoryUser>, DirectoryError>;
    }
}

impl std::fmt::Debug for MockDirectory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MockDirectory")
    }
}
