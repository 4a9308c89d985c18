//! Opaque OAuth access tokens, verified by asking the provider — RFC 7662 introspection or
//! the OIDC userinfo endpoint — behind a short positive cache with single-flight, so a burst
//! of requests with one token costs one provider call.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use portcullis_core::{AuthMethod, Clock, Principal, PrincipalKind, SystemClock};
use serde_json::{Map, Value};
use tokio::sync::OnceCell;
use tokio::time::Instant;

use crate::{AuthError, Authenticator, Credential, HttpClient, HttpOptions};

/// How the provider is asked.
#[derive(Clone)]
#[non_exhaustive]
pub enum OpaqueEndpoint {
    /// RFC 7662: `POST endpoint` with `token=…`, client credentials by HTTP Basic.
    Introspection {
        /// The introspection URL.
        url: String,
        /// The client id this service authenticates as.
        client_id: String,
        /// Its secret. Never logged.
        client_secret: String,
    },
    /// OIDC userinfo: `GET endpoint` with the token as bearer; 200 means valid.
    Userinfo {
        /// The userinfo URL.
        url: String,
    },
}

impl std::fmt::Debug for OpaqueEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OpaqueEndpoint::Introspection { url, client_id, .. } => f
                .debug_struct("Introspection")
                .field("url", url)
                .field("client_id", client_id)
                .field("client_secret", &"<redacted>")
                .finish(),
            OpaqueEndpoint::Userinfo { url } => {
                f.debug_struct("Userinfo").field("url", url).finish()
            }
        }
    }
}

/// What an opaque-token answer must satisfy and how it maps to a [`Principal`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct OpaqueRules {
    /// The provider endpoint.
    pub endpoint: OpaqueEndpoint,
    /// Introspection only: if set, `iss` must equal it.
    pub issuer: Option<String>,
    /// Introspection only: if non-empty, `aud` must contain one of these.
    pub audiences: Vec<String>,
    /// The claim holding the subject (`sub`; `username` is a common alternative).
    pub subject_claim: String,
    /// The claim holding groups, if any (dotted path).
    pub groups_claim: Option<String>,
    /// How long a positive answer is reused. Zero disables the cache; a revoked token stays
    /// accepted for at most this long.
    pub cache_ttl: Duration,
    /// At most this many cached tokens.
    pub cache_capacity: usize,
    /// Whether JWT-shaped tokens are sent to the provider too (off: they are left to JWT
    /// verifiers).
    pub accept_jwt_shaped: bool,
    /// The principal kind produced.
    pub kind: PrincipalKind,
    /// The time source for `exp`.
    pub clock: Arc<dyn Clock>,
}

/// Setters, so that options built outside this crate keep compiling as fields are added
/// (the struct is `#[non_exhaustive]`): `OpaqueRules::new(…).with_…(…)`.
impl OpaqueRules {
    /// Sets [`endpoint`](Self::endpoint).
    #[must_use]
    pub fn with_endpoint(mut self, endpoint: OpaqueEndpoint) -> Self {
        self.endpoint = endpoint;
        self
    }

    /// Sets [`issuer`](Self::issuer).
    #[must_use]
    pub fn with_issuer(mut self, issuer: Option<String>) -> Self {
        self.issuer = issuer;
        self
    }

    /// Sets [`audiences`](Self::audiences).
    #[must_use]
    pub fn with_audiences(mut self, audiences: Vec<String>) -> Self {
        self.audiences = audiences;
        self
    }

    /// Sets [`subject_claim`](Self::subject_claim).
    #[must_use]
    pub fn with_subject_claim(mut self, subject_claim: String) -> Self {
        self.subject_claim = subject_claim;
        self
    }

    /// Sets [`groups_claim`](Self::groups_claim).
    #[must_use]
    pub fn with_groups_claim(mut self, groups_claim: Option<String>) -> Self {
        self.groups_claim = groups_claim;
        self
    }

    /// Sets [`cache_ttl`](Self::cache_ttl).
    #[must_use]
    pub fn with_cache_ttl(mut self, cache_ttl: Duration) -> Self {
        self.cache_ttl = cache_ttl;
        self
    }

    /// Sets [`cache_capacity`](Self::cache_capacity).
    #[must_use]
    pub fn with_cache_capacity(mut self, cache_capacity: usize) -> Self {
        self.cache_capacity = cache_capacity;
        self
    }

    /// Sets [`accept_jwt_shaped`](Self::accept_jwt_shaped).
    #[must_use]
    pub fn with_accept_jwt_shaped(mut self, accept_jwt_shaped: bool) -> Self {
        self.accept_jwt_shaped = accept_jwt_shaped;
        self
    }

    /// Sets [`kind`](Self::kind).
    #[must_use]
    pub fn with_kind(mut self, kind: PrincipalKind) -> Self {
        self.kind = kind;
        self
    }

