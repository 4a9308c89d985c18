//! Two `examples/policy-delivery` processes on one PostgreSQL database (`[store]`): a
//! revision published through one is served by the other within the refresh bound, one
//! of them leads the scheduler, and when the leader is killed the other takes the lead and
//! its scheduler promotes.
#![cfg(all(
    feature = "delivery",
    feature = "gate",
    feature = "acl",
    feature = "audit",
    feature = "sqlite",
    feature = "postgres"
))]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "tests: a failed expectation is the failure being tested for"
)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use aws_lc_rs::digest::{SHA256, digest};
use portcullis::policy::Bundle;
use serde_json::Value;

mod common;
use common::{drop_database, example_binary, fresh_database, spawn_listening};

const CANARY: &str = "spiffe://example.org/canary/host-1";
const PROD: &str = "spiffe://example.org/prod/host-2";
const CANARY_TOKEN: &str = "pcd_canary-host-token-for-tests-only-0001";
const PROD_TOKEN: &str = "pcd_prod-host-token-for-tests-only-00002";
const CI_TOKEN: &str = "pcd_ci-publisher-token-for-tests-only-003";
/// How long the canary soaks before the scheduler promotes it: long enough to kill the
/// leader first.
const SOAK_SECONDS: u64 = 5;

fn sha256(text: &[u8]) -> String {
    hex::encode(digest(&SHA256, text))
}

/// One instance's configuration in `dir`: its own data_dir, the shared store, audit log
/// and artifacts folder.
fn write_config(dir: &Path, name: &str, url: &str) -> PathBuf {
    std::fs::write(
        dir.join("pipelines.toml"),
        format!(
            r#"
            [[artifacts]]
            name = "authz"
            bundles = ["authz"]

            [[artifacts.steps]]
            name = "canary"
            scopes = ["spiffe://example.org/canary/**"]
            promotion = {{ mode = "always" }}
            soak_seconds = {SOAK_SECONDS}

            [[artifacts.steps]]
            name = "production"
            scopes = ["spiffe://example.org/**"]
            promotion = {{ mode = "always" }}
            "#
        ),
    )
    .unwrap();
    let config = format!(
        r#"
        data_dir = "{name}-data"
        pipelines = "pipelines.toml"
        tick_seconds = 1

        [store]
        url = "{url}"
        artifacts_dir = "artifacts"

        [audit]
        url = "{url}"

        [[hosts]]
        spiffe_id = "{CANARY}"
        token_sha256 = "{canary}"

        [[hosts]]
        spiffe_id = "{PROD}"
        token_sha256 = "{prod}"

        [[principals]]
        name = "ci"
        kind = "service"
        token_sha256 = "{ci}"

        [acl]
        bindings = ["service:ci artifact:authz PUBLISHER"]
        "#,
        canary = sha256(CANARY_TOKEN.as_bytes()),
        prod = sha256(PROD_TOKEN.as_bytes()),
        ci = sha256(CI_TOKEN.as_bytes()),
    );
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, config).unwrap();
    path
}

fn bundle(revision: &str) -> Vec<u8> {
    let files = vec![
        (
            ".manifest".to_owned(),
            format!(r#"{{"revision":"{revision}","roots":["authz"]}}"#).into_bytes(),
        ),
        (
            "authz.rego".to_owned(),
            b"package authz\n\nallow if input.user == \"alice\"\n".to_vec(),
        ),
    ];
    Bundle::from_files("authz", files)
        .unwrap()
        .to_tar_gz()
        .unwrap()
}

/// Whether the instance at `base` leads (`GET /health`).
async fn leads(http: &reqwest::Client, base: &str) -> bool {
    let health: Value = http
        .get(format!("{base}/health"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    health["leader"].as_bool().unwrap()
}

/// How long until `check` holds (polled every 10 ms), failing after `limit`.
async fn within<F: AsyncFnMut() -> bool>(limit: Duration, what: &str, mut check: F) -> Duration {
    let start = Instant::now();
    while !check().await {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    start.elapsed()
}

/// The `ETag` a host gets from `GET /bundles/authz` at `base` (`None` for a 404).
async fn served(http: &reqwest::Client, base: &str, token: &str) -> Option<String> {
    let response = http
        .get(format!("{base}/bundles/authz"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    if response.status() == 404 {
        return None;
    }
    assert_eq!(response.status(), 200);
    let etag = response.headers()["etag"].to_str().unwrap().to_owned();
    let body = response.bytes().await.unwrap();
    assert!(!body.is_empty());
    Some(etag)
}

#[tokio::test]
async fn two_instances_share_the_pipelines_and_hand_the_scheduler_over() {
    let admin = portcullis_test_support::service_or_skip!("PORTCULLIS_TEST_POSTGRES_URL");
    let url = fresh_database(&admin, "policy_delivery_fleet").await;
    let dir = std::env::temp_dir().join(format!("policy-delivery-fleet-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let binary = example_binary("policy-delivery", "--features delivery,postgres");
    let http = reqwest::Client::new();

    let (mut a, a_url) = spawn_listening(&binary, &write_config(&dir, "a", &url)).await;
    within(Duration::from_secs(10), "A leads", async || {
        leads(&http, &a_url).await
    })
    .await;
    let (b, b_url) = spawn_listening(&binary, &write_config(&dir, "b", &url)).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!leads(&http, &b_url).await, "one leader only");
    assert!(leads(&http, &a_url).await);

    // Published through A, served by B to the canary host (not yet to production).
    let published = http
        .post(format!("{a_url}/v1/artifacts/authz/revisions"))
        .bearer_auth(CI_TOKEN)
        .header("content-type", "application/gzip")
        .body(bundle("f1"))
        .send()
        .await
        .unwrap();
    assert_eq!(published.status(), 201);
    let published_at = Instant::now();
    let revision = published.json::<Value>().await.unwrap()["revision"]
        .as_str()
        .unwrap()
        .to_owned();
    let expected = format!("\"{revision}\"");
    let lag = within(
        Duration::from_secs(1),
        "B serves the candidate",
        async || served(&http, &b_url, CANARY_TOKEN).await.as_deref() == Some(expected.as_str()),
    )
    .await;
    eprintln!("B served the revision published through A after {lag:?}");
    assert_eq!(served(&http, &b_url, PROD_TOKEN).await, None);

    // The leader dies before the soak is over: B takes the lead, and its scheduler promotes.
    a.kill().await.unwrap();
    let killed = Instant::now();
    let takeover = within(Duration::from_secs(5), "B takes the lead", async || {
        leads(&http, &b_url).await
    })
    .await;
    eprintln!("B leads {takeover:?} after A was killed");
    assert!(
        published_at.elapsed() < Duration::from_secs(SOAK_SECONDS),
        "the test was too slow to kill the leader before it could promote"
    );
    within(
        Duration::from_secs(SOAK_SECONDS + 5),
        "B's scheduler promotes",
        async || served(&http, &b_url, PROD_TOKEN).await.as_deref() == Some(expected.as_str()),
    )
    .await;
    eprintln!(
        "promoted by B {:?} after the publish ({SOAK_SECONDS} s soak), {:?} after A was killed",
        published_at.elapsed(),
        killed.elapsed()
    );
    let events: Value = http
        .get(format!("{b_url}/v1/artifacts/authz"))
        .bearer_auth(CI_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let text = events.to_string();
    assert!(text.contains("scheduler"), "{text}");

    drop(b);
    let _ = std::fs::remove_dir_all(&dir);
    drop_database(&admin, &url).await;
}
