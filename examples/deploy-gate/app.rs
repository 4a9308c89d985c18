//! The deploy service: stores, the gate and the HTTP routes, built from a [`Config`].

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use portcullis::acl::{
    Acl, AclError, AclStore, PageRequest, RoleBinding, RoleName, SqliteAclStore, Subject,
    SubjectKind,
};
use portcullis::approval::{
    ApprovalError, ApprovalRecord, ApprovalRule, Approvals, Approvers, DuoClient, DuoConfig,
    InAppFactor, RequestState, SecondFactor, SqliteApprovalStore, TotpConfig, TotpError,
    TotpFactor, TotpSecret, TotpSecretKey, TotpStore, VoteDecision,
};
use portcullis::audit::{
    AuditError, AuditLog, AuditOptions, AuditQuery, AuditSink, CheckpointFile, CheckpointSigner,
    ResourceScope,
};
use portcullis::directory::{Password, StaticDirectory};
use portcullis::gate::{Gate, GateError, GateRequest, RunError};
use portcullis::http::{AuthenticateLayer, CorrelationId, EdgeLayer, OutcomeDetail, guard};
use portcullis::token::{
    AuthChain, ChainResources, IssueRequest, PasswordLogin, SessionAlgorithm, SessionIssuer,
    SessionKey, SqliteTokenStore, TokenFilter, TokenKey, TokenKind, TokenOptions, TokenScope,
    Tokens,
};
use portcullis::{
    AccessRequest, Action, AuthMethod, Authorizer, Decision, DenyAll, DenyOverrides, Principal,
    PrincipalKind, Resource, ResourceKind, from_fn,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::config::{Config, TotpSecrets};
use crate::deploys::{Deploy, DeployState, Deploys, NewDeploy};

/// Creating a personal token for oneself.
pub(crate) const CREATE_PERSONAL_TOKEN: Action = Action::from_static("create_personal_token");
/// Revoking one of one's own personal tokens.
pub(crate) const REVOKE_PERSONAL_TOKEN: Action = Action::from_static("revoke_personal_token");
/// Enrolling (or confirming) one's own TOTP secret.
pub(crate) const ENROLL_TOTP: Action = Action::from_static("enroll_totp");
/// The sign-ins that count as a person at the keyboard: a long-lived personal token confirms
/// no approval and enrolls no second factor.
const INTERACTIVE: [AuthMethod; 2] = [AuthMethod::OIDC, AuthMethod::ISSUED_JWT];
/// The issuer named in TOTP enrollment URIs (what authenticator apps show).
const TOTP_ISSUER: &str = "deploy-gate";
/// The resource kind of a person (for self-service actions).
pub(crate) const USER: ResourceKind = ResourceKind::from_static("user");
const MAX_TEXT: usize = 1000;
const MAX_LIST: u32 = 500;

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StartError {
    /// A configuration value is wrong.
    #[error("configuration: {0}")]
    Config(String),
    /// A store could not be opened.
    #[error("{what}: {message}")]
    Store {
        /// Which store.
        what: &'static str,
        /// Why.
        message: String,
    },
}

fn store_error(what: &'static str) -> impl Fn(&dyn std::fmt::Display) -> StartError {
    move |e| StartError::Store {
        what,
        message: e.to_string(),
    }
}

/// A refusal or failure as an HTTP answer: `{"error": code, "message": text}`.
#[derive(Debug)]
pub(crate) enum ApiError {
    /// From the gate (401/403/428/202/503…).
    Gate(GateError),
    /// Anything else, with its status.
    Status(StatusCode, &'static str, String),
}

impl ApiError {
    fn bad_request(message: impl Into<String>) -> Self {
        ApiError::Status(StatusCode::BAD_REQUEST, "bad_request", message.into())
    }

    fn not_found(message: impl Into<String>) -> Self {
        ApiError::Status(StatusCode::NOT_FOUND, "not_found", message.into())
    }

    fn unavailable(message: impl std::fmt::Display) -> Self {
        tracing::error!(error = %message, "store failure");
        ApiError::Status(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_unavailable",
            "a store is unavailable; nothing was changed".into(),
        )
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ApiError::Gate(err) => err.fmt(f),
            ApiError::Status(_, _, message) => f.write_str(message),
        }
    }
}

impl From<GateError> for ApiError {
    fn from(err: GateError) -> Self {
        ApiError::Gate(err)
    }
}

impl From<AclError> for ApiError {
    fn from(err: AclError) -> Self {
        match err {
            AclError::Forbidden { reason } => ApiError::Gate(GateError::Forbidden(reason)),
            AclError::BindingNotFound { .. } => ApiError::not_found(err.to_string()),
            AclError::DuplicateBinding { .. } => {
                ApiError::Status(StatusCode::CONFLICT, "conflict", err.to_string())
            }
            AclError::Store(_) => ApiError::unavailable(err),
            other => ApiError::bad_request(other.to_string()),
        }
    }
}

impl From<portcullis::token::AuthError> for ApiError {
    fn from(err: portcullis::token::AuthError) -> Self {
        use portcullis::token::AuthError;
        match err {
            AuthError::Conflict(_) => {
                ApiError::Status(StatusCode::CONFLICT, "conflict", err.to_string())
            }
            AuthError::Store(_) | AuthError::Crypto(_) => ApiError::unavailable(err),
            other => ApiError::bad_request(other.to_string()),
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(err: sqlx::Error) -> Self {
        ApiError::unavailable(err)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            ApiError::Gate(err) => err.into_response(),
            ApiError::Status(status, code, message) => {
                (status, Json(json!({ "error": code, "message": message }))).into_response()
            }
        }
    }
}

type ApiResult<T> = Result<T, ApiError>;

/// Everything the handlers share.
#[derive(Debug)]
pub(crate) struct AppState {
    gate: Arc<Gate>,
    acl: Option<Arc<Acl>>,
    tokens: Arc<Tokens>,
    deploys: Deploys,
    login: Option<PasswordLogin>,
    audit: Option<Arc<AuditLog>>,
    production: Vec<String>,
    factors: Vec<String>,
    totp: Option<Arc<TotpFactor>>,
}

type Shared = State<Arc<AppState>>;

/// The service, ready to serve.
#[derive(Debug)]
pub(crate) struct App {
    /// The routes.
    pub(crate) router: Router,
    /// The bootstrap admin's token, the first time it is created.
    pub(crate) bootstrap: Option<(String, String)>,
    /// What is switched off, for the startup banner.
    pub(crate) closed: Vec<&'static str>,
    /// The audit log, flushed at shutdown: outcomes are written after their answers.
    pub(crate) audit: Option<Arc<AuditLog>>,
    /// Its signed checkpoints (`[audit] checkpoint_dir`), the last written at shutdown.
    pub(crate) checkpoints: Option<AuditCheckpoints>,
    /// What keeps a fleet instance current (`[store]`); nothing for one instance.
    pub(crate) _background: Background,
}

/// Keys that must survive restarts, kept in `data_dir/secrets.toml` (mode 0600).
#[derive(Serialize, Deserialize)]
struct Secrets {
    token_key: String,
    receipt_key: String,
    session_key: String,
    /// Seals enrolled TOTP secrets at rest (AES-256-GCM); added to older files on start.
    #[serde(default)]
    totp_key: Option<String>,
    /// The key of `[audit] redact` HMACs, when the keys are shared by a fleet (`[store]`);
    /// one instance keeps it in `data_dir/audit-redact.key` instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    audit_redact_key: Option<String>,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secrets(<redacted>)")
    }
}

impl Secrets {
    fn load_or_create(dir: &Path) -> Result<Secrets, StartError> {
        let path = dir.join("secrets.toml");
        let io = store_error("secrets file");
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                let mut secrets: Secrets = toml::from_str(&text).map_err(|e| io(&e))?;
                if secrets.totp_key.is_none() {
                    // A data folder from before TOTP enrollment: add the key, keep the rest.
                    let (_, totp_key) = TotpSecretKey::generate().map_err(|e| io(&e))?;
                    secrets.totp_key = Some(totp_key);
                    let text = toml::to_string(&secrets).map_err(|e| io(&e))?;
                    let fresh = dir.join("secrets.toml.new");
                    let _ = std::fs::remove_file(&fresh);
                    write_private(&fresh, &text).map_err(|e| io(&e))?;
                    std::fs::rename(&fresh, &path).map_err(|e| io(&e))?;
                }
                Ok(secrets)
            }
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                let secrets = Secrets::generate(false).map_err(|e| io(&e))?;
                let text = toml::to_string(&secrets).map_err(|e| io(&e))?;
                write_private(&path, &text).map_err(|e| io(&e))?;
                Ok(secrets)
            }
            Err(err) => Err(io(&err)),
        }
    }
}

impl Secrets {
    /// Fresh keys; with `redact_key`, the audit redaction key among them (a fleet's).
    fn generate(redact_key: bool) -> Result<Secrets, String> {
        let random = |bytes: &mut [u8]| {
            aws_lc_rs::rand::SecureRandom::fill(&aws_lc_rs::rand::SystemRandom::new(), bytes)
                .map_err(|_| "the system random source failed".to_owned())
        };
        let (_, token_key) = TokenKey::generate().map_err(|e| e.to_string())?;
        let mut receipt = [0u8; 32];
        random(&mut receipt)?;
        let session = SessionKey::generate(SessionAlgorithm::EdDSA).map_err(|e| e.to_string())?;
        let (_, totp_key) = TotpSecretKey::generate().map_err(|e| e.to_string())?;
        let audit_redact_key = if redact_key {
            let mut bytes = [0u8; 32];
            random(&mut bytes)?;
            Some(hex::encode(bytes))
        } else {
            None
        };
        Ok(Secrets {
            token_key,
            receipt_key: hex::encode(receipt),
            session_key: hex::encode(session.secret_material()),
            totp_key: Some(totp_key),
            audit_redact_key,
        })
    }
}

