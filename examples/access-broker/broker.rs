//! Broker mode: logs people in against the directory, and forwards each request they are
//! allowed to make to the region proxy in front of the service — recorded in the audit log
//! and acknowledged before anything leaves, with a short-lived token bound to the request.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::{Extension, Json, Router};
use jsonwebtoken::EncodingKey;
use portcullis::audit::{AuditEvent, AuditLog, AuditSink, Outcome};
use portcullis::directory::{CachingDirectory, Directory, Password, StaticDirectory};
#[cfg(feature = "ldap")]
use portcullis::directory::{LdapConfig, LdapDirectory};
use portcullis::gate::{Admitted, Gate, GateError, GateRequest};
use portcullis::http::{AuthenticateLayer, CorrelationId};
use portcullis::token::{
    AuthChain, AuthConfig, ChainResources, MethodConfig, PasswordLogin, SessionAlgorithm,
    SessionIssuer, SessionJwtMethod, SessionKey, SessionKeyRing,
};
use portcullis::{AccessRequest, Action, Decision, Principal, Resource, ResourceKind, from_fn};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::wire::{
    BROKER_TOKEN, BrokerClaims, ISSUER, TOKEN_SECONDS, body_hash, forwardable, forwarding_client,
    now_secs, refuse_broker_header, request_hash, sign_broker_token, valid_name,
};
use crate::{Done, error_response, stream_back};

/// The audited resource kind: a service in a region (`service:eu/orders`).
pub(crate) const SERVICE: ResourceKind = ResourceKind::from_static("service");
/// The action audited when a request is refused before its method is known to be sane.
pub(crate) const PROXY: Action = Action::from_static("proxy");

/// The broker's configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct BrokerConfig {
    pub(crate) listen: String,
    /// `sqlite://FILE`, `jsonl://DIR` or `postgres://…`; with a `[store]`, absent means the
    /// store's database.
    #[serde(default)]
    pub(crate) audit_url: Option<String>,
    #[serde(default = "default_body")]
    pub(crate) max_body_bytes: usize,
    /// How long a login lasts.
    #[serde(default = "default_session")]
    pub(crate) session_minutes: u64,
    #[serde(default = "default_timeout")]
    pub(crate) timeout_seconds: u64,
    pub(crate) directory: DirectoryConfig,
    /// Region name → its proxy.
    pub(crate) regions: BTreeMap<String, RegionTarget>,
    /// Who may reach what; nothing else is allowed.
    #[serde(default)]
    pub(crate) grants: Vec<Grant>,
    /// Members of these groups see (and may retry) everyone's requests in the audit log;
    /// everyone else sees only their own.
    #[serde(default)]
    pub(crate) audit_groups: Vec<String>,
    /// The key (32 bytes, made with mode 0600 if missing) that seals request bodies kept
    /// in the audit log for retry; relative to the configuration's folder.
    #[serde(default = "default_retry_key")]
    pub(crate) retry_key_file: PathBuf,
    /// Serving over TLS with the broker's SVID, which it also presents to region proxies
    /// that have a `spiffe_id`. Absent: plain HTTP.
    pub(crate) tls: Option<crate::tls::TlsConfig>,
}

fn default_retry_key() -> PathBuf {
    PathBuf::from("retry-bodies.key")
}

