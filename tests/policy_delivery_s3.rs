//! `examples/policy-delivery` with its revisions in S3 (`[artifacts] store = "s3"`), against
//! a real moto (`PORTCULLIS_TEST_MOTO_URL`; skipped without it, failed under
//! `PORTCULLIS_REQUIRE_SERVICES=1`): CI publishes, the revision lands in the bucket under
//! its content address, a host downloads it — also after a restart, when it comes from S3
//! again — and an object replaced behind the server's back is not served.
//!
//! ```sh
//! PORTCULLIS_REQUIRE_SERVICES=1 scripts/with-services \
//!     cargo test --features delivery-s3,graphql --test policy_delivery_s3
//! ```
#![cfg(all(
    feature = "delivery-s3",
    feature = "graphql",
    feature = "gate",
    feature = "acl",
    feature = "audit",
    feature = "sqlite",
    feature = "edge"
))]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests: a failed expectation is the failure being tested for"
)]

use std::path::{Path, PathBuf};

use aws_lc_rs::digest::{SHA256, digest};
use portcullis::policy::Bundle;
use serde_json::Value;

mod common;
use common::{example_binary, spawn_listening_with_env};

const CANARY: &str = "spiffe://example.org/canary/host-1";
const CANARY_TOKEN: &str = "pcd_canary-host-token-for-s3-tests-00001";
const CI_TOKEN: &str = "pcd_ci-publisher-token-for-s3-tests-0003";

/// The standard AWS chain, from the environment only: moto takes any keys.
const AWS_ENV: &[(&str, &str)] = &[
    ("AWS_ACCESS_KEY_ID", "AKIAIOSFODNN7EXAMPLE"),
    (
        "AWS_SECRET_ACCESS_KEY",
        "moto-secret-for-policy-delivery-tests",
    ),
    ("AWS_CONFIG_FILE", "/nonexistent/aws-config"),
    (
        "AWS_SHARED_CREDENTIALS_FILE",
        "/nonexistent/aws-credentials",
    ),
    ("AWS_EC2_METADATA_DISABLED", "true"),
];

fn binary() -> PathBuf {
    example_binary("policy-delivery", "--features delivery-s3,graphql")
}

fn sha256(bytes: &[u8]) -> String {
    hex::encode(digest(&SHA256, bytes))
}

