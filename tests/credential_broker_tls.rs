//! `examples/credential-broker` with `[tls]`, end to end with real tools: certificates made by
//! `openssl` (`scripts/tests/identity-certs.sh`), the broker driven by Python `requests` with
//! a client certificate, STS from moto (`scripts/with-services`). A service authenticates by
//! its SVID and is vended credentials by its SPIFFE ID's groups; a SPIFFE ID without mapped
//! groups gets none; a certificate of another trust domain fails the handshake.
#![cfg(all(
    feature = "gate",
    feature = "axum",
    feature = "vend",
    feature = "aws",
    feature = "ldap",
    feature = "sqlite",
    feature = "tls"
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
use tokio::process::Command;

mod common;
use common::{env, example_binary};

fn binary() -> PathBuf {
    example_binary("credential-broker", "--all-features")
}

/// Whether `tool` runs; without it the test is skipped, or fails under
/// `PORTCULLIS_REQUIRE_SERVICES=1` (scripts/install-deps installs it).
fn have(tool: &str, args: &[&str]) -> bool {
    let ok = std::process::Command::new(tool)
        .args(args)
        .output()
        .is_ok_and(|out| out.status.success());
    if !ok {
        assert!(
            std::env::var("PORTCULLIS_REQUIRE_SERVICES").as_deref() != Ok("1"),
            "{tool} {args:?} is required (PORTCULLIS_REQUIRE_SERVICES=1); scripts/install-deps installs it"
        );
        eprintln!("skipped: `{tool} {args:?}` does not run; scripts/install-deps installs it");
    }
    ok
}

fn openssl_certs(dir: &Path) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/tests/identity-certs.sh");
    let out = std::process::Command::new("bash")
        .arg(script)
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn config(certs: &Path) -> String {
    let c = |name: &str| certs.join(name).display().to_string();
    format!(
        r#"
audit_url = "sqlite://audit.db"

[directory]
users_file = "users.toml"

[vend]
base_role_arn = "arn:aws:iam::123456789012:role/data-access-base"
[vend.groups]
deployers = ["deploy-artifacts"]
ci = ["read-logs"]
[vend.roles]
deploy-artifacts = ["arn:aws:iam::123456789012:policy/artifacts-write"]
read-logs = ["arn:aws:iam::123456789012:policy/logs-read"]

[sts]
endpoint_url = "{moto}"
access_key_env = "TEST_BROKER_KEY"
secret_key_env = "TEST_BROKER_SECRET"

[tls]
cert = "{server_pem}"
key = "{server_key}"
client_certs = "optional"
[tls.trust_domains]
"prod.example" = "{bundle}"
[[tls.groups]]
pattern = "spiffe://prod.example/ci"
group = "ci"
"#,
        moto = env("PORTCULLIS_TEST_MOTO_URL"),
        server_pem = c("server.pem"),
        server_key = c("server.key"),
        bundle = c("bundle.pem"),
    )
}

