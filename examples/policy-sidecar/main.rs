//! An OPA-compatible policy sidecar on `portcullis::policy`: existing OPA clients call
//! `POST /v1/data/{path}` with `{"input": …}` and get `{"result": …, "decision_id": …}`.
//! Bundles come from folders or bundle servers, are validated (compile, roots, `test_*`
//! rules) before they serve, hot-reload, survive restarts as last known good, and — with a
//! rollout configured — follow the pipeline for this host's SPIFFE ID.
//!
//! ```sh
//! cargo run --example policy-sidecar --features policy           # the demo bundle on :8181
//! cargo run --example policy-sidecar --features policy -- --config sidecar.toml
//! ```
//!
//! See `examples/policy-sidecar/README.md`.
#![expect(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a command-line service prints its banner and its errors"
)]

mod client_tls;
mod metrics;
mod report;
mod request;
#[path = "../common/tls.rs"]
mod tls;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use clap::Parser;
use portcullis::audit::{AuditLog, AuditOptions};
use portcullis::policy::{
    Algorithm, Bundle, BundleLimits, BundleSource, BundleVerifier, DecisionEntry, DecisionLog,
    DirSource, EvalLimits, Evaluation, Fetched, HttpSource, PolicyEngine, PolicyError, PolicyStore,
    PollOptions, Rollout, RolloutConfig, VerificationKey, poll_once,
};

use crate::metrics::Metrics;
use crate::request::{DataPath, RequestError};
use portcullis::{AuthMethod, Principal, PrincipalKind, SystemClock};
use serde::Deserialize;
use serde_json::{Value, json};

const LONG_ABOUT: &str = "\
An OPA-compatible policy sidecar built on portcullis::policy (Rego on regorus).

