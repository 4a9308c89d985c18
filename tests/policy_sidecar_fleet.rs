//! Several `examples/policy-sidecar` processes writing one decision log in PostgreSQL: every
//! decision either side answered is recorded exactly once, and the records of all of them
//! verify as one hash chain (the audit log's advisory lock orders the writers).
#![cfg(all(
    feature = "policy",
    feature = "audit",
    feature = "postgres",
    feature = "edge"
))]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "tests: a failed expectation is the failure being tested for"
)]

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use portcullis::audit::{AuditLog, AuditQuery};
use serde_json::{Value, json};
use tokio::process::Child;

mod common;
use common::{drop_database, example_binary, fresh_database, spawn_listening};

fn binary() -> PathBuf {
    example_binary("policy-sidecar", "--features policy,postgres")
}

/// One sidecar process and its base URL.
async fn start(config: &Path) -> (Child, String) {
    spawn_listening(&binary(), config).await
}

/// A sidecar's config in `dir` (its own data_dir: the last-known-good copy is per host).
fn config(dir: &Path, name: &str, bundle: &Path, log_url: &str) -> PathBuf {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(
        &path,
        format!(
            "data_dir = \"{name}-data\"\npoll_seconds = 1\nspiffe_id = \"spiffe://prod.example/host/{name}\"\n\n\
             [[bundles]]\nname = \"app\"\ndir = \"{}\"\n\n\
             [decision_log]\nurl = \"{log_url}\"\nmask = [\"input.password\"]\n",
            bundle.display()
        ),
    )
    .unwrap();
    path
}

#[tokio::test]
async fn two_sidecars_record_every_decision_once_in_one_chain() {
    let admin_url = portcullis_test_support::service_or_skip!("PORTCULLIS_TEST_POSTGRES_URL");
    let log_url = fresh_database(&admin_url, "policy_sidecar_fleet").await;
    let dir = std::env::temp_dir().join(format!("policy-sidecar-fleet-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let bundle = dir.join("bundle");
    std::fs::create_dir_all(bundle.join("app")).unwrap();
    std::fs::write(
        bundle.join(".manifest"),
        r#"{"revision": "f1", "roots": ["app"]}"#,
    )
    .unwrap();
    std::fs::write(
        bundle.join("app/policy.rego"),
        "package app\ndefault allow := false\nallow if input.user == \"admin\"\n",
    )
    .unwrap();
    let (sidecar_a, a) = start(&config(&dir, "a", &bundle, &log_url)).await;
    let (sidecar_b, b) = start(&config(&dir, "b", &bundle, &log_url)).await;

    // Both ready (the bundle is active on each), then 40 decisions on each, all at once.
    let http = reqwest::Client::new();
    for base in [&a, &b] {
        let mut ready = false;
        for _ in 0..300 {
            let status = http
                .get(format!("{base}/health"))
                .send()
                .await
                .unwrap()
                .status();
            if status.is_success() {
                ready = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(ready, "{base} never became healthy");
    }
    let mut calls = Vec::new();
    for i in 0..80 {
        let base = if i % 2 == 0 { a.clone() } else { b.clone() };
        let http = http.clone();
        calls.push(tokio::spawn(async move {
            let user = if i % 3 == 0 { "admin" } else { "guest" };
            let answer: Value = http
                .post(format!("{base}/v1/data/app/allow"))
                .json(&json!({"input": {"user": user, "password": "s3cret", "i": i}}))
                .send()
                .await
                .unwrap()
                .error_for_status()
                .unwrap()
                .json()
                .await
                .unwrap();
            assert_eq!(answer["result"], json!(user == "admin"), "{answer}");
            answer["decision_id"].as_str().unwrap().to_owned()
        }));
    }
    let mut answered = HashSet::new();
    for call in calls {
        assert!(
            answered.insert(call.await.unwrap()),
            "decision ids are unique"
        );
    }

    // Every answered decision is in the one log, once, masked, labelled with its host.
    let log = AuditLog::postgres(&log_url, Default::default())
        .await
        .unwrap();
    let records = log.query(&AuditQuery::all(1000)).await.unwrap().records;
    let mut logged = HashSet::new();
    let mut hosts = HashSet::new();
    for record in &records {
        let Some(id) = record
            .event
            .fields
            .get("decision_id")
            .and_then(Value::as_str)
        else {
            continue;
        };
        assert!(logged.insert(id.to_owned()), "{id} recorded twice");
        assert!(record.event.fields["input"].get("password").is_none());
        hosts.insert(
            record.event.fields["labels"]["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    assert_eq!(logged, answered);
    assert_eq!(
        hosts,
        HashSet::from([
            "spiffe://prod.example/host/a".to_owned(),
            "spiffe://prod.example/host/b".to_owned()
        ])
    );
    assert!(log.verify(&[], &[]).await.unwrap().is_ok(), "one chain");
    log.close().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    drop((sidecar_a, sidecar_b));
    drop_database(&admin_url, &log_url).await;
}