/// Where the state lives: SQLite files in the data dir (one instance, the default), or the
/// PostgreSQL `[store] url` names, shared by a fleet.
#[derive(Debug)]
enum Home {
    /// `data_dir/deploy-gate.db` (the audit log where `[audit] url` says).
    Local { db: String },
    /// `[store] url`.
    #[cfg(feature = "postgres")]
    Shared {
        url: String,
        fleet: Box<crate::fleet::Fleet>,
        timing: crate::fleet::Timing,
        key: Box<crate::fleet::StoreKey>,
    },
}

/// Tasks and connections that keep a fleet instance current: the `LISTEN` connections and
/// the refreshers they wake. Stopped when dropped.
#[derive(Debug, Default)]
pub(crate) struct Background {
    #[cfg(feature = "postgres")]
    token_changes: Option<portcullis::token::ChangeListener>,
    #[cfg(feature = "postgres")]
    acl_changes: Option<portcullis::acl::ChangeListener>,
    #[cfg(feature = "postgres")]
    tokens: Option<portcullis::token::TokenRefresher>,
    #[cfg(feature = "postgres")]
    acl: Option<portcullis::acl::AclRefresher>,
}

impl Home {
    async fn open(config: &Config, dir: &Path) -> Result<Home, StartError> {
        let Some(store) = &config.store else {
            return Ok(Home::Local {
                db: sqlite_url(dir, "deploy-gate.db"),
            });
        };
        #[cfg(feature = "postgres")]
        {
            let fleet_error = |e: crate::fleet::FleetError| match e {
                crate::fleet::FleetError::Config(message) => {
                    StartError::Config(format!("[store] {message}"))
                }
                other => store_error("store")(&other),
            };
            let timing = crate::fleet::Timing::of(store).map_err(fleet_error)?;
            let key = crate::fleet::StoreKey::load(store).map_err(fleet_error)?;
            let fleet = crate::fleet::Fleet::connect(&store.url, timing.max_connections)
                .await
                .map_err(fleet_error)?;
            Ok(Home::Shared {
                url: store.url.clone(),
                fleet: Box::new(fleet),
                timing,
                key: Box::new(key),
            })
        }
        #[cfg(not(feature = "postgres"))]
        {
            let _ = store;
            Err(StartError::Config(
                "[store] url needs deploy-gate built with `--features postgres`".into(),
            ))
        }
    }

    /// The keys: `data_dir/secrets.toml`, or sealed in the shared database.
    async fn secrets(&mut self, dir: &Path) -> Result<Secrets, StartError> {
        match self {
            Home::Local { .. } => Secrets::load_or_create(dir),
            #[cfg(feature = "postgres")]
            Home::Shared { fleet, key, .. } => {
                let err = store_error("store keys");
                let generate =
                    || toml::to_string(&Secrets::generate(true)?).map_err(|e| e.to_string());
                let text = fleet.keys(key, generate).await.map_err(|e| err(&e))?;
                toml::from_str(&text).map_err(|e| err(&e))
            }
        }
    }

    #[cfg(feature = "postgres")]
    fn pool_size(&self) -> u32 {
        match self {
            Home::Local { .. } => 4,
            Home::Shared { timing, .. } => timing.max_connections,
        }
    }

    #[cfg_attr(
        not(feature = "postgres"),
        expect(
            unused_variables,
            reason = "only a fleet listens for changes or shares keys"
        )
    )]
    async fn token_store(
        &self,
        background: &mut Background,
    ) -> Result<Arc<dyn portcullis::token::TokenStore>, StartError> {
        let err = store_error("token store");
        match self {
            Home::Local { db } => Ok(Arc::new(
                SqliteTokenStore::connect(db).await.map_err(|e| err(&e))?,
            )),
            #[cfg(feature = "postgres")]
            Home::Shared { url, .. } => {
                let store = portcullis::token::PostgresTokenStore::connect(url, self.pool_size())
                    .await
                    .map_err(|e| err(&e))?;
                // Listening before the first load: nothing committed after it is missed.
                background.token_changes = Some(store.listen().await.map_err(|e| err(&e))?);
                Ok(Arc::new(store))
            }
        }
    }

    #[cfg_attr(
        not(feature = "postgres"),
        expect(
            unused_variables,
            reason = "only a fleet listens for changes or shares keys"
        )
    )]
    async fn acl_store(
        &self,
        background: &mut Background,
    ) -> Result<Arc<dyn AclStore>, StartError> {
        let err = store_error("role store");
        match self {
            Home::Local { db } => Ok(Arc::new(
                SqliteAclStore::connect(db).await.map_err(|e| err(&e))?,
            )),
            #[cfg(feature = "postgres")]
            Home::Shared { url, .. } => {
                let store = portcullis::acl::PostgresAclStore::connect(url, self.pool_size())
                    .await
                    .map_err(|e| err(&e))?;
                background.acl_changes = Some(store.listen().await.map_err(|e| err(&e))?);
                Ok(Arc::new(store))
            }
        }
    }

    /// The approval store, as the approvals and as the TOTP factor's store (enrollments
    /// and used steps), one database.
    async fn approval_store(
        &self,
    ) -> Result<
        (
            Arc<dyn portcullis::approval::ApprovalStore>,
            Arc<dyn TotpStore>,
        ),
        StartError,
    > {
        let err = store_error("approval store");
        match self {
            Home::Local { db } => {
                let store = Arc::new(
                    SqliteApprovalStore::connect(db)
                        .await
                        .map_err(|e| err(&e))?,
                );
                Ok((store.clone(), store))
            }
            #[cfg(feature = "postgres")]
            Home::Shared { url, .. } => {
                let store = Arc::new(
                    portcullis::approval::PostgresApprovalStore::connect(url, self.pool_size())
                        .await
                        .map_err(|e| err(&e))?,
                );
                Ok((store.clone(), store))
            }
        }
    }

    /// Where failed password logins are counted: `None` in this process (one instance), or
    /// the shared database, so a fleet allows a guesser the failures of one instance.
    async fn login_attempts(
        &self,
    ) -> Result<Option<Arc<dyn portcullis::token::LoginAttempts>>, StartError> {
        match self {
            Home::Local { .. } => Ok(None),
            #[cfg(feature = "postgres")]
            Home::Shared { fleet, .. } => {
                let attempts = portcullis::token::PostgresLoginAttempts::from_pool(fleet.pool())
                    .await
                    .map_err(|e| store_error("failed-login counts")(&e))?;
                Ok(Some(Arc::new(attempts)))
            }
        }
    }

    /// Where attempts at TOTP codes are counted against the wrong-code limit: `None` in
    /// this process (one instance), or the shared database.
    async fn totp_attempts(
        &self,
    ) -> Result<Option<Arc<dyn portcullis::approval::TotpAttempts>>, StartError> {
        match self {
            Home::Local { .. } => Ok(None),
            #[cfg(feature = "postgres")]
            Home::Shared { fleet, .. } => {
                let attempts = portcullis::approval::PostgresTotpAttempts::from_pool(fleet.pool())
                    .await
                    .map_err(|e| store_error("TOTP attempt counts")(&e))?;
                Ok(Some(Arc::new(attempts)))
            }
        }
    }

    async fn deploys(&self) -> Result<Deploys, StartError> {
        match self {
            Home::Local { db } => Deploys::open(db)
                .await
                .map_err(|e| store_error("deploy store")(&e)),
            #[cfg(feature = "postgres")]
            Home::Shared { fleet, .. } => Ok(Deploys::Postgres(fleet.deploys())),
        }
    }

    /// The audit log's URL: `[audit] url`; with a `[store]`, the store's database unless
    /// `[audit] url` names another PostgreSQL — a log in one instance's data dir would
    /// split the fleet's record into one chain per instance.
    fn audit_url(&self, audit: &crate::config::Audit) -> Result<String, StartError> {
        match self {
            Home::Local { .. } if audit.url.is_empty() => Err(StartError::Config(
                "[audit] url is required (sqlite://FILE, jsonl://DIR or postgres://…)".into(),
            )),
            Home::Local { .. } => Ok(audit.url.clone()),
            #[cfg(feature = "postgres")]
            Home::Shared { url, .. } => {
                if audit.url.is_empty() {
                    Ok(url.clone())
                } else if audit.url.starts_with("postgres://")
                    || audit.url.starts_with("postgresql://")
                {
                    Ok(audit.url.clone())
                } else {
                    Err(StartError::Config(format!(
                        "[audit] url = {:?} keeps the audit log on this instance while [store]                          shares everything else: leave [audit] url out (the log then goes to                          the store's database) or name a postgres:// URL",
                        audit.url
                    )))
                }
            }
        }
    }

    /// The key of `[audit] redact` HMACs when the fleet shares one.
    #[cfg_attr(
        not(feature = "postgres"),
        expect(
            unused_variables,
            reason = "only a fleet listens for changes or shares keys"
        )
    )]
    fn redact_key<'a>(&self, secrets: &'a Secrets) -> Option<&'a str> {
        match self {
            Home::Local { .. } => None,
            #[cfg(feature = "postgres")]
            Home::Shared { .. } => secrets.audit_redact_key.as_deref(),
        }
    }

    /// Keeps roles and tokens current: a fleet reloads them on every change any instance
    /// commits (`NOTIFY`), every `refresh_seconds` besides, and refuses them once they
    /// have not been reloaded for `max_staleness_seconds`. One instance changes them only
    /// itself and needs none of it.
    fn refresh(&self, background: &mut Background, tokens: &Arc<Tokens>, acl: Option<&Arc<Acl>>) {
        match self {
            Home::Local { .. } => {
                let _ = (background, tokens, acl);
            }
            #[cfg(feature = "postgres")]
            Home::Shared { timing, .. } => {
                if let Some(changes) = &background.token_changes {
                    background.tokens = Some(tokens.spawn_notified_refresher(
                        timing.refresh,
                        timing.max_staleness,
                        changes.wakeup(),
                    ));
                }
                if let (Some(acl), Some(changes)) = (acl, &background.acl_changes) {
                    background.acl = Some(acl.spawn_notified_refresher(
                        timing.refresh,
                        timing.max_staleness,
                        changes.wakeup(),
                    ));
                }
            }
        }
    }

    /// Started: the next instance may take its turn.
    async fn started(&mut self) -> Result<(), StartError> {
        match self {
            Home::Local { .. } => Ok(()),
            #[cfg(feature = "postgres")]
            Home::Shared { fleet, .. } => {
                fleet.started().await.map_err(|e| store_error("store")(&e))
            }
        }
    }
}

fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()
}

fn sqlite_url(dir: &Path, file: &str) -> String {
    format!("sqlite://{}", dir.join(file).display())
}

/// Opens the audit log `[audit]` describes (refusing one whose head does not verify), and
/// its checkpoints when `checkpoint_dir` is set.
async fn open_audit(
    config: &crate::config::Audit,
    url: &str,
    dir: &Path,
    shared_redact_key: Option<&str>,
) -> Result<(Arc<AuditLog>, Option<AuditCheckpoints>), StartError> {
    let err = store_error("audit log");
    let checkpoint_seconds = checkpoint_seconds(config)?;
    let mut options = AuditOptions::default();
    if let Some(ms) = config.outcome_linger_ms {
        if ms > crate::config::MAX_OUTCOME_LINGER_MS {
            return Err(StartError::Config(format!(
                "[audit] outcome_linger_ms = {ms} is above the maximum of {}",
                crate::config::MAX_OUTCOME_LINGER_MS
            )));
        }
        options.outcome_linger = Duration::from_millis(ms);
    }
    if !config.redact.is_empty() {
        let key = dir.join("audit-redact.key");
        let material = match shared_redact_key
            .map(str::to_owned)
            .ok_or(())
            .or_else(|()| std::fs::read_to_string(&key))
        {
            Ok(hex_key) => hex::decode(hex_key.trim()).map_err(|e| err(&e))?,
            Err(_) => {
                let mut bytes = [0u8; 32];
                aws_lc_rs::rand::SecureRandom::fill(
                    &aws_lc_rs::rand::SystemRandom::new(),
                    &mut bytes,
                )
                .map_err(|_| err(&"the system random source failed"))?;
                write_private(&key, &hex::encode(bytes)).map_err(|e| err(&e))?;
                bytes.to_vec()
            }
        };
        let paths: Vec<String> = config
            .redact
            .iter()
            .map(|p| format!("request.parameters.{p}"))
            .collect();
        options.redactor =
            Some(portcullis::audit::Redactor::new(&material, paths).map_err(|e| err(&e))?);
    }
    let log = match AuditLog::open(url, dir, options).await {
        Ok(log) => Arc::new(log),
        Err(AuditError::Invalid(message)) => {
            return Err(StartError::Config(format!("[audit] url: {message}")));
        }
        // Its newest records were changed while the service was stopped: refuse to start
        // rather than chain new records onto them.
        Err(e @ AuditError::HeadNotVerified(_)) => {
            let target = verify_target(url, dir)
                .map(|t| format!(" (portcullis-audit verify {t})"))
                .unwrap_or_default();
            return Err(err(&format!("{e}{target}")));
        }
        Err(e) => return Err(err(&e)),
    };
    let checkpoints = match &config.checkpoint_dir {
        Some(anchor) => {
            Some(AuditCheckpoints::start(config, anchor, checkpoint_seconds, dir, &log).await?)
        }
        None => None,
    };
    Ok((log, checkpoints))
}

/// `[audit] checkpoint_seconds`, checked (with the settings that need `checkpoint_dir`)
/// before anything is opened.
fn checkpoint_seconds(config: &crate::config::Audit) -> Result<u64, StartError> {
    if config.checkpoint_dir.is_none()
        && (config.checkpoint_seconds.is_some() || config.checkpoint_key.is_some())
    {
        return Err(StartError::Config(
            "[audit] checkpoint_seconds and checkpoint_key need checkpoint_dir".into(),
        ));
    }
    let seconds = config
        .checkpoint_seconds
        .unwrap_or(crate::config::DEFAULT_CHECKPOINT_SECONDS);
    if !(1..=crate::config::MAX_CHECKPOINT_SECONDS).contains(&seconds) {
        return Err(StartError::Config(format!(
            "[audit] checkpoint_seconds = {seconds} is not between 1 and {}",
            crate::config::MAX_CHECKPOINT_SECONDS
        )));
    }
    Ok(seconds)
}

/// What `portcullis-audit verify` takes for the log `url` names: the file or folder in the
/// data dir; none for PostgreSQL, whose URL may hold a password.
fn verify_target(url: &str, dir: &Path) -> Option<String> {
    if let Some(file) = url.strip_prefix("sqlite://") {
        return Some(format!("sqlite://{}", dir.join(file).display()));
    }
    url.strip_prefix("jsonl://")
        .map(|folder| dir.join(folder).display().to_string())
}

/// `[audit] checkpoint_dir`: signed checkpoints of the audit log's head, so that a log
/// truncated or rewritten and chained anew is found (by the next start, and by
/// `portcullis-audit verify --checkpoints`). Checked against the log at start, then written
/// at start, every `checkpoint_seconds` while the head moves, and at a clean shutdown.
#[derive(Debug)]
pub(crate) struct AuditCheckpoints {
    file: Arc<CheckpointFile>,
    seconds: u64,
    task: tokio::task::JoinHandle<()>,
}

impl AuditCheckpoints {
    async fn start(
        config: &crate::config::Audit,
        anchor: &Path,
        seconds: u64,
        dir: &Path,
        log: &Arc<AuditLog>,
    ) -> Result<AuditCheckpoints, StartError> {
        let err = store_error("audit checkpoints");
        let pkcs8 = match &config.checkpoint_key {
            Some(key) => std::fs::read(key).map_err(|e| {
                StartError::Config(format!(
                    "[audit] checkpoint_key: cannot read {}: {e} (make one with \
                     `portcullis-audit keygen --out {}`)",
                    key.display(),
                    key.display()
                ))
            })?,
            None => {
                let key = dir.join("audit-checkpoint.pk8");
                match std::fs::read(&key) {
                    Ok(pkcs8) => pkcs8,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        let (_, pkcs8) = CheckpointSigner::generate().map_err(|e| err(&e))?;
                        write_private_bytes(&key, &pkcs8).map_err(|e| err(&e))?;
                        pkcs8
                    }
                    Err(e) => return Err(err(&format!("{}: {e}", key.display()))),
                }
            }
        };
        let signer = CheckpointSigner::from_pkcs8(&pkcs8).map_err(|e| err(&e))?;
        let file = Arc::new(CheckpointFile::open(anchor, signer).map_err(|e| err(&e))?);
        if let (Ok(anchor), Ok(data)) = (anchor.canonicalize(), dir.canonicalize())
            && anchor.starts_with(&data)
        {
            tracing::warn!(
                checkpoint_dir = %anchor.display(),
                "[audit] checkpoint_dir is inside the data dir: whoever can rewrite the audit \
                 log there can rewrite its checkpoints too; keep them elsewhere"
            );
        }
        // Before anything is appended: nothing signed was cut off or rewritten since.
        let mismatch = |violation: &dyn std::fmt::Display| {
            err(&format!(
                "the audit log does not match its signed checkpoints in {}: {violation}. \
                 Nothing was written. Run `portcullis-audit verify` on the log with \
                 `--checkpoints {} --public-key {}`, then restore the log, or move the \
                 checkpoints aside to start anew from this log",
                anchor.display(),
                file.checkpoints_path().display(),
                hex::encode(file.public_key())
            ))
        };
        file.check(log)
            .await
            .map_err(|e| err(&e))?
            .map_err(|v| mismatch(&v))?;
        file.write(log)
            .await
            .map_err(|e| err(&e))?
            .map_err(|v| mismatch(&v))?;
        let task = tokio::spawn({
            let (file, log) = (file.clone(), log.clone());
            async move {
                let mut every = tokio::time::interval(Duration::from_secs(seconds));
                every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                // The first tick is now, and a checkpoint was just written.
                every.tick().await;
                loop {
                    every.tick().await;
                    write_checkpoint(&file, &log).await;
                }
            }
        });
        Ok(AuditCheckpoints {
            file,
            seconds,
            task,
        })
    }

    /// The start-up banner's lines: where the checkpoints are and the key that verifies
    /// them.
    pub(crate) fn banner(&self, audit_url: &str, dir: &Path) -> String {
        let key = hex::encode(self.file.public_key());
        let checkpoints = self.file.checkpoints_path();
        format!(
            "AUDIT_CHECKPOINTS {} public_key={key}\n  (signed every {} s and at shutdown; \
             verify with `portcullis-audit verify {} --checkpoints {} --public-key {key}`)",
            checkpoints.display(),
            self.seconds,
            verify_target(audit_url, dir).unwrap_or_else(|| "<audit log>".into()),
            checkpoints.display()
        )
    }

    /// Stops the periodic checkpoints and writes the last one, after the log was flushed.
    pub(crate) async fn finish(self, log: &AuditLog) {
        self.task.abort();
        write_checkpoint(&self.file, log).await;
    }
}

/// Signs and appends a checkpoint if the log verifies from the last one and has moved.
async fn write_checkpoint(file: &CheckpointFile, log: &AuditLog) {
    match file.write(log).await {
        Ok(Ok(_)) => {}
        Ok(Err(violation)) => tracing::error!(
            %violation,
            "the audit log no longer matches its last signed checkpoint; nothing was signed"
        ),
        Err(err) => tracing::error!(error = %err, "could not write an audit checkpoint"),
    }
}

/// Writes `bytes` to a new file only its owner can read (a key).
fn write_private_bytes(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// Script tokens act only inside the resource they were created for.
fn scope_veto(acl: &Arc<Acl>) -> impl Authorizer + 'static {
    let acl = acl.clone();
    from_fn("token-scope", move |r: &AccessRequest<'_>| {
        let Some(scope) = r.principal.claim("scope_resource").and_then(Value::as_str) else {
            return Decision::not_applicable("no token scope");
        };
        let Ok(scope) = scope.parse::<Resource>() else {
            return Decision::deny("the token's scope is unreadable");
        };
        let inside = *r.resource == scope
            || acl
                .policy()
                .hierarchy()
                .ancestors(r.resource)
                .contains(&scope);
        if inside {
            Decision::not_applicable("inside the token's scope")
        } else {
            Decision::deny(format!("the token is scoped to {scope}"))
        }
    })
}