API (as OPA's):
  POST /v1/data/{path}   body {\"input\": ...}  ->  {\"result\": ..., \"decision_id\": ...}
                         (no \"result\" when the document is undefined; without \"input\",
                         input is undefined and a \"warning\" says so). Path segments may be
                         any key or an array index (percent-decoded); gzip bodies accepted.
  GET  /v1/data/{path}   optional ?input=<JSON> (without it, input is undefined)
                         Both take ?pretty, ?metrics (timer_..._ns) and ?provenance.
  POST /v1/query         {\"query\": \"...\", \"input\": ...} -> {\"result\": [bindings...]};
  GET  /v1/query?q=...   [server] query_api = false turns both off (403)
  GET  /v1/policies      {\"result\": [{\"id\", \"raw\"}]}; /v1/policies/{id} for one
  GET  /health           200 once serving; ?bundles: 200 only when every bundle is active
  GET  /health/live      200 while the process answers
  GET  /health/ready     200 once every bundle is active, else 500
  GET  /metrics          Prometheus text: request latency per handler, decisions, bundles
  GET  /v1/status        active revision and last error per bundle
Errors are {\"code\", \"message\"}: 400 invalid_parameter, 403 forbidden, 404
resource_not_found, 413/415 for bodies (413 too for a decision too large to log), 500
internal_error, 503 unavailable (no active
policy, or a decision that could not be logged).

Configuration (TOML; --print-config shows the built-in one):
  listen, data_dir (last known good bundles), spiffe_id, poll_seconds, max_body_bytes,
  strict_builtin_errors (default false: a built-in's error makes its expression undefined,
  as OPA's default; true: it fails the decision with a 500)
  [[bundles]] name, dir = FOLDER | url = http://.../bundle.tar.gz, artifact (for rollout),
              token_file = FILE (a bearer token sent to url, e.g. a policy-delivery host token);
              with a rollout, `{revision}` in dir/url is replaced by this host's revision
  [rollout] config = FILE (the pipelines), state = FILE (written by the delivery service),
            mode = staged (default) | all_at_once: every host runs the newest revision (the
            candidate, else stable) as the old delivery did. The mode is re-read from the
            configuration file on every poll, so switching needs no restart.
  [server] query_api (default true)
  [delivery] url = http://delivery:8282, token_file = FILE, report_seconds (default 10):
            report bundles' active revisions (POST /status) and decision counts per
            bundle revision (POST /v1/decision-counts) to a policy-delivery server
            (token_file not needed with [client_tls] and an https:// url)
  [client_tls] cert, key (this host's X.509-SVID), server_id (the SPIFFE ID servers must
            present; default any), reload_seconds, [client_tls.trust_domains]: the SVID
            is presented to https:// bundle urls and [delivery] (mutual TLS, no token),
            and its SPIFFE ID is spiffe_id
  [decision_log] url = sqlite://FILE | jsonl://DIR | postgres://..., mask = [\"/input/a\"]
            (JSON pointers, or input.a.b), labels = {k = \"v\"}; records in OPA's layout,
            masked by the bundles' data.system.log.mask policy too
  [keys.ID] algorithm = RS256|PS256|ES256|EdDSA|HS256|..., key_file = FILE (a PEM public
            key, or the HMAC secret), scope (optional)
  [bundles.signing] keyid (else the signature's kid), scope: the bundle must be signed as
            by `opa sign`, every file listed with its digest, or it is refused

Bundles are validated before they serve: a bundle that does not compile (OPA's compile
errors included: unknown functions, wrong arguments, unsafe variables, recursion, two
defaults, a rule where data is), whose roots clash or whose test_* rules fail is refused
and the previous revision keeps answering. Only configured bundles load from data_dir at
start, a signed bundle's copy only if its signature still verifies.";

const DEFAULT_CONFIG: &str = concat!(
    "# The built-in configuration: the demo bundle from the source tree.\n",
    "listen = \"127.0.0.1:8181\"\n",
    "data_dir = \"policy-sidecar-data\"\n",
    "poll_seconds = 2\n\n",
    "[[bundles]]\n",
    "name = \"examples\"\n",
    "dir = \"",
    env!("CARGO_MANIFEST_DIR"),
    "/examples/policy-sidecar/bundle\"\n"
);

#[derive(Debug, Parser)]
#[command(name = "policy-sidecar", version, about = "An OPA-compatible policy sidecar.", long_about = LONG_ABOUT)]
struct Cli {
    /// The configuration file (TOML); without one, the built-in demo configuration.
    #[arg(long, short, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Listen here instead of the configured address (e.g. 127.0.0.1:0 for any port).
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
    /// Print the built-in configuration and exit.
    #[arg(long)]
    print_config: bool,
    /// Log level: error, warn, info, debug, trace.
    #[arg(long, default_value = "info")]
    log_level: tracing::Level,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default = "default_listen")]
    listen: String,
    #[serde(default = "default_data_dir")]
    data_dir: PathBuf,
    spiffe_id: Option<String>,
    #[serde(default = "default_poll")]
    poll_seconds: u64,
    #[serde(default = "default_body")]
    max_body_bytes: usize,
    #[serde(default)]
    bundles: Vec<BundleConfig>,
    rollout: Option<RolloutFiles>,
    decision_log: Option<DecisionLogConfig>,
    /// Report status and decision counts to a policy-delivery server.
    delivery: Option<report::DeliveryConfig>,
    #[serde(default)]
    keys: BTreeMap<String, KeyConfig>,
    /// A built-in's error fails the decision (OPA's strict mode) instead of leaving its
    /// expression undefined.
    #[serde(default)]
    strict_builtin_errors: bool,
    #[serde(default)]
    server: ServerConfig,
    /// Serving over TLS with this workload's SVID, whose SPIFFE ID then is `spiffe_id`.
    /// Absent: plain HTTP.
    tls: Option<tls::TlsConfig>,
    /// This host's SVID, presented to `https://` bundle servers and to `[delivery]` (mutual
    /// TLS); its SPIFFE ID then is `spiffe_id`.
    client_tls: Option<client_tls::ClientTlsConfig>,
}

/// `[server]`: which parts of OPA's API answer.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct ServerConfig {
    /// Whether `/v1/query` (ad-hoc queries over every policy and all data) answers; when
    /// off it is a 403.
    #[serde(default = "default_true")]
    query_api: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig { query_api: true }
    }
}

fn default_true() -> bool {
    true
}

/// A key bundle signatures are verified with (OPA's `keys`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyConfig {
    algorithm: String,
    key_file: PathBuf,
    scope: Option<String>,
}

/// Which key and scope a bundle's signature must have (OPA's `bundles.*.signing`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct SigningConfig {
    keyid: Option<String>,
    scope: Option<String>,
}

fn default_listen() -> String {
    "127.0.0.1:8181".into()
}
fn default_data_dir() -> PathBuf {
    "policy-sidecar-data".into()
}
fn default_poll() -> u64 {
    10
}
fn default_body() -> usize {
    1 << 20
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct BundleConfig {
    name: String,
    dir: Option<String>,
    url: Option<String>,
    artifact: Option<String>,
    signing: Option<SigningConfig>,
    /// A file holding the bearer token sent with every request to `url` (OPA's
    /// `credentials.bearer`): the host token a policy-delivery server binds to this
    /// host's SPIFFE ID.
    token_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RolloutFiles {
    config: PathBuf,
    state: PathBuf,
    #[serde(default)]
    mode: RolloutMode,
}

/// How hosts pick their revision from the rollout state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum RolloutMode {
    /// The pipeline decides per host: the candidate where its step reaches, else stable.
    #[default]
    Staged,
    /// Every host runs the newest revision at once (the delivery before pipelines): the
    /// switch back when the pipeline itself is in the way.
    AllAtOnce,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DecisionLogConfig {
    url: String,
    /// Static masks: JSON pointers (`/input/password`) or dot paths under the input.
    #[serde(default)]
    mask: Vec<String>,
    /// Labels on every record (OPA's `labels`); `id` and `version` are added unless set.
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.print_config {
        print!("{DEFAULT_CONFIG}");
        return ExitCode::SUCCESS;
    }
    tracing_subscriber::fmt()
        .with_max_level(cli.log_level)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("policy-sidecar: cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("policy-sidecar: {err}");
            ExitCode::FAILURE
        }
    }
}

/// Resolves `path` against the configuration file's folder.
fn resolve(base: &Path, path: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        base.join(path)
    }
}

async fn run(cli: Cli) -> Result<(), String> {
    let (text, base) = match &cli.config {
        Some(path) => (
            std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?,
            path.parent().map(Path::to_path_buf).unwrap_or_default(),
        ),
        None => (DEFAULT_CONFIG.to_owned(), PathBuf::from(".")),
    };
    let mut config: Config = toml::from_str(&text).map_err(|e| format!("configuration: {e}"))?;
    if let Some(listen) = cli.listen {
        config.listen = listen;
    }
    let tls = match config.tls.as_mut() {
        Some(section) => {
            section.resolve_paths(&base);
            Some(section.open().map_err(|e| e.to_string())?)
        }
        None => None,
    };
    if let Some(tls) = &tls {
        config.spiffe_id = svid_spiffe_id(tls, config.spiffe_id.take())?;
    }
    let client_identity = match &config.client_tls {
        Some(section) => Some(Arc::new(section.open(&base)?)),
        None => None,
    };
    if let Some(identity) = &client_identity {
        config.spiffe_id = match (identity.spiffe_id(), config.spiffe_id.take()) {
            (Some(id), Some(configured)) if id != configured => {
                return Err(format!(
                    "the [client_tls] SVID is {id} but spiffe_id (or the [tls] SVID) is \
                     {configured:?}: one host, one SPIFFE ID"
                ));
            }
            (id, configured) => id.or(configured),
        };
        // Rotated SVIDs and bundles are picked up without a restart (the task lives as long
        // as the process).
        drop(identity.watch());
    }
    check(&config)?;
    for bundle in &config.bundles {
        if let Some(path) = &bundle.token_file {
            read_token(&resolve(&base, path))
                .map_err(|e| format!("bundle {}: token_file: {e}", bundle.name))?;
        }
    }
    let data_dir = resolve(&base, &config.data_dir);
    let mut verifiers = BTreeMap::new();
    for bundle in &config.bundles {
        verifiers.insert(bundle.name.clone(), verifier(&config, bundle, &base)?);
    }
    let limits = EvalLimits::default().with_strict_builtin_errors(config.strict_builtin_errors);
    // Only configured bundles load from the last known good copies, each verified again
    // when it must be signed; a copy that does not is refused (see /v1/status).
    let stored = config.bundles.iter().map(|b| {
        let verifier = verifiers.get(&b.name).and_then(|v| v.as_deref());
        (b.name.as_str(), verifier)
    });
    let store = Arc::new(
        PolicyStore::open_with(data_dir.join("bundles"), limits, stored)
            .map_err(|e| format!("last known good bundles: {e}"))?,
    );
    let rollout = match &config.rollout {
        Some(files) => {
            let path = resolve(&base, &files.config);
            let text =
                std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            let pipelines: RolloutConfig =
                toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
            // Checked now, so a bad pipeline stops the start rather than every poll.
            Rollout::new(&pipelines, Arc::new(SystemClock)).map_err(|e| e.to_string())?;
            Some((pipelines, resolve(&base, &files.state)))
        }
        None => None,
    };
    let mut audit_log = None;
    let decision_log = match &config.decision_log {
        Some(log) => {
            let options = AuditOptions::default()
                .with_max_event_bytes(decision_event_cap(config.max_body_bytes));
            let sink = Arc::new(
                AuditLog::open(&log.url, &base, options)
                    .await
                    .map_err(|e| format!("[decision_log] {e}"))?,
            );
            audit_log = Some(sink.clone());
            let actor = Principal::builder(
                PrincipalKind::Service,
                config.spiffe_id.as_deref().unwrap_or("policy-sidecar"),
                AuthMethod::from_static("local"),
            )
            .build()
            .map_err(|e| e.to_string())?;
            let mut labels = BTreeMap::from([
                (
                    "id".to_owned(),
                    config
                        .spiffe_id
                        .clone()
                        .unwrap_or_else(|| "policy-sidecar".to_owned()),
                ),
                ("version".to_owned(), env!("CARGO_PKG_VERSION").to_owned()),
            ]);
            labels.extend(log.labels.clone());
            Some(Arc::new(
                DecisionLog::new(sink, actor)
                    .mask(&log.mask)
                    .map_err(|e| format!("[decision_log] mask: {e}"))?
                    .labels(labels)
                    // A bundle's data.system.log.mask masks each record, as in OPA.
                    .mask_policy(store.clone()),
            ))
        }
        None => None,
    };
    let options = PollOptions::default()
        .with_interval(Duration::from_secs(config.poll_seconds.max(1)))
        .with_max_backoff(Duration::from_secs(300))
        .with_jitter_percent(10);
    let metrics = Arc::new(Metrics::default());
    for bundle in &config.bundles {
        let follower = Follower {
            metrics: metrics.clone(),
            bundle: bundle.clone(),
            base: base.clone(),
            rollout: rollout.clone(),
            config_file: cli.config.clone(),
            mode: config.rollout.as_ref().map(|r| r.mode).unwrap_or_default(),
            spiffe_id: config.spiffe_id.clone(),
            client_identity: client_identity.clone(),
            source: None,
            decision_log: decision_log.clone(),
            last_refusal: None,
            verifier: verifiers.get(&bundle.name).cloned().flatten(),
        };
        tokio::spawn(follower.run(store.clone(), options));
    }
    let decisions = match &config.delivery {
        Some(delivery) => {
            let token = match &delivery.token_file {
                Some(path) => Some(
                    read_token(&resolve(&base, path))
                        .map_err(|e| format!("[delivery] token_file: {e}"))?,
                ),
                None => None,
            };
            let client = match &client_identity {
                Some(identity) if is_https(&delivery.url) => {
                    identity.http_client(report::REPORT_TIMEOUT)?
                }
                _ => report::plain_client()?,
            };
            let counter = Arc::new(report::DecisionCounter::default());
            tokio::spawn(report::run(
                delivery.clone(),
                client,
                token,
                counter.clone(),
                store.clone(),
                config.spiffe_id.clone(),
            ));
            Some(counter)
        }
        None => None,
    };
    let state = Arc::new(App {
        store: store.clone(),
        decisions,
        decision_log,
        audit_log,
        bundles: config.bundles.iter().map(|b| b.name.clone()).collect(),
        metrics: metrics.clone(),
        query_api: config.server.query_api,
        max_body: config.max_body_bytes,
        stored: data_dir.join("bundles"),
        limits,
        snapshot: Mutex::new(None),
    });
    let app = Router::new()
        .route("/v1/data", get(get_data).post(post_data))
        .route("/v1/data/", get(get_data).post(post_data))
        .route("/v1/data/{*path}", get(get_data).post(post_data))
        .route("/v1/query", get(get_query).post(post_query))
        .route("/v1/policies", get(list_policies))
        .route("/v1/policies/{*id}", get(get_policy))
        .route("/health", get(health))
        .route("/health/live", get(health_live))
        .route("/health/ready", get(health_ready))
        .route("/metrics", get(prometheus))
        .route("/v1/status", get(status))
        .route_layer(middleware::from_fn_with_state(metrics, track))
        .layer(DefaultBodyLimit::max(config.max_body_bytes))
        .with_state(state)
        // Every error answer in OPA's shape, `{"code": …, "message": …}`, the framework's
        // own (unknown route, wrong method, body too large) included.
        .layer(portcullis::edge::EdgeLayer::new().with_code_field("code"))
        // ...with OPA's codes: the framework's own say `bad_request`, `not_found`.
        .layer(middleware::map_response(opa_codes));
    let listener = tokio::net::TcpListener::bind(&config.listen)
        .await
        .map_err(|e| format!("listen on {}: {e}", config.listen))?;
    let address = listener.local_addr().map_err(|e| e.to_string())?;
    if let Some(tls) = tls {
        println!("LISTENING https://{address}");
        return serve_tls(&tls, listener, app).await;
    }
    tls::warn_if_plain_and_exposed(&address, "policy-sidecar");
    println!("LISTENING http://{address}");
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await
    .map_err(|e| e.to_string())
}

/// The sidecar's `spiffe_id` when it has an SVID: the SVID's. A configured `spiffe_id` that
/// differs stops the start (which one would the rollout and the decision log believe?); a
/// certificate without a SPIFFE ID leaves the configured one.
#[cfg(feature = "tls")]
fn svid_spiffe_id(tls: &tls::Tls, configured: Option<String>) -> Result<Option<String>, String> {
    let Some(id) = tls.spiffe_id() else {
        return Ok(configured);
    };
    match configured {
        Some(configured) if configured != id.as_str() => Err(format!(
            "spiffe_id = {configured:?} but the [tls] SVID is {id}: remove spiffe_id (the SVID's \
             is used) or fix it"
        )),
        _ => Ok(Some(id.to_string())),
    }
}

/// Without the `tls` feature there is no [`tls::Tls`].
#[cfg(not(feature = "tls"))]
fn svid_spiffe_id(tls: &tls::Tls, _configured: Option<String>) -> Result<Option<String>, String> {
    match *tls {}
}

/// Serves `router` over TLS per `[tls]` until Ctrl-C, with the identity files watched for
/// rotation.
#[cfg(feature = "tls")]
async fn serve_tls(
    tls: &tls::Tls,
    listener: tokio::net::TcpListener,
    router: Router,
) -> Result<(), String> {
    let watch = tls.watch();
    let served = tls
        .server()
        .map_err(|e| e.to_string())?
        .serve(listener, router, async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
        .map_err(|e| e.to_string());
    watch.abort();
    served
}

/// Without the `tls` feature there is no [`tls::Tls`] to serve.
#[cfg(not(feature = "tls"))]
async fn serve_tls(
    tls: &tls::Tls,
    _listener: tokio::net::TcpListener,
    _router: Router,
) -> Result<(), String> {
    match *tls {}
}

/// The decision log's cap on one record ([`AuditOptions::max_event_bytes`]): twice the
/// largest body accepted (the input, and a result as large again) plus 64 KiB for the
/// rest of the record. A record still larger is refused with a 413.
fn decision_event_cap(max_body_bytes: usize) -> usize {
    max_body_bytes.saturating_mul(2).saturating_add(64 << 10)
}

/// The answer when a decision (or query) could not be logged: 413 if its record is too
/// large for the decision log (asking again cannot help), otherwise 503.
fn unlogged(err: &PolicyError, what: &str) -> Response {
    match err {
        PolicyError::Input(_) => error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_parameter",
            format!("the {what} could not be logged, so it is not given: {err}"),
        ),
        _ => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "internal_error",
            format!("the {what} could not be logged, so it is not given: {err}"),
        ),
    }
}

/// Rewrites the codes of the framework's own error answers (unknown route, malformed
/// path, body too large) to OPA's: `bad_request` → `invalid_parameter`, `not_found` →
/// `resource_not_found`, `payload_too_large` and `unsupported_media_type` →
/// `invalid_parameter`.
async fn opa_codes(response: Response) -> Response {
    if !(response.status().is_client_error() || response.status().is_server_error()) {
        return response;
    }
    let (parts, body) = response.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, 64 << 10).await else {
        return error(
            parts.status,
            "internal_error",
            "the error answer was unreadable",
        );
    };
    let mut value: Value = match serde_json::from_slice(&bytes) {
        Ok(value) => value,
        Err(_) => return Response::from_parts(parts, axum::body::Body::from(bytes)),
    };
    let renamed = match value.get("code").and_then(Value::as_str) {
        Some("bad_request" | "payload_too_large" | "unsupported_media_type") => "invalid_parameter",
        Some("not_found") => "resource_not_found",
        _ => return Response::from_parts(parts, axum::body::Body::from(bytes)),
    };
    if let Some(fields) = value.as_object_mut() {
        fields.insert("code".into(), json!(renamed));
    }
    let mut parts = parts;
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, axum::body::Body::from(value.to_string()))
}

fn check(config: &Config) -> Result<(), String> {
    if config.bundles.is_empty() {
        return Err("no [[bundles]] configured: nothing could ever be allowed".into());
    }
    for bundle in &config.bundles {
        if bundle.dir.is_some() == bundle.url.is_some() {
            return Err(format!(
                "bundle {}: set exactly one of dir and url",
                bundle.name
            ));
        }
        if config.client_tls.is_some()
            && bundle.token_file.is_none()
            && bundle.url.as_deref().is_some_and(|url| !is_https(url))
        {
            return Err(format!(
                "bundle {}: [client_tls] presents this host's SVID over TLS only: use an \
                 https:// url (or a token_file)",
                bundle.name
            ));
        }
        if bundle.token_file.is_some() && bundle.url.is_none() {
            return Err(format!(
                "bundle {}: token_file is sent to a url; a dir needs none",
                bundle.name
            ));
        }
        if config.rollout.is_some() && (bundle.artifact.is_none() || config.spiffe_id.is_none()) {
            return Err(format!(
                "bundle {}: with a [rollout], every bundle names its artifact and spiffe_id is set",
                bundle.name
            ));
        }
    }
    if let Some(delivery) = &config.delivery {
        let mtls = config.client_tls.is_some() && is_https(&delivery.url);
        if delivery.token_file.is_none() && !mtls {
            return Err(
                "[delivery] needs token_file, or [client_tls] and an https:// url: the server \
                 must know which host reports"
                    .into(),
            );
        }
    }
    Ok(())
}

/// Whether `url` is `https://` (any case).
fn is_https(url: &str) -> bool {
    url.get(..8)
        .is_some_and(|scheme| scheme.eq_ignore_ascii_case("https://"))
}

/// The bearer token in the file at `path` (surrounding whitespace trimmed).
fn read_token(path: &Path) -> Result<String, PolicyError> {
    let io = |source: std::io::Error| PolicyError::Io {
        path: path.display().to_string(),
        source,
    };
    let text = std::fs::read_to_string(path).map_err(io)?;
    let token = text.trim();
    if token.is_empty() {
        return Err(io(std::io::Error::other("the token file is empty")));
    }
    Ok(token.to_owned())
}

/// The verifier for `bundle` when it must be signed: every configured key, and the
/// bundle's key id and scope.
fn verifier(
    config: &Config,
    bundle: &BundleConfig,
    base: &Path,
) -> Result<Option<Arc<BundleVerifier>>, String> {
    let Some(signing) = &bundle.signing else {
        return Ok(None);
    };
    if config.keys.is_empty() {
        return Err(format!(
            "bundle {}: [bundles.signing] needs at least one [keys.ID]",
            bundle.name
        ));
    }
    let mut verifier = BundleVerifier::new();
    for (id, key) in &config.keys {
        let algorithm: Algorithm = key
            .algorithm
            .parse()
            .map_err(|_| format!("[keys.{id}]: unknown algorithm {:?}", key.algorithm))?;
        let path = resolve(base, &key.key_file);
        let material =
            std::fs::read(&path).map_err(|e| format!("[keys.{id}] {}: {e}", path.display()))?;
        let mut key_material = if algorithm.is_hmac() {
            VerificationKey::hmac(algorithm, material.trim_ascii())
        } else {
            VerificationKey::from_pem(algorithm, &material)
        }
        .map_err(|e| format!("[keys.{id}]: {e}"))?;
        if let Some(scope) = &key.scope {
            key_material = key_material.with_scope(scope);
        }
        verifier = verifier.key(id, key_material);
    }
    if let Some(id) = &signing.keyid {
        if !config.keys.contains_key(id) {
            return Err(format!(
                "bundle {}: signing.keyid {id:?} is not a configured [keys.ID]",
                bundle.name
            ));
        }
        verifier = verifier.key_id(id);
    }
    if let Some(scope) = &signing.scope {
        verifier = verifier.scope(scope);
    }
    Ok(Some(Arc::new(verifier)))
}

/// Keeps one bundle at the revision this host should run, polling its source.
struct Follower {
    bundle: BundleConfig,
    base: PathBuf,
    rollout: Option<(RolloutConfig, PathBuf)>,
    /// The configuration file, re-read on each poll for the rollout mode (`None`: the
    /// built-in configuration, whose mode never changes).
    config_file: Option<PathBuf>,
    mode: RolloutMode,
    spiffe_id: Option<String>,
    /// `[client_tls]`: this host's SVID, presented to `https://` bundle servers.
    client_identity: Option<Arc<client_tls::ClientIdentity>>,
    /// The source of the current location. A new location (another revision assigned)
    /// gets a fresh source: a source only knows what it activated itself, and the store
    /// may since have activated another location's bundle.
    source: Option<(String, Box<dyn BundleSource>)>,
    /// Refusals go to the decision log too (each distinct one once, not every poll).
    decision_log: Option<Arc<DecisionLog>>,
    last_refusal: Option<String>,
    /// Set when the bundle must be signed.
    verifier: Option<Arc<BundleVerifier>>,
    /// Counts activations and failures for `/metrics`.
    metrics: Arc<Metrics>,
}

impl Follower {
    /// The rollout mode now in the configuration file. A file that cannot be read or
    /// parsed leaves the mode as it was (and says so): a typo must not flip delivery.
    fn refresh_mode(&mut self) {
        let Some(path) = &self.config_file else {
            return;
        };
        let read = std::fs::read_to_string(path)
            .map_err(|e| e.to_string())
            .and_then(|text| toml::from_str::<Config>(&text).map_err(|e| e.to_string()));
        match read {
            Ok(config) => {
                let mode = config.rollout.map(|r| r.mode).unwrap_or_default();
                if mode != self.mode {
                    tracing::warn!(bundle = %self.bundle.name, ?mode, "rollout mode switched");
                    self.mode = mode;
                }
            }
            Err(error) => {
                tracing::warn!(bundle = %self.bundle.name, %error, mode = ?self.mode, "configuration unreadable; the rollout mode stays");
            }
        }
    }

    /// The revision this host should run (with a rollout), and where that bundle is.
    fn target(&self) -> Result<Option<(Option<String>, String)>, PolicyError> {
        let location = match (&self.bundle.dir, &self.bundle.url) {
            (Some(dir), _) => resolve(&self.base, Path::new(dir)).display().to_string(),
            (None, Some(url)) => url.clone(),
            (None, None) => return Ok(None),
        };
        let Some((pipelines, state)) = &self.rollout else {
            return Ok(Some((None, location)));
        };
        // The delivery service rewrites the state file; read it afresh every time.
        let rollout = Rollout::resume(pipelines, Arc::new(SystemClock), state)?;
        let artifact = self.bundle.artifact.as_deref().unwrap_or_default();
        let spiffe_id = self.spiffe_id.as_deref().unwrap_or_default();
        let revision = match self.mode {
            RolloutMode::Staged => rollout.revision_for(artifact, spiffe_id),
            RolloutMode::AllAtOnce => rollout.state(artifact).and_then(|state| {
                state
                    .candidate
                    .as_ref()
                    .map(|candidate| candidate.revision.as_str())
                    .or(state.stable.as_deref())
            }),
        };
        Ok(revision.map(|revision| {
            (
                Some(revision.to_owned()),
                location.replace("{revision}", revision),
            )
        }))
    }

    fn source(
        &mut self,
        location: &str,
        want: Option<String>,
    ) -> Result<&mut Box<dyn BundleSource>, PolicyError> {
        if self
            .source
            .as_ref()
            .is_none_or(|(current, _)| current != location)
        {
            let name = self.bundle.name.clone();
            let limits = BundleLimits::default();
            let inner: Box<dyn BundleSource> = match (self.bundle.url.is_some(), &self.verifier) {
                (true, verifier) => {
                    let mut source =
                        HttpSource::new(name, location, Duration::from_secs(30), limits)?;
                    if let Some(path) = &self.bundle.token_file {
                        source = source.bearer_token(read_token(&resolve(&self.base, path))?);
                    }
                    if let Some(identity) = &self.client_identity
                        && is_https(location)
                    {
                        source = identity.bundle_source(source)?;
                    }
                    Box::new(match verifier {
                        Some(verifier) => source.verify_with(verifier.clone()),
                        None => source,
                    })
                }
                (false, Some(verifier)) => {
                    Box::new(DirSource::new(name, location, limits).verify_with(verifier.clone()))
                }
                (false, None) => Box::new(DirSource::new(name, location, limits)),
            };
            let source: Box<dyn BundleSource> = match want {
                Some(revision) => Box::new(ExpectRevision { inner, revision }),
                None => inner,
            };
            self.source = Some((location.to_owned(), source));
        }
        match &mut self.source {
            Some((_, source)) => Ok(source),
            None => Err(PolicyError::NoPolicy),
        }
    }

    async fn poll(&mut self, store: &Arc<PolicyStore>) -> Result<(), PolicyError> {
        if self.rollout.is_some() {
            self.refresh_mode();
        }
        let target = self.target().and_then(|target| match target {
            Some((want, location)) => self.source(&location, want).map(Some),
            None => Ok(None),
        });
        let source = match target {
            Ok(Some(source)) => source,
            // No revision assigned to this host yet: nothing to fetch.
            Ok(None) => return Ok(()),
            Err(err) => {
                store.record_failure(&self.bundle.name, None, &err);
                return Err(err);
            }
        };
        // Fetch and activation failures are recorded by poll_once itself.
        let activated = poll_once(store, source.as_mut()).await?;
        if activated {
            self.metrics.bundle_loaded(&self.bundle.name);
        }
        Ok(())
    }

    async fn run(mut self, store: Arc<PolicyStore>, options: PollOptions) {
        let mut failures = 0;
        loop {
            failures = match self.poll(&store).await {
                Ok(()) => {
                    self.last_refusal = None;
                    0
                }
                Err(err) => {
                    self.metrics.bundle_failed(&self.bundle.name);
                    self.report(&store, &err).await;
                    failures + 1
                }
            };
            // A folder is polled every interval however often it failed (a fix serves
            // within poll_seconds); a bundle server is backed off.
            let pause = match &self.source {
                Some((_, source)) => options.pause_for(source.as_ref(), failures),
                None => options.jittered_pause(failures),
            };
            tokio::time::sleep(pause).await;
        }
    }

    /// Audits a refusal (already in the store's status) unless it was the last one audited.
    async fn report(&mut self, store: &PolicyStore, err: &PolicyError) {
        let Some(log) = &self.decision_log else {
            return;
        };
        let message = err.to_string();
        if self.last_refusal.as_deref() == Some(message.as_str()) {
            return;
        }
        let revision = store
            .status()
            .into_iter()
            .find(|s| s.name == self.bundle.name)
            .and_then(|s| s.failed_revision);
        match log
            .record_refused_bundle(&self.bundle.name, revision.as_deref(), err)
            .await
        {
            Ok(_) => self.last_refusal = Some(message),
            Err(log_err) => {
                tracing::error!(bundle = %self.bundle.name, error = %log_err, "a refused bundle could not be audited");
            }
        }
    }
}

/// Refuses a bundle whose manifest names another revision than the rollout assigned.
struct ExpectRevision {
    inner: Box<dyn BundleSource>,
    revision: String,
}

#[async_trait]
impl BundleSource for ExpectRevision {
    fn name(&self) -> &str {
        self.inner.name()
    }

    async fn fetch(&mut self) -> Result<Fetched, PolicyError> {
        match self.inner.fetch().await? {
            Fetched::Bundle(bundle) if bundle.revision() != self.revision => {
                Err(revision_mismatch(&bundle, &self.revision))
            }
            fetched => Ok(fetched),
        }
    }

    fn activated(&mut self) {
        self.inner.activated();
    }

    fn backs_off(&self) -> bool {
        self.inner.backs_off()
    }
}

fn revision_mismatch(bundle: &Bundle, want: &str) -> PolicyError {
    PolicyError::Rollout {
        artifact: bundle.name().to_owned(),
        message: format!(
            "the rollout assigns revision {want}, but the bundle found is {}",
            bundle.revision()
        ),
    }
}

struct App {
    store: Arc<PolicyStore>,
    /// Decision counts for a policy-delivery server (`[delivery]`).
    decisions: Option<Arc<report::DecisionCounter>>,
    decision_log: Option<Arc<DecisionLog>>,
    /// The decision log's storage, asked by the health checks whether it still writes.
    audit_log: Option<Arc<AuditLog>>,
    bundles: Vec<String>,
    metrics: Arc<Metrics>,
    /// Whether `/v1/query` answers (`[server] query_api`).
    query_api: bool,
    /// The largest body accepted, decompressed included.
    max_body: usize,
    /// Where the store keeps each active bundle (`data_dir/bundles`).
    stored: PathBuf,
    limits: EvalLimits,
    /// The active bundles' sources, for `/v1/policies` and `/v1/query`.
    snapshot: Mutex<Option<Arc<Snapshot>>>,
}

/// The policies and data of the active bundles, read back from the store's copies.
struct Snapshot {
    revisions: BTreeMap<String, String>,
    bundles: Vec<Bundle>,
}

/// The longest ad-hoc query accepted, in bytes.
const MAX_QUERY_BYTES: usize = 16 * 1024;

/// Options every data and query answer takes (`?pretty`, `?metrics`, `?provenance`).
#[derive(Debug, Clone, Copy, Default)]
struct Options {
    pretty: bool,
    metrics: bool,
    provenance: bool,
}

/// The query string, decoded, and the options in it.
fn query_params(uri: &Uri) -> Result<(Vec<(String, String)>, Options), Refusal> {
    let pairs = match uri.query() {
        None => Vec::new(),
        Some(query) => portcullis::edge::decode_query(query).map_err(|e| {
            Refusal::new(StatusCode::BAD_REQUEST, "invalid_parameter", e.to_string())
        })?,
    };
    let view = || pairs.iter().map(|(k, v)| (k.as_str(), v.as_str()));
    let options = Options {
        pretty: request::bool_param(view(), "pretty"),
        metrics: request::bool_param(view(), "metrics"),
        provenance: request::bool_param(view(), "provenance"),
    };
    Ok((pairs, options))
}

/// A JSON answer, indented with `pretty`.
fn answer(status: StatusCode, body: &Value, pretty: bool) -> Response {
    let bytes = if pretty {
        serde_json::to_vec_pretty(body)
    } else {
        serde_json::to_vec(body)
    };
    match bytes {
        Ok(mut bytes) => {
            if pretty {
                bytes.push(b'\n');
            }
            (
                status,
                [(header::CONTENT_TYPE, "application/json")],
                Bytes::from(bytes),
            )
                .into_response()
        }
        Err(err) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            format!("the answer is not JSON: {err}"),
        ),
    }
}

