//! The auth chain from configuration: each `[[method]]` table switches one method on, in
//! order. No table ⇒ every request is refused; `anonymous = true` must be written out.

use std::path::PathBuf;
use std::sync::Arc;

use portcullis_core::{Clock, SystemClock};
use serde::Deserialize;

use crate::jwt::KeySet;
use crate::session::session_rules;
use crate::{
    Algorithm, AuthChain, AuthError, Authenticator, JwtVerifier, SessionAlgorithm, SessionIssuer,
    TokenAuthenticator, TokenKind, Tokens,
};

/// The `[authentication]` configuration.
///
/// ```toml
/// anonymous = false          # the default; requests without a credential are refused
///
/// [[method]]
/// type = "script_token"
///
/// [[method]]
/// type = "oidc"
/// issuer = "https://login.example.com"
/// audiences = ["deploy-gate"]
/// groups_claim = "groups"
///
/// [[method]]
/// type = "userinfo"
/// issuer = "https://login.example.com"   # endpoint found by discovery
/// cache_seconds = 30
/// ```
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// Requests without a credential become `user:anonymous` instead of being refused.
    #[serde(default)]
    pub anonymous: bool,
    /// The enabled methods, tried in this order.
    #[serde(default, rename = "method")]
    pub methods: Vec<MethodConfig>,
}

impl AuthConfig {
    /// Parses the TOML form.
    ///
    /// # Errors
    ///
    /// [`AuthError::Config`] with the TOML error.
    pub fn from_toml(text: &str) -> Result<Self, AuthError> {
        toml::from_str(text).map_err(|e| AuthError::Config(e.to_string()))
    }
}

/// One enabled method.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum MethodConfig {
    /// Server-issued script tokens (`pcs_…`); needs [`ChainResources::tokens`].
    ScriptToken,
    /// Server-issued personal tokens (`pcp_…`); needs [`ChainResources::tokens`].
    PersonalToken,
    /// JWTs from an OIDC provider, keys found by discovery.
    Oidc(OidcMethod),
    /// Opaque tokens checked at the provider's userinfo endpoint.
    Userinfo(UserinfoMethod),
    /// Opaque tokens checked by RFC 7662 introspection.
    Introspection(IntrospectionMethod),
    /// Session JWTs issued after a password login.
    SessionJwt(SessionJwtMethod),
}

fn default_subject() -> String {
    "sub".into()
}

fn default_groups() -> Option<String> {
    Some("groups".into())
}

/// `type = "oidc"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcMethod {
    /// The issuer URL, exactly as in its tokens.
    pub issuer: String,
    /// Accepted audiences (your client id); at least one.
    pub audiences: Vec<String>,
    /// Allowed algorithms; default RS256, ES256, EdDSA. HS* is refused.
    #[serde(default)]
    pub algorithms: Option<Vec<Algorithm>>,
    /// Leeway for `exp`/`nbf` in seconds (default 30, at most 300).
    #[serde(default)]
    pub leeway_seconds: Option<u64>,
    /// The subject claim (default `sub`).
    #[serde(default = "default_subject")]
    pub subject_claim: String,
    /// The groups claim (default `groups`).
    #[serde(default = "default_groups")]
    pub groups_claim: Option<String>,
    /// `user` (default) or `service` principals.
    #[serde(default)]
    pub service_accounts: bool,
    /// Least seconds between JWKS fetches (default 10).
    #[serde(default)]
    pub min_refresh_seconds: Option<u64>,
}

/// `type = "userinfo"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserinfoMethod {
    /// Discover the endpoint from this issuer…
    #[serde(default)]
    pub issuer: Option<String>,
    /// …or give it directly.
    #[serde(default)]
    pub url: Option<String>,
    /// Positive cache lifetime in seconds (default 30; 0 disables).
    #[serde(default)]
    pub cache_seconds: Option<u64>,
    /// The subject claim (default `sub`).
    #[serde(default = "default_subject")]
    pub subject_claim: String,
    /// The groups claim (default `groups`).
    #[serde(default = "default_groups")]
    pub groups_claim: Option<String>,
}

