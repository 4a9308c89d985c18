//! [`JwtVerifier`]: JWTs against a static key set (session tokens) or a provider's JWKS,
//! found through OIDC discovery, with rate-limited, single-flight refresh on key rotation.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use portcullis_core::Principal;

use crate::jwt::{self, JwtRules, KeySet};
use crate::keyring::SessionKeyRing;
use crate::{Algorithm, AuthError, Authenticator, Credential};

#[cfg(feature = "oidc")]
pub use remote::{OidcOptions, ProviderMetadata, RemoteKeys};

#[derive(Debug, Clone)]
enum KeySource {
    Static(Arc<KeySet>),
    /// A session issuer's rotating keys, read at each check.
    Ring(SessionKeyRing),
    #[cfg(feature = "oidc")]
    Remote(Arc<RemoteKeys>),
}

/// Verifies JWTs from one issuer: algorithm allow-list (never `none`, never HS* with a
/// public key), issuer, audience, `exp` and `nbf` with bounded leeway, then maps claims to
/// a [`Principal`].
///
/// A token from another issuer is [`AuthError::UnknownIssuer`] without touching the keys, so
/// an [`AuthChain`](crate::AuthChain) can hold one verifier per issuer.
#[derive(Debug, Clone)]
pub struct JwtVerifier {
    name: String,
    keys: KeySource,
    rules: JwtRules,
    verified: Option<VerifiedCache>,
}

/// The largest `max_age` for [`JwtVerifier::cache_verified`]: the longest a cached acceptance
/// skips the signature and claim checks (a withdrawn provider key ends it sooner).
pub const MAX_VERIFIED_AGE: Duration = Duration::from_secs(300);

/// One remembered acceptance: the principal the token proved, the time that stops
/// counting, and the key id and algorithm of the signature (to ask whether the key is still
/// published).
struct Accepted {
    principal: Principal,
    until: SystemTime,
    /// Shared, so a hit copies a pointer, not the id.
    kid: Option<Arc<str>>,
    alg: Algorithm,
}

/// Token SHA-256 → what its acceptance proved.
type Remembered = hashlink::LruCache<[u8; 32], Accepted>;

/// Tokens a verifier accepted, keyed by their SHA-256 (never the token itself), each with
/// the principal, the time the acceptance stops counting and the key that signed it.
#[derive(Clone)]
struct VerifiedCache {
    entries: Arc<Mutex<Remembered>>,
    max_age: Duration,
}

impl std::fmt::Debug for VerifiedCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifiedCache")
            .field("max_age", &self.max_age)
            .finish_non_exhaustive()
    }
}

impl VerifiedCache {
    fn key(token: &str) -> [u8; 32] {
        let mut key = [0; 32];
        key.copy_from_slice(
            aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes()).as_ref(),
        );
        key
    }

    /// The principal and the signing key's id and algorithm, while the acceptance counts.
    fn get(
        &self,
        key: &[u8; 32],
        now: SystemTime,
    ) -> Option<(Principal, Option<Arc<str>>, Algorithm)> {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        match entries.get(key) {
            Some(accepted) if now < accepted.until => Some((
                accepted.principal.clone(),
                accepted.kid.clone(),
                accepted.alg,
            )),
            Some(_) => {
                entries.remove(key);
                None
            }
            None => None,
        }
    }

    fn forget(&self, key: &[u8; 32]) {
        self.entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(key);
    }

    fn put(&self, key: [u8; 32], signed: Signed, now: SystemTime) -> Principal {
        let mut until = now + self.max_age;
        if let Some(expiry) = signed.principal.expires_at() {
            until = until.min(expiry);
        }
        let principal = signed.principal.clone();
        self.entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(
                key,
                Accepted {
                    principal: signed.principal,
                    until,
                    kid: signed.kid.map(Arc::from),
                    alg: signed.alg,
                },
            );
        principal
    }
}

/// A token that passed every check, with the key id and algorithm it was signed with.
struct Signed {
    principal: Principal,
    kid: Option<String>,
    alg: Algorithm,
}

impl JwtVerifier {
    /// A verifier with a fixed key set (a session issuer's public key, or an HMAC key for
    /// HS256 session tokens).
    ///
    /// # Errors
    ///
    /// [`AuthError::Config`] if the rules are invalid.
    pub fn with_keys(
        name: impl Into<String>,
        keys: KeySet,
        rules: JwtRules,
    ) -> Result<Self, AuthError> {
        rules.validate(true)?;
        Ok(JwtVerifier {
            name: name.into(),
            keys: KeySource::Static(Arc::new(keys)),
            rules,
            verified: None,
        })
    }