/// A request refused before any policy runs: an OPA-style error answer.
struct Refusal {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl Refusal {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Refusal {
            status,
            code,
            message: message.into(),
        }
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        error(self.status, self.code, self.message)
    }
}

/// An OPA-style error response.
fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    (
        status,
        Json(json!({"code": code, "message": message.into()})),
    )
        .into_response()
}

/// splitmix64's finalizer: a bijection of `u64` that scatters consecutive inputs.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A decision id in UUID form, unique within the process and unpredictable across
/// processes: a counter scattered under two keys drawn once from the system's random source
/// (a random draw per decision cost a system call each). Not a secret.
fn new_decision_id() -> String {
    static KEYS: OnceLock<(u64, u64)> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let (k1, k2) = *KEYS.get_or_init(|| {
        let mut bytes = [0u8; 16];
        if aws_lc_rs::rand::SecureRandom::fill(&aws_lc_rs::rand::SystemRandom::new(), &mut bytes)
            .is_err()
        {
            // Still unique within the process: the counter alone is.
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos());
            bytes = (nanos ^ (u128::from(std::process::id()) << 64)).to_le_bytes();
        }
        let (a, b) = bytes.split_at(8);
        let word = |half: &[u8]| half.try_into().map_or(0, u64::from_le_bytes);
        (word(a), word(b))
    });
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    // `mix` is a bijection, so the first half alone differs for every n.
    let hex = format!("{:016x}{:016x}", mix(n.wrapping_add(k1)), mix(n ^ k2));
    format!(
        "{}-{}-{}-{}-{}",
        hex.get(0..8).unwrap_or_default(),
        hex.get(8..12).unwrap_or_default(),
        hex.get(12..16).unwrap_or_default(),
        hex.get(16..20).unwrap_or_default(),
        hex.get(20..32).unwrap_or_default()
    )
}