/// `type = "introspection"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntrospectionMethod {
    /// The introspection endpoint.
    pub url: String,
    /// This service's client id.
    pub client_id: String,
    /// The environment variable holding the client secret (never the secret itself).
    pub client_secret_env: String,
    /// Required `iss`, if any.
    #[serde(default)]
    pub issuer: Option<String>,
    /// Required audiences, if any.
    #[serde(default)]
    pub audiences: Vec<String>,
    /// Positive cache lifetime in seconds (default 30; 0 disables).
    #[serde(default)]
    pub cache_seconds: Option<u64>,
    /// The subject claim (default `sub`).
    #[serde(default = "default_subject")]
    pub subject_claim: String,
    /// The groups claim (default `groups`).
    #[serde(default = "default_groups")]
    pub groups_claim: Option<String>,
}

/// `type = "session_jwt"`. The default accepts the local issuer's sessions.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionJwtMethod {
    /// The session issuer. Omit everything else to use the local issuer
    /// ([`ChainResources::session_issuer`]).
    #[serde(default)]
    pub issuer: Option<String>,
    /// Accepted audiences.
    #[serde(default)]
    pub audiences: Vec<String>,
    /// The signing algorithm (default EdDSA).
    #[serde(default)]
    pub algorithm: Option<SessionAlgorithm>,
    /// A JWKS file with the issuer's public key.
    #[serde(default)]
    pub jwks_file: Option<PathBuf>,
    /// For HS256: the environment variable holding the shared secret (hex).
    #[serde(default)]
    pub hs256_secret_env: Option<String>,
    /// Remember accepted session tokens this many seconds (at most
    /// [`MAX_VERIFIED_AGE`](crate::MAX_VERIFIED_AGE), never past their `exp`), so a token
    /// sent on every request is checked once: see
    /// [`JwtVerifier::cache_verified`]. Off when absent.
    #[serde(default)]
    pub cache_seconds: Option<u64>,
    /// How many accepted tokens `cache_seconds` remembers (default 10 000).
    #[serde(default)]
    pub cache_capacity: Option<usize>,
}

impl SessionJwtMethod {
    /// `verifier` with the cache this method asks for, if any.
    fn cached(&self, verifier: JwtVerifier) -> Result<JwtVerifier, AuthError> {
        match self.cache_seconds {
            None => {
                if self.cache_capacity.is_some() {
                    return Err(AuthError::Config(
                        "method `session_jwt`: `cache_capacity` needs `cache_seconds`".into(),
                    ));
                }
                Ok(verifier)
            }
            Some(seconds) => verifier.cache_verified(
                self.cache_capacity.unwrap_or(10_000),
                std::time::Duration::from_secs(seconds),
            ),
        }
    }
}

/// What methods need beyond their configuration.
#[derive(Debug, Clone)]
pub struct ChainResources {
    /// The token service, for `script_token` and `personal_token`.
    pub tokens: Option<Arc<Tokens>>,
    /// The local session issuer, for `session_jwt` without keys of its own.
    pub session_issuer: Option<SessionIssuer>,
    /// HTTP limits for provider calls.
    pub http: crate::HttpOptions,
    /// The time source.
    pub clock: Arc<dyn Clock>,
}

impl Default for ChainResources {
    fn default() -> Self {
        ChainResources {
            tokens: None,
            session_issuer: None,
            http: crate::HttpOptions::default(),
            clock: Arc::new(SystemClock),
        }
    }
}

fn env_secret(name: &str) -> Result<String, AuthError> {
    std::env::var(name)
        .map_err(|_| AuthError::Config(format!("environment variable `{name}` is not set")))
}