fn default_body() -> usize {
    1 << 20
}
fn default_session() -> u64 {
    60
}
fn default_timeout() -> u64 {
    30
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DirectoryConfig {
    /// Static users (portcullis-directory's TOML), relative to the configuration file.
    pub(crate) users_file: Option<PathBuf>,
    /// An `LdapConfig`.
    pub(crate) ldap: Option<toml::Value>,
    #[serde(default = "default_cache")]
    pub(crate) cache_seconds: u64,
}

fn default_cache() -> u64 {
    300
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RegionTarget {
    /// The region proxy's base URL (scheme, host, port; no path).
    pub(crate) url: String,
    /// The proxy's SPIFFE ID: it is called over mutual TLS (`https://`, the broker's SVID
    /// from `[broker.tls]`) and accepted only with this ID.
    pub(crate) spiffe_id: Option<String>,
}

/// One grant: these users and groups may send these methods to these services.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Grant {
    #[serde(default)]
    pub(crate) users: Vec<String>,
    #[serde(default)]
    pub(crate) groups: Vec<String>,
    /// A region name or `*`.
    pub(crate) region: String,
    /// A service name or `*`.
    pub(crate) service: String,
    /// HTTP methods (`GET`, `POST`, …) or `*`.
    pub(crate) methods: Vec<String>,
}

impl Grant {
    fn covers(&self, who: &Principal, method: &str, region: &str, service: &str) -> bool {
        // Only an SVID makes a SPIFFE ID's principal: a person whose user name is written as
        // one (a directory entry, an OIDC `sub`) must not take a service's grants.
        if who.kind() == portcullis::PrincipalKind::User
            && crate::tls::is_spiffe_subject(who.subject())
        {
            return false;
        }
        let person = self.users.iter().any(|u| u == who.subject())
            || who
                .groups()
                .any(|g| self.groups.iter().any(|mine| mine == g));
        person
            && (self.region == "*" || self.region == region)
            && (self.service == "*" || self.service == service)
            && self
                .methods
                .iter()
                .any(|m| m == "*" || m.eq_ignore_ascii_case(method))
    }

    fn describe(&self) -> String {
        format!(
            "granted {} on {}/{}",
            self.methods.join(","),
            self.region,
            self.service
        )
    }
}

/// The keys broker tokens are signed with.
enum ForwardKeys {
    /// One key made at start (one broker: a restart rotates it).
    Fixed {
        key: EncodingKey,
        kid: String,
        jwks: Value,
    },
    /// Keys shared by every broker through the store database, rotating.
    #[cfg_attr(
        not(feature = "postgres"),
        expect(dead_code, reason = "made only with the postgres feature")
    )]
    Shared(SessionKeyRing),
}

impl ForwardKeys {
    fn jwks(&self) -> Value {
        match self {
            ForwardKeys::Fixed { jwks, .. } => jwks.clone(),
            ForwardKeys::Shared(ring) => ring.public_jwks().unwrap_or_else(|| json!({"keys": []})),
        }
    }

    fn sign(&self, claims: &BrokerClaims) -> Result<String, String> {
        match self {
            ForwardKeys::Fixed { key, kid, .. } => sign_broker_token(kid, claims, key),
            ForwardKeys::Shared(ring) => {
                let key = ring
                    .signing_key(std::time::SystemTime::now())
                    .ok_or("no broker-token key signs now: the store database is out of reach")?;
                let encoding = EncodingKey::from_ed_der(key.secret_material());
                sign_broker_token(key.kid(), claims, &encoding)
            }
        }
    }
}

pub(crate) struct Broker {
    config: BrokerConfig,
    pub(crate) jobs: crate::bulk::Jobs,
    gate: Arc<Gate>,
    pub(crate) audit: Arc<AuditLog>,
    login: PasswordLogin,
    session_ttl: Duration,
    /// Signs the tokens region proxies accept, published as JWKS.
    forward: ForwardKeys,
    /// What keeps the shared keys fresh (fleet mode), kept for the broker's life.
    _keep: Vec<Box<dyn std::any::Any + Send + Sync>>,
    http: reqwest::Client,
    /// Regions called over mutual TLS: their clients, each accepting only its proxy's ID.
    region_http: BTreeMap<String, reqwest::Client>,
    /// Seals the bodies kept for retry: the audit log holds them, its readers must not.
    pub(crate) sealer: crate::sealed::BodySealer,
}

