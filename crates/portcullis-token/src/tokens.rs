//! [`Tokens`]: issuing, checking, listing and revoking script and personal tokens.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use aws_lc_rs::hmac;
use portcullis_core::{AuthMethod, Clock, Field, Principal, PrincipalKind, SystemClock};
use serde_json::Value;

use crate::store::{TokenHash, TokenId, TokenRecord, TokenScope, TokenStore, from_secs, to_secs};
use crate::{AuthError, Authenticator, Credential, TokenKind, TokenSecret, decode_token};

/// The server key tokens are HMACed with. A leaked database without this key does not let
/// anyone check guesses offline. `Debug` never shows it.
#[derive(Clone)]
pub struct TokenKey(hmac::Key);

impl TokenKey {
    /// A key from at least 32 bytes of secret material.
    ///
    /// # Errors
    ///
    /// [`AuthError::Config`] for shorter material.
    pub fn from_bytes(material: &[u8]) -> Result<Self, AuthError> {
        if material.len() < 32 {
            return Err(AuthError::Config(
                "the token key needs at least 32 bytes (64 hex digits)".into(),
            ));
        }
        Ok(TokenKey(hmac::Key::new(hmac::HMAC_SHA256, material)))
    }

    /// A key from hex (at least 64 digits), as kept in an environment variable.
    ///
    /// # Errors
    ///
    /// [`AuthError::Config`] if it is not hex or too short.
    pub fn from_hex(text: &str) -> Result<Self, AuthError> {
        let bytes = hex::decode(text.trim())
            .map_err(|_| AuthError::Config("the token key is not hex".into()))?;
        Self::from_bytes(&bytes)
    }

    /// A fresh random key, returned with its hex form so it can be kept.
    ///
    /// # Errors
    ///
    /// [`AuthError::Crypto`] if the random source fails.
    pub fn generate() -> Result<(Self, String), AuthError> {
        let mut bytes = [0u8; 32];
        aws_lc_rs::rand::SecureRandom::fill(&aws_lc_rs::rand::SystemRandom::new(), &mut bytes)
            .map_err(|_| AuthError::Crypto("the system random source failed".into()))?;
        Ok((Self::from_bytes(&bytes)?, hex::encode(bytes)))
    }

    pub(crate) fn hash(&self, token: &str) -> TokenHash {
        let tag = hmac::sign(&self.0, token.as_bytes());
        let mut hash = [0u8; 32];
        for (slot, byte) in hash.iter_mut().zip(tag.as_ref()) {
            *slot = *byte;
        }
        TokenHash(hash)
    }
}

impl fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenKey(<redacted>)")
    }
}

/// The longest lifetime a token service may allow: ten years.
pub const MAX_TOKEN_TTL: Duration = Duration::from_secs(3653 * 86_400);

/// Lifetimes and the clock of a [`Tokens`] service.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct TokenOptions {
    /// The lifetime of a token issued without one: 180 days.
    pub default_ttl: Duration,
    /// The longest lifetime that may be asked for: 366 days.
    pub max_ttl: Duration,
    /// The time source.
    pub clock: Arc<dyn Clock>,
}

/// Setters, so that options built outside this crate keep compiling as fields are added
/// (the struct is `#[non_exhaustive]`): `TokenOptions::default().with_…(…)`.
impl TokenOptions {
    /// Sets [`default_ttl`](Self::default_ttl).
    #[must_use]
    pub fn with_default_ttl(mut self, default_ttl: Duration) -> Self {
        self.default_ttl = default_ttl;
        self
    }

    /// Sets [`max_ttl`](Self::max_ttl).
    #[must_use]
    pub fn with_max_ttl(mut self, max_ttl: Duration) -> Self {
        self.max_ttl = max_ttl;
        self
    }

    /// Sets [`clock`](Self::clock).
    #[must_use]
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }
}

impl Default for TokenOptions {
    fn default() -> Self {
        TokenOptions {
            default_ttl: Duration::from_secs(180 * 86_400),
            max_ttl: Duration::from_secs(366 * 86_400),
            clock: Arc::new(SystemClock),
        }
    }
}