/// OPA's warning for a `POST` without `input`.
fn input_missing_warning() -> Value {
    json!({"code": "api_usage_warning", "message": "'input' key missing from the request"})
}

fn nanos(elapsed: Duration) -> u64 {
    u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX)
}

/// OPA's `provenance`: this build and the active bundles' revisions.
fn provenance(revisions: &BTreeMap<String, String>) -> Value {
    let bundles: serde_json::Map<String, Value> = revisions
        .iter()
        .map(|(name, revision)| (name.clone(), json!({ "revision": revision })))
        .collect();
    let mut provenance = json!({
        "version": env!("CARGO_PKG_VERSION"),
        "bundles": bundles,
    });
    // Set by a release build (`POLICY_SIDECAR_BUILD_COMMIT=$(git rev-parse HEAD)`).
    if let (Some(commit), Some(fields)) = (
        option_env!("POLICY_SIDECAR_BUILD_COMMIT"),
        provenance.as_object_mut(),
    ) {
        fields.insert("build_commit".into(), json!(commit));
    }
    provenance
}

/// The body of a request, decompressed when it says `Content-Encoding: gzip`.
fn request_body(headers: &HeaderMap, body: Bytes, max: usize) -> Result<Bytes, Refusal> {
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .map(|v| v.to_str().unwrap_or("?").trim().to_ascii_lowercase());
    match encoding.as_deref() {
        None | Some("" | "identity") => Ok(body),
        Some("gzip") => request::gunzip(&body, max)
            .map(Bytes::from)
            .map_err(|err| match err {
                RequestError::TooLarge { .. } => Refusal::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "invalid_parameter",
                    err.to_string(),
                ),
                _ => Refusal::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_parameter",
                    err.to_string(),
                ),
            }),
        Some(other) => Err(Refusal::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "invalid_parameter",
            format!(
                "Content-Encoding {:?} is not accepted: send gzip or no encoding",
                other.chars().take(32).collect::<String>()
            ),
        )),
    }
}

