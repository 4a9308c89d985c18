//! A secure access broker after Pipedrive's Doorman: people log in against the directory,
//! and each request they make to a private service is authorized, written to the audit log
//! (and acknowledged) before it leaves, and sent to a proxy in the service's region that
//! accepts nothing but the broker's short-lived, request-bound, single-use tokens.
//!
//! ```sh
//! cargo run --example access-broker            # the demo, all on 127.0.0.1
//! cargo run --example access-broker -- broker --config access-broker.toml
//! cargo run --example access-broker -- region-proxy --config access-broker.toml --region eu
//! ```
//!
//! See `examples/access-broker/README.md`.
#![expect(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a command-line service prints where it listens and its errors"
)]

mod audit;
mod broker;
mod bulk;
mod client;
mod fleet;
mod mtls;
mod region;
mod sealed;
#[path = "../common/tls.rs"]
mod tls;
mod wire;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use axum::Json;
use axum::body::Body;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use clap::{Parser, Subcommand};
use serde::Deserialize;
use serde_json::json;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const LONG_ABOUT: &str = "\
A secure access broker after Pipedrive's Doorman.

BROKER (management region)
  POST /login                   {username, password} -> {token} (a session JWT; directory login)
  ANY  /proxy/{region}/{service}/{path}?{query}   with `Authorization: Bearer <token>`:
        authorized by the grants (user or group, region, service, HTTP method), recorded in
        the audit log and acknowledged, then sent to the region's proxy with a broker token
        (EdDSA JWT: issuer, audience = region, 30 s, the user, a hash of method, path, query
        and body, a unique id). The response streams back; its status, size and duration
        are recorded as the outcome, and it carries `X-Broker-Upstream: 1` (a 401 without it
        is the broker's own: the session is over). Audit log down: 503, nothing sent.
  GET  /.well-known/jwks.json   the key region proxies verify broker tokens with
  Refused and audited as denied: paths with dot segments, encoded slashes or backslashes,
  absolute URLs, a caller-set X-Broker-Token, bodies over max_body_bytes, unknown regions.

  POST /api/bulk               {method, path_template (with {id}), body_template?, ids,
        concurrency, rate_per_second} -> 202 {id} (made by the broker); each id authorized
        and audited on its own
  GET  /api/bulk/{id}           progress and per-id results; POST /api/bulk/{id}/cancel
        (the caller's own jobs; audit_groups members reach everyone's)
  GET  /api/audit               the requests (with outcomes, and whether the caller could
        retry each), by user, region+service, time, status (succeeded|failed|denied|pending),
        newest first (order=oldest to turn it), paged with before/after;
        audit_groups see everyone, others themselves
  POST /api/audit/{id}/retry    the request again as the caller: authorized and audited anew

CLIENT
  access-broker login --username alice        (token kept in .access-broker-token)
  access-broker call GET eu/orders/orders/42 [--data JSON]
  access-broker bulk POST 'eu/orders/companies/{id}/flags' --ids-file ids.txt [--data JSON]

REGION PROXY (one per region)
  Forwards to the service's address only requests carrying a valid broker token for this
  region, bound to the exact request and unused; everything else is 401.

CONFIGURATION (TOML, one file for every mode)
  [broker] listen, audit_url (sqlite://FILE | jsonl://DIR | postgres://...), max_body_bytes,
           session_minutes, timeout_seconds
  [broker.directory] users_file = FILE (static users) | [broker.directory.ldap] (LdapConfig;
           a build with --features ldap)
  [broker.regions.NAME] url = the region proxy
  [[broker.grants]] users, groups, region (or *), service (or *), methods (or [\"*\"])
  [broker] audit_groups = groups that see everyone's requests in the audit
  [[region]] name, listen, broker_jwks_url, max_body_bytes, timeout_seconds,
             [region.services] NAME = URL
  [store]  url = postgres://... (a build with --features postgres), key_file | key_env,
           max_connections, refresh_seconds, key_rotation_hours: several brokers and
           proxies per region on one database (keys, bulk jobs, spent token ids, audit)

Without a subcommand it runs the demo: the broker on 127.0.0.1:8300, region proxies eu
(:8301) and us (:8302), and two demo services (orders in eu, billing in us); users alice
(groups support, platform) and bob (support) with passwords alice-password and bob-password.";

#[derive(Debug, Parser)]
#[command(
    name = "access-broker",
    version,
    about = "A Doorman-style secure access broker with region proxies.",
    long_about = LONG_ABOUT
)]
struct Cli {
    #[command(subcommand)]
    mode: Option<Mode>,
    /// Log level: error, warn, info, debug, trace.
    #[arg(long, default_value = "info", global = true)]
    log_level: tracing::Level,
}

#[derive(Debug, Subcommand)]
enum Mode {
    /// Everything on 127.0.0.1 with demo users and services (the default).
    Demo {
        /// Where the audit log and the demo users are kept.
        #[arg(long, default_value = "access-broker-data")]
        data_dir: PathBuf,
        /// The audit log (relative paths under the data dir).
        #[arg(long, default_value = "sqlite://audit.db")]
        audit_url: String,
    },
    /// The broker: login, authorization, audit, forwarding.
    Broker {
        /// The configuration file.
        #[arg(long, short)]
        config: PathBuf,
        /// Overrides `[broker] listen`.
        #[arg(long)]
        listen: Option<String>,
    },
    /// Logs in and keeps the session token in a file (password from
    /// ACCESS_BROKER_PASSWORD or asked for).
    Login {
        /// The broker's base URL.
        #[arg(long, default_value = "http://127.0.0.1:8300")]
        url: String,
        /// Who logs in.
        #[arg(long)]
        username: String,
        /// Where the token is kept (mode 600).
        #[arg(long, default_value = ".access-broker-token")]
        token_file: PathBuf,
    },
    /// Sends one request through the broker: `call GET eu/orders/orders/42`.
    Call {
        /// The HTTP method.
        method: String,
        /// `{region}/{service}/{path}?{query}`.
        path: String,
        /// A JSON body.
        #[arg(long)]
        data: Option<String>,
        /// The broker's base URL.
        #[arg(long, default_value = "http://127.0.0.1:8300")]
        url: String,
        /// The session token file (from `login`).
        #[arg(long, default_value = ".access-broker-token")]
        token_file: PathBuf,
    },
    /// Sends one request template for every id in a file, with a progress bar:
    /// `bulk POST 'eu/orders/companies/{id}/flags' --ids-file ids.txt`.
    Bulk {
        /// The HTTP method.
        method: String,
        /// `{region}/{service}/{path}` with `{id}` where each id goes.
        path_template: String,
        /// One id per line (`#` comments and blank lines skipped).
        #[arg(long)]
        ids_file: PathBuf,
        /// A JSON body template (may hold `{id}`).
        #[arg(long)]
        data: Option<String>,
        /// Requests under way at once.
        #[arg(long, default_value_t = 4)]
        concurrency: usize,
        /// Requests started per second, at most.
        #[arg(long, default_value_t = 20)]
        rate: u32,
        /// The broker's base URL.
        #[arg(long, default_value = "http://127.0.0.1:8300")]
        url: String,
        /// The session token file (from `login`).
        #[arg(long, default_value = ".access-broker-token")]
        token_file: PathBuf,
    },
    /// A region proxy.
    RegionProxy {
        /// The configuration file.
        #[arg(long, short)]
        config: PathBuf,
        /// Which `[[region]]` to run.
        #[arg(long)]
        region: String,
        /// Overrides the region's `listen`.
        #[arg(long)]
        listen: Option<String>,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    broker: Option<broker::BrokerConfig>,
    #[serde(default)]
    region: Vec<region::RegionConfig>,
    /// Where the state lives when several brokers and proxies run (PostgreSQL); absent:
    /// in each process, the audit log where `audit_url` says.
    store: Option<fleet::StoreConfig>,
}

/// An error as `{"error": code, "message": …}`.
pub(crate) fn error_response(status: StatusCode, code: &str, message: String) -> Response {
    (status, Json(json!({ "error": code, "message": message }))).into_response()
}

/// How a streamed response ended.
pub(crate) struct Done {
    pub(crate) status: u16,
    pub(crate) bytes: u64,
    /// Set when the upstream failed mid-body or the caller went away.
    pub(crate) error: Option<String>,
}

/// Calls `on_done` once, when the body has been sent, failed, or was abandoned.
struct Finish<F: FnOnce(Done)> {
    on_done: Option<F>,
    status: u16,
    bytes: u64,
}

impl<F: FnOnce(Done)> Finish<F> {
    fn done(&mut self, error: Option<String>) {
        if let Some(on_done) = self.on_done.take() {
            on_done(Done {
                status: self.status,
                bytes: self.bytes,
                error,
            });
        }
    }
}

impl<F: FnOnce(Done)> Drop for Finish<F> {
    fn drop(&mut self) {
        self.done(Some("the caller went away before the end".into()));
    }
}

/// `response` streamed back to the caller (status and end-to-end headers), calling
/// `on_done` when it ends.
pub(crate) fn stream_back(
    response: reqwest::Response,
    on_done: impl FnOnce(Done) + Send + 'static,
) -> Response {
    let status = response.status();
    let headers = wire::returnable(response.headers());
    let finish = Finish {
        on_done: Some(on_done),
        status: status.as_u16(),
        bytes: 0,
    };
    let body = futures_util::stream::unfold(Some((response, finish)), |state| async move {
        let (mut response, mut finish) = state?;
        match response.chunk().await {
            Ok(Some(chunk)) => {
                finish.bytes += chunk.len() as u64;
                Some((Ok(chunk), Some((response, finish))))
            }
            Ok(None) => {
                finish.done(None);
                None
            }
            Err(e) => {
                finish.done(Some(format!("the upstream body failed: {e}")));
                Some((Err(e), None))
            }
        }
    });
    let mut out = Response::new(Body::from_stream(body));
    *out.status_mut() = status;
    *out.headers_mut() = headers;
    out.headers_mut().insert(
        wire::UPSTREAM_ANSWER,
        axum::http::HeaderValue::from_static("1"),
    );
    // The upstream's answer, as it gave it: never rewritten as one of ours.
    out.extensions_mut().insert(portcullis::http::Passthrough);
    out
}

fn read_config(path: &Path) -> Result<Config, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
}

async fn serve(router: axum::Router, listen: &str, what: &str) -> Result<(), String> {
    use axum::serve::ListenerExt as _;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| format!("{what}: cannot listen on {listen}: {e}"))?;
    let address = listener.local_addr().map_err(|e| e.to_string())?;
    // Streamed responses go out in several writes: without TCP_NODELAY the second waits
    // for the client's delayed ACK (40 ms on Linux).
    let listener = listener.tap_io(|stream| {
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, "TCP_NODELAY could not be set");
        }
    });
    tls::warn_if_plain_and_exposed(&address, what);
    println!("LISTENING http://{address}");
    axum::serve(listener, router)
        .with_graceful_shutdown(portcullis::http::shutdown_signal())
        .await
        .map_err(|e| e.to_string())
}

