//! Region-proxy mode: in front of a region's services, it accepts only requests carrying a
//! valid broker token — signed by the broker's current key, issued by the broker, meant for
//! this region, unexpired, bound to this exact request and not seen before — and forwards
//! them to the service's address. Everything else gets a 401.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::Response;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey};
use serde::Deserialize;
use tokio::sync::RwLock;

use crate::wire::{
    BROKER_TOKEN, FORWARDED_USER, ISSUER, TOKEN_SECONDS, body_hash, forwardable, forwarding_client,
    now_secs, request_hash, valid_name, verify_broker_token,
};
use crate::{error_response, stream_back};

/// One region proxy's configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RegionConfig {
    /// The region's name: broker tokens must name it as their audience.
    pub(crate) name: String,
    pub(crate) listen: String,
    /// Where the broker publishes its signing keys (`/.well-known/jwks.json`).
    pub(crate) broker_jwks_url: String,
    /// Service name → base URL.
    pub(crate) services: BTreeMap<String, String>,
    #[serde(default = "default_body")]
    pub(crate) max_body_bytes: usize,
    #[serde(default = "default_timeout")]
    pub(crate) timeout_seconds: u64,
    /// Serving over mutual TLS with the proxy's SVID; `client_certs` must be `required`.
    pub(crate) tls: Option<crate::tls::TlsConfig>,
    /// With `[region.tls]`: the broker's SPIFFE ID, the only client admitted (at the
    /// handshake, before the broker token is looked at).
    pub(crate) broker_spiffe_id: Option<String>,
}

fn default_body() -> usize {
    1 << 20
}
fn default_timeout() -> u64 {
    30
}

/// Tokens remembered at most (each for its short life); beyond that new requests are
/// refused rather than replay protection silently dropped.
const MAX_REMEMBERED: usize = 1_000_000;
/// The least time between two fetches of the broker's keys.
const KEY_REFRESH_GAP: Duration = Duration::from_secs(5);

/// The broker's public keys, fetched from its JWKS URL, again when a token names an
/// unknown key (the broker rotates its key at every start), at most every few seconds.
struct BrokerKeys {
    url: String,
    http: reqwest::Client,
    keys: RwLock<HashMap<String, DecodingKey>>,
    last_fetch: tokio::sync::Mutex<Option<Instant>>,
}

impl BrokerKeys {
    async fn key(&self, kid: &str) -> Option<DecodingKey> {
        if let Some(key) = self.keys.read().await.get(kid) {
            return Some(key.clone());
        }
        let mut last = self.last_fetch.lock().await;
        // Another request may have fetched while this one waited.
        if let Some(key) = self.keys.read().await.get(kid) {
            return Some(key.clone());
        }
        if last.is_some_and(|at| at.elapsed() < KEY_REFRESH_GAP) {
            return None;
        }
        *last = Some(Instant::now());
        match self.fetch().await {
            Ok(keys) => {
                let found = keys.get(kid).cloned();
                *self.keys.write().await = keys;
                found
            }
            Err(error) => {
                tracing::warn!(url = %self.url, %error, "the broker's keys could not be fetched");
                None
            }
        }
    }

    async fn fetch(&self) -> Result<HashMap<String, DecodingKey>, String> {
        let set: JwkSet = self
            .http
            .get(&self.url)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|e| e.to_string())?
            .json()
            .await
            .map_err(|e| e.to_string())?;
        let mut keys = HashMap::new();
        for jwk in &set.keys {
            let (Some(kid), Ok(key)) = (&jwk.common.key_id, DecodingKey::from_jwk(jwk)) else {
                continue;
            };
            keys.insert(kid.clone(), key);
        }
        Ok(keys)
    }
}

pub(crate) struct Region {
    config: RegionConfig,
    keys: BrokerKeys,
    spent: Spent,
    http: reqwest::Client,
}

/// The broker-token ids already used.
enum Spent {
    /// In this proxy's memory: token ids seen, with their expiry; and when this proxy
    /// started (Unix seconds). The ids live in memory only, so a token issued before it
    /// started may have been spent before a restart: refused.
    Memory {
        seen: Mutex<HashMap<String, u64>>,
        started: u64,
    },
    /// In the store database, shared by every proxy of the region (`[store]`): an id spent
    /// on one is refused by all, across restarts.
    #[cfg(feature = "postgres")]
    Shared(crate::fleet::SharedSpent),
}