impl AuthChain {
    /// Builds the chain `config` describes. Methods that talk to a provider discover it now,
    /// so a wrong issuer URL fails at start-up, not on the first request.
    ///
    /// # Errors
    ///
    /// [`AuthError::Config`] for a method whose resources are missing or whose settings are
    /// invalid; [`AuthError::Provider`] if discovery fails.
    pub async fn from_config(
        config: &AuthConfig,
        resources: &ChainResources,
    ) -> Result<Self, AuthError> {
        let mut methods: Vec<Arc<dyn Authenticator>> = Vec::new();
        for method in &config.methods {
            methods.push(build(method, resources).await?);
        }
        let chain = AuthChain::new(methods);
        Ok(if config.anonymous {
            tracing::warn!(
                "anonymous access is enabled: requests without a credential are accepted as user:anonymous"
            );
            chain.allow_anonymous()
        } else {
            chain
        })
    }
}

fn tokens(
    resources: &ChainResources,
    kind: TokenKind,
) -> Result<Arc<dyn Authenticator>, AuthError> {
    let tokens = resources.tokens.clone().ok_or_else(|| {
        AuthError::Config(format!(
            "method `{}_token` needs a token service",
            kind.as_str()
        ))
    })?;
    Ok(Arc::new(TokenAuthenticator::new(tokens, kind)))
}

async fn build(
    method: &MethodConfig,
    resources: &ChainResources,
) -> Result<Arc<dyn Authenticator>, AuthError> {
    Ok(match method {
        MethodConfig::ScriptToken => tokens(resources, TokenKind::Script)?,
        MethodConfig::PersonalToken => tokens(resources, TokenKind::Personal)?,
        MethodConfig::Oidc(m) => oidc(m, resources).await?,
        MethodConfig::Userinfo(m) => userinfo(m, resources).await?,
        MethodConfig::Introspection(m) => introspection(m, resources)?,
        MethodConfig::SessionJwt(m) => session(m, resources)?,
    })
}

#[cfg(feature = "oidc")]
async fn oidc(m: &OidcMethod, r: &ChainResources) -> Result<Arc<dyn Authenticator>, AuthError> {
    use std::time::Duration;

    use crate::JwtRules;
    use portcullis_core::PrincipalKind;

    let mut rules = JwtRules::new(m.issuer.clone(), "");
    rules.audiences.clone_from(&m.audiences);
    if let Some(algorithms) = &m.algorithms {
        rules.algorithms.clone_from(algorithms);
    }
    if let Some(leeway) = m.leeway_seconds {
        rules.leeway = Duration::from_secs(leeway);
    }
    rules.subject_claim.clone_from(&m.subject_claim);
    rules.groups_claim.clone_from(&m.groups_claim);
    if m.service_accounts {
        rules.kind = PrincipalKind::Service;
    }
    rules.clock = r.clock.clone();
    let mut options = crate::OidcOptions {
        http: r.http.clone(),
        ..crate::OidcOptions::default()
    };
    if let Some(secs) = m.min_refresh_seconds {
        options.min_refresh_interval = Duration::from_secs(secs);
    }
    Ok(Arc::new(JwtVerifier::discover(rules, options).await?))
}

#[cfg(feature = "oidc")]
fn opaque_rules(
    endpoint: crate::OpaqueEndpoint,
    cache_seconds: Option<u64>,
    subject_claim: &str,
    groups_claim: Option<&String>,
    r: &ChainResources,
) -> crate::OpaqueRules {
    let mut rules = crate::OpaqueRules::new(endpoint);
    if let Some(secs) = cache_seconds {
        rules.cache_ttl = std::time::Duration::from_secs(secs);
    }
    subject_claim.clone_into(&mut rules.subject_claim);
    rules.groups_claim = groups_claim.cloned();
    rules.clock = r.clock.clone();
    rules
}

#[cfg(feature = "oidc")]
async fn userinfo(
    m: &UserinfoMethod,
    r: &ChainResources,
) -> Result<Arc<dyn Authenticator>, AuthError> {
    let url = match (&m.url, &m.issuer) {
        (Some(url), None) => url.clone(),
        (None, Some(issuer)) => {
            let http = crate::HttpClient::new(&r.http)?;
            crate::ProviderMetadata::discover(&http, issuer)
                .await?
                .userinfo_endpoint
                .ok_or_else(|| {
                    AuthError::Config(format!("issuer `{issuer}` publishes no userinfo endpoint"))
                })?
        }
        _ => {
            return Err(AuthError::Config(
                "method `userinfo` needs exactly one of `issuer` and `url`".into(),
            ));
        }
    };
    let rules = opaque_rules(
        crate::OpaqueEndpoint::Userinfo { url },
        m.cache_seconds,
        &m.subject_claim,
        m.groups_claim.as_ref(),
        r,
    );
    Ok(Arc::new(crate::OpaqueVerifier::new(rules, &r.http)?))
}

