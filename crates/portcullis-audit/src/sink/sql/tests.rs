//! Query plans: a scope (a resource and everything under it) is read through the resource
//! index on both databases, never by scanning the table.

use portcullis_core::ResourceKind;

use crate::{AuditQuery, ResourceScope};

/// Rows to plan against: enough that a scan costs more than the index.
const ROWS: i64 = 20_000;

/// Every 500th row is on `env:e7` or one of its stages.
fn scope_query() -> AuditQuery {
    AuditQuery {
        within: Some(
            ResourceScope::new("env:e7".parse().unwrap()).with_children(ResourceKind::ENV_STAGE),
        ),
        after_seq: Some(10),
        ..AuditQuery::all(100)
    }
}

/// The rows, as one `INSERT … SELECT` over `numbers` (a table of `i` from 1 to [`ROWS`]).
fn fill(numbers: &str) -> String {
    format!(
        "INSERT INTO portcullis_audit_records \
         (seq, id, time_ms, kind, actor, action, resource, hash, line) \
         SELECT i, 'id-' || i, i, 'intent', 'u' || (i % 50), 'deploy', \
         CASE WHEN i % 2 = 0 THEN 'env:e' || (i % 500) \
         ELSE 'env_stage:e' || (i % 500) || '/s' || (i % 3) END, 'h', 'l' FROM {numbers}"
    )
}

#[cfg(feature = "sqlite")]
#[tokio::test]
async fn sqlite_reads_a_scope_through_the_resource_index() {
    let dir = std::env::temp_dir().join(format!("portcullis-audit-plan-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let url = format!("sqlite://{}", dir.join("a.db").display());
    let backend = super::SqliteBackend::connect(&url, crate::VERIFY_ON_OPEN)
        .await
        .unwrap();
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    sqlx::raw_sql(&format!(
        "WITH RECURSIVE numbers(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM numbers \
         WHERE i < {ROWS}) {}",
        fill("numbers")
    ))
    .execute(&pool)
    .await
    .unwrap();
    let mut q = sqlx::QueryBuilder::<sqlx::Sqlite>::new("EXPLAIN QUERY PLAN ");
    super::SqliteBackend::push_select(&mut q, &scope_query());
    let plan: Vec<(i64, i64, i64, String)> = q.build_query_as().fetch_all(&pool).await.unwrap();
    let plan: Vec<&str> = plan.iter().map(|row| row.3.as_str()).collect();
    assert!(
        plan.iter()
            .any(|step| step.contains("USING INDEX portcullis_audit_by_resource")),
        "{plan:#?}"
    );
    assert!(
        !plan
            .iter()
            .any(|step| step.starts_with("SCAN") || step.contains("PRIMARY KEY")),
        "{plan:#?}"
    );
    pool.close().await;
    drop(backend);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[cfg(feature = "postgres")]
#[tokio::test]
async fn postgres_reads_a_scope_through_the_resource_index() {
    let admin = portcullis_test_support::service_or_skip!("PORTCULLIS_TEST_POSTGRES_URL");
    let name = format!("audit_plan_{}", std::process::id());
    let pool = sqlx::PgPool::connect(&admin).await.unwrap();
    sqlx::query(&format!("DROP DATABASE IF EXISTS {name}"))
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
    let (base, _) = admin.rsplit_once('/').unwrap();
    let url = format!("{base}/{name}");
    let backend = super::PostgresBackend::connect(&url, crate::VERIFY_ON_OPEN)
        .await
        .unwrap();
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    sqlx::raw_sql(&fill(&format!("generate_series(1, {ROWS}) AS numbers(i)")))
        .execute(&pool)
        .await
        .unwrap();
    sqlx::raw_sql("ANALYZE portcullis_audit_records")
        .execute(&pool)
        .await
        .unwrap();
    let mut q = sqlx::QueryBuilder::<sqlx::Postgres>::new("EXPLAIN ");
    super::PostgresBackend::push_select(&mut q, &scope_query());
    let plan: Vec<String> = q.build_query_scalar().fetch_all(&pool).await.unwrap();
    assert!(
        plan.iter()
            .any(|step| step.contains("portcullis_audit_by_resource")),
        "{plan:#?}"
    );
    assert!(
        !plan.iter().any(|step| step.contains("Seq Scan")),
        "{plan:#?}"
    );
    pool.close().await;
    drop(backend);
}