    /// Sets [`clock`](Self::clock).
    #[must_use]
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }
}

impl OpaqueRules {
    /// Defaults for `endpoint`: subject from `sub`, groups from `groups`, 30 s cache of up
    /// to 10,000 tokens, user principals.
    pub fn new(endpoint: OpaqueEndpoint) -> Self {
        OpaqueRules {
            endpoint,
            issuer: None,
            audiences: Vec::new(),
            subject_claim: "sub".into(),
            groups_claim: Some("groups".into()),
            cache_ttl: Duration::from_secs(30),
            cache_capacity: 10_000,
            accept_jwt_shaped: false,
            kind: PrincipalKind::User,
            clock: Arc::new(SystemClock),
        }
    }
}

type Key = [u8; 32];

/// The longest an opaque token's positive answer may be reused.
pub const MAX_CACHE_TTL: Duration = Duration::from_secs(3600);

#[derive(Debug)]
struct Cached {
    principal: Principal,
    until: Instant,
}

/// Verifies opaque tokens with the provider. See the module docs.
#[derive(Debug)]
pub struct OpaqueVerifier {
    name: &'static str,
    http: HttpClient,
    rules: OpaqueRules,
    cache: Mutex<HashMap<Key, Arc<OnceCell<Cached>>>>,
    calls: std::sync::atomic::AtomicU64,
}

