//! End-to-end test of `examples/access-broker` in fleet mode (`[store]` on a real
//! PostgreSQL, people logging in against a real slapd; `scripts/with-services`): two brokers
//! and two proxies of one region, as processes on one database of their own.
//!
//! - a session from broker A works on broker B, and after A restarts;
//! - a broker token spent at one proxy of the region is refused by the other;
//! - a bulk job started on A is visible and cancellable on B (and hidden from other users);
//! - both brokers' requests are in the one audit log.
#![cfg(all(
    feature = "gate",
    feature = "axum",
    feature = "ldap",
    feature = "sqlite",
    feature = "postgres"
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
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::Request;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

mod common;
use common::{drop_database, env, example_binary, fresh_database};

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

/// Starts the binary with `args` and waits for its `LISTENING` line.
async fn start(args: &[&str], dir: &Path) -> Child {
    let mut child = Command::new(binary())
        .args(args)
        .arg("--log-level")
        .arg("warn")
        .current_dir(dir)
        .env(
            "TEST_LDAP_PASSWORD",
            std::env::var("PORTCULLIS_TEST_LDAP_BIND_PASSWORD").unwrap_or_default(),
        )
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if line.starts_with("LISTENING ") {
                return;
            }
        }
        panic!("access-broker {args:?} exited before listening");
    })
    .await
    .expect("access-broker did not start within 60 s");
    child
}

async fn serve(router: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    format!("http://{address}")
}

/// A service behind the region: records the paths it was asked for.
async fn upstream() -> (String, Arc<Mutex<Vec<String>>>) {
    let hits: Arc<Mutex<Vec<String>>> = Arc::default();
    let record = hits.clone();
    let router = axum::Router::new().fallback(move |request: Request| {
        let record = record.clone();
        async move {
            let user = request
                .headers()
                .get("x-forwarded-user")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            record.lock().unwrap().push(request.uri().path().to_owned());
            axum::Json(json!({ "user": user, "path": request.uri().path() }))
        }
    });
    (serve(router).await, hits)
}

/// A broker token captured on its way to a region proxy, with the request it is bound to.
#[derive(Debug, Clone)]
struct Sent {
    path: String,
    token: String,
}

/// A relay between broker A and the first proxy, capturing broker tokens.
async fn relay(to: String) -> (String, Arc<Mutex<Vec<Sent>>>) {
    let seen: Arc<Mutex<Vec<Sent>>> = Arc::default();
    let record = seen.clone();
    let http = reqwest::Client::new();
    let router = axum::Router::new().fallback(move |request: Request| {
        let (record, http, to) = (record.clone(), http.clone(), to.clone());
        async move {
            let (parts, body) = request.into_parts();
            let body = axum::body::to_bytes(body, 1 << 20).await.unwrap().to_vec();
            let path = parts.uri.path_and_query().unwrap().to_string();
            let token = parts.headers["x-broker-token"].to_str().unwrap().to_owned();
            record.lock().unwrap().push(Sent {
                path: path.clone(),
                token: token.clone(),
            });
            let answer = http
                .request(
                    reqwest::Method::from_bytes(parts.method.as_str().as_bytes()).unwrap(),
                    format!("{to}{path}"),
                )
                .header("x-broker-token", token)
                .body(body)
                .send()
                .await
                .unwrap();
            let status = axum::http::StatusCode::from_u16(answer.status().as_u16()).unwrap();
            (status, answer.bytes().await.unwrap().to_vec())
        }
    });
    (serve(router).await, seen)
}

fn ldap_directory() -> String {
    let base = env("PORTCULLIS_TEST_LDAP_BASE");
    format!(
        r#"[broker.directory.ldap]
url = "{ldap}"
bind_dn = "{bind_dn}"
bind_password_env = "TEST_LDAP_PASSWORD"
user_base = "ou=people,{base}"
groups = {{ type = "search", base = "ou=groups,{base}" }}
"#,
        ldap = env("PORTCULLIS_TEST_LDAP_URL"),
        bind_dn = env("PORTCULLIS_TEST_LDAP_BIND_DN"),
    )
}