fn scratch(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("policy-delivery-s3-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A server configuration in `dir` storing revisions in `bucket` under `delivery/`.
fn write_config(dir: &Path, moto: &str, bucket: &str) -> PathBuf {
    std::fs::write(
        dir.join("pipelines.toml"),
        r#"
        [[artifacts]]
        name = "authz"
        bundles = ["authz"]

        [[artifacts.steps]]
        name = "canary"
        scopes = ["spiffe://example.org/canary/**"]
        promotion = { mode = "manual" }
        "#,
    )
    .unwrap();
    let config = format!(
        r#"
        data_dir = "data"
        pipelines = "pipelines.toml"

        [artifacts]
        store = "s3"
        bucket = "{bucket}"
        prefix = "delivery/"
        region = "us-east-1"
        endpoint_url = "{moto}"
        force_path_style = true
        timeout_seconds = 10

        [audit]
        url = "sqlite://{audit}"

        [[hosts]]
        spiffe_id = "{CANARY}"
        token_sha256 = "{canary}"

        [[principals]]
        name = "ci"
        kind = "service"
        token_sha256 = "{ci}"

        [acl]
        bindings = ["service:ci artifact:authz PUBLISHER"]
        "#,
        audit = dir.join("audit.db").display(),
        canary = sha256(CANARY_TOKEN.as_bytes()),
        ci = sha256(CI_TOKEN.as_bytes()),
    );
    let path = dir.join("delivery.toml");
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

/// A path-style request straight to moto: what the server stored, seen (and changed)
/// without it. moto reads the access key from a SigV4 `Authorization` header without
/// checking the signature; without the header a request is anonymous, and the bucket's
/// private objects answer 403.
async fn raw(method: reqwest::Method, url: String, body: Vec<u8>) -> (u16, Vec<u8>) {
    let response = reqwest::Client::new()
        .request(method, url)
        .header(
            "authorization",
            "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20260101/us-east-1/s3/aws4_request, \
             SignedHeaders=host, Signature=00",
        )
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.bytes().await.unwrap().to_vec())
}

async fn publish(base: &str, tarball: Vec<u8>) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(format!("{base}/v1/artifacts/authz/revisions"))
        .bearer_auth(CI_TOKEN)
        .header("content-type", "application/gzip")
        .body(tarball)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn fetch(base: &str) -> (u16, Vec<u8>) {
    let response = reqwest::Client::new()
        .get(format!("{base}/bundles/authz"))
        .bearer_auth(CANARY_TOKEN)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.bytes().await.unwrap().to_vec())
}

#[tokio::test]
async fn policy_delivery_publishes_and_serves_revisions_from_s3() {
    let moto = portcullis_test_support::service_or_skip!("PORTCULLIS_TEST_MOTO_URL");
    let bucket = format!("pcd-e2e-{}", std::process::id());
    let (status, _) = raw(reqwest::Method::PUT, format!("{moto}/{bucket}"), Vec::new()).await;
    assert_eq!(status, 200, "moto made no bucket");
    let dir = scratch("flow");
    let config = write_config(&dir, &moto, &bucket);

    let (mut child, base) = spawn_listening_with_env(&binary(), &config, AWS_ENV).await;
    let tarball = bundle("r1");
    let revision = sha256(&tarball);
    let (status, answer) = publish(&base, tarball.clone()).await;
    assert_eq!(status, 201, "{answer}");
    assert_eq!(answer["revision"], revision.as_str());

    // In the bucket under its content address, nowhere on the server's disk.
    let object = format!("{moto}/{bucket}/delivery/authz/{revision}.tar.gz");
    assert_eq!(
        raw(reqwest::Method::GET, object.clone(), Vec::new()).await,
        (200, tarball.clone())
    );
    assert!(!dir.join("data").join("artifacts").exists());
    assert_eq!(fetch(&base).await, (200, tarball.clone()));
    // Immutable: the same tarball again is a 409.
    assert_eq!(publish(&base, tarball.clone()).await.0, 409);
    child.kill().await.unwrap();

    // A restarted server reads the revision back from S3.
    let (mut child, base) = spawn_listening_with_env(&binary(), &config, AWS_ENV).await;
    assert_eq!(fetch(&base).await, (200, tarball.clone()));
    child.kill().await.unwrap();

    // Replaced behind the server's back: refused (it hashes to something else), not served.
    let (status, _) = raw(reqwest::Method::PUT, object.clone(), b"evil".to_vec()).await;
    assert_eq!(status, 200);
    let (mut child, base) = spawn_listening_with_env(&binary(), &config, AWS_ENV).await;
    let (status, body) = fetch(&base).await;
    assert_eq!(status, 500, "{}", String::from_utf8_lossy(&body));
    assert!(
        String::from_utf8_lossy(&body).contains("was changed after it was stored"),
        "{}",
        String::from_utf8_lossy(&body)
    );

    // The bucket gone while the server runs: a 503 that names neither bucket nor key.
    let (status, _) = raw(reqwest::Method::DELETE, object, Vec::new()).await;
    assert_eq!(status, 204);
    let (status, _) = raw(
        reqwest::Method::DELETE,
        format!("{moto}/{bucket}"),
        Vec::new(),
    )
    .await;
    assert_eq!(status, 204);
    let (status, answer) = publish(&base, bundle("r2")).await;
    assert_eq!(status, 503, "{answer}");
    assert_eq!(answer["code"], "artifact_store_unavailable");
    assert!(!answer.to_string().contains(&bucket), "{answer}");
    child.kill().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn policy_delivery_refuses_to_start_on_a_missing_bucket() {
    let moto = portcullis_test_support::service_or_skip!("PORTCULLIS_TEST_MOTO_URL");
    let dir = scratch("missing");
    let bucket = format!("pcd-e2e-missing-{}", std::process::id());
    let config = write_config(&dir, &moto, &bucket);
    let output = tokio::process::Command::new(binary())
        .envs(AWS_ENV.iter().copied())
        .arg("--config")
        .arg(&config)
        .args(["--listen", "127.0.0.1:0", "--log-level", "warn"])
        .output()
        .await
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("[artifacts]") && stderr.contains("does not exist"),
        "{stderr}"
    );
    assert!(!stderr.contains("moto-secret"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}