async fn directory(config: &DirectoryConfig, base: &Path) -> Result<Arc<dyn Directory>, String> {
    let cache = Duration::from_secs(config.cache_seconds);
    Ok(match (&config.users_file, &config.ldap) {
        (Some(file), None) => {
            let path = base.join(file);
            let text =
                std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            Arc::new(
                CachingDirectory::new(
                    StaticDirectory::from_toml(&text).map_err(|e| e.to_string())?,
                    cache,
                )
                .map_err(|e| e.to_string())?,
            )
        }
        #[cfg(feature = "ldap")]
        (None, Some(ldap)) => {
            let text = toml::to_string(ldap).map_err(|e| e.to_string())?;
            let ldap = LdapDirectory::new(LdapConfig::from_toml(&text).map_err(|e| e.to_string())?)
                .map_err(|e| e.to_string())?;
            Arc::new(CachingDirectory::new(ldap, cache).map_err(|e| e.to_string())?)
        }
        #[cfg(not(feature = "ldap"))]
        (None, Some(_)) => {
            return Err(
                "[broker.directory.ldap] needs LDAP support: build with `--features ldap`".into(),
            );
        }
        _ => return Err("[broker.directory] needs exactly one of users_file or [ldap]".into()),
    })
}

/// Checks the configuration and builds the broker's router, with its audit log (to flush
/// at shutdown: outcomes are written after their responses).
pub(crate) async fn router(
    config: BrokerConfig,
    base: &Path,
    store: Option<&crate::fleet::StoreConfig>,
    tls: Option<&crate::tls::Tls>,
) -> Result<(Router, Arc<AuditLog>), String> {
    // First: a local audit log beside a [store] is refused before anything is opened.
    let audit_url = crate::fleet::audit_url(config.audit_url.as_deref(), store)?;
    for (name, target) in &config.regions {
        if !valid_name(name) {
            return Err(format!("region name {name:?} is not a-z, 0-9, - or _"));
        }
        let url = reqwest::Url::parse(&target.url).map_err(|e| format!("region {name}: {e}"))?;
        if url.path() != "/" || url.query().is_some() {
            return Err(format!("region {name}: the proxy URL has no path or query"));
        }
    }
    for grant in &config.grants {
        if grant.users.is_empty() && grant.groups.is_empty() {
            return Err("a grant names no users and no groups".into());
        }
        if grant.region != "*" && !config.regions.contains_key(&grant.region) {
            return Err(format!("a grant names unknown region {:?}", grant.region));
        }
    }
    if config.session_minutes == 0 || config.session_minutes > 12 * 60 {
        return Err("session_minutes must be between 1 and 720".into());
    }
    let directory = directory(&config.directory, base).await?;
    let session_ttl = Duration::from_secs(config.session_minutes * 60);
    let state = Stores::open(store, base, &config.retry_key_file, session_ttl).await?;
    let issuer = SessionIssuer::with_ring(state.sessions, "access-broker", "access-broker")
        .and_then(|issuer| issuer.with_ttl(session_ttl))
        .map_err(|e| e.to_string())?;
    let chain = AuthChain::from_config(
        &AuthConfig {
            anonymous: false,
            // The same session token comes with every request: check its signature once a
            // minute, not every time (never past its expiry).
            methods: vec![MethodConfig::SessionJwt(SessionJwtMethod {
                cache_seconds: Some(60),
                ..Default::default()
            })],
        },
        &ChainResources {
            session_issuer: Some(issuer.clone()),
            ..ChainResources::default()
        },
    )
    .await
    .map_err(|e| e.to_string())?;
    // Outcomes are recorded after the response, with nobody waiting: they ride along with
    // the next request's intent (one sync, and no intent queued behind an outcome).
    let options =
        portcullis::audit::AuditOptions::default().with_outcome_linger(Duration::from_millis(5));
    let audit = Arc::new(
        AuditLog::open(&audit_url, base, options)
            .await
            .map_err(|e| format!("audit_url: {e}"))?,
    );
    let grants = config.grants.clone();
    let authorizer = from_fn("access-broker-grants", move |r: &AccessRequest<'_>| {
        let Some((region, service)) = r.resource.id().split_once('/') else {
            return Decision::deny("not a region/service");
        };
        let method = r.action.as_str();
        match grants
            .iter()
            .find(|g| g.covers(r.principal, method, region, service))
        {
            Some(grant) => Decision::allow(grant.describe()),
            None => Decision::deny(format!(
                "no grant lets {} send {} to {region}/{service}",
                r.principal.subject(),
                method.to_ascii_uppercase()
            )),
        }
    });
    let gate = Arc::new(
        Gate::builder()
            .authenticator(Arc::new(chain))
            .authorizer(Arc::new(authorizer))
            .audit(audit.clone() as Arc<dyn AuditSink>)
            .build()
            .map_err(|e| e.to_string())?,
    );
    let http = forwarding_client(config.timeout_seconds)?;
    let region_http = crate::mtls::region_clients(tls, &config.regions, config.timeout_seconds)?;
    let broker = Arc::new(Broker {
        forward: state.forward,
        _keep: state.keep,
        login: match state.attempts {
            Some(attempts) => PasswordLogin::new(directory, issuer).with_attempt_store(attempts),
            None => PasswordLogin::new(directory, issuer),
        },
        session_ttl,
        gate: gate.clone(),
        audit,
        http,
        region_http,
        sealer: state.sealer,
        config,
        jobs: state.jobs,
    });
    let max_body = broker.config.max_body_bytes;
    let proxied = Router::new()
        .route("/proxy/{*rest}", any(proxy))
        .route("/api/audit", get(crate::audit::audit_api))
        .route("/api/audit/{id}/retry", post(crate::audit::retry))
        .route("/api/bulk", post(crate::bulk::start))
        .route("/api/bulk/{id}", get(crate::bulk::status))
        .route("/api/bulk/{id}/cancel", post(crate::bulk::cancel))
        .layer(axum::extract::DefaultBodyLimit::max(max_body))
        .layer(AuthenticateLayer::new(gate));
    Ok((
        Router::new()
            .route("/", get(console))
            .route("/audit", get(console))
            .route("/console.js", get(console_js))
            .route("/console.css", get(console_css))
            // Browsers ask for an icon on every page: answered, not refused as unauthenticated.
            .route("/favicon.svg", get(favicon))
            .route("/favicon.ico", get(favicon))
            .route("/health", get(|| async { "ok" }))
            .route("/login", post(login))
            .route("/.well-known/jwks.json", get(jwks_document))
            .merge(proxied)
            .with_state(broker.clone())
            .layer(portcullis::http::EdgeLayer::new())
            .layer(axum::middleware::from_fn(crate::wire::close_if_unread)),
        broker.audit.clone(),
    ))
}