/// What to issue.
#[derive(Debug, Clone)]
pub struct IssueRequest {
    /// Script or personal.
    pub kind: TokenKind,
    /// A name, unique among active script tokens (it is the principal's subject), or among
    /// the owner's active personal tokens.
    pub name: String,
    /// The creator (script) or the person it authenticates (personal).
    pub owner: String,
    /// What it is for.
    pub scope: Option<TokenScope>,
    /// Its lifetime; `None` means the default (180 days).
    pub ttl: Option<Duration>,
}

/// A token just issued: the secret, to show once, and its record.
#[derive(Debug)]
pub struct IssuedToken {
    /// The token. It cannot be recovered later.
    pub secret: TokenSecret,
    /// What was stored.
    pub record: TokenRecord,
}

#[derive(Debug)]
struct Live {
    record: TokenRecord,
    /// Seconds since the epoch of the last use, 0 if never; written back by
    /// [`Tokens::flush_usage`].
    last_used: AtomicI64,
    flushed: AtomicI64,
}

impl Live {
    fn new(record: TokenRecord) -> Arc<Self> {
        let used = record.last_used_at.map_or(0, to_secs);
        Arc::new(Live {
            record,
            last_used: AtomicI64::new(used),
            flushed: AtomicI64::new(used),
        })
    }
}

/// Names are unique among active tokens of a kind: personal ones per owner, script ones per
/// scope (as Teletraan keys script tokens by resource and name: a `ci` token on each env).
type NameKey = (TokenKind, String, String);

fn name_key(kind: TokenKind, name: &str, owner: &str, scope: Option<&TokenScope>) -> NameKey {
    let within = match kind {
        TokenKind::Script => scope.map(|s| s.resource.to_string()).unwrap_or_default(),
        TokenKind::Personal => owner.to_owned(),
    };
    (kind, name.to_owned(), within)
}

#[derive(Debug, Default)]
struct Index {
    by_hash: HashMap<TokenHash, Arc<Live>>,
    by_id: HashMap<TokenId, Arc<Live>>,
    by_name: HashMap<NameKey, Vec<Arc<Live>>>,
}

impl Index {
    fn put(&mut self, live: Arc<Live>) {
        let r = &live.record;
        let same_name = self
            .by_name
            .entry(name_key(r.kind, &r.name, &r.owner, r.scope.as_ref()))
            .or_default();
        same_name.retain(|other| other.record.id != r.id);
        same_name.push(live.clone());
        self.by_hash.insert(r.hash, live.clone());
        self.by_id.insert(r.id.clone(), live);
    }

    fn name_taken(&self, request: &IssueRequest, now: SystemTime) -> bool {
        self.by_name
            .get(&name_key(
                request.kind,
                &request.name,
                &request.owner,
                request.scope.as_ref(),
            ))
            .is_some_and(|all| all.iter().any(|live| live.record.is_active_at(now)))
    }
}