/// One broker's and one region proxy's configuration: the broker on `broker_port` sends
/// eu requests to `region_url`; the proxy on `proxy_port` trusts the keys published by
/// `jwks_port`'s broker. Everything else is shared through `[store]`.
fn config(
    store_url: &str,
    broker_port: u16,
    region_url: &str,
    proxy_port: u16,
    jwks_port: u16,
    orders: &str,
) -> String {
    format!(
        r#"
[store]
url = "{store_url}"
key_file = "store.key"
max_connections = 4

[broker]
listen = "127.0.0.1:{broker_port}"
audit_groups = ["platform"]
{directory}
[broker.regions.eu]
url = "{region_url}"

[[broker.grants]]
groups = ["deployers"]
region = "eu"
service = "orders"
methods = ["*"]

[[region]]
name = "eu"
listen = "127.0.0.1:{proxy_port}"
broker_jwks_url = "http://127.0.0.1:{jwks_port}/.well-known/jwks.json"
[region.services]
orders = "{orders}"
"#,
        directory = ldap_directory(),
    )
}

async fn login(http: &reqwest::Client, base: &str, user: &str) -> String {
    let answer: Value = http
        .post(format!("{base}/login"))
        .json(&json!({ "username": user, "password": format!("{user}-password") }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    answer["token"]
        .as_str()
        .unwrap_or_else(|| panic!("{user} could not log in: {answer}"))
        .to_owned()
}

async fn call(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut request = http
        .request(method, format!("{base}{path}"))
        .bearer_auth(token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Polls `check` every 100 ms for up to 20 s (a liveness bound, not a latency measurement).
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..200 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting until {what}");
}

#[tokio::test]
async fn two_brokers_and_two_region_proxies_share_sessions_spent_tokens_and_bulk_jobs() {
    let (admin_url, _) = portcullis_test_support::service_or_skip!(
        "PORTCULLIS_TEST_POSTGRES_URL",
        "PORTCULLIS_TEST_LDAP_URL"
    );
    let store_url = fresh_database(&admin_url, "access_broker_fleet").await;

    let dir = std::env::temp_dir().join(format!("access-broker-fleet-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("store.key"), format!("{}\n", "3c".repeat(32))).unwrap();
    let (orders, hits) = upstream().await;
    let (a_port, b_port, p1_port, p2_port) = (free_port(), free_port(), free_port(), free_port());
    let p1 = format!("http://127.0.0.1:{p1_port}");
    let p2 = format!("http://127.0.0.1:{p2_port}");
    let (relay_url, sent) = relay(p1.clone()).await;
    // A sends through the relay to proxy 1, which trusts A's JWKS; B sends to proxy 2, which
    // trusts B's: each proxy accepts the other broker's tokens only if the keys are shared.
    let config_a = config(&store_url, a_port, &relay_url, p1_port, a_port, &orders);
    let config_b = config(&store_url, b_port, &p2, p2_port, b_port, &orders);
    std::fs::write(dir.join("a.toml"), config_a).unwrap();
    std::fs::write(dir.join("b.toml"), config_b).unwrap();
    let (file_a, file_b) = (
        dir.join("a.toml").to_str().unwrap().to_owned(),
        dir.join("b.toml").to_str().unwrap().to_owned(),
    );
    let mut broker_a = start(&["broker", "--config", &file_a], &dir).await;
    let _broker_b = start(&["broker", "--config", &file_b], &dir).await;
    let _proxy_1 = start(
        &["region-proxy", "--config", &file_a, "--region", "eu"],
        &dir,
    )
    .await;
    let _proxy_2 = start(
        &["region-proxy", "--config", &file_b, "--region", "eu"],
        &dir,
    )
    .await;
    let a = format!("http://127.0.0.1:{a_port}");
    let b = format!("http://127.0.0.1:{b_port}");
    let http = reqwest::Client::new();

    // Both brokers publish the same keys.
    let jwks = |base: String| {
        let http = http.clone();
        async move {
            http.get(format!("{base}/.well-known/jwks.json"))
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    };
    assert_eq!(jwks(a.clone()).await, jwks(b.clone()).await);

    // A session from A works on B (and B's token passes proxy 2).
    let alice = login(&http, &a, "alice").await;
    let (status, answer) = call(
        &http,
        &b,
        &alice,
        reqwest::Method::GET,
        "/proxy/eu/orders/o/1",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["user"], "alice");
    let (status, answer) = call(
        &http,
        &a,
        &alice,
        reqwest::Method::GET,
        "/proxy/eu/orders/o/2",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(hits.lock().unwrap().as_slice(), ["/o/1", "/o/2"]);

    // The token A sent to proxy 1, replayed — exactly, to the other proxy of the region —
    // is refused: it was spent at proxy 1.
    let captured = sent.lock().unwrap().last().cloned().unwrap();
    for proxy in [&p2, &p1] {
        let replay = http
            .get(format!("{proxy}{}", captured.path))
            .header("x-broker-token", &captured.token)
            .send()
            .await
            .unwrap();
        assert_eq!(
            replay.status(),
            StatusCode::UNAUTHORIZED,
            "replayed to {proxy}"
        );
        let why: Value = replay.json().await.unwrap();
        assert!(
            why["message"].as_str().unwrap().contains("already used"),
            "{why}"
        );
    }
    assert_eq!(
        hits.lock().unwrap().len(),
        2,
        "nothing replayed reached the service"
    );

    // Failed logins add up across brokers: three on A and two on B lock dave out of both.
    let attempt = |base: String, password: &'static str| {
        let http = http.clone();
        async move {
            let response = http
                .post(format!("{base}/login"))
                .json(&json!({ "username": "dave", "password": password }))
                .send()
                .await
                .unwrap();
            (response.status(), response.text().await.unwrap())
        }
    };
    for base in [&a, &a, &a, &b, &b] {
        assert_eq!(
            attempt(base.clone(), "guess").await.0,
            StatusCode::UNAUTHORIZED
        );
    }
    for base in [&a, &b] {
        let (status, body) = attempt(base.clone(), "dave-password").await;
        assert_ne!(status, StatusCode::OK, "{body}");
        assert!(body.contains("too many failed logins"), "{body}");
    }

    // A restart of A signs nobody out.
    broker_a.kill().await.unwrap();
    broker_a.wait().await.unwrap();
    let mut broker_a = start(&["broker", "--config", &file_a], &dir).await;
    let (status, answer) = call(
        &http,
        &a,
        &alice,
        reqwest::Method::GET,
        "/proxy/eu/orders/o/3",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "after a restart: {answer}");

    // A bulk job started on A (slowly: one id a second) is visible and cancellable on B.
    let ids: Vec<String> = (0..30).map(|n| format!("c{n}")).collect();
    let started = http
        .post(format!("{a}/api/bulk"))
        .bearer_auth(&alice)
        .json(&json!({
            "method": "POST", "path_template": "/proxy/eu/orders/companies/{id}/flags",
            "ids": ids, "concurrency": 1, "rate_per_second": 1,
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(started.status(), StatusCode::ACCEPTED);
    let job: Value = started.json().await.unwrap();
    let job_id = job["id"].as_str().unwrap().to_owned();
    let (status, seen) = call(
        &http,
        &b,
        &alice,
        reqwest::Method::GET,
        &format!("/api/bulk/{job_id}"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{seen}");
    assert_eq!(
        (seen["state"].as_str(), seen["total"].as_u64()),
        (Some("running"), Some(30))
    );
    // Another user finds no such job, on either broker.
    let bob = login(&http, &b, "bob").await;
    for base in [&a, &b] {
        let (status, _) = call(
            &http,
            base,
            &bob,
            reqwest::Method::POST,
            &format!("/api/bulk/{job_id}/cancel"),
            None,
        )
        .await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }
    eventually("an id of the job has been sent", || {
        let hits = hits.clone();
        async move {
            hits.lock()
                .unwrap()
                .iter()
                .any(|p| p.starts_with("/companies/"))
        }
    })
    .await;
    let (status, cancelled) = call(
        &http,
        &b,
        &alice,
        reqwest::Method::POST,
        &format!("/api/bulk/{job_id}/cancel"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{cancelled}");
    // Polled on A, which runs it, for up to 20 s (a liveness bound).
    let mut last = Value::Null;
    for _ in 0..200 {
        let path = format!("/api/bulk/{job_id}");
        last = call(&http, &a, &alice, reqwest::Method::GET, &path, None)
            .await
            .1;
        if last["state"] == "cancelled" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        last["state"], "cancelled",
        "the job, run on A, stopped: {last}"
    );
    let sent_ids = hits
        .lock()
        .unwrap()
        .iter()
        .filter(|p| p.starts_with("/companies/"))
        .count();
    let started = usize::try_from(last["started"].as_u64().unwrap()).unwrap();
    assert!(started < 30, "cancelled before its end: {last}");
    assert_eq!(
        sent_ids, started,
        "every id counted as started was sent, no other: {last}"
    );
    assert_eq!(
        last["not_started"].as_u64().unwrap(),
        30 - last["started"].as_u64().unwrap()
    );
    assert_eq!(last["done"], last["started"], "{last}");
    // B sees what A recorded.
    let (_, on_b) = call(
        &http,
        &b,
        &alice,
        reqwest::Method::GET,
        &format!("/api/bulk/{job_id}"),
        None,
    )
    .await;
    assert_eq!(on_b, last);

    // One audit log: both brokers' requests, in one chain.
    let store = sqlx::PgPool::connect(&store_url).await.unwrap();
    let intents: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM portcullis_audit_records WHERE kind = 'intent'")
            .fetch_one(&store)
            .await
            .unwrap();
    assert_eq!(
        usize::try_from(intents).unwrap(),
        3 + started,
        "o/1 on B, o/2 and o/3 on A, the bulk ids"
    );
    store.close().await;
    let report = portcullis::audit::verify_database(&store_url, &[], &[])
        .await
        .unwrap()
        .unwrap_or_else(|violation| panic!("the shared chain does not verify: {violation:?}"));
    assert!(
        report.records >= u64::try_from(intents).unwrap(),
        "{report:?}"
    );

    // The broker running a job dies (kill -9) mid-run: nothing resumes the job elsewhere;
    // on B it reads as interrupted, saying what was never sent and what is in doubt.
    let ids: Vec<String> = (0..20).map(|n| format!("d{n}")).collect();
    let started = http
        .post(format!("{a}/api/bulk"))
        .bearer_auth(&alice)
        .json(&json!({
            "method": "POST", "path_template": "/proxy/eu/orders/deliveries/{id}",
            "ids": ids, "concurrency": 1, "rate_per_second": 1,
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(started.status(), StatusCode::ACCEPTED);
    let job_id = started.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let deliveries = |hits: &Arc<Mutex<Vec<String>>>| {
        hits.lock()
            .unwrap()
            .iter()
            .filter(|p| p.starts_with("/deliveries/"))
            .count()
    };
    eventually("an id of the second job has been sent", || {
        let hits = hits.clone();
        async move { deliveries(&hits) > 0 }
    })
    .await;
    broker_a.kill().await.unwrap();
    broker_a.wait().await.unwrap();
    // The runner's heartbeat goes stale after 30 s: polled on B for up to 90 s.
    let mut view = Value::Null;
    for _ in 0..180 {
        let path = format!("/api/bulk/{job_id}");
        view = call(&http, &b, &alice, reqwest::Method::GET, &path, None)
            .await
            .1;
        if view["state"] == "interrupted" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(view["state"], "interrupted", "{view}");
    let (done, started) = (
        view["done"].as_u64().unwrap(),
        view["started"].as_u64().unwrap(),
    );
    let in_doubt = view["in_doubt"].as_array().unwrap().len() as u64;
    let never_sent = view["never_sent"].as_array().unwrap();
    assert_eq!(done + in_doubt, started, "{view}");
    assert_eq!(started + never_sent.len() as u64, 20, "{view}");
    assert!(
        !never_sent.is_empty() && never_sent[0] == json!(format!("d{started}")),
        "{view}"
    );
    let sent = deliveries(&hits) as u64;
    assert!(done <= sent && sent <= started, "{sent} sent: {view}");
    // Cancelling it now changes nothing: it is over.
    let path = format!("/api/bulk/{job_id}/cancel");
    let (status, after) = call(&http, &b, &alice, reqwest::Method::POST, &path, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(after["state"], "interrupted");

    let _ = std::fs::remove_dir_all(&dir);
    drop((_broker_b, _proxy_1, _proxy_2));
    drop_database(&admin_url, &store_url).await;
}