/// Where the broker's state lives: made at start in this process (one broker), or shared
/// through the store database (`[store]`).
struct Stores {
    sessions: SessionKeyRing,
    forward: ForwardKeys,
    sealer: crate::sealed::BodySealer,
    jobs: crate::bulk::Jobs,
    /// Failed logins counted for every broker (fleet mode); `None`: in this process.
    attempts: Option<Arc<dyn portcullis::token::LoginAttempts>>,
    keep: Vec<Box<dyn std::any::Any + Send + Sync>>,
}

impl Stores {
    async fn open(
        store: Option<&crate::fleet::StoreConfig>,
        base: &Path,
        retry_key_file: &Path,
        session_ttl: Duration,
    ) -> Result<Stores, String> {
        let Some(store) = store else {
            // Both keys are made at start: a restart signs everyone out and rotates the key
            // region proxies trust (they fetch the new one from /.well-known/jwks.json).
            let session_key =
                SessionKey::generate(SessionAlgorithm::EdDSA).map_err(|e| e.to_string())?;
            let forward =
                SessionKey::generate(SessionAlgorithm::EdDSA).map_err(|e| e.to_string())?;
            let jwks = forward
                .public_jwks()
                .ok_or("an EdDSA key has a public half")?;
            return Ok(Stores {
                sessions: SessionKeyRing::fixed(session_key),
                forward: ForwardKeys::Fixed {
                    key: EncodingKey::from_ed_der(forward.secret_material()),
                    kid: forward.kid().to_owned(),
                    jwks,
                },
                sealer: crate::sealed::BodySealer::load_or_create(&base.join(retry_key_file))?,
                jobs: crate::bulk::Jobs::default(),
                attempts: None,
                keep: Vec::new(),
            });
        };
        Self::shared(store, session_ttl).await
    }

    #[cfg(not(feature = "postgres"))]
    async fn shared(
        _store: &crate::fleet::StoreConfig,
        _session_ttl: Duration,
    ) -> Result<Stores, String> {
        Err(crate::fleet::unsupported())
    }

