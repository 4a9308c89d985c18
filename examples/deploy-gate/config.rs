//! The configuration file. Each top-level section switches one part on; a missing section
//! leaves that part closed: no `[authentication]` ⇒ every request is 401, no
//! `[authorization]` ⇒ every action is 403, no `[approval]` ⇒ production deploys are 403,
//! no `[audit]` ⇒ every action is 503.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use portcullis::acl::AclConfig;
use portcullis::token::AuthConfig;
use serde::Deserialize;

/// The configuration `cargo run --example deploy-gate` uses when given no `--config`.
pub(crate) const DEFAULT_CONFIG: &str = r#"# deploy-gate configuration. Every section switches one part on; leave one out and
# that part is closed (nothing passes), never open.

listen = "127.0.0.1:8080"
data_dir = "deploy-gate-data"

[deploy]
# Stages with these names need four-eyes approval in every environment.
production_stages = ["prod", "production"]

[authentication]
# Methods are tried in order; remove a line to switch a method off.
[[authentication.method]]
type = "script_token"
[[authentication.method]]
type = "personal_token"
[[authentication.method]]
type = "session_jwt"

[authorization]
# Gets ADMIN on system:* and a personal token, printed once at first start.
bootstrap_admin = "admin"

[approval]
required = 1                 # distinct approvals per production deploy
approver_action = "deploy"   # approvers need this on the stage (OPERATOR by default)
timeout_seconds = 1800
factors = ["in_app", "totp"]

[audit]
url = "sqlite://audit.db"    # relative to data_dir; also jsonl://DIR and postgres://…
# outcome_linger_ms = 0      # how long an outcome may wait to share a write (max 10000)
# Signed checkpoints of the log's head, so that a truncated or rewritten log is found.
# Keep the folder where whoever can write the audit database cannot (not in data_dir).
# checkpoint_dir = "/var/lib/deploy-gate-anchor"   # relative to the configuration file
# checkpoint_seconds = 60    # and one at a clean shutdown
# checkpoint_key = "checkpoint.pk8"   # default: generated into data_dir/audit-checkpoint.pk8
"#;

/// The whole file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Config {
    /// Where to listen.
    #[serde(default = "default_listen")]
    pub(crate) listen: String,
    /// Where the SQLite files, keys and generated secrets live.
    #[serde(default = "default_data_dir")]
    pub(crate) data_dir: PathBuf,
    /// Deploy settings.
    #[serde(default)]
    pub(crate) deploy: DeployConfig,
    /// Authentication methods; absent ⇒ closed.
    pub(crate) authentication: Option<Authentication>,
    /// Roles and bindings; absent ⇒ closed.
    pub(crate) authorization: Option<Authorization>,
    /// Four-eyes approval of production deploys; absent ⇒ production deploys are refused.
    pub(crate) approval: Option<Approval>,
    /// The audit log; absent ⇒ every action is refused.
    pub(crate) audit: Option<Audit>,
    /// Where the state lives: absent ⇒ SQLite files in `data_dir` (one instance); a
    /// `postgres://` URL ⇒ every piece of state in PostgreSQL, shared by any number of
    /// instances (see [`Store`]).
    pub(crate) store: Option<Store>,
    /// Serving over TLS, with SPIFFE client certificates; absent ⇒ plain HTTP (keep it on
    /// loopback).
    pub(crate) tls: Option<crate::tls::TlsConfig>,
}

fn default_listen() -> String {
    "127.0.0.1:8080".into()
}

fn default_data_dir() -> PathBuf {
    "deploy-gate-data".into()
}

/// `[deploy]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DeployConfig {
    /// Stage names that are production in every environment.
    #[serde(default)]
    pub(crate) production_stages: Vec<String>,
}

/// `[authentication]`: the token crate's configuration plus an optional password login.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Authentication {
    /// Requests without a credential become `user:anonymous`.
    #[serde(default)]
    pub(crate) anonymous: bool,
    /// The methods, in order.
    #[serde(default, rename = "method")]
    pub(crate) methods: Vec<portcullis::token::MethodConfig>,
    /// `POST /v1/login` against a static directory file (users with PBKDF2 hashes).
    pub(crate) login: Option<Login>,
    /// Session JWT lifetime in seconds (default 3600).
    pub(crate) session_seconds: Option<u64>,
    /// Default script/personal token lifetime in days (default 180).
    pub(crate) token_days: Option<u64>,
}