/// The document path of a `/v1/data…` request.
fn document_path(uri: &Uri) -> Result<DataPath, Refusal> {
    let raw = uri.path().strip_prefix("/v1/data").unwrap_or_default();
    DataPath::parse(raw)
        .map_err(|e| Refusal::new(StatusCode::BAD_REQUEST, "invalid_parameter", e.to_string()))
}

/// Evaluates the document at `path`: its rule or package path by the store, and any
/// further keys and array indexes in the value that gives.
fn evaluate(app: &App, path: &DataPath, input: Option<&Value>) -> Result<Evaluation, PolicyError> {
    let evaluation = app.store.evaluate_input(&path.rule_path(), input)?;
    let rest = path.rest();
    if rest.is_empty() {
        return Ok(evaluation);
    }
    Ok(Evaluation {
        result: evaluation
            .result
            .and_then(|value| request::walk(value, rest)),
        revisions: evaluation.revisions,
    })
}

/// How a decision counts in `/metrics`.
fn outcome_label(outcome: &Result<Evaluation, PolicyError>) -> &'static str {
    match outcome {
        Ok(Evaluation {
            result: Some(Value::Bool(true)),
            ..
        }) => "allow",
        Ok(Evaluation {
            result: Some(Value::Bool(false)),
            ..
        }) => "deny",
        Ok(Evaluation { result: None, .. }) => "undefined",
        Ok(_) => "other",
        Err(_) => "error",
    }
}

