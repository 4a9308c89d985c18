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

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path as UrlPath, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use clap::Parser;
use portcullis::audit::AuditLog;
use portcullis::policy::{
    Algorithm, Bundle, BundleLimits, BundleSource, BundleVerifier, DecisionLog, DirSource,
    EvalLimits, Fetched, HttpSource, PolicyEngine, PolicyError, PolicyStore, PollOptions, Rollout,
    RolloutConfig, VerificationKey, poll_once,
};
use portcullis::{AuthMethod, Principal, PrincipalKind, SystemClock};
use serde::Deserialize;
use serde_json::{Value, json};

const LONG_ABOUT: &str = "\
An OPA-compatible policy sidecar built on portcullis::policy (Rego on regorus).

API (as OPA's):
  POST /v1/data/{path}   body {\"input\": ...}  ->  {\"result\": ..., \"decision_id\": ...}
                         (no \"result\" when the document is undefined; without \"input\",
                         input is undefined and a \"warning\" says so)
  GET  /v1/data/{path}   optional ?input=<JSON> (without it, input is undefined)
  GET  /health           200 once serving; ?bundles: 200 only when every bundle is active
  GET  /v1/status        active revision and last error per bundle
Errors are {\"code\", \"message\"}: 400 invalid_parameter, 500 internal_error, 503
unavailable (no active policy, or a decision that could not be logged).

Configuration (TOML; --print-config shows the built-in one):
  listen, data_dir (last known good bundles), spiffe_id, poll_seconds, max_body_bytes,
  strict_builtin_errors (default false: a built-in's error makes its expression undefined,
  as OPA's default; true: it fails the decision with a 500)
  [[bundles]] name, dir = FOLDER | url = http://.../bundle.tar.gz, artifact (for rollout);
              with a rollout, `{revision}` in dir/url is replaced by this host's revision
  [rollout] config = FILE (the pipelines), state = FILE (written by the delivery service),
            mode = staged (default) | all_at_once: every host runs the newest revision (the
            candidate, else stable) as the old delivery did. The mode is re-read from the
            configuration file on every poll, so switching needs no restart.
  [decision_log] url = sqlite://FILE | jsonl://DIR | postgres://..., mask = [\"input.path\"]
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
    #[serde(default)]
    keys: BTreeMap<String, KeyConfig>,
    /// A built-in's error fails the decision (OPA's strict mode) instead of leaving its
    /// expression undefined.
    #[serde(default)]
    strict_builtin_errors: bool,
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
    #[serde(default)]
    mask: Vec<String>,
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
    check(&config)?;
    let data_dir = resolve(&base, &config.data_dir);
    let mut verifiers = BTreeMap::new();
    for bundle in &config.bundles {
        verifiers.insert(bundle.name.clone(), verifier(&config, bundle, &base)?);
    }
    let limits = EvalLimits {
        strict_builtin_errors: config.strict_builtin_errors,
        ..EvalLimits::default()
    };
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
    let decision_log = match &config.decision_log {
        Some(log) => {
            let sink = AuditLog::open(&log.url, &base, Default::default())
                .await
                .map_err(|e| format!("[decision_log] {e}"))?;
            let actor = Principal::builder(
                PrincipalKind::Service,
                config.spiffe_id.as_deref().unwrap_or("policy-sidecar"),
                AuthMethod::from_static("local"),
            )
            .build()
            .map_err(|e| e.to_string())?;
            Some(Arc::new(
                DecisionLog::new(Arc::new(sink), actor)
                    .mask(
                        log.mask
                            .iter()
                            .map(|p| p.strip_prefix("input.").unwrap_or(p)),
                    )
                    .map_err(|e| e.to_string())?,
            ))
        }
        None => None,
    };
    let options = PollOptions {
        interval: Duration::from_secs(config.poll_seconds.max(1)),
        max_backoff: Duration::from_secs(300),
        jitter_percent: 10,
    };
    for bundle in &config.bundles {
        let follower = Follower {
            bundle: bundle.clone(),
            base: base.clone(),
            rollout: rollout.clone(),
            config_file: cli.config.clone(),
            mode: config.rollout.as_ref().map(|r| r.mode).unwrap_or_default(),
            spiffe_id: config.spiffe_id.clone(),
            source: None,
            decision_log: decision_log.clone(),
            last_refusal: None,
            verifier: verifiers.get(&bundle.name).cloned().flatten(),
        };
        tokio::spawn(follower.run(store.clone(), options));
    }
    let state = Arc::new(App {
        store,
        decision_log,
        bundles: config.bundles.iter().map(|b| b.name.clone()).collect(),
    });
    let app = Router::new()
        .route("/v1/data", get(get_data).post(post_data))
        .route("/v1/data/{*path}", get(get_data).post(post_data))
        .route("/health", get(health))
        .route("/v1/status", get(status))
        .layer(DefaultBodyLimit::max(config.max_body_bytes))
        .with_state(state)
        // Every error answer in OPA's shape, `{"code": …, "message": …}`, the framework's
        // own (unknown route, wrong method, body too large) included.
        .layer(portcullis::edge::EdgeLayer::new().with_code_field("code"));
    let listener = tokio::net::TcpListener::bind(&config.listen)
        .await
        .map_err(|e| format!("listen on {}: {e}", config.listen))?;
    let address = listener.local_addr().map_err(|e| e.to_string())?;
    println!("LISTENING http://{address}");
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
        .map_err(|e| e.to_string())
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
        if config.rollout.is_some() && (bundle.artifact.is_none() || config.spiffe_id.is_none()) {
            return Err(format!(
                "bundle {}: with a [rollout], every bundle names its artifact and spiffe_id is set",
                bundle.name
            ));
        }
    }
    Ok(())
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
        let mut key_material = if matches!(
            algorithm,
            Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512
        ) {
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
    /// The source of the current location. A new location (another revision assigned)
    /// gets a fresh source: a source only knows what it activated itself, and the store
    /// may since have activated another location's bundle.
    source: Option<(String, Box<dyn BundleSource>)>,
    /// Refusals go to the decision log too (each distinct one once, not every poll).
    decision_log: Option<Arc<DecisionLog>>,
    last_refusal: Option<String>,
    /// Set when the bundle must be signed.
    verifier: Option<Arc<BundleVerifier>>,
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
                    let source = HttpSource::new(name, location, Duration::from_secs(30), limits)?;
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
        poll_once(store, source.as_mut()).await.map(|_| ())
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
                    self.report(&store, &err).await;
                    failures + 1
                }
            };
            tokio::time::sleep(options.jittered_pause(failures)).await;
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
    decision_log: Option<Arc<DecisionLog>>,
    bundles: Vec<String>,
}

/// An OPA-style error response.
fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    (
        status,
        Json(json!({"code": code, "message": message.into()})),
    )
        .into_response()
}

fn new_decision_id() -> String {
    let mut bytes = [0u8; 16];
    // A decision id is not a secret; a failed random source still yields a usable id.
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes);
    let hex = hex::encode(bytes);
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

/// Decides `path` with `input` (`None`: undefined) and answers as OPA does; `warn` adds
/// the warning that the request had no `input`.
async fn decide(app: &App, path: &str, input: Option<&Value>, warn: bool) -> Response {
    let outcome = app.store.evaluate_input(path, input);
    let decision_id = new_decision_id();
    if let Some(log) = &app.decision_log
        && !matches!(outcome, Err(PolicyError::InvalidPath { .. }))
    {
        let query = portcullis::policy::rule_path(path).unwrap_or_default();
        if let Err(err) = log
            .record(&query, input, &outcome, Some(&decision_id))
            .await
        {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "internal_error",
                format!("the decision could not be logged, so it is not given: {err}"),
            );
        }
    }
    match outcome {
        Ok(evaluation) => {
            let mut body = serde_json::Map::new();
            if let Some(result) = evaluation.result {
                body.insert("result".into(), result);
            }
            body.insert("decision_id".into(), json!(decision_id));
            if warn {
                body.insert("warning".into(), input_missing_warning());
            }
            Json(Value::Object(body)).into_response()
        }
        Err(err @ (PolicyError::InvalidPath { .. } | PolicyError::Input(_))) => error(
            StatusCode::BAD_REQUEST,
            "invalid_parameter",
            err.to_string(),
        ),
        Err(err @ PolicyError::NoPolicy) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            err.to_string(),
        ),
        Err(err) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            err.to_string(),
        ),
    }
}