#[cfg(feature = "oidc")]
fn introspection(
    m: &IntrospectionMethod,
    r: &ChainResources,
) -> Result<Arc<dyn Authenticator>, AuthError> {
    let endpoint = crate::OpaqueEndpoint::Introspection {
        url: m.url.clone(),
        client_id: m.client_id.clone(),
        client_secret: env_secret(&m.client_secret_env)?,
    };
    let mut rules = opaque_rules(
        endpoint,
        m.cache_seconds,
        &m.subject_claim,
        m.groups_claim.as_ref(),
        r,
    );
    rules.issuer.clone_from(&m.issuer);
    rules.audiences.clone_from(&m.audiences);
    Ok(Arc::new(crate::OpaqueVerifier::new(rules, &r.http)?))
}

#[cfg(not(feature = "oidc"))]
async fn oidc(_: &OidcMethod, _: &ChainResources) -> Result<Arc<dyn Authenticator>, AuthError> {
    Err(AuthError::Config(
        "method `oidc` needs the `oidc` feature".into(),
    ))
}

#[cfg(not(feature = "oidc"))]
async fn userinfo(
    _: &UserinfoMethod,
    _: &ChainResources,
) -> Result<Arc<dyn Authenticator>, AuthError> {
    Err(AuthError::Config(
        "method `userinfo` needs the `oidc` feature".into(),
    ))
}

#[cfg(not(feature = "oidc"))]
fn introspection(
    _: &IntrospectionMethod,
    _: &ChainResources,
) -> Result<Arc<dyn Authenticator>, AuthError> {
    Err(AuthError::Config(
        "method `introspection` needs the `oidc` feature".into(),
    ))
}

