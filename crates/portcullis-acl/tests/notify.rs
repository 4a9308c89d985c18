//! Two instances over one PostgreSQL (feature `postgres`; `scripts/with-services` sets
//! `PORTCULLIS_TEST_POSTGRES_URL`): a role removed through one reaches the other through
//! `LISTEN`/`NOTIFY`, long before its periodic reload.
#![cfg(all(feature = "postgres", feature = "refresh"))]
#![expect(
    clippy::unwrap_used,
    reason = "tests: a failed unwrap is a failed test"
)]

use std::sync::Arc;
use std::time::Duration;

use portcullis_acl::{Acl, AclPolicy, AclStore, PostgresAclStore, RoleBinding};
use portcullis_core::{Action, AuthMethod, Authorizer, Principal, PrincipalKind};

fn user(name: &str) -> Principal {
    Principal::builder(PrincipalKind::User, name, AuthMethod::OIDC)
        .build()
        .unwrap()
}

/// Polls `done` every 10 ms for up to 20 s (a liveness bound far below the refresher's
/// hour, not a latency measurement).
async fn wait_until(done: impl Fn() -> bool) -> bool {
    for _ in 0..2000 {
        if done() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    done()
}

#[tokio::test]
async fn a_change_on_one_instance_reaches_the_other_by_notification() {
    let admin = portcullis_test_support::service_or_skip!("PORTCULLIS_TEST_POSTGRES_URL");
    let name = format!("acl_notify_{}", std::process::id());
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

    let store_a = Arc::new(PostgresAclStore::connect(&url, 2).await.unwrap());
    let store_b = Arc::new(PostgresAclStore::connect(&url, 2).await.unwrap());
    store_a
        .insert(&"user:root system:* ADMIN".parse::<RoleBinding>().unwrap())
        .await
        .unwrap();
    let a = Arc::new(
        Acl::open(store_a as Arc<dyn AclStore>, AclPolicy::teletraan())
            .await
            .unwrap(),
    );
    let b = Arc::new(
        Acl::open(store_b.clone() as Arc<dyn AclStore>, AclPolicy::teletraan())
            .await
            .unwrap(),
    );
    let listener = store_b.listen().await.unwrap();
    let _refresher = b.spawn_notified_refresher(
        Duration::from_secs(3600),
        Duration::from_secs(7200),
        listener.wakeup(),
    );
    let (root, alice) = (user("root"), user("alice"));
    let prod = "env_stage:checkout/prod".parse().unwrap();
    let rbac = b.authorizer();

    a.grant(&root, "user:alice env:checkout OPERATOR".parse().unwrap())
        .await
        .unwrap();
    let granted = wait_until(|| rbac.check(&alice, &Action::DEPLOY, &prod).is_allowed()).await;
    assert!(granted, "B never saw the role granted on A");

    a.revoke(
        &root,
        &"user:alice".parse().unwrap(),
        &"env:checkout".parse().unwrap(),
    )
    .await
    .unwrap();
    let removed = wait_until(|| !rbac.check(&alice, &Action::DEPLOY, &prod).is_allowed()).await;
    assert!(removed, "B still honours the role removed on A");

    drop((a, b, _refresher, listener));
    sqlx::query(&format!("DROP DATABASE {name} WITH (FORCE)"))
        .execute(&pool)
        .await
        .unwrap();
}