    /// A verifier of a session issuer's tokens whose keys rotate: each check uses the
    /// ring's keys as they are at that moment.
    pub(crate) fn with_ring(
        name: impl Into<String>,
        ring: SessionKeyRing,
        rules: JwtRules,
    ) -> Result<Self, AuthError> {
        rules.validate(true)?;
        Ok(JwtVerifier {
            name: name.into(),
            keys: KeySource::Ring(ring),
            rules,
            verified: None,
        })
    }

    /// A verifier for an OIDC provider: fetches `<issuer>/.well-known/openid-configuration`,
    /// checks that it names the same issuer, then loads the JWKS it points to.
    ///
    /// # Errors
    ///
    /// [`AuthError::Config`] for invalid rules (HS* algorithms are refused here);
    /// [`AuthError::Provider`] if discovery or the JWKS cannot be fetched or are invalid.
    #[cfg(feature = "oidc")]
    pub async fn discover(rules: JwtRules, options: OidcOptions) -> Result<Self, AuthError> {
        rules.validate(false)?;
        let http = crate::HttpClient::new(&options.http)?;
        let metadata = ProviderMetadata::discover(&http, &rules.issuer).await?;
        let keys = RemoteKeys::load(http, metadata.jwks_uri, options).await?;
        Ok(JwtVerifier {
            name: "oidc".into(),
            keys: KeySource::Remote(Arc::new(keys)),
            rules,
            verified: None,
        })
    }

    /// A verifier whose keys come from a JWKS URL directly (no discovery).
    ///
    /// # Errors
    ///
    /// As [`JwtVerifier::discover`].
    #[cfg(feature = "oidc")]
    pub async fn from_jwks_url(
        name: impl Into<String>,
        jwks_url: impl Into<String>,
        rules: JwtRules,
        options: OidcOptions,
    ) -> Result<Self, AuthError> {
        rules.validate(false)?;
        let http = crate::HttpClient::new(&options.http)?;
        let keys = RemoteKeys::load(http, jwks_url.into(), options).await?;
        Ok(JwtVerifier {
            name: name.into(),
            keys: KeySource::Remote(Arc::new(keys)),
            rules,
            verified: None,
        })
    }

    /// The rules this verifier applies.
    pub fn rules(&self) -> &JwtRules {
        &self.rules
    }

    /// Remembers up to `capacity` accepted tokens (least recently used forgotten first), so
    /// a token presented again within `max_age` is answered without another signature check.
    /// Tokens are remembered by their SHA-256, never in clear, and never past their own
    /// `exp`; refused tokens are not remembered. Clones of this verifier share the memory.
    ///
    /// What a hit skips is the signature and claim checks, not the key: with a provider's
    /// key set ([`discover`](Self::discover), [`from_jwks_url`](Self::from_jwks_url)) a hit
    /// still asks whether the key that signed the token is in the current set, and counts
    /// as a use of that set, so the set is refreshed on its usual schedule
    /// ([`OidcOptions::max_age`]) even when every token is a hit. A token whose key was
    /// withdrawn is therefore refused from the first refresh that no longer lists the key,
    /// not `max_age` later. The same holds for a session issuer's key ring
    /// ([`SessionIssuer::with_ring`](crate::SessionIssuer::with_ring)): a key dropped from
    /// the ring ends its tokens' hits at once. A fixed key set
    /// ([`with_keys`](Self::with_keys)) cannot change.
    /// Worth it where the same short-lived token comes back many times a second (a session
    /// token on every request through a broker), and where signature checks (EdDSA, RSA)
    /// are a visible share of the CPU.
    ///
    /// # Errors
    ///
    /// [`AuthError::Config`] for a zero capacity, or a `max_age` of zero or above
    /// [`MAX_VERIFIED_AGE`].
    pub fn cache_verified(mut self, capacity: usize, max_age: Duration) -> Result<Self, AuthError> {
        if capacity == 0 {
            return Err(AuthError::Config(
                "the verified-token cache needs a capacity of at least 1".into(),
            ));
        }
        if max_age.is_zero() || max_age > MAX_VERIFIED_AGE {
            return Err(AuthError::Config(format!(
                "the verified-token cache's max_age must be between 1 ms and {} s",
                MAX_VERIFIED_AGE.as_secs()
            )));
        }
        self.verified = Some(VerifiedCache {
            entries: Arc::new(Mutex::new(hashlink::LruCache::new(capacity))),
            max_age,
        });
        Ok(self)
    }