/// People may create personal tokens and enroll TOTP for themselves.
fn self_service() -> impl Authorizer + 'static {
    from_fn("self-service", |r: &AccessRequest<'_>| {
        if (r.action == &CREATE_PERSONAL_TOKEN
            || r.action == &REVOKE_PERSONAL_TOKEN
            || r.action == &ENROLL_TOTP)
            && r.resource.kind() == &USER
            && r.resource.id() == r.principal.subject()
            && r.principal.kind() == PrincipalKind::User
        {
            Decision::allow("people manage their own tokens and second factor")
        } else {
            Decision::not_applicable("not a self-service action")
        }
    })
}

/// The TOTP factor: used steps and enrolled secrets in the approval store (so a code is
/// never accepted twice, across restarts and instances), secrets sealed under `key`, plus
/// any secrets from the configured file. Wrong codes are counted in `attempts` when the
/// instances of a fleet share it, else in this process.
fn totp_factor(
    path: Option<&Path>,
    store: Arc<dyn TotpStore>,
    key: TotpSecretKey,
    attempts: Option<Arc<dyn portcullis::approval::TotpAttempts>>,
) -> Result<TotpFactor, StartError> {
    let mut factor = TotpFactor::with_store(TotpConfig::default(), store, key)
        .map_err(|e| StartError::Config(e.to_string()))?;
    if let Some(attempts) = attempts {
        factor = factor.with_attempt_store(attempts);
    }
    if let Some(path) = path {
        let text = std::fs::read_to_string(path)
            .map_err(|e| StartError::Config(format!("{}: {e}", path.display())))?;
        let secrets: TotpSecrets = toml::from_str(&text)
            .map_err(|e| StartError::Config(format!("{}: {e}", path.display())))?;
        for (user, secret) in secrets {
            let bytes = hex::decode(secret.trim()).map_err(|e| {
                StartError::Config(format!("TOTP secret of {user} is not hex: {e}"))
            })?;
            let secret = TotpSecret::new(bytes).map_err(|e| StartError::Config(e.to_string()))?;
            factor = factor.enroll(user, secret);
        }
    }
    Ok(factor)
}

fn second_factor(
    name: &str,
    approval: &crate::config::Approval,
    totp: Option<&Arc<TotpFactor>>,
) -> Result<Arc<dyn SecondFactor>, StartError> {
    Ok(match name {
        // A long-lived personal token is not a second factor: only interactive logins count.
        "in_app" => Arc::new(InAppFactor::new(INTERACTIVE)),
        "totp" => match totp {
            Some(factor) => factor.clone(),
            None => return Err(StartError::Config("the TOTP factor is not set up".into())),
        },
        "duo" => {
            let duo = approval.duo.as_ref().ok_or_else(|| {
                StartError::Config("factor `duo` needs an [approval.duo] section".into())
            })?;
            let skey = std::env::var(&duo.skey_env).map_err(|_| {
                StartError::Config(format!(
                    "environment variable `{}` (the Duo secret key) is not set",
                    duo.skey_env
                ))
            })?;
            let mut config = DuoConfig::new(duo.host.clone(), duo.ikey.clone(), skey);
            config.scheme.clone_from(&duo.scheme);
            if let Some(secs) = duo.timeout_seconds {
                config.timeout = Duration::from_secs(secs);
            }
            Arc::new(DuoClient::new(config).map_err(|e| StartError::Config(e.to_string()))?)
        }
        other => {
            return Err(StartError::Config(format!(
                "unknown second factor `{other}`: use in_app, totp or duo"
            )));
        }
    })
}

/// Opens the stores and builds the service `config` describes.
pub(crate) async fn build(config: &Config) -> Result<App, StartError> {
    let dir = config.data_dir.as_path();
    std::fs::create_dir_all(dir).map_err(|e| store_error("data dir")(&e))?;
    // [store]: SQLite in the data dir, or a PostgreSQL shared by a fleet (whose instances
    // take turns from here to the end of start-up).
    let mut home = Home::open(config, dir).await?;
    let mut background = Background::default();
    let secrets = home.secrets(dir).await?;
    let mut closed = Vec::new();

    let key = TokenKey::from_hex(&secrets.token_key).map_err(|e| store_error("token key")(&e))?;
    let mut token_options = TokenOptions::default();
    if let Some(days) = config.authentication.as_ref().and_then(|a| a.token_days) {
        token_options.default_ttl = Duration::from_secs(days.saturating_mul(86_400));
    }
    let token_store = home.token_store(&mut background).await?;
    let tokens = Arc::new(
        Tokens::open(token_store, key, token_options)
            .await
            .map_err(|e| StartError::Config(e.to_string()))?,
    );
    let session_key = hex::decode(&secrets.session_key)
        .map_err(|e| store_error("session key")(&e))
        .and_then(|m| {
            SessionKey::from_secret(SessionAlgorithm::EdDSA, &m)
                .map_err(|e| store_error("session key")(&e))
        })?;
    let mut issuer = SessionIssuer::new(session_key, "deploy-gate", "deploy-gate")
        .map_err(|e| StartError::Config(e.to_string()))?;

    // [authentication]
    let (chain, login) = match &config.authentication {
        Some(auth) => {
            if let Some(secs) = auth.session_seconds {
                issuer = issuer
                    .with_ttl(Duration::from_secs(secs))
                    .map_err(|e| StartError::Config(e.to_string()))?;
            }
            let resources = ChainResources {
                tokens: Some(tokens.clone()),
                session_issuer: Some(issuer.clone()),
                ..ChainResources::default()
            };
            let chain = AuthChain::from_config(&auth.chain_config(), &resources)
                .await
                .map_err(|e| StartError::Config(e.to_string()))?;
            let login = match &auth.login {
                Some(login) => {
                    let text = std::fs::read_to_string(&login.users_file).map_err(|e| {
                        StartError::Config(format!("{}: {e}", login.users_file.display()))
                    })?;
                    let directory = StaticDirectory::from_toml(&text)
                        .map_err(|e| StartError::Config(e.to_string()))?;
                    let login = PasswordLogin::new(Arc::new(directory), issuer.clone());
                    Some(match home.login_attempts().await? {
                        Some(attempts) => login.with_attempt_store(attempts),
                        None => login,
                    })
                }
                None => None,
            };
            (chain, login)
        }
        None => {
            closed.push("authentication (every request is 401)");
            (AuthChain::new(Vec::new()), None)
        }
    };

    // [authorization]
    let mut bootstrap = None;
    let (authorizer, acl): (Arc<dyn Authorizer>, _) = match &config.authorization {
        Some(authz) => {
            let loaded = authz
                .acl
                .clone()
                .load()
                .map_err(|e| StartError::Config(e.to_string()))?;
            let store = home.acl_store(&mut background).await?;
            let acl = Arc::new(
                Acl::open(store, loaded.policy)
                    .await
                    .map_err(|e| store_error("role store")(&e))?,
            );
            let mut seed = loaded.bindings;
            if let Some(admin) = &authz.bootstrap_admin {
                seed.push(RoleBinding::new(
                    Subject::user(admin.clone()).map_err(|e| StartError::Config(e.to_string()))?,
                    Resource::SYSTEM,
                    RoleName::ADMIN,
                ));
                bootstrap = bootstrap_token(&tokens, admin).await?;
            }
            acl.seed(&seed)
                .await
                .map_err(|e| StartError::Config(e.to_string()))?;
            let policy = DenyOverrides::new()
                .with(acl.authorizer())
                .with(self_service())
                .with(scope_veto(&acl))
                .named("deploy-gate");
            (Arc::new(policy), Some(acl))
        }
        None => {
            closed.push("authorization (every action is 403)");
            (Arc::new(DenyAll), None)
        }
    };

    // [deploy]: production stages follow the stage-name grammar, or they could never match.
    for stage in &config.deploy.production_stages {
        level_name("stage", stage).map_err(|e| {
            StartError::Config(format!("[deploy] production_stages: `{stage}`: {e}"))
        })?;
    }

    // [approval]
    let mut factors = Vec::new();
    let mut totp = None;
    let approvals = match &config.approval {
        Some(approval) => {
            let (store, totp_store) = home.approval_store().await?;
            if approval.factors.iter().any(|f| f == "totp") {
                let key = secrets
                    .totp_key
                    .as_deref()
                    .ok_or_else(|| StartError::Config("secrets.toml lacks totp_key".into()))
                    .and_then(|hex| {
                        TotpSecretKey::from_hex(hex).map_err(|e| store_error("TOTP key")(&e))
                    })?;
                totp = Some(Arc::new(totp_factor(
                    approval.totp.secrets_file.as_deref(),
                    totp_store,
                    key,
                    home.totp_attempts().await?,
                )?));
            }
            let key =
                hex::decode(&secrets.receipt_key).map_err(|e| store_error("receipt key")(&e))?;
            let mut rule = ApprovalRule::new(
                Action::DEPLOY,
                ResourceKind::ENV_STAGE,
                approval
                    .approver_action
                    .parse()
                    .map_err(|e: portcullis::Error| StartError::Config(e.to_string()))?,
            );
            rule.resource_ids = config
                .deploy
                .production_stages
                .iter()
                .map(|stage| format!("*/{}", fold(stage)))
                .collect();
            rule.required = approval.required;
            rule.approver_group.clone_from(&approval.approver_group);
            rule.timeout = Duration::from_secs(approval.timeout_seconds);
            let mut approvals = Approvals::new(store, authorizer.clone(), &key)
                .and_then(|a| a.rule(rule))
                .map_err(|e| StartError::Config(e.to_string()))?;
            for name in &approval.factors {
                approvals = approvals.factor(second_factor(name, approval, totp.as_ref())?);
                factors.push(name.clone());
            }
            if config.deploy.production_stages.is_empty() {
                closed.push("approval rules (no production_stages in [deploy])");
            }
            Some(Arc::new(approvals))
        }
        None => {
            if !config.deploy.production_stages.is_empty() {
                closed.push("approval (production deploys are 403)");
            }
            None
        }
    };

    // [audit]
    let (audit, checkpoints) = match &config.audit {
        Some(audit) => {
            let url = home.audit_url(audit)?;
            let (log, checkpoints) =
                open_audit(audit, &url, dir, home.redact_key(&secrets)).await?;
            (Some(log), checkpoints)
        }
        None => {
            closed.push("audit (every action is 503)");
            (None, None)
        }
    };

    let mut gate = Gate::builder()
        .authenticator(Arc::new(chain))
        .authorizer(authorizer);
    if let Some(approvals) = approvals {
        gate = gate.approvals(approvals);
    }
    if let Some(audit) = &audit {
        gate = gate.audit(audit.clone() as Arc<dyn AuditSink>);
        if let Some(secs) = config.audit.as_ref().and_then(|a| a.timeout_seconds) {
            gate = gate.audit_timeout(Duration::from_secs(secs));
        }
    }
    let gate = Arc::new(
        gate.build()
            .map_err(|e| StartError::Config(e.to_string()))?,
    );
    let deploys = home.deploys().await?;
    home.refresh(&mut background, &tokens, acl.as_ref());
    home.started().await?;
    let state = Arc::new(AppState {
        gate,
        acl,
        tokens,
        deploys,
        login,
        audit: audit.clone(),
        production: config
            .deploy
            .production_stages
            .iter()
            .map(|stage| fold(stage))
            .collect(),
        factors,
        totp,
    });
    Ok(App {
        router: router(state),
        bootstrap,
        closed,
        audit,
        checkpoints,
        _background: background,
    })
}

