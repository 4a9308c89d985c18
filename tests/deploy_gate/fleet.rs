//! Fleet mode (`[store] url = "postgres://…"`): two instances of the binary on one real
//! PostgreSQL, requests alternating between them. An approval asked on one is confirmed on
//! the other, a TOTP code used on one is refused on the other, a token revoked or a role
//! removed on one is refused on the other within the propagation bound, the audit records of
//! both verify as one chain, and a `kill -9` under load loses nothing that was answered 2xx.
//!
//! Needs feature `postgres`, `PORTCULLIS_TEST_POSTGRES_URL` (set by `scripts/with-services`)
//! and the `portcullis-audit` CLI built with `postgres` (`cargo test --workspace
//! --all-features` builds it). Each test gets a database of its own.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use super::*;

/// The documented propagation bound: a change committed on one instance applies on the
/// others within this (README, "Running several instances").
const BOUND: Duration = Duration::from_secs(1);

/// A database of its own on the test server, dropped (with its connections) at the end.
struct Database {
    admin: sqlx::PgPool,
    name: String,
    url: String,
}

impl Database {
    async fn fresh(admin_url: &str) -> Database {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "deploy_gate_fleet_{}_{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        let admin = sqlx::PgPool::connect(admin_url).await.unwrap();
        sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .execute(&admin)
            .await
            .unwrap();
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&admin)
            .await
            .unwrap();
        let (base, _) = admin_url.rsplit_once('/').unwrap();
        let url = format!("{base}/{name}");
        Database { admin, name, url }
    }

    async fn pool(&self) -> sqlx::PgPool {
        sqlx::PgPool::connect(&self.url).await.unwrap()
    }

    async fn drop_it(self) {
        sqlx::query(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        ))
        .execute(&self.admin)
        .await
        .unwrap();
    }
}

/// The key that seals the fleet's keys in the database: the same file on every instance.
const STORE_KEY: &str = "5c0f1ee75c0f1ee75c0f1ee75c0f1ee75c0f1ee75c0f1ee75c0f1ee75c0f1ee7";

/// The full configuration, with every piece of state in `url`. The periodic reload is a
/// minute away, so only a notification can carry a change within the bound.
fn fleet_config(url: &str) -> String {
    full_config(
        600,
        &format!(
            "[audit]\ntimeout_seconds = 5\n\n[store]\nurl = \"{url}\"\nkey_file = \"store.key\"\n\
             max_connections = 3\nrefresh_seconds = 60\nmax_staleness_seconds = 120\n"
        ),
    )
}

/// Starts one instance on `db`, in a folder of its own (as on another machine).
async fn instance(db: &Database) -> Server {
    let dir = TempDir::new();
    std::fs::write(dir.0.join("deploy-gate.toml"), fleet_config(&db.url)).unwrap();
    std::fs::write(dir.0.join("users.toml"), users_file()).unwrap();
    std::fs::write(
        dir.0.join("totp.toml"),
        format!("carol = \"{CAROL_TOTP}\"\n"),
    )
    .unwrap();
    std::fs::write(dir.0.join("store.key"), STORE_KEY).unwrap();
    Server::start_in(dir).await
}

/// The `portcullis-audit` CLI built into this test's profile folder.
fn audit_cli() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let path = exe
        .parent()
        .and_then(Path::parent)
        .unwrap()
        .join(format!("portcullis-audit{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.exists(),
        "{} is missing: `cargo build -p portcullis-audit --features postgres` builds it",
        path.display()
    );
    path
}

