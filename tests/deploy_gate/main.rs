//! End-to-end tests of `examples/deploy-gate`: each test starts the built binary on
//! 127.0.0.1 with its own configuration and data folder, and drives it over HTTP.
//!
//! `cargo test` builds the example before running tests; `cargo test --test deploy_gate`
//! alone does not, so build it first (`cargo build --example deploy-gate`) when running this
//! file by itself.
//!
//! The PostgreSQL test (audit log down ⇒ 503) needs feature `postgres` and
//! `PORTCULLIS_TEST_POSTGRES_URL` (set by `scripts/with-services`).
#![cfg(all(
    feature = "gate",
    feature = "axum",
    feature = "acl",
    feature = "sqlite"
))]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "tests"
)]

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use portcullis::approval::totp::{TotpConfig, TotpSecret, totp};
use portcullis::directory::{Password, PasswordHash};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

mod checkpoints;
#[path = "../common/mod.rs"]
mod common;
#[cfg(feature = "postgres")]
mod fleet;
mod hardening;
#[cfg(feature = "tls")]
mod tls;
mod totp;
use common::example_binary;

const CAROL_TOTP: &str = "3132333435363738393031323334353637383930";

fn binary() -> PathBuf {
    example_binary("deploy-gate", "(default features)")
}

/// A running deploy-gate, killed when dropped.
struct Server {
    child: Child,
    base: String,
    admin: String,
    http: reqwest::Client,
    dir: TempDir,
}

struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        static COUNTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!("deploy-gate-e2e-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Sections that open every part, with a short approval timeout and password login for
/// bob, carol and dave.
fn full_config(approval_timeout: u64, audit: &str) -> String {
    format!(
        r#"
[deploy]
production_stages = ["prod"]

[authentication]
[[authentication.method]]
type = "script_token"
[[authentication.method]]
type = "personal_token"
[[authentication.method]]
type = "session_jwt"
[authentication.login]
users_file = "users.toml"

[authorization]
bootstrap_admin = "admin"
[authorization.acl.bindings]
lines = ["token:ci env:search OPERATOR"]

[approval]
timeout_seconds = {approval_timeout}
factors = ["in_app", "totp"]
[approval.totp]
secrets_file = "totp.toml"

{audit}
"#
    )
}

const SQLITE_AUDIT: &str = "[audit]\nurl = \"sqlite://audit.db\"";

fn users_file() -> String {
    let mut text = String::new();
    for (name, groups) in [
        ("bob", "[]"),
        ("carol", "[\"release\"]"),
        ("dave", "[\"deployers\"]"),
    ] {
        let hash = PasswordHash::create_with_iterations(
            &Password::new(format!("{name}-pw")).unwrap(),
            10_000,
        )
        .unwrap();
        text.push_str(&format!(
            "[[user]]\nname = \"{name}\"\npassword_hash = \"{hash}\"\ngroups = {groups}\n\n"
        ));
    }
    text
}

impl Server {
    async fn start(config: &str) -> Server {
        let dir = TempDir::new();
        std::fs::write(dir.0.join("deploy-gate.toml"), config).unwrap();
        std::fs::write(dir.0.join("users.toml"), users_file()).unwrap();
        std::fs::write(
            dir.0.join("totp.toml"),
            format!("carol = \"{CAROL_TOTP}\"\n"),
        )
        .unwrap();
        Server::start_in(dir).await
    }

    async fn start_in(dir: TempDir) -> Server {
        let config = dir.0.join("deploy-gate.toml");
        let mut command = Command::new(binary());
        // Without a configuration file: the built-in one, as `cargo run --example deploy-gate`.
        if config.exists() {
            command.arg("--config").arg(config);
        }
        let mut child = command
            .arg("--data-dir")
            .arg(dir.0.join("data"))
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--log-level")
            .arg("warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let (mut base, mut admin) = (None, String::new());
        let started = tokio::time::timeout(Duration::from_secs(60), async {
            while let Some(line) = lines.next_line().await.unwrap() {
                if let Some(rest) = line.strip_prefix("BOOTSTRAP_TOKEN ") {
                    admin = rest.split("token=").nth(1).unwrap().to_owned();
                }
                if let Some(url) = line.strip_prefix("LISTENING ") {
                    base = Some(url.to_owned());
                    break;
                }
            }
        })
        .await;
        assert!(started.is_ok(), "deploy-gate did not start within 60 s");
        let base = base.expect("deploy-gate exited before listening (its stderr is above)");
        // Keep draining stdout so the child never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Server {
            child,
            base,
            admin,
            http: reqwest::Client::new(),
            dir,
        }
    }

    /// Asks the server to stop with SIGTERM, as a service manager does, and waits for it
    /// to exit; keeps its folder.
    async fn terminate(mut self) -> (std::process::ExitStatus, TempDir) {
        let pid = self.child.id().expect("the server is running").to_string();
        let sent = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .await
            .unwrap();
        assert!(sent.success(), "kill -TERM {pid}: {sent}");
        let status = tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .expect("deploy-gate did not exit within 30 s of SIGTERM")
            .unwrap();
        (status, self.dir)
    }

    /// Stops the server, keeping its folder.
    async fn stop(mut self) -> TempDir {
        self.child.kill().await.unwrap();
        self.dir
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        auth: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value, reqwest::header::HeaderMap) {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(auth) = auth {
            request = request.header("authorization", auth);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap();
        let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, value, headers)
    }

    async fn post(&self, path: &str, auth: &str, body: Option<Value>) -> (StatusCode, Value) {
        let (s, v, _) = self.call(Method::POST, path, Some(auth), body).await;
        (s, v)
    }

    async fn get(&self, path: &str, auth: &str) -> (StatusCode, Value) {
        let (s, v, _) = self.call(Method::GET, path, Some(auth), None).await;
        (s, v)
    }

    fn admin(&self) -> String {
        format!("token {}", self.admin)
    }

    /// A session JWT for a user of the test directory, as `Bearer …`.
    async fn login(&self, user: &str) -> String {
        let (status, body, _) = self
            .call(
                Method::POST,
                "/v1/login",
                None,
                Some(json!({ "username": user, "password": format!("{user}-pw") })),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        format!("Bearer {}", body["token"].as_str().unwrap())
    }

    async fn grant(&self, kind: &str, env: &str, name: &str, role: &str) -> Value {
        let (status, body) = self
            .post(
                &format!("/v1/envs/{env}/{kind}"),
                &self.admin(),
                Some(json!({ "name": name, "role": role })),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body
    }

    async fn deploy(&self, auth: &str, stage: &str, extra: &str) -> (StatusCode, Value) {
        self.post(
            &format!("/v1/envs/checkout/{stage}/deploys?build_id=12345&description=foo{extra}"),
            auth,
            None,
        )
        .await
    }
}

#[tokio::test]
async fn the_built_in_configuration_runs_on_a_fresh_machine() {
    let help = std::process::Command::new(binary())
        .arg("--help")
        .output()
        .unwrap();
    assert!(help.status.success());
    let text = String::from_utf8(help.stdout).unwrap();
    for section in [
        "ENDPOINTS",
        "CONFIGURATION",
        "FIRST START",
        "--config",
        "--data-dir",
    ] {
        assert!(text.contains(section), "--help lacks {section}");
    }
    let printed = std::process::Command::new(binary())
        .arg("--print-config")
        .output()
        .unwrap();
    let printed = String::from_utf8(printed.stdout).unwrap();
    for section in [
        "[authentication]",
        "[authorization]",
        "[approval]",
        "[audit]",
    ] {
        assert!(
            printed.contains(section),
            "the built-in configuration lacks {section}"
        );
    }

    let s = Server::start_in(TempDir::new()).await;
    assert!(s.admin.starts_with("pcp_"));
    let (status, deploy) = s.deploy(&s.admin(), "staging", "").await;
    assert_eq!(status, StatusCode::CREATED, "{deploy}");
    let (status, body) = s.deploy(&s.admin(), "prod", "").await;
    assert_eq!(
        status,
        StatusCode::PRECONDITION_REQUIRED,
        "production needs approval: {body}"
    );
}

#[tokio::test]
async fn token_kinds() {
    let s = Server::start(&full_config(600, SQLITE_AUDIT)).await;
    assert!(
        s.admin.starts_with("pcp_"),
        "bootstrap personal token printed"
    );

    // Personal token (Teletraan's `token` scheme) and the same token as Bearer.
    let (status, deploy) = s.deploy(&s.admin(), "staging", "").await;
    assert_eq!(status, StatusCode::CREATED, "{deploy}");
    assert_eq!(deploy["state"], "accepted");
    assert_eq!(deploy["operator"], "admin");
    assert_eq!(deploy["build_id"], "12345");
    let bearer = format!("Bearer {}", s.admin);
    assert_eq!(
        s.deploy(&bearer, "staging", "").await.0,
        StatusCode::CREATED
    );

    // A session JWT after a password login; a wrong password is a plain 401.
    s.grant("user_roles", "checkout", "bob", "OPERATOR").await;
    let bob = s.login("bob").await;
    let (status, deploy) = s.deploy(&bob, "staging", "").await;
    assert_eq!(status, StatusCode::CREATED, "{deploy}");
    assert_eq!(deploy["operator"], "bob");
    let (status, _, _) = s
        .call(
            Method::POST,
            "/v1/login",
            None,
            Some(json!({ "username": "bob", "password": "wrong" })),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // A personal token created by bob for himself.
    let (status, created) = s
        .post(
            "/v1/users/me/tokens",
            &bob,
            Some(json!({ "name": "laptop", "ttl_days": 30 })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let bobs = format!("token {}", created["token"].as_str().unwrap());
    assert_eq!(s.deploy(&bobs, "staging", "").await.0, StatusCode::CREATED);

    // A script token from token_roles; revoking its role revokes it.
    let ci = s.grant("token_roles", "checkout", "ci", "OPERATOR").await;
    let ci = format!("token {}", ci["token"].as_str().unwrap());
    let (status, deploy) = s.deploy(&ci, "staging", "").await;
    assert_eq!(status, StatusCode::CREATED, "{deploy}");
    assert_eq!(deploy["operator"], "ci");
    let (status, _, _) = s
        .call(
            Method::DELETE,
            "/v1/envs/checkout/token_roles/ci",
            Some(&s.admin()),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(
        s.deploy(&ci, "staging", "").await.0,
        StatusCode::UNAUTHORIZED
    );

    // Missing, unknown and malformed credentials: 401 with a challenge.
    for auth in [
        None,
        Some("token pcp_notavalidtokenatall"),
        Some("Basic YWxpY2U6cHc="),
        Some("Bearer not.a.jwt"),
    ] {
        let (status, body, headers) = s
            .call(
                Method::POST,
                "/v1/envs/checkout/staging/deploys?build_id=1",
                auth,
                None,
            )
            .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{auth:?}: {body}");
        assert!(
            headers["www-authenticate"]
                .to_str()
                .unwrap()
                .contains("Bearer")
        );
        assert_eq!(body["error"], "unauthenticated");
    }
}

#[tokio::test]
async fn role_tiers_groups_and_management() {
    let s = Server::start(&full_config(600, SQLITE_AUDIT)).await;
    let bob = s.login("bob").await;
    let dave = s.login("dave").await;

    // No role: nothing, not even reading.
    assert_eq!(s.deploy(&bob, "staging", "").await.0, StatusCode::FORBIDDEN);
    assert_eq!(
        s.get("/v1/envs/checkout/staging/deploys", &bob).await.0,
        StatusCode::FORBIDDEN
    );

    // READER reads but does not deploy; the refusal names the missing role.
    s.grant("user_roles", "checkout", "bob", "READER").await;
    assert_eq!(
        s.get("/v1/envs/checkout/staging/deploys", &bob).await.0,
        StatusCode::OK
    );
    let (status, body) = s.deploy(&bob, "staging", "").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(
        body["message"].as_str().unwrap().contains("OPERATOR"),
        "{body}"
    );

    // OPERATOR deploys, on this env only; still may not manage roles.
    let (status, _, _) = s
        .call(
            Method::PUT,
            "/v1/envs/checkout/user_roles/bob",
            Some(&s.admin()),
            Some(json!({ "role": "OPERATOR" })),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        s.get("/v1/envs/checkout/user_roles/bob", &bob).await.1["role"],
        "OPERATOR"
    );
    assert_eq!(s.deploy(&bob, "staging", "").await.0, StatusCode::CREATED);
    let (status, _) = s
        .post("/v1/envs/search/staging/deploys?build_id=1", &bob, None)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = s
        .post(
            "/v1/envs/checkout/user_roles",
            &bob,
            Some(json!({ "name": "dave", "role": "OPERATOR" })),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "only ADMINs manage roles");

    // A group role reaches every member.
    assert_eq!(
        s.deploy(&dave, "staging", "").await.0,
        StatusCode::FORBIDDEN
    );
    s.grant("group_roles", "checkout", "deployers", "OPERATOR")
        .await;
    assert_eq!(s.deploy(&dave, "staging", "").await.0, StatusCode::CREATED);
    let (_, groups) = s.get("/v1/envs/checkout/group_roles", &dave).await;
    assert_eq!(
        groups,
        json!([{ "name": "deployers", "role": "OPERATOR", "resource": { "kind": "env", "id": "checkout" } }])
    );

    // Revoking takes effect at once.
    let (status, _, _) = s
        .call(
            Method::DELETE,
            "/v1/envs/checkout/group_roles/deployers",
            Some(&s.admin()),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(
        s.deploy(&dave, "staging", "").await.0,
        StatusCode::FORBIDDEN
    );

    // Reading one deploy needs READER on its stage.
    let (_, deploy) = s.deploy(&bob, "staging", "").await;
    let id = deploy["id"].as_str().unwrap();
    assert_eq!(
        s.get(&format!("/v1/deploys/{id}"), &bob).await.0,
        StatusCode::OK
    );
    assert_eq!(
        s.get(&format!("/v1/deploys/{id}"), &dave).await.0,
        StatusCode::FORBIDDEN
    );
}

#[tokio::test]
async fn script_tokens_act_only_inside_their_scope() {
    let s = Server::start(&full_config(600, SQLITE_AUDIT)).await;
    // token:ci also holds OPERATOR on env:search (seeded from the config), but the token
    // issued through checkout's token_roles is scoped to env:checkout.
    let ci = s.grant("token_roles", "checkout", "ci", "OPERATOR").await;
    assert_eq!(ci["resource"], json!({ "kind": "env", "id": "checkout" }));
    let ci = format!("token {}", ci["token"].as_str().unwrap());
    assert_eq!(s.deploy(&ci, "staging", "").await.0, StatusCode::CREATED);
    let (status, body) = s
        .post("/v1/envs/search/staging/deploys?build_id=1", &ci, None)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("scoped to env:checkout"),
        "{body}"
    );

    // A script token never approves, and never creates personal tokens.
    let (status, _) = s
        .post("/v1/users/me/tokens", &ci, Some(json!({ "name": "x" })))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // Only ADMINs create script tokens.
    s.grant("user_roles", "checkout", "bob", "OPERATOR").await;
    let bob = s.login("bob").await;
    let (status, _) = s
        .post(
            "/v1/envs/checkout/token_roles",
            &bob,
            Some(json!({ "name": "bot", "role": "OPERATOR" })),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

async fn production_setup() -> (Server, String, String, String) {
    let s = Server::start(&full_config(600, SQLITE_AUDIT)).await;
    s.grant("user_roles", "checkout", "bob", "OPERATOR").await;
    s.grant("user_roles", "checkout", "carol", "OPERATOR").await;
    let (bob, carol, dave) = (
        s.login("bob").await,
        s.login("carol").await,
        s.login("dave").await,
    );
    (s, bob, carol, dave)
}

#[tokio::test]
async fn production_deploy_approved_by_another_user() {
    let (s, bob, carol, dave) = production_setup().await;

    // Without an approver: 428, nothing recorded.
    let (status, body) = s.deploy(&bob, "prod", "").await;
    assert_eq!(status, StatusCode::PRECONDITION_REQUIRED, "{body}");
    assert_eq!(
        s.get("/v1/envs/checkout/prod/deploys", &bob).await.1,
        json!([])
    );

    // Naming oneself is refused.
    let (status, body) = s.deploy(&bob, "prod", "&approver=bob").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");

    // Pending until carol approves.
    let (status, body) = s.deploy(&bob, "prod", "&approver=carol").await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["deploy"]["state"], "pending_approval");
    let approval = body["approval"]["id"].as_str().unwrap().to_owned();
    let deploy = body["deploy"]["id"].as_str().unwrap().to_owned();

    // The requester cannot approve; someone not named cannot either; a personal token is no
    // second factor (and is not counted as a denial).
    let (status, body) = s
        .post(&format!("/v1/approvals/{approval}/approve"), &bob, None)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (status, _) = s
        .post(&format!("/v1/approvals/{approval}/approve"), &dave, None)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (_, token) = s
        .post(
            "/v1/users/me/tokens",
            &carol,
            Some(json!({ "name": "cli" })),
        )
        .await;
    let carols_token = format!("token {}", token["token"].as_str().unwrap());
    let (status, body) = s
        .post(
            &format!("/v1/approvals/{approval}/approve"),
            &carols_token,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(
        s.get(&format!("/v1/deploys/{deploy}"), &bob).await.1["state"],
        "pending_approval"
    );

    // Carol approves in the app: the deploy proceeds as bob's.
    let (status, body) = s
        .post(&format!("/v1/approvals/{approval}/approve"), &carol, None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["approval"]["state"], "approved");
    assert_eq!(body["deploy"]["state"], "accepted");
    assert_eq!(body["deploy"]["operator"], "bob");
    let (_, record) = s.get(&format!("/v1/deploys/{deploy}"), &bob).await;
    assert_eq!(record["state"], "accepted");

    // The approval is used up: presenting it again does not ship anything.
    let (status, _) = s
        .deploy(&bob, "prod", &format!("&approval_id={approval}"))
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    let (_, view) = s.get(&format!("/v1/approvals/{approval}"), &bob).await;
    assert_eq!(view["votes"][0]["approver"], "carol");
    assert_eq!(view["votes"][0]["factor"], "in_app");
}

#[tokio::test]
async fn production_deploy_denied_times_out_or_is_confirmed_by_totp() {
    let (s, bob, carol, _) = production_setup().await;

    // Denied.
    let (_, body) = s.deploy(&bob, "prod", "&approver=carol").await;
    let approval = body["approval"]["id"].as_str().unwrap().to_owned();
    let (status, body) = s
        .post(&format!("/v1/approvals/{approval}/deny"), &carol, None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["approval"]["state"], "rejected");
    assert_eq!(body["deploy"]["state"], "rejected");

    // TOTP: a wrong code changes nothing; the right one approves.
    let (_, body) = s.deploy(&bob, "prod", "&approver=carol").await;
    let approval = body["approval"]["id"].as_str().unwrap().to_owned();
    let vote = |code: &str| json!({ "factor": "totp", "code": code });
    let (status, _) = s
        .post(
            &format!("/v1/approvals/{approval}/approve"),
            &carol,
            Some(vote("000000")),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let secret = TotpSecret::new(hex::decode(CAROL_TOTP).unwrap()).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let code = totp(&secret, &TotpConfig::default(), now);
    let (status, body) = s
        .post(
            &format!("/v1/approvals/{approval}/approve"),
            &carol,
            Some(vote(&code)),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["deploy"]["state"], "accepted");
    assert_eq!(body["approval"]["votes"][0]["factor"], "totp");

    // Timeout: a server whose approvals expire after a second.
    let s = Server::start(&full_config(1, SQLITE_AUDIT)).await;
    s.grant("user_roles", "checkout", "bob", "OPERATOR").await;
    s.grant("user_roles", "checkout", "carol", "OPERATOR").await;
    let (bob, carol) = (s.login("bob").await, s.login("carol").await);
    let (_, body) = s.deploy(&bob, "prod", "&approver=carol").await;
    let approval = body["approval"]["id"].as_str().unwrap().to_owned();
    let deploy = body["deploy"]["id"].as_str().unwrap().to_owned();
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let (status, _) = s
        .post(&format!("/v1/approvals/{approval}/approve"), &carol, None)
        .await;
    assert_eq!(
        status,
        StatusCode::CONFLICT,
        "an expired request takes no votes"
    );
    assert_eq!(
        s.get(&format!("/v1/deploys/{deploy}"), &bob).await.1["state"],
        "expired"
    );
}

#[tokio::test]
async fn audit_rows_come_before_the_deploy_and_only_admins_read_them() {
    let s = Server::start(&full_config(600, SQLITE_AUDIT)).await;
    let (status, deploy, headers) = s
        .call(
            Method::POST,
            "/v1/envs/checkout/staging/deploys?build_id=777&description=audited",
            Some(&s.admin()),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let correlation = headers["x-request-id"].to_str().unwrap().to_owned();
    let (status, page) = s
        .get(
            &format!("/v1/audit?resource=env_stage:checkout/staging&correlation_id={correlation}"),
            &s.admin(),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let records = page["records"].as_array().unwrap();
    assert_eq!(records.len(), 2, "{page}");
    let (intent, outcome) = (&records[0]["event"], &records[1]["event"]);
    assert_eq!(intent["kind"], "intent");
    assert_eq!(intent["actor"]["subject"], "admin");
    assert_eq!(intent["request"]["parameters"]["build_id"], "777");
    assert_eq!(outcome["kind"], "outcome");
    assert_eq!(outcome["outcome_of"], intent["id"]);
    assert!(
        intent["time_ms"].as_u64().unwrap() <= deploy["created_at"].as_u64().unwrap(),
        "the intent was durable before the deploy record was written"
    );

    // Refusals are recorded too.
    let bob = s.login("bob").await;
    assert_eq!(s.deploy(&bob, "staging", "").await.0, StatusCode::FORBIDDEN);
    let (_, page) = s
        .get(
            "/v1/audit?resource=env_stage:checkout/staging&actor=bob",
            &s.admin(),
        )
        .await;
    assert_eq!(page["records"][0]["event"]["kind"], "decision");
    assert_ne!(page["records"][0]["event"]["decision"]["effect"], "allow");

    // Only ADMINs of the resource read its audit log.
    s.grant("user_roles", "checkout", "bob", "OPERATOR").await;
    let (status, _) = s.get("/v1/audit?resource=env:checkout", &bob).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = s.get("/v1/audit", &s.admin()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn missing_sections_are_closed() {
    // No [audit]: authenticated and authorized, but nothing is done.
    let no_audit = full_config(600, "");
    let s = Server::start(&no_audit).await;
    let (status, body) = s.deploy(&s.admin(), "staging", "").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"], "audit_unavailable");
    assert_eq!(
        s.get("/v1/envs/checkout/staging/deploys", &s.admin())
            .await
            .1,
        json!([])
    );

    // No [approval]: production stages cannot be deployed at all.
    let no_approval = full_config(600, SQLITE_AUDIT).replace("[approval]", "[ignored]");
    let no_approval = no_approval.split("[ignored]").next().unwrap().to_owned() + SQLITE_AUDIT;
    let s = Server::start(&no_approval).await;
    assert_eq!(
        s.deploy(&s.admin(), "staging", "").await.0,
        StatusCode::CREATED
    );
    let (status, body) = s.deploy(&s.admin(), "prod", "&approver=carol").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");

    // No [authorization]: nobody may do anything, not even the would-be admin.
    let s = Server::start("[authentication]\n[[authentication.method]]\ntype = \"session_jwt\"\n[authentication.login]\nusers_file = \"users.toml\"\n[audit]\nurl = \"sqlite://audit.db\"\n").await;
    let bob = s.login("bob").await;
    assert_eq!(s.deploy(&bob, "staging", "").await.0, StatusCode::FORBIDDEN);

    // No [authentication]: every request is 401.
    let s = Server::start("[audit]\nurl = \"sqlite://audit.db\"\n").await;
    let (status, _, _) = s
        .call(
            Method::POST,
            "/v1/envs/checkout/staging/deploys?build_id=1",
            Some("token pcp_x"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // The unprotected health endpoint still answers.
    let (status, _, _) = s.call(Method::GET, "/health", None, None).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn the_bootstrap_token_is_printed_once_and_survives_a_restart() {
    let dir = TempDir::new();
    std::fs::write(
        dir.0.join("deploy-gate.toml"),
        full_config(600, SQLITE_AUDIT),
    )
    .unwrap();
    std::fs::write(dir.0.join("users.toml"), users_file()).unwrap();
    std::fs::write(dir.0.join("totp.toml"), "").unwrap();
    let first = Server::start_in(dir).await;
    let token = first.admin();
    assert_eq!(
        first.deploy(&token, "staging", "").await.0,
        StatusCode::CREATED
    );
    let dir = first.stop().await;
    let second = Server::start_in(dir).await;
    assert!(
        second.admin.is_empty(),
        "the token is printed only at first start"
    );
    assert_eq!(
        second.deploy(&token, "staging", "").await.0,
        StatusCode::CREATED
    );
    assert_eq!(
        second
            .get("/v1/envs/checkout/staging/deploys", &token)
            .await
            .1
            .as_array()
            .unwrap()
            .len(),
        2
    );
}

#[tokio::test]
async fn sigterm_stops_gracefully_and_keeps_every_outcome() {
    // Outcomes wait up to 5 s for company, so the ones queued when the signal comes are
    // written only because the server flushes its log before it exits.
    let audit = format!("{SQLITE_AUDIT}\noutcome_linger_ms = 5000");
    let s = Server::start(&full_config(600, &audit)).await;
    let token = s.admin();
    // Outcomes are submitted, not waited for: the answers go out before they are written.
    let deploys = (0..20).map(|_| s.deploy(&token, "staging", ""));
    for (status, body) in futures_util::future::join_all(deploys).await {
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    let (status, dir) = s.terminate().await;
    assert!(
        status.success(),
        "deploy-gate exited with {status} on SIGTERM"
    );

    let s = Server::start_in(dir).await;
    let (status, page) = s
        .get(
            "/v1/audit?resource=env_stage:checkout/staging&action=deploy&limit=100",
            &token,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let records = page["records"].as_array().unwrap();
    let kinds = |kind: &str| {
        records
            .iter()
            .filter(|r| r["event"]["kind"] == kind)
            .count()
    };
    assert_eq!(kinds("intent"), 20, "{page}");
    assert_eq!(
        kinds("outcome"),
        20,
        "every outcome was written before the exit: {page}"
    );
}

#[tokio::test]
async fn an_outcome_linger_above_the_maximum_is_refused_at_start() {
    let dir = TempDir::new();
    let audit = format!("{SQLITE_AUDIT}\noutcome_linger_ms = 60000");
    std::fs::write(dir.0.join("deploy-gate.toml"), full_config(600, &audit)).unwrap();
    std::fs::write(dir.0.join("users.toml"), users_file()).unwrap();
    std::fs::write(dir.0.join("totp.toml"), "").unwrap();
    let output = Command::new(binary())
        .arg("--config")
        .arg(dir.0.join("deploy-gate.toml"))
        .arg("--data-dir")
        .arg(dir.0.join("data"))
        .arg("--listen")
        .arg("127.0.0.1:0")
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "started with a 60 s linger");
    assert!(
        stderr.contains("outcome_linger_ms = 60000 is above the maximum of 10000"),
        "{stderr}"
    );
}

#[cfg(feature = "postgres")]
#[tokio::test]
async fn audit_log_down_means_503_and_no_deploy() {
    let admin_url = portcullis_test_support::service_or_skip!("PORTCULLIS_TEST_POSTGRES_URL");
    let name = format!("deploy_gate_audit_{}", std::process::id());
    let admin = sqlx::PgPool::connect(&admin_url).await.unwrap();
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&admin)
        .await
        .unwrap();
    let (base, _) = admin_url.rsplit_once('/').unwrap();
    let audit = format!("[audit]\nurl = \"{base}/{name}\"\ntimeout_seconds = 2");
    let s = Server::start(&full_config(600, &audit)).await;
    assert_eq!(
        s.deploy(&s.admin(), "staging", "").await.0,
        StatusCode::CREATED
    );

    // The audit database goes away (connections are terminated).
    sqlx::query(&format!("DROP DATABASE {name} WITH (FORCE)"))
        .execute(&admin)
        .await
        .unwrap();
    let (status, body) = s.deploy(&s.admin(), "staging", "").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"], "audit_unavailable");
    let (_, deploys) = s.get("/v1/envs/checkout/staging/deploys", &s.admin()).await;
    assert_eq!(
        deploys.as_array().unwrap().len(),
        1,
        "nothing was recorded while the audit log was down: {deploys}"
    );
}