/// Why a token's single use could not be established.
enum NotFirst {
    /// It was used before (or this proxy cannot remember more ids).
    Used,
    /// It was issued before this proxy started, which remembers ids in memory only.
    BeforeStart,
    /// The store database cannot say.
    #[cfg_attr(
        not(feature = "postgres"),
        expect(dead_code, reason = "only the shared store can be out of reach")
    )]
    Unavailable(String),
}

impl Region {
    /// Spends `jti` (issued at `iat`, valid until `exp`): Ok the first time.
    async fn spend(&self, jti: &str, iat: u64, exp: u64) -> Result<(), NotFirst> {
        match &self.spent {
            Spent::Memory { seen, started } => {
                if iat < *started {
                    return Err(NotFirst::BeforeStart);
                }
                if first_use(seen, jti, exp) {
                    Ok(())
                } else {
                    Err(NotFirst::Used)
                }
            }
            #[cfg(feature = "postgres")]
            Spent::Shared(shared) => {
                let until = std::time::UNIX_EPOCH + Duration::from_secs(exp);
                match shared.ids.spend(jti, until).await {
                    Ok(true) => Ok(()),
                    Ok(false) => Err(NotFirst::Used),
                    Err(e) => Err(NotFirst::Unavailable(e.to_string())),
                }
            }
        }
    }
}

/// Remembers `jti` until `exp`; false if it was already used (or memory is full).
fn first_use(seen: &Mutex<HashMap<String, u64>>, jti: &str, exp: u64) -> bool {
    let Ok(mut seen) = seen.lock() else {
        return false;
    };
    if seen.contains_key(jti) {
        return false;
    }
    let now = now_secs();
    if seen.len() >= MAX_REMEMBERED / 2 {
        seen.retain(|_, until| *until + 5 >= now);
    }
    if seen.len() >= MAX_REMEMBERED {
        return false;
    }
    seen.insert(jti.to_owned(), exp);
    true
}

/// The region proxy's router; with a `[store]`, the spent token ids are shared with the
/// region's other proxies.
pub(crate) async fn router(
    config: RegionConfig,
    store: Option<&crate::fleet::StoreConfig>,
    tls: Option<&crate::tls::Tls>,
) -> Result<Router, String> {
    if !valid_name(&config.name) {
        return Err(format!(
            "region name {:?} is not a-z, 0-9, - or _",
            config.name
        ));
    }
    for (name, url) in &config.services {
        if !valid_name(name) {
            return Err(format!("service name {name:?} is not a-z, 0-9, - or _"));
        }
        reqwest::Url::parse(url).map_err(|e| format!("service {name}: {url:?}: {e}"))?;
    }
    let http = forwarding_client(config.timeout_seconds)?;
    let keys_http = crate::mtls::broker_keys_client(
        tls,
        config.broker_spiffe_id.as_deref(),
        config.timeout_seconds,
    )?
    .unwrap_or_else(|| http.clone());
    let spent = match store {
        None => Spent::Memory {
            seen: Mutex::new(HashMap::new()),
            started: now_secs(),
        },
        #[cfg(feature = "postgres")]
        Some(store) => {
            let pool = crate::fleet::connect(store).await?;
            Spent::Shared(crate::fleet::spent_ids(pool, &config.name).await?)
        }
        #[cfg(not(feature = "postgres"))]
        Some(_) => return Err(crate::fleet::unsupported()),
    };
    let region = Arc::new(Region {
        keys: BrokerKeys {
            url: config.broker_jwks_url.clone(),
            http: keys_http,
            keys: RwLock::new(HashMap::new()),
            last_fetch: tokio::sync::Mutex::new(None),
        },
        config,
        spent,
        http,
    });
    Ok(Router::new()
        .fallback(handle)
        .with_state(region)
        .layer(axum::middleware::from_fn(crate::wire::close_if_unread)))
}

fn unauthorized(message: impl Into<String>) -> Response {
    let mut response = error_response(StatusCode::UNAUTHORIZED, "unauthorized", message.into());
    response.headers_mut().insert(
        axum::http::header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Broker"),
    );
    response
}

