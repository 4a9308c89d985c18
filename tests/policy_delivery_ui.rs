//! The policy-delivery UI (issue 33): its files and headers, and the page itself in headless
//! Chromium (through the ChromeDriver `scripts/with-services` starts) at the scale the issue
//! names — 100 artifacts and 1,000 hosts, every host reporting on every bundle — signed in
//! as an operator who filters, pages, reads the metrics against the limits and promotes,
//! then as a reader who sees no button and whose forged request is refused. Chromium's own
//! console log, read through WebDriver, must hold no error but the refusals the test causes;
//! screenshots are checked and kept under `<target>/ui-screenshots/`.
#![cfg(all(
    feature = "delivery",
    feature = "gate",
    feature = "acl",
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

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use aws_lc_rs::digest::{SHA256, digest};
use fantoccini::Locator;
use portcullis::audit::{AuditLog, AuditQuery, OutcomeStatus};
use portcullis::policy::Bundle;
use serde_json::{Value, json};

mod common;
use common::{example_binary, spawn_listening};

const ARTIFACTS: usize = 100;
const HOSTS: usize = 1000;
/// Hosts `0..CANARY_HOSTS` are in the canary scope; the rest only in production's.
const CANARY_HOSTS: usize = 50;
/// The artifact the browser operates.
const FOCUS: &str = "svc-042";
/// An artifact the reader may not read.
const HIDDEN: &str = "svc-099";
const OPERATOR_TOKEN: &str = "pcd_olivia-operator-token-for-ui-tests-01";
const READER_TOKEN: &str = "pcd_rita-reader-token-for-ui-tests-only-02";
const CI_TOKEN: &str = "pcd_ci-publisher-token-for-ui-tests-only03";

fn sha256(bytes: &[u8]) -> String {
    hex::encode(digest(&SHA256, bytes))
}

fn artifact(i: usize) -> String {
    format!("svc-{i:03}")
}

fn host_id(i: usize) -> String {
    if i < CANARY_HOSTS {
        format!("spiffe://fleet.example/canary/host-{i:04}")
    } else {
        format!("spiffe://fleet.example/prod/host-{i:04}")
    }
}

fn host_token(i: usize) -> String {
    format!("pcd_fleet-host-{i:04}-token-for-ui-tests-only")
}

