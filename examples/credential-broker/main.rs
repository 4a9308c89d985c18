//! A credential vending service after Pinterest's: it authenticates the caller, reads their
//! directory groups, maps groups → roles → IAM managed policies, and returns short-lived STS
//! credentials for one base role narrowed by exactly those policies. Every vend is audited
//! before STS is called.
//!
//! ```sh
//! cargo build --example credential-broker --features aws,ldap
//! target/debug/examples/credential-broker --config broker.toml              # serve
//! target/debug/examples/credential-broker login --url http://127.0.0.1:8090 \
//!     --username alice --token-file ~/.broker-token                          # a session
//! target/debug/examples/credential-broker process --url http://127.0.0.1:8090 \
//!     --token-file ~/.broker-token                            # for credential_process
//! ```
//!
//! See `examples/credential-broker/README.md`.
#![expect(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a command-line service prints its banner, its credential_process output and its errors"
)]

mod client;
mod fleet;
mod svid;
#[path = "../common/tls.rs"]
mod tls;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use clap::{Parser, Subcommand};
use portcullis::audit::{AuditLog, AuditSink};
use portcullis::directory::{
    CachingDirectory, Directory, LdapConfig, LdapDirectory, Password, StaticDirectory,
};
use portcullis::gate::{Gate, GateError, GateRequest, RunError};
use portcullis::http::{AuthenticateLayer, CorrelationId};
use portcullis::token::{
    AuthChain, AuthConfig, ChainResources, MethodConfig, PasswordLogin, SessionAlgorithm,
    SessionIssuer, SessionKey, SessionKeyRing,
};
use portcullis::vend::{AwsSts, CredentialVendor, VendConfig, VendError, VendRequest, Vended};
use portcullis::{AccessRequest, Action, Decision, PrincipalKind, Resource, ResourceKind, from_fn};
use serde::Deserialize;
use serde_json::{Value, json};

/// The action audited for a vend.
const VEND: Action = Action::from_static("vend");

#[derive(Debug, Parser)]
#[command(
    name = "credential-broker",
    version,
    about = "Vends short-lived AWS credentials: directory groups -> roles -> managed policies -> STS.",
    long_about = LONG_ABOUT
)]
struct Cli {
    #[command(subcommand)]
    mode: Option<Mode>,
    /// The configuration file (TOML) for `serve`.
    #[arg(long, short, value_name = "FILE", global = true)]
    config: Option<PathBuf>,
    /// Overrides `listen`.
    #[arg(long, value_name = "ADDR", global = true)]
    listen: Option<String>,
    /// Log level (to stderr): error, warn, info, debug or trace.
    #[arg(long, default_value = "info", value_name = "LEVEL", global = true)]
    log_level: tracing::Level,
}

const LONG_ABOUT: &str = "\
Vends short-lived AWS credentials after Pinterest's Credential Vending Service.

ENDPOINTS
  POST /v1/login            {username, password} -> a session JWT (directory login)
  POST /v1/credentials      {roles?: [..], duration_seconds?: N} with `Authorization: Bearer <jwt>`
                            -> credential_process JSON (Version 1) and the roles/policies used
  GET  /v1/credentials/ecs  the same as ECS container credentials: set
                            AWS_CONTAINER_CREDENTIALS_FULL_URI to it and
                            AWS_CONTAINER_AUTHORIZATION_TOKEN to `Bearer <jwt>`
  GET  /health              unprotected liveness
A refusal is 403 with a code (`no_matching_roles`, `role_not_allowed`, ...) and a reason.

