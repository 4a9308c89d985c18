//! `[store] url = "postgres://…"`: several brokers on one PostgreSQL. The session keys
//! move there (`portcullis-token`'s `PostgresSessionKeys`: shared, rotated, sealed under the
//! store key), so a session from one broker works on every other and a restart signs nobody
//! out; the audit log does too, unless `audit_url` names another. Nothing else a broker
//! keeps outlives a request: vended credentials are cached per broker (a second broker
//! asks STS once more), and group lookups are cached per broker as on one. Failed logins
//! are counted in the database too, so the guessing limit holds for all brokers at once.

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// `[store]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(
    not(feature = "postgres"),
    expect(dead_code, reason = "read only when built with the postgres feature")
)]
pub(crate) struct StoreConfig {
    /// `postgres://…`.
    pub(crate) url: String,
    /// A file holding the store key (64 hex digits) that seals the session keys in the
    /// database; relative to the configuration file. Every broker needs the same one.
    pub(crate) key_file: Option<PathBuf>,
    /// Or the environment variable holding it.
    pub(crate) key_env: Option<String>,
    /// Connections in the pool (default 4).
    #[serde(default = "default_connections")]
    pub(crate) max_connections: u32,
    /// Seconds between the periodic reloads of the keys behind the notifications
    /// (default 30).
    #[serde(default = "default_refresh")]
    pub(crate) refresh_seconds: u64,
    /// Hours one session key signs before the next takes over (default 24).
    #[serde(default = "default_rotation")]
    pub(crate) key_rotation_hours: u64,
}

fn default_connections() -> u32 {
    4
}
fn default_refresh() -> u64 {
    30
}
fn default_rotation() -> u64 {
    24
}

/// The audit log's URL: `audit_url`; with a `[store]`, the store's database unless
/// `audit_url` names another PostgreSQL. A log kept on this instance (`sqlite://`,
/// `jsonl://`) beside a `[store]` is refused: every instance would write a hash chain of its
/// own, and requests would never reach the shared one.
pub(crate) fn audit_url(
    audit_url: Option<&str>,
    store: Option<&StoreConfig>,
) -> Result<String, String> {
    match (audit_url, store) {
        (Some(url), None) => Ok(url.to_owned()),
        (None, Some(store)) => Ok(store.url.clone()),
        (Some(url), Some(_))
            if url.starts_with("postgres://") || url.starts_with("postgresql://") =>
        {
            Ok(url.to_owned())
        }
        (Some(url), Some(_)) => Err(format!(
            "audit_url = {url:?} keeps the audit log on this instance while [store] shares \
             everything else: it would split the audit log into one chain per instance. Leave \
             audit_url out (the log then goes to the store's database) or name a postgres:// URL"
        )),
        (None, None) => Err("audit_url is required (or a [store] to keep the audit log in)".into()),
    }
}

impl StoreConfig {
    /// Paths made relative to the configuration's folder.
    pub(crate) fn resolve(mut self, base: &Path) -> Self {
        if let Some(file) = self.key_file.as_mut() {
            *file = base.join(&*file);
        }
        self
    }
}

/// The session keys shared by every broker: the ring, and what keeps it fresh (kept for
/// the broker's life).
#[cfg(feature = "postgres")]
pub(crate) struct SharedKeys {
    pub(crate) ring: portcullis::token::SessionKeyRing,
    /// Failed logins, counted for every broker.
    pub(crate) attempts: std::sync::Arc<portcullis::token::PostgresLoginAttempts>,
    _listener: portcullis::token::ChangeListener,
    _refresher: portcullis::token::fleet::KeyRefresher,
}

/// Opens the session keys in `store` for sessions living up to `session_ttl`.
#[cfg(feature = "postgres")]
pub(crate) async fn session_keys(
    store: &StoreConfig,
    session_ttl: std::time::Duration,
) -> Result<SharedKeys, String> {
    use std::time::Duration;

    use portcullis::token::{
        PostgresLoginAttempts, PostgresSessionKeys, SealingKey, SessionAlgorithm, SessionKeyPolicy,
    };

    if !(store.url.starts_with("postgres://") || store.url.starts_with("postgresql://")) {
        return Err("[store] url must be postgres://…".into());
    }
    if !(1..=100).contains(&store.max_connections) {
        return Err("[store] max_connections is 1 to 100".into());
    }
    if !(1..=3600).contains(&store.refresh_seconds) {
        return Err("[store] refresh_seconds is 1 to 3600".into());
    }
    if !(1..=24 * 366).contains(&store.key_rotation_hours) {
        return Err("[store] key_rotation_hours is 1 to 8784".into());
    }
    let key = match (&store.key_file, &store.key_env) {
        (Some(file), None) => SealingKey::from_file(file),
        (None, Some(name)) => SealingKey::from_env(name),
        _ => {
            return Err(
                "[store] names exactly one of key_file and key_env: the key (64 hex \
                        digits, `openssl rand -hex 32`) that seals the session keys in the \
                        database, the same for every broker"
                    .into(),
            );
        }
    }
    .map_err(|e| format!("[store] {e}"))?;
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(store.max_connections)
        .connect(&store.url)
        .await
        .map_err(|e| format!("the store database: {e}"))?;
    let rotation = Duration::from_secs(store.key_rotation_hours * 3600);
    let ahead = Duration::from_secs((2 * store.refresh_seconds).max(600)).min(rotation / 4);
    let policy = SessionKeyPolicy::new(SessionAlgorithm::EdDSA, session_ttl)
        .with_rotate_every(rotation)
        .with_publish_ahead(ahead);
    let attempts = PostgresLoginAttempts::from_pool(pool.clone())
        .await
        .map_err(|e| format!("failed-login counts: {e}"))?;
    let keys = PostgresSessionKeys::from_pool(pool, "credential-broker/sessions", key, policy)
        .await
        .map_err(|e| format!("session keys: {e}"))?;
    let ring = keys
        .ring()
        .await
        .map_err(|e| format!("session keys: {e}"))?;
    let listener = keys
        .listen()
        .await
        .map_err(|e| format!("session keys: {e}"))?;
    let refresher = keys.spawn_refresher(
        ring.clone(),
        Duration::from_secs(store.refresh_seconds),
        Some(listener.wakeup()),
    );
    Ok(SharedKeys {
        ring,
        attempts: std::sync::Arc::new(attempts),
        _listener: listener,
        _refresher: refresher,
    })
}

#[cfg(test)]
mod tests {
    use super::{StoreConfig, audit_url};

    fn store() -> StoreConfig {
        toml::from_str("url = \"postgres://broker@db/broker\"\nkey_env = \"KEY\"").unwrap()
    }

    /// The outside finding (issue 34): with a `[store]`, a local audit log started, and its
    /// requests never reached the shared chain.
    #[test]
    fn a_local_audit_log_beside_a_store_is_refused() {
        let store = store();
        for local in ["sqlite://audit-local.db", "jsonl://audit", "audit.db"] {
            let err = audit_url(Some(local), Some(&store)).unwrap_err();
            assert!(
                err.contains("one chain per instance") && err.contains(local),
                "{err}"
            );
        }
        assert_eq!(audit_url(None, Some(&store)).unwrap(), store.url);
        for shared in ["postgres://audit@db/audit", "postgresql://audit@db/audit"] {
            assert_eq!(audit_url(Some(shared), Some(&store)).unwrap(), shared);
        }
        assert_eq!(
            audit_url(Some("sqlite://audit.db"), None).unwrap(),
            "sqlite://audit.db"
        );
        assert!(audit_url(None, None).is_err());
    }
}
