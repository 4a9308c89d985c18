//! The policy delivery service: CI publishes bundle revisions of an artifact, validated as
//! a sidecar would validate them before any host can fetch one; hosts (policy sidecars or
//! stock OPA agents) fetch, with OPA's bundle service protocol, the revision the pipeline
//! assigns to their SPIFFE ID, and report their status; operators promote, pause, resume
//! and roll back, authorized per artifact by ACL roles and recorded in the audit log before
//! anything changes; a scheduler promotes automatic steps and rolls back breaches.
//!
//! ```sh
//! cargo run --example policy-delivery --features delivery -- --config examples/policy-delivery/delivery.toml
//! ```
//!
//! With `--features delivery-s3`, `[artifacts] store = "s3"` keeps revisions in an S3 bucket.
//! With `--features postgres`, `[store] url = "postgres://…"` runs several instances on one
//! database (README: "Running several instances").
//!
//! See `examples/policy-delivery/README.md`.
#![expect(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a command-line service prints its banner, tokens and errors"
)]

mod app;
mod fleet;
mod host_id;
mod publish;
#[path = "../common/tls.rs"]
mod tls;
mod tokens;
mod ui;
mod views;

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use portcullis::acl::{Acl, AclPolicy, MemoryAclStore, RoleBinding, Roles};
use portcullis::audit::{AuditLog, AuditOptions};
use portcullis::delivery::{
    ArtifactStore, FolderStore, Pipeline, PipelineStore, SqlitePipelineStore, Validator,
};
use portcullis::gate::Gate;
use portcullis::policy::{
    Algorithm, BundleLimits, BundleVerifier, EvalLimits, RolloutConfig, SpiffePattern,
    VerificationKey,
};
use portcullis::token::AuthChain;
use portcullis::{Action, AuthMethod, Principal, PrincipalKind, ResourceKind, SystemClock};
use serde::Deserialize;

use crate::tokens::{CONFIG_TOKEN, PrincipalTokens, TokenDigest, TokenTable};

// A fleet's polls and reports allocate on many threads; as in deploy-gate, glibc malloc is
// a visible share of the CPU under load.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(
    name = "policy-delivery",
    version,
    about = "Stages policy bundles across a fleet: publish, validate, serve per host, promote."
)]
struct Cli {
    /// The configuration file (TOML).
    #[arg(long, short, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Listen here instead of the configured address (e.g. 127.0.0.1:0 for any port).
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
    /// Log level: error, warn, info, debug, trace.
    #[arg(long, default_value = "info")]
    log_level: tracing::Level,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
#[expect(
    clippy::large_enum_variant,
    reason = "parsed once from the command line; its size does not matter"
)]
enum Command {
    /// Prints a new random token and the `token_sha256` to configure for it.
    NewToken,
    /// Reads a token from standard input and prints its `token_sha256`.
    HashToken,
    /// Packs a bundle folder (optionally signing it) and uploads it as a new revision.
    Publish(publish::PublishArgs),
}