/// Issues the bootstrap admin's personal token unless one is active.
async fn bootstrap_token(
    tokens: &Tokens,
    admin: &str,
) -> Result<Option<(String, String)>, StartError> {
    let existing = tokens.list(&TokenFilter {
        kind: Some(TokenKind::Personal),
        owner: Some(admin.to_owned()),
        ..TokenFilter::default()
    });
    if existing.iter().any(|t| t.name == "bootstrap") {
        return Ok(None);
    }
    let issued = tokens
        .issue(IssueRequest {
            kind: TokenKind::Personal,
            name: "bootstrap".into(),
            owner: admin.to_owned(),
            scope: None,
            ttl: None,
        })
        .await
        .map_err(|e| StartError::Config(e.to_string()))?;
    Ok(Some((admin.to_owned(), issued.secret.expose().to_owned())))
}

fn router(state: Arc<AppState>) -> Router {
    let gate = state.gate.clone();
    let env_of =
        |p: &portcullis::http::RouteParams| env_resource(p.path("env")?).map_err(|e| e.to_string());
    // A role change's intent says who gets which role, before anything changes.
    let manage = |action: Action| {
        guard(gate.clone(), action, env_of).body_params(["name", "role", "ttl_days"])
    };
    let roles = |kind: SubjectKind, action: Action| {
        let listing = get(
            move |s: Shared, who: Extension<Principal>, seen: Seen, p: UrlPath<String>| {
                list_roles(s, who, seen, p, kind)
            },
        );
        let granting = post(
            move |s: Shared, who: Extension<Principal>, p: UrlPath<String>, b: Json<RoleBody>| {
                grant_role(s, who, p, b, kind)
            },
        )
        .route_layer(manage(action.clone()));
        let reading = get(
            move |s: Shared,
                  who: Extension<Principal>,
                  seen: Seen,
                  p: UrlPath<(String, String)>| { get_role(s, who, seen, p, kind) },
        );
        let changing = axum::routing::put(
            move |s: Shared,
                  who: Extension<Principal>,
                  p: UrlPath<(String, String)>,
                  b: Json<RoleBody>| { change_role(s, who, p, b, kind) },
        )
        .delete(
            move |s: Shared, who: Extension<Principal>, p: UrlPath<(String, String)>| {
                revoke_role(s, who, p, kind)
            },
        )
        .route_layer(manage(action));
        Router::new()
            .route("/", listing.merge(granting))
            .route("/{name}", reading.merge(changing))
    };
    let audit_guard = guard(gate.clone(), Action::MANAGE_ROLES, |p| {
        audit_resource(
            p.query("resource")
                .ok_or_else(|| "name the resource to query: ?resource=env:NAME".to_owned())?,
        )
    });
    let api = Router::new()
        .route(
            "/v1/envs/{env}/{stage}/deploys",
            post(create_deploy).get(list_deploys),
        )
        .route("/v1/deploys/{id}", get(get_deploy))
        .route("/v1/approvals/{id}", get(get_approval))
        .route("/v1/approvals/{id}/{decision}", post(vote))
        .route(
            "/v1/users/me/tokens",
            post(create_personal_token).get(list_personal_tokens),
        )
        .route(
            "/v1/users/me/tokens/{id}",
            axum::routing::delete(revoke_personal_token),
        )
        .route("/v1/users/me/totp", post(begin_totp).get(totp_state))
        .route("/v1/users/me/totp/confirm", post(confirm_totp))
        .route("/v1/audit", get(query_audit).route_layer(audit_guard))
        .nest(
            "/v1/envs/{env}/user_roles",
            roles(SubjectKind::User, Action::MANAGE_ROLES),
        )
        .nest(
            "/v1/envs/{env}/group_roles",
            roles(SubjectKind::Group, Action::MANAGE_ROLES),
        )
        .nest(
            "/v1/envs/{env}/token_roles",
            roles(SubjectKind::Token, Action::MANAGE_TOKENS),
        )
        .layer(AuthenticateLayer::new(gate));
    Router::new()
        .route("/health", get(|| async { "ok" }))
        .route("/v1/login", post(login))
        .merge(api)
        .with_state(state)
        .layer(EdgeLayer::new())
}

fn check_text(field: &str, value: &str, required: bool) -> ApiResult<()> {
    if required && value.trim().is_empty() {
        return Err(ApiError::bad_request(format!("`{field}` is required")));
    }
    if value.len() > MAX_TEXT || value.chars().any(char::is_control) {
        return Err(ApiError::bad_request(format!(
            "`{field}` must be at most {MAX_TEXT} bytes without control characters"
        )));
    }
    Ok(())
}

/// Env and stage names are case-insensitive: folded to lower case here, at the edge, so
/// `PROD` is the production stage `prod` and `Checkout` the env `checkout`, in roles, deploys,
/// approvals and the audit log alike.
fn fold(name: &str) -> String {
    name.to_ascii_lowercase()
}

/// An env or stage name: Portcullis's name grammar ([`portcullis::validate_name`]: not `.`
/// or `..`, at most 256 bytes), and here only ASCII letters, digits, `-`, `_` and `.`, so no
/// look-alike of a production stage (`рrod` with a Cyrillic `р`, `ｐｒｏｄ`, `prod` and an
/// invisible character) can exist; folded to lower case.
fn level_name(field: &'static str, value: &str) -> ApiResult<String> {
    portcullis::validate_name(portcullis::Field::Other(field), value)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    if let Some(bad) = value
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        return Err(ApiError::bad_request(format!(
            "`{field}` names are ASCII letters, digits, `-`, `_` and `.`; U+{:04X} is not one",
            u32::from(bad)
        )));
    }
    Ok(fold(value))
}

fn stage_resource(env: &str, stage: &str) -> ApiResult<Resource> {
    let (env, stage) = (level_name("env", env)?, level_name("stage", stage)?);
    Resource::new(ResourceKind::ENV_STAGE, format!("{env}/{stage}"))
        .map_err(|e| ApiError::bad_request(e.to_string()))
}

fn json_body<T: for<'de> Deserialize<'de> + Default>(body: &Bytes) -> ApiResult<T> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
}

/// The deploy route's parameters. Unknown ones are ignored (and never recorded): Teletraan
/// clients send more than this service reads.
#[derive(Debug, Default, Deserialize)]
struct DeployParams {
    build_id: Option<String>,
    description: Option<String>,
    approver: Option<String>,
    #[serde(default)]
    approvers: Vec<String>,
    approver_group: Option<String>,
    approval_id: Option<String>,
}

impl DeployParams {
    /// Query parameters win over body fields.
    fn merge(self, body: DeployParams) -> DeployParams {
        DeployParams {
            build_id: self.build_id.or(body.build_id),
            description: self.description.or(body.description),
            approver: self.approver.or(body.approver),
            approvers: if self.approvers.is_empty() {
                body.approvers
            } else {
                self.approvers
            },
            approver_group: self.approver_group.or(body.approver_group),
            approval_id: self.approval_id.or(body.approval_id),
        }
    }

    fn approvers(&self) -> Option<Approvers> {
        let mut named: Vec<String> = self.approvers.clone();
        named.extend(
            self.approver
                .iter()
                .flat_map(|a| a.split(','))
                .map(|a| a.trim().to_owned()),
        );
        named.retain(|n| !n.is_empty());
        if !named.is_empty() {
            return Some(Approvers::Named(named));
        }
        self.approver_group.clone().map(Approvers::Group)
    }
}

fn deploy_request(
    deploy_env: &str,
    stage: &str,
    build_id: &str,
    description: &str,
) -> ApiResult<GateRequest> {
    Ok(
        GateRequest::new(Action::DEPLOY, stage_resource(deploy_env, stage)?)
            .param("build_id", build_id)
            .param("description", description),
    )
}

