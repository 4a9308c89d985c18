//! End-to-end tests of `examples/policy-delivery`: the binary started on 127.0.0.1 and
//! driven over HTTP as CI, operators and hosts (OPA's bundle service and status protocols)
//! drive it — publishing validated revisions, per-host revisions with ETags, promotion
//! authorized by ACL roles and audited before it acts, and state surviving a restart.
#![cfg(all(
    feature = "delivery",
    feature = "gate",
    feature = "acl",
    feature = "audit",
    feature = "sqlite"
))]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "tests: a failed expectation is the failure being tested for"
)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use aws_lc_rs::digest::{SHA256, digest};
use portcullis::audit::{AuditLog, AuditQuery};
use portcullis::policy::Bundle;
use serde_json::{Value, json};
use tokio::process::{Child, Command};

mod common;
use common::{example_binary, spawn_listening};

const CANARY: &str = "spiffe://example.org/canary/host-1";
const PROD: &str = "spiffe://example.org/prod/host-2";
const CANARY_TOKEN: &str = "pcd_canary-host-token-for-tests-only-0001";
const PROD_TOKEN: &str = "pcd_prod-host-token-for-tests-only-00002";
const PROD2: &str = "spiffe://example.org/prod/host-3";
const PROD2_TOKEN: &str = "pcd_prod2-host-token-for-tests-only-0006";
const CI_TOKEN: &str = "pcd_ci-publisher-token-for-tests-only-003";
const ALICE_TOKEN: &str = "pcd_alice-operator-token-for-tests-only-4";
const RELEASE_KEY: &str = "a release signing secret, thirty-two bytes or more";
const BOB_TOKEN: &str = "pcd_bob-reader-token-for-tests-only-00005";

fn binary() -> PathBuf {
    example_binary("policy-delivery", "--features delivery")
}

fn sha256(text: &[u8]) -> String {
    hex::encode(digest(&SHA256, text))
}