impl OpaqueVerifier {
    /// A verifier with these rules.
    ///
    /// # Errors
    ///
    /// [`AuthError::Config`] for an empty URL or client id, or an HTTP client that cannot
    /// be built.
    pub fn new(rules: OpaqueRules, http: &HttpOptions) -> Result<Self, AuthError> {
        if rules.cache_ttl > MAX_CACHE_TTL {
            return Err(AuthError::Config(format!(
                "an opaque-token cache lifetime above {MAX_CACHE_TTL:?} keeps revoked tokens alive too long"
            )));
        }
        let name = match &rules.endpoint {
            OpaqueEndpoint::Introspection { url, client_id, .. } => {
                if url.is_empty() || client_id.is_empty() {
                    return Err(AuthError::Config(
                        "introspection needs a URL and a client id".into(),
                    ));
                }
                "introspection"
            }
            OpaqueEndpoint::Userinfo { url } => {
                if url.is_empty() {
                    return Err(AuthError::Config("userinfo needs a URL".into()));
                }
                "userinfo"
            }
        };
        Ok(OpaqueVerifier {
            name,
            http: HttpClient::new(http)?,
            rules,
            cache: Mutex::new(HashMap::new()),
            calls: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// How many calls this verifier has made to the provider.
    pub fn provider_calls(&self) -> u64 {
        self.calls.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Verifies `token`, from the cache when a positive answer is fresh.
    ///
    /// # Errors
    ///
    /// [`AuthError::InvalidToken`] when the provider says the token is not active,
    /// [`AuthError::Expired`], [`AuthError::UnknownIssuer`], [`AuthError::WrongAudience`],
    /// [`AuthError::MissingClaim`], or [`AuthError::Provider`].
    pub async fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        if self.rules.cache_ttl.is_zero() {
            return self.ask(token).await.map(|c| c.principal);
        }
        let key: Key = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes())
            .as_ref()
            .try_into()
            .map_err(|_| AuthError::Crypto("SHA-256 is not 32 bytes".into()))?;
        let cell = self.cell(key);
        match cell.get_or_try_init(|| self.ask(token)).await {
            Ok(cached) if cached.until > Instant::now() => Ok(cached.principal.clone()),
            // Expired between the cell lookup and now: drop it and ask again, uncached.
            Ok(_) => {
                self.forget(&key, &cell);
                self.ask(token).await.map(|c| c.principal)
            }
            Err(e) => {
                self.forget(&key, &cell);
                Err(e)
            }
        }
    }

    fn cell(&self, key: Key) -> Arc<OnceCell<Cached>> {
        let now = Instant::now();
        let mut cache = self
            .cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(cell) = cache.get(&key)
            && cell.get().is_none_or(|c| c.until > now)
        {
            return cell.clone();
        }
        if cache.len() >= self.rules.cache_capacity {
            cache.retain(|_, cell| cell.get().is_none_or(|c| c.until > now));
            if cache.len() >= self.rules.cache_capacity {
                cache.clear();
            }
        }
        let cell = Arc::new(OnceCell::new());
        cache.insert(key, cell.clone());
        cell
    }

    fn forget(&self, key: &Key, cell: &Arc<OnceCell<Cached>>) {
        let mut cache = self
            .cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if cache.get(key).is_some_and(|c| Arc::ptr_eq(c, cell)) {
            cache.remove(key);
        }
    }

    async fn ask(&self, token: &str) -> Result<Cached, AuthError> {
        self.calls
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let asked_at = Instant::now();
        let (claims, method) = match &self.rules.endpoint {
            OpaqueEndpoint::Introspection {
                url,
                client_id,
                client_secret,
            } => {
                let request = self
                    .http
                    .post(url)
                    .basic_auth(client_id, Some(client_secret))
                    .form(&[("token", token), ("token_type_hint", "access_token")]);
                let response = self.http.json(request, "introspection").await?;
                if response.status != 200 {
                    return Err(AuthError::Provider(format!(
                        "introspection: status {}",
                        response.status
                    )));
                }
                let Value::Object(claims) = response.body else {
                    return Err(AuthError::Provider(
                        "introspection answer is not a JSON object".into(),
                    ));
                };
                if claims.get("active") != Some(&Value::Bool(true)) {
                    return Err(AuthError::InvalidToken);
                }
                (claims, AuthMethod::OAUTH_INTROSPECTION)
            }
            OpaqueEndpoint::Userinfo { url } => {
                let response = self
                    .http
                    .json(self.http.get(url).bearer_auth(token), "userinfo")
                    .await?;
                let denied = response
                    .body
                    .get("error")
                    .and_then(Value::as_str)
                    .is_some_and(|e| matches!(e, "invalid_token" | "access_denied"));
                match response.status {
                    200 => {}
                    401 | 403 => return Err(AuthError::InvalidToken),
                    400 if denied => return Err(AuthError::InvalidToken),
                    status => {
                        return Err(AuthError::Provider(format!("userinfo: status {status}")));
                    }
                }
                let Value::Object(claims) = response.body else {
                    return Err(AuthError::Provider(
                        "userinfo answer is not a JSON object".into(),
                    ));
                };
                (claims, AuthMethod::OAUTH_USERINFO)
            }
        };
        let (principal, expires) = self.principal(&claims, method)?;
        let mut until = asked_at + self.rules.cache_ttl;
        if let Some(left) = expires.and_then(|e| e.duration_since(self.rules.clock.now()).ok()) {
            until = until.min(asked_at + left);
        }
        Ok(Cached { principal, until })
    }

    fn principal(
        &self,
        claims: &Map<String, Value>,
        method: AuthMethod,
    ) -> Result<(Principal, Option<SystemTime>), AuthError> {
        let rules = &self.rules;
        if let Some(issuer) = &rules.issuer {
            let found = claims.get("iss").and_then(Value::as_str).unwrap_or("");
            if found != issuer {
                return Err(AuthError::UnknownIssuer(found.chars().take(200).collect()));
            }
        }
        if !rules.audiences.is_empty() {
            let ok = match claims.get("aud") {
                Some(Value::String(a)) => rules.audiences.contains(a),
                Some(Value::Array(items)) => items
                    .iter()
                    .filter_map(Value::as_str)
                    .any(|a| rules.audiences.iter().any(|r| r == a)),
                _ => false,
            };
            if !ok {
                return Err(AuthError::WrongAudience);
            }
        }
        let expires = match claims.get("exp").and_then(Value::as_u64) {
            Some(exp) => {
                let at = UNIX_EPOCH + Duration::from_secs(exp);
                if rules.clock.now() >= at {
                    return Err(AuthError::Expired);
                }
                Some(at)
            }
            None => None,
        };
        let subject = claims
            .get(&rules.subject_claim)
            .and_then(Value::as_str)
            .ok_or_else(|| AuthError::MissingClaim(rules.subject_claim.clone()))?;
        // Without an `exp`, the principal lasts as long as the cached answer would.
        let principal_expiry = expires.unwrap_or_else(|| rules.clock.now() + rules.cache_ttl);
        let mut builder = Principal::builder(rules.kind, subject, method)
            .groups(crate::jwt::groups_from(
                claims,
                rules.groups_claim.as_deref(),
            ))
            .expires_at(principal_expiry);
        if let Some(email) = claims.get("email") {
            builder = builder.claim("email", email.clone());
        }
        Ok((builder.build()?, expires))
    }
}

#[async_trait]
impl Authenticator for OpaqueVerifier {
    fn name(&self) -> &str {
        self.name
    }

    async fn authenticate(&self, credential: &Credential) -> Result<Principal, AuthError> {
        if credential.looks_like_jwt() && !self.rules.accept_jwt_shaped {
            return Err(AuthError::Unrecognized);
        }
        if !matches!(
            crate::decode_token(credential.secret()),
            Err(AuthError::Unrecognized)
        ) {
            // Our own script/personal tokens are never sent to a third party.
            return Err(AuthError::Unrecognized);
        }
        self.verify(credential.secret()).await
    }
}