/// The answer for an evaluation error.
fn evaluation_error(err: &PolicyError) -> Response {
    match err {
        PolicyError::InvalidPath { .. } | PolicyError::Input(_) => error(
            StatusCode::BAD_REQUEST,
            "invalid_parameter",
            err.to_string(),
        ),
        PolicyError::NoPolicy => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            err.to_string(),
        ),
        _ => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            err.to_string(),
        ),
    }
}

/// What one decision request asked.
struct Asked<'a> {
    path: &'a DataPath,
    input: Option<&'a Value>,
    /// The request had no `input`: the answer carries OPA's warning.
    warn: bool,
    options: Options,
    started: Instant,
    input_parse: Duration,
    requested_by: Option<String>,
}

/// Decides as OPA does, logs the decision (before answering: a decision that cannot be
/// logged is not given), and answers.
async fn decide(app: &App, asked: Asked<'_>) -> Response {
    let evaluating = Instant::now();
    let outcome = evaluate(app, asked.path, asked.input);
    let eval_time = evaluating.elapsed();
    let decision_id = new_decision_id();
    if let Some(log) = &app.decision_log {
        let opa_path = asked.path.opa_path();
        let mut entry = DecisionEntry::new(&opa_path, asked.input, &outcome)
            .decision_id(&decision_id)
            .metric("timer_rego_input_parse_ns", nanos(asked.input_parse))
            .metric("timer_rego_query_eval_ns", nanos(eval_time));
        if let Some(who) = &asked.requested_by {
            entry = entry.requested_by(who);
        }
        if let Err(err) = log.log(&entry).await {
            app.metrics.decision("unlogged");
            return unlogged(&err, "decision");
        }
    }
    app.metrics.decision(outcome_label(&outcome));
    if let Some(counter) = &app.decisions {
        counter.record(&outcome, &app.store);
    }
    match outcome {
        Ok(evaluation) => {
            let mut body = serde_json::Map::new();
            if let Some(result) = evaluation.result {
                body.insert("result".into(), result);
            }
            body.insert("decision_id".into(), json!(decision_id));
            if asked.warn {
                body.insert("warning".into(), input_missing_warning());
            }
            if asked.options.metrics {
                body.insert(
                    "metrics".into(),
                    json!({
                        "timer_rego_input_parse_ns": nanos(asked.input_parse),
                        "timer_rego_query_eval_ns": nanos(eval_time),
                        "timer_server_handler_ns": nanos(asked.started.elapsed()),
                    }),
                );
            }
            if asked.options.provenance {
                body.insert("provenance".into(), provenance(&evaluation.revisions));
            }
            answer(StatusCode::OK, &Value::Object(body), asked.options.pretty)
        }
        Err(err) => evaluation_error(&err),
    }
}