/// Script and personal tokens: issued with ≥ 128 random bits, stored only as an HMAC,
/// checked in memory in about a microsecond, listed and revoked by id.
///
/// Checks read an in-memory index of the store; changes made through this service apply at
/// once, changes made by other instances after [`Tokens::reload`] (see
/// [`Tokens::spawn_refresher`]).
///
/// ```
/// use std::sync::Arc;
/// use portcullis_token::{IssueRequest, MemoryTokenStore, TokenKey, TokenKind, TokenOptions, Tokens};
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), portcullis_token::AuthError> {
/// let (key, _hex) = TokenKey::generate()?;
/// let tokens = Tokens::open(Arc::new(MemoryTokenStore::new()), key, TokenOptions::default()).await?;
/// let issued = tokens.issue(IssueRequest {
///     kind: TokenKind::Script,
///     name: "release-bot".into(),
///     owner: "alice".into(),
///     scope: None,
///     ttl: None,
/// }).await?;
/// let principal = tokens.check(issued.secret.expose())?;
/// assert_eq!(principal.subject(), "release-bot");
/// tokens.revoke(&issued.record.id).await?;
/// assert!(tokens.check(issued.secret.expose()).is_err());
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Tokens {
    store: Arc<dyn TokenStore>,
    key: TokenKey,
    options: TokenOptions,
    index: RwLock<Index>,
    /// Serialises issuing, so name uniqueness holds.
    issue_lock: tokio::sync::Mutex<()>,
    /// Bumped by every change made here, so a reload that read the store before it does not
    /// put the old record back (a token revoked here would be accepted until the next one).
    local_changes: AtomicU64,
    /// When the index was last known to match the store: milliseconds since the epoch at
    /// the start of the last successful load.
    confirmed_ms: AtomicU64,
    /// Past this long without a successful reload, checks refuse (milliseconds; 0: never).
    max_staleness_ms: AtomicU64,
}

impl Tokens {
    /// Loads every record from `store`.
    ///
    /// # Errors
    ///
    /// [`AuthError::Config`] if `default_ttl` exceeds `max_ttl` or either is zero;
    /// [`AuthError::Store`] if loading fails.
    pub async fn open(
        store: Arc<dyn TokenStore>,
        key: TokenKey,
        options: TokenOptions,
    ) -> Result<Self, AuthError> {
        if options.default_ttl.is_zero()
            || options.default_ttl > options.max_ttl
            || options.max_ttl > MAX_TOKEN_TTL
        {
            return Err(AuthError::Config(
                "token default_ttl must be non-zero and at most max_ttl, which is at most 10 years"
                    .into(),
            ));
        }
        let tokens = Tokens {
            store,
            key,
            options,
            index: RwLock::new(Index::default()),
            issue_lock: tokio::sync::Mutex::new(()),
            local_changes: AtomicU64::new(0),
            confirmed_ms: AtomicU64::new(0),
            max_staleness_ms: AtomicU64::new(0),
        };
        tokens.reload().await?;
        Ok(tokens)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Index> {
        self.index
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Index> {
        self.index
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Re-reads the store (picking up tokens issued or revoked by other instances), keeping
    /// last-use times not yet written back.
    ///
    /// # Errors
    ///
    /// [`AuthError::Store`].
    pub async fn reload(&self) -> Result<(), AuthError> {
        loop {
            let started = millis(self.options.clock.now());
            let changes = self.local_changes.load(Ordering::SeqCst);
            let records = self.store.all().await?;
            let mut fresh = Index::default();
            let old = self.read().by_id.clone();
            for record in records {
                let live = Live::new(record);
                if let Some(previous) = old.get(&live.record.id) {
                    live.last_used.fetch_max(
                        previous.last_used.load(Ordering::Relaxed),
                        Ordering::Relaxed,
                    );
                    live.flushed
                        .fetch_max(previous.flushed.load(Ordering::Relaxed), Ordering::Relaxed);
                }
                fresh.put(live);
            }
            let mut index = self.write();
            // A token issued or revoked here while the store was read may be missing from
            // what was read: read again rather than undo it.
            if self.local_changes.load(Ordering::SeqCst) != changes {
                continue;
            }
            *index = fresh;
            self.confirmed_ms.fetch_max(started, Ordering::SeqCst);
            return Ok(());
        }
    }

    /// From now on, [`check`](Self::check) refuses every token ([`AuthError::Store`], a
    /// 503 at the gate) once the index has gone `max` without a successful
    /// [`reload`](Self::reload): an instance cut off from a shared store would otherwise
    /// accept tokens revoked elsewhere forever. For embedders that drive reloads
    /// themselves; [`spawn_notified_refresher`](Self::spawn_notified_refresher) sets it too.
    pub fn set_max_staleness(&self, max: Duration) {
        let ms = u64::try_from(max.as_millis()).unwrap_or(u64::MAX).max(1);
        self.max_staleness_ms.store(ms, Ordering::SeqCst);
    }

    /// `Err` once the index is older than the staleness bound.
    fn fresh_enough(&self) -> Result<(), AuthError> {
        let max = self.max_staleness_ms.load(Ordering::Relaxed);
        if max == 0 {
            return Ok(());
        }
        let age = millis(self.options.clock.now())
            .saturating_sub(self.confirmed_ms.load(Ordering::Relaxed));
        if age > max {
            return Err(AuthError::Store(format!(
                "the token index was last refreshed {} ms ago, past its bound of {max} ms; \
                 refusing tokens until the store answers",
                age
            )));
        }
        Ok(())
    }

    /// Issues a token. The secret is in the result and nowhere else.
    ///
    /// # Errors
    ///
    /// [`AuthError::InvalidRequest`] for an invalid name or owner, or a lifetime of zero or
    /// above `max_ttl`; [`AuthError::Conflict`] if an active token of the kind has the name
    /// (script tokens: in the same scope; personal tokens: of the same owner);
    /// [`AuthError::Store`].
    pub async fn issue(&self, request: IssueRequest) -> Result<IssuedToken, AuthError> {
        let invalid = |e: portcullis_core::Error| AuthError::InvalidRequest(e.to_string());
        portcullis_core::validate_name(Field::Other("token name"), &request.name)
            .map_err(invalid)?;
        portcullis_core::validate_name(Field::Subject, &request.owner).map_err(invalid)?;
        let ttl = request.ttl.unwrap_or(self.options.default_ttl);
        if ttl.is_zero() || ttl > self.options.max_ttl {
            return Err(AuthError::InvalidRequest(format!(
                "a token lifetime must be between 1 s and {} days",
                self.options.max_ttl.as_secs() / 86_400
            )));
        }
        let _serial = self.issue_lock.lock().await;
        let now = self.options.clock.now();
        let taken = self.read().name_taken(&request, now);
        if taken {
            return Err(AuthError::Conflict(format!(
                "an active {} token named `{}` exists",
                request.kind.as_str(),
                request.name
            )));
        }
        let secret = TokenSecret::generate(request.kind)?;
        let record = TokenRecord {
            id: TokenId::generate()?,
            kind: request.kind,
            name: request.name,
            owner: request.owner,
            scope: request.scope,
            // Whole seconds, as stores keep them, so a reload changes nothing.
            created_at: from_secs(to_secs(now)),
            expires_at: from_secs(to_secs(now + ttl)),
            last_used_at: None,
            revoked_at: None,
            hash: self.key.hash(secret.expose()),
        };
        self.store.insert(&record).await?;
        {
            let mut index = self.write();
            index.put(Live::new(record.clone()));
            self.local_changes.fetch_add(1, Ordering::SeqCst);
        }
        tracing::info!(id = %record.id, kind = record.kind.as_str(), name = %record.name, "issued token");
        Ok(IssuedToken { secret, record })
    }

    /// Checks a token in memory: format and checksum, HMAC lookup, revocation, expiry. The
    /// lookup is keyed by the HMAC, so its timing depends on no byte of the secret an
    /// attacker controls, and unknown tokens are just [`AuthError::InvalidToken`].
    ///
    /// # Errors
    ///
    /// [`AuthError::Unrecognized`] if it is not a Portcullis token;
    /// [`AuthError::Malformed`] for a bad checksum; [`AuthError::InvalidToken`],
    /// [`AuthError::Revoked`], [`AuthError::Expired`].
    pub fn check(&self, token: &str) -> Result<Principal, AuthError> {
        let kind = decode_token(token)?;
        self.fresh_enough()?;
        let hash = self.key.hash(token);
        let live = self.read().by_hash.get(&hash).cloned();
        let Some(live) = live else {
            return Err(AuthError::InvalidToken);
        };
        let record = &live.record;
        if !bool::from(subtle::ConstantTimeEq::ct_eq(
            &record.hash.0[..],
            &hash.0[..],
        )) || record.kind != kind
        {
            return Err(AuthError::InvalidToken);
        }
        if record.revoked_at.is_some() {
            return Err(AuthError::Revoked);
        }
        let now = self.options.clock.now();
        if now >= record.expires_at {
            return Err(AuthError::Expired);
        }
        live.last_used.fetch_max(to_secs(now), Ordering::Relaxed);
        principal_of(record)
    }

    /// Revokes a token by id; `false` if there is none or it was revoked already.
    ///
    /// # Errors
    ///
    /// [`AuthError::Store`].
    pub async fn revoke(&self, id: &TokenId) -> Result<bool, AuthError> {
        let now = from_secs(to_secs(self.options.clock.now()));
        let revoked = self.store.revoke(id, now).await?;
        let mut index = self.write();
        if let Some(live) = index.by_id.get(id).cloned()
            && live.record.revoked_at.is_none()
        {
            let mut record = live.record.clone();
            record.revoked_at = Some(now);
            let replacement = Live::new(record);
            replacement
                .last_used
                .store(live.last_used.load(Ordering::Relaxed), Ordering::Relaxed);
            index.put(replacement);
        }
        self.local_changes.fetch_add(1, Ordering::SeqCst);
        Ok(revoked)
    }

    /// A token's record by id.
    pub fn get(&self, id: &TokenId) -> Option<TokenRecord> {
        self.read().by_id.get(id).map(|live| with_last_use(live))
    }

    /// Records matching `filter`, sorted by name then id.
    pub fn list(&self, filter: &TokenFilter) -> Vec<TokenRecord> {
        let now = self.options.clock.now();
        let mut records: Vec<TokenRecord> = self
            .read()
            .by_id
            .values()
            .filter(|live| filter.matches(&live.record, now))
            .map(|live| with_last_use(live))
            .collect();
        records.sort_by(|a, b| a.name.cmp(&b.name).then_with(|| a.id.cmp(&b.id)));
        records
    }

    /// Writes last-use times gathered since the previous flush to the store, in one batch.
    ///
    /// # Errors
    ///
    /// [`AuthError::Store`]; the times are kept and retried at the next flush.
    pub async fn flush_usage(&self) -> Result<usize, AuthError> {
        let pending: Vec<(Arc<Live>, i64)> = self
            .read()
            .by_id
            .values()
            .filter_map(|live| {
                let used = live.last_used.load(Ordering::Relaxed);
                (used > live.flushed.load(Ordering::Relaxed)).then(|| (live.clone(), used))
            })
            .collect();
        if pending.is_empty() {
            return Ok(0);
        }
        let uses: Vec<(TokenId, SystemTime)> = pending
            .iter()
            .map(|(live, used)| (live.record.id.clone(), from_secs(*used)))
            .collect();
        self.store.record_use(&uses).await?;
        for (live, used) in &pending {
            live.flushed.fetch_max(*used, Ordering::Relaxed);
        }
        Ok(uses.len())
    }

    /// A task that flushes last-use times and reloads the store every `every`, so that
    /// revocations made by other instances apply within that bound. Stops when the returned
    /// handle is dropped or aborted.
    pub fn spawn_refresher(self: &Arc<Self>, every: Duration) -> TokenRefresher {
        let weak = Arc::downgrade(self);
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(tokens) = weak.upgrade() else { return };
                if let Err(e) = tokens.flush_usage().await {
                    tracing::warn!(error = %e, "writing token last-use times failed");
                }
                if let Err(e) = tokens.reload().await {
                    tracing::warn!(error = %e, "reloading tokens failed");
                }
            }
        });
        TokenRefresher(task)
    }

    /// As [`spawn_refresher`](Self::spawn_refresher), and also reloads as soon as `wakeup`
    /// is notified: hand it a store's change listener (`PostgresTokenStore::listen`, feature
    /// `postgres`) and a token issued or revoked by any instance applies here within
    /// milliseconds; the periodic flush and reload stay as the fallback. It also sets the
    /// staleness bound ([`set_max_staleness`](Self::set_max_staleness)): past
    /// `max_staleness` without a successful reload, every token is refused.
    pub fn spawn_notified_refresher(
        self: &Arc<Self>,
        every: Duration,
        max_staleness: Duration,
        wakeup: Arc<tokio::sync::Notify>,
    ) -> TokenRefresher {
        self.set_max_staleness(max_staleness);
        let weak = Arc::downgrade(self);
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                let periodic = tokio::select! {
                    _ = tick.tick() => true,
                    () = wakeup.notified() => false,
                };
                let Some(tokens) = weak.upgrade() else { return };
                if periodic && let Err(e) = tokens.flush_usage().await {
                    tracing::warn!(error = %e, "writing token last-use times failed");
                }
                if let Err(e) = tokens.reload().await {
                    tracing::warn!(error = %e, "reloading tokens failed");
                }
            }
        });
        TokenRefresher(task)
    }
}