async fn create_deploy(
    State(state): Shared,
    Extension(who): Extension<Principal>,
    Extension(correlation): Extension<CorrelationId>,
    UrlPath((env, stage)): UrlPath<(String, String)>,
    Query(query): Query<DeployParams>,
    body: Bytes,
) -> ApiResult<Response> {
    let params = query.merge(json_body(&body)?);
    let (env, stage) = (level_name("env", &env)?, level_name("stage", &stage)?);
    let build_id = params.build_id.clone().unwrap_or_default();
    let description = params.description.clone().unwrap_or_default();
    check_text("build_id", &build_id, true)?;
    check_text("description", &description, false)?;
    let request = deploy_request(&env, &stage, &build_id, &description)?
        .http("POST", format!("/v1/envs/{env}/{stage}/deploys"))
        .correlation_id(correlation.0);
    if !state.production.contains(&stage) {
        let deploys = state.deploys.clone();
        let operator = who.subject().to_owned();
        let deploy = state
            .gate
            .run(&who, &request, |_| async move {
                deploys
                    .insert(NewDeploy {
                        env: &env,
                        stage: &stage,
                        build_id: &build_id,
                        description: &description,
                        operator: &operator,
                        state: DeployState::Accepted,
                        approval_id: None,
                    })
                    .await
            })
            .await
            .map_err(run_error)?;
        return Ok((StatusCode::CREATED, Json(deploy)).into_response());
    }
    if state.gate.approval_rule(&request).is_none() {
        let closed = GateError::Forbidden(format!(
            "{stage} is a production stage and approvals are not configured, so it cannot be deployed"
        ));
        return Err(state.gate.refuse(&who, &request, closed).await.into());
    }
    if let Some(approval_id) = &params.approval_id {
        // Resuming a deploy whose approval came through but could not proceed then. Only its
        // requester may, and only on the stage it was requested for; anyone else changes
        // nothing.
        let deploy = waiting_deploy(&state, approval_id).await?;
        if deploy.operator != who.subject() {
            let stranger = GateError::Forbidden(format!(
                "approval `{approval_id}` belongs to another requester; only they can resume it"
            ));
            let request = request.approval(approval_id.clone());
            return Err(state.gate.refuse(&who, &request, stranger).await.into());
        }
        if deploy.env != env || deploy.stage != stage || deploy.build_id != build_id {
            return Err(ApiError::bad_request(format!(
                "approval `{approval_id}` is for build {} on {}/{}, not build {build_id} on {env}/{stage}",
                deploy.build_id, deploy.env, deploy.stage
            )));
        }
        let deploy = proceed(&state, approval_id, &who).await?;
        return Ok((StatusCode::CREATED, Json(deploy)).into_response());
    }
    let Some(approvers) = params.approvers() else {
        let required = GateError::ApprovalRequired(format!(
            "{stage} is a production stage: name an approver (?approver=NAME) who will confirm the deploy"
        ));
        return Err(state.gate.refuse(&who, &request, required).await.into());
    };
    let reason = if description.is_empty() {
        format!("deploy build {build_id} to {env}/{stage}")
    } else {
        format!("deploy build {build_id} to {env}/{stage}: {description}")
    };
    let approval = state
        .gate
        .request_approval(&who, &request, Some(approvers), &reason)
        .await?;
    let deploy = state
        .deploys
        .insert(NewDeploy {
            env: &env,
            stage: &stage,
            build_id: &build_id,
            description: &description,
            operator: who.subject(),
            state: DeployState::PendingApproval,
            approval_id: Some(&approval.id),
        })
        .await?;
    let body = json!({
        "deploy": deploy,
        "approval": { "id": approval.id, "state": "pending", "approvers": approval.approvers, "expires_at": unix(approval.expires_at) },
    });
    Ok((StatusCode::ACCEPTED, Json(body)).into_response())
}

fn run_error(err: RunError<sqlx::Error>) -> ApiError {
    match err {
        RunError::Refused(err) => ApiError::Gate(err),
        RunError::Action(err) => ApiError::unavailable(err),
    }
}

fn unix(time: std::time::SystemTime) -> u64 {
    time.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Lets an approved production deploy proceed, as `requester`, through the whole gate again
/// (fresh authorization, audit intent, receipt redeemed once).
async fn waiting_deploy(state: &AppState, approval_id: &str) -> ApiResult<Deploy> {
    state
        .deploys
        .by_approval(approval_id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no deploy waits for approval `{approval_id}`")))
}

async fn proceed(state: &AppState, approval_id: &str, requester: &Principal) -> ApiResult<Deploy> {
    let deploy = waiting_deploy(state, approval_id).await?;
    if deploy.state != DeployState::PendingApproval {
        return Err(ApiError::Status(
            StatusCode::CONFLICT,
            "conflict",
            format!("deploy {} is already {:?}", deploy.id, deploy.state),
        ));
    }
    let request = deploy_request(
        &deploy.env,
        &deploy.stage,
        &deploy.build_id,
        &deploy.description,
    )?
    .http(
        "POST",
        format!("/v1/envs/{}/{}/deploys", deploy.env, deploy.stage),
    )
    .correlation_id(approval_id)
    .approval(approval_id);
    let deploys = state.deploys.clone();
    let id = deploy.id.clone();
    let result = state
        .gate
        .run(requester, &request, |_| async move {
            deploys.settle(&id, DeployState::Accepted, None).await
        })
        .await;
    match result {
        Ok(Some(deploy)) => Ok(deploy),
        Ok(None) => Err(ApiError::Status(
            StatusCode::CONFLICT,
            "conflict",
            "the deploy was settled by another request".into(),
        )),
        // Only a dead approval (rejected, expired, used) fails the deploy. Anything else —
        // still waiting, a store or the log down, the caller not allowed — leaves it
        // pending: it can be resumed, and it expires with its approval.
        Err(RunError::Refused(err @ GateError::ApprovalRefused(_))) => {
            state
                .deploys
                .settle(&deploy.id, DeployState::Failed, Some(&err.to_string()))
                .await?;
            Err(err.into())
        }
        Err(RunError::Refused(err)) => Err(err.into()),
        Err(RunError::Action(err)) => Err(ApiError::unavailable(err)),
    }
}

/// Brings a pending deploy up to date with its approval (rejected or expired).
async fn refresh(state: &AppState, deploy: Deploy) -> ApiResult<Deploy> {
    let (DeployState::PendingApproval, Some(approval_id), Some(approvals)) = (
        deploy.state,
        deploy.approval_id.as_deref(),
        state.gate.approvals(),
    ) else {
        return Ok(deploy);
    };
    let record = approvals
        .status(approval_id)
        .await
        .map_err(|e| ApiError::Gate(GateError::Approval(e)))?;
    let settled = match record.state {
        RequestState::Rejected => DeployState::Rejected,
        RequestState::Expired => DeployState::Expired,
        RequestState::Pending | RequestState::Approved => return Ok(deploy),
    };
    Ok(state
        .deploys
        .settle(&deploy.id, settled, None)
        .await?
        .unwrap_or(deploy))
}

/// How a request came in, for the audit record of a refusal: its correlation id, method
/// and whole path.
#[derive(Debug, Clone)]
struct Seen {
    correlation: CorrelationId,
    method: String,
    path: String,
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Seen {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(Seen {
            correlation: parts
                .extensions
                .get::<CorrelationId>()
                .cloned()
                .unwrap_or_else(|| CorrelationId(String::new())),
            method: parts.method.to_string(),
            path: portcullis::http::request_path(parts).to_owned(),
        })
    }
}

impl Seen {
    /// A gate request for `action` on `resource`, recorded as this request.
    fn request(&self, action: Action, resource: Resource) -> GateRequest {
        let request = GateRequest::new(action, resource).http(&self.method, &self.path);
        if self.correlation.0.is_empty() {
            request
        } else {
            request.correlation_id(self.correlation.0.clone())
        }
    }
}

/// A page size: `default` when absent, else 1 to [`MAX_LIST`] (a 400 outside).
fn page_limit(asked: Option<u32>, default: u32) -> ApiResult<u32> {
    match asked {
        None => Ok(default),
        Some(n) if (1..=MAX_LIST).contains(&n) => Ok(n),
        Some(n) => Err(ApiError::bad_request(format!(
            "`limit` is 1 to {MAX_LIST}, not {n}"
        ))),
    }
}

/// The resource of an audit query, with env and stage names folded as everywhere else.
fn audit_resource(text: &str) -> Result<Resource, String> {
    let resource: Resource = text.parse().map_err(|e: portcullis::Error| e.to_string())?;
    let kind = resource.kind().clone();
    if kind == ResourceKind::ENV {
        return env_resource(resource.id()).map_err(|e| e.to_string());
    }
    if kind == ResourceKind::ENV_STAGE {
        let (env, stage) = resource
            .id()
            .split_once('/')
            .ok_or_else(|| format!("a stage is env_stage:ENV/STAGE, not {resource}"))?;
        return stage_resource(env, stage).map_err(|e| e.to_string());
    }
    Ok(resource)
}

async fn authorize_read(
    state: &AppState,
    who: &Principal,
    seen: &Seen,
    resource: Resource,
) -> ApiResult<()> {
    let _allowed: Decision = state
        .gate
        .enforce(who, &seen.request(Action::READ, resource))
        .await?;
    Ok(())
}

#[derive(Debug, Deserialize)]
struct ListQuery {
    limit: Option<u32>,
}

async fn list_deploys(
    State(state): Shared,
    Extension(who): Extension<Principal>,
    seen: Seen,
    UrlPath((env, stage)): UrlPath<(String, String)>,
    Query(query): Query<ListQuery>,
) -> ApiResult<Json<Vec<Deploy>>> {
    let (env, stage) = (level_name("env", &env)?, level_name("stage", &stage)?);
    authorize_read(&state, &who, &seen, stage_resource(&env, &stage)?).await?;
    let limit = page_limit(query.limit, 50)?;
    let mut out = Vec::new();
    for deploy in state.deploys.list(&env, &stage, limit).await? {
        out.push(refresh(&state, deploy).await?);
    }
    Ok(Json(out))
}

async fn get_deploy(
    State(state): Shared,
    Extension(who): Extension<Principal>,
    seen: Seen,
    UrlPath(id): UrlPath<String>,
) -> ApiResult<Json<Deploy>> {
    let deploy = state
        .deploys
        .get(&id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no deploy `{id}`")))?;
    authorize_read(
        &state,
        &who,
        &seen,
        stage_resource(&deploy.env, &deploy.stage)?,
    )
    .await?;
    Ok(Json(refresh(&state, deploy).await?))
}

fn approval_view(record: &ApprovalRecord) -> Value {
    let r = &record.request;
    json!({
        "id": r.id,
        "state": record.state.as_str(),
        "requester": r.requester.subject(),
        "action": r.action,
        "resource": r.resource,
        "reason": r.reason,
        "approvers": r.approvers,
        "required": r.required,
        "votes": record.votes.iter().map(|v| json!({
            "approver": v.approver,
            "decision": v.decision,
            "factor": v.factor,
            "at": unix(v.at),
        })).collect::<Vec<_>>(),
        "created_at": unix(r.created_at),
        "expires_at": unix(r.expires_at),
    })
}

async fn get_approval(
    State(state): Shared,
    Extension(who): Extension<Principal>,
    seen: Seen,
    UrlPath(id): UrlPath<String>,
) -> ApiResult<Json<Value>> {
    let approvals = state
        .gate
        .approvals()
        .ok_or_else(|| ApiError::not_found("approvals are not configured"))?;
    let record = approvals
        .status(&id)
        .await
        .map_err(|e| ApiError::Gate(GateError::Approval(e)))?;
    let named = match &record.request.approvers {
        Approvers::Named(names) => names.iter().any(|n| n == who.subject()),
        Approvers::Group(group) => who.in_group(group),
    };
    if !named && record.request.requester.subject() != who.subject() {
        authorize_read(&state, &who, &seen, record.request.resource.clone()).await?;
    }
    Ok(Json(approval_view(&record)))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct VoteBody {
    factor: Option<String>,
    code: Option<String>,
}

async fn vote(
    State(state): Shared,
    Extension(who): Extension<Principal>,
    Extension(correlation): Extension<CorrelationId>,
    UrlPath((id, decision)): UrlPath<(String, String)>,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let decision = match decision.as_str() {
        "approve" => VoteDecision::Approve,
        "deny" => VoteDecision::Deny,
        other => {
            return Err(ApiError::not_found(format!(
                "no approval action `{other}`: use approve or deny"
            )));
        }
    };
    let body: VoteBody = json_body(&body)?;
    let factor = match body.factor {
        Some(f) => f,
        None => state
            .factors
            .first()
            .cloned()
            .ok_or_else(|| ApiError::not_found("approvals are not configured"))?,
    };
    let record = state
        .gate
        .vote(
            &id,
            &who,
            decision,
            &factor,
            body.code.as_deref(),
            Some(&correlation.0),
        )
        .await?;
    let deploy = match record.state {
        RequestState::Approved => match proceed(&state, &id, &record.request.requester).await {
            Ok(deploy) => Some(deploy),
            Err(err) => {
                tracing::warn!(approval = %id, error = ?err, "an approved deploy could not proceed yet");
                state.deploys.by_approval(&id).await?
            }
        },
        RequestState::Rejected | RequestState::Expired => {
            match state.deploys.by_approval(&id).await? {
                Some(d) => Some(refresh(&state, d).await?),
                None => None,
            }
        }
        RequestState::Pending => state.deploys.by_approval(&id).await?,
    };
    Ok(Json(
        json!({ "approval": approval_view(&record), "deploy": deploy }),
    ))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenBody {
    name: String,
    ttl_days: Option<u64>,
}

fn ttl(days: Option<u64>) -> Option<Duration> {
    days.map(|d| Duration::from_secs(d.saturating_mul(86_400)))
}

async fn create_personal_token(
    State(state): Shared,
    Extension(who): Extension<Principal>,
    Extension(correlation): Extension<CorrelationId>,
    Json(body): Json<TokenBody>,
) -> ApiResult<Response> {
    let resource =
        Resource::new(USER, who.subject()).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let request = GateRequest::new(CREATE_PERSONAL_TOKEN, resource)
        .param("name", body.name.clone())
        .http("POST", "/v1/users/me/tokens")
        .correlation_id(correlation.0);
    let tokens = state.tokens.clone();
    let owner = who.subject().to_owned();
    let issued = state
        .gate
        .run(&who, &request, |_| async move {
            tokens
                .issue(IssueRequest {
                    kind: TokenKind::Personal,
                    name: body.name,
                    owner,
                    scope: None,
                    ttl: ttl(body.ttl_days),
                })
                .await
        })
        .await
        .map_err(|e| match e {
            RunError::Refused(err) => ApiError::Gate(err),
            RunError::Action(err) => err.into(),
        })?;
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "token": issued.secret.expose(),
            "id": issued.record.id.as_str(),
            "name": issued.record.name,
            "expires_at": unix(issued.record.expires_at),
        })),
    )
        .into_response())
}