/// Serves `router` over TLS with `server` (the identity files watched for rotation), or
/// in plain HTTP without.
async fn serve_with(
    router: axum::Router,
    listen: &str,
    what: &str,
    tls: Option<(&tls::Tls, Peers)>,
) -> Result<(), String> {
    let Some((tls, peers)) = tls else {
        return serve(router, listen, what).await;
    };
    serve_tls(router, listen, what, tls, peers).await
}

/// Which clients a TLS server admits.
#[derive(Debug, Clone)]
#[cfg_attr(
    not(feature = "tls"),
    expect(dead_code, reason = "served only when built with the tls feature")
)]
enum Peers {
    /// Any client whose SVID verifies (or none, with optional client certificates).
    Any,
    /// Only this SPIFFE ID (a region proxy admitting the broker).
    Exactly(String),
}

#[cfg(feature = "tls")]
async fn serve_tls(
    router: axum::Router,
    listen: &str,
    what: &str,
    tls: &tls::Tls,
    peers: Peers,
) -> Result<(), String> {
    let server = match peers {
        Peers::Any => tls.server(),
        Peers::Exactly(id) => tls.server_for(mtls::peer(&id)?),
    }
    .map_err(|e| e.to_string())?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| format!("{what}: cannot listen on {listen}: {e}"))?;
    let address = listener.local_addr().map_err(|e| e.to_string())?;
    println!("LISTENING https://{address}");
    let watch = tls.watch();
    let served = server
        .serve(listener, router, portcullis::http::shutdown_signal())
        .await
        .map_err(|e| e.to_string());
    watch.abort();
    served
}

