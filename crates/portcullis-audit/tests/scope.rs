//! `AuditQuery::within`: a resource and everything under it (an environment and its
//! stages), the same on every backend, and exactly the resources whose id starts with the
//! scope's id and `/`, whatever the database's collation.
#![expect(
    clippy::unwrap_used,
    reason = "tests: a failed unwrap is a failed test"
)]

mod common;

use common::{intent, refusal, temp_dir};
#[cfg(any(feature = "sqlite", feature = "postgres"))]
use portcullis_audit::AuditOptions;
use portcullis_audit::{
    AuditError, AuditLog, AuditQuery, AuditSink, JsonlOptions, MAX_SCOPE_CHILDREN, ResourceScope,
};
use portcullis_core::{Resource, ResourceKind};

/// The resources written, one record each (seq = position + 1), and whether each is within
/// `env:checkout` with its stages.
const RESOURCES: &[(&str, bool)] = &[
    ("env:checkout", true),
    ("env_stage:checkout/prod", true),
    ("env_stage:checkout/canary/eu", true),
    ("env_stage:checkout-2/prod", false),
    // Either side of `/` in byte order ('+' < '/' < '0' < '~').
    ("env_stage:checkout+x", false),
    ("env_stage:checkout~x", false),
    ("env_stage:checkout0", false),
    ("env_stage:checkout\\x", false),
    ("env_stage:checkout", false),
    // Not a child kind.
    ("env:checkout/prod", false),
    ("env_stage:checkout/", true),
    ("env:checkout2", false),
    // Ids are case-sensitive; a language collation sorts this inside the range.
    ("env_stage:Checkout/prod", false),
    ("env_stage:checkout/é", true),
    ("build:checkout/1", false),
    // LIKE wildcards are plain characters here.
    ("env_stage:check%/prod", false),
    ("env_stage:checkout_/x", false),
];

fn seqs(page: &portcullis_audit::AuditPage) -> Vec<u64> {
    page.records.iter().map(|r| r.seq).collect()
}

fn checkout() -> Resource {
    "env:checkout".parse().unwrap()
}

/// The behaviour every backend must show.
async fn scope_queries(log: &AuditLog) {
    for (i, (resource, _)) in RESOURCES.iter().enumerate() {
        // Record 2 is bob's, every other alice's.
        let event = if i == 1 {
            refusal("bob", resource)
        } else {
            intent("alice", resource)
        };
        log.record(event).await.unwrap();
    }
    let expected: Vec<u64> = (1..)
        .zip(RESOURCES)
        .filter(|(_, (_, inside))| *inside)
        .map(|(seq, _)| seq)
        .collect();
    assert_eq!(expected, [1, 2, 3, 11, 14]);
    let stages = ResourceScope::new(checkout()).with_children(ResourceKind::ENV_STAGE);
    let within = |scope: &ResourceScope, limit| AuditQuery {
        within: Some(scope.clone()),
        ..AuditQuery::all(limit)
    };

    let all = log.query(&within(&stages, 100)).await.unwrap();
    assert_eq!(seqs(&all), expected);
    assert_eq!(all.next_after, None);
    assert!(
        all.records
            .iter()
            .all(|r| stages.contains(&r.event.resource))
    );

    // Paged.
    let mut query = within(&stages, 2);
    let mut pages = Vec::new();
    loop {
        let page = log.query(&query).await.unwrap();
        pages.push(seqs(&page));
        match page.next_after {
            Some(after) => query.after_seq = Some(after),
            None => break,
        }
    }
    assert_eq!(pages, [vec![1, 2], vec![3, 11], vec![14]]);

    // With the other filters.
    let alices = AuditQuery {
        actor: Some("alice".into()),
        ..within(&stages, 100)
    };
    assert_eq!(seqs(&log.query(&alices).await.unwrap()), [1, 3, 11, 14]);

    // No children: the resource alone, as the exact filter.
    let alone = ResourceScope::new(checkout());
    assert_eq!(seqs(&log.query(&within(&alone, 100)).await.unwrap()), [1]);
    let exact = AuditQuery {
        resource: Some(checkout()),
        ..AuditQuery::all(100)
    };
    assert_eq!(seqs(&log.query(&exact).await.unwrap()), [1]);

    // Two child kinds.
    let builds = stages.clone().with_children(ResourceKind::BUILD);
    assert_eq!(
        seqs(&log.query(&within(&builds, 100)).await.unwrap()),
        [1, 2, 3, 11, 14, 15]
    );

    // A stage as the scope: its own children by prefix.
    let prod = ResourceScope::new("env_stage:checkout".parse().unwrap())
        .with_children(ResourceKind::ENV_STAGE);
    assert_eq!(
        seqs(&log.query(&within(&prod, 100)).await.unwrap()),
        [2, 3, 9, 11, 14]
    );

    // A bounded number of child kinds.
    let mut wide = ResourceScope::new(checkout());
    for i in 0..=MAX_SCOPE_CHILDREN {
        wide = wide.with_children(format!("kind{i}").parse().unwrap());
    }
    let err = log.query(&within(&wide, 10)).await.unwrap_err();
    assert!(
        matches!(&err, AuditError::Invalid(why) if why.contains("child kinds")),
        "{err}"
    );
}

