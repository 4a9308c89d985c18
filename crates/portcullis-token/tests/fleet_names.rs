//! Token names across instances on one PostgreSQL (feature `postgres`;
//! `scripts/with-services` sets `PORTCULLIS_TEST_POSTGRES_URL`): two instances issuing one
//! name at the same moment cannot both succeed — the database refuses the second with the
//! conflict the issuing instance's own check gives — while a revoked or expired token's name
//! can be issued again.
#![cfg(feature = "postgres")]
#![expect(
    clippy::unwrap_used,
    reason = "tests: a failed unwrap is a failed test"
)]

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use portcullis_core::{ManualClock, Resource, ResourceKind};
use portcullis_token::{
    AuthError, IssueRequest, PostgresTokenStore, TokenKey, TokenKind, TokenOptions, TokenScope,
    Tokens,
};

fn key() -> TokenKey {
    TokenKey::from_hex(&"cd".repeat(32)).unwrap()
}

fn personal(name: &str, owner: &str, ttl: Option<Duration>) -> IssueRequest {
    IssueRequest {
        kind: TokenKind::Personal,
        name: name.into(),
        owner: owner.into(),
        scope: None,
        ttl,
    }
}

fn script(name: &str, env: &str, owner: &str) -> IssueRequest {
    IssueRequest {
        kind: TokenKind::Script,
        name: name.into(),
        owner: owner.into(),
        scope: Some(TokenScope {
            resource: Resource::new(ResourceKind::ENV, env).unwrap(),
            role: "deployer".into(),
        }),
        ttl: None,
    }
}

/// A fresh database; its URL and the admin pool to drop it with.
async fn fresh_database(admin: &str, tag: &str) -> (String, String, sqlx::PgPool) {
    let name = format!("tokens_{tag}_{}", std::process::id());
    let pool = sqlx::PgPool::connect(admin).await.unwrap();
    sqlx::query(&format!("DROP DATABASE IF EXISTS {name}"))
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&pool)
        .await
        .unwrap();
    let (base, _) = admin.rsplit_once('/').unwrap();
    (format!("{base}/{name}"), name, pool)
}

/// Two instances, each with its own pool and index (no refresher: neither learns of the
/// other's tokens but through the database).
async fn two_instances(url: &str, clock: &Arc<ManualClock>) -> (Tokens, Tokens) {
    let mut options = TokenOptions::default();
    options.clock = clock.clone();
    let open = || async {
        let store = PostgresTokenStore::connect(url, 2).await.unwrap();
        Tokens::open(Arc::new(store), key(), options.clone())
            .await
            .unwrap()
    };
    let (a, b) = tokio::join!(open(), open());
    (a, b)
}

fn name_conflict(result: &Result<portcullis_token::IssuedToken, AuthError>) -> bool {
    matches!(result, Err(AuthError::Conflict(message)) if message.contains("token named"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_cannot_both_issue_one_name() {
    let admin = portcullis_test_support::service_or_skip!("PORTCULLIS_TEST_POSTGRES_URL");
    let (url, name, admin_pool) = fresh_database(&admin, "names_race").await;
    let clock = Arc::new(ManualClock::new(
        UNIX_EPOCH + Duration::from_secs(1_800_000_000),
    ));
    let (a, b) = two_instances(&url, &clock).await;

    for round in 0..10 {
        // Racing: one personal name of one owner, one script name in one scope.
        let laptop = format!("laptop-{round}");
        let (x, y) = tokio::join!(
            a.issue(personal(&laptop, "alice", None)),
            b.issue(personal(&laptop, "alice", None))
        );
        assert!(
            x.is_ok() != y.is_ok(),
            "round {round}: exactly one issue may succeed: {x:?} / {y:?}"
        );
        assert!(name_conflict(&x) || name_conflict(&y), "{x:?} / {y:?}");

        let ci = format!("ci-{round}");
        let (x, y) = tokio::join!(
            a.issue(script(&ci, "prod", "alice")),
            b.issue(script(&ci, "prod", "bob"))
        );
        assert!(x.is_ok() != y.is_ok(), "round {round}: {x:?} / {y:?}");
        assert!(name_conflict(&x) || name_conflict(&y), "{x:?} / {y:?}");
    }

    // The same name stays free for another owner, and in another scope.
    a.issue(personal("laptop-0", "bob", None)).await.unwrap();
    b.issue(script("ci-0", "staging", "alice")).await.unwrap();

    // Sequentially too: B has not reloaded, so only the database knows A's token.
    let first = a.issue(personal("desk", "alice", None)).await.unwrap();
    assert!(name_conflict(
        &b.issue(personal("desk", "alice", None)).await
    ));
    // Revoked on A, the name is B's to issue.
    assert!(a.revoke(&first.record.id).await.unwrap());
    b.issue(personal("desk", "alice", None)).await.unwrap();

    // Expired (not revoked) on A: the name is free again as well.
    a.issue(personal("short", "alice", Some(Duration::from_secs(60))))
        .await
        .unwrap();
    assert!(name_conflict(
        &b.issue(personal("short", "alice", None)).await
    ));
    clock.advance(Duration::from_secs(61));
    b.issue(personal("short", "alice", None)).await.unwrap();

    drop((a, b));
    sqlx::query(&format!("DROP DATABASE {name} WITH (FORCE)"))
        .execute(&admin_pool)
        .await
        .unwrap();
}