#[cfg(not(feature = "tls"))]
async fn serve_tls(
    _router: axum::Router,
    _listen: &str,
    _what: &str,
    tls: &tls::Tls,
    _peers: Peers,
) -> Result<(), String> {
    match *tls {}
}

/// `[broker.tls]` or `[region.tls]`, loaded (paths relative to the configuration's folder).
fn open_tls(section: Option<&mut tls::TlsConfig>, base: &Path) -> Result<Option<tls::Tls>, String> {
    match section {
        Some(section) => {
            section.resolve_paths(base);
            section.open().map(Some).map_err(|e| e.to_string())
        }
        None => Ok(None),
    }
}

/// Serves the broker, then writes the audit events still queued (outcomes are submitted
/// after their responses, without waiting).
async fn serve_broker(
    (router, audit): (axum::Router, std::sync::Arc<portcullis::audit::AuditLog>),
    listen: &str,
    tls: Option<&tls::Tls>,
) -> Result<(), String> {
    let tls = tls.map(|tls| (tls, Peers::Any));
    let served = serve_with(router, listen, "broker", tls).await;
    if let Err(err) = audit.flush().await {
        tracing::error!(error = %err, "the audit log could not be flushed at shutdown");
    }
    served
}

async fn run_broker(config: &Path, listen: Option<String>) -> Result<(), String> {
    let base = config.parent().unwrap_or(Path::new("."));
    let read = read_config(config)?;
    let store = read.store.map(|s| s.resolve(base));
    let mut broker = read.broker.ok_or("the configuration has no [broker]")?;
    let listen = listen.unwrap_or_else(|| broker.listen.clone());
    let tls = open_tls(broker.tls.as_mut(), base)?;
    serve_broker(
        broker::router(broker, base, store.as_ref(), tls.as_ref()).await?,
        &listen,
        tls.as_ref(),
    )
    .await
}

