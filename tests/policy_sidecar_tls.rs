//! `examples/policy-sidecar` with `[tls]`: served over HTTPS with its SVID (openssl-made,
//! `scripts/tests/identity-certs.sh`), driven by curl with a client certificate; its
//! `spiffe_id` — the decision log's `labels.id` — is the SVID's, and a configured one that
//! differs stops the start.
#![cfg(all(
    feature = "policy",
    feature = "audit",
    feature = "sqlite",
    feature = "edge",
    feature = "tls"
))]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "tests: a failed expectation is the failure being tested for"
)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use portcullis::audit::{AuditLog, AuditQuery};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

mod common;
use common::example_binary;

fn binary() -> PathBuf {
    example_binary("policy-sidecar", "--all-features")
}

fn scratch(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("policy-sidecar-tls-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Whether `tool` runs; without it the test is skipped, or fails under
/// `PORTCULLIS_REQUIRE_SERVICES=1` (scripts/install-deps installs it).
fn have(tool: &str) -> bool {
    let runs = |arg: &str| {
        std::process::Command::new(tool)
            .arg(arg)
            .output()
            .is_ok_and(|out| out.status.success())
    };
    // `openssl version`, `curl --version`.
    let ok = runs("version") || runs("--version");
    if !ok {
        assert!(
            std::env::var("PORTCULLIS_REQUIRE_SERVICES").as_deref() != Ok("1"),
            "{tool} is required (PORTCULLIS_REQUIRE_SERVICES=1); scripts/install-deps installs it"
        );
        eprintln!("skipped: `{tool}` is not available; scripts/install-deps installs it");
    }
    ok
}

/// Certificates from the openssl script, a bundle allowing `input.user == "admin"`, and a
/// configuration serving them with client certificates required (plus `extra`).
fn setup(dir: &Path, extra: &str) -> PathBuf {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/tests/identity-certs.sh");
    let out = std::process::Command::new("bash")
        .arg(script)
        .arg(dir.join("certs"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bundle = dir.join("bundle");
    std::fs::create_dir_all(bundle.join("app")).unwrap();
    std::fs::write(
        bundle.join(".manifest"),
        r#"{"revision": "r1", "roots": ["app"]}"#,
    )
    .unwrap();
    std::fs::write(
        bundle.join("app/policy.rego"),
        "package app\nallow if input.user == \"admin\"\n",
    )
    .unwrap();
    let path = dir.join("sidecar.toml");
    std::fs::write(
        &path,
        format!(
            r#"data_dir = "data"
poll_seconds = 1
{extra}
[[bundles]]
name = "app"
dir = "bundle"

[decision_log]
url = "sqlite://decisions.db"

[tls]
cert = "certs/server.pem"
key = "certs/server.key"
client_certs = "required"
[tls.trust_domains]
"prod.example" = "certs/bundle.pem"
"#
        ),
    )
    .unwrap();
    path
}

/// curl with the CI client certificate: exit code, HTTP status (0 without one), body.
async fn curl(dir: &Path, url: &str, cert: bool, data: Option<&str>) -> (i32, u16, String) {
    let certs = dir.join("certs");
    let mut command = Command::new("curl");
    command
        .args(["-sS", "-o", "-", "-w", "\n%{http_code}", "--cacert"])
        .arg(certs.join("bundle.pem"));
    if cert {
        command
            .arg("--cert")
            .arg(certs.join("client.pem"))
            .arg("--key")
            .arg(certs.join("client.key"));
    }
    if let Some(data) = data {
        command.args(["-H", "content-type: application/json", "--data", data]);
    }
    let out = command.arg(url).output().await.unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (
        out.status.code().unwrap_or(-1),
        code.trim().parse().unwrap_or(0),
        body.to_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sidecar_takes_its_spiffe_id_from_its_svid() {
    if !have("openssl") || !have("curl") {
        return;
    }
    let dir = scratch("svid");
    let config = setup(&dir, "");
    let mut child = Command::new(binary())
        .arg("--config")
        .arg(&config)
        .arg("--listen")
        .arg("127.0.0.1:0")
        .arg("--log-level")
        .arg("warn")
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
        panic!("policy-sidecar exited before listening");
    })
    .await
    .expect("policy-sidecar did not start within 60 s");
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let base = base.replace("127.0.0.1", "localhost");
    assert!(base.starts_with("https://localhost:"), "{base}");
    let allow = format!("{base}/v1/data/app/allow");
    let input = r#"{"input": {"user": "admin"}}"#;

    // The bundle loads in the background: ask until it answers.
    let mut answer = Value::Null;
    for _ in 0..300 {
        let (exit, status, body) = curl(&dir, &allow, true, Some(input)).await;
        assert_eq!((exit, status), (0, 200), "{body}");
        answer = serde_json::from_str(&body).unwrap();
        if answer["result"] == Value::Bool(true) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(answer["result"], Value::Bool(true), "{answer}");
    let decision_id = answer["decision_id"].as_str().unwrap().to_owned();

    // Client certificates are required: no certificate, no connection.
    let (exit, status, _) = curl(&dir, &allow, false, Some(input)).await;
    assert!(
        exit != 0 && status == 0,
        "curl exit {exit}, status {status}"
    );

    // The decision log names the sidecar by its SVID's SPIFFE ID.
    let log = AuditLog::sqlite(
        &format!("sqlite://{}", dir.join("decisions.db").display()),
        Default::default(),
    )
    .await
    .unwrap();
    let mut query = AuditQuery::all(100);
    query.correlation_id = Some(decision_id);
    let mut records = Vec::new();
    for _ in 0..300 {
        records = log.query(&query).await.unwrap().records;
        if !records.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(records.len(), 1);
    assert_eq!(
        records[0].event.fields["labels"]["id"],
        "spiffe://prod.example/deploy-gate"
    );
    child.kill().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_configured_spiffe_id_that_is_not_the_svids_stops_the_start() {
    if !have("openssl") {
        return;
    }
    let dir = scratch("conflict");
    let config = setup(&dir, "spiffe_id = \"spiffe://prod.example/other\"\n");
    let out = Command::new(binary())
        .arg("--config")
        .arg(&config)
        .arg("--listen")
        .arg("127.0.0.1:0")
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("spiffe://prod.example/other")
            && stderr.contains("spiffe://prod.example/deploy-gate"),
        "{stderr}"
    );
    assert!(!String::from_utf8_lossy(&out.stdout).contains("LISTENING"));
    let _ = std::fs::remove_dir_all(&dir);
}