impl Authentication {
    /// The token crate's view.
    pub(crate) fn chain_config(&self) -> AuthConfig {
        AuthConfig {
            anonymous: self.anonymous,
            methods: self.methods.clone(),
        }
    }
}

/// `[authentication.login]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Login {
    /// A `portcullis-directory` static directory file (relative to the config file).
    pub(crate) users_file: PathBuf,
}

/// `[authorization]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Authorization {
    /// A user who gets ADMIN on `system:*` and a personal token printed at first start.
    pub(crate) bootstrap_admin: Option<String>,
    /// Roles, requirements, hierarchy and seed bindings (Teletraan's defaults when absent).
    #[serde(default)]
    pub(crate) acl: AclConfig,
}

/// `[approval]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Approval {
    /// Distinct approvals needed.
    #[serde(default = "one")]
    pub(crate) required: u32,
    /// The action an approver must be allowed on the stage.
    #[serde(default = "deploy_action")]
    pub(crate) approver_action: String,
    /// Approvers must also be in this group.
    pub(crate) approver_group: Option<String>,
    /// How long a deploy waits for approval.
    #[serde(default = "thirty_minutes")]
    pub(crate) timeout_seconds: u64,
    /// Enabled second factors: `in_app`, `totp`, `duo`.
    #[serde(default = "in_app")]
    pub(crate) factors: Vec<String>,
    /// TOTP settings.
    #[serde(default)]
    pub(crate) totp: Totp,
    /// Duo Auth API settings (needed when `duo` is a factor).
    pub(crate) duo: Option<Duo>,
}

fn one() -> u32 {
    1
}
fn deploy_action() -> String {
    "deploy".into()
}
fn thirty_minutes() -> u64 {
    1800
}
fn in_app() -> Vec<String> {
    vec!["in_app".into()]
}

/// `[approval.totp]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Totp {
    /// A TOML file of `user = "hex secret"` lines (relative to the config file), the
    /// secrets enrolled in each approver's authenticator app.
    pub(crate) secrets_file: Option<PathBuf>,
}

/// `[approval.duo]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Duo {
    /// `api-XXXXXXXX.duosecurity.com`.
    pub(crate) host: String,
    /// `https` (default) or `http` (only for a local test server).
    #[serde(default = "https")]
    pub(crate) scheme: String,
    /// The integration key.
    pub(crate) ikey: String,
    /// The environment variable holding the secret key.
    pub(crate) skey_env: String,
    /// Seconds to wait for the push to be answered.
    pub(crate) timeout_seconds: Option<u64>,
}

fn https() -> String {
    "https".into()
}

/// `[store]`: running several instances on one PostgreSQL. Its URL then holds roles,
/// tokens, approvals and votes, TOTP enrollments and used steps, deploys, the audit log
/// (unless `[audit] url` names another PostgreSQL) and the service's keys, sealed under
/// `key_file` or `key_env`. Changes made by one instance reach the others through
/// `LISTEN`/`NOTIFY`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(
    not(feature = "postgres"),
    expect(dead_code, reason = "read only when built with the postgres feature")
)]
pub(crate) struct Store {
    /// `postgres://user@host:port/db` (needs the `postgres` feature).
    pub(crate) url: String,
    /// A file holding the key (64 hex digits) that seals the keys kept in the database
    /// (relative to the configuration file). Every instance needs the same one.
    pub(crate) key_file: Option<PathBuf>,
    /// Or: the environment variable holding that key.
    pub(crate) key_env: Option<String>,
    /// Connections per pool (default 8; each store has its own pool).
    pub(crate) max_connections: Option<u32>,
    /// Seconds between the periodic reloads of roles and tokens, the fallback behind the
    /// notifications (default 30, 1 to 3,600).
    pub(crate) refresh_seconds: Option<u64>,
    /// Seconds without a successful reload after which roles and tokens are refused:
    /// fail closed when the database is out of reach (default 60, at least twice
    /// `refresh_seconds`, at most 86,400).
    pub(crate) max_staleness_seconds: Option<u64>,
}

