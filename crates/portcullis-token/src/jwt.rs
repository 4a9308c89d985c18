//! JWT verification shared by the OIDC verifier and the session verifier: key sets parsed
//! and checked from JWKS, an explicit algorithm allow-list, and exact claim checks against
//! an injectable clock.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use portcullis_core::{AuthMethod, Clock, Principal, PrincipalKind, SystemClock};
use serde_json::{Map, Value};

use crate::jws::{self, JwsHeader};
use crate::{Algorithm, AuthError};

mod keys;

pub use keys::KeySet;

/// The longest JWT accepted, in bytes.
pub const MAX_JWT_LEN: usize = 16 * 1024;
/// The largest leeway allowed for `exp` / `nbf`: clocks drift by seconds, not hours.
pub const MAX_LEEWAY: Duration = Duration::from_secs(300);
/// The most keys a key set may hold; a provider publishing more is answering garbage.
pub const MAX_KEYS: usize = 64;

/// What a JWT must satisfy, and how its claims become a [`Principal`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct JwtRules {
    /// The exact `iss` expected.
    pub issuer: String,
    /// The token's `aud` must contain at least one of these.
    pub audiences: Vec<String>,
    /// Allowed `alg` values; `none` cannot be listed.
    pub algorithms: Vec<Algorithm>,
    /// Tolerance for `exp` and `nbf`, at most [`MAX_LEEWAY`].
    pub leeway: Duration,
    /// The claim holding the subject (`sub`, or e.g. `preferred_username`).
    pub subject_claim: String,
    /// The claim holding groups / teams (a dotted path such as `realm_access.roles`), if any.
    pub groups_claim: Option<String>,
    /// Claims copied into the principal's claims when present.
    pub copy_claims: Vec<String>,
    /// The kind of principal produced.
    pub kind: PrincipalKind,
    /// The auth method recorded in the principal.
    pub auth_method: AuthMethod,
    /// The time source for `exp` / `nbf`.
    pub clock: Arc<dyn Clock>,
}

/// Setters, so that options built outside this crate keep compiling as fields are added
/// (the struct is `#[non_exhaustive]`): `JwtRules::new(…).with_…(…)`.
impl JwtRules {
    /// Sets [`issuer`](Self::issuer).
    #[must_use]
    pub fn with_issuer(mut self, issuer: String) -> Self {
        self.issuer = issuer;
        self
    }

    /// Sets [`audiences`](Self::audiences).
    #[must_use]
    pub fn with_audiences(mut self, audiences: Vec<String>) -> Self {
        self.audiences = audiences;
        self
    }

    /// Sets [`algorithms`](Self::algorithms).
    #[must_use]
    pub fn with_algorithms(mut self, algorithms: Vec<Algorithm>) -> Self {
        self.algorithms = algorithms;
        self
    }

    /// Sets [`leeway`](Self::leeway).
    #[must_use]
    pub fn with_leeway(mut self, leeway: Duration) -> Self {
        self.leeway = leeway;
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

    /// Sets [`copy_claims`](Self::copy_claims).
    #[must_use]
    pub fn with_copy_claims(mut self, copy_claims: Vec<String>) -> Self {
        self.copy_claims = copy_claims;
        self
    }

    /// Sets [`kind`](Self::kind).
    #[must_use]
    pub fn with_kind(mut self, kind: PrincipalKind) -> Self {
        self.kind = kind;
        self
    }

    /// Sets [`auth_method`](Self::auth_method).
    #[must_use]
    pub fn with_auth_method(mut self, auth_method: AuthMethod) -> Self {
        self.auth_method = auth_method;
        self
    }

    /// Sets [`clock`](Self::clock).
    #[must_use]
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }
}

impl JwtRules {
    /// Rules for tokens from `issuer` meant for `audience`: RS256, ES256 and EdDSA allowed,
    /// 30 s leeway, subject from `sub`, groups from `groups`, user principals with auth method
    /// `oidc`.
    pub fn new(issuer: impl Into<String>, audience: impl Into<String>) -> Self {
        JwtRules {
            issuer: issuer.into(),
            audiences: vec![audience.into()],
            algorithms: vec![Algorithm::RS256, Algorithm::ES256, Algorithm::EdDSA],
            leeway: Duration::from_secs(30),
            subject_claim: "sub".into(),
            groups_claim: Some("groups".into()),
            copy_claims: vec!["email".into()],
            kind: PrincipalKind::User,
            auth_method: AuthMethod::OIDC,
            clock: Arc::new(SystemClock),
        }
    }

    /// Checks the rules themselves.
    ///
    /// # Errors
    ///
    /// [`AuthError::Config`] for an empty issuer or audience list, no algorithms, symmetric
    /// algorithms when `allow_symmetric` is false, or a leeway above [`MAX_LEEWAY`].
    pub(crate) fn validate(&self, allow_symmetric: bool) -> Result<(), AuthError> {
        let config = |m: String| Err(AuthError::Config(m));
        if self.issuer.is_empty() {
            return config("the JWT issuer is empty".into());
        }
        if self.audiences.is_empty() || self.audiences.iter().any(String::is_empty) {
            return config(
                "at least one non-empty audience is required, so tokens for other services are refused"
                    .into(),
            );
        }
        if self.algorithms.is_empty() {
            return config("the algorithm allow-list is empty".into());
        }
        let symmetric = |a: &Algorithm| a.is_symmetric();
        if !allow_symmetric && self.algorithms.iter().any(symmetric) {
            return config(
                "HS* algorithms are not allowed for provider tokens: a public key must never be used as an HMAC secret"
                    .into(),
            );
        }
        if allow_symmetric
            && self.algorithms.iter().any(symmetric)
            && self.algorithms.iter().any(|a| !symmetric(a))
        {
            return config("do not mix HS* with public-key algorithms in one verifier".into());
        }
        if self.leeway > MAX_LEEWAY {
            return config(format!(
                "leeway {:?} is above the maximum of {MAX_LEEWAY:?}",
                self.leeway
            ));
        }
        Ok(())
    }
}

