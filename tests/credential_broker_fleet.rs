//! End-to-end test of `examples/credential-broker` in fleet mode: two brokers as processes
//! on one PostgreSQL database of their own (`[store]`), against a real slapd and a real moto
//! (`scripts/with-services`). A session from one vends credentials on the other, and after
//! the first restarts; both brokers' vends are in one verified audit chain.
#![cfg(all(
    feature = "gate",
    feature = "axum",
    feature = "vend",
    feature = "aws",
    feature = "ldap",
    feature = "sqlite",
    feature = "postgres"
))]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "tests"
)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

mod common;
use common::{drop_database, env, example_binary, fresh_database};

fn binary() -> PathBuf {
    example_binary("credential-broker", "--all-features")
}

fn config(store_url: &str) -> String {
    let base = env("PORTCULLIS_TEST_LDAP_BASE");
    format!(
        r#"
[store]
url = "{store_url}"
key_env = "TEST_STORE_KEY"

[directory.ldap]
url = "{ldap}"
bind_dn = "{bind_dn}"
bind_password_env = "TEST_LDAP_PASSWORD"
user_base = "ou=people,{base}"
groups = {{ type = "search", base = "ou=groups,{base}" }}

[vend]
base_role_arn = "arn:aws:iam::123456789012:role/data-access-base"
[vend.groups]
deployers = ["deploy-artifacts"]
[vend.roles]
deploy-artifacts = ["arn:aws:iam::123456789012:policy/artifacts-write"]

[sts]
endpoint_url = "{moto}"
access_key_env = "TEST_BROKER_KEY"
secret_key_env = "TEST_BROKER_SECRET"
"#,
        ldap = env("PORTCULLIS_TEST_LDAP_URL"),
        bind_dn = env("PORTCULLIS_TEST_LDAP_BIND_DN"),
        moto = env("PORTCULLIS_TEST_MOTO_URL"),
    )
}

/// Starts a broker on `config` and waits for its address.
async fn start(config: &Path) -> (Child, String) {
    let mut child = Command::new(binary())
        .arg("--config")
        .arg(config)
        .arg("--listen")
        .arg("127.0.0.1:0")
        .env(
            "TEST_LDAP_PASSWORD",
            env("PORTCULLIS_TEST_LDAP_BIND_PASSWORD"),
        )
        .env("TEST_STORE_KEY", "a7".repeat(32))
        .env("TEST_BROKER_KEY", "AKIAIOSFODNN7EXAMPLE")
        .env("TEST_BROKER_SECRET", "broker-secret")
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let base = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(url) = line.strip_prefix("LISTENING ") {
                return url.to_owned();
            }
        }
        panic!("credential-broker exited before listening");
    })
    .await
    .expect("credential-broker did not start within 60 s");
    (child, base)
}

async fn vend(http: &reqwest::Client, base: &str, token: &str) -> (u16, Value) {
    let response = http
        .post(format!("{base}/v1/credentials"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn a_session_from_one_broker_vends_on_another_and_survives_a_restart() {
    let (admin_url, _, _) = portcullis_test_support::service_or_skip!(
        "PORTCULLIS_TEST_POSTGRES_URL",
        "PORTCULLIS_TEST_LDAP_URL",
        "PORTCULLIS_TEST_MOTO_URL"
    );
    let store_url = fresh_database(&admin_url, "credential_broker_fleet").await;
    let dir = std::env::temp_dir().join(format!("credential-broker-fleet-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("broker.toml");
    std::fs::write(&file, config(&store_url)).unwrap();

    let (mut a, a_base) = start(&file).await;
    let (_b, b_base) = start(&file).await;
    let http = reqwest::Client::new();
    let answer: Value = http
        .post(format!("{a_base}/v1/login"))
        .json(&json!({ "username": "alice", "password": "alice-password" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let alice = answer["token"].as_str().unwrap().to_owned();

    // Logged in on A, vended on B.
    let (status, creds) = vend(&http, &b_base, &alice).await;
    assert_eq!(status, 200, "{creds}");
    assert!(creds["AccessKeyId"].as_str().unwrap().starts_with("ASIA"));
    assert_eq!(
        creds["Vended"]["policy_arns"],
        json!(["arn:aws:iam::123456789012:policy/artifacts-write"])
    );

    // A restarts: the session still works there.
    a.kill().await.unwrap();
    a.wait().await.unwrap();
    let (_a, a_base) = start(&file).await;
    let (status, creds) = vend(&http, &a_base, &alice).await;
    assert_eq!(status, 200, "after a restart: {creds}");

    // A token signed with a key that is not the store's is refused by both.
    let forged = {
        let key =
            portcullis::token::SessionKey::generate(portcullis::token::SessionAlgorithm::EdDSA)
                .unwrap();
        portcullis::token::SessionIssuer::new(key, "credential-broker", "credential-broker")
            .unwrap()
            .issue("alice", &["deployers".to_owned()])
            .unwrap()
    };
    for base in [&a_base, &b_base] {
        assert_eq!(vend(&http, base, forged.expose()).await.0, 401);
    }

    // Failed logins add up across brokers: three on A and two on B lock dave out of both.
    let attempt = |base: String, password: &'static str| {
        let http = http.clone();
        async move {
            let response = http
                .post(format!("{base}/v1/login"))
                .json(&json!({ "username": "dave", "password": password }))
                .send()
                .await
                .unwrap();
            (response.status().as_u16(), response.text().await.unwrap())
        }
    };
    for base in [&a_base, &a_base, &a_base, &b_base, &b_base] {
        assert_eq!(attempt(base.clone(), "guess").await.0, 401);
    }
    for base in [&a_base, &b_base] {
        let (status, body) = attempt(base.clone(), "dave-password").await;
        assert_ne!(status, 200, "{body}");
        assert!(body.contains("too many failed logins"), "{body}");
    }

    // Both brokers' vends, in one chain.
    let report = portcullis::audit::verify_database(&store_url, &[], &[])
        .await
        .unwrap()
        .unwrap_or_else(|violation| panic!("the shared chain does not verify: {violation:?}"));
    let store = sqlx::PgPool::connect(&store_url).await.unwrap();
    let intents: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM portcullis_audit_records WHERE kind = 'intent' AND action = 'vend'",
    )
    .fetch_one(&store)
    .await
    .unwrap();
    assert_eq!(intents, 2);
    assert!(report.records >= 2, "{report:?}");
    store.close().await;

    let _ = std::fs::remove_dir_all(&dir);
    drop((_a, _b));
    drop_database(&admin_url, &store_url).await;
}
