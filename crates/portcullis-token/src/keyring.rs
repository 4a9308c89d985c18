//! [`SessionKeyRing`]: the session keys of one issuer over time — the one that signs now,
//! and the older (and next) ones that still verify — swapped in whole while requests run, so
//! that keys can rotate without signing anyone out and several instances can share them.

use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwap;
use serde_json::{Value, json};

use crate::jwt::KeySet;
use crate::{AuthError, SessionAlgorithm, SessionKey};

/// One key of a [`SessionKeyRing`], with its windows: it signs from `signs_from` until
/// `signs_until`, and verifies until `verifies_until` (the end of its signing window plus the
/// longest life of a token it signed). A key whose signing window has not begun yet already
/// verifies: it is published ahead, so that every verifier knows it before its first token.
#[derive(Debug, Clone)]
pub struct RingKey {
    /// The key.
    pub key: SessionKey,
    /// When it starts signing.
    pub signs_from: SystemTime,
    /// When it stops signing.
    pub signs_until: SystemTime,
    /// When the last token it signed has expired: it is dropped after this.
    pub verifies_until: SystemTime,
}

impl RingKey {
    /// A key that signs from now on, forever (a ring of one fixed key).
    pub fn forever(key: SessionKey) -> Self {
        RingKey {
            key,
            signs_from: SystemTime::UNIX_EPOCH,
            signs_until: far_future(),
            verifies_until: far_future(),
        }
    }

    fn signs_at(&self, now: SystemTime) -> bool {
        self.signs_from <= now && now < self.signs_until
    }
}

/// A time no clock reaches (about the year 2500).
fn far_future() -> SystemTime {
    SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(16_725_225_600)
}

#[derive(Debug)]
struct RingState {
    algorithm: SessionAlgorithm,
    /// The key whose signing window begins last.
    newest: SessionKey,
    keys: Vec<RingKey>,
    /// Every key, as the verifier's key set.
    verify: Arc<KeySet>,
}

impl RingState {
    fn new(keys: Vec<RingKey>) -> Result<Self, AuthError> {
        let newest = keys
            .iter()
            .max_by_key(|k| k.signs_from)
            .map(|k| k.key.clone())
            .ok_or_else(|| AuthError::Config("a session key ring needs at least one key".into()))?;
        let algorithm = newest.algorithm();
        if keys.iter().any(|k| k.key.algorithm() != algorithm) {
            return Err(AuthError::Config(
                "every key of a session key ring has the same algorithm".into(),
            ));
        }
        let mut verify = KeySet::default();
        for k in &keys {
            verify.push_single(
                k.key.kid().to_owned(),
                k.key.algorithm().into(),
                k.key.decoding_key().clone(),
            );
        }
        Ok(RingState {
            algorithm,
            newest,
            keys,
            verify: Arc::new(verify),
        })
    }
}

