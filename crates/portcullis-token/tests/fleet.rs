//! Several instances over one store: the staleness bound (checks refuse once the index
//! has not been refreshed for too long) and, on a real PostgreSQL (feature `postgres`;
//! `scripts/with-services` sets `PORTCULLIS_TEST_POSTGRES_URL`), a revocation made by one
//! instance reaching another through `LISTEN`/`NOTIFY`, long before its periodic reload.
#![expect(
    clippy::unwrap_used,
    reason = "tests: a failed unwrap is a failed test"
)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, UNIX_EPOCH};

use async_trait::async_trait;
use portcullis_core::ManualClock;
use portcullis_token::{
    AuthError, IssueRequest, MemoryTokenStore, TokenId, TokenKey, TokenKind, TokenOptions,
    TokenRecord, TokenStore, Tokens,
};

fn key() -> TokenKey {
    TokenKey::from_hex(&"cd".repeat(32)).unwrap()
}

fn personal(name: &str) -> IssueRequest {
    IssueRequest {
        kind: TokenKind::Personal,
        name: name.into(),
        owner: "alice".into(),
        scope: None,
        ttl: None,
    }
}

/// A memory store whose reads can fail, as an unreachable database does.
#[derive(Debug, Default)]
struct FlakyStore {
    inner: MemoryTokenStore,
    down: AtomicBool,
}

impl FlakyStore {
    fn up(&self) -> Result<(), AuthError> {
        if self.down.load(Ordering::SeqCst) {
            Err(AuthError::Store("connection refused".into()))
        } else {
            Ok(())
        }
    }
}

#[async_trait]
impl TokenStore for FlakyStore {
    async fn insert(&self, record: &TokenRecord) -> Result<(), AuthError> {
        self.up()?;
        self.inner.insert(record).await
    }
    async fn all(&self) -> Result<Vec<TokenRecord>, AuthError> {
        self.up()?;
        self.inner.all().await
    }
    async fn revoke(&self, id: &TokenId, at: std::time::SystemTime) -> Result<bool, AuthError> {
        self.up()?;
        self.inner.revoke(id, at).await
    }
    async fn record_use(&self, uses: &[(TokenId, std::time::SystemTime)]) -> Result<(), AuthError> {
        self.up()?;
        self.inner.record_use(uses).await
    }
    async fn purge(&self, before: std::time::SystemTime) -> Result<u64, AuthError> {
        self.up()?;
        self.inner.purge(before).await
    }
}

#[tokio::test]
async fn checks_refuse_once_the_index_is_older_than_its_bound() {
    let clock = Arc::new(ManualClock::new(
        UNIX_EPOCH + Duration::from_secs(1_800_000_000),
    ));
    let store = Arc::new(FlakyStore::default());
    let mut options = TokenOptions::default();
    options.clock = clock.clone();
    let tokens = Tokens::open(store.clone(), key(), options).await.unwrap();
    let issued = tokens.issue(personal("laptop")).await.unwrap();
    let secret = issued.secret.expose();

    // No bound set: an old index is trusted, as a single instance's always is.
    clock.advance(Duration::from_secs(3600));
    assert!(tokens.check(secret).is_ok());

    tokens.set_max_staleness(Duration::from_secs(10));
    assert!(matches!(tokens.check(secret), Err(AuthError::Store(_))));
    tokens.reload().await.unwrap();
    assert!(tokens.check(secret).is_ok());

    // The store goes away: fine within the bound, refused past it, fine again once a
    // reload succeeds.
    store.down.store(true, Ordering::SeqCst);
    clock.advance(Duration::from_secs(9));
    assert!(tokens.reload().await.is_err());
    assert!(tokens.check(secret).is_ok());
    clock.advance(Duration::from_secs(2));
    assert!(matches!(tokens.check(secret), Err(AuthError::Store(_))));
    store.down.store(false, Ordering::SeqCst);
    tokens.reload().await.unwrap();
    assert!(tokens.check(secret).is_ok());
}

#[cfg(feature = "postgres")]
#[tokio::test]
async fn a_revocation_reaches_another_instance_by_notification() {
    use portcullis_token::PostgresTokenStore;

    let admin = portcullis_test_support::service_or_skip!("PORTCULLIS_TEST_POSTGRES_URL");
    let name = format!("tokens_notify_{}", std::process::id());
    let pool = sqlx::PgPool::connect(&admin).await.unwrap();
    sqlx::query(&format!("DROP DATABASE IF EXISTS {name}"))
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&pool)
        .await
        .unwrap();
    let (base, _) = admin.rsplit_once('/').unwrap();
    let url = format!("{base}/{name}");

    let store_a = PostgresTokenStore::connect(&url, 2).await.unwrap();
    let store_b = PostgresTokenStore::connect(&url, 2).await.unwrap();
    let a = Arc::new(
        Tokens::open(Arc::new(store_a), key(), TokenOptions::default())
            .await
            .unwrap(),
    );
    let b = Arc::new(
        Tokens::open(Arc::new(store_b.clone()), key(), TokenOptions::default())
            .await
            .unwrap(),
    );
    // B's periodic reload is an hour away: only a notification can tell it in time.
    let listener = store_b.listen().await.unwrap();
    let _refresher = b.spawn_notified_refresher(
        Duration::from_secs(3600),
        Duration::from_secs(7200),
        listener.wakeup(),
    );

    let issued = a.issue(personal("laptop")).await.unwrap();
    let secret = issued.secret.expose().to_owned();
    let seen = wait_until(|| b.check(&secret).is_ok()).await;
    assert!(seen, "B never learned of the token issued on A");

    assert!(a.revoke(&issued.record.id).await.unwrap());
    let refused = wait_until(|| matches!(b.check(&secret), Err(AuthError::Revoked))).await;
    assert!(refused, "B still accepts the token revoked on A");

    drop((a, b, _refresher, listener));
    sqlx::query(&format!("DROP DATABASE {name} WITH (FORCE)"))
        .execute(&pool)
        .await
        .unwrap();
}

/// Polls `done` every 10 ms for up to 20 s (a liveness bound far below the refresher's
/// hour, not a latency measurement).
#[cfg(feature = "postgres")]
async fn wait_until(done: impl Fn() -> bool) -> bool {
    for _ in 0..2000 {
        if done() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    done()
}
