//! Session JWTs this service issues after a password login (Doorman's flow), and the
//! verifier another service (a region proxy) uses to accept only them.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{DecodingKey, EncodingKey};
use portcullis_core::{AuthMethod, Clock, PrincipalKind, SystemClock};
use portcullis_directory::{Directory, DirectoryError, Password};
use ring::rand::SystemRandom;
use ring::signature::{self, KeyPair};
use serde_json::{Value, json};

use crate::jwt::JwtRules;
use crate::keyring::SessionKeyRing;
use crate::{Algorithm, AuthError, JwtVerifier, jws};

/// The signature algorithms a session key may use (a subset of [`Algorithm`]; more may be
/// added).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[non_exhaustive]
pub enum SessionAlgorithm {
    /// Ed25519 (the default): small keys, fast, deterministic.
    EdDSA,
    /// ECDSA P-256 with SHA-256.
    ES256,
    /// HMAC-SHA256: issuer and verifiers share the secret; only for a single trust domain.
    HS256,
}

impl From<SessionAlgorithm> for Algorithm {
    fn from(algorithm: SessionAlgorithm) -> Self {
        match algorithm {
            SessionAlgorithm::EdDSA => Algorithm::EdDSA,
            SessionAlgorithm::ES256 => Algorithm::ES256,
            SessionAlgorithm::HS256 => Algorithm::HS256,
        }
    }
}

/// A signing key for session JWTs. `Debug` shows the algorithm and key id only.
#[derive(Clone)]
pub struct SessionKey {
    algorithm: SessionAlgorithm,
    kid: String,
    secret: Vec<u8>,
    encoding: EncodingKey,
    decoding: DecodingKey,
    public_jwk: Option<Value>,
}

fn crypto(what: &str) -> impl Fn(ring::error::KeyRejected) -> AuthError + '_ {
    move |e| AuthError::Crypto(format!("{what}: {e}"))
}

fn kid_of(public: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, public);
    hex::encode(digest.as_ref().get(..8).unwrap_or_default())
}

impl SessionKey {
    /// A fresh key for `algorithm` (for HS256, 32 random bytes).
    ///
    /// # Errors
    ///
    /// [`AuthError::Crypto`] if key generation fails.
    pub fn generate(algorithm: SessionAlgorithm) -> Result<Self, AuthError> {
        let rng = SystemRandom::new();
        let material = match algorithm {
            SessionAlgorithm::EdDSA => signature::Ed25519KeyPair::generate_pkcs8(&rng)
                .map_err(|_| AuthError::Crypto("generating an Ed25519 key failed".into()))?
                .as_ref()
                .to_vec(),
            SessionAlgorithm::ES256 => signature::EcdsaKeyPair::generate_pkcs8(
                &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
                &rng,
            )
            .map_err(|_| AuthError::Crypto("generating a P-256 key failed".into()))?
            .as_ref()
            .to_vec(),
            SessionAlgorithm::HS256 => {
                let mut secret = vec![0u8; 32];
                ring::rand::SecureRandom::fill(&rng, &mut secret)
                    .map_err(|_| AuthError::Crypto("the system random source failed".into()))?;
                secret
            }
        };
        Self::from_secret(algorithm, &material)
    }