/// Python `requests` posting to `/v1/credentials` with the client certificate `cert` (or
/// none), verifying the broker against the bundle: the status and JSON body, or
/// `("tls", error)` when the handshake failed.
async fn python_requests(base: &str, certs: &Path, cert: Option<&str>) -> (String, Value) {
    let cert = match cert {
        Some(name) => format!(
            "({:?}, {:?})",
            certs.join(format!("{name}.pem")),
            certs.join(format!("{name}.key"))
        ),
        None => "None".into(),
    };
    let script = format!(
        r#"
import json, requests
try:
    r = requests.post({url:?}, cert={cert}, verify={bundle:?}, timeout=30)
    print(json.dumps([str(r.status_code), r.json()]))
except requests.exceptions.SSLError as e:
    print(json.dumps(["tls", str(e)]))
except requests.exceptions.ConnectionError as e:
    print(json.dumps(["tls", str(e)]))
"#,
        url = format!("{base}/v1/credentials"),
        bundle = certs.join("bundle.pem"),
    );
    let out = Command::new("python3")
        .args(["-c", &script])
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let [status, body]: [Value; 2] = serde_json::from_str(text.trim())
        .unwrap_or_else(|e| panic!("{e}: {text} {}", String::from_utf8_lossy(&out.stderr)));
    (status.as_str().unwrap().to_owned(), body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_is_vended_credentials_by_its_svid_over_python_requests() {
    let _ = portcullis_test_support::service_or_skip!("PORTCULLIS_TEST_MOTO_URL");
    if !have("openssl", &["version"]) || !have("python3", &["-c", "import requests"]) {
        return;
    }
    let dir = std::env::temp_dir().join(format!("credential-broker-tls-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let certs = dir.join("certs");
    openssl_certs(&certs);
    std::fs::write(dir.join("broker.toml"), config(&certs)).unwrap();
    // A person whose user name is written as the CI service's SPIFFE ID.
    let hash = portcullis::directory::PasswordHash::create_with_iterations(
        &portcullis::directory::Password::new("mallory-pw".to_owned()).unwrap(),
        10_000,
    )
    .unwrap();
    std::fs::write(
        dir.join("users.toml"),
        format!(
            "[[user]]\nname = \"spiffe://prod.example/ci\"\npassword_hash = \"{hash}\"\ngroups = []\n"
        ),
    )
    .unwrap();
    let mut child = Command::new(binary())
        .arg("--config")
        .arg(dir.join("broker.toml"))
        .arg("--listen")
        .arg("127.0.0.1:0")
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
    assert!(base.starts_with("https://127.0.0.1:"), "{base}");
    // The server's certificate names localhost (and 127.0.0.1).
    let base = base.replace("127.0.0.1", "localhost");

    // The CI service's SVID: its SPIFFE ID's group `ci` maps to read-logs.
    let (status, creds) = python_requests(&base, &certs, Some("client")).await;
    assert_eq!(status, "200", "{creds}");
    assert_eq!(creds["Version"], 1);
    assert!(creds["AccessKeyId"].as_str().unwrap().starts_with("ASIA"));
    assert_eq!(
        creds["Vended"]["policy_arns"],
        json!(["arn:aws:iam::123456789012:policy/logs-read"])
    );
    assert_eq!(creds["Vended"]["roles"], json!(["read-logs"]));
    let session = creds["Vended"]["session_name"].as_str().unwrap();
    assert!(
        session.starts_with("spiffe---prod.example-ci."),
        "{session}"
    );

    // The keys work through the AWS SDK, as the service's session on the base role.
    let sts = aws_sdk_sts::Client::from_conf(
        aws_sdk_sts::Config::builder()
            .behavior_version(aws_sdk_sts::config::BehaviorVersion::latest())
            .region(aws_sdk_sts::config::Region::new("us-east-1"))
            .endpoint_url(env("PORTCULLIS_TEST_MOTO_URL"))
            .credentials_provider(aws_sdk_sts::config::Credentials::new(
                creds["AccessKeyId"].as_str().unwrap(),
                creds["SecretAccessKey"].as_str().unwrap(),
                creds["SessionToken"].as_str().map(str::to_owned),
                None,
                "vended",
            ))
            .build(),
    );
    let identity = sts.get_caller_identity().send().await.unwrap();
    assert!(
        identity
            .arn()
            .unwrap_or_default()
            .ends_with(&format!(":assumed-role/data-access-base/{session}")),
        "{identity:?}"
    );

    // A verified SVID whose ID is in no mapped group: nothing.
    let (status, body) = python_requests(&base, &certs, Some("proxy")).await;
    assert_eq!(status, "403", "{body}");
    assert_eq!(body["error"], "no_matching_roles", "{body}");

    // Another trust domain, an expired SVID: the handshake fails.
    for bad in ["wrong-domain", "expired", "other-client"] {
        let (status, body) = python_requests(&base, &certs, Some(bad)).await;
        assert_eq!(status, "tls", "{bad}: {body}");
    }

    // A person logged in with a user name written as a SPIFFE ID does not get the
    // service's groups: only an SVID makes a SPIFFE ID's principal.
    let script = format!(
        r#"
import json, requests
t = requests.post({login:?}, json={{"username": "spiffe://prod.example/ci", "password": "mallory-pw"}}, verify={bundle:?}, timeout=30)
assert t.status_code == 200, t.text
r = requests.post({url:?}, headers={{"Authorization": "Bearer " + t.json()["token"]}}, verify={bundle:?}, timeout=30)
print(json.dumps([str(r.status_code), r.json()]))
"#,
        login = format!("{base}/v1/login"),
        url = format!("{base}/v1/credentials"),
        bundle = certs.join("bundle.pem"),
    );
    let out = Command::new("python3")
        .args(["-c", &script])
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let [status, body]: [Value; 2] = serde_json::from_str(text.trim())
        .unwrap_or_else(|e| panic!("{e}: {text} {}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(status, "403", "{body}");

    // No certificate and no token: 401.
    let (status, body) = python_requests(&base, &certs, None).await;
    assert_eq!(status, "401", "{body}");

    child.kill().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
