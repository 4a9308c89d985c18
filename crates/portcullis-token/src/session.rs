//! Session JWTs this service issues after a password login (Doorman's flow), and the
//! verifier another service (a region proxy) uses to accept only them.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self, KeyPair};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{DecodingKey, EncodingKey};
use portcullis_core::{AuthMethod, Clock, PrincipalKind, SystemClock};
use portcullis_directory::{Directory, DirectoryError, Password};
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

fn crypto(what: &str) -> impl Fn(aws_lc_rs::error::KeyRejected) -> AuthError + '_ {
    move |e| AuthError::Crypto(format!("{what}: {e}"))
}

fn kid_of(public: &[u8]) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, public);
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
                aws_lc_rs::rand::SecureRandom::fill(&rng, &mut secret)
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
                let tag = aws_lc_rs::hmac::sign(
                    &aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, material),
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
        aws_lc_rs::rand::SecureRandom::fill(&SystemRandom::new(), &mut jti)
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
/// changes the numbers). An attempt is counted *before* its password is checked, in one
/// atomic step with the check against the limit, and handed back only when the password was
/// right (or the directory could not say): so the limit holds however many guesses arrive at
/// once — of any number of concurrent logins of one name, at most five passwords are
/// checked. The count is kept per process, or — for several instances of a service — in a
/// store they share ([`PasswordLogin::with_attempt_store`]). Someone who knows a user name
/// can hold that user out this way; that is the price of not letting passwords be guessed.
#[derive(Debug, Clone)]
pub struct PasswordLogin {
    directory: Arc<dyn Directory>,
    issuer: SessionIssuer,
    limit: (usize, Duration),
    /// Where attempts are counted: this process ([`MemoryLoginAttempts`]) by default.
    attempts: Arc<dyn LoginAttempts>,
}

/// Where [`PasswordLogin`] counts login attempts against its limit, per user name, within a
/// sliding window. [`MemoryLoginAttempts`] counts in the process (the default); when several
/// instances of a service must share one limit (else N instances allow N times the guesses),
/// with feature `postgres`: `fleet::PostgresLoginAttempts`. Async, object safe.
///
/// An attempt is counted *before* its password is checked ([`begin`](Self::begin)), in one
/// atomic step with the check against the limit, and handed back
/// ([`release`](Self::release)) when the login turns out not to be a wrong guess. So the
/// limit holds however many logins arrive at once, on however many instances: of `max + k`
/// concurrent wrong passwords for one name, at most `max` are checked.
#[async_trait::async_trait]
pub trait LoginAttempts: Send + Sync + fmt::Debug {
    /// Counts an attempt of `user` at `now` (Unix seconds) iff fewer than `max` are counted
    /// after `now - window`, as one atomic operation: `Ok(None)` if it was counted (the
    /// password may be checked), `Ok(Some(seconds))` if the name is over the limit and for
    /// how long still. Attempts at or before `now - window` no longer count and may be
    /// dropped.
    ///
    /// # Errors
    ///
    /// [`AuthError::Store`] if the store cannot answer (in bounded time): the login is then
    /// refused.
    async fn begin(
        &self,
        user: &str,
        now: u64,
        max: usize,
        window: u64,
    ) -> Result<Option<u64>, AuthError>;

    /// Takes back one attempt of `user` counted at `at` by [`begin`](Self::begin): its
    /// password was right, or the directory could not check it — not a guess that failed.
    ///
    /// # Errors
    ///
    /// [`AuthError::Store`]; the attempt then keeps counting until the window passes.
    async fn release(&self, user: &str, at: u64) -> Result<(), AuthError>;
}

/// Seconds until `user` may try again: the `max`th newest attempt leaves the window then.
/// `recent` is oldest first and holds at least `max` attempts.
pub(crate) fn attempt_wait(recent: &[u64], max: usize, now: u64, window: u64) -> Option<u64> {
    let index = recent.len().checked_sub(max)?;
    recent
        .get(index)
        .map(|oldest| oldest.saturating_add(window).saturating_sub(now).max(1))
}

/// The most user names whose attempts are remembered in memory; beyond it, those whose
/// newest attempt is oldest are forgotten first, so a flood of invented names cannot grow
/// memory without bound.
const MAX_TRACKED_USERS: usize = 100_000;

/// [`LoginAttempts`] in this process (the default of [`PasswordLogin`]): each instance of a
/// service counts its own. Counting and the check against the limit happen under one lock.
#[derive(Debug, Default)]
pub struct MemoryLoginAttempts {
    /// Per user name, when its counted attempts came (Unix seconds), oldest first.
    attempts: std::sync::Mutex<HashMap<String, VecDeque<u64>>>,
}

