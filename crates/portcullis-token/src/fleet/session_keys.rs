//! [`PostgresSessionKeys`]: session signing keys in PostgreSQL, shared by every instance,
//! rotated on a schedule, sealed at rest.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use portcullis_core::{Clock, SystemClock};
use tokio::sync::Notify;

use super::{from_secs, secs_of, to_secs};
use crate::{AuthError, RingKey, SealingKey, SessionAlgorithm, SessionKey, SessionKeyRing};

/// The `NOTIFY` channel a key added or dropped is announced on.
pub const SESSION_KEYS_CHANNEL: &str = "portcullis_session_keys";

const MIGRATIONS: &[(i64, &str)] = &[(
    1,
    include_str!("../../migrations/postgres_session_keys_0001.sql"),
)];
/// Concurrent first starts take turns at migrating.
const MIGRATION_LOCK: i64 = 7_283_901_234_567_032;
/// Instances take turns at making a key, so that one is made, not one each.
const ROTATION_LOCK: i64 = 7_283_901_234_567_033;
/// Past a token's expiry, the verifier's leeway and then some: a key verifies this much
/// longer than the last token it signed lives.
const VERIFY_MARGIN: Duration = Duration::from_secs(60);

/// When session keys rotate, and for how long they verify.
///
/// A key is made `publish_ahead` before the current one stops signing, so every instance
/// (refreshing on a notification, or every refresh period at worst) verifies it before its
/// first signature. It then signs for `rotate_every`, and verifies until `token_ttl` (plus a
/// minute) after it stopped signing: no token is refused because its key rotated.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SessionKeyPolicy {
    /// The keys' algorithm.
    pub algorithm: SessionAlgorithm,
    /// How long one key signs (default 24 h).
    pub rotate_every: Duration,
    /// The longest life of a token the keys sign (the issuer's TTL).
    pub token_ttl: Duration,
    /// How long before it signs a new key is published (default 10 min; less than
    /// `rotate_every`, and longer than the refresh period of every instance).
    pub publish_ahead: Duration,
}

impl SessionKeyPolicy {
    /// Keys of `algorithm` for tokens living up to `token_ttl`, rotating daily.
    pub fn new(algorithm: SessionAlgorithm, token_ttl: Duration) -> Self {
        SessionKeyPolicy {
            algorithm,
            rotate_every: Duration::from_secs(24 * 3600),
            token_ttl,
            publish_ahead: Duration::from_secs(600),
        }
    }

    /// Sets how long one key signs.
    #[must_use]
    pub fn with_rotate_every(mut self, rotate_every: Duration) -> Self {
        self.rotate_every = rotate_every;
        self
    }

    /// Sets how long before it signs a new key is published.
    #[must_use]
    pub fn with_publish_ahead(mut self, publish_ahead: Duration) -> Self {
        self.publish_ahead = publish_ahead;
        self
    }

    fn validate(&self) -> Result<(), AuthError> {
        if self.token_ttl.as_secs() == 0 || self.token_ttl > crate::MAX_SESSION_TTL {
            return Err(AuthError::Config(
                "session keys: token_ttl must be between 1 s and 24 h".into(),
            ));
        }
        if self.publish_ahead.as_secs() == 0 || self.publish_ahead >= self.rotate_every {
            return Err(AuthError::Config(
                "session keys: publish_ahead must be at least 1 s and less than rotate_every"
                    .into(),
            ));
        }
        if self.rotate_every > Duration::from_secs(366 * 24 * 3600) {
            return Err(AuthError::Config(
                "session keys: rotate_every is at most a year".into(),
            ));
        }
        Ok(())
    }
}

fn algorithm_name(algorithm: SessionAlgorithm) -> &'static str {
    match algorithm {
        SessionAlgorithm::EdDSA => "EdDSA",
        SessionAlgorithm::ES256 => "ES256",
        SessionAlgorithm::HS256 => "HS256",
    }
}

/// What a sealed key is bound to: its purpose, its set, its id and its algorithm. A row
/// copied to another set or id does not open.
fn context(key_set: &str, kid: &str, algorithm: &str) -> Vec<u8> {
    format!("portcullis-token session key v1\0{key_set}\0{kid}\0{algorithm}").into_bytes()
}

/// A row of `portcullis_session_keys`: kid, sealed secret, signs_from, signs_until,
/// verifies_until.
type KeyRow = (String, Vec<u8>, i64, i64, i64);