    #[cfg(feature = "postgres")]
    async fn shared(
        store: &crate::fleet::StoreConfig,
        session_ttl: Duration,
    ) -> Result<Stores, String> {
        use crate::fleet;
        let key = fleet::sealing_key(store)?;
        let pool = fleet::connect(store).await?;
        fleet::schema(&pool).await?;
        let sessions =
            fleet::shared_keys(&pool, store, &key, "access-broker/sessions", session_ttl).await?;
        let forward = fleet::shared_keys(
            &pool,
            store,
            &key,
            "access-broker/broker-tokens",
            Duration::from_secs(TOKEN_SECONDS),
        )
        .await?;
        let retry = fleet::shared_secret(&pool, &key, "retry-bodies key").await?;
        let attempts = portcullis::token::PostgresLoginAttempts::from_pool(pool.clone())
            .await
            .map_err(|e| format!("failed-login counts: {e}"))?;
        Ok(Stores {
            sessions: sessions.ring.clone(),
            forward: ForwardKeys::Shared(forward.ring.clone()),
            sealer: crate::sealed::BodySealer::from_key(&retry)?,
            jobs: crate::bulk::Jobs::Postgres(fleet::PgJobs::new(pool)?),
            attempts: Some(Arc::new(attempts)),
            keep: vec![Box::new(sessions), Box::new(forward)],
        })
    }
}

type Shared = State<Arc<Broker>>;

/// The console page: static HTML; its script fetches everything with the session token.
/// Scripts and styles only from the broker itself, never framed.
async fn console() -> Response {
    static_file(include_str!("console.html"), "text/html; charset=utf-8")
}

async fn console_js() -> Response {
    static_file(include_str!("console.js"), "text/javascript; charset=utf-8")
}

async fn console_css() -> Response {
    static_file(include_str!("console.css"), "text/css; charset=utf-8")
}

async fn favicon() -> Response {
    static_file(include_str!("favicon.svg"), "image/svg+xml")
}

fn static_file(text: &'static str, kind: &'static str) -> Response {
    use axum::http::header;
    (
        [
            (header::CONTENT_TYPE, kind),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; frame-ancestors 'none'; form-action 'self'",
            ),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        text,
    )
        .into_response()
}

async fn jwks_document(State(broker): Shared) -> Json<Value> {
    Json(broker.forward.jwks())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginBody {
    username: String,
    password: String,
}

async fn login(State(broker): Shared, body: Bytes) -> Response {
    let Ok(body) = serde_json::from_slice::<LoginBody>(&body) else {
        return error_response(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "send {\"username\": …, \"password\": …}".into(),
        );
    };
    let password = match Password::new(body.password) {
        Ok(password) => password,
        Err(e) => return error_response(StatusCode::BAD_REQUEST, "bad_request", e.to_string()),
    };
    match broker.login.login(&body.username, &password).await {
        Ok(token) => Json(json!({
            "token": token.expose(),
            "token_type": "Bearer",
            "expires_in": broker.session_ttl.as_secs(),
        }))
        .into_response(),
        // 401 for a wrong password or unknown user (alike), 503 if the directory or the
        // failed-login store is down.
        Err(err @ portcullis::token::AuthError::Store(_)) => {
            GateError::AuthUnavailable(err).into_response()
        }
        Err(err) => GateError::Unauthenticated(err).into_response(),
    }
}

/// A request taken apart: where it goes and what it carries.
struct Target<'a> {
    region: &'a str,
    service: &'a str,
    rest: &'a str,
}

/// `/proxy/{region}/{service}/{rest}` as it arrived (still percent-encoded).
fn target(path: &str) -> Result<Target<'_>, String> {
    let inner = path
        .strip_prefix("/proxy/")
        .ok_or_else(|| "not a /proxy/ path".to_owned())?;
    let mut parts = inner.splitn(3, '/');
    let region = parts.next().unwrap_or_default();
    let service = parts.next().unwrap_or_default();
    let rest = parts.next().unwrap_or_default();
    if !valid_name(region) || !valid_name(service) {
        return Err(format!(
            "/proxy/{{region}}/{{service}}/…: {region:?} / {service:?} are not region and service names"
        ));
    }
    portcullis::check_forward_path(rest).map_err(|e| e.to_string())?;
    Ok(Target {
        region,
        service,
        rest,
    })
}