/// The configuration file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default = "default_listen")]
    listen: String,
    /// `pipeline.db` and (unless `[artifacts]` says otherwise) `artifacts/` live here.
    #[serde(default = "default_data_dir")]
    data_dir: PathBuf,
    /// Where revisions are stored: `data_dir/artifacts` if absent.
    artifacts: Option<ArtifactsConfig>,
    /// Pipeline state in PostgreSQL, shared by several instances (instead of
    /// `data_dir/pipeline.db`).
    #[serde(default)]
    store: Option<StoreConfig>,
    /// The pipelines (the same file format as the sidecar's `[rollout] config`).
    pipelines: PathBuf,
    /// How often the scheduler runs `tick`.
    #[serde(default = "default_tick")]
    tick_seconds: u64,
    /// The largest bundle tarball accepted.
    #[serde(default = "default_bundle_bytes")]
    max_bundle_bytes: usize,
    audit: AuditConfig,
    /// Hosts, by SPIFFE ID: each known by its client certificate (an X.509-SVID, with
    /// `[tls]`), by a token bound to its SPIFFE ID, or both.
    #[serde(default)]
    hosts: Vec<HostConfig>,
    /// Publishers and operators.
    #[serde(default)]
    principals: Vec<PrincipalConfig>,
    #[serde(default)]
    acl: AclSection,
    /// Keys bundle signatures are verified with (as the sidecar's `[keys.ID]`).
    #[serde(default)]
    keys: BTreeMap<String, KeyConfig>,
    /// Bundles that must be signed, by name (as the sidecar's `[bundles.signing]`).
    #[serde(default)]
    signing: BTreeMap<String, SigningConfig>,
    /// The data paths each bundle's manifest roots may claim, by bundle (default: the
    /// bundle's own name).
    #[serde(default)]
    roots: BTreeMap<String, Vec<String>>,
    /// Serving over TLS with this service's certificate; with `client_certs`, hosts
    /// authenticate with their SVIDs. Absent: plain HTTP.
    tls: Option<tls::TlsConfig>,
    /// How long download records and how many events are kept.
    #[serde(default)]
    retention: RetentionConfig,
}

/// `[retention]`: what the hourly prune keeps (downloads and hosts' counts of the
/// candidates in flight are always kept).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RetentionConfig {
    /// Download records older than this many days are deleted.
    #[serde(default = "default_fetch_days")]
    fetch_days: u64,
    /// Each artifact keeps its newest this-many history events.
    #[serde(default = "default_events_per_artifact")]
    events_per_artifact: u32,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            fetch_days: default_fetch_days(),
            events_per_artifact: default_events_per_artifact(),
        }
    }
}

impl RetentionConfig {
    /// Refuses 0, which would keep nothing (every download record, the whole history).
    fn check(&self) -> Result<(), String> {
        if self.fetch_days == 0 || self.events_per_artifact == 0 {
            return Err(
                "[retention] fetch_days and events_per_artifact keep nothing at 0: \
                        at least 1 (defaults 30 and 10000)"
                    .into(),
            );
        }
        Ok(())
    }
}

fn default_fetch_days() -> u64 {
    30
}
fn default_events_per_artifact() -> u32 {
    10_000
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditConfig {
    /// `sqlite://FILE`, `jsonl://DIR` or `postgres://…` (relative to the configuration).
    url: String,
}

/// `[artifacts]`: the artifact store, chosen by `store`.
#[derive(Debug, Deserialize)]
#[serde(tag = "store", rename_all = "lowercase", deny_unknown_fields)]
enum ArtifactsConfig {
    /// A local folder: `path` (relative to the configuration), else `data_dir/artifacts`.
    Folder { path: Option<PathBuf> },
    /// An S3 bucket (S3-compatible servers too), credentials from the standard AWS chain.
    #[cfg_attr(
        not(feature = "delivery-s3"),
        expect(
            dead_code,
            reason = "read by the S3 store, built with feature delivery-s3"
        )
    )]
    S3 {
        bucket: String,
        /// Empty or ending in `/`.
        #[serde(default)]
        prefix: String,
        /// Else `AWS_REGION` or the profile's.
        region: Option<String>,
        /// Else AWS's own endpoint (or `AWS_ENDPOINT_URL`).
        endpoint_url: Option<String>,
        #[serde(default)]
        force_path_style: bool,
        #[serde(default = "default_s3_timeout")]
        timeout_seconds: u64,
    },
}