fn scratch(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("policy-delivery-ui-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// 100 artifacts of one bundle each, each a canary step (manual, at least 20 decisions, at
/// most 25% denials and 2% errors) then production (manual); 1,000 hosts; an operator of
/// every artifact (olivia), a reader of all but the last (rita) and a publisher (ci).
fn write_config(dir: &Path) -> PathBuf {
    let mut pipelines = String::new();
    let mut bindings = Vec::new();
    let mut roots = Vec::new();
    for i in 0..ARTIFACTS {
        let name = artifact(i);
        write!(
            pipelines,
            r#"
[[artifacts]]
name = "{name}"
bundles = ["{name}"]

[[artifacts.steps]]
name = "canary"
scopes = ["spiffe://fleet.example/canary/**"]
promotion = {{ mode = "manual" }}
thresholds = {{ max_deny_rate = 0.25, max_error_rate = 0.02, min_decisions = 20 }}

[[artifacts.steps]]
name = "production"
scopes = ["spiffe://fleet.example/**"]
promotion = {{ mode = "manual" }}
thresholds = {{ max_error_rate = 0.01 }}
"#
        )
        .unwrap();
        bindings.push(format!("\"service:ci artifact:{name} PUBLISHER\""));
        bindings.push(format!("\"user:olivia artifact:{name} OPERATOR\""));
        if name != HIDDEN {
            bindings.push(format!("\"user:rita artifact:{name} READER\""));
        }
        // Every test bundle is package svc (a namespace the configuration shares out).
        roots.push(format!("\"{name}\" = [\"svc\"]"));
    }
    std::fs::write(dir.join("pipelines.toml"), pipelines).unwrap();
    let mut config = format!(
        r#"
data_dir = "data"
pipelines = "pipelines.toml"
tick_seconds = 1

[audit]
url = "sqlite://{audit}"

[[principals]]
name = "olivia"
token_sha256 = "{olivia}"

[[principals]]
name = "rita"
token_sha256 = "{rita}"

[[principals]]
name = "ci"
kind = "service"
token_sha256 = "{ci}"

[acl]
bindings = [{bindings}]

[roots]
{roots}
"#,
        audit = dir.join("audit.db").display(),
        olivia = sha256(OPERATOR_TOKEN.as_bytes()),
        rita = sha256(READER_TOKEN.as_bytes()),
        ci = sha256(CI_TOKEN.as_bytes()),
        bindings = bindings.join(", "),
        roots = roots.join("\n"),
    );
    for i in 0..HOSTS {
        write!(
            config,
            "\n[[hosts]]\nspiffe_id = \"{}\"\ntoken_sha256 = \"{}\"\n",
            host_id(i),
            sha256(host_token(i).as_bytes())
        )
        .unwrap();
    }
    let path = dir.join("delivery.toml");
    std::fs::write(&path, config).unwrap();
    path
}

/// A bundle of artifact `name` at manifest revision `revision`, with a passing test.
fn bundle(name: &str, revision: &str) -> Vec<u8> {
    let files = vec![
        (
            ".manifest".to_owned(),
            format!(r#"{{"revision":"{revision}","roots":["svc"]}}"#).into_bytes(),
        ),
        (
            "svc.rego".to_owned(),
            b"package svc\n\ndefault allow := false\n\nallow if input.user == \"alice\"\n\n\
              test_alice if allow with input as {\"user\": \"alice\"}\n"
                .to_vec(),
        ),
    ];
    Bundle::from_files(name, files)
        .unwrap()
        .to_tar_gz()
        .unwrap()
}

struct Api {
    base: String,
    http: reqwest::Client,
}

impl Api {
    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        body: Vec<u8>,
    ) -> (u16, Value) {
        let response = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let body = response.bytes().await.unwrap();
        (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
    }

    async fn get(&self, path: &str, token: &str) -> (u16, Value) {
        self.send(reqwest::Method::GET, path, token, Vec::new())
            .await
    }

    async fn post(&self, path: &str, token: &str, body: &Value) -> (u16, Value) {
        self.send(
            reqwest::Method::POST,
            path,
            token,
            body.to_string().into_bytes(),
        )
        .await
    }

    async fn publish(&self, name: &str, revision: &str) -> String {
        let tarball = bundle(name, revision);
        let (status, answer) = self
            .send(
                reqwest::Method::POST,
                &format!("/v1/artifacts/{name}/revisions"),
                CI_TOKEN,
                tarball.clone(),
            )
            .await;
        assert_eq!(status, 201, "{answer}");
        sha256(&tarball)
    }

    async fn operate(&self, name: &str, operation: &str, reason: &str) {
        let (status, answer) = self
            .post(
                &format!("/v1/artifacts/{name}/{operation}"),
                OPERATOR_TOKEN,
                &json!({ "reason": reason }),
            )
            .await;
        assert_eq!(status, 200, "{name} {operation}: {answer}");
    }

    /// `decisions` decisions (a tenth of them denials) for `revision` of `name`, from
    /// canary host 0.
    async fn decisions(&self, name: &str, revision: &str, decisions: u64) {
        // Only a host that downloaded the candidate counts for it.
        let (status, _) = self.get(&format!("/bundles/{name}"), &host_token(0)).await;
        assert_eq!(status, 200, "canary host 0 downloads {name}");
        let (status, answer) = self
            .post(
                "/v1/decision-counts",
                &host_token(0),
                &json!({"bundles": [{
                    "name": name, "revision": revision,
                    "decisions": decisions, "denies": decisions / 10, "errors": 0,
                }]}),
            )
            .await;
        assert_eq!(
            (status, answer["counted"].as_u64()),
            (200, Some(decisions)),
            "{answer}"
        );
    }
}

/// What the focused artifact's hosts run, by host: canary hosts 0–44 the candidate r2,
/// 45–47 still r1 (drift), 48–49 nothing reported; production hosts r1, of which 990–994
/// with an error, and 995–999 nothing reported.
fn focus_report(i: usize) -> Option<Value> {
    match i {
        0..45 => Some(json!({"active_revision": "r2"})),
        45..48 => Some(json!({"active_revision": "r1"})),
        48..50 | 995.. => None,
        990..995 => {
            Some(json!({"active_revision": "r1", "code": "bundle_error", "message": "disk full"}))
        }
        _ => Some(json!({"active_revision": "r1"})),
    }
}

/// Every host reports on all 100 bundles (OPA's status API): `r1` of the ten published
/// artifacts on canary hosts, the focused artifact as [`focus_report`] says, nothing
/// active elsewhere.
async fn report_every_host(api: &Api) {
    for i in 0..HOSTS {
        let mut bundles = serde_json::Map::new();
        for a in 0..ARTIFACTS {
            let name = artifact(a);
            let report = if name == FOCUS {
                focus_report(i)
            } else if a < 10 && i < CANARY_HOSTS {
                Some(json!({"active_revision": "r1"}))
            } else {
                Some(json!({}))
            };
            if let Some(mut report) = report {
                report["name"] = json!(name);
                bundles.insert(name, report);
            }
        }
        let (status, answer) = api
            .post(
                "/status",
                &host_token(i),
                &json!({"labels": {"id": host_id(i)}, "bundles": bundles}),
            )
            .await;
        assert_eq!(status, 200, "host {i}: {answer}");
    }
}

/// The target directory the test binary runs from (`target/` or `CARGO_TARGET_DIR`).
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent()
        .unwrap()
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Checks `png` is a PNG of a page (signature, IHDR of `width` × at least 600, more than
/// a blank page's bytes) and keeps it as `<target>/ui-screenshots/{name}.png`.
fn keep_screenshot(name: &str, png: &[u8], width: u32) -> PathBuf {
    let folder = target_dir().join("ui-screenshots");
    std::fs::create_dir_all(&folder).unwrap();
    let path = folder.join(format!("{name}.png"));
    std::fs::write(&path, png).unwrap();
    assert_eq!(
        &png[..8],
        b"\x89PNG\r\n\x1a\n",
        "{} is a PNG",
        path.display()
    );
    assert_eq!(&png[12..16], b"IHDR", "{}", path.display());
    let w = u32::from_be_bytes(png[16..20].try_into().unwrap());
    let h = u32::from_be_bytes(png[20..24].try_into().unwrap());
    assert_eq!(w, width, "{}: {w}x{h}", path.display());
    assert!(h >= 600, "{}: {w}x{h}", path.display());
    // A blank 1280-pixel page compresses to a few kilobytes; a page of tables does not.
    assert!(
        png.len() > 30_000,
        "{} is only {} bytes",
        path.display(),
        png.len()
    );
    path
}

/// ChromeDriver's `POST /session/{id}/se/log` (its log endpoint under W3C sessions): the
/// browser's console and network log since the last call.
#[derive(Debug)]
struct BrowserLog;

impl fantoccini::wd::WebDriverCompatibleCommand for BrowserLog {
    fn endpoint(
        &self,
        base_url: &reqwest::Url,
        session_id: Option<&str>,
    ) -> Result<reqwest::Url, <reqwest::Url as std::str::FromStr>::Err> {
        base_url.join(&format!(
            "session/{}/se/log",
            session_id.unwrap_or_default()
        ))
    }

    fn method_and_body(&self, _: &reqwest::Url) -> (axum::http::Method, Option<String>) {
        (
            axum::http::Method::POST,
            Some(json!({"type": "browser"}).to_string()),
        )
    }
}

/// Drains Chromium's log and fails on any SEVERE entry (a console error, an uncaught
/// exception, a CSP violation, a failed request) that does not contain one of `expected`;
/// each of `expected` must be there — the refusals the test caused prove the log is read.
async fn check_console(browser: &fantoccini::Client, phase: &str, expected: &[&str]) {
    let answer = browser.issue_cmd(BrowserLog).await.unwrap();
    let entries = answer
        .get("value")
        .unwrap_or(&answer)
        .as_array()
        .cloned()
        .unwrap_or_else(|| panic!("{phase}: the browser log is not a list: {answer}"));
    let severe: Vec<String> = entries
        .iter()
        .filter(|e| e["level"] == "SEVERE")
        .map(|e| e["message"].as_str().unwrap_or_default().to_owned())
        .collect();
    for message in &severe {
        assert!(
            expected.iter().any(|x| message.contains(x)),
            "{phase}: a console error: {message}\nall entries: {entries:#?}"
        );
    }
    for x in expected {
        assert!(
            severe.iter().any(|m| m.contains(x)),
            "{phase}: the expected {x:?} is not in the browser log: {entries:#?}"
        );
    }
}

/// What the page shows, read from its DOM.
const SNAPSHOT: &str = r##"
const $ = (id) => document.getElementById(id);
const text = (id) => ($(id) ? $(id).textContent.trim() : "");
const shown = (e) => e !== null && e.offsetParent !== null;
const cells = (selector) => [...document.querySelectorAll(selector)]
  .map((row) => [...row.cells].map((c) => c.textContent.trim()));
return {
  view: ["sign-in", "list-view", "artifact-view"].find((id) => !$(id).hidden) || "",
  who: text("who"),
  notice: $("notice").hidden ? "" : text("notice"),
  sign_in_error: text("sign-in-error"),
  artifact_count: text("artifact-count"),
  artifact_rows: [...document.querySelectorAll("#artifact-rows tr")].filter((r) => !r.hidden)
    .map((r) => r.dataset.artifact),
  name: text("artifact-name"),
  summary: text("artifact-summary"),
  steps: [...document.querySelectorAll("#steps > li")].map((li) => li.textContent),
  candidate: text("candidate"),
  chips: [...document.querySelectorAll("#host-states button")].map((b) => b.textContent),
  pressed: [...document.querySelectorAll("#host-states button[aria-pressed=true]")]
    .map((b) => b.dataset.state),
  hosts: cells("#host-rows tr"),
  range: text("hosts-range"),
  events: cells("#event-rows tr"),
  revisions: cells("#revision-rows tr"),
  buttons: [...document.querySelectorAll("#actions button[data-op]")].filter(shown)
    .map((b) => ({ op: b.dataset.op, disabled: b.disabled })),
  read_only: shown($("read-only")),
  action_result: text("action-result"),
  dialog_open: $("confirm").open,
  dialog: text("confirm"),
  viewport: window.innerWidth,
  scroll_width: document.documentElement.scrollWidth,
};
"##;

async fn snapshot(browser: &fantoccini::Client) -> Value {
    browser.execute(SNAPSHOT, vec![]).await.unwrap()
}

async fn click(browser: &fantoccini::Client, selector: &str) {
    browser
        .find(Locator::Css(selector))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

async fn type_into(browser: &fantoccini::Client, id: &str, text: &str) {
    let field = browser.find(Locator::Id(id)).await.unwrap();
    field.clear().await.unwrap();
    field.send_keys(text).await.unwrap();
}

async fn sign_in(browser: &fantoccini::Client, token: &str) {
    type_into(browser, "token", token).await;
    click(browser, "#sign-in-button").await;
}

/// Waits until `check` holds for the page's snapshot; the snapshot.
async fn until(browser: &fantoccini::Client, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    let mut last = Value::Null;
    for _ in 0..400 {
        last = snapshot(browser).await;
        if check(&last) {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting until {what}: {last:#}");
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect()
}

/// The UI's files come from the binary with the headers that keep it to itself: a strict
/// CSP without inline scripts, no framing, no sniffing, the right types; `/` leads there.
#[tokio::test]
async fn the_ui_is_served_by_the_binary_with_strict_headers() {
    let dir = scratch("files");
    std::fs::write(
        dir.join("pipelines.toml"),
        "[[artifacts]]\nname = \"a\"\nbundles = [\"a\"]\n[[artifacts.steps]]\nname = \"all\"\n\
         scopes = [\"spiffe://x.example/**\"]\npromotion = { mode = \"manual\" }\n",
    )
    .unwrap();
    let config = dir.join("delivery.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = \"data\"\npipelines = \"pipelines.toml\"\n[audit]\nurl = \"sqlite://{}\"\n",
            dir.join("audit.db").display()
        ),
    )
    .unwrap();
    let binary = example_binary("policy-delivery", "--features delivery");
    let (mut child, base) = spawn_listening(&binary, &config).await;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    for path in ["/", "/ui"] {
        let response = http.get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(response.status().as_u16(), 303, "{path}");
        assert_eq!(response.headers()["location"], "/ui/", "{path}");
    }
    for (path, kind) in [
        ("/ui/", "text/html; charset=utf-8"),
        ("/ui/app.js", "text/javascript; charset=utf-8"),
        ("/ui/app.css", "text/css; charset=utf-8"),
        ("/ui/favicon.svg", "image/svg+xml"),
    ] {
        let response = http.get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(response.status().as_u16(), 200, "{path}");
        let headers = response.headers().clone();
        assert_eq!(headers["content-type"], kind, "{path}");
        assert_eq!(headers["x-content-type-options"], "nosniff", "{path}");
        assert_eq!(headers["x-frame-options"], "DENY", "{path}");
        let csp = headers["content-security-policy"].to_str().unwrap();
        for directive in [
            "default-src 'self'",
            "script-src 'self'",
            "frame-ancestors 'none'",
        ] {
            assert!(csp.contains(directive), "{path}: {csp}");
        }
        assert!(!csp.contains("unsafe"), "{path}: {csp}");
        let body = response.text().await.unwrap();
        assert!(body.len() > 100, "{path}");
        if path == "/ui/" {
            // Nothing inline for the CSP to refuse: scripts by src only, no handlers.
            assert_eq!(body.matches("<script").count(), 1, "{body}");
            assert!(body.contains(r#"<script src="/ui/app.js" defer></script>"#));
            for handler in [
                " onclick=",
                " onload=",
                " onerror=",
                " onsubmit=",
                " style=",
            ] {
                assert!(!body.contains(handler), "{path} has {handler}");
            }
        }
        if path == "/ui/app.js" {
            assert!(
                !body.contains("innerHTML"),
                "server data is set as text only"
            );
        }
    }
    // The API's answers say what they are too.
    let response = http
        .get(format!("{base}/v1/artifacts"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 401);
    assert_eq!(response.headers()["x-content-type-options"], "nosniff");
    child.kill().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

/// The UI in headless Chromium with 100 artifacts and 1,000 hosts: sign in (a bad token is
/// told so), the list and its filter, an artifact's steps and scopes, the candidate against
/// its step's limits, hosts paged and filtered by the server, the history, a refused and an
/// accepted promotion (seen in the page, the API and the audit log), and a reader without
/// buttons whose forged promotion is refused.
#[tokio::test]
async fn the_ui_shows_and_operates_100_artifacts_on_1000_hosts_in_chromium() {
    let _ = portcullis_test_support::service_or_skip!("PORTCULLIS_TEST_WEBDRIVER_URL");
    let dir = scratch("chromium");
    let config = write_config(&dir);
    let binary = example_binary("policy-delivery", "--features delivery");
    let (mut child, base) = spawn_listening(&binary, &config).await;
    let api = Api {
        base: base.clone(),
        http: reqwest::Client::new(),
    };

    // Seed: ten artifacts with a first revision at the canary (one of them paused); the
    // focused one with r1 stable everywhere and r2 at the canary; every host's report.
    let seeding = Instant::now();
    for a in 0..10 {
        api.publish(&artifact(a), "r1").await;
    }
    api.operate(&artifact(3), "pause", "waiting for the freeze to end")
        .await;
    api.publish(FOCUS, "r1").await;
    api.decisions(FOCUS, "r1", 30).await;
    api.operate(FOCUS, "promote", "canary is fine").await;
    api.operate(FOCUS, "promote", "production is fine").await;
    let r2 = api.publish(FOCUS, "r2").await;
    report_every_host(&api).await;
    let seeded = seeding.elapsed();

    let profile = dir.join("chromium-profile");
    let browser = common::chromium(&profile, 1280, 1500).await;

    // `/` leads to the UI, which asks for a token; a wrong one is told so.
    browser.goto(&format!("{base}/")).await.unwrap();
    let page = until(&browser, "the sign-in form", |s| s["view"] == "sign-in").await;
    assert!(
        browser
            .current_url()
            .await
            .unwrap()
            .as_str()
            .ends_with("/ui/"),
        "{page}"
    );
    sign_in(&browser, "pcd_not-a-token").await;
    let page = until(&browser, "the refusal is shown", |s| {
        s["sign_in_error"].as_str().unwrap().contains("(401)")
    })
    .await;
    assert_eq!(page["view"], "sign-in");
    // The log holds console errors as well as failed requests: a probe proves it is read.
    browser
        .execute("console.error('a probe of the browser log');", vec![])
        .await
        .unwrap();
    check_console(
        &browser,
        "a wrong token",
        &[
            "/v1/artifacts - Failed to load resource: the server responded with a status of 401",
            "a probe of the browser log",
        ],
    )
    .await;

    // The operator's list: 100 artifacts, filtered in the page.
    let started = Instant::now();
    sign_in(&browser, OPERATOR_TOKEN).await;
    let page = until(&browser, "the artifact list", |s| {
        s["artifact_rows"].as_array().unwrap().len() == ARTIFACTS
    })
    .await;
    let list_time = started.elapsed();
    assert_eq!(page["who"], "signed in as user:olivia");
    assert_eq!(page["artifact_count"], "100 artifacts");
    let shot = keep_screenshot("01-artifacts", &browser.screenshot().await.unwrap(), 1280);
    type_into(&browser, "artifact-filter", "svc-04").await;
    let page = until(&browser, "the filter", |s| {
        s["artifact_count"] == "10 of 100 artifacts"
    })
    .await;
    let rows = strings(&page["artifact_rows"]);
    assert_eq!(
        rows.first().map(String::as_str),
        Some("svc-040"),
        "{rows:?}"
    );
    assert_eq!(rows.len(), 10);
    type_into(&browser, "artifact-filter", "paused").await;
    let page = until(&browser, "the state filter", |s| {
        s["artifact_rows"].as_array().unwrap().len() == 1
    })
    .await;
    assert_eq!(strings(&page["artifact_rows"]), ["svc-003"]);
    type_into(&browser, "artifact-filter", FOCUS).await;
    until(&browser, "one artifact left", |s| {
        s["artifact_rows"].as_array().unwrap().len() == 1
    })
    .await;
    check_console(&browser, "the list", &[]).await;

    // The artifact: steps and scopes, the candidate against its limits, hosts, history.
    let started = Instant::now();
    click(&browser, "#artifact-rows tr:not([hidden]) td.name a").await;
    let page = until(&browser, "the artifact's hosts and history", |s| {
        s["hosts"].as_array().unwrap().len() == 50
            && !s["events"].as_array().unwrap().is_empty()
            && s["steps"].as_array().unwrap().len() == 2
            && s["chips"].as_array().unwrap().len() == 5
            && s["steps"][1].as_str().unwrap().contains("950 more")
    })
    .await;
    let artifact_time = started.elapsed();
    assert_eq!(page["name"], FOCUS);
    let steps = strings(&page["steps"]);
    assert!(
        steps[0].contains("canary") && steps[0].contains("spiffe://fleet.example/canary/**"),
        "{steps:?}"
    );
    assert!(
        steps[0].contains("candidate here") && steps[0].contains("reaches 50 hosts"),
        "{steps:?}"
    );
    assert!(
        steps[0].contains("deny ≤ 25.0%") && steps[0].contains("≥ 20 decisions"),
        "{steps:?}"
    );
    assert!(
        steps[1].contains("production") && steps[1].contains("spiffe://fleet.example/**"),
        "{steps:?}"
    );
    assert!(steps[1].contains("reaches 950 more hosts"), "{steps:?}");
    let candidate = page["candidate"].as_str().unwrap();
    for part in [
        "r2 (",
        "in step canary (1 of 2)",
        "Decisions0needs 20",
        "limit 25.0%",
        "limit 2.00%",
        "Not ready: 0 of 20 decisions needed in canary",
    ] {
        assert!(candidate.contains(part), "{part:?} in {candidate:?}");
    }
    assert_eq!(
        strings(&page["chips"]),
        [
            "All 1,000",
            "Current 985",
            "Drift 3",
            "No report 7",
            "Error 5"
        ]
    );
    assert_eq!(page["range"], "1–50 of 1,000");
    let first = &page["hosts"][0];
    assert_eq!(first[0], host_id(0));
    assert_eq!(first[1], "canary");
    assert!(first[2].as_str().unwrap().starts_with("r2 ("), "{first}");
    assert_eq!(first[3], "r2");
    assert!(first[4].as_str().unwrap().ends_with(" ago"), "{first}");
    assert_eq!(first[5], "current");
    let drift = &page["hosts"][45];
    assert_eq!(
        (drift[3].as_str(), drift[5].as_str()),
        (Some("r1"), Some("drift")),
        "{drift}"
    );
    let silent = &page["hosts"][48];
    assert_eq!(
        (silent[4].as_str(), silent[5].as_str()),
        (Some("never"), Some("no report"))
    );
    // History, newest first: r2's publication on top of r1's promotions.
    let kinds: Vec<&str> = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e[1].as_str().unwrap())
        .collect();
    // (A publication is two events: the revision stored, then proposed at the canary.)
    assert_eq!(
        kinds,
        [
            "publish", "publish", "promote", "promote", "publish", "publish"
        ],
        "{page:#}"
    );
    assert!(
        page["events"][0][4]
            .as_str()
            .unwrap()
            .ends_with(" proposed"),
        "{page:#}"
    );
    assert_eq!(page["events"][2][2], "user:olivia");
    assert!(
        page["events"][2][4]
            .as_str()
            .unwrap()
            .ends_with(" completed"),
        "{page:#}"
    );
    assert_eq!(page["revisions"].as_array().unwrap().len(), 2);
    // Every operation the role allows, enabled as the state lets it act.
    assert_eq!(
        page["buttons"],
        json!([
            {"op": "promote", "disabled": false}, {"op": "pause", "disabled": false},
            {"op": "resume", "disabled": true}, {"op": "rollback", "disabled": false},
        ])
    );
    let shot2 = keep_screenshot(
        "02-artifact-operator",
        &browser.screenshot().await.unwrap(),
        1280,
    );
    // Nothing wider than the window at 1280 pixels.
    assert!(
        page["scroll_width"].as_u64() <= page["viewport"].as_u64(),
        "{page:#}"
    );

    // Hosts, paged and filtered by the server.
    click(&browser, "#hosts-next").await;
    let page = until(&browser, "the second page", |s| {
        s["range"] == "51–100 of 1,000"
    })
    .await;
    assert_eq!(page["hosts"][0][0], host_id(50));
    assert_eq!(page["hosts"][0][1], "production");
    click(&browser, "#host-states button[data-state=drift]").await;
    let page = until(&browser, "the drifting hosts", |s| s["range"] == "1–3 of 3").await;
    assert_eq!(strings(&page["pressed"]), ["drift"]);
    assert!(
        page["hosts"]
            .as_array()
            .unwrap()
            .iter()
            .all(|h| h[5] == "drift")
    );
    click(&browser, "#host-states button[data-state='']").await;
    type_into(&browser, "host-filter", "PROD/host-099").await;
    let page = until(&browser, "the filtered hosts", |s| {
        s["range"] == "1–10 of 10"
    })
    .await;
    assert_eq!(page["hosts"][0][0], host_id(990));
    let steps = strings(&page["steps"]);
    assert!(
        steps[1].contains("reaches 950 more hosts"),
        "the pipeline's, not the filter's: {steps:?}"
    );
    assert_eq!(page["hosts"][0][5], "error bundle_error: disk full");
    let shot3 = keep_screenshot(
        "03-hosts-filtered",
        &browser.screenshot().await.unwrap(),
        1280,
    );
    // Cleared (a space is trimmed away): every host again.
    type_into(&browser, "host-filter", " ").await;
    until(&browser, "every host again", |s| {
        s["range"] == "1–50 of 1,000"
    })
    .await;
    check_console(&browser, "the artifact", &[]).await;

    // Promote too early: confirmed, refused by the pipeline, the server's reason shown.
    type_into(&browser, "reason", "canary looks good").await;
    click(&browser, "#op-promote").await;
    let page = until(&browser, "the confirmation", |s| s["dialog_open"] == true).await;
    let dialog = page["dialog"].as_str().unwrap();
    assert!(
        dialog.contains("from canary on to production")
            && dialog.contains("Reason: canary looks good"),
        "{dialog}"
    );
    let shot4 = keep_screenshot("04-confirm", &browser.screenshot().await.unwrap(), 1280);
    click(&browser, "#confirm-ok").await;
    let page = until(&browser, "the refusal", |s| {
        s["action_result"].as_str().unwrap().starts_with("Refused")
    })
    .await;
    let refused = page["action_result"].as_str().unwrap();
    assert!(
        refused.contains("0 of 20 decisions needed in canary")
            && refused.contains("409 rollout_refused"),
        "{refused}"
    );
    check_console(
        &browser,
        "a refused promotion",
        &["/promote - Failed to load resource: the server responded with a status of 409"],
    )
    .await;

    // The canary's decisions arrive; the metrics show them against the limits; promote.
    api.decisions(FOCUS, "r2", 40).await;
    click(&browser, "#refresh").await;
    let page = until(&browser, "the new metrics", |s| {
        s["candidate"].as_str().unwrap().contains("Ready to leave")
    })
    .await;
    let candidate = page["candidate"].as_str().unwrap();
    assert!(
        candidate.contains("Decisions40needs 20") && candidate.contains("10.0% (4)"),
        "{candidate}"
    );
    click(&browser, "#op-promote").await;
    until(&browser, "the confirmation", |s| s["dialog_open"] == true).await;
    click(&browser, "#confirm-ok").await;
    let page = until(&browser, "the promotion", |s| {
        s["action_result"].as_str().unwrap().starts_with("Done")
            && s["summary"].as_str().unwrap().contains("at production")
    })
    .await;
    let done = format!("Done: {}… promoted to step production", &r2[..12]);
    assert_eq!(page["action_result"], done.as_str(), "{page:#}");
    assert!(
        page["candidate"]
            .as_str()
            .unwrap()
            .contains("in step production (2 of 2)")
    );
    assert_eq!(page["events"][0][1], "promote");
    assert_eq!(page["events"][0][2], "user:olivia");
    // Production's hosts are assigned r2 now and still run r1: the page says so.
    let page = until(&browser, "the hosts' new assignment", |s| {
        s["chips"][2] == "Drift 943"
    })
    .await;
    assert_eq!(page["chips"][1], "Current 45");
    let shot5 = keep_screenshot("05-promoted", &browser.screenshot().await.unwrap(), 1280);
    check_console(&browser, "the promotion", &[]).await;
    let (status, view) = api
        .get(&format!("/v1/artifacts/{FOCUS}"), OPERATOR_TOKEN)
        .await;
    assert_eq!(status, 200);
    assert_eq!(view["state"]["candidate"]["revision"], r2.as_str());
    assert_eq!(view["state"]["candidate"]["step"], 1);
    let last = view["events"].as_array().unwrap().last().unwrap();
    assert_eq!(
        (last["kind"].as_str(), last["actor"].as_str()),
        (Some("promote"), Some("user:olivia"))
    );

    // A reader: 99 artifacts, the same views, no button; a forged promotion is refused.
    click(&browser, "#sign-out").await;
    until(&browser, "signed out", |s| s["view"] == "sign-in").await;
    sign_in(&browser, READER_TOKEN).await;
    let page = until(&browser, "the reader's list", |s| {
        s["artifact_count"] == "99 artifacts"
    })
    .await;
    assert_eq!(page["who"], "signed in as user:rita");
    assert!(!strings(&page["artifact_rows"]).contains(&HIDDEN.to_owned()));
    browser
        .goto(&format!("{base}/ui/#/artifacts/{FOCUS}"))
        .await
        .unwrap();
    let page = until(&browser, "the reader's view", |s| {
        s["hosts"].as_array().unwrap().len() == 50 && s["name"] == FOCUS && s["read_only"] == true
    })
    .await;
    assert_eq!(page["buttons"], json!([]), "{page:#}");
    assert!(
        page["candidate"]
            .as_str()
            .unwrap()
            .contains("in step production")
    );
    let shot6 = keep_screenshot("06-reader", &browser.screenshot().await.unwrap(), 1280);
    check_console(&browser, "the reader", &[]).await;
    let (status, answer) = api
        .post(
            &format!("/v1/artifacts/{FOCUS}/rollback"),
            READER_TOKEN,
            &json!({"reason": "forged"}),
        )
        .await;
    assert_eq!(
        (status, answer["code"].as_str()),
        (403, Some("forbidden")),
        "{answer}"
    );
    let (_, view) = api
        .get(&format!("/v1/artifacts/{FOCUS}"), READER_TOKEN)
        .await;
    assert_eq!(
        view["state"]["candidate"]["step"], 1,
        "the forged rollback changed nothing"
    );
    // The artifact the reader may not read is refused, and the page says so.
    browser
        .goto(&format!("{base}/ui/#/artifacts/{HIDDEN}"))
        .await
        .unwrap();
    let page = until(&browser, "the refusal", |s| {
        s["notice"].as_str().unwrap().contains("Not allowed (403)")
    })
    .await;
    assert!(page["hosts"].as_array().unwrap().is_empty(), "{page:#}");
    check_console(
        &browser,
        "a forbidden artifact",
        &[
            &format!("/v1/artifacts/{HIDDEN} - Failed to load resource: the server responded with a status of 403"),
            &format!("/v1/artifacts/{HIDDEN}/hosts?offset=0&limit=50 - Failed to load resource: the server responded with a status of 403"),
        ],
    )
    .await;
    // A name outside the artifact grammar is never fetched: with `..` the browser would
    // resolve the API URL to another endpoint (`/v1/`).
    for odd in ["..", ".", "%2E%2E", "a%2F..%2F.."] {
        browser
            .goto(&format!("{base}/ui/#/artifacts/{odd}"))
            .await
            .unwrap();
        until(&browser, "the list instead of an odd name", |s| {
            s["view"] == "list-view" && s["notice"] == ""
        })
        .await;
        check_console(&browser, "an odd artifact name", &[]).await;
    }
    browser.close().await.unwrap();
    child.kill().await.unwrap();

    // The audit log holds both promotions asked in the page, with the reason, and the
    // reader's refused rollback.
    let log = AuditLog::sqlite(
        &format!("sqlite://{}", dir.join("audit.db").display()),
        Default::default(),
    )
    .await
    .unwrap();
    let mut query = AuditQuery::all(200);
    query.resource = Some(format!("artifact:{FOCUS}").parse().unwrap());
    let records = log.query(&query).await.unwrap().records;
    let from_page: Vec<_> = records
        .iter()
        .filter(|r| {
            r.event.actor.subject == "olivia"
                && r.event.action.to_string() == "promote"
                && r.event.request.as_ref().is_some_and(|q| {
                    q.parameters.get("reason") == Some(&json!("canary looks good"))
                })
        })
        .collect();
    assert_eq!(from_page.len(), 2, "{records:#?}");
    // Each intent was recorded before it acted, then its outcome: refused, then done.
    let outcomes: Vec<(OutcomeStatus, &str)> = from_page
        .iter()
        .map(|intent| {
            let outcome = records
                .iter()
                .find_map(|r| {
                    r.event
                        .outcome
                        .as_ref()
                        .filter(|_| r.event.outcome_of.as_ref() == Some(&intent.event.id))
                })
                .unwrap_or_else(|| panic!("no outcome for {intent:?}"));
            (outcome.status, outcome.detail.as_str())
        })
        .collect();
    assert!(
        outcomes
            .iter()
            .any(|(status, detail)| *status == OutcomeStatus::Failed
                && detail.contains("0 of 20 decisions")),
        "{outcomes:?}"
    );
    assert!(
        outcomes
            .iter()
            .any(|(status, _)| *status == OutcomeStatus::Succeeded),
        "{outcomes:?}"
    );
    let rita: Vec<_> = records
        .iter()
        .filter(|r| r.event.actor.subject == "rita")
        .collect();
    assert!(
        rita.iter().any(|r| r.event.action.to_string() == "rollback"
            && r.event
                .decision
                .as_ref()
                .is_some_and(|d| { !d.is_allowed() && d.reason().contains("needs OPERATOR") })),
        "the reader's forged rollback is recorded as refused: {rita:#?}"
    );
    log.close().await.unwrap();

    eprintln!(
        "policy-delivery UI, {ARTIFACTS} artifacts x {HOSTS} hosts: seeding {seeded:.1?}; \
         sign-in to 100 rows {list_time:.0?}; click to the artifact with 50 of 1,000 hosts \
         {artifact_time:.0?}; screenshots {}, {}, {}, {}, {}, {}",
        shot.display(),
        shot2.display(),
        shot3.display(),
        shot4.display(),
        shot5.display(),
        shot6.display()
    );
    let _ = std::fs::remove_dir_all(&dir);
}
