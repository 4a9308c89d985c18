//! The outside finding of issue 34: a burst of password guesses sent at one instant were all
//! checked, and the right password in the burst logged in, because each login read the
//! failures before its check and noted its own after it. An attempt is now counted before its
//! password is checked: of any number of concurrent guesses at most the limit are checked,
//! in memory and — with feature `postgres` and `scripts/with-services` — in PostgreSQL across
//! instances. A locked attempt table refuses logins in bounded time instead of holding them.
#![allow(
    clippy::unwrap_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "tests: a failed expectation is a failed test"
)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use portcullis_directory::{
    Directory, DirectoryError, DirectoryUser, Password, PasswordHash, StaticDirectory,
};
use portcullis_token::{AuthError, PasswordLogin, SessionAlgorithm, SessionIssuer, SessionKey};
use tokio::sync::{Semaphore, watch};

/// The guesses in one burst, well over the limit of five.
const BURST: usize = 24;

/// A directory that counts the passwords it checks and holds each wrong one until the test
/// opens the gate: every guess of the burst is in flight at once.
#[derive(Debug)]
struct GatedDirectory {
    inner: StaticDirectory,
    checked: AtomicUsize,
    seen: watch::Sender<usize>,
    gate: Semaphore,
}

impl GatedDirectory {
    fn new() -> Arc<Self> {
        let hash = PasswordHash::create_with_iterations(&Password::new("hunter2").unwrap(), 10_000)
            .unwrap();
        Arc::new(GatedDirectory {
            inner: StaticDirectory::from_toml(&format!(
                "[[user]]\nname = \"alice\"\npassword_hash = \"{hash}\""
            ))
            .unwrap(),
            checked: AtomicUsize::new(0),
            seen: watch::channel(0).0,
            gate: Semaphore::new(0),
        })
    }
}

#[async_trait]
impl Directory for GatedDirectory {
    async fn authenticate(
        &self,
        user: &str,
        password: &Password,
    ) -> Result<DirectoryUser, DirectoryError> {
        let n = self.checked.fetch_add(1, Ordering::SeqCst) + 1;
        self.seen.send_replace(n);
        let verdict = self.inner.authenticate(user, password).await;
        if verdict.is_err() {
            self.gate.acquire().await.unwrap().forget();
        }
        verdict
    }

    async fn groups_of(&self, user: &str) -> Result<Vec<String>, DirectoryError> {
        self.inner.groups_of(user).await
    }

    async fn service_account(&self, name: &str) -> Result<Option<DirectoryUser>, DirectoryError> {
        self.inner.service_account(name).await
    }
}

fn issuer() -> SessionIssuer {
    SessionIssuer::new(
        SessionKey::generate(SessionAlgorithm::EdDSA).unwrap(),
        "https://broker.test",
        "proxy",
    )
    .unwrap()
}