fn secs_since_epoch(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn numeric(claims: &Map<String, Value>, name: &str) -> Result<Option<u64>, AuthError> {
    match claims.get(name) {
        None => Ok(None),
        Some(v) => v
            .as_u64()
            .or_else(|| {
                v.as_f64()
                    .filter(|f| *f >= 0.0 && f.is_finite())
                    .map(|f| f as u64)
            })
            .map(Some)
            .ok_or_else(|| AuthError::MissingClaim(name.to_owned())),
    }
}

fn lookup<'a>(claims: &'a Map<String, Value>, path: &str) -> Option<&'a Value> {
    let mut parts = path.split('.');
    let first = claims.get(parts.next()?)?;
    parts.try_fold(first, |value, part| value.get(part))
}

/// Reads the issuer of a JWT without verifying it, to route it to the right verifier.
pub(crate) fn peek_issuer(token: &str) -> Result<Option<String>, AuthError> {
    let claims: Map<String, Value> = jsonwebtoken::dangerous::insecure_decode(token)
        .map(|data| data.claims)
        .map_err(|e| AuthError::Malformed(e.to_string()))?;
    Ok(claims.get("iss").and_then(Value::as_str).map(str::to_owned))
}

/// Verifies `token` with `keys` under `rules`.
pub(crate) fn verify(token: &str, keys: &KeySet, rules: &JwtRules) -> Result<Principal, AuthError> {
    let header = parse_header(token)?;
    let kid = header.kid.as_deref();
    let mut candidates = keys.candidates(kid, header.alg).peekable();
    if candidates.peek().is_none() {
        return Err(AuthError::UnknownKey(kid.unwrap_or("(none)").to_owned()));
    }
    let mut last = AuthError::BadSignature;
    for key in candidates {
        match jws::verify(token, header.alg, key) {
            Ok(claims) => return principal_from_claims(&claims, rules),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// The header, after the checks that need no key: size, shape, a known `alg`.
pub(crate) fn parse_header(token: &str) -> Result<JwsHeader, AuthError> {
    if token.len() > MAX_JWT_LEN {
        return Err(AuthError::Malformed(format!(
            "JWT longer than {MAX_JWT_LEN} bytes"
        )));
    }
    if token.split('.').count() != 3 {
        return Err(AuthError::Malformed(
            "a JWT has three dot-separated parts".into(),
        ));
    }
    jws::header(token)
}

/// The checks every verifier shares once the signature is good.
pub(crate) fn principal_from_claims(
    claims: &Map<String, Value>,
    rules: &JwtRules,
) -> Result<Principal, AuthError> {
    let issuer = claims.get("iss").and_then(Value::as_str).unwrap_or("");
    if issuer != rules.issuer {
        return Err(AuthError::UnknownIssuer(issuer.chars().take(200).collect()));
    }
    let audience_ok = match claims.get("aud") {
        Some(Value::String(aud)) => rules.audiences.iter().any(|a| a == aud),
        Some(Value::Array(auds)) => auds
            .iter()
            .filter_map(Value::as_str)
            .any(|aud| rules.audiences.iter().any(|a| a == aud)),
        _ => false,
    };
    if !audience_ok {
        return Err(AuthError::WrongAudience);
    }
    let now = secs_since_epoch(rules.clock.now());
    let leeway = rules.leeway.as_secs();
    let exp = numeric(claims, "exp")?.ok_or_else(|| AuthError::MissingClaim("exp".into()))?;
    // Valid while now < exp (+ leeway): at exp itself the token is expired.
    if now >= exp.saturating_add(leeway) {
        return Err(AuthError::Expired);
    }
    if let Some(nbf) = numeric(claims, "nbf")?
        && now.saturating_add(leeway) < nbf
    {
        return Err(AuthError::NotYetValid);
    }
    let subject = lookup(claims, &rules.subject_claim)
        .and_then(Value::as_str)
        .ok_or_else(|| AuthError::MissingClaim(rules.subject_claim.clone()))?;
    let mut builder = Principal::builder(rules.kind, subject, rules.auth_method.clone())
        .expires_at(UNIX_EPOCH + Duration::from_secs(exp))
        .groups(groups_from(claims, rules.groups_claim.as_deref()));
    for name in &rules.copy_claims {
        if let Some(value) = claims.get(name) {
            builder = builder.claim(name.clone(), value.clone());
        }
    }
    Ok(builder
        .claim("iss", Value::String(issuer.to_owned()))
        .build()?)
}

/// Groups from a claim holding an array of strings or one string (space or comma separated).
/// Names that are not valid group names are skipped: dropping a group only removes rights.
pub(crate) fn groups_from(claims: &Map<String, Value>, path: Option<&str>) -> Vec<String> {
    let Some(value) = path.and_then(|p| lookup(claims, p)) else {
        return Vec::new();
    };
    let names: Vec<&str> = match value {
        Value::Array(items) => items.iter().filter_map(Value::as_str).collect(),
        Value::String(s) => s.split([' ', ',']).filter(|g| !g.is_empty()).collect(),
        _ => Vec::new(),
    };
    names
        .into_iter()
        .filter(|g| {
            let ok = portcullis_core::validate_name(portcullis_core::Field::Group, g).is_ok();
            if !ok {
                tracing::debug!("skipping a group name that is not valid");
            }
            ok
        })
        .map(str::to_owned)
        .collect()
}