/// Stops a [`Tokens::spawn_refresher`] task when dropped.
#[derive(Debug)]
pub struct TokenRefresher(tokio::task::JoinHandle<()>);

impl Drop for TokenRefresher {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Milliseconds since the epoch (0 before it).
fn millis(time: SystemTime) -> u64 {
    time.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn with_last_use(live: &Live) -> TokenRecord {
    let mut record = live.record.clone();
    let used = live.last_used.load(Ordering::Relaxed);
    if used > 0 {
        record.last_used_at = Some(from_secs(used));
    }
    record
}

fn principal_of(record: &TokenRecord) -> Result<Principal, AuthError> {
    let mut builder = match record.kind {
        TokenKind::Script => Principal::builder(
            PrincipalKind::ScriptToken,
            record.name.as_str(),
            AuthMethod::SCRIPT_TOKEN,
        )
        .claim("owner", Value::String(record.owner.clone())),
        TokenKind::Personal => Principal::builder(
            PrincipalKind::User,
            record.owner.as_str(),
            AuthMethod::PERSONAL_TOKEN,
        )
        .claim("token_name", Value::String(record.name.clone())),
    }
    .claim("token_id", Value::String(record.id.to_string()))
    .expires_at(record.expires_at);
    if let Some(scope) = &record.scope {
        builder = builder
            .claim("scope_resource", Value::String(scope.resource.to_string()))
            .claim("scope_role", Value::String(scope.role.clone()));
    }
    Ok(builder.build()?)
}

/// Which records [`Tokens::list`] returns.
#[derive(Debug, Clone, Default)]
pub struct TokenFilter {
    /// Only this kind.
    pub kind: Option<TokenKind>,
    /// Only this owner's.
    pub owner: Option<String>,
    /// Only tokens scoped to this resource.
    pub resource: Option<portcullis_core::Resource>,
    /// Revoked and expired tokens too.
    pub include_inactive: bool,
}

impl TokenFilter {
    fn matches(&self, record: &TokenRecord, now: SystemTime) -> bool {
        self.kind.is_none_or(|k| k == record.kind)
            && self.owner.as_ref().is_none_or(|o| *o == record.owner)
            && self
                .resource
                .as_ref()
                .is_none_or(|r| record.scope.as_ref().is_some_and(|s| s.resource == *r))
            && (self.include_inactive || record.is_active_at(now))
    }
}

/// [`Tokens`] as an [`Authenticator`] for one kind (`script_token` or `personal_token`).
#[derive(Debug, Clone)]
pub struct TokenAuthenticator {
    tokens: Arc<Tokens>,
    kind: TokenKind,
}

impl TokenAuthenticator {
    /// Accepts tokens of `kind` only; others are left to the next method.
    pub fn new(tokens: Arc<Tokens>, kind: TokenKind) -> Self {
        TokenAuthenticator { tokens, kind }
    }
}

#[async_trait]
impl Authenticator for TokenAuthenticator {
    fn name(&self) -> &str {
        match self.kind {
            TokenKind::Script => "script_token",
            TokenKind::Personal => "personal_token",
        }
    }

    async fn authenticate(&self, credential: &Credential) -> Result<Principal, AuthError> {
        if !credential.secret().starts_with(self.kind.prefix()) {
            return Err(AuthError::Unrecognized);
        }
        self.tokens.check(credential.secret())
    }
}