/// Sends `BURST` wrong passwords for alice at once, spread over `logins`; while the first
/// five are still being checked, the right password; then lets the checks finish. The right
/// password must be refused, and at most five passwords checked in all.
async fn burst(directory: &Arc<GatedDirectory>, logins: &[PasswordLogin]) {
    let mut seen = directory.seen.subscribe();
    let mut guesses = tokio::task::JoinSet::new();
    for i in 0..BURST {
        let login = logins[i % logins.len()].clone();
        guesses.spawn(async move { login.login("alice", &Password::new("guess").unwrap()).await });
    }
    // Five guesses are being checked (before the fix: all of them, soon).
    seen.wait_for(|n| *n >= 5).await.unwrap();
    let right = logins[0]
        .login("alice", &Password::new("hunter2").unwrap())
        .await;
    assert!(
        matches!(right, Err(AuthError::TooManyAttempts(_))),
        "the right password in the burst, after five guesses: {right:?}"
    );
    directory.gate.add_permits(BURST);
    let (mut wrong, mut refused) = (0, 0);
    while let Some(outcome) = guesses.join_next().await {
        match outcome.unwrap() {
            Err(AuthError::Directory(DirectoryError::InvalidCredentials)) => wrong += 1,
            Err(AuthError::TooManyAttempts(_)) => refused += 1,
            other => panic!("unexpected outcome of a guess: {other:?}"),
        }
    }
    assert_eq!((wrong, refused), (5, BURST - 5));
    assert_eq!(
        directory.checked.load(Ordering::SeqCst),
        5,
        "passwords checked in the burst"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_guesses_checks_at_most_the_limit_in_memory() {
    let directory = GatedDirectory::new();
    let login = PasswordLogin::new(directory.clone(), issuer());
    burst(&directory, &[login]).await;
}

#[tokio::test]
async fn a_right_password_hands_its_attempt_back() {
    let directory = GatedDirectory::new();
    directory.gate.add_permits(100);
    let login = PasswordLogin::new(directory.clone(), issuer());
    let right = Password::new("hunter2").unwrap();
    // Far more right logins than the limit: none counts against it.
    for _ in 0..12 {
        assert!(login.login("alice", &right).await.is_ok());
    }
    for _ in 0..4 {
        assert!(matches!(
            login.login("alice", &Password::new("guess").unwrap()).await,
            Err(AuthError::Directory(_))
        ));
    }
    assert!(login.login("alice", &right).await.is_ok(), "four failures");
    assert!(matches!(
        login.login("alice", &Password::new("guess").unwrap()).await,
        Err(AuthError::Directory(_))
    ));
    assert!(matches!(
        login.login("alice", &right).await,
        Err(AuthError::TooManyAttempts(295..=300))
    ));
}

#[cfg(feature = "postgres")]
mod postgres {
    use std::time::Duration;

    use portcullis_token::PostgresLoginAttempts;

    use super::*;

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
        let name = format!("token_burst_{tag}_{}", std::process::id());
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

    async fn store(url: &str) -> PostgresLoginAttempts {
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(4)
            .connect(url)
            .await
            .unwrap();
        PostgresLoginAttempts::from_pool(pool).await.unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_burst_of_guesses_checks_at_most_the_limit_in_postgres() {
        let Some((url, admin, name)) = database("one").await else {
            return;
        };
        let directory = GatedDirectory::new();
        let login = PasswordLogin::new(directory.clone(), issuer())
            .with_attempt_store(Arc::new(store(&url).await));
        burst(&directory, &[login]).await;
        drop_database(&admin, &name).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_burst_split_across_instances_checks_at_most_the_limit() {
        let Some((url, admin, name)) = database("two").await else {
            return;
        };
        let directory = GatedDirectory::new();
        let a = PasswordLogin::new(directory.clone(), issuer())
            .with_attempt_store(Arc::new(store(&url).await));
        let b = PasswordLogin::new(directory.clone(), issuer())
            .with_attempt_store(Arc::new(store(&url).await));
        burst(&directory, &[a, b]).await;
        // The names are not kept in clear.
        let names: Vec<String> =
            sqlx::query_scalar("SELECT user_hash FROM portcullis_login_attempts")
                .fetch_all(&sqlx::PgPool::connect(&url).await.unwrap())
                .await
                .unwrap();
        assert_eq!(names.len(), 1);
        assert!(names.iter().all(|n| n.len() == 64 && !n.contains("alice")));
        drop_database(&admin, &name).await;
    }

    /// The tester's 40 s login: a table someone holds locked now refuses the login once the
    /// store's timeout has passed, instead of waiting for the lock.
    #[tokio::test]
    async fn a_locked_attempt_table_refuses_logins_instead_of_holding_them() {
        let Some((url, admin, name)) = database("locked").await else {
            return;
        };
        let directory = GatedDirectory::new();
        let login = PasswordLogin::new(directory.clone(), issuer()).with_attempt_store(Arc::new(
            store(&url).await.with_timeout(Duration::from_millis(300)),
        ));
        let holder = sqlx::PgPool::connect(&url).await.unwrap();
        let mut lock = holder.begin().await.unwrap();
        sqlx::query("LOCK TABLE portcullis_login_attempts IN ACCESS EXCLUSIVE MODE")
            .execute(&mut *lock)
            .await
            .unwrap();
        // The guard only turns a hang into a failure; the store gives up after 300 ms.
        let outcome = tokio::time::timeout(
            Duration::from_secs(60),
            login.login("alice", &Password::new("hunter2").unwrap()),
        )
        .await
        .expect("the login waited on the locked table");
        assert!(matches!(outcome, Err(AuthError::Store(_))), "{outcome:?}");
        assert_eq!(directory.checked.load(Ordering::SeqCst), 0, "fail closed");
        lock.rollback().await.unwrap();
        assert!(
            login
                .login("alice", &Password::new("hunter2").unwrap())
                .await
                .is_ok()
        );
        drop(holder);
        drop_database(&admin, &name).await;
    }
}
