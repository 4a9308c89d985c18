//! Session keys and single-use ids shared by several instances on a real PostgreSQL
//! (feature `postgres`; `scripts/with-services` sets `PORTCULLIS_TEST_POSTGRES_URL`): keys
//! made once, rotated without refusing a token, sealed at rest, seen by another instance
//! through `LISTEN`/`NOTIFY`; an id spent once across instances.
#![cfg(feature = "postgres")]
#![allow(
    clippy::unwrap_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "tests: a failed expectation is a failed test"
)]

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use portcullis_core::ManualClock;
use portcullis_token::{
    AuthError, PostgresSessionKeys, PostgresSpentIds, SealingKey, SessionAlgorithm, SessionIssuer,
    SessionKeyPolicy, SessionKeyRing,
};

/// A fresh database of its own: its URL, the admin pool to drop it with and its name;
/// `None` (the test is skipped) without PostgreSQL, a panic when services are required.
async fn database(tag: &str) -> Option<(String, sqlx::PgPool, String)> {
    let admin = match portcullis_test_support::lookup("PORTCULLIS_TEST_POSTGRES_URL") {
        Ok(url) => url,
        Err(missing) => match portcullis_test_support::skip_or_fail(&missing) {
            Ok(()) => return None,
            Err(message) => panic!("{message}"),
        },
    };
    let name = format!("token_fleet_{tag}_{}", std::process::id());
    let pool = sqlx::PgPool::connect(&admin).await.unwrap();
    sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&pool)
        .await
        .unwrap();
    let (base, _) = admin.rsplit_once('/').unwrap();
    Some((format!("{base}/{name}"), pool, name))
}

async fn drop_database(admin: &sqlx::PgPool, name: &str) {
    sqlx::query(&format!("DROP DATABASE {name} WITH (FORCE)"))
        .execute(admin)
        .await
        .unwrap();
}

fn sealer() -> SealingKey {
    SealingKey::from_hex(&"5e".repeat(32)).unwrap()
}

const T0: u64 = 1_900_000_000;

fn policy() -> SessionKeyPolicy {
    SessionKeyPolicy::new(SessionAlgorithm::EdDSA, Duration::from_secs(900))
        .with_rotate_every(Duration::from_secs(3600))
        .with_publish_ahead(Duration::from_secs(600))
}

async fn instance(url: &str, set: &str, clock: &Arc<ManualClock>) -> PostgresSessionKeys {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect(url)
        .await
        .unwrap();
    PostgresSessionKeys::from_pool(pool, set, sealer(), policy())
        .await
        .unwrap()
        .with_clock(clock.clone())
}

fn issuer(ring: &SessionKeyRing, clock: &Arc<ManualClock>) -> SessionIssuer {
    SessionIssuer::with_ring(ring.clone(), "broker", "broker")
        .unwrap()
        .with_ttl(Duration::from_secs(900))
        .unwrap()
        .with_clock(clock.clone())
}

fn kids(ring: &SessionKeyRing) -> Vec<String> {
    ring.keys().iter().map(|k| k.key.kid().to_owned()).collect()
}