async fn handle(State(region): State<Arc<Region>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let Some(token) = parts
        .headers
        .get(BROKER_TOKEN)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
    else {
        return unauthorized("only requests through the access broker are accepted");
    };
    let Ok(header) = jsonwebtoken::decode_header(&token) else {
        return unauthorized("the broker token is malformed");
    };
    if header.alg != Algorithm::EdDSA {
        return unauthorized("the broker token is not EdDSA-signed");
    }
    let Some(key) = region
        .keys
        .key(header.kid.as_deref().unwrap_or_default())
        .await
    else {
        return unauthorized("the broker token is signed by an unknown key");
    };
    // exp, iss, aud and sub are required by the claims' type; 5 s of clock skew allowed.
    let claims = match verify_broker_token(&token, &key) {
        Ok(claims) => claims,
        Err(e) => return unauthorized(format!("the broker token is not valid here: {e}")),
    };
    if claims.iss != ISSUER {
        return unauthorized("the broker token is not valid here: InvalidIssuer");
    }
    if claims.aud != region.config.name {
        return unauthorized("the broker token is not valid here: InvalidAudience");
    }
    if claims.exp.saturating_add(5) < now_secs() {
        return unauthorized("the broker token is not valid here: ExpiredSignature");
    }
    if claims.exp.saturating_sub(claims.iat) > TOKEN_SECONDS + 5 {
        return unauthorized("the broker token lives longer than a broker token may");
    }
    let path_and_query = parts
        .uri
        .path_and_query()
        .map_or_else(|| parts.uri.path().to_owned(), ToString::to_string);
    let path = parts.uri.path();
    let (service, rest) = path
        .strip_prefix('/')
        .unwrap_or(path)
        .split_once('/')
        .unwrap_or((path.trim_start_matches('/'), ""));
    if service != claims.svc {
        return unauthorized("the broker token is for another service");
    }
    let Some(base) = region.config.services.get(service) else {
        return error_response(
            StatusCode::NOT_FOUND,
            "unknown_service",
            format!("no service {service:?} in region {}", region.config.name),
        );
    };
    if let Err(e) = portcullis::check_forward_path(rest) {
        return error_response(StatusCode::BAD_REQUEST, "bad_path", e.to_string());
    }
    let body = match axum::body::to_bytes(body, region.config.max_body_bytes).await {
        Ok(body) => body,
        Err(_) => {
            return error_response(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!("the body is over {} bytes", region.config.max_body_bytes),
            );
        }
    };
    if request_hash(&parts.method, &path_and_query, &body_hash(&body)) != claims.rh {
        return unauthorized("the request does not match the broker token");
    }
    match region.spend(&claims.jti, claims.iat, claims.exp).await {
        Ok(()) => {}
        Err(NotFirst::BeforeStart) => {
            return unauthorized(
                "the broker token was issued before this region proxy started, so its single \
                 use cannot be checked; ask the broker again",
            );
        }
        Err(NotFirst::Used) => return unauthorized("the broker token was already used"),
        Err(NotFirst::Unavailable(e)) => {
            // Fail closed: a first use that cannot be proved is not accepted.
            return error_response(
                StatusCode::SERVICE_UNAVAILABLE,
                "spent_ids_unavailable",
                format!("the broker token's single use cannot be checked: {e}"),
            );
        }
    }
    let mut url = format!("{}/{rest}", base.trim_end_matches('/'));
    if let Some(query) = parts.uri.query() {
        url.push('?');
        url.push_str(query);
    }
    let mut headers = forwardable(&parts.headers, &[BROKER_TOKEN, FORWARDED_USER]);
    if let Ok(user) = HeaderValue::from_str(&claims.sub) {
        headers.insert(FORWARDED_USER, user);
    }
    let sent = region
        .http
        .request(parts.method, url)
        .headers(headers)
        .body(body)
        .send()
        .await;
    match sent {
        Ok(response) => stream_back(response, |_| {}),
        Err(e) => error_response(
            StatusCode::BAD_GATEWAY,
            "upstream_unreachable",
            format!("service {service}: {e}"),
        ),
    }
}