fn scratch(tag: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("policy-delivery-e2e-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A delivery server's configuration in `dir`: two hosts, a publisher, an operator and a
/// reader, and a two-step manual pipeline for artifact `authz` (bundle `authz`).
fn write_config(dir: &Path) -> PathBuf {
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

        [[artifacts]]
        name = "signed"
        bundles = ["signed"]

        [[artifacts.steps]]
        name = "everywhere"
        scopes = ["spiffe://example.org/**"]
        promotion = { mode = "manual" }

        [[artifacts]]
        name = "gate"
        bundles = ["gate"]

        [[artifacts.steps]]
        name = "canary"
        scopes = ["spiffe://example.org/canary/**"]
        promotion = { mode = "always" }
        thresholds = { max_deny_rate = 0.5, min_decisions = 10 }

        [[artifacts.steps]]
        name = "production"
        scopes = ["spiffe://example.org/**"]
        promotion = { mode = "always" }
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

        [[hosts]]
        spiffe_id = "{CANARY}"
        token_sha256 = "{canary}"

        [[hosts]]
        spiffe_id = "{PROD}"
        token_sha256 = "{prod}"

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

        [[principals]]
        name = "bob"
        token_sha256 = "{bob}"

        [keys.release]
        algorithm = "HS256"
        key_file = "release.key"

        [signing.signed]
        keyid = "release"

        # Most test bundles are package authz, whatever their artifact (gate's own are gate).
        [roots]
        gate = ["gate", "authz"]
        signed = ["authz"]

        [acl]
        bindings = [
            "service:ci artifact:authz PUBLISHER",
            "service:ci artifact:gate PUBLISHER",
            "service:ci artifact:signed PUBLISHER",
            "user:bob artifact:gate READER",
            "user:alice artifact:authz OPERATOR",
            "user:bob artifact:authz READER",
        ]
        "#,
        audit = dir.join("audit.db").display(),
        canary = sha256(CANARY_TOKEN.as_bytes()),
        prod = sha256(PROD_TOKEN.as_bytes()),
        prod2 = sha256(PROD2_TOKEN.as_bytes()),
        ci = sha256(CI_TOKEN.as_bytes()),
        alice = sha256(ALICE_TOKEN.as_bytes()),
        bob = sha256(BOB_TOKEN.as_bytes()),
    );
    std::fs::write(dir.join("release.key"), RELEASE_KEY).unwrap();
    let path = dir.join("delivery.toml");
    std::fs::write(&path, config).unwrap();
    path
}

/// A bundle tarball: `allow` for alice, and a `test_*` rule expecting `allowed_user` to be
/// allowed (so any other user makes the test fail).
fn bundle(revision: &str, allowed_user: &str) -> Vec<u8> {
    let policy = format!(
        "package authz\n\nallow if input.user == \"alice\"\n\n\
         test_allows_{allowed_user} if allow with input as {{\"user\": \"{allowed_user}\"}}\n"
    );
    let files = vec![
        (
            ".manifest".to_owned(),
            format!(r#"{{"revision":"{revision}","roots":["authz"]}}"#).into_bytes(),
        ),
        ("authz.rego".to_owned(), policy.into_bytes()),
    ];
    Bundle::from_files("authz", files)
        .unwrap()
        .to_tar_gz()
        .unwrap()
}

struct Server {
    child: Child,
    base: String,
    http: reqwest::Client,
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

impl Server {
    async fn start(config: &Path) -> Server {
        Server::start_binary(&binary(), config).await
    }

    async fn start_binary(binary: &Path, config: &Path) -> Server {
        let (child, base) = spawn_listening(binary, config).await;
        Server {
            child,
            base,
            http: reqwest::Client::new(),
        }
    }

    async fn stop(mut self) {
        self.child.kill().await.unwrap();
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Answer {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.body(body).send().await.unwrap();
        let status = response.status().as_u16();
        let etag = response
            .headers()
            .get("etag")
            .map(|v| v.to_str().unwrap().to_owned());
        let body = response.bytes().await.unwrap().to_vec();
        Answer { status, etag, body }
    }

    async fn publish(&self, token: Option<&str>, tarball: Vec<u8>) -> Answer {
        self.send(
            reqwest::Method::POST,
            "/v1/artifacts/authz/revisions",
            token,
            &[("content-type", "application/gzip")],
            tarball,
        )
        .await
    }

    async fn operate(&self, token: &str, operation: &str, body: Value) -> Answer {
        self.send(
            reqwest::Method::POST,
            &format!("/v1/artifacts/authz/{operation}"),
            Some(token),
            &[("content-type", "application/json")],
            body.to_string().into_bytes(),
        )
        .await
    }

    /// `GET /bundles/authz` as the host holding `token`.
    async fn fetch(&self, token: &str, if_none_match: Option<&str>) -> Answer {
        let headers: Vec<(&str, &str)> = if_none_match
            .map(|tag| vec![("if-none-match", tag)])
            .unwrap_or_default();
        self.send(
            reqwest::Method::GET,
            "/bundles/authz",
            Some(token),
            &headers,
            Vec::new(),
        )
        .await
    }

    /// `GET /v1/artifacts/{artifact}/hosts?{query}` as `token`.
    async fn hosts(&self, token: &str, artifact: &str, query: &str) -> Answer {
        self.send(
            reqwest::Method::GET,
            &format!("/v1/artifacts/{artifact}/hosts?{query}"),
            Some(token),
            &[],
            Vec::new(),
        )
        .await
    }

    async fn artifact(&self, token: &str) -> Answer {
        self.send(
            reqwest::Method::GET,
            "/v1/artifacts/authz",
            Some(token),
            &[],
            Vec::new(),
        )
        .await
    }
}

fn etag(revision: &str) -> String {
    format!("\"{revision}\"")
}

#[tokio::test]
async fn revisions_are_validated_staged_per_host_and_survive_a_restart() {
    let dir = scratch("flow");
    let config = write_config(&dir);
    let server = Server::start(&config).await;

    // Only an authenticated PUBLISHER of the artifact publishes.
    let first = bundle("r1", "alice");
    assert_eq!(server.publish(None, first.clone()).await.status, 401);
    assert_eq!(
        server
            .publish(Some("pcd_unknown"), first.clone())
            .await
            .status,
        401
    );
    assert_eq!(
        server.publish(Some(BOB_TOKEN), first.clone()).await.status,
        403
    );

    // A revision whose test_* rule fails is refused at upload, saying why.
    let refused = server
        .publish(Some(CI_TOKEN), bundle("bad", "mallory"))
        .await;
    assert_eq!(refused.status, 422, "{:?}", refused.json());
    let message = refused.json()["message"].as_str().unwrap().to_owned();
    assert!(message.contains("test_allows_mallory"), "{message}");
    assert_eq!(refused.json()["code"], "bundle_refused");
    // Nothing exists for any host.
    assert_eq!(server.fetch(CANARY_TOKEN, None).await.status, 404);

    // A good revision: its id is the tarball's SHA-256; only the canary gets it.
    let published = server.publish(Some(CI_TOKEN), first.clone()).await;
    assert_eq!(published.status, 201, "{:?}", published.json());
    let r1 = sha256(&first);
    assert_eq!(published.json()["revision"], r1.as_str());
    assert_eq!(published.json()["bundle_revision"], "r1");
    let got = server.fetch(CANARY_TOKEN, None).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.etag.as_deref(), Some(etag(&r1).as_str()));
    assert_eq!(got.body, first, "the tarball exactly as published");
    assert_eq!(
        server.fetch(PROD_TOKEN, None).await.status,
        404,
        "production has no revision before the candidate reaches it"
    );
    // The same tarball again is refused: revisions are immutable.
    assert_eq!(
        server.publish(Some(CI_TOKEN), first.clone()).await.status,
        409
    );

    // Promotion takes an OPERATOR: not the publisher, not a reader.
    assert_eq!(
        server.operate(CI_TOKEN, "promote", json!({})).await.status,
        403
    );
    assert_eq!(
        server.operate(BOB_TOKEN, "promote", json!({})).await.status,
        403
    );
    let promoted = server.operate(ALICE_TOKEN, "promote", json!({})).await;
    assert_eq!(promoted.status, 200, "{:?}", promoted.json());
    assert_eq!(server.fetch(PROD_TOKEN, None).await.etag, Some(etag(&r1)));
    let completed = server.operate(ALICE_TOKEN, "promote", json!({})).await;
    assert!(
        completed.json()["event"]
            .as_str()
            .unwrap()
            .contains("completed"),
        "{:?}",
        completed.json()
    );
    assert_eq!(completed.json()["state"]["stable"], r1.as_str());

    // A second revision reaches the canary; production keeps r1, and polls with r1's ETag
    // answer 304 there and the new revision at the canary.
    let second = bundle("r2", "alice");
    assert_eq!(
        server.publish(Some(CI_TOKEN), second.clone()).await.status,
        201
    );
    let r2 = sha256(&second);
    let prod_poll = server.fetch(PROD_TOKEN, Some(&etag(&r1))).await;
    assert_eq!(prod_poll.status, 304);
    assert!(prod_poll.body.is_empty());
    let canary_poll = server.fetch(CANARY_TOKEN, Some(&etag(&r1))).await;
    assert_eq!(canary_poll.status, 200);
    assert_eq!(canary_poll.etag, Some(etag(&r2)));
    assert_eq!(canary_poll.body, second);
    assert_eq!(
        server.fetch(CANARY_TOKEN, Some(&etag(&r2))).await.status,
        304
    );

    // Another host's token cannot fetch as the canary: identity is the token's, and a
    // claimed identity in a header or a status report changes nothing.
    let spoofed = server
        .send(
            reqwest::Method::GET,
            "/bundles/authz",
            Some(PROD_TOKEN),
            &[
                ("x-spiffe-id", CANARY),
                ("x-forwarded-client-cert", &format!("URI={CANARY}")),
            ],
            Vec::new(),
        )
        .await;
    assert_eq!(spoofed.etag, Some(etag(&r1)));
    assert_eq!(server.fetch("pcd_not-a-host", None).await.status, 401);
    assert_eq!(
        server
            .send(
                reqwest::Method::GET,
                "/bundles/authz",
                None,
                &[],
                Vec::new()
            )
            .await
            .status,
        401
    );
    // A publisher's token is not a host token.
    assert_eq!(server.fetch(CI_TOKEN, None).await.status, 401);

    // Hosts report with OPA's status API; the report is filed under the token's host.
    let report = json!({
        "labels": {"id": CANARY, "version": "1.0"},
        "bundles": {"authz": {"name": "authz", "active_revision": "r2"}},
    });
    let status = server
        .send(
            reqwest::Method::POST,
            "/status",
            Some(PROD_TOKEN),
            &[("content-type", "application/json")],
            report.to_string().into_bytes(),
        )
        .await;
    assert_eq!(status.status, 200);
    assert_eq!(
        server
            .send(reqwest::Method::POST, "/status", None, &[], b"{}".to_vec())
            .await
            .status,
        401
    );
    assert_eq!(
        server
            .send(
                reqwest::Method::POST,
                "/status",
                Some(PROD_TOKEN),
                &[],
                b"[1]".to_vec()
            )
            .await
            .status,
        400
    );
    let view = server.artifact(BOB_TOKEN).await;
    assert_eq!(view.status, 200);
    // Only prod reported on authz, under its own identity, running r2.
    let page = server.hosts(BOB_TOKEN, "authz", "").await.json();
    let reported: Vec<(&str, &str)> = page["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h["state"] != "unreported")
        .map(|h| {
            (
                h["spiffe_id"].as_str().unwrap(),
                h["active_revision"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(reported, [(PROD, "r2")], "{page}");
    assert_eq!(server.artifact(CANARY_TOKEN).await.status, 401);
    // The listing shows what the caller may read: bob reads authz and gate, not signed.
    let listing = server
        .send(
            reqwest::Method::GET,
            "/v1/artifacts",
            Some(BOB_TOKEN),
            &[],
            Vec::new(),
        )
        .await
        .json();
    let names: Vec<&str> = listing["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["artifact"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["authz", "gate"], "{listing}");
    assert_eq!(
        listing["artifacts"][0]["state"]["candidate"]["revision"],
        r2.as_str()
    );
    assert_eq!(
        server
            .send(reqwest::Method::GET, "/v1/artifacts", None, &[], Vec::new())
            .await
            .status,
        401
    );

    // Pause holds the candidate; resume lets it go on.
    assert_eq!(
        server
            .operate(
                ALICE_TOKEN,
                "pause",
                json!({"reason": "watching the canary"})
            )
            .await
            .status,
        200
    );
    let held = server.operate(ALICE_TOKEN, "promote", json!({})).await;
    assert_eq!(held.status, 409);
    assert!(held.json()["message"].as_str().unwrap().contains("paused"));
    assert_eq!(server.fetch(PROD_TOKEN, None).await.etag, Some(etag(&r1)));
    let view = server.artifact(BOB_TOKEN).await.json();
    let events_before = view["events"].as_array().unwrap().len();
    server.stop().await;

    // Every operator action was recorded in the audit log before it acted, refusals too.
    {
        let log = AuditLog::sqlite(
            &format!("sqlite://{}", dir.join("audit.db").display()),
            Default::default(),
        )
        .await
        .unwrap();
        let mut query = AuditQuery::all(100);
        query.resource = Some("artifact:authz".parse().unwrap());
        let records = log.query(&query).await.unwrap().records;
        let actions: Vec<String> = records
            .iter()
            .map(|r| format!("{} {}", r.event.actor.subject, r.event.action))
            .collect();
        for want in ["ci publish", "alice promote", "alice pause", "bob publish"] {
            assert!(
                actions.iter().any(|a| a == want),
                "{want} missing from {actions:?}"
            );
        }
        log.close().await.unwrap();
    }

    // After a restart: the same state, revisions, ETags and history.
    let server = Server::start(&config).await;
    assert_eq!(
        server.fetch(CANARY_TOKEN, Some(&etag(&r2))).await.status,
        304
    );
    assert_eq!(server.fetch(PROD_TOKEN, Some(&etag(&r1))).await.status, 304);
    let view = server.artifact(BOB_TOKEN).await.json();
    assert_eq!(view["state"]["paused"], true, "{view}");
    assert_eq!(view["events"].as_array().unwrap().len(), events_before);
    assert_eq!(view["revisions"].as_array().unwrap().len(), 2);
    assert_eq!(
        server.publish(Some(CI_TOKEN), second.clone()).await.status,
        409
    );
    assert_eq!(
        server
            .operate(ALICE_TOKEN, "resume", json!({}))
            .await
            .status,
        200
    );
    let promoted = server.operate(ALICE_TOKEN, "promote", json!({})).await;
    assert_eq!(promoted.status, 200, "{:?}", promoted.json());
    assert_eq!(
        server.fetch(PROD_TOKEN, Some(&etag(&r1))).await.etag,
        Some(etag(&r2))
    );

    // Rolled back, every host returns to the stable revision.
    let rolled = server
        .operate(ALICE_TOKEN, "rollback", json!({"reason": "bad canary"}))
        .await;
    assert_eq!(rolled.status, 200, "{:?}", rolled.json());
    assert_eq!(server.fetch(CANARY_TOKEN, None).await.etag, Some(etag(&r1)));
    assert_eq!(server.fetch(PROD_TOKEN, None).await.etag, Some(etag(&r1)));
    let events = server.artifact(BOB_TOKEN).await.json()["events"].clone();
    let last = events.as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["kind"], "rollback");
    assert_eq!(last["actor"], "user:alice");
    assert!(last["message"].as_str().unwrap().contains("bad canary"));
    server.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// A bundle allowing alice, and carol too when `carol` is set (its test passes either way).
fn bundle_for(revision: &str, carol: bool) -> Vec<u8> {
    let extra = if carol {
        "\nallow if input.user == \"carol\"\n"
    } else {
        ""
    };
    let policy = format!(
        "package authz\n\ndefault allow := false\n\nallow if input.user == \"alice\"\n{extra}\n\
         test_alice if allow with input as {{\"user\": \"alice\"}}\n"
    );
    let files = vec![
        (
            ".manifest".to_owned(),
            format!(r#"{{"revision":"{revision}","roots":["authz"]}}"#).into_bytes(),
        ),
        ("authz.rego".to_owned(), policy.into_bytes()),
    ];
    Bundle::from_files("authz", files)
        .unwrap()
        .to_tar_gz()
        .unwrap()
}

/// A policy-sidecar in `dir` polling the delivery server at `base` every second with
/// `token`.
async fn start_sidecar(dir: &Path, base: &str, token: &str) -> Server {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("host.token"), format!("{token}\n")).unwrap();
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
            token_file = "host.token"
            "#
        ),
    )
    .unwrap();
    Server::start_binary(
        &example_binary("policy-sidecar", "--features policy"),
        &config,
    )
    .await
}

impl Server {
    /// The revision of bundle `authz` this sidecar serves.
    async fn active(&self) -> Option<String> {
        let status = self
            .send(reqwest::Method::GET, "/v1/status", None, &[], Vec::new())
            .await
            .json();
        status["result"]["revisions"]["authz"]
            .as_str()
            .map(str::to_owned)
    }

    async fn until_active(&self, want: &str) {
        for _ in 0..200 {
            if self.active().await.as_deref() == Some(want) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "the sidecar never served {want}; it serves {:?}",
            self.active().await
        );
    }

    /// What this sidecar answers for `data.authz.allow` with `action` (the sample bundle).
    async fn allows_action(&self, action: &str) -> Value {
        let answer = self
            .send(
                reqwest::Method::POST,
                "/v1/data/authz/allow",
                None,
                &[("content-type", "application/json")],
                json!({"input": {"action": action, "groups": []}})
                    .to_string()
                    .into_bytes(),
            )
            .await;
        answer.json()["result"].clone()
    }

    /// What this sidecar answers for `data.authz.allow` with `user`.
    async fn allows(&self, user: &str) -> Value {
        let answer = self
            .send(
                reqwest::Method::POST,
                "/v1/data/authz/allow",
                None,
                &[("content-type", "application/json")],
                json!({"input": {"user": user}}).to_string().into_bytes(),
            )
            .await;
        answer.json()["result"].clone()
    }
}

#[tokio::test]
async fn sidecars_follow_the_pipeline_for_their_own_identity() {
    let dir = scratch("sidecars");
    let config = write_config(&dir);
    let server = Server::start(&config).await;
    let first = bundle_for("r1", false);
    assert_eq!(server.publish(Some(CI_TOKEN), first).await.status, 201);
    for _ in 0..2 {
        assert_eq!(
            server
                .operate(ALICE_TOKEN, "promote", json!({}))
                .await
                .status,
            200
        );
    }
    let canary = start_sidecar(&dir.join("canary"), &server.base, CANARY_TOKEN).await;
    let prod = start_sidecar(&dir.join("prod"), &server.base, PROD_TOKEN).await;
    canary.until_active("r1").await;
    prod.until_active("r1").await;
    assert_eq!(prod.allows("carol").await, json!(false));

    // A new revision reaches the canary only.
    let second = bundle_for("r2", true);
    let r2 = sha256(&second);
    assert_eq!(server.publish(Some(CI_TOKEN), second).await.status, 201);
    canary.until_active("r2").await;
    assert_eq!(canary.allows("carol").await, json!(true));
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        prod.active().await.as_deref(),
        Some("r1"),
        "production polled and kept r1"
    );
    assert_eq!(prod.allows("carol").await, json!(false));

    // The server's access records: production never downloaded r2.
    {
        let url = format!("sqlite://{}", dir.join("data/pipeline.db").display());
        let db = sqlx::SqlitePool::connect(&url).await.unwrap();
        let fetched: Vec<(String, String)> =
            sqlx::query_as("SELECT spiffe_id, revision FROM delivery_fetches ORDER BY id")
                .fetch_all(&db)
                .await
                .unwrap();
        db.close().await;
        assert!(
            fetched.contains(&(CANARY.to_owned(), r2.clone())),
            "{fetched:?}"
        );
        assert!(
            !fetched
                .iter()
                .any(|(host, revision)| host == PROD && *revision == r2),
            "{fetched:?}"
        );
    }

    // Promoted, production follows.
    assert_eq!(
        server
            .operate(ALICE_TOKEN, "promote", json!({}))
            .await
            .status,
        200
    );
    prod.until_active("r2").await;
    assert_eq!(prod.allows("carol").await, json!(true));

    // The delivery server gone, both sidecars keep serving what they have.
    server.stop().await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(canary.allows("carol").await, json!(true));
    assert_eq!(prod.allows("carol").await, json!(true));
    assert_eq!(prod.active().await.as_deref(), Some("r2"));
    canary.stop().await;
    prod.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn the_shipped_sample_bundle_and_configuration_are_valid() {
    let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/policy-delivery");
    let tarball = Bundle::from_dir("authz", sample.join("bundle"), &Default::default())
        .unwrap()
        .to_tar_gz()
        .unwrap();
    let dir = scratch("sample");
    let server = Server::start(&write_config(&dir)).await;
    let published = server.publish(Some(CI_TOKEN), tarball).await;
    assert_eq!(published.status, 201, "{:?}", published.json());
    assert_eq!(published.json()["bundle_revision"], "demo-1");
    server.stop().await;
    // The sample configuration parses and its pipelines load (its data goes to scratch).
    let text = std::fs::read_to_string(sample.join("delivery.toml"))
        .unwrap()
        .replace(
            "../../target/policy-delivery-data",
            &dir.join("sample").display().to_string(),
        );
    std::fs::copy(sample.join("pipelines.toml"), dir.join("pipelines.toml")).unwrap();
    std::fs::write(dir.join("sample.toml"), text).unwrap();
    let server = Server::start(&dir.join("sample.toml")).await;
    let view = server.artifact("demo-alice").await;
    assert_eq!(view.status, 200, "{:?}", view.json());
    server.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// The README's walkthrough, with the shipped files: the sample server configuration and the
/// three sample hosts (`examples/policy-delivery/hosts`: one canary, two production) as real
/// sidecars. The canary serves the published revision, production does not until an
/// operator promotes it, then all three serve it and report it back.
#[tokio::test]
async fn the_readme_walkthrough_runs_on_the_shipped_three_hosts() {
    let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/policy-delivery");
    let dir = scratch("walkthrough");
    let text = std::fs::read_to_string(sample.join("delivery.toml"))
        .unwrap()
        .replace(
            "../../target/policy-delivery-data",
            &dir.join("server").display().to_string(),
        )
        .replace("tick_seconds = 10", "tick_seconds = 1");
    std::fs::copy(sample.join("pipelines.toml"), dir.join("pipelines.toml")).unwrap();
    std::fs::write(dir.join("delivery.toml"), text).unwrap();
    let server = Server::start(&dir.join("delivery.toml")).await;

    let mut hosts = Vec::new();
    for name in ["canary-checkout", "prod-checkout", "prod-payments"] {
        let host = dir.join(name);
        std::fs::create_dir_all(&host).unwrap();
        let token = format!("{name}.token");
        std::fs::copy(sample.join("hosts").join(&token), host.join(&token)).unwrap();
        let config = std::fs::read_to_string(sample.join("hosts").join(format!("{name}.toml")))
            .unwrap()
            .replace("http://127.0.0.1:8282", &server.base)
            .replace(
                &format!("../../../target/policy-delivery-hosts/{name}"),
                "data",
            )
            .replace("report_seconds = 5", "report_seconds = 1");
        let path = host.join("sidecar.toml");
        std::fs::write(&path, config).unwrap();
        let sidecar = Server::start_binary(
            &example_binary("policy-sidecar", "--features policy"),
            &path,
        )
        .await;
        hosts.push(sidecar);
    }
    let [canary, checkout, payments] = &hosts[..] else {
        unreachable!()
    };

    // CI publishes the sample bundle; only the canary gets it.
    let tarball = Bundle::from_dir("authz", sample.join("bundle"), &Default::default())
        .unwrap()
        .to_tar_gz()
        .unwrap();
    let published = server.publish(Some("demo-ci"), tarball).await;
    assert_eq!(published.status, 201, "{:?}", published.json());
    canary.until_active("demo-1").await;
    // Production polls every 2 s: two polls later it still has nothing.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(checkout.active().await, None);
    assert_eq!(payments.active().await, None);

    // Alice promotes it; both production hosts follow on their next poll.
    let promoted = server.operate("demo-alice", "promote", json!({})).await;
    assert_eq!(promoted.status, 200, "{:?}", promoted.json());
    checkout.until_active("demo-1").await;
    payments.until_active("demo-1").await;
    assert_eq!(payments.allows_action("read").await, json!(true));
    assert_eq!(payments.allows_action("deploy").await, json!(false));

    // Each host's report reaches the server under its own SPIFFE ID: three current hosts.
    let mut last = Value::Null;
    for _ in 0..100 {
        last = server.hosts("demo-alice", "authz", "").await.json();
        if last["counts"]["current"] == json!(3) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(last["counts"]["current"], json!(3), "{last}");
    let ids: Vec<&str> = last["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["spiffe_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [
            "spiffe://example.org/ns/canary/sa/checkout",
            "spiffe://example.org/ns/prod/sa/checkout",
            "spiffe://example.org/ns/prod/sa/payments",
        ]
    );
    for host in hosts {
        host.stop().await;
    }
    server.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// `n` OPA decision events for bundle `gate` at manifest revision `revision`, `allowed` of
/// them allowed, gzipped as OPA uploads them.
fn decision_log(revision: &str, allowed: usize, n: usize) -> Vec<u8> {
    use std::io::Write;
    let events: Vec<Value> = (0..n)
        .map(|i| {
            json!({
                "decision_id": format!("d{i}"),
                "path": "authz/allow",
                "bundles": {"gate": {"revision": revision}},
                "result": i < allowed,
            })
        })
        .collect();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(Value::Array(events).to_string().as_bytes())
        .unwrap();
    gz.finish().unwrap()
}

impl Server {
    async fn upload_logs(&self, token: &str, body: Vec<u8>) -> Answer {
        self.send(
            reqwest::Method::POST,
            "/logs",
            Some(token),
            &[
                ("content-encoding", "gzip"),
                ("content-type", "application/json"),
            ],
            body,
        )
        .await
    }

    async fn gate_state(&self) -> Value {
        self.send(
            reqwest::Method::GET,
            "/v1/artifacts/gate",
            Some(BOB_TOKEN),
            &[],
            Vec::new(),
        )
        .await
        .json()
    }

    async fn until_gate(&self, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        for _ in 0..100 {
            let view = self.gate_state().await;
            if done(&view) {
                return view;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("{what} never happened: {}", self.gate_state().await);
    }

    async fn fetch_gate(&self, token: &str) -> Option<String> {
        self.send(
            reqwest::Method::GET,
            "/bundles/gate",
            Some(token),
            &[],
            Vec::new(),
        )
        .await
        .etag
    }
}

#[tokio::test]
async fn the_canary_deny_rate_rolls_a_bad_revision_back_automatically() {
    let dir = scratch("rollback");
    let server = Server::start(&write_config(&dir)).await;
    let good = bundle_for("g1", false);
    let g1 = sha256(&good);
    assert_eq!(
        server
            .send(
                reqwest::Method::POST,
                "/v1/artifacts/gate/revisions",
                Some(CI_TOKEN),
                &[],
                good
            )
            .await
            .status,
        201
    );
    // A host's decisions count only for a candidate it downloaded from this server.
    let early = server
        .upload_logs(CANARY_TOKEN, decision_log("g1", 9, 10))
        .await;
    assert_eq!(early.json()["counted"], 0, "{:?}", early.json());
    assert_eq!(server.fetch_gate(CANARY_TOKEN).await, Some(etag(&g1)));
    // Healthy decisions from the canary: the scheduler promotes it through both steps.
    let counted = server
        .upload_logs(CANARY_TOKEN, decision_log("g1", 9, 10))
        .await;
    assert_eq!(counted.json()["counted"], 10, "{:?}", counted.json());
    server
        .until_gate("g1 completing", |v| v["state"]["stable"] == g1.as_str())
        .await;
    assert_eq!(server.fetch_gate(PROD_TOKEN).await, Some(etag(&g1)));

    // A revision that passes its tests but denies: production's reports about it do not
    // count (it is not assigned there), the canary's breach the deny limit, and the
    // scheduler rolls it back.
    let bad = bundle_for("b2", false);
    let b2 = sha256(&bad);
    assert_eq!(
        server
            .send(
                reqwest::Method::POST,
                "/v1/artifacts/gate/revisions",
                Some(CI_TOKEN),
                &[],
                bad
            )
            .await
            .status,
        201
    );
    assert_eq!(server.fetch_gate(CANARY_TOKEN).await, Some(etag(&b2)));
    let ignored = server
        .upload_logs(PROD_TOKEN, decision_log("b2", 0, 40))
        .await;
    assert_eq!(ignored.json()["counted"], 0);
    assert_eq!(
        server
            .upload_logs(PROD_TOKEN, b"not gzip".to_vec())
            .await
            .status,
        400
    );
    // gzip or nothing: another encoding is refused, not read as JSON; one gzip stream,
    // nothing after it.
    assert_eq!(
        server
            .send(
                reqwest::Method::POST,
                "/logs",
                Some(PROD_TOKEN),
                &[("content-encoding", "br")],
                decision_log("b2", 0, 40),
            )
            .await
            .status,
        415
    );
    let mut trailing = decision_log("b2", 0, 40);
    trailing.extend_from_slice(b"more");
    assert_eq!(server.upload_logs(PROD_TOKEN, trailing).await.status, 400);
    // Two Content-Encoding lines, or an encoding where only plain bodies are read, are
    // refused before any counting; so are two Authorization headers.
    for (path, headers) in [
        (
            "/logs",
            &[("content-encoding", "gzip"), ("content-encoding", "gzip")][..],
        ),
        ("/v1/decision-counts", &[("content-encoding", "br")][..]),
        ("/status", &[("content-encoding", "gzip")][..]),
    ] {
        let refused = server
            .send(
                reqwest::Method::POST,
                path,
                Some(PROD_TOKEN),
                headers,
                b"{}".to_vec(),
            )
            .await;
        assert_eq!(refused.status, 415, "{path} {headers:?}");
    }
    let two = server
        .send(
            reqwest::Method::POST,
            "/status",
            Some(PROD_TOKEN),
            &[("authorization", "Bearer pcd_other")],
            b"{}".to_vec(),
        )
        .await;
    assert_eq!(two.status, 400, "two Authorization headers");
    assert_eq!(
        server
            .upload_logs("pcd_nobody", decision_log("b2", 0, 40))
            .await
            .status,
        401
    );
    let counted = server
        .upload_logs(CANARY_TOKEN, decision_log("b2", 2, 20))
        .await;
    assert_eq!(counted.json()["counted"], 20);
    let view = server
        .until_gate("the automatic rollback", |v| {
            v["state"]["candidate"].is_null()
        })
        .await;
    let last = view["events"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["actor"], "scheduler", "{view}");
    assert!(
        last["message"].as_str().unwrap().contains("deny rate"),
        "{last}"
    );
    assert_eq!(server.fetch_gate(CANARY_TOKEN).await, Some(etag(&g1)));
    assert_eq!(server.fetch_gate(PROD_TOKEN).await, Some(etag(&g1)));
    server.stop().await;
    // The scheduler's changes are in the audit log too, next to the operators'.
    let log = AuditLog::sqlite(
        &format!("sqlite://{}", dir.join("audit.db").display()),
        Default::default(),
    )
    .await
    .unwrap();
    let mut query = AuditQuery::all(100);
    query.resource = Some("artifact:gate".parse().unwrap());
    let records = log.query(&query).await.unwrap().records;
    let rollback = records
        .iter()
        .find(|r| r.event.actor.subject == "scheduler" && r.event.action.to_string() == "rollback")
        .unwrap_or_else(|| panic!("no scheduler rollback in {records:?}"));
    assert_eq!(rollback.event.fields["revision"], b2.as_str());
    assert!(
        rollback
            .event
            .decision
            .as_ref()
            .unwrap()
            .reason()
            .contains("deny rate"),
        "{rollback:?}"
    );
    log.close().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

/// Runs `policy-delivery publish ARGS…`: (success, stdout, stderr).
async fn run_publish(args: &[&str]) -> (bool, String, String) {
    let output = Command::new(binary())
        .arg("publish")
        .args(args)
        .output()
        .await
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test]
async fn ci_publishes_folders_signed_or_not_with_the_publish_command() {
    let dir = scratch("publish");
    let server = Server::start(&write_config(&dir)).await;
    std::fs::write(dir.join("ci.token"), format!("{CI_TOKEN}\n")).unwrap();
    std::fs::write(
        dir.join("wrong.key"),
        "another secret, also thirty-two bytes long",
    )
    .unwrap();
    let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/policy-delivery/bundle");
    let token = dir.join("ci.token").display().to_string();
    let folder = sample.display().to_string();
    let base = server.base.clone();
    let publish = |artifact: &'static str, extra: Vec<String>| {
        let mut args: Vec<String> = [
            "--server",
            &base,
            "--artifact",
            artifact,
            "--dir",
            &folder,
            "--token-file",
            &token,
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        args.extend(extra);
        async move {
            let refs: Vec<&str> = args.iter().map(String::as_str).collect();
            run_publish(&refs).await
        }
    };

    let (ok, out, err) = publish("authz", vec![]).await;
    assert!(ok, "{err}");
    let answer: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(answer["bundle_revision"], "demo-1");
    let revision = answer["revision"].as_str().unwrap().to_owned();
    let fetched = server.fetch(CANARY_TOKEN, None).await;
    assert_eq!(fetched.etag, Some(etag(&revision)));
    assert_eq!(sha256(&fetched.body), revision);
    // The same folder packs to the same bytes: the revision exists already.
    let (ok, _, err) = publish("authz", vec![]).await;
    assert!(!ok);
    assert!(err.contains("already exists"), "{err}");

    // A folder whose test fails is refused by the server, which says why.
    let failing = dir.join("failing");
    std::fs::create_dir_all(&failing).unwrap();
    std::fs::write(
        failing.join("p.rego"),
        "package authz\n\ntest_never if false\n",
    )
    .unwrap();
    let (ok, _, err) = run_publish(&[
        "--server",
        &base,
        "--artifact",
        "authz",
        "--dir",
        &failing.display().to_string(),
        "--token-file",
        &token,
    ])
    .await;
    assert!(!ok);
    assert!(err.contains("test_never"), "{err}");

    // An artifact whose bundle must be signed: unsigned or signed with the wrong key is
    // refused; signed with the release key it is published.
    let (ok, _, err) = publish("signed", vec![]).await;
    assert!(!ok);
    assert!(err.contains("signature"), "{err}");
    let signed = |key: &str| {
        vec![
            "--signing-key".to_owned(),
            dir.join(key).display().to_string(),
            "--signing-alg".to_owned(),
            "HS256".to_owned(),
            "--key-id".to_owned(),
            "release".to_owned(),
        ]
    };
    let (ok, _, err) = publish("signed", signed("wrong.key")).await;
    assert!(!ok);
    assert!(err.contains("signature"), "{err}");
    let (ok, out, err) = publish("signed", signed("release.key")).await;
    assert!(ok, "{err}");
    assert!(out.contains("demo-1"), "{out}");
    server.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_token_shared_by_a_host_and_a_principal_stops_the_start() {
    let dir = scratch("shared");
    let config = write_config(&dir);
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&format!(
        "\n[[principals]]\nname = \"sneaky\"\ntoken_sha256 = \"{}\"\n",
        sha256(CANARY_TOKEN.as_bytes())
    ));
    std::fs::write(&config, text).unwrap();
    let output = Command::new(binary())
        .arg("--config")
        .arg(&config)
        .arg("--listen")
        .arg("127.0.0.1:0")
        .output()
        .await
        .unwrap();
    assert!(!output.status.success());
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(err.contains("both a host's and a principal's"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A bundle for artifact `gate`: allowing alice, or (`deny_all`) nobody — its test passes
/// either way.
fn gate_bundle(revision: &str, deny_all: bool) -> Vec<u8> {
    let policy = if deny_all {
        "package gate\n\ndefault allow := false\n\n\
         test_denies_strangers if not allow with input as {\"user\": \"mallory\"}\n"
    } else {
        "package gate\n\ndefault allow := false\n\nallow if input.user == \"alice\"\n\n\
         test_denies_strangers if not allow with input as {\"user\": \"mallory\"}\n"
    };
    let files = vec![
        (
            ".manifest".to_owned(),
            format!(r#"{{"revision":"{revision}","roots":["gate"]}}"#).into_bytes(),
        ),
        ("gate.rego".to_owned(), policy.as_bytes().to_vec()),
    ];
    Bundle::from_files("gate", files)
        .unwrap()
        .to_tar_gz()
        .unwrap()
}

/// A policy-sidecar following bundle `gate` and reporting to the server every second.
async fn start_reporting_sidecar(dir: &Path, base: &str, token: &str) -> Server {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("host.token"), format!("{token}\n")).unwrap();
    let config = dir.join("sidecar.toml");
    std::fs::write(
        &config,
        format!(
            r#"
            data_dir = "data"
            poll_seconds = 1
            [[bundles]]
            name = "gate"
            url = "{base}/bundles/gate"
            token_file = "host.token"
            [delivery]
            url = "{base}"
            token_file = "host.token"
            report_seconds = 1
            "#
        ),
    )
    .unwrap();
    Server::start_binary(
        &example_binary("policy-sidecar", "--features policy"),
        &config,
    )
    .await
}

impl Server {
    async fn gate_active(&self) -> Option<String> {
        let status = self
            .send(reqwest::Method::GET, "/v1/status", None, &[], Vec::new())
            .await
            .json();
        status["result"]["revisions"]["gate"]
            .as_str()
            .map(str::to_owned)
    }

    async fn until_gate_active(&self, want: &str) {
        for _ in 0..200 {
            if self.gate_active().await.as_deref() == Some(want) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "the sidecar never served {want}; it serves {:?}",
            self.gate_active().await
        );
    }

    async fn decide_gate(&self, user: &str) -> Value {
        self.send(
            reqwest::Method::POST,
            "/v1/data/gate/allow",
            None,
            &[("content-type", "application/json")],
            json!({"input": {"user": user}}).to_string().into_bytes(),
        )
        .await
        .json()["result"]
            .clone()
    }
}

#[tokio::test]
async fn three_sidecars_a_deny_everything_revision_is_rolled_back_from_the_canary_alone() {
    let dir = scratch("fleet");
    let server = Server::start(&write_config(&dir)).await;
    let publish = |tarball: Vec<u8>| {
        server.send(
            reqwest::Method::POST,
            "/v1/artifacts/gate/revisions",
            Some(CI_TOKEN),
            &[],
            tarball,
        )
    };
    assert_eq!(publish(gate_bundle("g1", false)).await.status, 201);
    let canary = start_reporting_sidecar(&dir.join("canary"), &server.base, CANARY_TOKEN).await;
    let prod = start_reporting_sidecar(&dir.join("prod"), &server.base, PROD_TOKEN).await;
    let prod2 = start_reporting_sidecar(&dir.join("prod2"), &server.base, PROD2_TOKEN).await;
    canary.until_gate_active("g1").await;
    // The canary's healthy decisions, reported by the sidecar, let the scheduler promote
    // g1 through both steps: all three serve it.
    for _ in 0..10 {
        assert_eq!(canary.decide_gate("alice").await, json!(true));
    }
    prod.until_gate_active("g1").await;
    prod2.until_gate_active("g1").await;
    server
        .until_gate("g1 completing", |v| v["state"]["stable"].is_string())
        .await;

    // A revision that passes its tests but denies everyone: only the canary serves it; its
    // deny rate breaches the limit and the scheduler rolls it back on its own.
    let bad = gate_bundle("b2", true);
    let b2 = sha256(&bad);
    assert_eq!(publish(bad).await.status, 201);
    canary.until_gate_active("b2").await;
    for _ in 0..20 {
        assert_eq!(canary.decide_gate("alice").await, json!(false));
    }
    let view = server
        .until_gate("the automatic rollback", |v| {
            v["state"]["candidate"].is_null()
        })
        .await;
    let last = view["events"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["actor"], "scheduler", "{view}");
    assert!(
        last["message"].as_str().unwrap().contains("deny rate"),
        "{last}"
    );
    canary.until_gate_active("g1").await;
    assert_eq!(canary.decide_gate("alice").await, json!(true));
    assert_eq!(prod.gate_active().await.as_deref(), Some("g1"));
    assert_eq!(prod2.gate_active().await.as_deref(), Some("g1"));
    // The hosts' status reports reached the server under their own identities.
    let page = server.hosts(BOB_TOKEN, "gate", "").await.json();
    let hosts: Vec<&Value> = page["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h["reported_at_ms"].is_u64())
        .collect();
    for host in [CANARY, PROD, PROD2] {
        assert!(
            hosts.iter().any(|h| h["spiffe_id"] == host),
            "{host}: {hosts:?}"
        );
    }

    // The production sidecars never downloaded b2 (the server's access records).
    server.stop().await;
    {
        let url = format!("sqlite://{}", dir.join("data/pipeline.db").display());
        let db = sqlx::SqlitePool::connect(&url).await.unwrap();
        let fetched: Vec<(String, String)> = sqlx::query_as(
            "SELECT spiffe_id, revision FROM delivery_fetches WHERE artifact = 'gate'",
        )
        .fetch_all(&db)
        .await
        .unwrap();
        db.close().await;
        assert!(
            fetched.contains(&(CANARY.to_owned(), b2.clone())),
            "{fetched:?}"
        );
        assert!(
            !fetched
                .iter()
                .any(|(host, revision)| host != CANARY && *revision == b2),
            "{fetched:?}"
        );
    }
    // With the server gone, every sidecar keeps its last good revision.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for sidecar in [&canary, &prod, &prod2] {
        assert_eq!(sidecar.decide_gate("alice").await, json!(true));
    }
    canary.stop().await;
    prod.stop().await;
    prod2.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn uploads_are_capped_per_endpoint() {
    let dir = scratch("limits");
    let server = Server::start(&write_config(&dir)).await;
    // A bundle larger than the 64 KiB general cap but within max_bundle_bytes (8 MiB).
    let big: Vec<u8> = {
        use std::io::Write;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::none());
        let mut builder = tar::Builder::new(Vec::new());
        let mut add = |path: &str, bytes: &[u8]| {
            let mut header = tar::Header::new_gnu();
            header.set_size(bytes.len() as u64);
            header.set_mode(0o644);
            builder.append_data(&mut header, path, bytes).unwrap();
        };
        add(".manifest", br#"{"revision":"big","roots":["authz"]}"#);
        add(
            "authz.rego",
            b"package authz\n\nallow if input.user == \"alice\"\n",
        );
        let data = json!({"authz": {"padding": "x".repeat(300_000)}}).to_string();
        add("data.json", data.as_bytes());
        gz.write_all(&builder.into_inner().unwrap()).unwrap();
        gz.finish().unwrap()
    };
    assert!(big.len() > 200_000);
    let published = server.publish(Some(CI_TOKEN), big).await;
    assert_eq!(published.status, 201, "{:?}", published.json());
    // Oversized bodies: a 413, or — when the server answers before the client has sent
    // everything — the connection closed under the upload; either way nothing is taken.
    let too_large = |path: &'static str, token: &'static str, size: usize| {
        let url = format!("{}{path}", server.base);
        let http = server.http.clone();
        async move {
            match http
                .post(url)
                .bearer_auth(token)
                .body(vec![b' '; size])
                .send()
                .await
            {
                Ok(response) => response.status().as_u16() == 413,
                Err(err) => err.is_request(),
            }
        }
    };
    assert!(too_large("/v1/artifacts/authz/revisions", CI_TOKEN, 9 << 20).await);
    assert!(too_large("/status", CANARY_TOKEN, 300 * 1024).await);
    assert!(too_large("/v1/artifacts/authz/pause", ALICE_TOKEN, 100 * 1024).await);
    // Still serving, and nothing of those was taken.
    let view = server.artifact(BOB_TOKEN).await.json();
    assert_eq!(view["revisions"].as_array().unwrap().len(), 1, "{view}");
    assert_eq!(view["state"]["paused"], false);
    let page = server.hosts(BOB_TOKEN, "authz", "").await.json();
    assert_eq!(
        page["counts"]["unreported"], 3,
        "no status was taken: {page}"
    );
    server.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// The views the UI reads: what the caller may do, asked exactly as the operation endpoints
/// ask (a READER may do nothing, and is refused when it tries), the candidate against its
/// step's limits, and hosts a page at a time with typed errors for bad parameters; an
/// artifact the caller may not read is not shown, in any view.
#[tokio::test]
async fn the_views_say_what_the_caller_may_do_and_page_the_hosts() {
    let dir = scratch("views");
    let server = Server::start(&write_config(&dir)).await;
    let first = bundle("r1", "alice");
    let r1 = sha256(&first);
    assert_eq!(server.publish(Some(CI_TOKEN), first).await.status, 201);
    for _ in 0..2 {
        let promoted = server.operate(ALICE_TOKEN, "promote", json!({})).await;
        assert_eq!(promoted.status, 200, "{:?}", promoted.json());
    }
    let second = bundle("r2", "alice");
    let r2 = sha256(&second);
    assert_eq!(server.publish(Some(CI_TOKEN), second).await.status, 201);
    let report = |token: &'static str, bundle: Value| {
        server.send(
            reqwest::Method::POST,
            "/status",
            Some(token),
            &[("content-type", "application/json")],
            json!({ "bundles": { "authz": bundle } })
                .to_string()
                .into_bytes(),
        )
    };
    assert_eq!(
        report(CANARY_TOKEN, json!({"active_revision": "r2"}))
            .await
            .status,
        200
    );
    assert_eq!(
        report(PROD_TOKEN, json!({"active_revision": "r0"}))
            .await
            .status,
        200
    );
    let failed = json!({"active_revision": "r1", "code": "bundle_error", "message": "no space"});
    assert_eq!(report(PROD2_TOKEN, failed).await.status, 200);

    // An operator may do everything; the candidate stands at the canary with no decisions.
    let view = server.artifact(ALICE_TOKEN).await.json();
    assert_eq!(view["principal"], "user:alice");
    assert_eq!(
        view["allowed"],
        json!({"promote": true, "pause": true, "resume": true, "rollback": true, "publish": true}),
        "{view}"
    );
    let readiness = &view["readiness"];
    assert_eq!(readiness["revision"], r2.as_str(), "{view}");
    assert_eq!(readiness["step_name"], "canary");
    assert_eq!(readiness["metrics"]["decisions"], 0);
    assert!(readiness["deny_rate"].is_null(), "no decisions, no rate");
    assert_eq!(readiness["thresholds"]["min_decisions"], 0);
    assert_eq!(readiness["manual"], true);
    assert!(readiness["breach"].is_null() && readiness["waiting"].is_null());
    assert_eq!(
        view["steps"][0]["scopes"][0],
        "spiffe://example.org/canary/**"
    );
    assert!(
        view.get("hosts").is_none(),
        "hosts are paged, not in the view"
    );
    let publish_event = view["events"].as_array().unwrap().last().unwrap();
    assert_eq!(publish_event["bundle_revision"], "r2", "{publish_event}");

    // A reader may do nothing — in the view, in the listing — and is refused when it tries.
    let view = server.artifact(BOB_TOKEN).await.json();
    let nothing = json!({"promote": false, "pause": false, "resume": false, "rollback": false, "publish": false});
    assert_eq!(view["allowed"], nothing, "{view}");
    let listing = server
        .send(
            reqwest::Method::GET,
            "/v1/artifacts",
            Some(BOB_TOKEN),
            &[],
            Vec::new(),
        )
        .await
        .json();
    assert_eq!(listing["principal"], "user:bob");
    assert_eq!(listing["artifacts"][0]["artifact"], "authz");
    assert_eq!(listing["artifacts"][0]["allowed"], nothing, "{listing}");
    assert_eq!(listing["artifacts"][0]["candidate_step"], "canary");
    assert_eq!(listing["artifacts"][0]["stable_bundle_revision"], "r1");
    assert_eq!(listing["artifacts"][0]["candidate_bundle_revision"], "r2");
    for operation in ["promote", "pause", "resume", "rollback"] {
        let refused = server.operate(BOB_TOKEN, operation, json!({})).await;
        assert_eq!(refused.status, 403, "{operation}: {:?}", refused.json());
    }
    assert_eq!(
        server.artifact(ALICE_TOKEN).await.json()["state"]["candidate"]["step"],
        0,
        "nothing moved"
    );
    // A publisher publishes, and reads, but does not operate.
    let view = server.artifact(CI_TOKEN).await.json();
    assert_eq!(view["allowed"]["publish"], true, "{view}");
    assert_eq!(view["allowed"]["promote"], false, "{view}");

    // Hosts: each with its step, what it is assigned, what it runs, and how that compares.
    let page = server.hosts(BOB_TOKEN, "authz", "").await;
    assert_eq!(page.status, 200);
    let page = page.json();
    assert_eq!(
        (page["total"].as_u64(), page["matched"].as_u64()),
        (Some(3), Some(3))
    );
    assert_eq!(
        page["counts"],
        json!({"current": 1, "drift": 1, "unreported": 0, "error": 1}),
        "{page}"
    );
    assert_eq!(page["steps"], json!(["canary", "production"]));
    assert_eq!(page["per_step"], json!([1, 2]));
    assert_eq!(page["no_step"], 0);
    let hosts = page["hosts"].as_array().unwrap();
    let row = |i: usize, field: &str| hosts[i][field].clone();
    assert_eq!(row(0, "spiffe_id"), CANARY);
    assert_eq!(row(0, "step"), "canary");
    assert_eq!(row(0, "assigned_revision"), r2.as_str());
    assert_eq!(row(0, "assigned_bundle_revision"), "r2");
    assert_eq!(row(0, "active_revision"), "r2");
    assert_eq!(row(0, "state"), "current");
    assert!(row(0, "reported_at_ms").as_u64().unwrap() > 0);
    assert_eq!(row(1, "spiffe_id"), PROD);
    assert_eq!(row(1, "step"), "production");
    assert_eq!(row(1, "assigned_revision"), r1.as_str());
    assert_eq!(
        (row(1, "active_revision"), row(1, "state")),
        (json!("r0"), json!("drift"))
    );
    assert_eq!(row(2, "spiffe_id"), PROD2);
    assert_eq!(row(2, "state"), "error");
    assert!(row(2, "error").as_str().unwrap().contains("no space"));
    assert_eq!(row(2, "configured"), true);

    // Pages, filters (any case) and states, counted after filtering.
    let ids = |page: &Value| -> Vec<String> {
        page["hosts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["spiffe_id"].as_str().unwrap().to_owned())
            .collect()
    };
    let page = server
        .hosts(BOB_TOKEN, "authz", "offset=1&limit=1")
        .await
        .json();
    assert_eq!(ids(&page), [PROD]);
    assert_eq!(
        (page["matched"].as_u64(), page["limit"].as_u64()),
        (Some(3), Some(1))
    );
    let page = server
        .hosts(BOB_TOKEN, "authz", "filter=%2FPROD%2F")
        .await
        .json();
    assert_eq!(ids(&page), [PROD, PROD2]);
    assert_eq!(page["filtered"], 2);
    assert_eq!(
        page["counts"]["current"], 0,
        "counts follow the filter: {page}"
    );
    assert_eq!(
        page["per_step"],
        json!([1, 2]),
        "steps reach every host: {page}"
    );
    let page = server.hosts(BOB_TOKEN, "authz", "state=drift").await.json();
    assert_eq!(ids(&page), [PROD]);
    assert_eq!(page["matched"], 1);
    assert_eq!(page["counts"]["error"], 1, "every state is still counted");
    let page = server.hosts(BOB_TOKEN, "authz", "offset=10").await.json();
    assert!(ids(&page).is_empty());
    assert_eq!(page["matched"], 3);

    // Bad parameters: a 400 naming the parameter, before anything is read.
    for (query, parameter) in [
        ("limit=0", "limit"),
        ("limit=501", "limit"),
        ("limit=ten", "limit"),
        ("offset=-1", "offset"),
        ("state=running", "state"),
        ("sort=spiffe_id", "sort"),
        ("limit=5&limit=6", "limit"),
        ("filter=%E0%A4%A", "query"),
    ] {
        let refused = server.hosts(BOB_TOKEN, "authz", query).await;
        assert_eq!(refused.status, 400, "{query}");
        let body = refused.json();
        assert_eq!(body["code"], "invalid_parameter", "{query}: {body}");
        assert_eq!(body["parameter"], parameter, "{query}: {body}");
        assert!(body["message"].as_str().unwrap().contains(parameter) || parameter == "query");
    }
    let long = format!("filter={}", "a".repeat(257));
    assert_eq!(server.hosts(BOB_TOKEN, "authz", &long).await.status, 400);

    // Not a reader of `signed`: neither its view nor its hosts — even with bad parameters,
    // refused before they are looked at — nor a place in the listing.
    assert_eq!(
        server
            .send(
                reqwest::Method::GET,
                "/v1/artifacts/signed",
                Some(BOB_TOKEN),
                &[],
                Vec::new()
            )
            .await
            .status,
        403
    );
    assert_eq!(server.hosts(BOB_TOKEN, "signed", "").await.status, 403);
    assert_eq!(
        server.hosts(BOB_TOKEN, "signed", "limit=0").await.status,
        403
    );
    assert!(
        !listing["artifacts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["artifact"] == "signed")
    );
    // Hosts' tokens and no token are not principals; an unknown artifact is a 404.
    assert_eq!(server.hosts(CANARY_TOKEN, "authz", "").await.status, 401);
    assert_eq!(server.hosts("pcd_unknown", "authz", "").await.status, 401);
    assert_eq!(server.hosts(BOB_TOKEN, "nope", "").await.status, 404);
    server.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// A bundle tarball for artifact `authz` with this manifest (the sample's passing policy).
fn bundle_with_manifest(manifest: &str, policy: &str) -> Vec<u8> {
    Bundle::from_files(
        "authz",
        vec![
            (".manifest".to_owned(), manifest.as_bytes().to_vec()),
            ("authz.rego".to_owned(), policy.as_bytes().to_vec()),
        ],
    )
    .unwrap()
    .to_tar_gz()
    .unwrap()
}

/// Black-box findings on publishing and caching: a publisher of one artifact claimed another
/// artifact's namespace through its manifest roots (or the whole tree, with none); a second
/// content reused a manifest revision, so hosts running the old content looked current; a
/// HEAD counted as a download; authenticated answers and per-host bundles had no cache rules.
#[tokio::test]
async fn roots_revision_names_head_and_caching_are_held_to_what_hosts_rely_on() {
    let dir = scratch("namespace");
    let server = Server::start(&write_config(&dir)).await;
    let policy = "package authz\n\nallow if input.user == \"alice\"\n\n\
                  test_alice if allow with input as {\"user\": \"alice\"}\n";

    for manifest in [
        r#"{"revision":"x1","roots":["authz","billing"]}"#,
        r#"{"revision":"x2"}"#,
    ] {
        let refused = server
            .publish(Some(CI_TOKEN), bundle_with_manifest(manifest, policy))
            .await;
        assert_eq!(refused.status, 422, "{manifest}: {:?}", refused.json());
        assert_eq!(refused.json()["code"], "bundle_refused");
        assert!(
            refused.json()["message"]
                .as_str()
                .unwrap()
                .contains("outside its namespace"),
            "{:?}",
            refused.json()
        );
    }

    let first = bundle_with_manifest(r#"{"revision":"v1","roots":["authz"]}"#, policy);
    assert_eq!(server.publish(Some(CI_TOKEN), first).await.status, 201);
    let other = policy.replace("\"alice\"}", "\"alice\", \"x\": 1}");
    let reused = server
        .publish(
            Some(CI_TOKEN),
            bundle_with_manifest(r#"{"revision":"v1","roots":["authz"]}"#, &other),
        )
        .await;
    assert_eq!(reused.status, 409, "{:?}", reused.json());
    assert_eq!(reused.json()["code"], "revision_name_taken");

    // Caching: per-host bundles are private and revalidated; API answers are not stored.
    let http = reqwest::Client::new();
    let call = |method: reqwest::Method, path: &str, token: &str| {
        http.request(method, format!("{}{path}", server.base))
            .bearer_auth(token)
            .send()
    };
    let bundle = call(reqwest::Method::GET, "/bundles/authz", CANARY_TOKEN)
        .await
        .unwrap();
    assert_eq!(bundle.status(), 200);
    assert_eq!(bundle.headers()["cache-control"], "private, no-cache");
    assert_eq!(bundle.headers()["vary"], "Authorization");
    let view = call(reqwest::Method::GET, "/v1/artifacts/authz", ALICE_TOKEN)
        .await
        .unwrap();
    assert_eq!(view.status(), 200);
    assert_eq!(view.headers()["cache-control"], "no-store");

    // A HEAD downloads nothing and is not recorded as a download.
    let head = call(reqwest::Method::HEAD, "/bundles/authz", CANARY_TOKEN)
        .await
        .unwrap();
    assert_eq!(head.status(), 200);
    assert!(head.headers().contains_key("etag"));
    server.stop().await;
    let url = format!("sqlite://{}", dir.join("data/pipeline.db").display());
    let db = sqlx::SqlitePool::connect(&url).await.unwrap();
    let (downloads,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM delivery_fetches")
        .fetch_one(&db)
        .await
        .unwrap();
    db.close().await;
    assert_eq!(downloads, 1, "the GET only");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Black-box finding M1: an operation acted on whatever the candidate was when it arrived, so
/// a publish between an operator's look and their click promoted a revision nobody had seen.
/// With the revision the view showed, a replaced candidate is refused.
#[tokio::test]
async fn an_operation_names_the_candidate_it_decided_about() {
    let dir = scratch("expected");
    let server = Server::start(&write_config(&dir)).await;
    let first = bundle_for("e1", false);
    let seen = sha256(&first);
    assert_eq!(server.publish(Some(CI_TOKEN), first).await.status, 201);
    // Published after the operator looked: it replaces the candidate.
    let second = bundle_for("e2", true);
    let replaced_by = sha256(&second);
    assert_eq!(server.publish(Some(CI_TOKEN), second).await.status, 201);

    let stale = server
        .operate(ALICE_TOKEN, "promote", json!({"revision": seen}))
        .await;
    assert_eq!(stale.status, 409, "{:?}", stale.json());
    assert_eq!(stale.json()["code"], "rollout_refused");
    let view = server.artifact(ALICE_TOKEN).await.json();
    assert_eq!(
        view["state"]["candidate"]["step"], 0,
        "nothing moved: {view}"
    );
    // The history says which candidate the publish withdrew.
    let proposed = view["events"]
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .find(|e| e["kind"] == "publish" && e["message"].as_str().unwrap().contains("proposed"))
        .unwrap()
        .clone();
    assert!(
        proposed["message"]
            .as_str()
            .unwrap()
            .contains(&format!("replacing candidate {seen} (withdrawn at")),
        "{proposed}"
    );
    // A reason is shown to operators and kept in the history: no hidden characters.
    let hidden = server
        .operate(
            ALICE_TOKEN,
            "pause",
            json!({"reason": "routine \u{202e}kcabllor", "revision": replaced_by}),
        )
        .await;
    assert_eq!(hidden.status, 400, "{:?}", hidden.json());
    assert!(
        hidden.json()["message"]
            .as_str()
            .unwrap()
            .contains("U+202E"),
        "{:?}",
        hidden.json()
    );

    let current = server
        .operate(
            ALICE_TOKEN,
            "promote",
            json!({"revision": replaced_by, "step": 0}),
        )
        .await;
    assert_eq!(current.status, 200, "{:?}", current.json());
    let view = server.artifact(ALICE_TOKEN).await.json();
    assert_eq!(view["state"]["candidate"]["revision"], replaced_by.as_str());
    assert_eq!(view["state"]["candidate"]["step"], 1);
    // The same click again (a second operator, a retry): the candidate has moved on from
    // the step that view showed, so it is not promoted a second time.
    let again = server
        .operate(
            ALICE_TOKEN,
            "promote",
            json!({"revision": replaced_by, "step": 0}),
        )
        .await;
    assert_eq!(again.status, 409, "{:?}", again.json());
    assert!(
        again.json()["message"]
            .as_str()
            .unwrap()
            .contains("at step 1, not"),
        "{:?}",
        again.json()
    );
    let bare_step = server
        .operate(ALICE_TOKEN, "promote", json!({"step": 1}))
        .await;
    assert_eq!(bare_step.status, 400, "{:?}", bare_step.json());
    let view = server.artifact(ALICE_TOKEN).await.json();
    assert_eq!(
        view["state"]["candidate"]["step"], 1,
        "nothing moved: {view}"
    );
    server.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}