    /// How many accepted tokens are remembered now (0 without
    /// [`cache_verified`](Self::cache_verified)).
    pub fn cached_tokens(&self) -> usize {
        self.verified.as_ref().map_or(0, |cache| {
            cache
                .entries
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .len()
        })
    }

    /// Verifies a JWT.
    ///
    /// # Errors
    ///
    /// [`AuthError::Malformed`], [`AuthError::DisallowedAlgorithm`],
    /// [`AuthError::UnknownIssuer`], [`AuthError::UnknownKey`], [`AuthError::BadSignature`],
    /// [`AuthError::WrongAudience`], [`AuthError::Expired`], [`AuthError::NotYetValid`],
    /// [`AuthError::MissingClaim`], or [`AuthError::Provider`] when a refresh of the
    /// provider's keys was needed and failed.
    pub async fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        let Some(cache) = &self.verified else {
            return self.verify_signed_principal(token).await;
        };
        // The rules' clock, so a test's manual clock moves the cache as it moves `exp`.
        let key = VerifiedCache::key(token);
        if let Some((principal, kid, alg)) = cache.get(&key, self.rules.clock.now()) {
            if self.still_published(kid.as_deref(), alg).await {
                return Ok(principal);
            }
            // Withdrawn: forgotten, and checked in full (which refuses it).
            cache.forget(&key);
        }
        let signed = self.verify_signed(token).await?;
        Ok(cache.put(key, signed, self.rules.clock.now()))
    }

    /// Whether a key with this id and algorithm is still in the key set (a provider's set
    /// refreshed first if it is due, as for any token).
    async fn still_published(&self, kid: Option<&str>, alg: Algorithm) -> bool {
        match &self.keys {
            KeySource::Static(_) => true,
            KeySource::Ring(ring) => ring.key_set().candidates(kid, alg).next().is_some(),
            #[cfg(feature = "oidc")]
            KeySource::Remote(remote) => remote
                .current_for(kid, alg)
                .await
                .is_ok_and(|keys| keys.candidates(kid, alg).next().is_some()),
        }
    }

    /// Every check, signature included.
    async fn verify_signed_principal(&self, token: &str) -> Result<Principal, AuthError> {
        self.verify_signed(token)
            .await
            .map(|signed| signed.principal)
    }

    /// Every check, signature included; with the key id and algorithm that signed it.
    async fn verify_signed(&self, token: &str) -> Result<Signed, AuthError> {
        let header = jwt::parse_header(token)?;
        if !self.rules.algorithms.contains(&header.alg) {
            return Err(AuthError::DisallowedAlgorithm(header.alg.to_string()));
        }
        let issuer = jwt::peek_issuer(token)?;
        if issuer.as_deref() != Some(self.rules.issuer.as_str()) {
            return Err(AuthError::UnknownIssuer(
                issuer.unwrap_or_default().chars().take(200).collect(),
            ));
        }
        let principal = match &self.keys {
            KeySource::Static(keys) => jwt::verify(token, keys, &self.rules)?,
            KeySource::Ring(ring) => jwt::verify(token, &ring.key_set(), &self.rules)?,
            #[cfg(feature = "oidc")]
            KeySource::Remote(remote) => {
                let kid = header.kid.as_deref();
                let loaded = remote.current_for(kid, header.alg).await?;
                jwt::verify(token, &loaded, &self.rules)?
            }
        };
        Ok(Signed {
            principal,
            kid: header.kid,
            alg: header.alg,
        })
    }
}

#[async_trait]
impl Authenticator for JwtVerifier {
    fn name(&self) -> &str {
        &self.name
    }

    async fn authenticate(&self, credential: &Credential) -> Result<Principal, AuthError> {
        if !credential.looks_like_jwt() {
            return Err(AuthError::Unrecognized);
        }
        self.verify(credential.secret()).await
    }
}

#[cfg(feature = "oidc")]
mod remote {
    use std::sync::Arc;
    use std::time::Duration;

