//! `examples/policy-delivery` with `[tls]`: hosts identified by their X.509-SVIDs (mutual
//! TLS), driven by reqwest clients presenting rcgen-made SVIDs and by real policy-sidecar
//! processes whose `[client_tls]` presents theirs, with no host token anywhere — the canary
//! gets the candidate and production the stable revision purely by certificate, and their
//! status reports land under their certificates' SPIFFE IDs. Refused: no certificate and no
//! token (401), a certificate of another trust domain (at the handshake), an SVID of a SPIFFE
//! ID that is no configured host (403), an SVID with another host's token (403).
#![cfg(all(
    feature = "delivery",
    feature = "gate",
    feature = "acl",
    feature = "audit",
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

#[path = "../crates/portcullis-identity/tests/support/certs.rs"]
mod certs;
mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use aws_lc_rs::digest::{SHA256, digest};
use certs::{Ca, Leaf};
use portcullis::policy::Bundle;
use portcullis::tls::identity::{
    BundleSet, IdentitySource, Material, PeerIds, Svid, TrustBundle, crypto_provider,
};
use portcullis::tls::reqwest_client;
use serde_json::{Value, json};

use common::{example_binary, spawn_listening};

const SERVER: &str = "spiffe://example.org/policy-delivery";
const CANARY: &str = "spiffe://example.org/canary/host-1";
const PROD: &str = "spiffe://example.org/prod/host-2";
/// A host that still uses a token (no SVID yet).
const PROD2: &str = "spiffe://example.org/prod/host-3";
const PROD2_TOKEN: &str = "pcd_prod2-host-token-for-tls-tests-only-06";
/// An SVID of the trust domain that is no configured host.
const STRANGER: &str = "spiffe://example.org/prod/stranger";
const CI_TOKEN: &str = "pcd_ci-publisher-token-for-tls-tests-only3";
const ALICE_TOKEN: &str = "pcd_alice-operator-token-for-tls-tests-o4";

fn sha256(text: &[u8]) -> String {
    hex::encode(digest(&SHA256, text))
}