#[tokio::test]
async fn keys_are_made_once_rotate_without_refusing_a_token_and_are_sealed() {
    let Some((url, admin, name)) = database("rotate").await else {
        return;
    };
    let clock = Arc::new(ManualClock::new(UNIX_EPOCH + Duration::from_secs(T0)));
    let a = instance(&url, "sessions", &clock).await;
    let b = instance(&url, "sessions", &clock).await;
    let ring_a = a.ring().await.unwrap();
    let ring_b = b.ring().await.unwrap();
    assert_eq!(kids(&ring_a).len(), 1);
    assert_eq!(
        kids(&ring_a),
        kids(&ring_b),
        "B uses A's key, not one of its own"
    );
    let (issuer_a, issuer_b) = (issuer(&ring_a, &clock), issuer(&ring_b, &clock));
    let (verify_a, verify_b) = (issuer_a.verifier().unwrap(), issuer_b.verifier().unwrap());

    // A session from A works on B.
    let first = issuer_a.issue("alice", &[]).unwrap();
    assert_eq!(
        verify_b.verify(first.expose()).await.unwrap().subject(),
        "alice"
    );

    // At rest the key is sealed: the row never holds its secret material.
    let sealed: Vec<u8> = sqlx::query_scalar("SELECT sealed FROM portcullis_session_keys")
        .fetch_one(&admin_of(&url).await)
        .await
        .unwrap();
    let secret = issuer_a.key().secret_material().to_vec();
    assert!(!sealed.windows(secret.len()).any(|w| w == secret));
    assert!(
        !sealed
            .windows(16)
            .any(|w| secret.windows(16).any(|s| s == w))
    );

    // Ten minutes before the key stops signing, the next one is published, not yet used.
    clock.advance(Duration::from_secs(3000));
    let mid = issuer_a.issue("bob", &[]).unwrap();
    a.refresh(&ring_a).await.unwrap();
    b.refresh(&ring_b).await.unwrap();
    assert_eq!(kids(&ring_a).len(), 2);
    assert_eq!(
        kids(&ring_a),
        kids(&ring_b),
        "one new key, not one per instance"
    );
    let old = kids(&ring_a)[0].clone();
    let new = kids(&ring_a)[1].clone();
    assert_eq!(issuer_a.key().kid(), old);

    // Past the old key's window the new key signs, and the old key's tokens still verify.
    clock.advance(Duration::from_secs(601));
    assert_eq!(issuer_a.key().kid(), new);
    assert_eq!(issuer_b.key().kid(), new);
    let late = issuer_b.issue("carol", &[]).unwrap();
    assert_eq!(
        verify_a.verify(late.expose()).await.unwrap().subject(),
        "carol"
    );
    assert_eq!(
        verify_a.verify(mid.expose()).await.unwrap().subject(),
        "bob"
    );
    assert!(matches!(
        verify_a.verify(first.expose()).await,
        Err(AuthError::Expired)
    ));

    // Once its last token has expired, the old key is dropped everywhere.
    clock.advance(Duration::from_secs(900 + 61));
    a.refresh(&ring_a).await.unwrap();
    b.refresh(&ring_b).await.unwrap();
    assert_eq!(kids(&ring_a), std::slice::from_ref(&new));
    assert_eq!(kids(&ring_b), [new]);

    // Another sealing key opens nothing, and nothing is used.
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    let stranger = PostgresSessionKeys::from_pool(
        pool,
        "sessions",
        SealingKey::from_hex(&"77".repeat(32)).unwrap(),
        policy(),
    )
    .await
    .unwrap()
    .with_clock(clock.clone());
    let refused = stranger.load().await.unwrap_err();
    assert!(matches!(refused, AuthError::Crypto(_)), "{refused}");
    assert!(refused.to_string().contains("sealing key"), "{refused}");

    drop_database(&admin, &name).await;
}

async fn admin_of(url: &str) -> sqlx::PgPool {
    sqlx::PgPool::connect(url).await.unwrap()
}

#[tokio::test]
async fn instances_starting_together_make_one_key() {
    let Some((url, admin, name)) = database("race").await else {
        return;
    };
    let clock = Arc::new(ManualClock::new(UNIX_EPOCH + Duration::from_secs(T0)));
    // Six instances starting at once (each with its own connections), in one task: the
    // store's migration future is not `Send`, so it is not spawned.
    let start = || async { kids(&instance(&url, "race", &clock).await.ring().await.unwrap()) };
    let (k1, k2, k3, k4, k5, k6) =
        tokio::join!(start(), start(), start(), start(), start(), start());
    let seen = [k1, k2, k3, k4, k5, k6];
    assert!(
        seen.iter().all(|k| k.len() == 1 && k == &seen[0]),
        "{seen:?}"
    );
    let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM portcullis_session_keys")
        .fetch_one(&admin_of(&url).await)
        .await
        .unwrap();
    assert_eq!(rows, 1);
    drop_database(&admin, &name).await;
}

