//! `examples/access-broker`, broker ↔ region proxy over mutual TLS (openssl-made SVIDs from
//! `scripts/tests/identity-certs.sh`): the region proxy admits only the broker's SPIFFE ID
//! at the handshake and still wants the broker token; the broker accepts a region proxy only
//! with the SPIFFE ID configured for that region, and serves people over HTTPS.
#![cfg(all(
    feature = "gate",
    feature = "axum",
    feature = "sqlite",
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
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

mod common;
use common::example_binary;

fn binary() -> PathBuf {
    example_binary("access-broker", "--all-features")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Whether `openssl` and `curl` run; without them the test is skipped, or fails under
/// `PORTCULLIS_REQUIRE_SERVICES=1` (scripts/install-deps installs them).
fn have_tools() -> bool {
    let runs = |tool: &str, arg: &str| {
        std::process::Command::new(tool)
            .arg(arg)
            .output()
            .is_ok_and(|out| out.status.success())
    };
    let ok = runs("openssl", "version") && runs("curl", "--version");
    if !ok {
        assert!(
            std::env::var("PORTCULLIS_REQUIRE_SERVICES").as_deref() != Ok("1"),
            "openssl and curl are required (PORTCULLIS_REQUIRE_SERVICES=1)"
        );
        eprintln!("skipped: openssl or curl is not available; scripts/install-deps installs them");
    }
    ok
}

/// Starts the binary with `args` and waits for its `LISTENING` line.
async fn start(args: &[&str], dir: &Path) -> Child {
    let mut child = Command::new(binary())
        .args(args)
        .arg("--log-level")
        .arg("warn")
        .current_dir(dir)
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if line.starts_with("LISTENING https://") {
                return;
            }
        }
        panic!("access-broker {args:?} exited before listening over TLS");
    })
    .await
    .expect("access-broker did not start within 60 s");
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    child
}