/// The keys of a session issuer: the newest whose signing window holds the current time
/// signs, every key in the ring verifies. Clones share the ring: [`replace`](Self::replace)
/// on one (a refresher reading the keys from a database) is seen at once by every
/// [`SessionIssuer`](crate::SessionIssuer) and verifier built on it, without a lock on the
/// request path.
///
/// Every key has the same algorithm. `Debug` shows key ids and windows, never key material.
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use portcullis_token::{RingKey, SessionAlgorithm, SessionIssuer, SessionKey, SessionKeyRing};
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), portcullis_token::AuthError> {
/// let now = SystemTime::now();
/// let old = SessionKey::generate(SessionAlgorithm::EdDSA)?;
/// let ring = SessionKeyRing::new(vec![RingKey {
///     key: old.clone(),
///     signs_from: now - Duration::from_secs(60),
///     signs_until: now + Duration::from_secs(3600),
///     verifies_until: now + Duration::from_secs(7200),
/// }])?;
/// let issuer = SessionIssuer::with_ring(ring.clone(), "https://broker.example", "broker")?;
/// let verifier = issuer.verifier()?;
/// let before = issuer.issue("alice", &[])?;
///
/// // A new key takes over; the old one still verifies what it signed.
/// let new = SessionKey::generate(SessionAlgorithm::EdDSA)?;
/// ring.replace(vec![
///     RingKey { key: old, signs_from: now - Duration::from_secs(60), signs_until: now,
///               verifies_until: now + Duration::from_secs(3600) },
///     RingKey { key: new.clone(), signs_from: now, signs_until: now + Duration::from_secs(3600),
///               verifies_until: now + Duration::from_secs(7200) },
/// ])?;
/// assert_eq!(issuer.key().kid(), new.kid());
/// let after = issuer.issue("bob", &[])?;
/// assert_eq!(verifier.verify(before.expose()).await?.subject(), "alice");
/// assert_eq!(verifier.verify(after.expose()).await?.subject(), "bob");
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct SessionKeyRing {
    state: Arc<ArcSwap<RingState>>,
}

impl SessionKeyRing {
    /// A ring of these keys.
    ///
    /// # Errors
    ///
    /// [`AuthError::Config`] for no keys, or keys of different algorithms.
    pub fn new(keys: Vec<RingKey>) -> Result<Self, AuthError> {
        Ok(SessionKeyRing {
            state: Arc::new(ArcSwap::from_pointee(RingState::new(keys)?)),
        })
    }

    /// A ring of one key that signs forever.
    pub fn fixed(key: SessionKey) -> Self {
        let algorithm = key.algorithm();
        let mut verify = KeySet::default();
        verify.push_single(
            key.kid().to_owned(),
            algorithm.into(),
            key.decoding_key().clone(),
        );
        SessionKeyRing {
            state: Arc::new(ArcSwap::from_pointee(RingState {
                algorithm,
                newest: key.clone(),
                keys: vec![RingKey::forever(key)],
                verify: Arc::new(verify),
            })),
        }
    }

    /// Replaces every key at once; what signs and verifies changes for every clone.
    ///
    /// # Errors
    ///
    /// [`AuthError::Config`] for no keys, or keys of another algorithm than the ring's (the
    /// issuer's rules name one algorithm): the ring is left as it was.
    pub fn replace(&self, keys: Vec<RingKey>) -> Result<(), AuthError> {
        let state = RingState::new(keys)?;
        if state.algorithm != self.algorithm() {
            return Err(AuthError::Config(format!(
                "a session key ring of {:?} keys cannot take {:?} keys",
                self.algorithm(),
                state.algorithm
            )));
        }
        self.state.store(Arc::new(state));
        Ok(())
    }

    /// The algorithm of every key.
    pub fn algorithm(&self) -> SessionAlgorithm {
        self.state.load().algorithm
    }

    /// The key that signs at `now`: of those whose signing window holds `now`, the one that
    /// began last. `None` when no key signs then (the ring was not refreshed in time).
    pub fn signing_key(&self, now: SystemTime) -> Option<SessionKey> {
        self.state
            .load()
            .keys
            .iter()
            .filter(|k| k.signs_at(now))
            .max_by_key(|k| k.signs_from)
            .map(|k| k.key.clone())
    }

    /// The key signing at `now`, or else the newest key.
    pub(crate) fn current_or_newest(&self, now: SystemTime) -> SessionKey {
        self.signing_key(now)
            .unwrap_or_else(|| self.state.load().newest.clone())
    }

    /// The keys and their windows.
    pub fn keys(&self) -> Vec<RingKey> {
        self.state.load().keys.clone()
    }

    /// Every key's public half as a JWKS document (for verifiers elsewhere, such as region
    /// proxies); `None` for HS256, whose keys are secret.
    pub fn public_jwks(&self) -> Option<Value> {
        let state = self.state.load();
        let keys: Option<Vec<Value>> = state
            .keys
            .iter()
            .map(|k| {
                k.key
                    .public_jwks()
                    .and_then(|doc| doc.get("keys")?.get(0).cloned())
            })
            .collect();
        keys.map(|keys| json!({ "keys": keys }))
    }

    /// The verification key set, as it is now.
    pub(crate) fn key_set(&self) -> Arc<KeySet> {
        self.state.load().verify.clone()
    }
}