/// The session signing keys of one key set (one service's sessions, say), in PostgreSQL:
/// every instance reads the same keys, so a session issued by one is accepted by all, and a
/// restart signs nobody out. Keys rotate by [`SessionKeyPolicy`]; whichever instance first
/// finds a rotation due makes the next key (under an advisory lock, so exactly one is made).
/// Each key's secret is sealed with AES-256-GCM under the [`SealingKey`], bound to the set
/// and key id: the table alone yields no usable key.
///
/// Use: [`ring`](Self::ring) at start, an issuer on it
/// ([`SessionIssuer::with_ring`](crate::SessionIssuer::with_ring)), then
/// [`spawn_refresher`](Self::spawn_refresher) with a [`listen`](Self::listen)er's wake-up, so
/// keys made by another instance are seen within milliseconds.
///
/// Without the database the ring keeps the keys it has, each within its windows: the
/// current key signs until its window ends, and then — had no refresh succeeded by then —
/// nothing signs and logins fail closed, while tokens already issued verify until their
/// keys' windows end.
#[derive(Debug, Clone)]
pub struct PostgresSessionKeys {
    pool: sqlx::PgPool,
    key_set: String,
    sealer: SealingKey,
    policy: SessionKeyPolicy,
    clock: Arc<dyn Clock>,
}

impl PostgresSessionKeys {
    /// The keys of `key_set` in `pool`'s database (the table is made if missing), sealed
    /// under `sealer`, rotated by `policy`.
    ///
    /// # Errors
    ///
    /// [`AuthError::Config`] for an invalid policy or key set name; [`AuthError::Store`] if
    /// the migration fails.
    pub async fn from_pool(
        pool: sqlx::PgPool,
        key_set: impl Into<String>,
        sealer: SealingKey,
        policy: SessionKeyPolicy,
    ) -> Result<Self, AuthError> {
        let key_set = key_set.into();
        if key_set.is_empty() || key_set.len() > 128 || key_set.chars().any(char::is_control) {
            return Err(AuthError::Config(
                "a session key set's name is 1 to 128 characters, no control characters".into(),
            ));
        }
        policy.validate()?;
        portcullis_sql::postgres::migrate(
            &pool,
            "portcullis_session_key_schema",
            Some(MIGRATION_LOCK),
            MIGRATIONS,
        )
        .await?;
        Ok(PostgresSessionKeys {
            pool,
            key_set,
            sealer,
            policy,
            clock: Arc::new(SystemClock),
        })
    }

    /// Uses `clock` for the keys' windows.
    #[must_use]
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The policy.
    pub fn policy(&self) -> &SessionKeyPolicy {
        &self.policy
    }

    /// Makes the next key if one is due, drops keys that no longer verify, and reads the
    /// rest, opened.
    ///
    /// # Errors
    ///
    /// [`AuthError::Store`] if the database fails; [`AuthError::Crypto`] if a key does not
    /// open under the sealing key (another sealing key than the instance that made it, or an
    /// altered row) — nothing is used then.
    pub async fn load(&self) -> Result<Vec<RingKey>, AuthError> {
        let now = to_secs(self.clock.now());
        let algorithm = algorithm_name(self.policy.algorithm);
        // A purge that finds nothing notifies nobody (the trigger is per row).
        sqlx::query(
            "DELETE FROM portcullis_session_keys WHERE key_set = $1 AND verifies_until < $2",
        )
        .bind(&self.key_set)
        .bind(now)
        .execute(&self.pool)
        .await?;
        let last: Option<i64> = sqlx::query_scalar(
            "SELECT MAX(signs_until) FROM portcullis_session_keys \
             WHERE key_set = $1 AND algorithm = $2",
        )
        .bind(&self.key_set)
        .bind(algorithm)
        .fetch_one(&self.pool)
        .await?;
        if self.due(last, now) {
            self.rotate(now).await?;
        }
        let rows: Vec<KeyRow> = sqlx::query_as(
            "SELECT kid, sealed, signs_from, signs_until, verifies_until \
             FROM portcullis_session_keys \
             WHERE key_set = $1 AND algorithm = $2 AND verifies_until >= $3 \
             ORDER BY signs_from",
        )
        .bind(&self.key_set)
        .bind(algorithm)
        .bind(now)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(|row| self.open(row)).collect()
    }

    /// A ring of the keys, as [`load`](Self::load) reads them.
    ///
    /// # Errors
    ///
    /// As [`load`](Self::load).
    pub async fn ring(&self) -> Result<SessionKeyRing, AuthError> {
        SessionKeyRing::new(self.load().await?)
    }

    /// Loads the keys into `ring`.
    ///
    /// # Errors
    ///
    /// As [`load`](Self::load), and [`AuthError::Config`] if the ring holds keys of another
    /// algorithm; the ring is left as it was.
    pub async fn refresh(&self, ring: &SessionKeyRing) -> Result<(), AuthError> {
        ring.replace(self.load().await?)
    }

    /// Listens for keys added or dropped by any instance ([`SESSION_KEYS_CHANNEL`]).
    ///
    /// # Errors
    ///
    /// [`AuthError::Store`] if the listening connection cannot be opened.
    pub async fn listen(&self) -> Result<crate::ChangeListener, AuthError> {
        Ok(crate::ChangeListener::start(&self.pool, SESSION_KEYS_CHANNEL).await?)
    }