fn scratch(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "policy-delivery-tls-e2e-{tag}-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A bundle allowing alice, and carol too when `carol` is set.
fn bundle_for(revision: &str, carol: bool) -> Vec<u8> {
    Bundle::from_files("authz", bundle_files(revision, carol))
        .unwrap()
        .to_tar_gz()
        .unwrap()
}

/// [`bundle_for`]'s files.
fn bundle_files(revision: &str, carol: bool) -> Vec<(String, Vec<u8>)> {
    let extra = if carol {
        "\nallow if input.user == \"carol\"\n"
    } else {
        ""
    };
    let policy = format!(
        "package authz\n\ndefault allow := false\n\nallow if input.user == \"alice\"\n{extra}\n\
         test_alice if allow with input as {{\"user\": \"alice\"}}\n"
    );
    vec![
        (
            ".manifest".to_owned(),
            format!(r#"{{"revision":"{revision}","roots":["authz"]}}"#).into_bytes(),
        ),
        ("authz.rego".to_owned(), policy.into_bytes()),
    ]
}

/// Writes `name.pem` and `name_key.pem` into `dir`: an SVID for `id` issued by `ca`.
fn write_svid(dir: &Path, ca: &Ca, name: &str, id: &str) {
    let issued = ca.leaf(Leaf::svid(id));
    std::fs::write(dir.join(format!("{name}.pem")), &issued.cert_pem).unwrap();
    std::fs::write(dir.join(format!("{name}_key.pem")), &issued.key_pem).unwrap();
}

/// The server's configuration in `dir`: `[tls]` with optional client certificates of
/// `example.org`, hosts CANARY and PROD known by SVID only, PROD2 by token only.
fn write_server_config(dir: &Path, ca: &Ca) -> PathBuf {
    std::fs::write(dir.join("bundle.pem"), ca.pem()).unwrap();
    write_svid(dir, ca, "server", SERVER);
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

        [[artifacts.steps]]
        name = "production"
        scopes = ["spiffe://example.org/**"]
        promotion = { mode = "manual" }
        "#,
    )
    .unwrap();
    let config = format!(
        r#"
        data_dir = "data"
        pipelines = "pipelines.toml"
        tick_seconds = 1

        [audit]
        url = "sqlite://{audit}"

        [tls]
        cert = "server.pem"
        key = "server_key.pem"
        client_certs = "optional"
        reload_seconds = 1
        [tls.trust_domains]
        "example.org" = "bundle.pem"

        [[hosts]]
        spiffe_id = "{CANARY}"

        [[hosts]]
        spiffe_id = "{PROD}"

        [[hosts]]
        spiffe_id = "{PROD2}"
        token_sha256 = "{prod2}"

        [[principals]]
        name = "ci"
        kind = "service"
        token_sha256 = "{ci}"

        [[principals]]
        name = "alice"
        token_sha256 = "{alice}"

        [acl]
        bindings = [
            "service:ci artifact:authz PUBLISHER",
            "user:alice artifact:authz OPERATOR",
        ]
        "#,
        audit = dir.join("audit.db").display(),
        prod2 = sha256(PROD2_TOKEN.as_bytes()),
        ci = sha256(CI_TOKEN.as_bytes()),
        alice = sha256(ALICE_TOKEN.as_bytes()),
    );
    let path = dir.join("delivery.toml");
    std::fs::write(&path, config).unwrap();
    path
}

/// A client trusting `ca`'s `trust_domain`, presenting an SVID for `id` (signed by
/// `issuer`) or none, accepting only the delivery server's SPIFFE ID.
fn client(ca: &Ca, issuer: Option<(&Ca, &str)>) -> reqwest::Client {
    let provider = crypto_provider();
    let svid = issuer.map(|(issuer, id)| {
        let leaf = issuer.leaf(Leaf::svid(id));
        Svid::from_pem(leaf.cert_pem.as_bytes(), leaf.key_pem.as_bytes(), &provider).unwrap()
    });
    let bundles = BundleSet::new()
        .with(TrustBundle::from_pem("example.org".parse().unwrap(), ca.pem().as_bytes()).unwrap());
    let source = IdentitySource::fixed(Material { svid, bundles }, provider);
    reqwest_client(&source, PeerIds::exactly(SERVER.parse().unwrap()))
        .unwrap()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

struct Answer {
    status: u16,
    etag: Option<String>,
    body: Vec<u8>,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

async fn send(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    token: Option<&str>,
    body: Vec<u8>,
) -> Result<Answer, reqwest::Error> {
    let mut request = http.request(method, url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.body(body).send().await?;
    let status = response.status().as_u16();
    let etag = response
        .headers()
        .get("etag")
        .map(|v| v.to_str().unwrap().to_owned());
    let body = response.bytes().await?.to_vec();
    Ok(Answer { status, etag, body })
}

/// A policy-sidecar in `dir` polling the server at `base` with `[client_tls]` (its own SVID
/// for `id`) and reporting to it every second, with no token.
async fn start_sidecar(
    dir: &Path,
    ca: &Ca,
    base: &str,
    id: &str,
) -> (tokio::process::Child, String) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("bundle.pem"), ca.pem()).unwrap();
    write_svid(dir, ca, "svid", id);
    let config = dir.join("sidecar.toml");
    std::fs::write(
        &config,
        format!(
            r#"
            data_dir = "data"
            poll_seconds = 1

            [[bundles]]
            name = "authz"
            url = "{base}/bundles/authz"

            [delivery]
            url = "{base}"
            report_seconds = 1

            [client_tls]
            cert = "svid.pem"
            key = "svid_key.pem"
            server_id = "{SERVER}"
            reload_seconds = 1
            [client_tls.trust_domains]
            "example.org" = "bundle.pem"
            "#
        ),
    )
    .unwrap();
    spawn_listening(
        &example_binary("policy-sidecar", "--features policy,tls"),
        &config,
    )
    .await
}

/// The revision of bundle `authz` the sidecar at `base` serves.
async fn active(base: &str) -> Option<String> {
    let status: Value = reqwest::get(format!("{base}/v1/status"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    status["result"]["revisions"]["authz"]
        .as_str()
        .map(str::to_owned)
}

async fn until_active(base: &str, want: &str) {
    for _ in 0..200 {
        if active(base).await.as_deref() == Some(want) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "the sidecar at {base} never served {want}; it serves {:?}",
        active(base).await
    );
}

/// What the server's hosts view says `id` last reported running, as alice sees it.
async fn reported(operator: &reqwest::Client, server: &str, id: &str) -> Option<String> {
    let hosts = send(
        operator,
        reqwest::Method::GET,
        format!("{server}/v1/artifacts/authz/hosts"),
        Some(ALICE_TOKEN),
        Vec::new(),
    )
    .await
    .unwrap();
    assert_eq!(
        hosts.status,
        200,
        "{}",
        String::from_utf8_lossy(&hosts.body)
    );
    hosts.json()["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|row| row["spiffe_id"] == id)
        .and_then(|row| row["active_revision"].as_str().map(str::to_owned))
}

#[tokio::test]
async fn hosts_are_known_by_their_svids_and_no_token_can_override_one() {
    let dir = scratch("hosts");
    let ca = Ca::root("example.org");
    let config = write_server_config(&dir, &ca);
    let delivery = example_binary("policy-delivery", "--features delivery,tls");
    let (mut server, base) = spawn_listening(&delivery, &config).await;
    assert!(base.starts_with("https://"), "{base}");
    let bundles = format!("{base}/bundles/authz");
    let get = reqwest::Method::GET;

    // Operators and CI keep their tokens over TLS, without a client certificate.
    let operator = client(&ca, None);
    let r1 = bundle_for("r1", false);
    let r1_id = sha256(&r1);
    let published = send(
        &operator,
        reqwest::Method::POST,
        format!("{base}/v1/artifacts/authz/revisions"),
        Some(CI_TOKEN),
        r1,
    )
    .await
    .unwrap();
    assert_eq!(
        published.status,
        201,
        "{}",
        String::from_utf8_lossy(&published.body)
    );
    for _ in 0..2 {
        let promoted = send(
            &operator,
            reqwest::Method::POST,
            format!("{base}/v1/artifacts/authz/promote"),
            Some(ALICE_TOKEN),
            b"{}".to_vec(),
        )
        .await
        .unwrap();
        assert_eq!(
            promoted.status,
            200,
            "{}",
            String::from_utf8_lossy(&promoted.body)
        );
    }
    // CI's `policy-delivery publish` verifies the server's SVID and SPIFFE ID.
    let folder = dir.join("r2");
    std::fs::create_dir_all(&folder).unwrap();
    for (path, bytes) in bundle_files("r2", true) {
        std::fs::write(folder.join(path), bytes).unwrap();
    }
    std::fs::write(dir.join("ci.token"), CI_TOKEN).unwrap();
    let publish = |server_id: &str| {
        tokio::process::Command::new(&delivery)
            .arg("publish")
            .args(["--server", &base, "--artifact", "authz", "--dir"])
            .arg(&folder)
            .arg("--token-file")
            .arg(dir.join("ci.token"))
            .arg("--trust-bundle")
            .arg(dir.join("bundle.pem"))
            .args(["--server-id", server_id])
            .output()
    };
    let wrong = publish("spiffe://example.org/someone-else").await.unwrap();
    assert!(
        !wrong.status.success(),
        "published to a server of another SPIFFE ID"
    );
    let stderr = String::from_utf8_lossy(&wrong.stderr);
    assert!(stderr.contains("POST https://"), "{stderr}");
    let published = publish(SERVER).await.unwrap();
    assert!(
        published.status.success(),
        "{}",
        String::from_utf8_lossy(&published.stderr)
    );
    let answer: Value = serde_json::from_slice(&published.stdout).unwrap();
    let r2_id = answer["revision"].as_str().unwrap().to_owned();

    // By certificate alone: the canary gets the candidate, production the stable revision.
    let canary = client(&ca, Some((&ca, CANARY)));
    let prod = client(&ca, Some((&ca, PROD)));
    let answer = send(&canary, get.clone(), bundles.clone(), None, Vec::new())
        .await
        .unwrap();
    assert_eq!(answer.status, 200);
    assert_eq!(answer.etag, Some(format!("\"{r2_id}\"")));
    let answer = send(&prod, get.clone(), bundles.clone(), None, Vec::new())
        .await
        .unwrap();
    assert_eq!(answer.status, 200);
    assert_eq!(answer.etag, Some(format!("\"{r1_id}\"")));

    // A host that still has a token keeps using it over TLS.
    let answer = send(
        &operator,
        get.clone(),
        bundles.clone(),
        Some(PROD2_TOKEN),
        Vec::new(),
    )
    .await
    .unwrap();
    assert_eq!(answer.status, 200);
    assert_eq!(answer.etag, Some(format!("\"{r1_id}\"")));

    // No certificate and no token: 401.
    let answer = send(&operator, get.clone(), bundles.clone(), None, Vec::new())
        .await
        .unwrap();
    assert_eq!(answer.status, 401);
    assert_eq!(answer.json()["code"], "unauthenticated");

    // An SVID of the trust domain that is no configured host: 403, whatever token it adds.
    let stranger = client(&ca, Some((&ca, STRANGER)));
    for token in [None, Some(PROD2_TOKEN)] {
        let answer = send(&stranger, get.clone(), bundles.clone(), token, Vec::new())
            .await
            .unwrap();
        assert_eq!(answer.status, 403, "{token:?}");
        assert_eq!(answer.json()["code"], "unknown_host");
    }

    // The canary's SVID with production's token cannot pick production's identity.
    let answer = send(
        &canary,
        get.clone(),
        bundles.clone(),
        Some(PROD2_TOKEN),
        Vec::new(),
    )
    .await
    .unwrap();
    assert_eq!(answer.status, 403);
    assert_eq!(answer.json()["code"], "identity_mismatch");
    // Nor with a token that is no host's (an operator's).
    let answer = send(
        &canary,
        get.clone(),
        bundles.clone(),
        Some(ALICE_TOKEN),
        Vec::new(),
    )
    .await
    .unwrap();
    assert_eq!(answer.status, 401);
    // Nor can a status report or decision counts under the canary's SVID speak for it.
    let forged = json!({"labels": {"id": PROD2}, "bundles": {"authz": {"name": "authz", "active_revision": "r9"}}});
    let answer = send(
        &canary,
        reqwest::Method::POST,
        format!("{base}/status"),
        Some(PROD2_TOKEN),
        forged.to_string().into_bytes(),
    )
    .await
    .unwrap();
    assert_eq!(answer.status, 403);
    let answer = send(
        &canary,
        reqwest::Method::POST,
        format!("{base}/v1/decision-counts"),
        Some(PROD2_TOKEN),
        json!({"bundles": []}).to_string().into_bytes(),
    )
    .await
    .unwrap();
    assert_eq!(answer.status, 403);

    // A certificate of another trust domain fails the handshake.
    let other = Ca::root("other.example");
    let outsider = client(&ca, Some((&other, "spiffe://other.example/canary/host-1")));
    let refused = send(&outsider, get.clone(), bundles.clone(), None, Vec::new()).await;
    assert!(
        refused.is_err(),
        "a foreign trust domain's SVID was answered"
    );
    // So does one claiming a configured host's ID but issued by another CA.
    let impostor = client(&ca, Some((&other, CANARY)));
    let refused = send(&impostor, get.clone(), bundles.clone(), None, Vec::new()).await;
    assert!(refused.is_err(), "an SVID from an unknown CA was answered");

    // A status report lands under the certificate's SPIFFE ID, whatever its labels claim.
    let answer = send(
        &canary,
        reqwest::Method::POST,
        format!("{base}/status"),
        None,
        forged.to_string().into_bytes(),
    )
    .await
    .unwrap();
    assert_eq!(
        answer.status,
        200,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    assert_eq!(
        reported(&operator, &base, CANARY).await.as_deref(),
        Some("r9")
    );
    assert_eq!(reported(&operator, &base, PROD2).await, None);

    // Real sidecars with SVIDs and no token: the canary runs r2, production r1, and each
    // one's reports land under its own SPIFFE ID.
    let (_canary_sidecar, canary_url) =
        start_sidecar(&dir.join("canary"), &ca, &base, CANARY).await;
    let (_prod_sidecar, prod_url) = start_sidecar(&dir.join("prod"), &ca, &base, PROD).await;
    until_active(&canary_url, "r2").await;
    until_active(&prod_url, "r1").await;
    for _ in 0..100 {
        if reported(&operator, &base, CANARY).await.as_deref() == Some("r2")
            && reported(&operator, &base, PROD).await.as_deref() == Some("r1")
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        reported(&operator, &base, CANARY).await.as_deref(),
        Some("r2")
    );
    assert_eq!(
        reported(&operator, &base, PROD).await.as_deref(),
        Some("r1")
    );
    assert_eq!(reported(&operator, &base, PROD2).await, None);

    server.kill().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
