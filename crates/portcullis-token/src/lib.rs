#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
// docs.rs builds with `--cfg docsrs` on nightly: badges name the feature each item needs.
#![cfg_attr(docsrs, feature(doc_cfg))]

mod algorithm;
mod chain;
mod config;
mod credential;
mod error;
#[cfg(feature = "postgres")]
pub mod fleet;
mod format;
mod http;
mod jws;
mod jwt;
mod keyring;
#[cfg(feature = "mock")]
pub mod mock;
#[cfg(feature = "oidc")]
mod opaque;
mod sealing;
mod session;
pub mod store;
mod tokens;
mod verifier;

pub use algorithm::Algorithm;
pub use chain::{ANONYMOUS_METHOD, ANONYMOUS_SUBJECT, AuthChain, Authenticator};
pub use config::{
    AuthConfig, ChainResources, IntrospectionMethod, MethodConfig, OidcMethod, SessionJwtMethod,
    UserinfoMethod,
};
pub use credential::{Credential, MAX_HEADER_LEN, Scheme, VerifiedPeer};
pub use error::AuthError;
#[cfg(feature = "postgres")]
pub use fleet::{PostgresLoginAttempts, PostgresSessionKeys, PostgresSpentIds, SessionKeyPolicy};
pub use format::{TOKEN_LEN, TokenKind, TokenSecret, decode_token};
#[cfg(feature = "oidc")]
pub use http::HttpClient;
pub use http::HttpOptions;
pub use jwt::{JwtRules, KeySet, MAX_JWT_LEN, MAX_KEYS, MAX_LEEWAY};
pub use keyring::{RingKey, SessionKeyRing};
#[cfg(feature = "oidc")]
pub use opaque::{MAX_CACHE_TTL, OpaqueEndpoint, OpaqueRules, OpaqueVerifier};
#[cfg(feature = "postgres")]
pub use portcullis_sql::postgres::ChangeListener;
pub use sealing::SealingKey;
pub use session::{
    LoginAttempts, MAX_SESSION_TTL, MemoryLoginAttempts, PasswordLogin, SessionAlgorithm,
    SessionIssuer, SessionKey, SessionToken, session_rules,
};
#[cfg(feature = "postgres")]
pub use store::PostgresTokenStore;
#[cfg(feature = "sqlite")]
pub use store::SqliteTokenStore;
pub use store::{MemoryTokenStore, TokenHash, TokenId, TokenRecord, TokenScope, TokenStore};
pub use tokens::{
    IssueRequest, IssuedToken, MAX_TOKEN_TTL, TokenAuthenticator, TokenFilter, TokenKey,
    TokenOptions, TokenRefresher, Tokens,
};
pub use verifier::{JwtVerifier, MAX_VERIFIED_AGE};
#[cfg(feature = "oidc")]
pub use verifier::{OidcOptions, ProviderMetadata, RemoteKeys};

/// The `async_trait` attribute this crate's traits are declared with, re-exported so an
/// implementation outside the crate need not depend on (and match the version of)
/// `async-trait` itself: `#[portcullis_token::async_trait]`.
pub use async_trait::async_trait;
