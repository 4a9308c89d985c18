//! Where issued tokens are kept: only their HMAC, never the token.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use portcullis_core::Resource;

use crate::{AuthError, TokenKind};

#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod sql;
#[cfg(feature = "sqlite")]
pub use sql::SqliteTokenStore;
#[cfg(feature = "postgres")]
pub use sql::{CHANGE_CHANNEL, PostgresTokenStore};

/// The id of an issued token (`tok_` + 32 hex digits): shown in listings and used to revoke,
/// never enough to authenticate (Vault calls this an accessor).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TokenId(String);

impl TokenId {
    /// A fresh random id.
    ///
    /// # Errors
    ///
    /// [`AuthError::Crypto`] if the random source fails.
    pub fn generate() -> Result<Self, AuthError> {
        let mut bytes = [0u8; 16];
        aws_lc_rs::rand::SecureRandom::fill(&aws_lc_rs::rand::SystemRandom::new(), &mut bytes)
            .map_err(|_| AuthError::Crypto("the system random source failed".into()))?;
        Ok(TokenId(format!("tok_{}", hex::encode(bytes))))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for TokenId {
    type Err = AuthError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let valid = s.len() == 36
            && s.starts_with("tok_")
            && s.bytes()
                .skip(4)
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        if valid {
            Ok(TokenId(s.to_owned()))
        } else {
            Err(AuthError::InvalidRequest(
                "a token id is `tok_` followed by 32 lower-case hex digits".into(),
            ))
        }
    }
}

impl fmt::Display for TokenId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// HMAC-SHA256 of a token under the server's [`TokenKey`](crate::TokenKey). `Debug` shows
/// only its first bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TokenHash(pub(crate) [u8; 32]);

impl TokenHash {
    /// The hash as hex, as SQL stores keep it.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parses [`TokenHash::to_hex`].
    ///
    /// # Errors
    ///
    /// [`AuthError::Store`] if it is not 64 hex digits.
    pub fn from_hex(text: &str) -> Result<Self, AuthError> {
        let mut hash = [0u8; 32];
        hex::decode_to_slice(text, &mut hash)
            .map_err(|_| AuthError::Store("a stored token hash is not 64 hex digits".into()))?;
        Ok(TokenHash(hash))
    }
}

impl fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown: String = self.to_hex().chars().take(8).collect();
        write!(f, "TokenHash({shown}…)")
    }
}

/// What a token may do: a role on a resource (Teletraan: OPERATOR on env `checkout`). The
/// role name is the embedder's (see `portcullis-acl`'s roles).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenScope {
    /// The resource.
    pub resource: Resource,
    /// The role on it.
    pub role: String,
}

/// One issued token as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRecord {
    /// Its id (not a secret).
    pub id: TokenId,
    /// Script or personal.
    pub kind: TokenKind,
    /// Its name: for a script token, the principal it authenticates as.
    pub name: String,
    /// Who created it (script tokens) or whom it authenticates (personal tokens).
    pub owner: String,
    /// What it is for.
    pub scope: Option<TokenScope>,
    /// When it was issued.
    pub created_at: SystemTime,
    /// When it stops working. Every token expires.
    pub expires_at: SystemTime,
    /// When it last authenticated a request (written back in batches).
    pub last_used_at: Option<SystemTime>,
    /// When it was revoked.
    pub revoked_at: Option<SystemTime>,
    /// The HMAC of the token.
    pub hash: TokenHash,
}

impl TokenRecord {
    /// Whether it can still authenticate at `now`.
    pub fn is_active_at(&self, now: SystemTime) -> bool {
        self.revoked_at.is_none() && now < self.expires_at
    }
}

/// Seconds since the epoch, as stores keep times.
pub(crate) fn to_secs(time: SystemTime) -> i64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

pub(crate) fn from_secs(secs: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).unwrap_or(0))
}

/// Where token records live. Async, object safe. The [`Tokens`](crate::Tokens) service
/// reads them all into memory and checks tokens there; stores see writes only.
#[async_trait]
pub trait TokenStore: Send + Sync + fmt::Debug {
    /// Stores a new record.
    ///
    /// # Errors
    ///
    /// [`AuthError::Conflict`] if the id or hash exists; [`AuthError::Store`] otherwise.
    async fn insert(&self, record: &TokenRecord) -> Result<(), AuthError>;

    /// Every record, revoked and expired ones included.
    ///
    /// # Errors
    ///
    /// [`AuthError::Store`].
    async fn all(&self) -> Result<Vec<TokenRecord>, AuthError>;

    /// Marks a token revoked at `at`; `false` if there is no such token or it was revoked
    /// already.
    ///
    /// # Errors
    ///
    /// [`AuthError::Store`].
    async fn revoke(&self, id: &TokenId, at: SystemTime) -> Result<bool, AuthError>;

    /// Records last-use times (a batch; later times win).
    ///
    /// # Errors
    ///
    /// [`AuthError::Store`].
    async fn record_use(&self, uses: &[(TokenId, SystemTime)]) -> Result<(), AuthError>;

    /// Deletes records that expired or were revoked before `before`; returns how many.
    ///
    /// # Errors
    ///
    /// [`AuthError::Store`].
    async fn purge(&self, before: SystemTime) -> Result<u64, AuthError>;
}

/// A [`TokenStore`] in memory, for tests and single-process use without persistence.
#[derive(Debug, Default)]
pub struct MemoryTokenStore {
    records: Mutex<BTreeMap<TokenId, TokenRecord>>,
}

impl MemoryTokenStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<TokenId, TokenRecord>> {
        self.records
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[async_trait]
impl TokenStore for MemoryTokenStore {
    async fn insert(&self, record: &TokenRecord) -> Result<(), AuthError> {
        let mut records = self.lock();
        if records.contains_key(&record.id) || records.values().any(|r| r.hash == record.hash) {
            return Err(AuthError::Conflict(format!("token {} exists", record.id)));
        }
        records.insert(record.id.clone(), record.clone());
        Ok(())
    }

    async fn all(&self) -> Result<Vec<TokenRecord>, AuthError> {
        Ok(self.lock().values().cloned().collect())
    }

    async fn revoke(&self, id: &TokenId, at: SystemTime) -> Result<bool, AuthError> {
        Ok(match self.lock().get_mut(id) {
            Some(record) if record.revoked_at.is_none() => {
                record.revoked_at = Some(at);
                true
            }
            _ => false,
        })
    }

    async fn record_use(&self, uses: &[(TokenId, SystemTime)]) -> Result<(), AuthError> {
        let mut records = self.lock();
        for (id, at) in uses {
            if let Some(record) = records.get_mut(id)
                && record.last_used_at.is_none_or(|t| t < *at)
            {
                record.last_used_at = Some(*at);
            }
        }
        Ok(())
    }

    async fn purge(&self, before: SystemTime) -> Result<u64, AuthError> {
        let mut records = self.lock();
        let count = records.len();
        records.retain(|_, r| r.expires_at >= before && r.revoked_at.is_none_or(|t| t >= before));
        Ok((count - records.len()) as u64)
    }
}