fn data_path(path: Option<UrlPath<String>>) -> String {
    path.map(|UrlPath(p)| p).unwrap_or_default()
}

async fn post_data(
    State(app): State<Arc<App>>,
    path: Option<UrlPath<String>>,
    body: Bytes,
) -> Response {
    // No body, no `input` key or `"input": null`: input is undefined, as in OPA (whose
    // request type reads a JSON null as a missing input).
    let input = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        match serde_json::from_slice::<Value>(&body) {
            Ok(Value::Object(mut request)) => request.remove("input").filter(|i| !i.is_null()),
            Ok(_) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "invalid_parameter",
                    "the body must be a JSON object, {\"input\": ...}",
                );
            }
            Err(err) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "invalid_parameter",
                    format!("the body is not JSON: {err}"),
                );
            }
        }
    };
    let warn = input.is_none();
    decide(&app, &data_path(path), input.as_ref(), warn).await
}

async fn get_data(
    State(app): State<Arc<App>>,
    path: Option<UrlPath<String>>,
    Query(query): Query<BTreeMap<String, String>>,
) -> Response {
    let input = match query.get("input") {
        None => None,
        Some(text) => match serde_json::from_str(text) {
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
    decide(&app, &data_path(path), input.as_ref(), false).await
}

async fn health(
    State(app): State<Arc<App>>,
    Query(query): Query<BTreeMap<String, String>>,
) -> Response {
    if query.contains_key("bundles") {
        let active = app.store.revisions();
        let missing: Vec<&String> = app
            .bundles
            .iter()
            .filter(|b| !active.contains_key(*b))
            .collect();
        if !missing.is_empty() {
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                Json(json!({"error": format!("bundles not activated: {missing:?}")})),
            )
                .into_response();
        }
    }
    Json(json!({})).into_response()
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