    /// Keeps `ring` up to date from a task of its own, until the returned guard is dropped:
    /// it refreshes when `wake` is notified (hand it a [`listen`](Self::listen)er's
    /// wake-up), every `every` (at least a second), and when the next key is due. A failed
    /// refresh is logged and retried; the ring keeps its keys meanwhile.
    ///
    /// # Panics
    ///
    /// Outside a Tokio runtime, as [`tokio::spawn`] does.
    pub fn spawn_refresher(
        &self,
        ring: SessionKeyRing,
        every: Duration,
        wake: Option<Arc<Notify>>,
    ) -> KeyRefresher {
        let keys = self.clone();
        let every = every.max(Duration::from_secs(1));
        let task = tokio::spawn(async move {
            loop {
                let wait = keys.until_due(&ring).min(every);
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    () = notified(wake.as_deref()) => {}
                }
                if let Err(error) = keys.refresh(&ring).await {
                    tracing::warn!(key_set = %keys.key_set, %error, "session keys could not be refreshed; keeping the ones loaded");
                }
            }
        });
        KeyRefresher { task }
    }

    /// Whether a key must be made now, given the end of the last signing window.
    fn due(&self, last_signs_until: Option<i64>, now: i64) -> bool {
        last_signs_until.is_none_or(|until| until - now <= secs_of(self.policy.publish_ahead))
    }

    /// How long until the ring's next key is due (at least a second).
    fn until_due(&self, ring: &SessionKeyRing) -> Duration {
        let last = ring.keys().iter().map(|k| k.signs_until).max();
        let now = self.clock.now();
        last.and_then(|until| until.checked_sub(self.policy.publish_ahead))
            .and_then(|due| due.duration_since(now).ok())
            .unwrap_or_default()
            .max(Duration::from_secs(1))
    }

    /// Makes the next key, unless another instance made it first. Boxed as `Send`: the
    /// compiler cannot prove the transaction's future `Send` for every lifetime once it is
    /// nested in a caller's spawned future (rust-lang/rust#102211).
    fn rotate(&self, now: i64) -> Pin<Box<dyn Future<Output = Result<(), AuthError>> + Send + '_>> {
        Box::pin(self.rotate_now(now))
    }

    async fn rotate_now(&self, now: i64) -> Result<(), AuthError> {
        let algorithm = algorithm_name(self.policy.algorithm);
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(ROTATION_LOCK)
            .execute(&mut *tx)
            .await?;
        let last: Option<i64> = sqlx::query_scalar(
            "SELECT MAX(signs_until) FROM portcullis_session_keys \
             WHERE key_set = $1 AND algorithm = $2",
        )
        .bind(&self.key_set)
        .bind(algorithm)
        .fetch_one(&mut *tx)
        .await?;
        if !self.due(last, now) {
            // Another instance made it while this one waited for the lock.
            return Ok(tx.commit().await?);
        }
        // The next key takes over where the last one stops; with none signing (the first
        // start, or every instance down past the last window) it signs at once.
        let signs_from = last.filter(|until| *until > now).unwrap_or(now);
        let signs_until = signs_from.saturating_add(secs_of(self.policy.rotate_every));
        let verifies_until = signs_until
            .saturating_add(secs_of(self.policy.token_ttl))
            .saturating_add(secs_of(VERIFY_MARGIN));
        let key = SessionKey::generate(self.policy.algorithm)?;
        let sealed = self.sealer.seal(
            &context(&self.key_set, key.kid(), algorithm),
            key.secret_material(),
        )?;
        sqlx::query(
            "INSERT INTO portcullis_session_keys \
             (key_set, kid, algorithm, sealed, signs_from, signs_until, verifies_until) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&self.key_set)
        .bind(key.kid())
        .bind(algorithm)
        .bind(sealed)
        .bind(signs_from)
        .bind(signs_until)
        .bind(verifies_until)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        tracing::info!(key_set = %self.key_set, kid = key.kid(), "a new session key was made");
        Ok(())
    }

    fn open(&self, row: KeyRow) -> Result<RingKey, AuthError> {
        let (kid, sealed, signs_from, signs_until, verifies_until) = row;
        let algorithm = algorithm_name(self.policy.algorithm);
        let refused = || {
            AuthError::Crypto(format!(
                "session key {kid} of set {} does not open with the configured sealing key \
                 (every instance needs the same one), or its row was altered",
                self.key_set
            ))
        };
        let material = self
            .sealer
            .open(&context(&self.key_set, &kid, algorithm), &sealed)
            .map_err(|_| refused())?;
        let key =
            SessionKey::from_secret(self.policy.algorithm, &material).map_err(|_| refused())?;
        if key.kid() != kid {
            return Err(refused());
        }
        Ok(RingKey {
            key,
            signs_from: from_secs(signs_from),
            signs_until: from_secs(signs_until),
            verifies_until: from_secs(verifies_until),
        })
    }
}

async fn notified(wake: Option<&Notify>) {
    match wake {
        Some(wake) => wake.notified().await,
        None => std::future::pending().await,
    }
}

/// The task [`PostgresSessionKeys::spawn_refresher`] started; it stops when this is dropped.
#[derive(Debug)]
pub struct KeyRefresher {
    task: tokio::task::JoinHandle<()>,
}

impl Drop for KeyRefresher {
    fn drop(&mut self) {
        self.task.abort();
    }
}