fn session(m: &SessionJwtMethod, r: &ChainResources) -> Result<Arc<dyn Authenticator>, AuthError> {
    let own_keys = m.jwks_file.is_some() || m.hs256_secret_env.is_some();
    let Some(issuer) = &m.issuer else {
        if own_keys || !m.audiences.is_empty() {
            return Err(AuthError::Config(
                "method `session_jwt` with keys or audiences needs `issuer`".into(),
            ));
        }
        let local = r.session_issuer.as_ref().ok_or_else(|| {
            AuthError::Config(
                "method `session_jwt` without `issuer` needs the local session issuer".into(),
            )
        })?;
        return Ok(Arc::new(m.cached(local.verifier()?)?));
    };
    let algorithm = m.algorithm.unwrap_or(SessionAlgorithm::EdDSA);
    let keys = match (&m.jwks_file, &m.hs256_secret_env, algorithm) {
        (Some(path), None, SessionAlgorithm::EdDSA | SessionAlgorithm::ES256) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| AuthError::Config(format!("reading {}: {e}", path.display())))?;
            let document: serde_json::Value = serde_json::from_str(&text)
                .map_err(|e| AuthError::Config(format!("{}: {e}", path.display())))?;
            KeySet::from_jwks(&document)
                .map_err(|e| AuthError::Config(format!("{}: {e}", path.display())))?
        }
        (None, Some(var), SessionAlgorithm::HS256) => {
            let secret = hex::decode(env_secret(var)?.trim())
                .map_err(|_| AuthError::Config(format!("`{var}` is not hex")))?;
            // No key id: the issuer's tokens name one derived from the secret.
            KeySet::from_hmac_secret(&secret, None).map_err(|e| match e {
                AuthError::Config(why) => AuthError::Config(format!("`{var}`: {why}")),
                other => other,
            })?
        }
        _ => {
            return Err(AuthError::Config(
                "method `session_jwt` needs `jwks_file` (EdDSA, ES256) or `hs256_secret_env` (HS256)"
                    .into(),
            ));
        }
    };
    let rules = session_rules(issuer, m.audiences.clone(), algorithm, r.clock.clone());
    Ok(Arc::new(m.cached(JwtVerifier::with_keys(
        "session_jwt",
        keys,
        rules,
    )?)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_methods_in_order() {
        let config = AuthConfig::from_toml(
            r#"
            [[method]]
            type = "script_token"
            [[method]]
            type = "oidc"
            issuer = "https://idp"
            audiences = ["gate"]
            algorithms = ["RS256"]
            [[method]]
            type = "session_jwt"
            "#,
        )
        .unwrap();
        assert!(!config.anonymous);
        assert!(matches!(
            config.methods.as_slice(),
            [
                MethodConfig::ScriptToken,
                MethodConfig::Oidc(_),
                MethodConfig::SessionJwt(_)
            ]
        ));
    }

    #[test]
    fn rejects_unknown_keys_and_types() {
        for bad in [
            "anonymus = true",
            "[[method]]\ntype = \"magic\"",
            "[[method]]\ntype = \"oidc\"\nissuer = \"x\"\naudiences = []\nextra = 1",
            "[[method]]\ntype = \"oidc\"\nissuer = \"x\"\naudiences = [\"a\"]\nalgorithms = [\"none\"]",
        ] {
            assert!(AuthConfig::from_toml(bad).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn empty_config_is_closed() {
        let chain = AuthChain::from_config(&AuthConfig::default(), &ChainResources::default())
            .await
            .unwrap();
        assert!(matches!(
            chain.authenticate_header(Some(b"Bearer x")).await,
            Err(AuthError::NoMethods)
        ));
        assert!(matches!(
            chain.authenticate_header(None).await,
            Err(AuthError::MissingCredential)
        ));
    }

    #[tokio::test]
    async fn session_cache_settings_are_checked() {
        let key = crate::SessionKey::generate(crate::SessionAlgorithm::EdDSA).unwrap();
        let resources = ChainResources {
            session_issuer: Some(crate::SessionIssuer::new(key, "broker", "broker").unwrap()),
            ..ChainResources::default()
        };
        let chain = |text: &str| {
            let config = AuthConfig::from_toml(text).unwrap();
            let resources = resources.clone();
            async move { AuthChain::from_config(&config, &resources).await }
        };
        assert!(
            chain("[[method]]\ntype = \"session_jwt\"\ncache_seconds = 60\ncache_capacity = 5")
                .await
                .is_ok()
        );
        for bad in [
            "[[method]]\ntype = \"session_jwt\"\ncache_seconds = 0",
            "[[method]]\ntype = \"session_jwt\"\ncache_seconds = 3600",
            "[[method]]\ntype = \"session_jwt\"\ncache_capacity = 5",
            "[[method]]\ntype = \"session_jwt\"\ncache_seconds = 60\ncache_capacity = 0",
        ] {
            assert!(
                matches!(chain(bad).await, Err(AuthError::Config(_))),
                "{bad}"
            );
        }
    }

    #[tokio::test]
    async fn missing_resources_are_config_errors() {
        for text in [
            "[[method]]\ntype = \"script_token\"",
            "[[method]]\ntype = \"session_jwt\"",
            "[[method]]\ntype = \"session_jwt\"\nissuer = \"i\"\naudiences = [\"a\"]",
            "[[method]]\ntype = \"userinfo\"",
            "[[method]]\ntype = \"introspection\"\nurl = \"http://127.0.0.1:1\"\nclient_id = \"c\"\nclient_secret_env = \"PORTCULLIS_TEST_UNSET_VARIABLE\"",
        ] {
            let config = AuthConfig::from_toml(text).unwrap();
            assert!(
                matches!(
                    AuthChain::from_config(&config, &ChainResources::default()).await,
                    Err(AuthError::Config(_))
                ),
                "{text}"
            );
        }
    }
}
