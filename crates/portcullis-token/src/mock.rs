//! [`mockall`] mocks of this crate's traits (feature `mock`), for unit tests of code that
//! takes an [`Authenticator`] or a [`TokenStore`]. Integration tests should use the real
//! implementations ([`MemoryTokenStore`](crate::MemoryTokenStore) or a SQL store, a real
//! OIDC provider).
//!
//! ```
//! use portcullis_core::{AuthMethod, Principal, PrincipalKind};
//! use portcullis_token::mock::MockAuthenticator;
//! use portcullis_token::{AuthError, Authenticator, Credential};
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mut authenticator = MockAuthenticator::new();
//! authenticator
//!     .expect_authenticate()
//!     .withf(|credential| credential.secret() == "let-me-in")
//!     .returning(|_| {
//!         Ok(Principal::builder(PrincipalKind::User, "alice", AuthMethod::OIDC).build()?)
//!     });
//! authenticator
//!     .expect_authenticate()
//!     .returning(|_| Err(AuthError::InvalidToken));
//!
//! let good = Credential::from_authorization(b"Bearer let-me-in")?;
//! assert_eq!(authenticator.authenticate(&good).await?.subject(), "alice");
//! let bad = Credential::from_authorization(b"Bearer guess")?;
//! assert!(authenticator.authenticate(&bad).await.is_err());
//! // Methods without an expectation keep the trait's defaults: nobody without a credential.
//! assert!(authenticator.without_credential().await.is_err());
//! # Ok(()) }
//! ```

#![allow(missing_docs, reason = "mockall generates the items")]

use std::time::SystemTime;

use async_trait::async_trait;
use portcullis_core::Principal;

use crate::{AuthError, Authenticator, Credential, TokenId, TokenRecord, TokenStore};

mockall::mock! {
    /// A mock [`Authenticator`]: set expectations on `name` and `authenticate`;
    /// `without_credential` and `authenticate_peer` keep their defaults (refusing).
    pub Authenticator {}

    #[async_trait]
    impl Authenticator for Authenticator {
        fn name(&self) -> &str;
        async fn authenticate(&self, credential: &Credential) -> Result<Principal, AuthError>;
    }
}

mockall::mock! {
    /// A mock [`TokenStore`].
    pub TokenStore {}

    #[async_trait]
    impl TokenStore for TokenStore {
        async fn insert(&self, record: &TokenRecord) -> Result<(), AuthError>;
        async fn all(&self) -> Result<Vec<TokenRecord>, AuthError>;
        async fn revoke(&self, id: &TokenId, at: SystemTime) -> Result<bool, AuthError>;
        async fn record_use(&self, uses: &[(TokenId, SystemTime)]) -> Result<(), AuthError>;
        async fn purge(&self, before: SystemTime) -> Result<u64, AuthError>;
    }
}

impl std::fmt::Debug for MockAuthenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MockAuthenticator")
    }
}

impl std::fmt::Debug for MockTokenStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MockTokenStore")
    }
}