    use arc_swap::ArcSwap;
    use serde_json::Value;
    use tokio::time::Instant;

    use crate::jwt::KeySet;
    use crate::{Algorithm, AuthError, HttpClient, HttpOptions};

    /// How a remote key set is fetched and refreshed.
    #[derive(Debug, Clone)]
    pub struct OidcOptions {
        /// HTTP limits.
        pub http: HttpOptions,
        /// The least time between two fetches of the key set: a flood of tokens with made-up
        /// key ids causes at most one fetch per interval.
        pub min_refresh_interval: Duration,
        /// Keys older than this are refreshed on the next use (the old set stays in use if
        /// the refresh fails).
        pub max_age: Duration,
    }

    impl Default for OidcOptions {
        fn default() -> Self {
            OidcOptions {
                http: HttpOptions::default(),
                min_refresh_interval: Duration::from_secs(10),
                max_age: Duration::from_secs(3600),
            }
        }
    }

    /// What OIDC discovery found.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct ProviderMetadata {
        /// The issuer, equal to the one asked for.
        pub issuer: String,
        /// Where the signing keys are.
        pub jwks_uri: String,
        /// The userinfo endpoint, if published.
        pub userinfo_endpoint: Option<String>,
        /// The RFC 7662 introspection endpoint, if published.
        pub introspection_endpoint: Option<String>,
        /// The token endpoint, if published.
        pub token_endpoint: Option<String>,
    }

    impl ProviderMetadata {
        /// Fetches `<issuer>/.well-known/openid-configuration`.
        ///
        /// # Errors
        ///
        /// [`AuthError::Provider`] if it cannot be fetched, is not JSON, names a different
        /// issuer or has no `jwks_uri`.
        pub async fn discover(http: &HttpClient, issuer: &str) -> Result<Self, AuthError> {
            let url = format!(
                "{}/.well-known/openid-configuration",
                issuer.trim_end_matches('/')
            );
            let response = http.json(http.get(&url), "OIDC discovery").await?;
            if response.status != 200 {
                return Err(AuthError::Provider(format!(
                    "OIDC discovery: status {}",
                    response.status
                )));
            }
            let text = |name: &str| {
                response
                    .body
                    .get(name)
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            };
            let found = text("issuer").unwrap_or_default();
            if found != issuer {
                return Err(AuthError::Provider(format!(
                    "OIDC discovery names issuer `{found}`, not `{issuer}`"
                )));
            }
            let metadata = ProviderMetadata {
                issuer: found,
                jwks_uri: text("jwks_uri").ok_or_else(|| {
                    AuthError::Provider("OIDC discovery has no `jwks_uri`".into())
                })?,
                userinfo_endpoint: text("userinfo_endpoint"),
                introspection_endpoint: text("introspection_endpoint"),
                token_endpoint: text("token_endpoint"),
            };
            metadata.refuse_downgrade()?;
            Ok(metadata)
        }

        /// An `https` issuer's keys and endpoints are `https` too: signing keys fetched in
        /// plain HTTP from an https provider's discovery would let the network choose them.
        fn refuse_downgrade(&self) -> Result<(), AuthError> {
            if !self.issuer.starts_with("https://") {
                return Ok(());
            }
            let endpoints = [
                ("jwks_uri", Some(&self.jwks_uri)),
                ("userinfo_endpoint", self.userinfo_endpoint.as_ref()),
                (
                    "introspection_endpoint",
                    self.introspection_endpoint.as_ref(),
                ),
                ("token_endpoint", self.token_endpoint.as_ref()),
            ];
            for (name, url) in endpoints {
                if let Some(url) = url
                    && !url.starts_with("https://")
                {
                    return Err(AuthError::Provider(format!(
                        "OIDC discovery of https issuer `{}` names `{name}` {url:?}, which is \
                         not https",
                        self.issuer
                    )));
                }
            }
            Ok(())
        }
    }

    #[cfg(test)]
    mod tests {
        use super::ProviderMetadata;

        fn metadata(issuer: &str, jwks: &str, userinfo: Option<&str>) -> ProviderMetadata {
            ProviderMetadata {
                issuer: issuer.into(),
                jwks_uri: jwks.into(),
                userinfo_endpoint: userinfo.map(str::to_owned),
                introspection_endpoint: None,
                token_endpoint: None,
            }
        }

        #[test]
        fn an_https_issuer_never_sends_keys_or_tokens_over_plain_http() {
            let ok = metadata("https://idp", "https://idp/jwks", Some("https://idp/me"));
            assert!(ok.refuse_downgrade().is_ok());
            let jwks = metadata("https://idp", "http://idp/jwks", None);
            assert!(
                jwks.refuse_downgrade()
                    .unwrap_err()
                    .to_string()
                    .contains("jwks_uri")
            );
            let userinfo = metadata("https://idp", "https://idp/jwks", Some("http://idp/me"));
            assert!(userinfo.refuse_downgrade().is_err());
            // A plain-HTTP issuer (a test provider on 127.0.0.1) is what it is.
            assert!(
                metadata("http://127.0.0.1:1", "http://127.0.0.1:1/jwks", None)
                    .refuse_downgrade()
                    .is_ok()
            );
        }
    }

    #[derive(Debug)]
    struct Loaded {
        keys: Arc<KeySet>,
        fetched_at: Instant,
        generation: u64,
    }

    /// A provider's key set, cached. A token whose key id is unknown triggers one refresh
    /// (concurrent misses wait for the same fetch, and fetches are at least
    /// [`OidcOptions::min_refresh_interval`] apart).
    #[derive(Debug)]
    pub struct RemoteKeys {
        url: String,
        http: HttpClient,
        options: OidcOptions,
        loaded: ArcSwap<Loaded>,
        /// Held while fetching; holds the time of the last fetch attempt.
        refresh: tokio::sync::Mutex<Instant>,
    }

    impl RemoteKeys {
        /// Fetches the key set at `url`.
        ///
        /// # Errors
        ///
        /// [`AuthError::Provider`] if it cannot be fetched or holds no usable key.
        pub async fn load(
            http: HttpClient,
            url: String,
            options: OidcOptions,
        ) -> Result<Self, AuthError> {
            let keys = fetch(&http, &url).await?;
            let now = Instant::now();
            Ok(RemoteKeys {
                url,
                http,
                options,
                loaded: ArcSwap::from_pointee(Loaded {
                    keys: Arc::new(keys),
                    fetched_at: now,
                    generation: 0,
                }),
                refresh: tokio::sync::Mutex::new(now),
            })
        }

        /// How many times the key set has been replaced since loading.
        pub fn generation(&self) -> u64 {
            self.loaded.load().generation
        }

        /// The key set to verify a token with `kid` / `alg`, refreshed first if no key fits
        /// or the set is older than `max_age`.
        pub(crate) async fn current_for(
            &self,
            kid: Option<&str>,
            alg: Algorithm,
        ) -> Result<Arc<KeySet>, AuthError> {
            let loaded = self.loaded.load_full();
            let fits = loaded.keys.candidates(kid, alg).next().is_some();
            if fits && loaded.fetched_at.elapsed() < self.options.max_age {
                return Ok(loaded.keys.clone());
            }
            match self.refresh(loaded.generation).await {
                Ok(()) => Ok(self.loaded.load().keys.clone()),
                // A stale set that has the key is still good: rotation adds keys.
                Err(e) if fits => {
                    tracing::warn!(error = %e, "refreshing the JWKS failed; using the cached keys");
                    Ok(loaded.keys.clone())
                }
                Err(e) => Err(e),
            }
        }

        async fn refresh(&self, seen: u64) -> Result<(), AuthError> {
            let mut last_attempt = self.refresh.lock().await;
            if self.loaded.load().generation != seen {
                return Ok(()); // someone refreshed while we waited
            }
            if last_attempt.elapsed() < self.options.min_refresh_interval {
                return Ok(()); // rate-limited: the caller sees the current set
            }
            *last_attempt = Instant::now();
            let keys = fetch(&self.http, &self.url).await?;
            tracing::debug!(keys = keys.len(), "refreshed JWKS");
            self.loaded.store(Arc::new(Loaded {
                keys: Arc::new(keys),
                fetched_at: Instant::now(),
                generation: seen + 1,
            }));
            Ok(())
        }
    }

    async fn fetch(http: &HttpClient, url: &str) -> Result<KeySet, AuthError> {
        let response = http.json(http.get(url), "JWKS").await?;
        if response.status != 200 {
            return Err(AuthError::Provider(format!(
                "JWKS: status {}",
                response.status
            )));
        }
        KeySet::from_jwks(&response.body)
    }
}