    /// A key from its secret material: PKCS#8 DER for EdDSA and ES256 (as
    /// [`SessionKey::secret_material`] returns), at least 32 bytes for HS256.
    ///
    /// # Errors
    ///
    /// [`AuthError::Crypto`] if the material is not a key of that algorithm.
    pub fn from_secret(algorithm: SessionAlgorithm, material: &[u8]) -> Result<Self, AuthError> {
        let (kid, decoding, public_jwk) = match algorithm {
            SessionAlgorithm::EdDSA => {
                let pair = signature::Ed25519KeyPair::from_pkcs8_maybe_unchecked(material)
                    .map_err(crypto("Ed25519 PKCS#8 key"))?;
                let public = pair.public_key().as_ref();
                let kid = kid_of(public);
                let jwk = json!({"kty": "OKP", "crv": "Ed25519", "x": URL_SAFE_NO_PAD.encode(public),
                                 "kid": kid, "alg": "EdDSA", "use": "sig"});
                (kid, DecodingKey::from_ed_der(public), Some(jwk))
            }
            SessionAlgorithm::ES256 => {
                let pair = signature::EcdsaKeyPair::from_pkcs8(
                    &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
                    material,
                    &SystemRandom::new(),
                )
                .map_err(crypto("P-256 PKCS#8 key"))?;
                let public = pair.public_key().as_ref();
                let kid = kid_of(public);
                // Uncompressed SEC1 point: 0x04 || x (32) || y (32).
                let (x, y) = public
                    .get(1..)
                    .unwrap_or_default()
                    .split_at(32.min(public.len().saturating_sub(1)));
                let jwk = json!({"kty": "EC", "crv": "P-256", "x": URL_SAFE_NO_PAD.encode(x),
                                 "y": URL_SAFE_NO_PAD.encode(y), "kid": kid, "alg": "ES256", "use": "sig"});
                (kid, DecodingKey::from_ec_der(public), Some(jwk))
            }
            SessionAlgorithm::HS256 => {
                if material.len() < 32 {
                    return Err(AuthError::Crypto(
                        "an HS256 session secret needs at least 32 bytes".into(),
                    ));
                }
                let tag = ring::hmac::sign(
                    &ring::hmac::Key::new(ring::hmac::HMAC_SHA256, material),
                    b"portcullis session key id",
                );
                (
                    kid_of(tag.as_ref()),
                    DecodingKey::from_secret(material),
                    None,
                )
            }
        };
        let encoding = match algorithm {
            SessionAlgorithm::EdDSA => EncodingKey::from_ed_der(material),
            SessionAlgorithm::ES256 => EncodingKey::from_ec_der(material),
            SessionAlgorithm::HS256 => EncodingKey::from_secret(material),
        };
        // Refuse now, not at the first login, material the signer cannot use.
        (jws::provider().signer_factory)(&Algorithm::from(algorithm).to_jwt(), &encoding)
            .map_err(|e| AuthError::Crypto(format!("{algorithm:?} signing key: {e}")))?;
        Ok(SessionKey {
            algorithm,
            kid,
            secret: material.to_vec(),
            encoding,
            decoding,
            public_jwk,
        })
    }

    /// The key that verifies its signatures.
    pub(crate) fn decoding_key(&self) -> &DecodingKey {
        &self.decoding
    }

    /// The secret material, to persist (PKCS#8 DER or the HMAC secret). Keep it secret.
    pub fn secret_material(&self) -> &[u8] {
        &self.secret
    }

    /// The algorithm.
    pub fn algorithm(&self) -> SessionAlgorithm {
        self.algorithm
    }

    /// The key id put in each token's header (derived from the public key).
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public key as a JWKS document, for verifiers elsewhere; `None` for HS256, whose
    /// key is secret.
    pub fn public_jwks(&self) -> Option<Value> {
        self.public_jwk.as_ref().map(|jwk| json!({"keys": [jwk]}))
    }
}

impl fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionKey")
            .field("algorithm", &self.algorithm)
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

/// A session JWT just issued. `Debug` hides the token.
#[derive(Clone)]
pub struct SessionToken {
    token: String,
    /// When it expires.
    pub expires_at: SystemTime,
}

impl SessionToken {
    /// The JWT, to hand to the client. Never log it.
    pub fn expose(&self) -> &str {
        &self.token
    }
}

impl fmt::Debug for SessionToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionToken")
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// The longest session a [`SessionIssuer`] hands out.
pub const MAX_SESSION_TTL: Duration = Duration::from_secs(24 * 3600);