#[tokio::test]
async fn a_key_made_on_one_instance_reaches_another_by_notification() {
    let Some((url, admin, name)) = database("notify").await else {
        return;
    };
    let clock = Arc::new(ManualClock::new(UNIX_EPOCH + Duration::from_secs(T0)));
    let a = instance(&url, "sessions", &clock).await;
    let b = instance(&url, "sessions", &clock).await;
    let ring_a = a.ring().await.unwrap();
    let ring_b = b.ring().await.unwrap();
    // B's periodic refresh is an hour away: only a notification can tell it in time.
    let listener = b.listen().await.unwrap();
    let _refresher = b.spawn_refresher(
        ring_b.clone(),
        Duration::from_secs(3600),
        Some(listener.wakeup()),
    );
    clock.advance(Duration::from_secs(3100));
    a.refresh(&ring_a).await.unwrap();
    assert_eq!(kids(&ring_a).len(), 2);
    let mut seen = false;
    // A liveness bound far below the refresher's hour, not a latency measurement.
    for _ in 0..2000 {
        if kids(&ring_b) == kids(&ring_a) {
            seen = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(seen, "B never learned of the key A made");
    drop((listener, _refresher));
    drop_database(&admin, &name).await;
}

#[tokio::test]
async fn an_id_is_spent_once_across_instances_and_purged_after_expiry() {
    let Some((url, admin, name)) = database("spent").await else {
        return;
    };
    let clock = Arc::new(ManualClock::new(UNIX_EPOCH + Duration::from_secs(T0)));
    let open = |scope: &'static str| {
        let (url, clock) = (url.clone(), clock.clone());
        async move {
            let pool = sqlx::PgPool::connect(&url).await.unwrap();
            PostgresSpentIds::from_pool(pool, scope)
                .await
                .unwrap()
                .with_clock(clock)
        }
    };
    let a = open("eu").await;
    let b = open("eu").await;
    let other = open("us").await;
    let exp = UNIX_EPOCH + Duration::from_secs(T0 + 30);
    assert!(a.spend("jti-1", exp).await.unwrap());
    assert!(!b.spend("jti-1", exp).await.unwrap(), "replayed on B");
    assert!(!a.spend("jti-1", exp).await.unwrap(), "replayed on A");
    assert!(other.spend("jti-1", exp).await.unwrap(), "scopes are apart");
    assert!(a.spend("", exp).await.is_err());

    // Many instances spending one id at once: exactly one succeeds.
    let mut racers = tokio::task::JoinSet::new();
    for _ in 0..12 {
        let spender = b.clone();
        racers.spawn(async move { spender.spend("jti-race", exp).await.unwrap() });
    }
    let mut won = 0;
    while let Some(first) = racers.join_next().await {
        won += usize::from(first.unwrap());
    }
    assert_eq!(won, 1);

    // Kept until the grace after expiry has passed, then purged; later ids stay.
    let later = UNIX_EPOCH + Duration::from_secs(T0 + 3600);
    assert!(a.spend("jti-later", later).await.unwrap());
    clock.advance(Duration::from_secs(30 + 119));
    assert_eq!(a.purge().await.unwrap(), 0);
    clock.advance(Duration::from_secs(2));
    assert_eq!(
        a.purge().await.unwrap(),
        3,
        "jti-1 twice (two scopes) and jti-race"
    );
    assert!(!b.spend("jti-later", later).await.unwrap());
    drop_database(&admin, &name).await;
}

#[tokio::test]
async fn failed_logins_count_across_instances() {
    use portcullis_directory::{Password, PasswordHash, StaticDirectory};
    use portcullis_token::{PasswordLogin, PostgresLoginAttempts};

    let Some((url, admin, name)) = database("logins").await else {
        return;
    };
    let hash =
        PasswordHash::create_with_iterations(&Password::new("hunter2").unwrap(), 10_000).unwrap();
    let directory: Arc<dyn portcullis_directory::Directory> = Arc::new(
        StaticDirectory::from_toml(&format!(
            "[[user]]\nname = \"alice\"\npassword_hash = \"{hash}\"\n\
             [[user]]\nname = \"bob\"\npassword_hash = \"{hash}\""
        ))
        .unwrap(),
    );
    let instance = || {
        let (url, directory) = (url.clone(), directory.clone());
        async move {
            let pool = sqlx::PgPool::connect(&url).await.unwrap();
            let attempts = PostgresLoginAttempts::from_pool(pool).await.unwrap();
            let key = portcullis_token::SessionKey::generate(SessionAlgorithm::EdDSA).unwrap();
            PasswordLogin::new(directory, SessionIssuer::new(key, "b", "b").unwrap())
                .with_attempt_store(Arc::new(attempts))
        }
    };
    let (a, b) = (instance().await, instance().await);
    let (wrong, right) = (
        Password::new("guess").unwrap(),
        Password::new("hunter2").unwrap(),
    );
    // Three guesses on A, two on B: five for the service, so both refuse alice now.
    for login in [&a, &a, &a, &b, &b] {
        assert!(matches!(
            login.login("alice", &wrong).await,
            Err(AuthError::Directory(_))
        ));
    }
    for login in [&a, &b] {
        assert!(matches!(
            login.login("alice", &right).await,
            Err(AuthError::TooManyAttempts(295..=300))
        ));
    }
    assert!(a.login("bob", &right).await.is_ok(), "another name is free");
    // The names are not kept in clear.
    let names: Vec<String> = sqlx::query_scalar("SELECT user_hash FROM portcullis_login_attempts")
        .fetch_all(&admin_of(&url).await)
        .await
        .unwrap();
    assert_eq!(
        names.len(),
        2,
        "alice's five failures; bob's right login handed back"
    );
    assert!(names.iter().all(|n| n.len() == 64 && !n.contains("alice")));
    // The store out of reach: logins are refused, not let through uncounted.
    drop_database(&admin, &name).await;
    assert!(matches!(
        a.login("bob", &right).await,
        Err(AuthError::Store(_))
    ));
}
