//! deploy-gate's `[tls]`, end to end with the command-line tools: certificates made by
//! `openssl` (`scripts/tests/identity-certs.sh`), requests made by `curl` with
//! `--cert/--key/--cacert`. A CI system deploys with its SVID (roles bound to its SPIFFE ID,
//! or to a group its ID's pattern gets); a certificate of another trust domain fails the
//! handshake; a caller without a certificate still uses its token.

use std::path::Path;

use super::{Server, TempDir};

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
            "{tool} is required (PORTCULLIS_REQUIRE_SERVICES=1); scripts/install-deps installs it"
        );
        eprintln!("skipped: `{tool}` is not available; scripts/install-deps installs it");
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

/// A configuration serving TLS with the openssl certificates in `certs`: client
/// certificates `client_certs`, `spiffe://prod.example/ci` bound as a service to OPERATOR on
/// `checkout`, and every `spiffe://prod.example/ci*` ID in group `ci`, OPERATOR on `search`.
fn tls_config(certs: &Path, client_certs: &str) -> String {
    let c = |name: &str| certs.join(name).display().to_string();
    format!(
        r#"
[deploy]
production_stages = ["prod"]

[authentication]
[[authentication.method]]
type = "script_token"
[[authentication.method]]
type = "personal_token"

[authorization]
bootstrap_admin = "admin"
[authorization.acl.bindings]
lines = [
  "service:spiffe://prod.example/ci env:checkout OPERATOR",
  "group:ci env:search OPERATOR",
]

[audit]
url = "sqlite://audit.db"

[tls]
cert = "{server_pem}"
key = "{server_key}"
client_certs = "{client_certs}"
[tls.trust_domains]
"prod.example" = "{bundle}"
[[tls.groups]]
pattern = "spiffe://prod.example/ci"
group = "ci"
"#,
        server_pem = c("server.pem"),
        server_key = c("server.key"),
        bundle = c("bundle.pem"),
    )
}

/// curl's exit code, HTTP status (0 without an answer) and body.
async fn curl(certs: &Path, method: &str, url: &str, args: &[&str]) -> (i32, u16, String) {
    let out = tokio::process::Command::new("curl")
        .args([
            "-sS",
            "-o",
            "-",
            "-w",
            "\n%{http_code}",
            "-X",
            method,
            "--cacert",
        ])
        .arg(certs.join("bundle.pem"))
        .args(args)
        .arg(url)
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (
        out.status.code().unwrap_or(-1),
        code.trim().parse().unwrap_or(0),
        body.to_owned(),
    )
}

fn cert_args(certs: &Path, name: &str) -> [String; 4] {
    [
        "--cert".into(),
        certs.join(format!("{name}.pem")).display().to_string(),
        "--key".into(),
        certs.join(format!("{name}.key")).display().to_string(),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ci_system_deploys_with_its_svid_over_curl() {
    if !have("openssl", &["version"]) || !have("curl", &["--version"]) {
        return;
    }
    let certs = TempDir::new();
    openssl_certs(&certs.0);
    let s = Server::start(&tls_config(&certs.0, "optional")).await;
    assert!(s.base.starts_with("https://"), "{}", s.base);
    let deploy = |env: &str, stage: &str| {
        format!(
            "{}/v1/envs/{env}/{stage}/deploys?build_id=12345&description=ci",
            s.base
        )
    };
    let ci = cert_args(&certs.0, "client");
    let ci: Vec<&str> = ci.iter().map(String::as_str).collect();

    // The CI system's SVID: OPERATOR on checkout through its SPIFFE ID...
    let (exit, status, body) = curl(&certs.0, "POST", &deploy("checkout", "staging"), &ci).await;
    assert_eq!((exit, status), (0, 201), "{body}");
    assert!(body.contains("spiffe://prod.example/ci"), "{body}");
    // ...and on search through the group its ID's pattern gets; nothing elsewhere.
    let (exit, status, body) = curl(&certs.0, "POST", &deploy("search", "staging"), &ci).await;
    assert_eq!((exit, status), (0, 201), "{body}");
    let (exit, status, body) = curl(&certs.0, "POST", &deploy("payments", "staging"), &ci).await;
    assert_eq!((exit, status), (0, 403), "{body}");

    // Another verified SVID of the domain has no roles.
    let proxy = cert_args(&certs.0, "proxy");
    let proxy: Vec<&str> = proxy.iter().map(String::as_str).collect();
    let (exit, status, body) = curl(&certs.0, "POST", &deploy("checkout", "staging"), &proxy).await;
    assert_eq!((exit, status), (0, 403), "{body}");

    // Certificates that are not SVIDs of a trusted domain fail the handshake: no HTTP answer.
    for bad in [
        "wrong-domain",
        "expired",
        "leaf-ca",
        "two-uris",
        "other-client",
    ] {
        let args = cert_args(&certs.0, bad);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (exit, status, body) =
            curl(&certs.0, "POST", &deploy("checkout", "staging"), &args).await;
        assert!(
            exit != 0 && status == 0,
            "{bad}: curl exit {exit}, status {status}: {body}"
        );
    }

    // No certificate: the token still works, and no credential is still 401.
    let admin = format!("Authorization: {}", s.admin());
    let (exit, status, body) = curl(
        &certs.0,
        "POST",
        &deploy("checkout", "staging"),
        &["-H", &admin],
    )
    .await;
    assert_eq!((exit, status), (0, 201), "{body}");
    let (exit, status, _) = curl(&certs.0, "POST", &deploy("checkout", "staging"), &[]).await;
    assert_eq!((exit, status), (0, 401));
    let (exit, status, body) = curl(&certs.0, "GET", &format!("{}/health", s.base), &[]).await;
    assert_eq!((exit, status), (0, 200), "{body}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn required_client_certificates_refuse_a_caller_without_one() {
    if !have("openssl", &["version"]) || !have("curl", &["--version"]) {
        return;
    }
    let certs = TempDir::new();
    openssl_certs(&certs.0);
    let s = Server::start(&tls_config(&certs.0, "required")).await;
    let url = format!("{}/health", s.base);
    let admin = format!("Authorization: {}", s.admin());
    let (exit, status, _) = curl(&certs.0, "GET", &url, &["-H", &admin]).await;
    assert!(
        exit != 0 && status == 0,
        "curl exit {exit}, status {status}"
    );
    let ci = cert_args(&certs.0, "client");
    let ci: Vec<&str> = ci.iter().map(String::as_str).collect();
    let (exit, status, body) = curl(&certs.0, "GET", &url, &ci).await;
    assert_eq!((exit, status), (0, 200), "{body}");
    s.stop().await;
}

#[tokio::test]
async fn a_tls_section_that_does_not_load_stops_the_start() {
    let certs = TempDir::new();
    // No files at all: the certificate cannot be read.
    let dir = TempDir::new();
    std::fs::write(
        dir.0.join("deploy-gate.toml"),
        tls_config(&certs.0, "optional"),
    )
    .unwrap();
    let out = tokio::process::Command::new(super::binary())
        .arg("--config")
        .arg(dir.0.join("deploy-gate.toml"))
        .arg("--data-dir")
        .arg(dir.0.join("data"))
        .arg("--listen")
        .arg("127.0.0.1:0")
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("[tls]"), "{stderr}");
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("LISTENING"),
        "never served without its TLS"
    );
}