async fn run_region(config: &Path, name: &str, listen: Option<String>) -> Result<(), String> {
    let base = config.parent().unwrap_or(Path::new("."));
    let read = read_config(config)?;
    let store = read.store.map(|s| s.resolve(base));
    let mut region = read
        .region
        .into_iter()
        .find(|r| r.name == name)
        .ok_or_else(|| format!("the configuration has no [[region]] named {name:?}"))?;
    let listen = listen.unwrap_or_else(|| region.listen.clone());
    if region
        .tls
        .as_ref()
        .is_some_and(|t| t.client_certs != tls::ClientCerts::Required)
    {
        return Err(format!(
            "region {name}: [region.tls] needs client_certs = \"required\" (only the broker connects)"
        ));
    }
    let tls = open_tls(region.tls.as_mut(), base)?;
    let peers = region.broker_spiffe_id.clone().map(Peers::Exactly);
    let router = region::router(region, store.as_ref(), tls.as_ref()).await?;
    // region::router refused [region.tls] without broker_spiffe_id and the other way round.
    serve_with(router, &listen, "region proxy", tls.as_ref().zip(peers)).await
}

/// A demo service: answers what it was asked and by whom.
fn demo_service(name: &'static str) -> axum::Router {
    axum::Router::new().fallback(move |request: axum::extract::Request| async move {
        let user = request
            .headers()
            .get(wire::FORWARDED_USER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("nobody")
            .to_owned();
        let method = request.method().to_string();
        let path = request.uri().path().to_owned();
        let query = request.uri().query().unwrap_or_default().to_owned();
        let body = axum::body::to_bytes(request.into_body(), 1 << 20)
            .await
            .unwrap_or_default();
        Json(json!({
            "service": name,
            "method": method,
            "path": path,
            "query": query,
            "user": user,
            "body_bytes": body.len(),
        }))
    })
}

const DEMO_USERS: [(&str, &str, &[&str]); 2] = [
    ("alice", "alice-password", &["support", "platform"]),
    ("bob", "bob-password", &["support"]),
];

async fn demo(data_dir: &Path, audit_url: &str) -> Result<(), String> {
    use portcullis::directory::{Password, PasswordHash};
    std::fs::create_dir_all(data_dir).map_err(|e| format!("{}: {e}", data_dir.display()))?;
    let mut users = String::new();
    for (name, password, groups) in DEMO_USERS {
        let password = Password::new(password).map_err(|e| e.to_string())?;
        let hash = PasswordHash::create(&password).map_err(|e| e.to_string())?;
        users.push_str(&format!(
            "[[user]]\nname = \"{name}\"\npassword_hash = \"{hash}\"\ngroups = {groups:?}\n\n"
        ));
    }
    std::fs::write(data_dir.join("demo-users.toml"), users)
        .map_err(|e| format!("{}: {e}", data_dir.display()))?;
    let config: Config = toml::from_str(DEMO_CONFIG).map_err(|e| format!("demo config: {e}"))?;
    let mut broker = config.broker.ok_or("the demo has a broker")?;
    broker.audit_url = Some(audit_url.to_owned());
    let broker_listen = broker.listen.clone();
    let broker = broker::router(broker, data_dir, None, None).await?;
    let mut tasks = tokio::task::JoinSet::new();
    for region in config.region {
        let listen = region.listen.clone();
        let router = region::router(region, None, None).await?;
        tasks.spawn(async move { serve(router, &listen, "region proxy").await });
    }
    for (name, listen) in [("orders", "127.0.0.1:8311"), ("billing", "127.0.0.1:8312")] {
        tasks.spawn(async move { serve(demo_service(name), listen, name).await });
    }
    let listen = broker_listen.clone();
    tasks.spawn(async move { serve_broker(broker, &listen, None).await });
    println!(
        "access-broker demo: broker http://{broker_listen}\n  TOKEN=$(curl -s -X POST http://{broker_listen}/login -d '{{\"username\":\"alice\",\"password\":\"alice-password\"}}' | sed 's/.*\"token\":\"\\([^\"]*\\)\".*/\\1/')\n  curl -H \"Authorization: Bearer $TOKEN\" http://{broker_listen}/proxy/eu/orders/orders/42"
    );
    match tasks.join_next().await {
        Some(Ok(result)) => result,
        Some(Err(e)) => Err(e.to_string()),
        None => Ok(()),
    }
}

const DEMO_CONFIG: &str = r#"
[broker]
listen = "127.0.0.1:8300"
audit_url = "sqlite://audit.db"
audit_groups = ["platform"]

[broker.directory]
users_file = "demo-users.toml"

[broker.regions.eu]
url = "http://127.0.0.1:8301"
[broker.regions.us]
url = "http://127.0.0.1:8302"

[[broker.grants]]
groups = ["support"]
region = "eu"
service = "orders"
methods = ["GET"]

[[broker.grants]]
groups = ["platform"]
region = "*"
service = "*"
methods = ["*"]

[[region]]
name = "eu"
listen = "127.0.0.1:8301"
broker_jwks_url = "http://127.0.0.1:8300/.well-known/jwks.json"
[region.services]
orders = "http://127.0.0.1:8311"

[[region]]
name = "us"
listen = "127.0.0.1:8302"
broker_jwks_url = "http://127.0.0.1:8300/.well-known/jwks.json"
[region.services]
billing = "http://127.0.0.1:8312"
"#;

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_max_level(cli.log_level)
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("access-broker: cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.mode {
            None => demo(Path::new("access-broker-data"), "sqlite://audit.db").await,
            Some(Mode::Demo {
                data_dir,
                audit_url,
            }) => demo(&data_dir, &audit_url).await,
            Some(Mode::Broker { config, listen }) => run_broker(&config, listen).await,
            Some(Mode::RegionProxy {
                config,
                region,
                listen,
            }) => run_region(&config, &region, listen).await,
            Some(Mode::Login {
                url,
                username,
                token_file,
            }) => client::login(&url, &username, &token_file).await,
            Some(Mode::Call {
                method,
                path,
                data,
                url,
                token_file,
            }) => client::call(&url, &token_file, &method, &path, data.as_deref()).await,
            Some(Mode::Bulk {
                method,
                path_template,
                ids_file,
                data,
                concurrency,
                rate,
                url,
                token_file,
            }) => {
                client::bulk(client::BulkArgs {
                    url: &url,
                    token_file: &token_file,
                    method: &method,
                    path_template: &path_template,
                    body_template: data.as_deref(),
                    ids_file: &ids_file,
                    concurrency,
                    rate,
                })
                .await
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("access-broker: {err}");
            ExitCode::FAILURE
        }
    }
}