/// Who tried what, for the record of a refusal.
struct Attempt<'a> {
    who: &'a Principal,
    method: &'a Method,
    /// As the caller sent it (an absolute-form URL whole).
    target: &'a str,
    /// Its path, naming the region and service.
    path: &'a str,
    correlation: &'a str,
}

impl Broker {
    /// Records a request refused before the gate (bad input) as a denied decision, so the
    /// audit shows every attempt; a refusal that cannot be recorded is still a refusal.
    async fn refuse(
        &self,
        attempt: Attempt<'_>,
        status: StatusCode,
        code: &str,
        reason: String,
    ) -> Response {
        let Attempt {
            who,
            method,
            target,
            path,
            correlation,
        } = attempt;
        // The region and service when the path names them plainly, else "unparsed".
        let named = path
            .strip_prefix("/proxy/")
            .and_then(|rest| {
                let mut parts = rest.splitn(3, '/');
                Some((parts.next()?, parts.next()?))
            })
            .filter(|(region, service)| valid_name(region) && valid_name(service))
            .map_or_else(|| "unparsed".to_owned(), |(r, s)| format!("{r}/{s}"));
        let resource = Resource::new(SERVICE, named).ok();
        let event = resource.and_then(|resource| {
            AuditEvent::decision(who, PROXY, resource, Decision::deny(reason.clone()))
                .ok()
                .map(|event| {
                    event
                        .with_request(portcullis::audit::RequestSummary {
                            method: method.as_str().to_owned(),
                            target: target.chars().take(512).collect(),
                            parameters: BTreeMap::new(),
                        })
                        .with_correlation_id(correlation.to_owned())
                })
        });
        match event {
            Some(event) => {
                if let Err(error) = self.audit.record(event).await {
                    tracing::warn!(%error, "a refused request could not be audited");
                }
            }
            None => tracing::warn!("a refused request could not be described for the audit"),
        }
        error_response(status, code, reason)
    }
}

async fn proxy(
    State(broker): Shared,
    Extension(who): Extension<Principal>,
    Extension(correlation): Extension<CorrelationId>,
    request: Request,
) -> Response {
    let (parts, body) = request.into_parts();
    forward(broker, who, correlation.0, parts, body, None).await
}

/// The largest body kept (sealed) in the audit record so the request can be retried.
const KEPT_BODY: usize = 16 << 10;

