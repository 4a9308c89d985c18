#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
// docs.rs builds with `--cfg docsrs` on nightly: badges name the feature each item needs.
#![cfg_attr(docsrs, feature(doc_cfg))]

mod cache;
mod error;
#[cfg(feature = "ldap")]
mod ldap;
#[cfg(feature = "mock")]
pub mod mock;
mod password;
mod static_dir;

pub use cache::{CachingDirectory, MAX_DIRECTORY_TTL};
pub use error::DirectoryError;
#[cfg(feature = "ldap")]
pub use ldap::{GroupMembership, LdapConfig, LdapDirectory};
pub use password::{MAX_PASSWORD_LEN, Password, PasswordHash};
pub use static_dir::{StaticDirectory, StaticDirectoryConfig, StaticUser};

/// The `async_trait` attribute this crate's traits are declared with, re-exported so an
/// implementation outside the crate need not depend on (and match the version of)
/// `async-trait` itself: `#[portcullis_directory::async_trait]`.
pub use async_trait::async_trait;

/// A person or service account as the directory knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectoryUser {
    /// The login name (`uid` in LDAP).
    pub name: String,
    /// A human-readable name, when the directory has one.
    pub display_name: Option<String>,
    /// The names of the groups the user belongs to, sorted, without duplicates.
    pub groups: Vec<String>,
}

/// Where users, their passwords and their groups live: LDAP in production (`LdapDirectory`,
/// feature `ldap`), [`StaticDirectory`] in tests and examples, either behind a
/// [`CachingDirectory`].
///
/// Implementations are `Send + Sync` and object safe, so a service holds an
/// `Arc<dyn Directory>`. A wrong password and an unknown user give the *same* error,
/// [`DirectoryError::InvalidCredentials`], so callers cannot tell which one it was.
#[async_trait]
pub trait Directory: Send + Sync + std::fmt::Debug {
    /// Checks `password` for `user` and returns the user with their groups.
    ///
    /// # Errors
    ///
    /// [`DirectoryError::InvalidCredentials`] for an unknown user or a wrong password;
    /// [`DirectoryError::Unavailable`] when the directory cannot be reached.
    async fn authenticate(
        &self,
        user: &str,
        password: &Password,
    ) -> Result<DirectoryUser, DirectoryError>;

    /// The groups `user` belongs to.
    ///
    /// # Errors
    ///
    /// [`DirectoryError::UnknownUser`] if the directory has no such user;
    /// [`DirectoryError::Unavailable`] when it cannot be reached.
    async fn groups_of(&self, user: &str) -> Result<Vec<String>, DirectoryError>;

    /// A service account by name, or `None` if there is none.
    ///
    /// # Errors
    ///
    /// [`DirectoryError::Unavailable`] when the directory cannot be reached.
    async fn service_account(&self, name: &str) -> Result<Option<DirectoryUser>, DirectoryError>;
}