/// `portcullis-audit verify` on the fleet's log: its exit code and output.
fn verify(db: &Database) -> (Option<i32>, String) {
    let out = std::process::Command::new(audit_cli())
        .args(["verify", &db.url])
        .output()
        .unwrap();
    (
        out.status.code(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// Calls `check` every 20 ms until it returns true or `BOUND` has passed since `since`;
/// whether it did.
async fn within_bound(since: Instant, mut check: impl AsyncFnMut() -> bool) -> bool {
    loop {
        if check().await {
            return true;
        }
        if since.elapsed() > BOUND {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn totp_now() -> String {
    let secret = TotpSecret::new(hex::decode(CAROL_TOTP).unwrap()).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    totp(&secret, &TotpConfig::default(), now)
}

#[tokio::test]
async fn two_instances_share_approvals_totp_tokens_roles_and_one_audit_chain() {
    let admin_url = portcullis_test_support::service_or_skip!("PORTCULLIS_TEST_POSTGRES_URL");
    let db = Database::fresh(&admin_url).await;
    let a = instance(&db).await;
    let mut b = instance(&db).await;
    // One bootstrap token for the fleet, printed by the instance that started first.
    assert!(a.admin.starts_with("pcp_"), "A printed no bootstrap token");
    assert!(b.admin.is_empty(), "B issued a second bootstrap token");
    b.admin.clone_from(&a.admin);
    let admin = a.admin();

    // The token issued on A works on B; requests alternate from here on.
    assert_eq!(b.deploy(&admin, "staging", "").await.0, StatusCode::CREATED);
    a.grant("user_roles", "checkout", "bob", "OPERATOR").await;
    b.grant("user_roles", "checkout", "carol", "OPERATOR").await;
    // Sessions are signed with the fleet's key: a login on one works on the other.
    let (bob, carol) = (a.login("bob").await, b.login("carol").await);

    // An approval asked on A is confirmed on B, and the deploy proceeds.
    let (status, body) = a.deploy(&bob, "prod", "&approver=carol").await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let approval = body["approval"]["id"].as_str().unwrap().to_owned();
    let deploy = body["deploy"]["id"].as_str().unwrap().to_owned();
    let (status, body) = b
        .post(&format!("/v1/approvals/{approval}/approve"), &carol, None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["approval"]["state"], "approved");
    assert_eq!(body["deploy"]["state"], "accepted");
    let (_, seen) = a.get(&format!("/v1/deploys/{deploy}"), &bob).await;
    assert_eq!(seen["state"], "accepted", "{seen}");

    // A TOTP code used on A is refused on B.
    let code = totp_now();
    let vote = json!({ "factor": "totp", "code": code });
    let (_, body) = b.deploy(&bob, "prod", "&approver=carol").await;
    let first = body["approval"]["id"].as_str().unwrap().to_owned();
    let (status, body) = a
        .post(
            &format!("/v1/approvals/{first}/approve"),
            &carol,
            Some(vote.clone()),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["deploy"]["state"], "accepted");
    let (_, body) = a.deploy(&bob, "prod", "&approver=carol").await;
    let second = body["approval"]["id"].as_str().unwrap().to_owned();
    let (status, body) = b
        .post(
            &format!("/v1/approvals/{second}/approve"),
            &carol,
            Some(vote),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "a replayed code: {body}");
    let (_, view) = a.get(&format!("/v1/approvals/{second}"), &bob).await;
    assert_eq!(view["state"], "pending", "{view}");

    // A token issued on A reaches B, and its revocation on A is refused on B within the
    // bound.
    let (status, token) = a
        .post("/v1/users/me/tokens", &bob, Some(json!({ "name": "cli" })))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{token}");
    let bobs_token = format!("token {}", token["token"].as_str().unwrap());
    let issued = Instant::now();
    assert!(
        within_bound(issued, async || b
            .deploy(&bobs_token, "staging", "")
            .await
            .0
            == StatusCode::CREATED)
        .await,
        "B did not accept the token issued on A within {BOUND:?}"
    );
    let id = token["id"].as_str().unwrap();
    let (status, _, _) = a
        .call(
            Method::DELETE,
            &format!("/v1/users/me/tokens/{id}"),
            Some(&bob),
            None,
        )
        .await;
    assert!(status.is_success(), "{status}");
    let revoked = Instant::now();
    assert!(
        within_bound(revoked, async || b
            .deploy(&bobs_token, "staging", "")
            .await
            .0
            == StatusCode::UNAUTHORIZED)
        .await,
        "B still accepts the token revoked on A after {BOUND:?}"
    );

    // A role removed on B is refused on A within the bound.
    assert_eq!(a.deploy(&bob, "staging", "").await.0, StatusCode::CREATED);
    let (status, _, _) = b
        .call(
            Method::DELETE,
            "/v1/envs/checkout/user_roles/bob",
            Some(&admin),
            None,
        )
        .await;
    assert!(status.is_success(), "{status}");
    let removed = Instant::now();
    assert!(
        within_bound(removed, async || a.deploy(&bob, "staging", "").await.0
            == StatusCode::FORBIDDEN)
        .await,
        "A still honours the role removed on B after {BOUND:?}"
    );

    // Both instances wrote to one log, and it verifies as one chain.
    drop((a, b));
    let (code, out) = verify(&db);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.starts_with("OK"), "{out}");
    db.drop_it().await;
}

/// A six-digit code matching none of carol's codes from a minute before to a minute after
/// now (the skew window accepts one step either side).
fn totp_wrong() -> String {
    let secret = TotpSecret::new(hex::decode(CAROL_TOTP).unwrap()).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let near: Vec<String> = (0..5)
        .map(|i| totp(&secret, &TotpConfig::default(), now + i * 30 - 60))
        .collect();
    (0..10u32)
        .map(|d| d.to_string().repeat(6))
        .find(|code| !near.contains(code))
        .unwrap()
}

/// A password login with the wrong password: its status and body.
async fn wrong_login(server: &Server, user: &str) -> (StatusCode, Value) {
    let (status, body, _) = server
        .call(
            Method::POST,
            "/v1/login",
            None,
            Some(json!({ "username": user, "password": "not-the-password" })),
        )
        .await;
    (status, body)
}

/// The guessing limits hold for the fleet, not per instance: five wrong TOTP codes split
/// three and two between the instances refuse the right code on both, and so do five failed
/// logins split alike for the right password; counts that cannot be read refuse with 503.
#[tokio::test]
async fn guesses_split_across_two_instances_hit_one_limit() {
    let admin_url = portcullis_test_support::service_or_skip!("PORTCULLIS_TEST_POSTGRES_URL");
    let db = Database::fresh(&admin_url).await;
    let a = instance(&db).await;
    let mut b = instance(&db).await;
    b.admin.clone_from(&a.admin);
    a.grant("user_roles", "checkout", "bob", "OPERATOR").await;
    a.grant("user_roles", "checkout", "carol", "OPERATOR").await;
    let (bob, carol) = (a.login("bob").await, b.login("carol").await);

    // Wrong TOTP codes from carol, alternating A, B, A, B, A: each refused, none recorded.
    let (status, body) = a.deploy(&bob, "prod", "&approver=carol").await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let approval = body["approval"]["id"].as_str().unwrap().to_owned();
    let path = format!("/v1/approvals/{approval}/approve");
    let wrong = json!({ "factor": "totp", "code": totp_wrong() });
    for (i, server) in [&a, &b, &a, &b, &a].into_iter().enumerate() {
        let (status, body) = server.post(&path, &carol, Some(wrong.clone())).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "wrong code {i}: {body}");
        assert!(
            body.to_string().contains("wrong code"),
            "wrong code {i}: {body}"
        );
    }
    // The right code is refused on both: the service, not each instance, saw five.
    let right = json!({ "factor": "totp", "code": totp_now() });
    for server in [&b, &a] {
        let (status, body) = server.post(&path, &carol, Some(right.clone())).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
        assert!(
            body.to_string().contains("too many wrong TOTP codes"),
            "the right code after five wrong ones on two instances: {body}"
        );
    }
    let (_, view) = a.get(&format!("/v1/approvals/{approval}"), &bob).await;
    assert_eq!(view["state"], "pending", "{view}");

    // Failed logins of dave, alternating alike: then his right password is refused on both.
    for (i, server) in [&a, &b, &a, &b, &a].into_iter().enumerate() {
        let (status, body) = wrong_login(server, "dave").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "failed login {i}: {body}");
    }
    for server in [&b, &a] {
        let (status, body, _) = server
            .call(
                Method::POST,
                "/v1/login",
                None,
                Some(json!({ "username": "dave", "password": "dave-pw" })),
            )
            .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
        assert!(
            body.to_string().contains("too many"),
            "the right password after five failures on two instances: {body}"
        );
    }
    // Another user is not held out.
    b.login("bob").await;

    // Counts that cannot be read refuse (503), never let a guess through unlimited.
    let pool = db.pool().await;
    sqlx::raw_sql("DROP TABLE portcullis_totp_attempts; DROP TABLE portcullis_login_attempts")
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
    let (status, body) = b.post(&path, &carol, Some(right)).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    let (status, body, _) = a
        .call(
            Method::POST,
            "/v1/login",
            None,
            Some(json!({ "username": "bob", "password": "bob-pw" })),
        )
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");

    drop((a, b));
    db.drop_it().await;
}

/// What a client saw for one deploy answered 2xx.
#[derive(Debug)]
struct Answered {
    deploy: String,
    correlation: String,
}

#[tokio::test]
async fn kill_nine_under_load_loses_nothing_that_was_answered() {
    let admin_url = portcullis_test_support::service_or_skip!("PORTCULLIS_TEST_POSTGRES_URL");
    let db = Database::fresh(&admin_url).await;
    let mut a = instance(&db).await;
    let mut b = instance(&db).await;
    b.admin.clone_from(&a.admin);
    let admin = Arc::new(a.admin());
    let bases = Arc::new([a.base.clone(), b.base.clone()]);
    let answered_by_a = Arc::new(AtomicUsize::new(0));

    // 4 clients × 60 deploys, alternating between the instances.
    let mut clients = Vec::new();
    for client in 0..4 {
        let (admin, bases, answered_by_a) = (admin.clone(), bases.clone(), answered_by_a.clone());
        clients.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut answered = Vec::new();
            for n in 0..60 {
                let base = &bases[n % 2];
                let url = format!(
                    "{base}/v1/envs/checkout/staging/deploys?build_id=c{client}-{n}&description=load"
                );
                let Ok(response) = http
                    .post(url)
                    .header("authorization", admin.as_str())
                    .send()
                    .await
                else {
                    continue; // the killed instance
                };
                if !response.status().is_success() {
                    continue;
                }
                let correlation = response.headers()["x-request-id"]
                    .to_str()
                    .unwrap()
                    .to_owned();
                let Ok(body) = response.json::<Value>().await else {
                    continue; // cut off mid-answer: not an answered request
                };
                if n % 2 == 0 {
                    answered_by_a.fetch_add(1, Ordering::SeqCst);
                }
                answered.push(Answered {
                    deploy: body["id"].as_str().unwrap().to_owned(),
                    correlation,
                });
            }
            answered
        }));
    }
    // kill -9 the first instance mid-run, once it has answered some deploys.
    while answered_by_a.load(Ordering::SeqCst) < 40 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    a.child.start_kill().unwrap();
    a.child.wait().await.unwrap();
    let mut answered = Vec::new();
    for client in clients {
        answered.extend(client.await.unwrap());
    }
    assert!(
        answered.len() > 40,
        "only {} deploys answered",
        answered.len()
    );

    // The survivor goes on serving.
    let (status, body) = b.deploy(&admin, "staging", "").await;
    assert_eq!(status, StatusCode::CREATED, "{body}");

    // Every deploy answered 2xx is stored, accepted, with its audit intent.
    let pool = db.pool().await;
    for seen in &answered {
        let state: Option<String> =
            sqlx::query_scalar("SELECT state FROM deploy_gate_deploys WHERE id = $1")
                .bind(&seen.deploy)
                .fetch_optional(&pool)
                .await
                .unwrap();
        assert_eq!(state.as_deref(), Some("accepted"), "{seen:?}");
        let intents: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM portcullis_audit_records \
             WHERE kind = 'intent' AND correlation_id = $1",
        )
        .bind(&seen.correlation)
        .fetch_one(&pool)
        .await
        .unwrap();
        assert_eq!(intents, 1, "{seen:?}");
    }
    // Nothing half-written: no deploy without the intent recorded before it (answered or
    // not: a deploy may have been stored when the kill cut its answer off).
    let orphans: Vec<String> = sqlx::query_scalar(
        "SELECT d.id FROM deploy_gate_deploys d WHERE NOT EXISTS ( \
             SELECT 1 FROM portcullis_audit_records r WHERE r.kind = 'intent' \
             AND r.line::jsonb #>> '{event,request,parameters,build_id}' = d.build_id)",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert!(orphans.is_empty(), "deploys without an intent: {orphans:?}");
    pool.close().await;
    // And the log both wrote, up to the kill, verifies as one chain.
    drop(b);
    let (code, out) = verify(&db);
    assert_eq!(code, Some(0), "{out}");
    db.drop_it().await;
}