/// `{"input": …}` from a request body: `None` (input undefined) for an empty body, no
/// `input` key or `"input": null`, as in OPA (whose request type reads a JSON null as a
/// missing input).
fn input_of(body: &[u8]) -> Result<Option<Value>, Refusal> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(mut request)) => Ok(request.remove("input").filter(|i| !i.is_null())),
        Ok(_) => Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            "invalid_parameter",
            "the body must be a JSON object, {\"input\": ...}",
        )),
        Err(err) => Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            "invalid_parameter",
            format!("the body is not JSON: {err}"),
        )),
    }
}

async fn post_data(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let started = Instant::now();
    let (_, options) = match query_params(&uri) {
        Ok(params) => params,
        Err(refusal) => return refusal.into_response(),
    };
    let path = match document_path(&uri) {
        Ok(path) => path,
        Err(refusal) => return refusal.into_response(),
    };
    let parsing = Instant::now();
    let input = match request_body(&headers, body, app.max_body).and_then(|b| input_of(&b)) {
        Ok(input) => input,
        Err(refusal) => return refusal.into_response(),
    };
    let asked = Asked {
        path: &path,
        input: input.as_ref(),
        warn: input.is_none(),
        options,
        started,
        input_parse: parsing.elapsed(),
        requested_by: Some(peer.to_string()),
    };
    decide(&app, asked).await
}

async fn get_data(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    uri: Uri,
) -> Response {
    let started = Instant::now();
    let (params, options) = match query_params(&uri) {
        Ok(params) => params,
        Err(refusal) => return refusal.into_response(),
    };
    let path = match document_path(&uri) {
        Ok(path) => path,
        Err(refusal) => return refusal.into_response(),
    };
    let parsing = Instant::now();
    let input = match params.iter().find(|(k, _)| k == "input") {
        None => None,
        Some((_, text)) => match serde_json::from_str(text) {
            Ok(input) => Some(input),
            Err(err) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "invalid_parameter",
                    format!("input is not JSON: {err}"),
                );
            }
        },
    };
    let asked = Asked {
        path: &path,
        input: input.as_ref(),
        warn: false,
        options,
        started,
        input_parse: parsing.elapsed(),
        requested_by: Some(peer.to_string()),
    };
    decide(&app, asked).await
}

impl App {
    /// The active bundles as the store keeps them on disk, read again only when the
    /// active revisions change.
    fn snapshot(&self) -> Result<Arc<Snapshot>, String> {
        let revisions = self.store.revisions();
        let mut cached = self
            .snapshot
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(snapshot) = cached.as_ref()
            && snapshot.revisions == *revisions
        {
            return Ok(snapshot.clone());
        }
        let mut bundles = Vec::with_capacity(revisions.len());
        for (name, revision) in revisions.iter() {
            let path = self.stored.join(format!("{name}.tar.gz"));
            let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            let bundle = Bundle::from_tar_gz(name, &bytes, &BundleLimits::default())
                .map_err(|e| e.to_string())?;
            if bundle.revision() != revision {
                return Err(format!(
                    "bundle {name} is being replaced (revision {revision} → {}); retry",
                    bundle.revision()
                ));
            }
            bundles.push(bundle);
        }
        let snapshot = Arc::new(Snapshot {
            revisions: (*revisions).clone(),
            bundles,
        });
        *cached = Some(snapshot.clone());
        Ok(snapshot)
    }
}

impl Snapshot {
    /// Every policy as `GET /v1/policies` lists it: `{"id": "bundle/path.rego", "raw": …}`.
    fn policies(&self) -> impl Iterator<Item = Value> + '_ {
        self.bundles.iter().flat_map(|bundle| {
            bundle.policies().iter().map(|policy| {
                json!({
                    "id": format!("{}/{}", bundle.name(), policy.path),
                    "raw": policy.source,
                })
            })
        })
    }
}

async fn list_policies(State(app): State<Arc<App>>, uri: Uri) -> Response {
    let (_, options) = match query_params(&uri) {
        Ok(params) => params,
        Err(refusal) => return refusal.into_response(),
    };
    match app.snapshot() {
        Ok(snapshot) => {
            let policies: Vec<Value> = snapshot.policies().collect();
            answer(
                StatusCode::OK,
                &json!({ "result": policies }),
                options.pretty,
            )
        }
        Err(message) => error(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message),
    }
}

async fn get_policy(State(app): State<Arc<App>>, uri: Uri) -> Response {
    let (_, options) = match query_params(&uri) {
        Ok(params) => params,
        Err(refusal) => return refusal.into_response(),
    };
    let raw = uri.path().strip_prefix("/v1/policies/").unwrap_or_default();
    let id = match portcullis::edge::decode_component(raw, "path", false) {
        Ok(id) => id,
        Err(e) => return error(StatusCode::BAD_REQUEST, "invalid_parameter", e.to_string()),
    };
    let snapshot = match app.snapshot() {
        Ok(snapshot) => snapshot,
        Err(message) => return error(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message),
    };
    match snapshot.policies().find(|p| p["id"] == id.as_str()) {
        Some(policy) => answer(StatusCode::OK, &json!({ "result": policy }), options.pretty),
        None => error(
            StatusCode::NOT_FOUND,
            "resource_not_found",
            format!(
                "storage_not_found_error: policy id {:?}",
                id.chars().take(128).collect::<String>()
            ),
        ),
    }
}

/// Refuses input nested deeper or holding more values than the store's limits allow.
fn check_input(input: &Value, limits: &EvalLimits) -> Result<(), String> {
    let mut stack = vec![(input, 1_usize)];
    let mut values = 0_usize;
    while let Some((value, depth)) = stack.pop() {
        values += 1;
        if values > limits.max_input_values {
            return Err(format!(
                "the input holds more than {} values",
                limits.max_input_values
            ));
        }
        if depth > limits.max_input_depth {
            return Err(format!(
                "the input is nested deeper than {}",
                limits.max_input_depth
            ));
        }
        match value {
            Value::Array(items) => stack.extend(items.iter().map(|v| (v, depth + 1))),
            Value::Object(map) => stack.extend(map.values().map(|v| (v, depth + 1))),
            _ => {}
        }
    }
    Ok(())
}

async fn post_query(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let started = Instant::now();
    let (_, options) = match query_params(&uri) {
        Ok(params) => params,
        Err(refusal) => return refusal.into_response(),
    };
    let body = match request_body(&headers, body, app.max_body) {
        Ok(body) => body,
        Err(refusal) => return refusal.into_response(),
    };
    let (query, input) = match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Object(mut request)) => match request.remove("query") {
            Some(Value::String(query)) => (query, request.remove("input").filter(|i| !i.is_null())),
            _ => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "invalid_parameter",
                    "the body must be {\"query\": \"<Rego query>\", \"input\": ...}",
                );
            }
        },
        Ok(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_parameter",
                "the body must be {\"query\": \"<Rego query>\", \"input\": ...}",
            );
        }
        Err(err) => {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_parameter",
                format!("the body is not JSON: {err}"),
            );
        }
    };
    let asked = AdHoc {
        query: &query,
        input: input.as_ref(),
        options,
        started,
        requested_by: Some(peer.to_string()),
    };
    ad_hoc(&app, asked).await
}