/// Authorizes, audits and forwards one request (`retry_of`: the audit id it repeats).
pub(crate) async fn forward(
    broker: Arc<Broker>,
    who: Principal,
    correlation: String,
    parts: axum::http::request::Parts,
    body: Body,
    retry_of: Option<String>,
) -> Response {
    let started = Instant::now();
    let correlation = CorrelationId(correlation);
    // What the caller asked for, as they sent it: an absolute-form URL whole (it is
    // refused, and its record should show where it pointed), anything else its path.
    let absolute = parts.uri.scheme().is_some() || parts.uri.authority().is_some();
    let shown = if absolute {
        parts.uri.to_string()
    } else {
        parts
            .uri
            .path_and_query()
            .map_or_else(|| parts.uri.path().to_owned(), ToString::to_string)
    };
    let refuse = |status, code: &'static str, reason: String| {
        let broker = broker.clone();
        let who = who.clone();
        let method = parts.method.clone();
        let shown = shown.clone();
        let path = parts.uri.path().to_owned();
        let correlation = correlation.0.clone();
        async move {
            let attempt = Attempt {
                who: &who,
                method: &method,
                target: &shown,
                path: &path,
                correlation: &correlation,
            };
            broker.refuse(attempt, status, code, reason).await
        }
    };
    if absolute {
        return refuse(
            StatusCode::BAD_REQUEST,
            "bad_path",
            "absolute URLs are refused: send /proxy/{region}/{service}/{path}".into(),
        )
        .await;
    }
    let target = match target(parts.uri.path()) {
        Ok(target) => target,
        Err(reason) => return refuse(StatusCode::BAD_REQUEST, "bad_path", reason).await,
    };
    if let Err(e) = refuse_broker_header(&parts.headers) {
        return refuse(StatusCode::BAD_REQUEST, "forbidden_header", e.to_string()).await;
    }
    let Some(region) = broker.config.regions.get(target.region) else {
        return refuse(
            StatusCode::NOT_FOUND,
            "unknown_region",
            format!("no region {:?}", target.region),
        )
        .await;
    };
    let Ok(action) = parts.method.as_str().to_ascii_lowercase().parse::<Action>() else {
        return refuse(
            StatusCode::METHOD_NOT_ALLOWED,
            "bad_method",
            format!("method {} is not proxied", parts.method),
        )
        .await;
    };
    let body = match axum::body::to_bytes(body, broker.config.max_body_bytes).await {
        Ok(body) => body,
        Err(_) => {
            return refuse(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!("the body is over {} bytes", broker.config.max_body_bytes),
            )
            .await;
        }
    };
    // The URL exactly as it will be sent, so the hash covers what the region proxy sees.
    let mut url = format!(
        "{}/{}/{}",
        region.url.trim_end_matches('/'),
        target.service,
        target.rest
    );
    if let Some(query) = parts.uri.query() {
        url.push('?');
        url.push_str(query);
    }
    let url = match reqwest::Url::parse(&url) {
        Ok(url) => url,
        Err(e) => return refuse(StatusCode::BAD_REQUEST, "bad_path", e.to_string()).await,
    };
    let forwarded = match url.query() {
        Some(query) => format!("{}?{query}", url.path()),
        None => url.path().to_owned(),
    };
    // Hashed once: for the broker token and for the audit record.
    let body_sha256 = body_hash(&body);
    let hash = request_hash(&parts.method, &forwarded, &body_sha256);
    let Ok(resource) = Resource::new(SERVICE, format!("{}/{}", target.region, target.service))
    else {
        return refuse(StatusCode::BAD_REQUEST, "bad_path", "bad resource".into()).await;
    };
    let mut request = GateRequest::new(action, resource)
        .http(parts.method.as_str(), shown.clone())
        .correlation_id(correlation.0.clone())
        .param("region", target.region)
        .param("service", target.service)
        .param("path", forwarded.clone())
        .param("body_bytes", body.len())
        .param("body_sha256", body_sha256);
    if !body.is_empty() && body.len() <= KEPT_BODY {
        // Sealed: the body may hold secrets, and the audit log has readers.
        match broker.sealer.seal(&body) {
            Ok(sealed) => request = request.param("body_sealed", sealed),
            Err(e) => {
                return error_response(StatusCode::INTERNAL_SERVER_ERROR, "internal", e);
            }
        }
    }
    if let Some(kind) = parts
        .headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .filter(|v| v.len() <= 256 && !v.chars().any(char::is_control))
    {
        request = request.param("content_type", kind);
    }
    if let Some(original) = &retry_of {
        request = request.param("retry_of", original.clone());
    }
    // The broker token's id goes into the intent, so that the region proxy's refusal of a
    // replayed token and the audit record name the same request.
    let Some(token_id) = token_id() else {
        return error_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the system random source failed".to_owned(),
        );
    };
    request = request.param("token_id", token_id.clone());
    let now = now_secs();
    let claims = BrokerClaims {
        iss: ISSUER.to_owned(),
        aud: target.region.to_owned(),
        sub: who.subject().to_owned(),
        iat: now,
        exp: now + TOKEN_SECONDS,
        jti: token_id,
        svc: target.service.to_owned(),
        rh: hash,
    };
    // The token is signed while the intent is being made durable: signing needs nothing the
    // audit log returns, and done afterwards its ~40 µs would add to every request. The
    // yield lets the audit writer, woken by this task, take the intent before signing
    // holds the thread. The token is only sent once the gate has admitted the request.
    let signing = async {
        tokio::task::yield_now().await;
        broker.forward.sign(&claims)
    };
    // Authorized and durably recorded before anything is sent; refusals are audited by the
    // gate; an audit log that cannot record means 503 and nothing forwarded.
    let (admitted, signed) = tokio::join!(broker.gate.admit(&who, &request), signing);
    let admitted = match admitted {
        Ok(admitted) => admitted,
        Err(err) => return err.into_response(),
    };
    let token = match signed {
        Ok(token) => token,
        Err(e) => {
            finish(admitted, Outcome::failed(format!("signing failed: {e}")));
            return error_response(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string());
        }
    };
    let mut headers = forwardable(&parts.headers, &[BROKER_TOKEN]);
    match HeaderValue::from_str(&token) {
        Ok(value) => {
            headers.insert(BROKER_TOKEN, value);
        }
        Err(e) => {
            finish(admitted, Outcome::failed(e.to_string()));
            return error_response(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string());
        }
    }
    let sent = broker
        .region_http
        .get(target.region)
        .unwrap_or(&broker.http)
        .request(parts.method, url)
        .headers(headers)
        .body(body)
        .send()
        .await;
    let response = match sent {
        Ok(response) => response,
        Err(e) => {
            let message = format!("region {} unreachable: {e}", target.region);
            finish(admitted, Outcome::failed(message.clone()));
            return error_response(StatusCode::BAD_GATEWAY, "region_unreachable", message);
        }
    };
    stream_back(response, move |done: Done| {
        let detail = format!(
            "HTTP {} · {} bytes · {} ms{}",
            done.status,
            done.bytes,
            started.elapsed().as_millis(),
            done.error
                .as_deref()
                .map(|e| format!(" · {e}"))
                .unwrap_or_default()
        );
        let outcome = if done.error.is_none() && done.status < 500 {
            Outcome::succeeded(detail)
        } else {
            Outcome::failed(detail)
        };
        finish(admitted, outcome);
    })
}