/// `[audit]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Audit {
    /// `sqlite://FILE`, `jsonl://DIR` (relative to the data dir) or `postgres://…`. With a
    /// `[store]`, absent means the store's database.
    #[serde(default)]
    pub(crate) url: String,
    /// Seconds to wait for the log to acknowledge an intent (default 5).
    pub(crate) timeout_seconds: Option<u64>,
    /// Request parameters stored as HMACs instead of values.
    #[serde(default)]
    pub(crate) redact: Vec<String>,
    /// Milliseconds an outcome may wait to share its write with the next event (default 0,
    /// at most 10,000). Outcomes are written after the answer, so this costs no caller time;
    /// it trades fewer syncs for outcomes reaching the disk later.
    pub(crate) outcome_linger_ms: Option<u64>,
    /// A folder for signed checkpoints of the log's head (relative to the configuration
    /// file): `checkpoints.jsonl` and `public-key`, for `portcullis-audit verify
    /// --checkpoints`. Checked at start, written then, every `checkpoint_seconds` while the
    /// head moves and at a clean shutdown. It anchors the log only if whoever can write the
    /// audit database cannot rewrite it. Absent: no checkpoints.
    pub(crate) checkpoint_dir: Option<PathBuf>,
    /// Seconds between checkpoints (default 60, 1 to 86,400); needs `checkpoint_dir`.
    pub(crate) checkpoint_seconds: Option<u64>,
    /// The PKCS#8 Ed25519 key that signs checkpoints (`portcullis-audit keygen`; relative
    /// to the configuration file); needs `checkpoint_dir`. Default: `audit-checkpoint.pk8`
    /// in the data dir, generated with mode 0600 at the first start.
    pub(crate) checkpoint_key: Option<PathBuf>,
}

/// The longest `[audit] outcome_linger_ms` accepted.
pub(crate) const MAX_OUTCOME_LINGER_MS: u64 = 10_000;

/// `[audit] checkpoint_seconds` when not set.
pub(crate) const DEFAULT_CHECKPOINT_SECONDS: u64 = 60;

/// The longest `[audit] checkpoint_seconds` accepted: a day.
pub(crate) const MAX_CHECKPOINT_SECONDS: u64 = 86_400;

/// A configuration error, with the file it came from.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid.
    #[error("invalid configuration {path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

impl Config {
    /// Parses `text`; `origin` names it in errors.
    pub(crate) fn parse(text: &str, origin: &Path) -> Result<Config, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Invalid {
            path: origin.to_owned(),
            message: e.to_string(),
        })
    }

    /// Reads and parses `path`; relative paths inside are resolved against its folder.
    pub(crate) fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut config = Config::parse(&text, path)?;
        let base = path.parent().unwrap_or(Path::new("."));
        if let Some(login) = config
            .authentication
            .as_mut()
            .and_then(|a| a.login.as_mut())
        {
            login.users_file = base.join(&login.users_file);
        }
        if let Some(file) = config
            .approval
            .as_mut()
            .and_then(|a| a.totp.secrets_file.as_mut())
        {
            *file = base.join(&*file);
        }
        if let Some(file) = config.store.as_mut().and_then(|s| s.key_file.as_mut()) {
            *file = base.join(&*file);
        }
        if let Some(tls) = config.tls.as_mut() {
            tls.resolve_paths(base);
        }
        if let Some(audit) = config.audit.as_mut() {
            for path in [&mut audit.checkpoint_dir, &mut audit.checkpoint_key]
                .into_iter()
                .flatten()
            {
                *path = base.join(&*path);
            }
        }
        Ok(config)
    }

    /// The built-in configuration.
    pub(crate) fn default_config() -> Result<Config, ConfigError> {
        Config::parse(DEFAULT_CONFIG, Path::new("<built-in>"))
    }
}

/// TOTP secrets file: `user = "hex"`.
pub(crate) type TotpSecrets = BTreeMap<String, String>;