#[tokio::test]
async fn jsonl() {
    let log = AuditLog::jsonl(temp_dir("scope"), JsonlOptions::default())
        .await
        .unwrap();
    scope_queries(&log).await;
}

#[cfg(feature = "sqlite")]
#[tokio::test]
async fn sqlite() {
    let url = format!("sqlite://{}", temp_dir("scope").join("a.db").display());
    let log = AuditLog::sqlite(&url, AuditOptions::default())
        .await
        .unwrap();
    scope_queries(&log).await;
}

#[cfg(feature = "postgres")]
mod postgres {
    use super::*;
    use common::fresh_postgres;

    #[tokio::test]
    async fn postgres() {
        portcullis_test_support::service_or_skip!("PORTCULLIS_TEST_POSTGRES_URL");
        let url = fresh_postgres("scope").await;
        let log = AuditLog::postgres(&url, AuditOptions::default())
            .await
            .unwrap();
        scope_queries(&log).await;
    }

    /// A database whose default collation is a language's (ICU `en-US`), holding a log of
    /// the second schema: opening it migrates `resource` to byte order, and the scope's
    /// ranges then hold exactly the resources under it. Under `en-US`,
    /// `env_stage:Checkout/prod` and `env_stage:checkout+x` sort between `checkout/` and
    /// `checkout0`.
    #[tokio::test]
    async fn a_language_collated_database_of_the_second_schema() {
        let admin = portcullis_test_support::service_or_skip!("PORTCULLIS_TEST_POSTGRES_URL");
        let name = format!("audit_scope_icu_{}", std::process::id());
        let pool = sqlx::PgPool::connect(&admin).await.unwrap();
        sqlx::query(&format!("DROP DATABASE IF EXISTS {name}"))
            .execute(&pool)
            .await
            .unwrap();
        sqlx::query(&format!(
            "CREATE DATABASE {name} TEMPLATE template0 ENCODING 'UTF8' \
             LOCALE_PROVIDER icu ICU_LOCALE 'en-US' LOCALE 'C'"
        ))
        .execute(&pool)
        .await
        .unwrap();
        pool.close().await;
        let (base, _) = admin.rsplit_once('/').unwrap();
        let url = format!("{base}/{name}");

        let pool = sqlx::PgPool::connect(&url).await.unwrap();
        sqlx::raw_sql(include_str!("../migrations/0001_records.sql"))
            .execute(&pool)
            .await
            .unwrap();
        sqlx::raw_sql(include_str!("../migrations/0002_postgres_partial.sql"))
            .execute(&pool)
            .await
            .unwrap();
        sqlx::raw_sql(
            "CREATE TABLE portcullis_audit_schema (version BIGINT PRIMARY KEY);
             INSERT INTO portcullis_audit_schema VALUES (1), (2);",
        )
        .execute(&pool)
        .await
        .unwrap();
        let wrong: bool = sqlx::query_scalar(
            "SELECT 'env_stage:Checkout/prod' >= 'env_stage:checkout/' \
             AND 'env_stage:Checkout/prod' < 'env_stage:checkout0'",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        assert!(wrong, "the database sorts by language, as intended here");

        let log = AuditLog::postgres(&url, AuditOptions::default())
            .await
            .unwrap();
        let collation: Option<String> = sqlx::query_scalar(
            "SELECT collation_name FROM information_schema.columns \
             WHERE table_name = 'portcullis_audit_records' AND column_name = 'resource'",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        assert_eq!(collation.as_deref(), Some("C"));
        scope_queries(&log).await;
        assert_eq!(
            log.verify(&[], &[]).await.unwrap().unwrap().records,
            u64::try_from(RESOURCES.len()).unwrap()
        );
    }
}
