//! End-to-end tests of `examples/policy-sidecar`: the binary started on 127.0.0.1 and driven
//! over HTTP as OPA clients drive OPA — the REST API on OPA's documented example, hot reload
//! and last known good across a restart, decision logs, and following a rollout.
#![cfg(all(
    feature = "policy",
    feature = "audit",
    feature = "sqlite",
    feature = "edge"
))]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "tests: a failed expectation is the failure being tested for"
)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use portcullis::ManualClock;
use portcullis::audit::{AuditLog, AuditQuery};
use portcullis::policy::{Rollout, RolloutConfig};
use serde_json::{Value, json};
use tokio::process::Child;

mod common;
use common::{example_binary, spawn_listening};

fn binary() -> PathBuf {
    example_binary("policy-sidecar", "--features policy")
}

fn scratch(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("policy-sidecar-e2e-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The demo bundle shipped with the example (OPA's REST API documentation example).
fn demo_bundle() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/policy-sidecar/bundle")
}

struct Sidecar {
    _child: Child,
    base: String,
    http: reqwest::Client,
}

impl Sidecar {
    async fn start(config: &Path) -> Sidecar {
        let (child, base) = spawn_listening(&binary(), config).await;
        Sidecar {
            _child: child,
            base,
            http: reqwest::Client::new(),
        }
    }

    async fn post(&self, path: &str, body: &str) -> (u16, Value) {
        let response = self
            .http
            .post(format!("{}{path}", self.base))
            .body(body.to_owned())
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        let response = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Waits until `rule` answers `want` (bundles load in the background).
    async fn until(&self, rule: &str, input: Value, want: Value) {
        let body = json!({ "input": input }).to_string();
        for _ in 0..300 {
            let (_, answer) = self.post(rule, &body).await;
            if answer.get("result") == Some(&want) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let (_, answer) = self.post(rule, &body).await;
        panic!("{rule} never answered {want}; last answer {answer}");
    }

    /// Waits (up to 6 s) until bundle `app`'s status satisfies `done`, and returns it
    /// as it then stands, for the test's own assertions.
    async fn app_status_once(&self, done: impl Fn(&Value) -> bool) -> Value {
        for _ in 0..300 {
            let (_, status) = self.get("/v1/status").await;
            if done(&status["result"]["bundles"]["app"]) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let (_, status) = self.get("/v1/status").await;
        status["result"]["bundles"]["app"].clone()
    }
}

/// Whether a bundle status's last error mentions `text`.
fn last_error_has(app: &Value, text: &str) -> bool {
    app["last_error"].as_str().is_some_and(|e| e.contains(text))
}

fn write_config(dir: &Path, extra: &str) -> PathBuf {
    let path = dir.join("sidecar.toml");
    std::fs::write(
        &path,
        format!("data_dir = \"data\"\npoll_seconds = 1\nmax_body_bytes = 65536\n{extra}"),
    )
    .unwrap();
    path
}

fn write_bundle(dir: &Path, revision: &str, allow: &str) {
    std::fs::create_dir_all(dir.join("app")).unwrap();
    std::fs::write(
        dir.join(".manifest"),
        format!(r#"{{"revision": "{revision}", "roots": ["app"]}}"#),
    )
    .unwrap();
    std::fs::write(
        dir.join("app/policy.rego"),
        format!(
            "package app\nrevision := \"{revision}\"\nallow if {allow}\ntest_admin_allowed if allow with input as {{\"user\": \"admin\"}}\n"
        ),
    )
    .unwrap();
}

#[tokio::test]
async fn answers_opa_rest_api_calls_as_opa_documents_them() {
    let dir = scratch("opa");
    let config = write_config(
        &dir,
        &format!(
            "[[bundles]]\nname = \"examples\"\ndir = \"{}\"\n",
            demo_bundle().display()
        ),
    );
    let sidecar = Sidecar::start(&config).await;
    sidecar
        .until(
            "/v1/data/opa/examples/allow_request",
            json!({"example": {"flag": true}}),
            json!(true),
        )
        .await;

    // POST with input: a defined result, and a decision id.
    let (status, answer) = sidecar
        .post(
            "/v1/data/opa/examples/allow_request",
            r#"{"input": {"example": {"flag": true}}}"#,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(answer["result"], json!(true));
    assert!(answer["decision_id"].as_str().unwrap().len() == 36);
    // Undefined: 200 without a result, as OPA answers.
    let (status, answer) = sidecar
        .post(
            "/v1/data/opa/examples/allow_request",
            r#"{"input": {"example": {"flag": false}}}"#,
        )
        .await;
    assert_eq!(status, 200);
    assert!(answer.get("result").is_none(), "{answer}");
    // GET a document; GET with ?input=.
    let (status, answer) = sidecar.get("/v1/data/opa/examples/public_servers").await;
    assert_eq!(status, 200);
    assert_eq!(answer["result"][0]["id"], "s1");
    assert_eq!(answer["result"].as_array().unwrap().len(), 1);
    let input = urlencode(r#"{"example":{"flag":true}}"#);
    let (_, answer) = sidecar
        .get(&format!(
            "/v1/data/opa/examples/allow_request?input={input}"
        ))
        .await;
    assert_eq!(answer["result"], json!(true));
    // A package is the document of its rules; data documents read the bundle's data.
    let (_, answer) = sidecar.get("/v1/data/opa/examples/ports").await;
    assert_eq!(answer["result"][1], json!({"id": "p2", "network": "n3"}));

    // Bad requests get OPA-style errors.
    let (status, answer) = sidecar
        .post("/v1/data/opa/examples/allow_request", "{not json")
        .await;
    assert_eq!(
        (status, answer["code"].as_str()),
        (400, Some("invalid_parameter"))
    );
    let (status, _) = sidecar
        .post("/v1/data/opa/examples/allow_request", "[1]")
        .await;
    assert_eq!(status, 400);
    // Any key is a path segment, as in OPA: a key that is not there is undefined.
    for path in [
        "/v1/data/opa%2F..%2Fsecrets",
        "/v1/data/opa/examples/allow-request",
    ] {
        let (status, answer) = sidecar.get(path).await;
        assert_eq!(status, 200, "{path}: {answer}");
        assert!(answer.get("result").is_none(), "{path}: {answer}");
    }
    let (status, _) = sidecar.get("/v1/data/opa/%C3%28").await;
    assert_eq!(status, 400);
    let huge = format!(r#"{{"input": {{"pad": "{}"}}}}"#, "x".repeat(70_000));
    let (status, _) = sidecar
        .post("/v1/data/opa/examples/allow_request", &huge)
        .await;
    assert_eq!(status, 413);
    let mut deep = String::from("1");
    for _ in 0..100 {
        deep = format!("[{deep}]");
    }
    let (status, answer) = sidecar
        .post(
            "/v1/data/opa/examples/allow_request",
            &format!(r#"{{"input": {deep}}}"#),
        )
        .await;
    assert_eq!(status, 400, "{answer}");

    let (status, _) = sidecar.get("/health?bundles").await;
    assert_eq!(status, 200);
    let (_, answer) = sidecar.get("/v1/status").await;
    assert_eq!(answer["result"]["revisions"]["examples"], "demo-1");
    let _ = std::fs::remove_dir_all(&dir);
}

fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[tokio::test]
async fn hot_reloads_refuses_bad_revisions_and_restarts_on_the_last_good_one() {
    let dir = scratch("reload");
    let bundle = dir.join("bundle");
    write_bundle(&bundle, "r1", "input.user == \"admin\"");
    let config = write_config(&dir, "[[bundles]]\nname = \"app\"\ndir = \"bundle\"\n");
    let sidecar = Sidecar::start(&config).await;
    sidecar
        .until("/v1/data/app/revision", json!({}), json!("r1"))
        .await;

    write_bundle(
        &bundle,
        "r2-with-alice",
        "input.user in {\"admin\", \"alice\"}",
    );
    sidecar
        .until("/v1/data/app/revision", json!({}), json!("r2-with-alice"))
        .await;
    sidecar
        .until("/v1/data/app/allow", json!({"user": "alice"}), json!(true))
        .await;

    // A revision whose own test fails never serves.
    write_bundle(&bundle, "r3-broken", "input.user == \"nobody\"");
    let app = &sidecar
        .app_status_once(|app| app["failed_revision"] == "r3-broken")
        .await;
    assert_eq!(app["active_revision"], "r2-with-alice");
    assert!(
        app["last_error"]
            .as_str()
            .unwrap()
            .contains("test_admin_allowed"),
        "{app}"
    );
    let (_, answer) = sidecar
        .post("/v1/data/app/allow", r#"{"input": {"user": "alice"}}"#)
        .await;
    assert_eq!(answer["result"], json!(true));

    // Restarted while the folder still holds the broken revision: the last good one serves
    // from the first request on.
    drop(sidecar);
    let sidecar = Sidecar::start(&config).await;
    let (status, answer) = sidecar.post("/v1/data/app/revision", "{}").await;
    assert_eq!(
        (status, answer["result"].clone()),
        (200, json!("r2-with-alice"))
    );
    let (status, _) = sidecar.get("/health?bundles").await;
    assert_eq!(status, 200);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn without_a_good_bundle_every_decision_fails_closed() {
    let dir = scratch("closed");
    let bundle = dir.join("bundle");
    write_bundle(&bundle, "never", "input.user == \"nobody\"");
    let config = write_config(&dir, "[[bundles]]\nname = \"app\"\ndir = \"bundle\"\n");
    let sidecar = Sidecar::start(&config).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, answer) = sidecar
        .post("/v1/data/app/allow", r#"{"input": {"user": "admin"}}"#)
        .await;
    assert_eq!(
        (status, answer["code"].as_str()),
        (503, Some("unavailable")),
        "{answer}"
    );
    let (status, _) = sidecar.get("/health?bundles").await;
    assert_eq!(status, 500);
    let (status, _) = sidecar.get("/health").await;
    assert_eq!(status, 200, "the process itself is up");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn decisions_are_logged_to_the_audit_log_with_masked_input() {
    let dir = scratch("decisions");
    let bundle = dir.join("bundle");
    write_bundle(&bundle, "d1", "input.user == \"admin\"");
    let config = write_config(
        &dir,
        "[[bundles]]\nname = \"app\"\ndir = \"bundle\"\n\n[decision_log]\nurl = \"sqlite://decisions.db\"\nmask = [\"input.password\"]\n",
    );
    let sidecar = Sidecar::start(&config).await;
    sidecar
        .until("/v1/data/app/allow", json!({"user": "admin"}), json!(true))
        .await;
    let (_, answer) = sidecar
        .post(
            "/v1/data/app/allow",
            r#"{"input": {"user": "admin", "password": "s3cret"}}"#,
        )
        .await;
    let decision_id = answer["decision_id"].as_str().unwrap().to_owned();

    let log = AuditLog::sqlite(
        &format!("sqlite://{}", dir.join("decisions.db").display()),
        Default::default(),
    )
    .await
    .unwrap();
    let mut query = AuditQuery::all(100);
    query.correlation_id = Some(decision_id);
    let records = log.query(&query).await.unwrap().records;
    assert_eq!(records.len(), 1);
    let event = &records[0].event;
    // OPA's decision log layout.
    assert_eq!(event.fields["path"], "app/allow");
    assert_eq!(event.fields["decision_id"], json!(query.correlation_id));
    assert_eq!(event.fields["input"], json!({"user": "admin"}));
    assert_eq!(event.fields["erased"], json!(["/input/password"]));
    assert_eq!(event.fields["bundles"], json!({"app": {"revision": "d1"}}));
    assert_eq!(event.fields["result"], json!(true));
    assert_eq!(event.fields["labels"]["id"], "policy-sidecar");
    assert!(event.fields["labels"]["version"].is_string());
    assert!(event.fields["metrics"]["timer_rego_query_eval_ns"].is_u64());
    assert!(
        event.fields["requested_by"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:")
    );
    let timestamp = event.fields["timestamp"].as_str().unwrap();
    assert!(
        timestamp.ends_with('Z') && timestamp.contains('T'),
        "{timestamp}"
    );
    assert!(log.verify(&[], &[]).await.unwrap().is_ok());

    // A refused revision is audited once, however often it is polled.
    write_bundle(&bundle, "d2-broken", "input.user == \"nobody\"");
    let refusals = || async {
        let mut query = AuditQuery::all(100);
        query.resource = Some("policy_bundle:app".parse().unwrap());
        log.query(&query).await.unwrap().records
    };
    for _ in 0..300 {
        if !refusals().await.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let refused = refusals().await;
    assert_eq!(refused.len(), 1, "audited once");
    assert_eq!(refused[0].event.fields["revision"], "d2-broken");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Artifact `authz` (bundle `app`) with a canary step for the payments namespace and a
/// production step for everything, both promoted by hand.
const PIPELINES: &str = r#"
[[artifacts]]
name = "authz"
bundles = ["app"]

[[artifacts.steps]]
name = "canary"
scopes = ["spiffe://prod.example/ns/payments/sa/*"]
promotion = { mode = "manual" }

[[artifacts.steps]]
name = "production"
scopes = ["spiffe://prod.example/**"]
promotion = { mode = "manual" }
"#;

/// Writes [`PIPELINES`] to `dir/rollout.toml` and returns the delivery service's rollout
/// with `revision` promoted through both steps (the sidecars' stable revision).
fn delivered_everywhere(dir: &Path, revision: &str) -> Rollout {
    std::fs::write(dir.join("rollout.toml"), PIPELINES).unwrap();
    let config: RolloutConfig = toml::from_str(PIPELINES).unwrap();
    let clock = Arc::new(ManualClock::new(std::time::SystemTime::now()));
    let mut delivery = Rollout::new(&config, clock).unwrap();
    delivery.propose("authz", revision).unwrap();
    delivery.promote("authz").unwrap();
    delivery.promote("authz").unwrap();
    delivery
}

#[tokio::test]
async fn follows_the_rollout_for_its_spiffe_id() {
    let dir = scratch("rollout");
    write_bundle(&dir.join("bundles/r1"), "r1", "input.user == \"admin\"");
    write_bundle(&dir.join("bundles/r2"), "r2", "input.user == \"admin\"");
    // A folder whose manifest claims another revision than its name.
    write_bundle(&dir.join("bundles/r3"), "not-r3", "input.user == \"admin\"");
    let state = dir.join("rollout-state.json");
    // The delivery service: r1 rolled out everywhere.
    let mut delivery = delivered_everywhere(&dir, "r1");
    delivery.save(&state).unwrap();

    let sidecar_config = write_config(
        &dir,
        "spiffe_id = \"spiffe://prod.example/ns/payments/sa/checkout\"\n\n[[bundles]]\nname = \"app\"\nartifact = \"authz\"\ndir = \"bundles/{revision}\"\n\n[rollout]\nconfig = \"rollout.toml\"\nstate = \"rollout-state.json\"\n",
    );
    let sidecar = Sidecar::start(&sidecar_config).await;
    sidecar
        .until("/v1/data/app/revision", json!({}), json!("r1"))
        .await;

    // r2 enters the canary step, which covers this host.
    delivery.propose("authz", "r2").unwrap();
    delivery.save(&state).unwrap();
    sidecar
        .until("/v1/data/app/revision", json!({}), json!("r2"))
        .await;

    // Rolled back: this host returns to r1.
    delivery.rollback("authz", "deny rate").unwrap();
    delivery.save(&state).unwrap();
    sidecar
        .until("/v1/data/app/revision", json!({}), json!("r1"))
        .await;

    // A bundle that is not the revision it is filed under is refused.
    delivery.propose("authz", "r3").unwrap();
    delivery.save(&state).unwrap();
    let app = sidecar
        .app_status_once(|app| last_error_has(app, "assigns revision r3"))
        .await;
    assert!(
        app["last_error"]
            .as_str()
            .unwrap()
            .contains("assigns revision r3"),
        "{app}"
    );
    let (_, answer) = sidecar.post("/v1/data/app/revision", "{}").await;
    assert_eq!(answer["result"], "r1");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn serves_only_bundles_signed_with_a_configured_key() {
    use portcullis::policy::{Algorithm, Bundle, BundleLimits, BundleSigner, SIGNATURES_FILE};
    let fixtures =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("crates/portcullis-policy/tests/fixtures");
    let dir = scratch("signed");
    let bundle = dir.join("bundle");
    write_bundle(&bundle, "s1", "input.user == \"admin\"");
    let config = write_config(
        &dir,
        &format!(
            "[keys.release]\nalgorithm = \"RS256\"\nkey_file = \"{}\"\nscope = \"write\"\n\n[[bundles]]\nname = \"app\"\ndir = \"bundle\"\nsigning = {{ keyid = \"release\" }}\n",
            fixtures
                .join("bundle-signing-rsa-test-only.pub.pem")
                .display()
        ),
    );
    let sign = || {
        let signer = BundleSigner::from_pem(
            Algorithm::RS256,
            &std::fs::read(fixtures.join("bundle-signing-rsa-test-only.key.pem")).unwrap(),
        )
        .unwrap()
        .scope("write");
        let _ = std::fs::remove_file(bundle.join(SIGNATURES_FILE));
        let files = Bundle::files_from_dir("app", &bundle, &BundleLimits::default()).unwrap();
        std::fs::write(
            bundle.join(SIGNATURES_FILE),
            signer.sign("app", &files).unwrap(),
        )
        .unwrap();
    };
    let sidecar = Sidecar::start(&config).await;
    // Unsigned: refused, so nothing serves.
    let app = sidecar
        .app_status_once(|app| app["last_error"].is_string())
        .await;
    let last_error = app["last_error"].as_str().unwrap_or_default();
    assert!(last_error.contains("not signed"), "{last_error}");
    let (status, _) = sidecar
        .post("/v1/data/app/allow", r#"{"input": {"user": "admin"}}"#)
        .await;
    assert_eq!(status, 503);

    sign();
    sidecar
        .until("/v1/data/app/revision", json!({}), json!("s1"))
        .await;

    // Edited after signing: refused; s1 keeps answering.
    write_bundle(&bundle, "s2-unsigned", "true");
    let app = &sidecar
        .app_status_once(|app| last_error_has(app, "digest mismatch"))
        .await;
    assert_eq!(app["active_revision"], "s1", "{app}");
    assert!(
        app["last_error"]
            .as_str()
            .unwrap()
            .contains("digest mismatch"),
        "{app}"
    );
    // s2 would allow anyone; s1 still leaves eve undefined.
    let (_, answer) = sidecar
        .post("/v1/data/app/allow", r#"{"input": {"user": "eve"}}"#)
        .await;
    assert_eq!(answer.get("result"), None, "{answer}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn switches_to_all_at_once_delivery_and_back_without_a_restart() {
    let dir = scratch("mode");
    write_bundle(&dir.join("bundles/r1"), "r1", "input.user == \"admin\"");
    write_bundle(&dir.join("bundles/r2"), "r2", "input.user == \"admin\"");
    let mut delivery = delivered_everywhere(&dir, "r1");
    // r2 is in the canary step, which does not reach this (shipping) host.
    delivery.propose("authz", "r2").unwrap();
    delivery.save(dir.join("rollout-state.json")).unwrap();

    let with_mode = |mode: &str| {
        write_config(
            &dir,
            &format!(
                "spiffe_id = \"spiffe://prod.example/ns/shipping/sa/api\"\n\n[[bundles]]\nname = \"app\"\nartifact = \"authz\"\ndir = \"bundles/{{revision}}\"\n\n[rollout]\nconfig = \"rollout.toml\"\nstate = \"rollout-state.json\"\n{mode}"
            ),
        )
    };
    let sidecar = Sidecar::start(&with_mode("")).await;
    sidecar
        .until("/v1/data/app/revision", json!({}), json!("r1"))
        .await;

    // The switch to the old delivery: the newest revision everywhere, no restart.
    with_mode("mode = \"all_at_once\"\n");
    sidecar
        .until("/v1/data/app/revision", json!({}), json!("r2"))
        .await;

    // A configuration that does not parse changes nothing.
    std::fs::write(dir.join("sidecar.toml"), "this is not toml [").unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (_, answer) = sidecar.post("/v1/data/app/revision", "{}").await;
    assert_eq!(answer["result"], "r2");

    // And back to the pipeline.
    with_mode("mode = \"staged\"\n");
    sidecar
        .until("/v1/data/app/revision", json!({}), json!("r1"))
        .await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// Writes `files` (path, contents) under `dir`.
fn write_files(dir: &Path, files: &[(&str, &str)]) {
    for (path, contents) in files {
        let path = dir.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, contents).unwrap();
    }
}

#[tokio::test]
async fn a_request_without_input_leaves_input_undefined_as_in_opa() {
    let dir = scratch("no-input");
    write_files(
        &dir.join("bundle"),
        &[
            (".manifest", r#"{"revision": "n1", "roots": ["authz"]}"#),
            (
                "authz/policy.rego",
                "package authz\ndeny_missing contains \"input missing\" if not input\n",
            ),
        ],
    );
    let config = write_config(&dir, "[[bundles]]\nname = \"authz\"\ndir = \"bundle\"\n");
    let sidecar = Sidecar::start(&config).await;
    sidecar
        .until("/v1/data/authz/deny_missing", json!({}), json!([]))
        .await;
    // No body, no `input`, or `"input": null`: input is undefined, and OPA's warning says so.
    let warning =
        json!({"code": "api_usage_warning", "message": "'input' key missing from the request"});
    for body in ["{}", "", r#"{"input": null}"#] {
        let (status, answer) = sidecar.post("/v1/data/authz/deny_missing", body).await;
        assert_eq!(status, 200, "{body:?}: {answer}");
        assert_eq!(
            answer["result"],
            json!(["input missing"]),
            "{body:?}: {answer}"
        );
        assert_eq!(answer["warning"], warning, "{body:?}: {answer}");
    }
    let (_, answer) = sidecar
        .post("/v1/data/authz/deny_missing", r#"{"input": {}}"#)
        .await;
    assert_eq!(answer["result"], json!([]));
    assert!(answer.get("warning").is_none(), "{answer}");
    // GET without ?input= too (OPA adds no warning there).
    let (_, answer) = sidecar.get("/v1/data/authz/deny_missing").await;
    assert_eq!(answer["result"], json!(["input missing"]), "{answer}");
    assert!(answer.get("warning").is_none(), "{answer}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn refuses_what_opa_would_not_compile_naming_file_line_and_cause() {
    let dir = scratch("compile");
    let bundle = dir.join("bundle");
    write_bundle(&bundle, "c1", "input.user == \"admin\"");
    let config = write_config(&dir, "[[bundles]]\nname = \"app\"\ndir = \"bundle\"\n");
    let sidecar = Sidecar::start(&config).await;
    sidecar
        .until("/v1/data/app/revision", json!({}), json!("c1"))
        .await;
    let manifest = |revision: &str| format!(r#"{{"revision": "{revision}", "roots": ["app"]}}"#);
    let cases = [
        (
            "c2",
            "package app\nallow if startwith(input.user, \"adm\")\n",
            "{}",
            "app/policy.rego:2:10: rego_type_error: undefined function startwith",
        ),
        (
            "c3",
            "package app\nadmins := [\"mallory\"]\nallow if input.user in admins\n",
            r#"{"admins": ["admin"]}"#,
            "app/policy.rego:2:1: rego_compile_error: rule data.app.admins conflicts with the data document at data.app.admins",
        ),
    ];
    for (revision, rego, data, error) in cases {
        write_files(
            &bundle,
            &[
                (".manifest", &manifest(revision)),
                ("app/policy.rego", rego),
                ("app/data.json", data),
            ],
        );
        let app = sidecar
            .app_status_once(|app| app["failed_revision"] == revision)
            .await;
        assert!(last_error_has(&app, error), "{app}");
        assert_eq!(app["active_revision"], "c1", "{app}");
        // c1 keeps answering, and answers.
        let (status, answer) = sidecar
            .post("/v1/data/app/allow", r#"{"input": {"user": "admin"}}"#)
            .await;
        assert_eq!((status, &answer["result"]), (200, &json!(true)), "{answer}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_tampered_last_known_good_copy_is_refused_at_restart() {
    use portcullis::policy::{Algorithm, Bundle, BundleLimits, BundleSigner, SIGNATURES_FILE};
    let fixtures =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("crates/portcullis-policy/tests/fixtures");
    let dir = scratch("tampered");
    let bundle = dir.join("bundle");
    write_bundle(&bundle, "t1", "input.user == \"admin\"");
    let signer = BundleSigner::from_pem(
        Algorithm::RS256,
        &std::fs::read(fixtures.join("bundle-signing-rsa-test-only.key.pem")).unwrap(),
    )
    .unwrap();
    let files = Bundle::files_from_dir("app", &bundle, &BundleLimits::default()).unwrap();
    std::fs::write(
        bundle.join(SIGNATURES_FILE),
        signer.sign("app", &files).unwrap(),
    )
    .unwrap();
    let config = write_config(
        &dir,
        &format!(
            "[keys.release]\nalgorithm = \"RS256\"\nkey_file = \"{}\"\n\n[[bundles]]\nname = \"app\"\ndir = \"bundle\"\nsigning = {{ keyid = \"release\" }}\n",
            fixtures
                .join("bundle-signing-rsa-test-only.pub.pem")
                .display()
        ),
    );
    let sidecar = Sidecar::start(&config).await;
    sidecar
        .until("/v1/data/app/revision", json!({}), json!("t1"))
        .await;
    drop(sidecar);

    // The stored copy kept its signature; rewritten to allow anyone (the signature, which
    // no longer matches, left out) while the bundle's source is gone.
    let stored = dir.join("data/bundles/app.tar.gz");
    let files = Bundle::files_from_tar_gz(
        "app",
        &std::fs::read(&stored).unwrap(),
        &BundleLimits::default(),
    )
    .unwrap();
    assert!(files.iter().any(|(path, _)| path == SIGNATURES_FILE));
    let edited = files
        .into_iter()
        .filter(|(path, _)| path != SIGNATURES_FILE)
        .map(|(path, contents)| match path.as_str() {
            "app/policy.rego" => (
                path,
                b"package app\nrevision := \"t1\"\nallow := true\n".to_vec(),
            ),
            _ => (path, contents),
        });
    let edited = Bundle::from_files("app", edited).unwrap();
    std::fs::write(&stored, edited.to_tar_gz().unwrap()).unwrap();
    std::fs::remove_dir_all(&bundle).unwrap();

    // Fails closed: no decision, nothing active. (The status shows the latest failure —
    // the missing source by now; the refusal itself is logged, and the library's tests
    // check its message.)
    let sidecar = Sidecar::start(&config).await;
    let (status, answer) = sidecar
        .post("/v1/data/app/allow", r#"{"input": {"user": "mallory"}}"#)
        .await;
    assert_eq!(
        (status, answer["code"].as_str()),
        (503, Some("unavailable")),
        "{answer}"
    );
    let app = sidecar
        .app_status_once(|app| app["last_error"].is_string())
        .await;
    assert_eq!(app["active_revision"], Value::Null, "{app}");
    let (status, _) = sidecar.get("/health?bundles").await;
    assert_eq!(status, 500);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_bundle_removed_from_the_configuration_does_not_come_back_after_a_restart() {
    let dir = scratch("removed");
    write_bundle(&dir.join("app-bundle"), "a1", "input.user == \"admin\"");
    write_files(
        &dir.join("extra-bundle"),
        &[
            (".manifest", r#"{"revision": "e1", "roots": ["extra"]}"#),
            ("extra/policy.rego", "package extra\nallow := true\n"),
        ],
    );
    let both = "[[bundles]]\nname = \"app\"\ndir = \"app-bundle\"\n\n[[bundles]]\nname = \"extra\"\ndir = \"extra-bundle\"\n";
    let config = write_config(&dir, both);
    let sidecar = Sidecar::start(&config).await;
    sidecar
        .until("/v1/data/extra/allow", json!({}), json!(true))
        .await;
    drop(sidecar);

    let config = write_config(&dir, "[[bundles]]\nname = \"app\"\ndir = \"app-bundle\"\n");
    let sidecar = Sidecar::start(&config).await;
    let (status, answer) = sidecar.post("/v1/data/app/revision", "{}").await;
    assert_eq!((status, &answer["result"]), (200, &json!("a1")), "{answer}");
    let (status, answer) = sidecar.post("/v1/data/extra/allow", "{}").await;
    assert_eq!(status, 200);
    assert!(answer.get("result").is_none(), "{answer}");
    let (_, answer) = sidecar.get("/v1/status").await;
    assert_eq!(answer["result"]["revisions"], json!({"app": "a1"}));
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn serves_rego_v0_bundles_whose_manifest_says_so() {
    let dir = scratch("v0");
    write_files(
        &dir.join("bundle"),
        &[
            (
                ".manifest",
                r#"{"revision": "v0-1", "roots": ["legacy"], "rego_version": 0}"#,
            ),
            (
                "legacy/policy.rego",
                "package legacy\ndefault allow = false\nallow { input.user == \"admin\" }\ndeny[msg] { not allow; msg := \"not admin\" }\n",
            ),
        ],
    );
    let config = write_config(&dir, "[[bundles]]\nname = \"legacy\"\ndir = \"bundle\"\n");
    let sidecar = Sidecar::start(&config).await;
    sidecar
        .until(
            "/v1/data/legacy/allow",
            json!({"user": "admin"}),
            json!(true),
        )
        .await;
    let (_, answer) = sidecar
        .post("/v1/data/legacy/deny", r#"{"input": {"user": "eve"}}"#)
        .await;
    assert_eq!(answer["result"], json!(["not admin"]), "{answer}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_builtin_error_is_undefined_unless_strict_mode_is_set() {
    let dir = scratch("builtin-errors");
    write_files(
        &dir.join("bundle"),
        &[
            (".manifest", r#"{"revision": "b1", "roots": ["app"]}"#),
            (
                "app/policy.rego",
                "package app\nbad if regex.match(\"$^[[[\", input.x)\nhalf := 1 / input.zero\nallow := true\n",
            ),
        ],
    );
    let bundles = "[[bundles]]\nname = \"app\"\ndir = \"bundle\"\n";
    let input = r#"{"input": {"x": "x", "zero": 0}}"#;
    let sidecar = Sidecar::start(&write_config(&dir, bundles)).await;
    sidecar
        .until("/v1/data/app/allow", json!({}), json!(true))
        .await;
    for rule in ["/v1/data/app/bad", "/v1/data/app/half"] {
        let (status, answer) = sidecar.post(rule, input).await;
        assert_eq!(status, 200, "{rule}: {answer}");
        assert!(answer.get("result").is_none(), "{rule}: {answer}");
    }
    // The package, and all of data, still answer.
    let (status, answer) = sidecar.post("/v1/data/app", input).await;
    assert_eq!(
        (status, &answer["result"]),
        (200, &json!({"allow": true})),
        "{answer}"
    );
    let (status, answer) = sidecar.get("/v1/data").await;
    assert_eq!(
        (status, &answer["result"]["app"]["allow"]),
        (200, &json!(true)),
        "{answer}"
    );
    drop(sidecar);

    // Strict: the error fails the decision.
    let strict = write_config(&dir, &format!("strict_builtin_errors = true\n{bundles}"));
    let sidecar = Sidecar::start(&strict).await;
    sidecar
        .until("/v1/data/app/allow", json!({}), json!(true))
        .await;
    let (status, answer) = sidecar.post("/v1/data/app/bad", input).await;
    assert_eq!(
        (status, answer["code"].as_str()),
        (500, Some("internal_error")),
        "{answer}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

impl Sidecar {
    /// Sends `request` and returns the status and the body as text.
    async fn send(&self, request: reqwest::RequestBuilder) -> (u16, String) {
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.text().await.unwrap())
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

/// A bundle with keys that are not identifiers, arrays, and OPA's mask policy.
fn write_api_bundle(dir: &Path) {
    write_files(
        dir,
        &[
            (
                ".manifest",
                r#"{"revision": "api-1", "roots": ["app", "system/log"]}"#,
            ),
            (
                "app/policy.rego",
                "package app\nallow if input.user == \"admin\"\nservers := [{\"id\": \"s0\"}, {\"id\": \"s1\"}]\n",
            ),
            (
                "app/data.json",
                r#"{"my-key": {"a-b": "dashed", "0": "zero"}}"#,
            ),
            (
                "system/log/mask.rego",
                "package system.log\nmask contains \"/input/password\"\nmask contains {\"op\": \"upsert\", \"path\": \"/input/card\", \"value\": \"****\"} if input.input.card\n",
            ),
        ],
    );
}

#[tokio::test]
async fn serves_the_rest_of_opas_rest_api() {
    let dir = scratch("api");
    write_api_bundle(&dir.join("bundle"));
    let config = write_config(
        &dir,
        "[[bundles]]\nname = \"app\"\ndir = \"bundle\"\n\n[decision_log]\nurl = \"sqlite://decisions.db\"\nlabels = { app = \"checkout\" }\n",
    );
    let sidecar = Sidecar::start(&config).await;
    sidecar
        .until("/v1/data/app/allow", json!({"user": "admin"}), json!(true))
        .await;
    let http = &sidecar.http;

    // Array indexes and arbitrary keys in the data path (percent-decoded).
    let (_, answer) = sidecar.get("/v1/data/app/servers/1").await;
    assert_eq!(answer["result"], json!({"id": "s1"}));
    let (_, answer) = sidecar.get("/v1/data/app/servers/1/id").await;
    assert_eq!(answer["result"], json!("s1"));
    let (_, answer) = sidecar.get("/v1/data/app/servers/2").await;
    assert!(answer.get("result").is_none(), "{answer}");
    let (_, answer) = sidecar.get("/v1/data/app/my-key/a-b").await;
    assert_eq!(answer["result"], json!("dashed"));
    let (_, answer) = sidecar.get("/v1/data/app/my%2Dkey/0").await;
    assert_eq!(answer["result"], json!("zero"));

    // ?pretty, ?metrics, ?provenance.
    let (status, text) = sidecar
        .send(http.get(sidecar.url("/v1/data/app/servers?pretty=true&metrics&provenance=true")))
        .await;
    assert_eq!(status, 200);
    assert!(text.contains("\n  \"result\": [\n"), "{text}");
    let answer: Value = serde_json::from_str(&text).unwrap();
    for timer in [
        "timer_rego_input_parse_ns",
        "timer_rego_query_eval_ns",
        "timer_server_handler_ns",
    ] {
        assert!(answer["metrics"][timer].is_u64(), "{timer}: {answer}");
    }
    assert_eq!(
        answer["provenance"]["bundles"],
        json!({"app": {"revision": "api-1"}})
    );
    assert!(answer["provenance"]["version"].is_string());
    let (_, text) = sidecar
        .send(http.get(sidecar.url("/v1/data/app/servers?pretty=false")))
        .await;
    assert!(!text.contains('\n'), "{text}");

    // gzip request bodies; a bad one is a 400, one that expands past the limit a 413.
    let body = gzip(br#"{"input": {"user": "admin"}}"#);
    let (status, text) = sidecar
        .send(
            http.post(sidecar.url("/v1/data/app/allow"))
                .header("content-encoding", "gzip")
                .body(body),
        )
        .await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(
        serde_json::from_str::<Value>(&text).unwrap()["result"],
        json!(true)
    );
    let (status, text) = sidecar
        .send(
            http.post(sidecar.url("/v1/data/app/allow"))
                .header("content-encoding", "gzip")
                .body("not gzip"),
        )
        .await;
    assert_eq!(status, 400, "{text}");
    assert_eq!(
        serde_json::from_str::<Value>(&text).unwrap()["code"],
        "invalid_parameter"
    );
    let bomb = gzip(format!(r#"{{"input": "{}"}}"#, "x".repeat(200_000)).as_bytes());
    assert!(bomb.len() < 65536);
    let (status, text) = sidecar
        .send(
            http.post(sidecar.url("/v1/data/app/allow"))
                .header("content-encoding", "gzip")
                .body(bomb),
        )
        .await;
    assert_eq!(status, 413, "{text}");
    let (status, _) = sidecar
        .send(
            http.post(sidecar.url("/v1/data/app/allow"))
                .header("content-encoding", "br")
                .body("{}"),
        )
        .await;
    assert_eq!(status, 415);

    // GET /v1/policies, as opa-python-client's check_connection calls it.
    let (status, answer) = sidecar.get("/v1/policies").await;
    assert_eq!(status, 200, "{answer}");
    let ids: Vec<&str> = answer["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["app/app/policy.rego", "app/system/log/mask.rego"]);
    assert!(
        answer["result"][0]["raw"]
            .as_str()
            .unwrap()
            .starts_with("package app\n")
    );
    let (status, answer) = sidecar.get("/v1/policies/app/app/policy.rego").await;
    assert_eq!(status, 200);
    assert_eq!(answer["result"]["id"], "app/app/policy.rego");
    let (status, answer) = sidecar.get("/v1/policies/nope.rego").await;
    assert_eq!(
        (status, answer["code"].as_str()),
        (404, Some("resource_not_found"))
    );

    // Ad-hoc queries: bindings per result, {} when nothing satisfies the query.
    let (status, answer) = sidecar
        .post(
            "/v1/query",
            r#"{"query": "x := data.app.servers[i].id; input.want == x", "input": {"want": "s1"}}"#,
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["result"], json!([{"x": "s1", "i": 1}]));
    let (status, answer) = sidecar
        .get("/v1/query?q=data.app.servers%5B_%5D.id%20%3D%3D%20%22s9%22")
        .await;
    assert_eq!((status, answer), (200, json!({})));
    let (status, answer) = sidecar.post("/v1/query", r#"{"query": "x := "}"#).await;
    assert_eq!(
        (status, answer["code"].as_str()),
        (400, Some("invalid_parameter"))
    );
    let (status, _) = sidecar.post("/v1/query", r#"{"input": {}}"#).await;
    assert_eq!(status, 400);

    // Health: live and ready.
    assert_eq!(sidecar.get("/health/live").await.0, 200);
    assert_eq!(sidecar.get("/health/ready").await.0, 200);

    // Prometheus metrics, in the text exposition format.
    let (status, text) = sidecar.send(http.get(sidecar.url("/metrics"))).await;
    assert_eq!(status, 200);
    assert!(
        text.contains("# TYPE http_request_duration_seconds histogram\n"),
        "{text}"
    );
    assert!(
        text.contains(
            "http_request_duration_seconds_bucket{code=\"200\",handler=\"v1/data\",method=\"POST\",le=\"+Inf\"}"
        ),
        "{text}"
    );
    assert!(
        text.contains("policy_sidecar_decisions_total{outcome=\"allow\"}"),
        "{text}"
    );
    assert!(
        text.contains("bundle_loaded_counter{name=\"app\"} 1\n"),
        "{text}"
    );

    // The mask policy masked the decision log; a query is logged with its text.
    let body = r#"{"input": {"user": "admin", "password": "hunter2", "card": "4111"}}"#;
    let (_, answer) = sidecar.post("/v1/data/app/allow", body).await;
    let decision_id = answer["decision_id"].as_str().unwrap().to_owned();
    let log = AuditLog::sqlite(
        &format!("sqlite://{}", dir.join("decisions.db").display()),
        Default::default(),
    )
    .await
    .unwrap();
    let mut query = AuditQuery::all(10);
    query.correlation_id = Some(decision_id);
    let records = log.query(&query).await.unwrap().records;
    let fields = &records[0].event.fields;
    assert_eq!(fields["input"], json!({"user": "admin", "card": "****"}));
    assert_eq!(fields["erased"], json!(["/input/password"]));
    assert_eq!(fields["masked"], json!(["/input/card"]));
    assert_eq!(fields["labels"]["app"], "checkout");
    let all = log.query(&AuditQuery::all(1000)).await.unwrap().records;
    assert!(
        all.iter()
            .any(|r| r.event.fields.get("query").and_then(Value::as_str)
                == Some("x := data.app.servers[i].id; input.want == x")),
        "the ad-hoc query is logged"
    );
    let text = serde_json::to_string(&all.iter().map(|r| &r.event).collect::<Vec<_>>()).unwrap();
    assert!(!text.contains("hunter2") && !text.contains("4111"));
    assert!(log.verify(&[], &[]).await.unwrap().is_ok());
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn the_query_api_can_be_switched_off_and_ready_waits_for_every_bundle() {
    let dir = scratch("query-off");
    write_api_bundle(&dir.join("bundle"));
    let config = write_config(
        &dir,
        "[server]\nquery_api = false\n\n[[bundles]]\nname = \"app\"\ndir = \"bundle\"\n\n[[bundles]]\nname = \"missing\"\ndir = \"no-such-folder\"\n",
    );
    let sidecar = Sidecar::start(&config).await;
    sidecar
        .until("/v1/data/app/allow", json!({"user": "admin"}), json!(true))
        .await;
    let (status, answer) = sidecar.post("/v1/query", r#"{"query": "x := 1"}"#).await;
    assert_eq!(
        (status, answer["code"].as_str()),
        (403, Some("forbidden")),
        "{answer}"
    );
    assert_eq!(sidecar.get("/v1/query?q=x%20%3A%3D%201").await.0, 403);
    // One bundle never activates: live, but not ready.
    assert_eq!(sidecar.get("/health/live").await.0, 200);
    let (status, answer) = sidecar.get("/health/ready").await;
    assert_eq!(status, 500, "{answer}");
    assert!(answer["error"].as_str().unwrap().contains("missing"));
    let (_, text) = sidecar
        .send(sidecar.http.get(sidecar.url("/metrics")))
        .await;
    assert!(
        text.contains("bundle_failed_load_counter{name=\"missing\"}"),
        "{text}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_missing_or_emptied_bundle_folder_is_refused_and_never_served() {
    let dir = scratch("emptied");
    let bundle = dir.join("bundle");
    let config = write_config(&dir, "[[bundles]]\nname = \"app\"\ndir = \"bundle\"\n");
    let admin = r#"{"input": {"user": "admin"}}"#;

    // Missing at a fresh start: refused, every decision fails closed, not ready.
    let sidecar = Sidecar::start(&config).await;
    let app = sidecar
        .app_status_once(|app| last_error_has(app, "missing"))
        .await;
    assert!(last_error_has(&app, "missing"), "{app}");
    assert_eq!(sidecar.post("/v1/data/app/allow", admin).await.0, 503);
    assert_eq!(sidecar.get("/health/ready").await.0, 500);
    // Empty, or holding only a README: refused the same way.
    std::fs::create_dir_all(&bundle).unwrap();
    std::fs::write(bundle.join("README"), "the bundle goes here").unwrap();
    let app = sidecar
        .app_status_once(|app| last_error_has(app, "holds no bundle"))
        .await;
    assert!(last_error_has(&app, "holds no bundle"), "{app}");
    assert_eq!(app["active_revision"], Value::Null, "{app}");
    assert_eq!(sidecar.post("/v1/data/app/allow", admin).await.0, 503);
    assert_eq!(sidecar.get("/health/ready").await.0, 500);

    // A good revision, then `mv bundle bundle.bak; mkdir bundle`: r1 keeps serving.
    write_bundle(&bundle, "r1", "input.user == \"admin\"");
    sidecar
        .until("/v1/data/app/allow", json!({"user": "admin"}), json!(true))
        .await;
    std::fs::rename(&bundle, dir.join("bundle.bak")).unwrap();
    std::fs::create_dir_all(&bundle).unwrap();
    let app = sidecar
        .app_status_once(|app| last_error_has(app, "holds no bundle"))
        .await;
    assert!(last_error_has(&app, "holds no bundle"), "{app}");
    assert_eq!(app["active_revision"], json!("r1"), "{app}");
    let (status, answer) = sidecar.post("/v1/data/app/revision", "{}").await;
    assert_eq!((status, &answer["result"]), (200, &json!("r1")), "{answer}");
    assert_eq!(sidecar.get("/health/ready").await.0, 200);
    drop(sidecar);

    // The kept copy is still r1: a restart beside the empty folder serves it.
    let sidecar = Sidecar::start(&config).await;
    sidecar
        .until("/v1/data/app/allow", json!({"user": "admin"}), json!(true))
        .await;
    let (_, answer) = sidecar.post("/v1/data/app/revision", "{}").await;
    assert_eq!(answer["result"], json!("r1"), "{answer}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_builtin_that_would_build_a_huge_value_is_refused_at_once() {
    let dir = scratch("huge");
    write_bundle(&dir.join("bundle"), "h1", "input.user == \"admin\"");
    let config = write_config(&dir, "[[bundles]]\nname = \"app\"\ndir = \"bundle\"\n");
    let sidecar = Sidecar::start(&config).await;
    sidecar
        .until("/v1/data/app/allow", json!({"user": "admin"}), json!(true))
        .await;
    // Above the cap of 1,000,000 elements: a built-in error, so undefined (no result).
    for query in [
        "x := count(numbers.range(1, 400000000))",
        "x := count(numbers.range(1, 2000000))",
    ] {
        let (status, answer) = sidecar
            .post("/v1/query", &json!({ "query": query }).to_string())
            .await;
        assert_eq!(status, 200, "{query}: {answer}");
        assert_eq!(answer.get("result"), None, "{query}: {answer}");
    }
    // In a comprehension the refused call is undefined, so it iterates over nothing.
    let (_, answer) = sidecar
        .post(
            "/v1/query",
            r#"{"query": "x := count([y | some y in numbers.range(1, 100000000)])"}"#,
        )
        .await;
    assert_eq!(answer["result"], json!([{"x": 0}]), "{answer}");
    let (_, answer) = sidecar
        .post(
            "/v1/query",
            r#"{"query": "x := count(numbers.range(1, 1000000))"}"#,
        )
        .await;
    assert_eq!(answer["result"], json!([{"x": 1_000_000}]), "{answer}");
    // A false expression gives no row, so no result.
    let (status, answer) = sidecar.post("/v1/query", r#"{"query": "1 > 2"}"#).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer.get("result"), None, "{answer}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn inputs_up_to_the_body_cap_are_logged_and_an_unloggable_one_is_a_413() {
    let dir = scratch("biginput");
    let bundle = dir.join("bundle");
    write_bundle(&bundle, "b1", "input.user == \"admin\"");
    std::fs::write(
        bundle.join("app/echo.rego"),
        "package app\nechoed := [input.s, input.s, input.s]\n",
    )
    .unwrap();
    let config = dir.join("sidecar.toml");
    std::fs::write(
        &config,
        "data_dir = \"data\"\npoll_seconds = 1\nmax_body_bytes = 262144\n\
         [[bundles]]\nname = \"app\"\ndir = \"bundle\"\n\n\
         [decision_log]\nurl = \"jsonl://decisions\"\n",
    )
    .unwrap();
    let sidecar = Sidecar::start(&config).await;
    sidecar
        .until("/v1/data/app/allow", json!({"user": "admin"}), json!(true))
        .await;
    // 200 KB of input, far above the audit log's default 64 KiB cap per record.
    let big = "x".repeat(200_000);
    let body = json!({"input": {"user": "admin", "s": big}}).to_string();
    let (status, answer) = sidecar.post("/v1/data/app/allow", &body).await;
    assert_eq!((status, &answer["result"]), (200, &json!(true)), "{answer}");
    // Three copies of it in the result: a record above the cap, refused for good.
    let (status, answer) = sidecar.post("/v1/data/app/echoed", &body).await;
    assert_eq!(status, 413, "{answer}");
    assert_eq!(answer["code"], json!("invalid_parameter"), "{answer}");
    assert!(
        answer["message"]
            .as_str()
            .is_some_and(|m| m.contains("too large for the decision log")),
        "{answer}"
    );
    assert_eq!(sidecar.get("/health/ready").await.0, 200);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Sets or clears the immutable attribute of every file in `dir`; false if `chattr` is
/// not available or not permitted (not root, a file system without attributes).
fn chattr(dir: &Path, flag: &str) -> bool {
    std::fs::read_dir(dir).unwrap().all(|entry| {
        std::process::Command::new("chattr")
            .arg(flag)
            .arg(entry.unwrap().path())
            .status()
            .is_ok_and(|s| s.success())
    })
}

#[tokio::test]
async fn a_decision_log_that_refuses_every_write_fails_the_health_checks() {
    let dir = scratch("poisoned");
    write_bundle(&dir.join("bundle"), "p1", "input.user == \"admin\"");
    let config = write_config(
        &dir,
        "[[bundles]]\nname = \"app\"\ndir = \"bundle\"\n\n[decision_log]\nurl = \"jsonl://decisions\"\n",
    );
    let sidecar = Sidecar::start(&config).await;
    sidecar
        .until("/v1/data/app/allow", json!({"user": "admin"}), json!(true))
        .await;
    for path in ["/health", "/health/ready", "/health?bundles"] {
        assert_eq!(sidecar.get(path).await.0, 200, "{path}");
    }
    // An immutable log file: the write fails and cannot be undone, so the log refuses
    // every later write.
    if !chattr(&dir.join("decisions"), "+i") {
        eprintln!("skipped: chattr +i needs root and a file system with attributes");
        return;
    }
    let (status, answer) = sidecar
        .post("/v1/data/app/allow", r#"{"input": {"user": "admin"}}"#)
        .await;
    assert!(chattr(&dir.join("decisions"), "-i"));
    assert_eq!(status, 503, "{answer}");
    for path in ["/health", "/health/ready", "/health?bundles"] {
        let (status, answer) = sidecar.get(path).await;
        assert_eq!(status, 500, "{path}: {answer}");
        assert!(
            answer["error"]
                .as_str()
                .is_some_and(|e| e.contains("decision log refuses writes")),
            "{path}: {answer}"
        );
    }
    assert_eq!(sidecar.get("/health/live").await.0, 200);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn the_root_document_and_framework_errors_answer_as_opa() {
    let dir = scratch("root");
    write_bundle(&dir.join("bundle"), "t1", "input.user == \"admin\"");
    let config = write_config(&dir, "[[bundles]]\nname = \"app\"\ndir = \"bundle\"\n");
    let sidecar = Sidecar::start(&config).await;
    sidecar
        .until("/v1/data/app/allow", json!({"user": "admin"}), json!(true))
        .await;
    for path in ["/v1/data", "/v1/data/"] {
        let (status, answer) = sidecar.get(path).await;
        assert_eq!(status, 200, "{path}: {answer}");
        assert_eq!(
            answer["result"]["app"]["revision"],
            json!("t1"),
            "{path}: {answer}"
        );
    }
    let (status, answer) = sidecar.get("/v1/nothing/here").await;
    assert_eq!(
        (status, answer["code"].as_str()),
        (404, Some("resource_not_found")),
        "{answer}"
    );
    let (status, answer) = sidecar.get("/v1/data/app/%ZZ").await;
    assert_eq!(
        (status, answer["code"].as_str()),
        (400, Some("invalid_parameter")),
        "{answer}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_parse_error_names_the_file_in_the_bundle_line_and_column() {
    let dir = scratch("parse");
    let bundle = dir.join("bundle");
    write_bundle(&bundle, "p1", "input.user == \"admin\"");
    let config = write_config(&dir, "[[bundles]]\nname = \"app\"\ndir = \"bundle\"\n");
    let sidecar = Sidecar::start(&config).await;
    sidecar
        .until("/v1/data/app/revision", json!({}), json!("p1"))
        .await;
    for (revision, manifest) in [
        (
            "p2",
            r#"{"revision": "p2", "roots": ["app"], "rego_version": 0}"#,
        ),
        ("p3", r#"{"revision": "p3", "roots": ["app"]}"#),
    ] {
        write_files(
            &bundle,
            &[
                (".manifest", manifest),
                ("app/extra.rego", "package app\nextra { input.user == ]\n"),
            ],
        );
        let app = sidecar
            .app_status_once(|app| app["failed_revision"] == revision)
            .await;
        let error = app["last_error"].as_str().unwrap_or_default();
        assert!(
            error.contains("app/extra.rego:2:") && error.contains(": rego_parse_error: "),
            "{app}"
        );
        assert!(
            !error.contains("app/app/") && !error.contains("-->"),
            "{app}"
        );
        assert_eq!(app["active_revision"], "p1", "{app}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