CONFIGURATION (TOML; every setting is described in examples/credential-broker/README.md)
  listen, audit_url (sqlite://FILE | jsonl://DIR), directory_cache_seconds, session_minutes,
  [authentication] = portcullis-token methods (default: session_jwt from /v1/login; add
  `[[authentication.method]] type = \"oidc\"` for your identity provider's tokens),
  [directory] users_file = static users, or [directory.ldap] = an LdapConfig,
  [vend] = the mapping (base_role_arn, [vend.groups], [vend.roles], chained,
  default_duration_seconds, max_duration_seconds, cache_seconds, refresh_before_seconds),
  [sts] endpoint_url?, region, access_key_env, secret_key_env (the broker's own keys).

CLIENT
  credential-broker login --url URL --username NAME --token-file FILE
  logs in (password from the terminal, or CREDENTIAL_BROKER_PASSWORD) and writes the session
  token to FILE (mode 0600); it says how long the session lasts.
  credential-broker process --url URL --token-file FILE [--roles a,b] [--duration-seconds N]
  prints credential_process JSON, for `credential_process = ...` in ~/.aws/config.
  credential-broker hash-password prints a password's hash for a users file.";

#[derive(Debug, Subcommand)]
enum Mode {
    /// Serves the API (the default).
    Serve,
    /// Logs in and writes the session token to a file (mode 0600) for `process`. The
    /// password is asked for on the terminal, or read from CREDENTIAL_BROKER_PASSWORD.
    Login {
        /// The broker's base URL.
        #[arg(long)]
        url: String,
        /// Who logs in.
        #[arg(long)]
        username: String,
        /// Where the token goes (replaced if it exists).
        #[arg(long, value_name = "FILE")]
        token_file: PathBuf,
    },
    /// Prints the hash of a password for `password_hash` in a users file. The password is
    /// read from the terminal without echo (asked twice), or from standard input (one line).
    HashPassword {
        /// PBKDF2-HMAC-SHA256 iterations (at least 10,000).
        #[arg(long, default_value_t = 600_000)]
        iterations: u32,
    },
    /// Asks a broker for credentials and prints them as `credential_process` JSON.
    Process {
        /// The broker's base URL.
        #[arg(long)]
        url: String,
        /// A file holding the bearer token (a session JWT or OIDC access token).
        #[arg(long, value_name = "FILE")]
        token_file: PathBuf,
        /// Only these roles (comma-separated).
        #[arg(long, value_delimiter = ',')]
        roles: Vec<String>,
        /// Session length in seconds.
        #[arg(long)]
        duration_seconds: Option<u64>,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default = "default_listen")]
    listen: String,
    /// Required unless `[store]` keeps the audit log.
    #[serde(default)]
    audit_url: Option<String>,
    #[serde(default = "five_minutes")]
    directory_cache_seconds: u64,
    /// How long a session from `/v1/login` lasts (1 to 720).
    #[serde(default = "sixty")]
    session_minutes: u64,
    /// Authentication methods (portcullis-token's `[[method]]` tables, e.g. `oidc`);
    /// absent: the broker's own session JWTs from `/v1/login` only.
    authentication: Option<AuthConfig>,
    directory: DirectoryConfig,
    vend: VendConfig,
    sts: StsConfig,
    /// Several brokers on one PostgreSQL: the session keys (and, unless `audit_url` says
    /// otherwise, the audit log) kept there.
    store: Option<fleet::StoreConfig>,
    /// Serving over TLS; with client certificates, services authenticate by SVID and are
    /// vended credentials by their SPIFFE ID's `[[tls.groups]]`. Absent: plain HTTP.
    tls: Option<tls::TlsConfig>,
}

fn default_listen() -> String {
    "127.0.0.1:8090".into()
}
fn five_minutes() -> u64 {
    300
}
fn sixty() -> u64 {
    60
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DirectoryConfig {
    users_file: Option<PathBuf>,
    ldap: Option<toml::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StsConfig {
    endpoint_url: Option<String>,
    #[serde(default = "us_east_1")]
    region: String,
    access_key_env: String,
    secret_key_env: String,
}

fn us_east_1() -> String {
    "us-east-1".into()
}

struct App {
    gate: Arc<Gate>,
    vendor: CredentialVendor,
    login: PasswordLogin,
    /// How long a session from `/v1/login` lasts.
    session_ttl: Duration,
    /// What keeps shared session keys fresh (fleet mode), kept for the broker's life.
    _keep: Option<Box<dyn std::any::Any + Send + Sync>>,
}

type Shared = State<Arc<App>>;

fn env(name: &str) -> Result<String, String> {
    std::env::var(name).map_err(|_| format!("environment variable `{name}` is not set"))
}

async fn build(
    config: Config,
    base: &Path,
    tls: Option<Arc<tls::Tls>>,
) -> Result<(Router, String), String> {
    config.vend.validate().map_err(|e| e.to_string())?;
    let directory: Arc<dyn Directory> = match (&config.directory.users_file, &config.directory.ldap)
    {
        (Some(file), None) => {
            let text = std::fs::read_to_string(base.join(file))
                .map_err(|e| format!("{}: {e}", file.display()))?;
            Arc::new(
                CachingDirectory::new(
                    StaticDirectory::from_toml(&text).map_err(|e| e.to_string())?,
                    Duration::from_secs(config.directory_cache_seconds),
                )
                .map_err(|e| e.to_string())?,
            )
        }
        (None, Some(ldap)) => {
            let text = toml::to_string(ldap).map_err(|e| e.to_string())?;
            let ldap = LdapDirectory::new(LdapConfig::from_toml(&text).map_err(|e| e.to_string())?)
                .map_err(|e| e.to_string())?;
            Arc::new(
                CachingDirectory::new(ldap, Duration::from_secs(config.directory_cache_seconds))
                    .map_err(|e| e.to_string())?,
            )
        }
        _ => return Err("[directory] needs exactly one of users_file or [directory.ldap]".into()),
    };

    let keys = aws_sdk_sts::config::Credentials::new(
        env(&config.sts.access_key_env)?,
        env(&config.sts.secret_key_env)?,
        None,
        None,
        "credential-broker",
    );
    let mut sts = aws_sdk_sts::Config::builder()
        .behavior_version(aws_sdk_sts::config::BehaviorVersion::latest())
        .region(aws_sdk_sts::config::Region::new(config.sts.region.clone()))
        .credentials_provider(keys);
    if let Some(url) = &config.sts.endpoint_url {
        sts = sts.endpoint_url(url);
    }
    let sts = AwsSts::new(aws_sdk_sts::Client::from_conf(sts.build()));
    let groups = Arc::new(svid::ServiceGroups::new(directory.clone(), tls));
    let vendor =
        CredentialVendor::new(config.vend, groups, Arc::new(sts)).map_err(|e| e.to_string())?;

    if !(1..=720).contains(&config.session_minutes) {
        return Err(format!(
            "session_minutes must be between 1 and 720, not {}",
            config.session_minutes
        ));
    }
    let session_ttl = Duration::from_secs(config.session_minutes * 60);
    let store = config.store.clone().map(|s| s.resolve(base));
    // Before the store is reached: a local audit log beside it is refused.
    let audit_url = fleet::audit_url(config.audit_url.as_deref(), store.as_ref())?;
    let sessions = session_keys(store.as_ref(), session_ttl).await?;
    let issuer = SessionIssuer::with_ring(sessions.keys, "credential-broker", "credential-broker")
        .and_then(|issuer| issuer.with_ttl(Duration::from_secs(config.session_minutes * 60)))
        .map_err(|e| e.to_string())?;
    let authentication = config.authentication.clone().unwrap_or(AuthConfig {
        anonymous: false,
        methods: vec![MethodConfig::SessionJwt(Default::default())],
    });
    if authentication.anonymous {
        return Err("anonymous access makes no sense for a credential broker".into());
    }
    let chain = AuthChain::from_config(
        &authentication,
        &ChainResources {
            session_issuer: Some(issuer.clone()),
            ..ChainResources::default()
        },
    )
    .await
    .map_err(|e| e.to_string())?;

    let audit = AuditLog::open(&audit_url, base, Default::default())
        .await
        .map_err(|e| e.to_string())?;
    // People and services may ask; the mapping decides what they get.
    let anyone_mapped = from_fn("vend-by-mapping", |r: &AccessRequest<'_>| {
        if r.principal.kind() == PrincipalKind::User
            && tls::is_spiffe_subject(r.principal.subject())
        {
            // Only an SVID makes a SPIFFE ID's principal: a user named like one (an OIDC
            // `sub`, say) must not get a service's groups.
            Decision::deny("a user name that is a SPIFFE ID")
        } else if r.action == &VEND
            && matches!(
                r.principal.kind(),
                PrincipalKind::User | PrincipalKind::Service
            )
        {
            Decision::allow("the group mapping decides what is vended")
        } else {
            Decision::not_applicable("only people and services are vended credentials")
        }
    });
    let gate = Arc::new(
        Gate::builder()
            .authenticator(Arc::new(chain))
            .authorizer(Arc::new(anyone_mapped))
            .audit(Arc::new(audit) as Arc<dyn AuditSink>)
            .build()
            .map_err(|e| e.to_string())?,
    );
    let app = Arc::new(App {
        gate: gate.clone(),
        vendor,
        login: match sessions.attempts {
            Some(attempts) => PasswordLogin::new(directory, issuer).with_attempt_store(attempts),
            None => PasswordLogin::new(directory, issuer),
        },
        session_ttl,
        _keep: sessions.keep,
    });
    let api = Router::new()
        .route("/v1/credentials", post(credentials))
        .route("/v1/credentials/ecs", get(ecs))
        .layer(AuthenticateLayer::new(gate));
    let router = Router::new()
        .route("/health", get(|| async { "ok" }))
        .route("/v1/login", post(login))
        .merge(api)
        .with_state(app)
        .layer(portcullis::http::EdgeLayer::new());
    Ok((router, config.listen))
}

/// The session keys, where failed logins are counted, and what keeps shared keys fresh.
struct Sessions {
    keys: SessionKeyRing,
    attempts: Option<Arc<dyn portcullis::token::LoginAttempts>>,
    keep: Option<Box<dyn std::any::Any + Send + Sync>>,
}

/// The session keys: one made at start (one broker: a restart signs everyone out, which a
/// broker of one-hour credentials can afford), or keys shared and rotated through `[store]`.
async fn session_keys(
    store: Option<&fleet::StoreConfig>,
    session_ttl: Duration,
) -> Result<Sessions, String> {
    let Some(store) = store else {
        let key = SessionKey::generate(SessionAlgorithm::EdDSA).map_err(|e| e.to_string())?;
        return Ok(Sessions {
            keys: SessionKeyRing::fixed(key),
            attempts: None,
            keep: None,
        });
    };
    #[cfg(feature = "postgres")]
    {
        let shared = fleet::session_keys(store, session_ttl).await?;
        Ok(Sessions {
            keys: shared.ring.clone(),
            attempts: Some(shared.attempts.clone()),
            keep: Some(Box::new(shared)),
        })
    }
    #[cfg(not(feature = "postgres"))]
    {
        let _ = (store, session_ttl);
        Err("[store] needs PostgreSQL support: build with `--features postgres`".into())
    }
}

/// A refusal as `{"error": code, "message": reason}`.
fn refusal(status: StatusCode, code: &str, message: String) -> Response {
    (status, Json(json!({ "error": code, "message": message }))).into_response()
}

fn vend_error(err: &VendError) -> Response {
    let status = if err.is_refusal() {
        StatusCode::FORBIDDEN
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    refusal(status, err.code(), err.to_string())
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CredentialsBody {
    #[serde(default)]
    roles: Option<Vec<String>>,
    duration_seconds: Option<u64>,
}

/// Audits the vend (intent before STS, outcome after) and vends.
async fn vend(
    app: &App,
    who: &portcullis::Principal,
    correlation: &CorrelationId,
    body: CredentialsBody,
    target: &str,
) -> Result<Vended, Response> {
    let resource = Resource::new(
        ResourceKind::from_static("aws_role"),
        role_name(&app.vendor),
    )
    .map_err(|e| {
        refusal(
            StatusCode::INTERNAL_SERVER_ERROR,
            "configuration",
            e.to_string(),
        )
    })?;
    let mut request = GateRequest::new(VEND, resource)
        .http(
            if target.ends_with("/ecs") {
                "GET"
            } else {
                "POST"
            },
            target,
        )
        .correlation_id(correlation.0.clone());
    if let Some(roles) = &body.roles {
        request = request.param("roles", roles.join(","));
    }
    if let Some(secs) = body.duration_seconds {
        request = request.param("duration_seconds", secs);
    }
    let asked = VendRequest {
        roles: body.roles,
        duration: body.duration_seconds.map(Duration::from_secs),
    };
    app.gate
        .run(who, &request, |_| app.vendor.vend(who, &asked))
        .await
        .map_err(|err| match err {
            RunError::Refused(gate) => gate_response(gate),
            RunError::Action(vend) => vend_error(&vend),
        })
}

fn gate_response(err: GateError) -> Response {
    err.into_response()
}

/// The base role's name (the last part of its ARN), the audited resource.
fn role_name(vendor: &CredentialVendor) -> String {
    let arn = &vendor.config().base_role_arn;
    arn.rsplit('/').next().unwrap_or(arn).to_owned()
}

fn plan_view(vended: &Vended) -> Value {
    json!({
        "roles": vended.plan.roles,
        "policy_arns": vended.plan.policies,
        "session_name": vended.session_name,
        "assumed_role_arn": vended.credentials.assumed_role_arn,
    })
}

async fn credentials(
    State(app): Shared,
    Extension(who): Extension<portcullis::Principal>,
    Extension(correlation): Extension<CorrelationId>,
    body: Bytes,
) -> Response {
    let body: CredentialsBody = if body.iter().all(u8::is_ascii_whitespace) {
        CredentialsBody::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(b) => b,
            Err(e) => {
                return refusal(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    format!("invalid JSON body: {e}"),
                );
            }
        }
    };
    match vend(&app, &who, &correlation, body, "/v1/credentials").await {
        Ok(vended) => {
            let mut out = vended.credentials.credential_process_json();
            if let Some(map) = out.as_object_mut() {
                map.insert("Vended".into(), plan_view(&vended));
            }
            Json(out).into_response()
        }
        Err(response) => response,
    }
}

async fn ecs(
    State(app): Shared,
    Extension(who): Extension<portcullis::Principal>,
    Extension(correlation): Extension<CorrelationId>,
) -> Response {
    match vend(
        &app,
        &who,
        &correlation,
        CredentialsBody::default(),
        "/v1/credentials/ecs",
    )
    .await
    {
        Ok(vended) => Json(vended.credentials.ecs_json()).into_response(),
        Err(response) => response,
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginBody {
    username: String,
    password: String,
}

async fn login(State(app): Shared, Json(body): Json<LoginBody>) -> Response {
    let password = match Password::new(body.password) {
        Ok(p) => p,
        Err(e) => return refusal(StatusCode::BAD_REQUEST, "bad_request", e.to_string()),
    };
    match app.login.login(&body.username, &password).await {
        Ok(session) => Json(json!({
            "token": session.expose(),
            "token_type": "Bearer",
            "expires_in": app.session_ttl.as_secs(),
        }))
        .into_response(),
        // 503 when the failed-login store cannot answer: the login is refused, not let
        // through uncounted.
        Err(err @ portcullis::token::AuthError::Store(_)) => {
            gate_response(GateError::AuthUnavailable(err))
        }
        Err(err) => gate_response(GateError::Unauthenticated(err)),
    }
}

async fn serve(cli: &Cli) -> Result<(), String> {
    let path = cli
        .config
        .as_ref()
        .ok_or("serve needs --config FILE (see --help for its sections)")?;
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut config: Config =
        toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    let base = path.parent().unwrap_or(Path::new("."));
    let tls = match config.tls.as_mut() {
        Some(section) => {
            section.resolve_paths(base);
            Some(Arc::new(section.open().map_err(|e| e.to_string())?))
        }
        None => None,
    };
    let (router, listen) = build(config, base, tls.clone()).await?;
    let listen = cli.listen.clone().unwrap_or(listen);
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    let address = listener.local_addr().map_err(|e| e.to_string())?;
    match tls {
        Some(tls) => {
            println!("LISTENING https://{address}");
            serve_tls(&tls, listener, router).await
        }
        None => {
            tls::warn_if_plain_and_exposed(&address, "credential-broker");
            println!("LISTENING http://{address}");
            axum::serve(listener, router)
                .with_graceful_shutdown(portcullis::http::shutdown_signal())
                .await
                .map_err(|e| e.to_string())
        }
    }
}

/// Serves `router` over TLS per `[tls]`, with the identity files watched for rotation.
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
        .serve(listener, router, portcullis::http::shutdown_signal())
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Mode::HashPassword { iterations }) = cli.mode {
        return match client::hash_password(iterations) {
            Ok(hash) => {
                println!("{hash}");
                ExitCode::SUCCESS
            }
            Err(err) => {
                eprintln!("credential-broker hash-password: {err}");
                ExitCode::FAILURE
            }
        };
    }
    // Without a subscriber every warning (plain HTTP off loopback, a refused SVID rotation,
    // a failed reload) was silently dropped.
    tracing_subscriber::fmt()
        .with_max_level(cli.log_level)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("credential-broker: cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match &cli.mode {
            None | Some(Mode::Serve) => serve(&cli).await,
            Some(Mode::Process {
                url,
                token_file,
                roles,
                duration_seconds,
            }) => client::process(url, token_file, roles, *duration_seconds).await,
            Some(Mode::Login {
                url,
                username,
                token_file,
            }) => client::login(url, username, token_file).await,
            // Answered before the runtime starts.
            Some(Mode::HashPassword { .. }) => Ok(()),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("credential-broker: {err}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The README's TOML blocks, in order.
    fn readme_toml() -> Vec<String> {
        let readme = include_str!("README.md");
        let mut blocks = Vec::new();
        let mut current: Option<String> = None;
        for line in readme.lines() {
            match (&mut current, line) {
                (None, "```toml") => current = Some(String::new()),
                (Some(block), "```") => {
                    blocks.push(std::mem::take(block));
                    current = None;
                }
                (Some(block), line) => {
                    block.push_str(line);
                    block.push('\n');
                }
                (None, _) => {}
            }
        }
        blocks
    }

    fn parse(text: &str) -> Config {
        let config: Config = toml::from_str(text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        config.vend.validate().unwrap();
        config
    }

    #[test]
    fn the_readme_configurations_are_valid_and_the_first_run_needs_only_loopback() {
        let blocks = readme_toml();
        assert_eq!(
            blocks.len(),
            3,
            "the first run's, the reference and several instances'"
        );
        let first = parse(&blocks[0]);
        assert!(
            first.authentication.is_none(),
            "no identity provider to reach"
        );
        assert!(first.directory.ldap.is_none() && first.directory.users_file.is_some());
        assert!(first.listen.starts_with("127.0.0.1:"));
        assert!(
            first
                .sts
                .endpoint_url
                .as_deref()
                .is_some_and(|u| u.starts_with("http://127.0.0.1:"))
        );
        // The reference: every setting, with the defaults it states.
        let all = parse(&blocks[1]);
        assert_eq!(all.session_minutes, sixty());
        assert_eq!(all.directory_cache_seconds, five_minutes());
        assert_eq!(all.listen, default_listen());
        assert_eq!(all.vend.default_duration_seconds, 3600);
        assert_eq!(all.vend.max_duration_seconds, 43_200);
        assert_eq!(all.vend.cache_seconds, 300);
        assert_eq!(all.vend.refresh_before_seconds, 600);
        assert_eq!(all.sts.region, us_east_1());
        assert_eq!(all.authentication.map(|a| a.methods.len()), Some(2));
        // Its commented-out LDAP directory, uncommented, is an LDAP configuration.
        let ldap: String = blocks[1]
            .lines()
            .skip_while(|l| !l.starts_with("# [directory.ldap]"))
            .skip(1)
            .take_while(|l| l.starts_with("# "))
            .map(|l| format!("{}\n", &l[2..]))
            .collect();
        assert!(ldap.contains("pool_size"), "{ldap}");
        let ldap: portcullis::directory::LdapConfig =
            toml::from_str(&ldap).unwrap_or_else(|e| panic!("{e}\n{ldap}"));
        assert_eq!(ldap.pool_size, 4);
        // Several instances: the store keeps the audit log and the session keys.
        let fleet = parse(&blocks[2]);
        assert!(fleet.audit_url.is_none());
        let store = fleet.store.expect("[store]");
        assert!(store.url.starts_with("postgres://"));
        assert!(store.key_env.is_some() && store.key_file.is_none());
        assert_eq!((store.refresh_seconds, store.key_rotation_hours), (30, 24));
    }
}