/// The TOTP factor, for a person signed in interactively; anyone else is refused, on the
/// record.
async fn totp_for<'a>(
    state: &'a AppState,
    who: &Principal,
    request: &GateRequest,
) -> ApiResult<&'a Arc<TotpFactor>> {
    let factor = state
        .totp
        .as_ref()
        .ok_or_else(|| ApiError::not_found("TOTP is not among the configured factors"))?;
    if who.kind() != PrincipalKind::User || !INTERACTIVE.contains(who.auth_method()) {
        let refused = GateError::Forbidden(format!(
            "enroll TOTP signed in interactively (a session or OIDC login), not with a {} credential",
            who.auth_method()
        ));
        return Err(state.gate.refuse(who, request, refused).await.into());
    }
    Ok(factor)
}

fn totp_error(err: ApprovalError) -> ApiError {
    match err {
        ApprovalError::Totp(TotpError::AlreadyEnrolled(_)) => {
            ApiError::Status(StatusCode::CONFLICT, "conflict", err.to_string())
        }
        ApprovalError::Totp(TotpError::TooManyAttempts(_)) => ApiError::Status(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_attempts",
            err.to_string(),
        ),
        ApprovalError::Totp(_) => ApiError::bad_request(err.to_string()),
        other => ApiError::unavailable(other),
    }
}

fn enroll_request(
    who: &Principal,
    step: &str,
    correlation: CorrelationId,
) -> ApiResult<GateRequest> {
    let resource =
        Resource::new(USER, who.subject()).map_err(|e| ApiError::bad_request(e.to_string()))?;
    Ok(GateRequest::new(ENROLL_TOTP, resource)
        .param("step", step)
        .http("POST", "/v1/users/me/totp")
        .correlation_id(correlation.0))
}

/// Starts TOTP enrollment: a fresh secret, pending until confirmed, shown once as an
/// `otpauth://` URI.
async fn begin_totp(
    State(state): Shared,
    Extension(who): Extension<Principal>,
    Extension(correlation): Extension<CorrelationId>,
) -> ApiResult<Response> {
    let request = enroll_request(&who, "begin", correlation)?;
    let factor = totp_for(&state, &who, &request).await?.clone();
    let user = who.subject().to_owned();
    let enrollment = state
        .gate
        .run(&who, &request, |_| async move {
            factor.begin_enrollment(&user, TOTP_ISSUER).await
        })
        .await
        .map_err(|e| match e {
            RunError::Refused(err) => ApiError::Gate(err),
            RunError::Action(err) => totp_error(err),
        })?;
    let config = TotpConfig::default();
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "state": "pending",
            "otpauth_uri": enrollment.uri(),
            "secret": enrollment.secret_base32(),
            "algorithm": config.algorithm.otpauth_name(),
            "digits": config.digits,
            "period": config.step.as_secs(),
            "confirm": "POST /v1/users/me/totp/confirm {\"code\": \"<the app's current code>\"}",
        })),
    )
        .into_response())
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfirmBody {
    code: String,
}

/// Confirms a pending enrollment with a first valid code (which is then spent).
async fn confirm_totp(
    State(state): Shared,
    Extension(who): Extension<Principal>,
    Extension(correlation): Extension<CorrelationId>,
    Json(body): Json<ConfirmBody>,
) -> ApiResult<Json<Value>> {
    let request = enroll_request(&who, "confirm", correlation)?;
    let factor = totp_for(&state, &who, &request).await?.clone();
    let user = who.subject().to_owned();
    state
        .gate
        .run(&who, &request, |_| async move {
            factor.confirm_enrollment(&user, &body.code).await
        })
        .await
        .map_err(|e| match e {
            RunError::Refused(err) => ApiError::Gate(err),
            RunError::Action(err) => totp_error(err),
        })?;
    Ok(Json(json!({ "state": "confirmed" })))
}

/// Where the caller's TOTP enrollment stands: `none`, `pending` or `confirmed`.
async fn totp_state(
    State(state): Shared,
    Extension(who): Extension<Principal>,
) -> ApiResult<Json<Value>> {
    let factor = state
        .totp
        .as_ref()
        .ok_or_else(|| ApiError::not_found("TOTP is not among the configured factors"))?;
    let found = factor
        .enrollment_state(who.subject())
        .await
        .map_err(totp_error)?;
    let text = match found {
        None => "none",
        Some(portcullis::approval::TotpEnrollmentState::Pending) => "pending",
        Some(_) => "confirmed",
    };
    Ok(Json(json!({ "state": text })))
}