async fn get_query(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    uri: Uri,
) -> Response {
    let started = Instant::now();
    let (params, options) = match query_params(&uri) {
        Ok(params) => params,
        Err(refusal) => return refusal.into_response(),
    };
    let Some((_, query)) = params.iter().find(|(k, _)| k == "q") else {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_parameter",
            "missing parameter 'q': the Rego query",
        );
    };
    let asked = AdHoc {
        query,
        input: None,
        options,
        started,
        requested_by: Some(peer.to_string()),
    };
    ad_hoc(&app, asked).await
}

/// One ad-hoc query.
struct AdHoc<'a> {
    query: &'a str,
    input: Option<&'a Value>,
    options: Options,
    started: Instant,
    requested_by: Option<String>,
}

/// Runs an ad-hoc query (`/v1/query`) on the active bundles, logs it, and answers
/// `{"result": [bindings…]}` (no `result` when nothing satisfies it).
async fn ad_hoc(app: &App, asked: AdHoc<'_>) -> Response {
    if !app.query_api {
        return error(
            StatusCode::FORBIDDEN,
            "forbidden",
            "the query API is switched off ([server] query_api = false)",
        );
    }
    if asked.query.len() > MAX_QUERY_BYTES {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_parameter",
            format!("the query is longer than {MAX_QUERY_BYTES} bytes"),
        );
    }
    if request::nesting_depth(asked.query) > portcullis::policy::MAX_NESTING {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_parameter",
            format!(
                "the query's brackets nest more than {} deep",
                portcullis::policy::MAX_NESTING
            ),
        );
    }
    if let Some(input) = asked.input
        && let Err(message) = check_input(input, &app.limits)
    {
        return error(StatusCode::BAD_REQUEST, "invalid_parameter", message);
    }
    // The active engine itself: the same built-ins, rewrites and limits as decisions.
    let Some(engine) = app.store.current() else {
        return evaluation_error(&PolicyError::NoPolicy);
    };
    let evaluating = Instant::now();
    let rows = engine.query(asked.query, asked.input);
    let eval_time = evaluating.elapsed();
    let outcome = rows.map(|rows| Evaluation {
        result: (!rows.is_empty())
            .then(|| Value::Array(rows.into_iter().map(Value::Object).collect())),
        revisions: engine.revisions().clone(),
    });
    let decision_id = new_decision_id();
    if let Some(log) = &app.decision_log {
        let mut entry = DecisionEntry::query(asked.query, asked.input, &outcome)
            .decision_id(&decision_id)
            .metric("timer_rego_query_eval_ns", nanos(eval_time));
        if let Some(who) = &asked.requested_by {
            entry = entry.requested_by(who);
        }
        if let Err(err) = log.log(&entry).await {
            return unlogged(&err, "query answer");
        }
    }
    match outcome {
        Ok(evaluation) => {
            let mut body = serde_json::Map::new();
            if let Some(result) = evaluation.result {
                body.insert("result".into(), result);
            }
            if asked.options.metrics {
                body.insert(
                    "metrics".into(),
                    json!({
                        "timer_rego_query_eval_ns": nanos(eval_time),
                        "timer_server_handler_ns": nanos(asked.started.elapsed()),
                    }),
                );
            }
            if asked.options.provenance {
                body.insert("provenance".into(), provenance(engine.revisions()));
            }
            answer(StatusCode::OK, &Value::Object(body), asked.options.pretty)
        }
        // A query that does not parse or fails to evaluate.
        Err(err) => error(
            StatusCode::BAD_REQUEST,
            "invalid_parameter",
            err.to_string(),
        ),
    }
}

/// Why the sidecar cannot give decisions, if it cannot: a decision log that refuses every
/// write (an earlier write could not be undone: restart it), or bundles not active yet.
fn not_ready(app: &App) -> Option<Response> {
    if let Some(reason) = app.audit_log.as_ref().and_then(|log| log.poisoned()) {
        return Some(
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                Json(json!({"error": format!("the decision log refuses writes: {reason}")})),
            )
                .into_response(),
        );
    }
    let active = app.store.revisions();
    let missing: Vec<&String> = app
        .bundles
        .iter()
        .filter(|b| !active.contains_key(*b))
        .collect();
    (!missing.is_empty()).then(|| {
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({"error": format!("bundles not activated: {missing:?}")})),
        )
            .into_response()
    })
}

async fn health(
    State(app): State<Arc<App>>,
    Query(query): Query<BTreeMap<String, String>>,
) -> Response {
    if let Some(reason) = app.audit_log.as_ref().and_then(|log| log.poisoned()) {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({"error": format!("the decision log refuses writes: {reason}")})),
        )
            .into_response();
    }
    if query.contains_key("bundles")
        && let Some(response) = not_ready(&app)
    {
        return response;
    }
    Json(json!({})).into_response()
}

/// `/health/live`: the process is running and answering.
async fn health_live() -> Response {
    Json(json!({})).into_response()
}

/// `/health/ready`: 200 once every configured bundle is active and the decision log
/// writes, else 500.
async fn health_ready(State(app): State<Arc<App>>) -> Response {
    not_ready(&app).unwrap_or_else(|| Json(json!({})).into_response())
}

async fn prometheus(State(app): State<Arc<App>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        app.metrics.render(),
    )
        .into_response()
}

/// Counts and times every routed request for `/metrics`, by handler as OPA names them.
async fn track(State(metrics): State<Arc<Metrics>>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    // Routed requests only (a route layer): the path is one of the routes.
    let path = request.uri().path();
    let under = |prefix: &str| {
        path.strip_prefix(prefix)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    };
    let handler = if under("/v1/data") {
        "v1/data"
    } else if under("/v1/query") {
        "v1/query"
    } else if under("/v1/policies") {
        "v1/policies"
    } else if under("/v1/status") {
        "v1/status"
    } else if under("/health") {
        "health"
    } else if under("/metrics") {
        "metrics"
    } else {
        "other"
    };
    let response = next.run(request).await;
    metrics.request(
        handler,
        method.as_str(),
        response.status().as_u16(),
        started.elapsed(),
    );
    response
}

async fn status(State(app): State<Arc<App>>) -> Response {
    let bundles: serde_json::Map<String, Value> = app
        .store
        .status()
        .into_iter()
        .map(|s| (s.name.clone(), json!(s)))
        .collect();
    Json(json!({"result": {"bundles": bundles, "revisions": app.store.revisions().as_ref()}}))
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decision_ids_are_uuid_shaped_and_unique() {
        let ids: std::collections::BTreeSet<String> =
            (0..10_000).map(|_| new_decision_id()).collect();
        assert_eq!(ids.len(), 10_000);
        for id in ids.iter().take(10) {
            let parts: Vec<usize> = id.split('-').map(str::len).collect();
            assert_eq!(parts, [8, 4, 4, 4, 12], "{id}");
            assert!(
                id.chars().all(|c| c == '-' || c.is_ascii_hexdigit()),
                "{id}"
            );
        }
    }
}