/// A fresh broker token id: 128 random bits, hex. It must be unique (the region proxy spends
/// each id once), not secret: the token's signature is what a forger lacks.
fn token_id() -> Option<String> {
    let bytes: [u8; 16] = portcullis_core::unique_bytes().ok()?;
    Some(hex::encode(bytes))
}

/// Records the outcome in the background: the response is already on its way.
fn finish(admitted: Admitted, outcome: Outcome) {
    tokio::spawn(admitted.finish(outcome));
}

impl Broker {
    /// Whether `who` sees (and may retry, and administer the bulk jobs of) everyone.
    pub(crate) fn sees_everyone(&self, who: &Principal) -> bool {
        who.groups()
            .any(|g| self.config.audit_groups.iter().any(|a| a == g))
    }

    /// Whether a grant lets `who` send `method` to `region`/`service`.
    pub(crate) fn grants_cover(
        &self,
        who: &Principal,
        method: &str,
        region: &str,
        service: &str,
    ) -> bool {
        self.config
            .grants
            .iter()
            .any(|g| g.covers(who, method, region, service))
    }
}

#[cfg(test)]
mod tests {
    use portcullis::{AuthMethod, Principal, PrincipalKind};

    use super::Grant;

    #[test]
    fn a_person_named_like_a_spiffe_id_is_not_the_service() {
        let grant = Grant {
            users: vec!["spiffe://prod.example/ci".into()],
            groups: vec!["ci".into()],
            region: "*".into(),
            service: "*".into(),
            methods: vec!["*".into()],
        };
        let service = Principal::builder(
            PrincipalKind::Service,
            "spiffe://prod.example/ci",
            AuthMethod::SCRIPT_TOKEN,
        )
        .build()
        .unwrap();
        assert!(grant.covers(&service, "GET", "us", "billing"));
        for name in ["spiffe://prod.example/ci", "SPIFFE://prod.example/ci"] {
            let person = Principal::builder(PrincipalKind::User, name, AuthMethod::PASSWORD)
                .groups(["ci"])
                .build()
                .unwrap();
            assert!(!grant.covers(&person, "GET", "us", "billing"), "{name}");
        }
    }
}