/// The caller's own personal tokens (never their secrets), active ones unless
/// `?all=true`.
async fn list_personal_tokens(
    State(state): Shared,
    Extension(who): Extension<Principal>,
    Query(query): Query<MineQuery>,
) -> ApiResult<Json<Vec<Value>>> {
    if who.kind() != PrincipalKind::User {
        return Err(GateError::Forbidden("only people have personal tokens".into()).into());
    }
    let mine = state.tokens.list(&TokenFilter {
        kind: Some(TokenKind::Personal),
        owner: Some(who.subject().to_owned()),
        include_inactive: query.all,
        ..TokenFilter::default()
    });
    Ok(Json(
        mine.iter()
            .map(|t| {
                json!({
                    "id": t.id.as_str(),
                    "name": t.name,
                    "created_at": unix(t.created_at),
                    "expires_at": unix(t.expires_at),
                    "last_used_at": t.last_used_at.map(unix),
                    "revoked_at": t.revoked_at.map(unix),
                })
            })
            .collect(),
    ))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct MineQuery {
    #[serde(default)]
    all: bool,
}

/// Revokes one of the caller's own personal tokens (audited). Someone else's id is a 404,
/// as an unknown one is.
async fn revoke_personal_token(
    State(state): Shared,
    Extension(who): Extension<Principal>,
    Extension(correlation): Extension<CorrelationId>,
    UrlPath(id): UrlPath<String>,
) -> ApiResult<StatusCode> {
    let resource =
        Resource::new(USER, who.subject()).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let mine = state
        .tokens
        .list(&TokenFilter {
            kind: Some(TokenKind::Personal),
            owner: Some(who.subject().to_owned()),
            ..TokenFilter::default()
        })
        .into_iter()
        .find(|t| t.id.as_str() == id)
        .ok_or_else(|| ApiError::not_found(format!("you have no active personal token `{id}`")))?;
    let request = GateRequest::new(REVOKE_PERSONAL_TOKEN, resource)
        .param("token_id", id.clone())
        .http("DELETE", format!("/v1/users/me/tokens/{id}"))
        .correlation_id(correlation.0);
    let tokens = state.tokens.clone();
    state
        .gate
        .run(
            &who,
            &request,
            |_| async move { tokens.revoke(&mine.id).await },
        )
        .await
        .map_err(|e| match e {
            RunError::Refused(err) => ApiError::Gate(err),
            RunError::Action(err) => err.into(),
        })?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginBody {
    username: String,
    password: String,
}

async fn login(State(state): Shared, Json(body): Json<LoginBody>) -> ApiResult<Json<Value>> {
    let login = state
        .login
        .as_ref()
        .ok_or_else(|| ApiError::not_found("password login is not configured"))?;
    let password =
        Password::new(body.password).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let session = login
        .login(&body.username, &password)
        .await
        .map_err(|e| match e {
            // The failed-login count (fleet mode) cannot be read: refused, 503, not 401.
            portcullis::token::AuthError::Store(_) => ApiError::Gate(GateError::AuthUnavailable(e)),
            other => ApiError::Gate(GateError::Unauthenticated(other)),
        })?;
    Ok(Json(
        json!({ "token": session.expose(), "token_type": "Bearer" }),
    ))
}

fn acl(state: &AppState) -> ApiResult<&Arc<Acl>> {
    state.acl.as_ref().ok_or_else(|| {
        ApiError::Gate(GateError::Forbidden(
            "authorization is not configured, so roles cannot be read or changed".into(),
        ))
    })
}

fn env_resource(env: &str) -> ApiResult<Resource> {
    Resource::new(ResourceKind::ENV, level_name("env", env)?)
        .map_err(|e| ApiError::bad_request(e.to_string()))
}

fn subject(kind: SubjectKind, name: &str) -> ApiResult<Subject> {
    Subject::new(kind, name).map_err(|e| ApiError::bad_request(e.to_string()))
}

fn role_view(binding: &RoleBinding) -> Value {
    json!({ "name": binding.subject.name(), "role": binding.role.as_str(), "resource": binding.resource })
}

async fn list_roles(
    State(state): Shared,
    Extension(who): Extension<Principal>,
    seen: Seen,
    UrlPath(env): UrlPath<String>,
    kind: SubjectKind,
) -> ApiResult<Json<Vec<Value>>> {
    let resource = env_resource(&env)?;
    // Through the gate first: its authorizer holds the token-scope veto, and a refusal is
    // recorded.
    authorize_read(&state, &who, &seen, resource.clone()).await?;
    let page = acl(&state)?
        .list(&who, &resource, Some(kind), &PageRequest::first(MAX_LIST))
        .await?;
    Ok(Json(page.bindings.iter().map(role_view).collect()))
}

async fn get_role(
    State(state): Shared,
    Extension(who): Extension<Principal>,
    seen: Seen,
    UrlPath((env, name)): UrlPath<(String, String)>,
    kind: SubjectKind,
) -> ApiResult<Json<Value>> {
    let acl = acl(&state)?;
    let resource = env_resource(&env)?;
    authorize_read(&state, &who, &seen, resource.clone()).await?;
    let binding = acl
        .store()
        .get(&subject(kind, &name)?, &resource)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("{} has no role on {resource}", name)))?;
    Ok(Json(role_view(&binding)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RoleBody {
    name: Option<String>,
    role: String,
    ttl_days: Option<u64>,
}

fn role_name(text: &str) -> ApiResult<RoleName> {
    text.parse()
        .map_err(|e: AclError| ApiError::bad_request(e.to_string()))
}

async fn grant_role(
    State(state): Shared,
    Extension(who): Extension<Principal>,
    UrlPath(env): UrlPath<String>,
    Json(body): Json<RoleBody>,
    kind: SubjectKind,
) -> ApiResult<Response> {
    let acl = acl(&state)?;
    let name = body
        .name
        .ok_or_else(|| ApiError::bad_request("`name` is required"))?;
    let resource = env_resource(&env)?;
    let binding = RoleBinding::new(
        subject(kind, &name)?,
        resource.clone(),
        role_name(&body.role)?,
    );
    if kind != SubjectKind::Token {
        acl.grant(&who, binding.clone()).await?;
        return Ok(said(
            (StatusCode::CREATED, Json(role_view(&binding))).into_response(),
            format!("granted {}", binding_text(&binding)),
        ));
    }
    // A script token: the token, then its role; the secret is shown once, here.
    let issued = state
        .tokens
        .issue(IssueRequest {
            kind: TokenKind::Script,
            name: name.clone(),
            owner: person_behind(&who),
            scope: Some(TokenScope {
                resource: resource.clone(),
                role: body.role.clone(),
            }),
            ttl: ttl(body.ttl_days),
        })
        .await?;
    if let Err(err) = acl.grant(&who, binding.clone()).await {
        if let Err(revoke) = state.tokens.revoke(&issued.record.id).await {
            tracing::error!(error = %revoke, token = %issued.record.id, "a token whose role failed could not be revoked");
        }
        return Err(err.into());
    }
    let view = json!({
        "name": binding.subject.name(),
        "role": binding.role.as_str(),
        "resource": binding.resource,
        "token": issued.secret.expose(),
        "id": issued.record.id.as_str(),
        "expires_at": unix(issued.record.expires_at),
    });
    Ok(said(
        (StatusCode::CREATED, Json(view)).into_response(),
        format!(
            "issued script token {} and granted {}",
            issued.record.id.as_str(),
            binding_text(&binding)
        ),
    ))
}

async fn change_role(
    State(state): Shared,
    Extension(who): Extension<Principal>,
    UrlPath((env, name)): UrlPath<(String, String)>,
    Json(body): Json<RoleBody>,
    kind: SubjectKind,
) -> ApiResult<Response> {
    let acl = acl(&state)?;
    let resource = env_resource(&env)?;
    let subject = subject(kind, &name)?;
    acl.change(&who, &subject, &resource, role_name(&body.role)?)
        .await?;
    let binding = RoleBinding::new(subject, resource, role_name(&body.role)?);
    Ok(said(
        Json(role_view(&binding)).into_response(),
        format!("changed to {}", binding_text(&binding)),
    ))
}

async fn revoke_role(
    State(state): Shared,
    Extension(who): Extension<Principal>,
    UrlPath((env, name)): UrlPath<(String, String)>,
    kind: SubjectKind,
) -> ApiResult<Response> {
    let acl = acl(&state)?;
    let resource = env_resource(&env)?;
    let subject = subject(kind, &name)?;
    acl.revoke(&who, &subject, &resource).await?;
    let detail = format!("revoked the role of {subject} on {resource}");
    if kind == SubjectKind::Token {
        let scoped = state.tokens.list(&TokenFilter {
            kind: Some(TokenKind::Script),
            resource: Some(resource),
            ..TokenFilter::default()
        });
        for token in scoped.iter().filter(|t| t.name == name) {
            state.tokens.revoke(&token.id).await?;
        }
    }
    Ok(said(StatusCode::NO_CONTENT.into_response(), detail))
}

/// The person a principal acts for: itself, or for a script token the person who owns it.
/// A token made by a token belongs to that token's owner, so however long a chain of tokens
/// grows, its owner is a person, and four-eyes sees through it.
fn person_behind(who: &Principal) -> String {
    match (who.kind(), who.claim("owner").and_then(Value::as_str)) {
        (PrincipalKind::ScriptToken, Some(owner)) => owner.to_owned(),
        _ => who.subject().to_owned(),
    }
}

/// `response`, carrying what was done for the outcome record.
fn said(mut response: Response, detail: String) -> Response {
    response.extensions_mut().insert(OutcomeDetail(detail));
    response
}

/// `ROLE to subject on resource`, for outcome records.
fn binding_text(binding: &RoleBinding) -> String {
    format!(
        "{} to {} on {}",
        binding.role.as_str(),
        binding.subject,
        binding.resource
    )
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditParams {
    resource: String,
    /// Only records on `resource` itself, not on the stages of an env.
    #[serde(default)]
    exact: bool,
    actor: Option<String>,
    action: Option<String>,
    correlation_id: Option<String>,
    from_ms: Option<u64>,
    to_ms: Option<u64>,
    after: Option<u64>,
    limit: Option<u32>,
}

async fn query_audit(
    State(state): Shared,
    Query(params): Query<AuditParams>,
) -> ApiResult<Json<Value>> {
    let log = state.audit.as_ref().ok_or_else(|| {
        ApiError::Gate(GateError::AuditUnavailable(
            "no audit log is configured".into(),
        ))
    })?;
    let mut query = AuditQuery::all(page_limit(params.limit, 100)?);
    let resource = audit_resource(&params.resource).map_err(ApiError::bad_request)?;
    // An env's log holds its stages' records too (its ADMINs may read them), unless
    // `exact=true` asks for the env's own records only.
    if *resource.kind() == ResourceKind::ENV && !params.exact {
        query.within = Some(ResourceScope::new(resource).with_children(ResourceKind::ENV_STAGE));
    } else {
        query.resource = Some(resource);
    }
    query.actor = params.actor;
    query.action = params
        .action
        .map(|a| a.parse())
        .transpose()
        .map_err(|e: portcullis::Error| ApiError::bad_request(e.to_string()))?;
    query.correlation_id = params.correlation_id;
    query.from_ms = params.from_ms;
    query.to_ms = params.to_ms;
    query.after_seq = params.after;
    let page = log
        .query(&query)
        .await
        .map_err(|e| ApiError::Gate(GateError::AuditUnavailable(e.to_string())))?;
    let records: Vec<Value> = page
        .records
        .iter()
        .map(|r| json!({ "seq": r.seq, "event": r.event }))
        .collect();
    Ok(Json(
        json!({ "records": records, "next_after": page.next_after }),
    ))
}