/// `[store]`: several instances on one PostgreSQL database (a build with `--features
/// postgres`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(
    not(feature = "postgres"),
    expect(dead_code, reason = "read only when built with the postgres feature")
)]
struct StoreConfig {
    /// `postgres://…`.
    url: String,
    /// The revisions' tarballs in one folder every instance sees (a shared volume),
    /// relative to the configuration — or, instead, `[artifacts] store = "s3"`.
    artifacts_dir: Option<PathBuf>,
    /// Connections in the pool (default 8).
    #[serde(default = "default_connections")]
    max_connections: u32,
    /// Seconds between the periodic reads of the pipeline state behind the notifications
    /// (default 1): how stale a read may be when notifications are lost.
    #[serde(default = "default_refresh")]
    refresh_seconds: u64,
}

fn default_connections() -> u32 {
    8
}
fn default_refresh() -> u64 {
    1
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HostConfig {
    spiffe_id: String,
    /// The host's token, when it may use one (without, only its SVID identifies it).
    token_sha256: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PrincipalConfig {
    name: String,
    #[serde(default = "default_kind")]
    kind: String,
    token_sha256: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AclSection {
    /// `SUBJECT RESOURCE ROLE` lines, e.g. `user:ci artifact:authz PUBLISHER`.
    #[serde(default)]
    bindings: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyConfig {
    algorithm: String,
    key_file: PathBuf,
    scope: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SigningConfig {
    keyid: Option<String>,
    scope: Option<String>,
}

fn default_listen() -> String {
    "127.0.0.1:8282".into()
}
fn default_data_dir() -> PathBuf {
    "policy-delivery-data".into()
}
fn default_tick() -> u64 {
    10
}
fn default_bundle_bytes() -> usize {
    8 << 20
}
fn default_s3_timeout() -> u64 {
    30
}
fn default_kind() -> String {
    "user".into()
}

/// The actions on `artifact:NAME` and the role each needs (Teletraan's tiers).
pub(crate) const PUBLISH: Action = Action::from_static("publish");
pub(crate) const PROMOTE: Action = Action::from_static("promote");
pub(crate) const PAUSE: Action = Action::from_static("pause");
pub(crate) const RESUME: Action = Action::from_static("resume");
pub(crate) const ROLLBACK: Action = Action::from_static("rollback");

fn acl_policy() -> Result<AclPolicy, String> {
    let artifact: ResourceKind = "artifact".parse().map_err(|e| format!("{e}"))?;
    let mut builder = AclPolicy::builder(Roles::teletraan());
    for (action, role) in [
        (Action::READ, "READER"),
        (PUBLISH, "PUBLISHER"),
        (PROMOTE, "OPERATOR"),
        (PAUSE, "OPERATOR"),
        (RESUME, "OPERATOR"),
        (ROLLBACK, "OPERATOR"),
    ] {
        builder = builder
            .require_on(artifact.clone(), action, role)
            .map_err(|e| e.to_string())?;
    }
    Ok(builder.build())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::NewToken) => {
            return match tokens::new_token() {
                Ok(token) => {
                    println!("token        = {token}");
                    println!("token_sha256 = \"{}\"", TokenDigest::of(&token).to_hex());
                    ExitCode::SUCCESS
                }
                Err(err) => {
                    eprintln!("policy-delivery: {err}");
                    ExitCode::FAILURE
                }
            };
        }
        Some(Command::Publish(args)) => {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(err) => {
                    eprintln!("policy-delivery: cannot start the runtime: {err}");
                    return ExitCode::FAILURE;
                }
            };
            return match runtime.block_on(publish::publish(args)) {
                Ok(answer) => {
                    println!("{answer}");
                    ExitCode::SUCCESS
                }
                Err(err) => {
                    eprintln!("policy-delivery publish: {err}");
                    ExitCode::FAILURE
                }
            };
        }
        Some(Command::HashToken) => {
            let mut token = String::new();
            if let Err(err) = std::io::stdin().read_to_string(&mut token) {
                eprintln!("policy-delivery: standard input: {err}");
                return ExitCode::FAILURE;
            }
            println!("{}", TokenDigest::of(token.trim()).to_hex());
            return ExitCode::SUCCESS;
        }
        None => {}
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
            eprintln!("policy-delivery: cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("policy-delivery: {err}");
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

fn host_table(config: &Config) -> Result<TokenTable<String>, String> {
    let mut entries = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for host in &config.hosts {
        // One entry per host: two would be two credentials for one identity, and the list
        // the UI shows would count the host twice.
        if !seen.insert(host.spiffe_id.as_str()) {
            return Err(format!(
                "[[hosts]] spiffe_id {:?} is listed twice: one entry per host",
                host.spiffe_id
            ));
        }
        let pattern: Result<SpiffePattern, _> = host.spiffe_id.parse();
        if pattern.is_err() || host.spiffe_id.contains('*') {
            return Err(format!(
                "[[hosts]] spiffe_id {:?} is not a SPIFFE ID (spiffe://<trust domain>/<path>)",
                host.spiffe_id
            ));
        }
        let Some(token) = &host.token_sha256 else {
            continue;
        };
        let digest =
            TokenDigest::parse(token).map_err(|e| format!("[[hosts]] {}: {e}", host.spiffe_id))?;
        entries.push((digest, host.spiffe_id.clone()));
    }
    TokenTable::new(entries).map_err(|e| format!("[[hosts]]: {e}"))
}

/// Checks that every host can be identified: a host without `token_sha256` needs `[tls]`
/// asking for client certificates and a bundle of its trust domain. `[[tls.groups]]` is
/// refused: a client certificate makes no principal here (operators use tokens), it only
/// identifies a host.
fn check_host_identities(config: &Config) -> Result<(), String> {
    if let Some(tls) = &config.tls
        && !tls.groups.is_empty()
    {
        return Err(
            "[[tls.groups]] is not used by policy-delivery: a client certificate \
                    identifies a host ([[hosts]]), and operators authenticate with tokens"
                .into(),
        );
    }
    let asks = config
        .tls
        .as_ref()
        .is_some_and(|t| t.client_certs != tls::ClientCerts::Off);
    for host in config.hosts.iter().filter(|h| h.token_sha256.is_none()) {
        if !asks {
            return Err(format!(
                "[[hosts]] {} has no token_sha256, so only its client certificate could \
                 identify it: configure [tls] with client_certs = \"optional\" or \"required\", \
                 or give it a token",
                host.spiffe_id
            ));
        }
        let domain = host
            .spiffe_id
            .strip_prefix("spiffe://")
            .and_then(|rest| rest.split('/').next())
            .unwrap_or_default();
        if !config
            .tls
            .as_ref()
            .is_some_and(|t| t.trust_domains.contains_key(domain))
        {
            return Err(format!(
                "[[hosts]] {} has no token_sha256 and [tls.trust_domains] has no bundle for \
                 {domain:?}: its SVID could never verify",
                host.spiffe_id
            ));
        }
    }
    Ok(())
}

fn principal_table(config: &Config) -> Result<TokenTable<Principal>, String> {
    let mut entries = Vec::new();
    for p in &config.principals {
        let kind = match p.kind.as_str() {
            "user" => PrincipalKind::User,
            "service" => PrincipalKind::Service,
            other => {
                return Err(format!(
                    "[[principals]] {}: kind is user or service, not {other:?}",
                    p.name
                ));
            }
        };
        let method: AuthMethod = CONFIG_TOKEN;
        let principal = Principal::builder(kind, &p.name, method)
            .build()
            .map_err(|e| format!("[[principals]] {}: {e}", p.name))?;
        let digest = TokenDigest::parse(&p.token_sha256)
            .map_err(|e| format!("[[principals]] {}: {e}", p.name))?;
        entries.push((digest, principal));
    }
    TokenTable::new(entries).map_err(|e| format!("[[principals]]: {e}"))
}

fn validator(config: &Config, base: &Path) -> Result<Validator, String> {
    // The sidecar's limits: what it would refuse, the server refuses first.
    let mut validator = Validator::new(BundleLimits::default(), EvalLimits::default());
    for (bundle, signing) in &config.signing {
        if config.keys.is_empty() {
            return Err(format!("[signing.{bundle}] needs at least one [keys.ID]"));
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
            let mut material = if algorithm.is_hmac() {
                VerificationKey::hmac(algorithm, material.trim_ascii())
            } else {
                VerificationKey::from_pem(algorithm, &material)
            }
            .map_err(|e| format!("[keys.{id}]: {e}"))?;
            if let Some(scope) = &key.scope {
                material = material.with_scope(scope);
            }
            verifier = verifier.key(id, material);
        }
        if let Some(id) = &signing.keyid {
            if !config.keys.contains_key(id) {
                return Err(format!(
                    "[signing.{bundle}] keyid {id:?} is not a configured [keys.ID]"
                ));
            }
            verifier = verifier.key_id(id);
        }
        if let Some(scope) = &signing.scope {
            verifier = verifier.scope(scope);
        }
        validator = validator.require_signature(bundle, Arc::new(verifier));
    }
    Ok(validator)
}

/// `[roots]`: what each bundle's manifest roots may claim (default its own name), so that no
/// publisher of one artifact can claim another's data; overlaps the configuration itself
/// makes are allowed, with a warning.
fn namespaces(
    mut validator: Validator,
    config: &Config,
    pipelines: &RolloutConfig,
) -> Result<Validator, String> {
    let bundles: Vec<&String> = pipelines
        .artifacts
        .iter()
        .flat_map(|a| &a.bundles)
        .collect();
    if let Some(unknown) = config.roots.keys().find(|b| !bundles.contains(b)) {
        return Err(format!(
            "[roots] names bundle {unknown:?}, which no pipeline serves"
        ));
    }
    let mut claimed: Vec<(String, &str)> = Vec::new();
    for bundle in bundles {
        let roots = config
            .roots
            .get(bundle)
            .cloned()
            .unwrap_or_else(|| vec![bundle.clone()]);
        if roots.is_empty() {
            return Err(format!("[roots] {bundle}: at least one data path"));
        }
        for root in &roots {
            let valid = !root.is_empty()
                && root.split('/').all(|part| {
                    !part.is_empty()
                        && part
                            .chars()
                            .all(|c| c.is_alphanumeric() || c == '_' || c == '-')
                });
            if !valid {
                return Err(format!(
                    "[roots] {bundle}: {root:?} is not a data path (slash-separated names)"
                ));
            }
            let within = |a: &str, b: &str| {
                a == b || a.strip_prefix(b).is_some_and(|rest| rest.starts_with('/'))
            };
            if let Some((_, other)) = claimed
                .iter()
                .find(|(r, _)| within(r, root) || within(root, r))
            {
                // Configured so: the publishers of both may write there. A host that loads
                // both bundles refuses the second (OPA's overlapping roots).
                tracing::warn!(
                    first = other,
                    second = bundle.as_str(),
                    root = root.as_str(),
                    "[roots]: two bundles claim overlapping data paths"
                );
            }
        }
        for root in &roots {
            claimed.push((root.clone(), bundle.as_str()));
        }
        validator = validator.namespace(bundle.clone(), roots);
    }
    Ok(validator)
}

/// The artifact store `[artifacts]` chooses; an S3 bucket is checked (exists, reachable
/// with these credentials) before the server starts.
async fn artifact_store(
    config: &Config,
    base: &Path,
    data_dir: &Path,
) -> Result<Arc<dyn ArtifactStore>, String> {
    match &config.artifacts {
        None | Some(ArtifactsConfig::Folder { path: None }) => Ok(Arc::new(
            FolderStore::open(data_dir.join("artifacts")).map_err(|e| e.to_string())?,
        )),
        Some(ArtifactsConfig::Folder { path: Some(path) }) => Ok(Arc::new(
            FolderStore::open(resolve(base, path)).map_err(|e| e.to_string())?,
        )),
        #[cfg(feature = "delivery-s3")]
        Some(ArtifactsConfig::S3 {
            bucket,
            prefix,
            region,
            endpoint_url,
            force_path_style,
            timeout_seconds,
        }) => {
            use portcullis::delivery::{S3Options, S3Store};
            let mut options = S3Options::new(bucket)
                .with_prefix(prefix)
                .with_force_path_style(*force_path_style)
                .with_timeout(Duration::from_secs(*timeout_seconds))
                // The largest upload is the largest revision to read back.
                .with_max_object_bytes(u64::try_from(config.max_bundle_bytes).unwrap_or(u64::MAX));
            if let Some(region) = region {
                options = options.with_region(region);
            }
            if let Some(url) = endpoint_url {
                options = options.with_endpoint_url(url);
            }
            let store = S3Store::connect(options)
                .await
                .map_err(|e| format!("[artifacts] {e}"))?;
            Ok(Arc::new(store))
        }
        #[cfg(not(feature = "delivery-s3"))]
        Some(ArtifactsConfig::S3 { .. }) => Err(
            "[artifacts] store = \"s3\" needs policy-delivery built with --features delivery-s3"
                .into(),
        ),
    }
}

async fn run(cli: Cli) -> Result<(), String> {
    let Some(path) = &cli.config else {
        return Err("--config FILE is required (see examples/policy-delivery/README.md)".into());
    };
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let mut config: Config = toml::from_str(&text).map_err(|e| format!("configuration: {e}"))?;
    if let Some(listen) = cli.listen {
        config.listen = listen;
    }
    let pipelines_path = resolve(&base, &config.pipelines);
    let pipelines: RolloutConfig = toml::from_str(
        &std::fs::read_to_string(&pipelines_path)
            .map_err(|e| format!("{}: {e}", pipelines_path.display()))?,
    )
    .map_err(|e| format!("{}: {e}", pipelines_path.display()))?;
    // [tls] loads (and fails) before any store is opened.
    check_host_identities(&config)?;
    let tls = match config.tls.as_mut() {
        Some(section) => {
            section.resolve_paths(&base);
            Some(section.open().map_err(|e| e.to_string())?)
        }
        None => None,
    };
    config.retention.check()?;
    let hosts = host_table(&config)?;
    let mut host_ids: Vec<String> = config.hosts.iter().map(|h| h.spiffe_id.clone()).collect();
    host_ids.sort();
    host_ids.dedup();
    let principals = principal_table(&config)?;
    if let Some(shared) = hosts.digests().find(|d| principals.contains(d)) {
        return Err(format!(
            "token_sha256 {} is both a host's and a principal's: give each its own token",
            shared.to_hex()
        ));
    }
    let validator = namespaces(validator(&config, &base)?, &config, &pipelines)?;

    let data_dir = resolve(&base, &config.data_dir);
    std::fs::create_dir_all(&data_dir).map_err(|e| format!("{}: {e}", data_dir.display()))?;
    let shared = match &config.store {
        Some(store) => Some(fleet::Shared::connect(store, &base, &config.audit.url).await?),
        None => None,
    };
    let store: Arc<dyn PipelineStore> = match &shared {
        Some(shared) => shared.store(),
        None => Arc::new(
            SqlitePipelineStore::open(&format!(
                "sqlite://{}",
                data_dir.join("pipeline.db").display()
            ))
            .await
            .map_err(|e| e.to_string())?,
        ),
    };
    // Several instances must see one artifact store: a shared folder ([store]
    // artifacts_dir) or one named in [artifacts] (S3, or a folder on a shared volume).
    let shared_dir = shared.as_ref().and_then(fleet::Shared::artifacts_dir);
    let artifacts: Arc<dyn ArtifactStore> = match (&shared, shared_dir, &config.artifacts) {
        (_, Some(_), Some(_)) => {
            return Err(
                "[store] artifacts_dir and [artifacts] both say where revisions are: keep one"
                    .into(),
            );
        }
        (_, Some(dir), None) => Arc::new(FolderStore::open(dir).map_err(|e| e.to_string())?),
        (Some(_), None, None | Some(ArtifactsConfig::Folder { path: None })) => {
            return Err(
                "[store]: several instances need one artifact store: [store] \
                        artifacts_dir (a folder every instance sees) or [artifacts] \
                        store = \"s3\""
                    .into(),
            );
        }
        _ => artifact_store(&config, &base, &data_dir).await?,
    };
    let pipeline = Arc::new(
        Pipeline::open(
            pipelines,
            Arc::new(SystemClock),
            store,
            artifacts,
            validator,
        )
        .await
        .map_err(|e| format!("{}: {e}", pipelines_path.display()))?,
    );
    // With [store]: reads follow the other instances' changes (kept until the end).
    let _following = match &shared {
        Some(shared) => Some(shared.follow(&pipeline).await?),
        None => None,
    };

    let bindings = config
        .acl
        .bindings
        .iter()
        .map(|line| {
            line.parse::<RoleBinding>()
                .map_err(|e| format!("[acl] bindings {line:?}: {e}"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let acl_store = MemoryAclStore::with_bindings(bindings).map_err(|e| format!("[acl] {e}"))?;
    let acl = Acl::open(Arc::new(acl_store), acl_policy()?)
        .await
        .map_err(|e| format!("[acl] {e}"))?;
    let audit = Arc::new(
        AuditLog::open(&config.audit.url, &base, AuditOptions::default())
            .await
            .map_err(|e| format!("[audit] {e}"))?,
    );
    let gate = Gate::builder()
        .authenticator(Arc::new(AuthChain::new(vec![Arc::new(PrincipalTokens(
            principals,
        ))])))
        .authorizer(Arc::new(acl.authorizer()))
        .audit(audit.clone())
        .build()
        .map_err(|e| format!("[audit] {e}"))?;

    let app = Arc::new(app::App {
        pipeline,
        gate,
        hosts,
        max_bundle_bytes: config.max_bundle_bytes,
        audit: audit.clone(),
        host_ids,
    });
    tokio::spawn(app::scheduler(
        app.clone(),
        Duration::from_secs(config.tick_seconds.max(1)),
    ));
    tokio::spawn(app::prune(
        app.clone(),
        Duration::from_secs(config.retention.fetch_days.saturating_mul(86_400)),
        config.retention.events_per_artifact,
    ));
    let listener = tokio::net::TcpListener::bind(&config.listen)
        .await
        .map_err(|e| format!("listen on {}: {e}", config.listen))?;
    let address = listener.local_addr().map_err(|e| e.to_string())?;
    let served = match tls {
        Some(tls) => {
            println!("LISTENING https://{address}");
            serve_tls(&tls, listener, app::router(app)).await
        }
        None => {
            tls::warn_if_plain_and_exposed(&address, "policy-delivery");
            println!("LISTENING http://{address}");
            axum::serve(listener, app::router(app))
                .with_graceful_shutdown(async {
                    let _ = tokio::signal::ctrl_c().await;
                })
                .await
                .map_err(|e| e.to_string())
        }
    };
    if let Err(err) = audit.flush().await {
        tracing::error!(error = %err, "the audit log could not be flushed at shutdown");
    }
    served
}

/// Serves `router` over TLS per `[tls]` until Ctrl-C, with the identity files watched for
/// rotation. A verified client SVID is not made a principal: [`host_id::host_of`] decides
/// what it stands for (a configured host, or nothing).
#[cfg(feature = "tls")]
async fn serve_tls(
    tls: &tls::Tls,
    listener: tokio::net::TcpListener,
    router: axum::Router,
) -> Result<(), String> {
    let watch = tls.watch();
    let served = tls
        .server_with_peer_ids()
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
    _router: axum::Router,
) -> Result<(), String> {
    match *tls {}
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The README's TOML blocks, in order.
    fn readme_toml() -> Vec<String> {
        let mut blocks = Vec::new();
        let mut current: Option<String> = None;
        for line in include_str!("README.md").lines() {
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

    fn parse(text: &str) -> Result<Config, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    const MINIMAL: &str = "pipelines = \"pipelines.toml\"\n[audit]\nurl = \"sqlite://a.db\"\n";

    #[test]
    fn retention_has_defaults_and_refuses_typos() {
        let defaults = parse(MINIMAL).unwrap().retention;
        assert_eq!(
            (defaults.fetch_days, defaults.events_per_artifact),
            (30, 10_000)
        );
        let set = parse(&format!("{MINIMAL}[retention]\nfetch_days = 7\n")).unwrap();
        assert_eq!(
            (set.retention.fetch_days, set.retention.events_per_artifact),
            (7, 10_000)
        );
        assert!(parse(&format!("{MINIMAL}[retention]\nfetch_dayz = 7\n")).is_err());
        assert!(set.retention.check().is_ok());
        for zero in ["fetch_days = 0", "events_per_artifact = 0"] {
            let config = parse(&format!("{MINIMAL}[retention]\n{zero}\n")).unwrap();
            assert!(config.retention.check().is_err(), "{zero}");
        }
    }

    #[test]
    fn a_host_listed_twice_is_refused() {
        let host = |token: char| {
            format!(
                "[[hosts]]\nspiffe_id = \"spiffe://example.org/prod/a\"\ntoken_sha256 = \"{}\"\n",
                token.to_string().repeat(64)
            )
        };
        let once = parse(&format!("{MINIMAL}{}", host('a'))).unwrap();
        assert!(host_table(&once).is_ok());
        let twice = parse(&format!("{MINIMAL}{}{}", host('a'), host('b'))).unwrap();
        let err = host_table(&twice).unwrap_err();
        assert!(err.contains("listed twice"), "{err}");
    }

    #[test]
    fn artifacts_sections_parse_as_documented() {
        // No section: the folder in data_dir.
        assert!(parse(MINIMAL).unwrap().artifacts.is_none());
        let folder = parse(&format!(
            "{MINIMAL}[artifacts]\nstore = \"folder\"\npath = \"revisions\"\n"
        ))
        .unwrap();
        assert!(matches!(
            folder.artifacts,
            Some(ArtifactsConfig::Folder { path: Some(_) })
        ));
        // The README's S3 section, exactly.
        let s3 = readme_toml()
            .into_iter()
            .find(|block| block.contains("store = \"s3\""))
            .expect("the README shows an S3 [artifacts] section");
        let config = parse(&format!("{MINIMAL}{s3}")).unwrap();
        let Some(ArtifactsConfig::S3 {
            bucket,
            prefix,
            region,
            endpoint_url,
            force_path_style,
            timeout_seconds,
        }) = config.artifacts
        else {
            panic!("not an S3 store: {:?}", config.artifacts);
        };
        assert_eq!(
            (bucket.as_str(), prefix.as_str(), region.as_deref()),
            ("policy-artifacts", "delivery/", Some("eu-west-1"))
        );
        assert_eq!(
            (endpoint_url, force_path_style, timeout_seconds),
            (None, false, 30)
        );
        // Typos and unknown stores are refused, not ignored.
        for bad in [
            "[artifacts]\nstore = \"s4\"\n",
            "[artifacts]\nstore = \"s3\"\nbucket = \"b\"\nbukcet = \"c\"\n",
            "[artifacts]\nstore = \"folder\"\nbucket = \"b\"\n",
            "[artifacts]\nstore = \"s3\"\n",
        ] {
            assert!(parse(&format!("{MINIMAL}{bad}")).is_err(), "{bad}");
        }
    }
}