/// An upstream service counting its requests and answering who it was asked for.
async fn upstream() -> (String, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let counted = hits.clone();
    let app = axum::Router::new().fallback(move |request: axum::extract::Request| {
        let counted = counted.clone();
        async move {
            counted.fetch_add(1, Ordering::SeqCst);
            let user = request
                .headers()
                .get("x-forwarded-user")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("nobody")
                .to_owned();
            axum::Json(json!({ "user": user, "path": request.uri().path() }))
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{address}"), hits)
}

/// curl straight to the region proxy, with the client certificate `cert` (or none) and a
/// forged broker token: exit code and HTTP status (0 without an answer). `-k`: the proxy's
/// SVID names no host; what is tested is whom the proxy admits.
async fn curl_region(certs: &Path, port: u16, cert: Option<&str>) -> (i32, u16) {
    let mut command = Command::new("curl");
    command.args([
        "-sS",
        "-k",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "-H",
        "x-broker-token: forged",
    ]);
    if let Some(name) = cert {
        command
            .arg("--cert")
            .arg(certs.join(format!("{name}.pem")))
            .arg("--key")
            .arg(certs.join(format!("{name}.key")));
    }
    let out = command
        .arg(format!("https://127.0.0.1:{port}/orders/1"))
        .output()
        .await
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .unwrap_or(0),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn region_proxies_admit_only_the_brokers_spiffe_id() {
    if !have_tools() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("access-broker-tls-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let certs = dir.join("certs");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/tests/identity-certs.sh");
    let out = std::process::Command::new("bash")
        .arg(script)
        .arg(&certs)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let hash = portcullis::directory::PasswordHash::create_with_iterations(
        &portcullis::directory::Password::new("alice-password".to_owned()).unwrap(),
        10_000,
    )
    .unwrap();
    std::fs::write(
        dir.join("users.toml"),
        format!(
            "[[user]]\nname = \"alice\"\npassword_hash = \"{hash}\"\ngroups = [\"platform\"]\n"
        ),
    )
    .unwrap();

    let (orders, hits) = upstream().await;
    let (broker_port, eu_port) = (free_port(), free_port());
    // The broker's SVID is spiffe://prod.example/deploy-gate (it names 127.0.0.1 too);
    // the region proxy's is spiffe://prod.example/envoy.
    let config = format!(
        r#"
[broker]
listen = "127.0.0.1:{broker_port}"
audit_url = "sqlite://audit.db"
[broker.directory]
users_file = "users.toml"
[broker.tls]
cert = "certs/server.pem"
key = "certs/server.key"
client_certs = "optional"
[broker.tls.trust_domains]
"prod.example" = "certs/bundle.pem"
[broker.regions.eu]
url = "https://127.0.0.1:{eu_port}"
spiffe_id = "spiffe://prod.example/envoy"
# The same proxy, expected with another ID: refused.
[broker.regions.us]
url = "https://127.0.0.1:{eu_port}"
spiffe_id = "spiffe://prod.example/region/us"

[[broker.grants]]
groups = ["platform"]
region = "*"
service = "*"
methods = ["*"]

[[region]]
name = "eu"
listen = "127.0.0.1:{eu_port}"
broker_jwks_url = "https://127.0.0.1:{broker_port}/.well-known/jwks.json"
broker_spiffe_id = "spiffe://prod.example/deploy-gate"
[region.services]
orders = "{orders}"
[region.tls]
cert = "certs/proxy.pem"
key = "certs/proxy.key"
client_certs = "required"
[region.tls.trust_domains]
"prod.example" = "certs/bundle.pem"
"#
    );
    let file = dir.join("access-broker.toml");
    std::fs::write(&file, config).unwrap();
    let file = file.to_str().unwrap();
    let _region = start(&["region-proxy", "--config", file, "--region", "eu"], &dir).await;
    let _broker = start(&["broker", "--config", file], &dir).await;

    let bundle = std::fs::read(certs.join("bundle.pem")).unwrap();
    let http = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&bundle).unwrap())
        .build()
        .unwrap();
    let base = format!("https://127.0.0.1:{broker_port}");
    let answer: Value = http
        .post(format!("{base}/login"))
        .json(&json!({ "username": "alice", "password": "alice-password" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = answer["token"]
        .as_str()
        .unwrap_or_else(|| panic!("{answer}"));

    // Through the broker: mTLS to the region proxy, which checks the broker token too.
    let response = http
        .get(format!("{base}/proxy/eu/orders/orders/42"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["user"], "alice", "{body}");
    assert_eq!(hits.load(Ordering::SeqCst), 1);

    // A proxy that is not the one the region names: the broker refuses it.
    let response = http
        .get(format!("{base}/proxy/us/orders/orders/42"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 502);
    assert_eq!(hits.load(Ordering::SeqCst), 1);

    // Straight to the region proxy: without a certificate, or with another workload's SVID,
    // no connection; with the broker's SVID but a forged broker token, refused.
    for cert in [None, Some("client"), Some("wrong-domain")] {
        let (exit, status) = curl_region(&certs, eu_port, cert).await;
        assert!(
            exit != 0 && status == 0,
            "{cert:?}: curl exit {exit}, status {status}"
        );
    }
    let (exit, status) = curl_region(&certs, eu_port, Some("server")).await;
    assert_eq!(exit, 0);
    assert!((400..500).contains(&status), "{status}");
    assert_eq!(
        hits.load(Ordering::SeqCst),
        1,
        "nothing reached the service"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_region_proxy_with_tls_but_without_the_brokers_id_does_not_start() {
    if !have_tools() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("access-broker-tls-bad-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/tests/identity-certs.sh");
    let out = std::process::Command::new("bash")
        .arg(script)
        .arg(dir.join("certs"))
        .output()
        .unwrap();
    assert!(out.status.success());
    for (extra, client_certs, says) in [
        ("", "required", "broker_spiffe_id"),
        (
            "broker_spiffe_id = \"spiffe://prod.example/deploy-gate\"\n",
            "optional",
            "required",
        ),
    ] {
        let config = format!(
            r#"
[[region]]
name = "eu"
listen = "127.0.0.1:0"
broker_jwks_url = "https://127.0.0.1:1/.well-known/jwks.json"
{extra}[region.services]
orders = "http://127.0.0.1:1"
[region.tls]
cert = "certs/proxy.pem"
key = "certs/proxy.key"
client_certs = "{client_certs}"
[region.tls.trust_domains]
"prod.example" = "certs/bundle.pem"
"#
        );
        let file = dir.join("access-broker.toml");
        std::fs::write(&file, config).unwrap();
        let out = Command::new(binary())
            .args(["region-proxy", "--config"])
            .arg(&file)
            .args(["--region", "eu"])
            .current_dir(&dir)
            .output()
            .await
            .unwrap();
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(says), "{stderr}");
        assert!(!String::from_utf8_lossy(&out.stdout).contains("LISTENING"));
    }
    let _ = std::fs::remove_dir_all(&dir);
}