/// Issues short-lived session JWTs (`iss`, `sub`, `aud`, `groups`, `iat`, `nbf`, `exp`,
/// `jti`).
///
/// ```
/// use portcullis_token::{SessionAlgorithm, SessionIssuer, SessionKey};
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), portcullis_token::AuthError> {
/// let issuer = SessionIssuer::new(
///     SessionKey::generate(SessionAlgorithm::EdDSA)?,
///     "https://broker.example",
///     "region-proxy",
/// )?;
/// let session = issuer.issue("alice", &["deployers".to_owned()])?;
/// let principal = issuer.verifier()?.verify(session.expose()).await?;
/// assert_eq!(principal.subject(), "alice");
/// assert!(principal.in_group("deployers"));
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct SessionIssuer {
    keys: SessionKeyRing,
    issuer: String,
    audience: String,
    ttl: Duration,
    clock: Arc<dyn Clock>,
}

impl SessionIssuer {
    /// An issuer of one-hour sessions for `audience`.
    ///
    /// # Errors
    ///
    /// [`AuthError::Config`] for an empty issuer or audience.
    pub fn new(
        key: SessionKey,
        issuer: impl Into<String>,
        audience: impl Into<String>,
    ) -> Result<Self, AuthError> {
        Self::with_ring(SessionKeyRing::fixed(key), issuer, audience)
    }

    /// An issuer of one-hour sessions for `audience` whose keys rotate: it signs with the
    /// ring's current key, and its [`verifier`](Self::verifier) accepts every key in the
    /// ring, as the ring is at the time of each check. Hand the ring to a refresher (such as
    /// `PostgresSessionKeys::spawn_refresher`, feature `postgres`) to share the keys between
    /// instances and rotate them.
    ///
    /// # Errors
    ///
    /// [`AuthError::Config`] for an empty issuer or audience.
    pub fn with_ring(
        keys: SessionKeyRing,
        issuer: impl Into<String>,
        audience: impl Into<String>,
    ) -> Result<Self, AuthError> {
        let (issuer, audience) = (issuer.into(), audience.into());
        if issuer.is_empty() || audience.is_empty() {
            return Err(AuthError::Config(
                "a session issuer needs an issuer and an audience".into(),
            ));
        }
        Ok(SessionIssuer {
            keys,
            issuer,
            audience,
            ttl: Duration::from_secs(3600),
            clock: Arc::new(SystemClock),
        })
    }

    /// Sets the session lifetime (at most [`MAX_SESSION_TTL`]).
    ///
    /// # Errors
    ///
    /// [`AuthError::Config`] for zero or more than a day.
    pub fn with_ttl(mut self, ttl: Duration) -> Result<Self, AuthError> {
        if ttl.as_secs() == 0 || ttl > MAX_SESSION_TTL {
            return Err(AuthError::Config(
                "a session lifetime must be between 1 s and 24 h".into(),
            ));
        }
        self.ttl = ttl;
        Ok(self)
    }

    /// Uses `clock` for issue and expiry times.
    #[must_use]
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The key signing now (for a ring with none signing now, its newest key).
    pub fn key(&self) -> SessionKey {
        self.keys.current_or_newest(self.clock.now())
    }

    /// The key ring (one fixed key for an issuer made with [`new`](Self::new)).
    pub fn ring(&self) -> &SessionKeyRing {
        &self.keys
    }

    /// Issues a session for `subject` with `groups`.
    ///
    /// # Errors
    ///
    /// [`AuthError::InvalidRequest`] for an invalid subject or group name;
    /// [`AuthError::Crypto`] if signing fails.
    pub fn issue(&self, subject: &str, groups: &[String]) -> Result<SessionToken, AuthError> {
        let invalid = |e: portcullis_core::Error| AuthError::InvalidRequest(e.to_string());
        portcullis_core::validate_name(portcullis_core::Field::Subject, subject)
            .map_err(invalid)?;
        for group in groups {
            portcullis_core::validate_name(portcullis_core::Field::Group, group)
                .map_err(invalid)?;
        }
        let now = self
            .clock
            .now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let exp = now + self.ttl.as_secs();
        let mut jti = [0u8; 16];
        ring::rand::SecureRandom::fill(&SystemRandom::new(), &mut jti)
            .map_err(|_| AuthError::Crypto("the system random source failed".into()))?;
        let claims = json!({
            "iss": self.issuer, "sub": subject, "aud": self.audience, "groups": groups,
            "iat": now, "nbf": now, "exp": exp, "jti": hex::encode(jti),
        });
        let key = self.keys.signing_key(self.clock.now()).ok_or_else(|| {
            AuthError::Crypto(
                "no session key signs now: the key ring was not refreshed in time".into(),
            )
        })?;
        let token = jws::sign(key.algorithm.into(), &key.kid, &claims, &key.encoding)?;
        Ok(SessionToken {
            token,
            expires_at: UNIX_EPOCH + Duration::from_secs(exp),
        })
    }

    /// The rules a verifier of these sessions applies.
    pub fn rules(&self) -> JwtRules {
        session_rules(
            &self.issuer,
            vec![self.audience.clone()],
            self.keys.algorithm(),
            self.clock.clone(),
        )
    }

    /// A verifier that accepts exactly this issuer's sessions.
    ///
    /// # Errors
    ///
    /// [`AuthError::Config`] (cannot happen for a valid issuer).
    pub fn verifier(&self) -> Result<JwtVerifier, AuthError> {
        JwtVerifier::with_ring("session_jwt", self.keys.clone(), self.rules())
    }
}

/// Rules for session JWTs: this issuer and audiences, one algorithm, 5 s leeway, groups
/// from `groups`, user principals authenticated by `issued_jwt`.
pub fn session_rules(
    issuer: &str,
    audiences: Vec<String>,
    algorithm: SessionAlgorithm,
    clock: Arc<dyn Clock>,
) -> JwtRules {
    JwtRules {
        issuer: issuer.to_owned(),
        audiences,
        algorithms: vec![algorithm.into()],
        leeway: Duration::from_secs(5),
        subject_claim: "sub".into(),
        groups_claim: Some("groups".into()),
        copy_claims: Vec::new(),
        kind: PrincipalKind::User,
        auth_method: AuthMethod::ISSUED_JWT,
        clock,
    }
}

/// Password login: the directory checks the password and lists the groups, the issuer signs
/// a session. Unknown users and wrong passwords give the same error.
///
/// Guessing is limited: after five failed logins for a user name within five minutes, every
/// login of that name is refused — a right one too — until the oldest failure is five
/// minutes old ([`AuthError::TooManyAttempts`]; [`PasswordLogin::with_attempt_limit`]
/// changes the numbers). The count is kept per process, or — for several instances of a
/// service — in a store they share ([`PasswordLogin::with_attempt_store`]). Someone who
/// knows a user name can
/// hold that user out this way; that is the price of not letting passwords be guessed.
#[derive(Debug, Clone)]
pub struct PasswordLogin {
    directory: Arc<dyn Directory>,
    issuer: SessionIssuer,
    limit: (usize, Duration),
    /// Per user name, when its recent failures came (Unix seconds), oldest first.
    failures: Arc<std::sync::Mutex<HashMap<String, VecDeque<u64>>>>,
    /// Failures counted in a store every instance shares, instead of in this process.
    shared: Option<Arc<dyn LoginAttempts>>,
}

/// Where [`PasswordLogin`] counts failed logins when several instances of a service must
/// share one limit (the default counts in the process, so N instances would allow N times
/// the guesses). With feature `postgres`: `fleet::PostgresLoginAttempts`.
#[async_trait::async_trait]
pub trait LoginAttempts: Send + Sync + fmt::Debug {
    /// The times (Unix seconds) of `user`'s failed logins after `since`, newest first, at
    /// most `max`.
    ///
    /// # Errors
    ///
    /// [`AuthError::Store`] if the store cannot answer: the login is then refused.
    async fn recent_failures(
        &self,
        user: &str,
        since: u64,
        max: usize,
    ) -> Result<Vec<u64>, AuthError>;

    /// Counts a failed login of `user` at `at`; failures at or before `forget_before` may be
    /// dropped.
    ///
    /// # Errors
    ///
    /// [`AuthError::Store`] if it cannot be recorded.
    async fn note_failure(&self, user: &str, at: u64, forget_before: u64) -> Result<(), AuthError>;
}

/// The most user names whose failures are remembered; beyond it, the oldest are forgotten
/// first, so a flood of invented names cannot grow memory without bound.
const MAX_TRACKED_USERS: usize = 100_000;

impl PasswordLogin {
    /// Logs in against `directory`, issuing with `issuer`.
    pub fn new(directory: Arc<dyn Directory>, issuer: SessionIssuer) -> Self {
        PasswordLogin {
            directory,
            issuer,
            limit: (5, Duration::from_secs(300)),
            failures: Arc::default(),
            shared: None,
        }
    }

    /// Counts failed logins in `store`, shared by every instance of the service, instead of
    /// in this process: the limit then holds for the service as a whole. If the store cannot
    /// answer, logins are refused ([`AuthError::Store`]).
    #[must_use]
    pub fn with_attempt_store(mut self, store: Arc<dyn LoginAttempts>) -> Self {
        self.shared = Some(store);
        self
    }

    /// Refuses every login of a user name that failed `max` times within `window` (default
    /// five in five minutes).
    ///
    /// # Errors
    ///
    /// [`AuthError::Config`] for `max` of zero or a window under a second.
    pub fn with_attempt_limit(mut self, max: usize, window: Duration) -> Result<Self, AuthError> {
        if max == 0 || window.as_secs() == 0 {
            return Err(AuthError::Config(
                "a login attempt limit allows at least one failure in a window of at least 1 s"
                    .into(),
            ));
        }
        self.limit = (max, window);
        Ok(self)
    }

    fn failures(&self) -> std::sync::MutexGuard<'_, HashMap<String, VecDeque<u64>>> {
        self.failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Seconds left while `user` is over the limit.
    fn locked_out(&self, user: &str, now: u64) -> Option<u64> {
        let (max, window) = (self.limit.0, self.limit.1.as_secs());
        let mut failures = self.failures();
        let recent = failures.get_mut(user)?;
        while recent.front().is_some_and(|at| at + window <= now) {
            recent.pop_front();
        }
        if recent.len() < max {
            return None;
        }
        recent
            .front()
            .map(|oldest| (oldest + window).saturating_sub(now).max(1))
    }

    /// Seconds left while `user` is over the limit, by the shared store.
    async fn locked_out_shared(
        &self,
        shared: &dyn LoginAttempts,
        user: &str,
        now: u64,
    ) -> Result<Option<u64>, AuthError> {
        let (max, window) = (self.limit.0, self.limit.1.as_secs());
        let recent = shared
            .recent_failures(user, now.saturating_sub(window), max)
            .await?;
        if recent.len() < max {
            return Ok(None);
        }
        // The oldest of the last `max` failures: the name is free once it is `window` old.
        Ok(recent
            .last()
            .map(|oldest| (oldest + window).saturating_sub(now).max(1)))
    }

    fn note_failure(&self, user: &str, now: u64) {
        let window = self.limit.1.as_secs();
        let mut failures = self.failures();
        if failures.len() >= MAX_TRACKED_USERS && !failures.contains_key(user) {
            failures.retain(|_, at| at.back().is_some_and(|last| last + window > now));
            if failures.len() >= MAX_TRACKED_USERS {
                return;
            }
        }
        let recent = failures.entry(user.to_owned()).or_default();
        recent.push_back(now);
        while recent.len() > self.limit.0 {
            recent.pop_front();
        }
    }

    /// Checks `password` for `user` and issues a session with the user's groups.
    ///
    /// # Errors
    ///
    /// [`AuthError::TooManyAttempts`] while the user name is over the attempt limit;
    /// [`AuthError::Directory`] for a wrong password or unknown user (the same error), or
    /// when the directory is down; [`AuthError::Crypto`] if signing fails.
    pub async fn login(&self, user: &str, password: &Password) -> Result<SessionToken, AuthError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let locked = match &self.shared {
            None => self.locked_out(user, now),
            Some(shared) => self.locked_out_shared(shared.as_ref(), user, now).await?,
        };
        if let Some(wait) = locked {
            tracing::warn!(user, "password login refused: too many recent failures");
            return Err(AuthError::TooManyAttempts(wait));
        }
        let found = match self.directory.authenticate(user, password).await {
            Ok(found) => found,
            Err(err @ DirectoryError::InvalidCredentials) => {
                match &self.shared {
                    None => self.note_failure(user, now),
                    Some(shared) => {
                        let forget = now.saturating_sub(self.limit.1.as_secs());
                        if let Err(error) = shared.note_failure(user, now, forget).await {
                            tracing::warn!(user, %error, "a failed login could not be counted");
                        }
                    }
                }
                return Err(err.into());
            }
            Err(err) => return Err(err.into()),
        };
        tracing::info!(user = %found.name, "password login");
        self.issuer.issue(&found.name, &found.groups)
    }
}