impl MemoryLoginAttempts {
    /// No attempts counted yet.
    pub fn new() -> Self {
        Self::default()
    }

    fn attempts(&self) -> std::sync::MutexGuard<'_, HashMap<String, VecDeque<u64>>> {
        self.attempts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[async_trait::async_trait]
impl LoginAttempts for MemoryLoginAttempts {
    async fn begin(
        &self,
        user: &str,
        now: u64,
        max: usize,
        window: u64,
    ) -> Result<Option<u64>, AuthError> {
        let mut all = self.attempts();
        if all.len() >= MAX_TRACKED_USERS && !all.contains_key(user) {
            all.retain(|_, times| times.back().is_some_and(|at| at + window > now));
            if all.len() >= MAX_TRACKED_USERS {
                let stalest = all
                    .iter()
                    .min_by_key(|(_, times)| times.back().copied().unwrap_or(0))
                    .map(|(name, _)| name.clone());
                if let Some(name) = stalest {
                    all.remove(&name);
                }
            }
        }
        let recent = all.entry(user.to_owned()).or_default();
        while recent.front().is_some_and(|at| at + window <= now) {
            recent.pop_front();
        }
        if recent.len() >= max {
            let times: Vec<u64> = recent.iter().copied().collect();
            return Ok(Some(attempt_wait(&times, max, now, window).unwrap_or(1)));
        }
        recent.push_back(now);
        Ok(None)
    }

    async fn release(&self, user: &str, at: u64) -> Result<(), AuthError> {
        let mut all = self.attempts();
        if let Some(recent) = all.get_mut(user)
            && let Some(index) = recent.iter().rposition(|t| *t == at)
        {
            recent.remove(index);
            if recent.is_empty() {
                all.remove(user);
            }
        }
        Ok(())
    }
}

impl PasswordLogin {
    /// Logs in against `directory`, issuing with `issuer`.
    pub fn new(directory: Arc<dyn Directory>, issuer: SessionIssuer) -> Self {
        PasswordLogin {
            directory,
            issuer,
            limit: (5, Duration::from_secs(300)),
            attempts: Arc::new(MemoryLoginAttempts::new()),
        }
    }

    /// Counts login attempts in `store`, shared by every instance of the service, instead of
    /// in this process: the limit then holds for the service as a whole. If the store cannot
    /// answer, logins are refused ([`AuthError::Store`]).
    #[must_use]
    pub fn with_attempt_store(mut self, store: Arc<dyn LoginAttempts>) -> Self {
        self.attempts = store;
        self
    }

    /// Refuses every login of a user name that failed `max` times within `window` (default
    /// five in five minutes). Names are counted ignoring case ("Bob" and "bob" share one
    /// count), as directories such as LDAP match them.
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

    /// Checks `password` for `user` and issues a session with the user's groups.
    ///
    /// # Errors
    ///
    /// [`AuthError::TooManyAttempts`] while the user name is over the attempt limit (counting
    /// this attempt's own reservation, made before the password is checked);
    /// [`AuthError::Store`] when the attempt store cannot count it (refused);
    /// [`AuthError::Directory`] for a wrong password or unknown user (the same error), or
    /// when the directory is down; [`AuthError::Crypto`] if signing fails.
    pub async fn login(&self, user: &str, password: &Password) -> Result<SessionToken, AuthError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let (max, window) = (self.limit.0, self.limit.1.as_secs());
        // Counted under the name folded to lower case: directories such as LDAP match user
        // names ignoring case, and each spelling must not bring guesses of its own.
        let counted = user.to_lowercase();
        if let Some(wait) = self.attempts.begin(&counted, now, max, window).await? {
            tracing::warn!(user, "password login refused: too many recent failures");
            return Err(AuthError::TooManyAttempts(wait));
        }
        let checked = self.directory.authenticate(user, password).await;
        if !matches!(checked, Err(DirectoryError::InvalidCredentials)) {
            // Only a wrong password (or unknown name) is a guess; hand the attempt back.
            if let Err(error) = self.attempts.release(&counted, now).await {
                tracing::warn!(
                    user,
                    %error,
                    "a login attempt could not be handed back; it counts until its window passes"
                );
            }
        }
        let found = checked?;
        tracing::info!(user = %found.name, "password login");
        self.issuer.issue(&found.name, &found.groups)
    }
}
