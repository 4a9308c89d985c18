//! End-to-end tests of `examples/access-broker`: the broker and two region proxies started
//! as processes on 127.0.0.1, people logging in against a real slapd (started by
//! `scripts/with-services`), and real upstream HTTP servers behind the region proxies.
#![cfg(all(
    feature = "gate",
    feature = "axum",
    feature = "ldap",
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
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::HeaderMap;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

mod common;
use common::{env, example_binary};

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

/// What an upstream saw of one request.
#[derive(Debug, Clone)]
struct Hit {
    method: String,
    path: String,
    user: String,
    headers: HeaderMap,
    body: Vec<u8>,
    /// Intents in the audit log when the request arrived.
    intents_before: i64,
}

#[derive(Clone)]
struct Upstream {
    hits: Arc<Mutex<Vec<Hit>>>,
    audit: Option<PathBuf>,
}

async fn count_intents(audit: &Path) -> i64 {
    let url = format!("sqlite://{}?mode=ro", audit.display());
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    let (n,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM portcullis_audit_records WHERE kind = 'intent'")
            .fetch_one(&pool)
            .await
            .unwrap();
    pool.close().await;
    n
}

async fn upstream_handler(
    State(up): State<Upstream>,
    request: Request,
) -> (axum::http::StatusCode, axum::Json<Value>) {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, 1 << 20).await.unwrap().to_vec();
    let intents_before = match &up.audit {
        Some(path) => count_intents(path).await,
        None => 0,
    };
    let user = parts
        .headers
        .get("x-forwarded-user")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let hit = Hit {
        method: parts.method.to_string(),
        path: parts
            .uri
            .path_and_query()
            .map(ToString::to_string)
            .unwrap_or_default(),
        user: user.clone(),
        headers: parts.headers.clone(),
        body: body.clone(),
        intents_before,
    };
    up.hits.lock().unwrap().push(hit);
    // A service that refuses the caller itself, as a service behind the broker may.
    let status = if parts.uri.path().contains("unauthorized") {
        axum::http::StatusCode::UNAUTHORIZED
    } else if parts.uri.path().contains("fail") {
        axum::http::StatusCode::INTERNAL_SERVER_ERROR
    } else {
        axum::http::StatusCode::OK
    };
    (
        status,
        axum::Json(json!({ "user": user, "path": parts.uri.path(), "bytes": body.len() })),
    )
}

async fn serve(router: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    format!("http://{address}")
}

async fn upstream(audit: Option<PathBuf>) -> (String, Arc<Mutex<Vec<Hit>>>) {
    let hits = Arc::new(Mutex::new(Vec::new()));
    let router = axum::Router::new()
        .fallback(upstream_handler)
        .with_state(Upstream {
            hits: hits.clone(),
            audit,
        });
    (serve(router).await, hits)
}

/// What the broker sent towards a region: recorded, then passed on unchanged.
#[derive(Debug, Clone)]
struct Sent {
    method: reqwest::Method,
    path: String,
    token: String,
    body: Vec<u8>,
}

/// A relay between the broker and a region proxy, to capture broker tokens in flight.
async fn relay(to: String) -> (String, Arc<Mutex<Vec<Sent>>>) {
    let seen: Arc<Mutex<Vec<Sent>>> = Arc::default();
    let record = seen.clone();
    let http = reqwest::Client::new();
    let router = axum::Router::new().fallback(move |request: Request| {
        let record = record.clone();
        let http = http.clone();
        let to = to.clone();
        async move {
            let (parts, body) = request.into_parts();
            let body = axum::body::to_bytes(body, 1 << 20).await.unwrap().to_vec();
            let path = parts.uri.path_and_query().unwrap().to_string();
            let token = parts
                .headers
                .get("x-broker-token")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            let method = reqwest::Method::from_bytes(parts.method.as_str().as_bytes()).unwrap();
            record.lock().unwrap().push(Sent {
                method: method.clone(),
                path: path.clone(),
                token: token.clone(),
                body: body.clone(),
            });
            let mut headers = reqwest::header::HeaderMap::new();
            for (name, value) in &parts.headers {
                if !["host", "content-length", "connection"].contains(&name.as_str()) {
                    headers.append(
                        reqwest::header::HeaderName::from_bytes(name.as_str().as_bytes()).unwrap(),
                        reqwest::header::HeaderValue::from_bytes(value.as_bytes()).unwrap(),
                    );
                }
            }
            let answer = http
                .request(method, format!("{to}{path}"))
                .headers(headers)
                .body(body)
                .send()
                .await
                .unwrap();
            let status = answer.status().as_u16();
            let bytes = answer.bytes().await.unwrap();
            (
                axum::http::StatusCode::from_u16(status).unwrap(),
                bytes.to_vec(),
            )
        }
    });
    (serve(router).await, seen)
}

struct Deployment {
    _children: Vec<Child>,
    base: String,
    dir: PathBuf,
    http: reqwest::Client,
    eu_proxy: String,
    us_proxy: String,
    eu_hits: Arc<Mutex<Vec<Hit>>>,
    us_hits: Arc<Mutex<Vec<Hit>>>,
    sent: Arc<Mutex<Vec<Sent>>>,
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

impl Deployment {
    async fn start(tag: &str, audit_url: &str) -> Deployment {
        let dir = std::env::temp_dir().join(format!("access-broker-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let audit_file = audit_url
            .strip_prefix("sqlite://")
            .map(|file| dir.join(file));
        let (eu_upstream, eu_hits) = upstream(audit_file.clone()).await;
        let (us_upstream, us_hits) = upstream(audit_file).await;
        let (broker_port, eu_port, us_port) = (free_port(), free_port(), free_port());
        let eu_proxy = format!("http://127.0.0.1:{eu_port}");
        let (relay_url, sent) = relay(eu_proxy.clone()).await;
        let jwks = format!("http://127.0.0.1:{broker_port}/.well-known/jwks.json");
        let config = format!(
            r#"
[broker]
listen = "127.0.0.1:{broker_port}"
audit_url = "{audit_url}"
max_body_bytes = 4096
audit_groups = ["platform"]

{directory}
[broker.regions.eu]
url = "{relay_url}"
[broker.regions.us]
url = "http://127.0.0.1:{us_port}"

[[broker.grants]]
groups = ["platform"]
region = "*"
service = "*"
methods = ["*"]

[[broker.grants]]
groups = ["deployers"]
region = "eu"
service = "orders"
methods = ["GET"]

[[region]]
name = "eu"
listen = "127.0.0.1:{eu_port}"
broker_jwks_url = "{jwks}"
max_body_bytes = 4096
[region.services]
orders = "{eu_upstream}"

[[region]]
name = "us"
listen = "127.0.0.1:{us_port}"
broker_jwks_url = "{jwks}"
[region.services]
billing = "{us_upstream}"
"#,
            directory = ldap_directory(),
        );
        let file = dir.join("access-broker.toml");
        std::fs::write(&file, config).unwrap();
        let file = file.to_str().unwrap();
        let children = vec![
            start(&["region-proxy", "--config", file, "--region", "eu"], &dir).await,
            start(&["region-proxy", "--config", file, "--region", "us"], &dir).await,
            start(&["broker", "--config", file], &dir).await,
        ];
        Deployment {
            _children: children,
            base: format!("http://127.0.0.1:{broker_port}"),
            dir,
            http: reqwest::Client::new(),
            eu_proxy,
            us_proxy: format!("http://127.0.0.1:{us_port}"),
            eu_hits,
            us_hits,
            sent,
        }
    }

    async fn login(&self, user: &str) -> String {
        let answer: Value = self
            .http
            .post(format!("{}/login", self.base))
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
        &self,
        token: &str,
        method: &str,
        path: &str,
        body: &[u8],
    ) -> (StatusCode, Value) {
        let response = self
            .http
            .request(
                reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
                format!("{}{path}", self.base),
            )
            .bearer_auth(token)
            .body(body.to_vec())
            .send()
            .await
            .unwrap();
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn audit(&self) -> Vec<Value> {
        let url = format!("sqlite://{}?mode=ro", self.dir.join("audit.db").display());
        let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
        let rows: Vec<(String,)> =
            sqlx::query_as("SELECT line FROM portcullis_audit_records ORDER BY seq")
                .fetch_all(&pool)
                .await
                .unwrap();
        pool.close().await;
        rows.into_iter()
            .map(|(line,)| serde_json::from_str::<Value>(&line).unwrap()["event"].clone())
            .collect()
    }
}

#[tokio::test]
async fn brokers_audited_requests_through_region_proxies_that_trust_nothing_else() {
    let _ = portcullis_test_support::service_or_skip!("PORTCULLIS_TEST_LDAP_URL");
    let d = Deployment::start("e2e", "sqlite://audit.db").await;

    // LDAP login: alice (deployers, platform), bob (deployers), dave (no groups).
    let alice = d.login("alice").await;
    let bob = d.login("bob").await;
    let dave = d.login("dave").await;
    let wrong = d
        .http
        .post(format!("{}/login", d.base))
        .json(&json!({"username": "alice", "password": "guess"}))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);

    // Allowed: through the eu proxy to the orders service, as alice, recorded first.
    let (status, answer) = d
        .call(&alice, "GET", "/proxy/eu/orders/orders/42?full=1", b"")
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["user"], "alice");
    {
        let hits = d.eu_hits.lock().unwrap();
        assert_eq!(hits.len(), 1);
        assert_eq!(
            (hits[0].method.as_str(), hits[0].path.as_str()),
            ("GET", "/orders/42?full=1")
        );
        assert_eq!(hits[0].user, "alice");
        assert!(
            hits[0].intents_before >= 1,
            "the intent was durable before forwarding"
        );
        assert!(!hits[0].headers.contains_key("x-broker-token"));
        assert!(!hits[0].headers.contains_key("authorization"));
    }
    let (status, _) = d
        .call(
            &alice,
            "POST",
            "/proxy/us/billing/invoices",
            br#"{"amount": 10}"#,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(d.us_hits.lock().unwrap()[0].body, br#"{"amount": 10}"#);

    // bob may only GET eu/orders; dave nothing. Refusals are not forwarded.
    let (status, _) = d.call(&bob, "GET", "/proxy/eu/orders/orders/1", b"").await;
    assert_eq!(status, StatusCode::OK);
    let (status, answer) = d
        .call(&bob, "DELETE", "/proxy/eu/orders/orders/1", b"")
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{answer}");
    let (status, _) = d.call(&bob, "GET", "/proxy/us/billing/invoices", b"").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = d.call(&dave, "GET", "/proxy/eu/orders/orders/1", b"").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(d.eu_hits.lock().unwrap().len(), 2);
    assert_eq!(d.us_hits.lock().unwrap().len(), 1);

    // Bad input: refused with a reason, audited as denied, never forwarded.
    // Sent raw: an HTTP client would normalise `..` and `%2e%2e` away before sending.
    for (path, want) in [
        ("/proxy/eu/orders/a/../../admin", "400"),
        ("/proxy/eu/orders/a/%2e%2e/admin", "400"),
        ("/proxy/eu/orders/a%2fb", "400"),
        ("/proxy/eu/orders/a%5cb", "400"),
        ("/proxy/eu/orders/a%252fb", "400"),
        ("/proxy/eu/orders//etc/passwd", "400"),
        ("/proxy/eu/orders/a%00b", "400"),
        ("/proxy/eu/orders/a%zz", "400"),
        ("/proxy/eu/orders/a%2", "400"),
        ("/proxy/eu/orders/a\\b", "400"),
        ("/proxy/eu/orders/%2E", "400"),
        ("/proxy/e%75/orders/a", "400"),
        ("http://127.0.0.1/proxy/eu/orders/a", "400"),
        ("/proxy/nowhere/orders/a", "404"),
    ] {
        let raw = raw_get(&d.base, path, &alice).await;
        assert!(
            raw.starts_with(&format!("HTTP/1.1 {want}")),
            "{path}: {raw}"
        );
    }
    let spoofed = d
        .http
        .get(format!("{}/proxy/eu/orders/x", d.base))
        .bearer_auth(&alice)
        .header("x-broker-token", "forged")
        .send()
        .await
        .unwrap();
    assert_eq!(spoofed.status(), StatusCode::BAD_REQUEST);
    let (status, _) = d
        .call(&alice, "POST", "/proxy/eu/orders/upload", &vec![b'x'; 5000])
        .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(
        d.eu_hits.lock().unwrap().len(),
        2,
        "nothing bad was forwarded"
    );

    // Hop-by-hop headers do not cross; end-to-end ones do.
    let response = d
        .http
        .get(format!("{}/proxy/eu/orders/h", d.base))
        .bearer_auth(&alice)
        .header("connection", "x-hop")
        .header("x-hop", "1")
        .header("x-trace", "t-1")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    {
        let hits = d.eu_hits.lock().unwrap();
        let last = hits.last().unwrap();
        assert!(!last.headers.contains_key("x-hop"));
        assert_eq!(last.headers["x-trace"], "t-1");
    }

    // The region proxy trusts nothing but fresh broker tokens for its region and request.
    let direct = d
        .http
        .get(format!("{}/orders/1", d.eu_proxy))
        .send()
        .await
        .unwrap();
    assert_eq!(direct.status(), StatusCode::UNAUTHORIZED);
    let captured = d.sent.lock().unwrap().last().unwrap().clone();
    let replay = |token: &str, path: &str, body: &[u8]| {
        d.http
            .request(captured.method.clone(), format!("{}{path}", d.eu_proxy))
            .header("x-broker-token", token.to_owned())
            .body(body.to_vec())
            .send()
    };
    let replayed = replay(&captured.token, &captured.path, &captured.body)
        .await
        .unwrap();
    assert_eq!(replayed.status(), StatusCode::UNAUTHORIZED);
    assert!(replayed.text().await.unwrap().contains("already used"));
    let tampered = replay(&captured.token, "/orders/admin", &captured.body)
        .await
        .unwrap();
    assert_eq!(tampered.status(), StatusCode::UNAUTHORIZED);
    assert!(tampered.text().await.unwrap().contains("does not match"));
    // A token whose claims were edited (another user) no longer verifies.
    let parts: Vec<&str> = captured.token.split('.').collect();
    use base64::Engine as _;
    let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let claims = String::from_utf8(engine.decode(parts[1]).unwrap()).unwrap();
    let edited = claims.replace("\"sub\":\"alice\"", "\"sub\":\"mallory\"");
    assert_ne!(claims, edited);
    let forged = format!("{}.{}.{}", parts[0], engine.encode(edited), parts[2]);
    let forged = replay(&forged, &captured.path, &captured.body)
        .await
        .unwrap();
    assert_eq!(forged.status(), StatusCode::UNAUTHORIZED);
    assert!(forged.text().await.unwrap().contains("not valid"));
    // A token for eu is worth nothing in another region (its audience is eu).
    let us_hits_before = d.us_hits.lock().unwrap().len();
    let elsewhere = d
        .http
        .request(
            captured.method.clone(),
            format!("{}{}", d.us_proxy, captured.path),
        )
        .header("x-broker-token", captured.token.clone())
        .body(captured.body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(elsewhere.status(), StatusCode::UNAUTHORIZED);
    assert!(
        elsewhere.text().await.unwrap().contains("InvalidAudience"),
        "refused for its audience"
    );
    assert_eq!(d.us_hits.lock().unwrap().len(), us_hits_before);
    assert_eq!(
        d.eu_hits.lock().unwrap().len(),
        3,
        "no replay reached the service"
    );

    // The audit log tells the whole story: intents with outcomes, refusals as denials.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let events = d.audit().await;
    let of = |kind: &str| events.iter().filter(|e| e["kind"] == kind).count();
    assert_eq!(of("intent"), 4, "{events:#?}");
    assert_eq!(of("outcome"), 4, "{events:#?}");
    let denials: Vec<&Value> = events
        .iter()
        .filter(|e| e["kind"] == "decision" && e["decision"]["effect"] == "deny")
        .collect();
    assert!(denials.len() >= 11, "{denials:#?}");
    assert!(denials.iter().any(|e| {
        e["decision"]["reason"]
            .as_str()
            .unwrap()
            .contains("x-broker-token")
    }));
    // A refused absolute-form URL is recorded as sent, not cut down to its path.
    let absolute = denials
        .iter()
        .find(|e| {
            e["decision"]["reason"]
                .as_str()
                .unwrap()
                .contains("absolute")
        })
        .unwrap();
    assert_eq!(
        absolute["request"]["target"], "http://127.0.0.1/proxy/eu/orders/a",
        "{absolute:#}"
    );
    assert_eq!(absolute["resource"]["id"], "eu/orders");
    let outcome = events.iter().find(|e| e["kind"] == "outcome").unwrap();
    assert!(
        outcome["outcome"]["detail"]
            .as_str()
            .unwrap()
            .starts_with("HTTP 200")
    );
    // Each intent names its broker token, so the region's token and the record match up.
    let jti = serde_json::from_str::<Value>(&claims).unwrap()["jti"].clone();
    let token_ids: Vec<&Value> = events
        .iter()
        .filter(|e| e["kind"] == "intent")
        .map(|e| &e["request"]["parameters"]["token_id"])
        .collect();
    assert_eq!(
        token_ids.iter().filter(|id| ***id == jti).count(),
        1,
        "{jti} in {token_ids:?}"
    );
    let intent = events.iter().find(|e| e["kind"] == "intent").unwrap();
    assert_eq!(intent["actor"]["subject"], "alice");
    assert_eq!(intent["resource"]["id"], "eu/orders");
    assert_eq!(
        intent["request"]["parameters"]["path"],
        "/orders/orders/42?full=1"
    );

    // The audit API: platform members see everyone, others only themselves.
    let get = |token: String, query: &str| {
        let http = d.http.clone();
        let url = format!("{}/api/audit{query}", d.base);
        async move {
            let response = http.get(url).bearer_auth(token).send().await.unwrap();
            let status = response.status();
            (
                status,
                response.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };
    let (status, page) = get(bob.clone(), "").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let rows = page["records"].as_array().unwrap();
    assert!(rows.iter().all(|r| r["user"] == "bob"), "{page}");
    assert_eq!(
        rows.len(),
        3,
        "bob's GET, DELETE and billing attempts: {page}"
    );
    assert_eq!(
        get(bob.clone(), "?user=alice").await.0,
        StatusCode::FORBIDDEN
    );
    let (_, denied) = get(alice.clone(), "?status=denied&user=bob").await;
    assert_eq!(denied["records"].as_array().unwrap().len(), 2, "{denied}");
    // Paged one row at a time, following the cursor, the same rows come back, newest first
    // (the default) or oldest first: outcome records and rows the filter drops take no
    // place in a page.
    for filter in ["status=denied&user=bob", "user=alice", "status=denied"] {
        let (_, newest) = get(alice.clone(), &format!("?{filter}")).await;
        assert_eq!(newest["order"], "newest", "{newest}");
        let newest: Vec<Value> = newest["records"].as_array().unwrap().clone();
        let (_, oldest) = get(alice.clone(), &format!("?{filter}&order=oldest")).await;
        let oldest: Vec<Value> = oldest["records"].as_array().unwrap().clone();
        assert!(newest.len() >= 2, "{filter}: {newest:?}");
        let seqs = |rows: &[Value]| rows.iter().map(|r| r["seq"].as_u64().unwrap()).collect();
        let newest_seqs: Vec<u64> = seqs(&newest);
        assert!(
            newest_seqs.windows(2).all(|w| w[0] > w[1]),
            "{filter}: newest first: {newest_seqs:?}"
        );
        let mut reversed = oldest.clone();
        reversed.reverse();
        assert_eq!(seqs(&reversed), newest_seqs, "{filter}");
        for (order, cursor, next, whole) in [
            ("newest", "before", "next_before", &newest),
            ("oldest", "after", "next_after", &oldest),
        ] {
            let mut paged = Vec::new();
            let mut at: Option<u64> = None;
            loop {
                let position = at.map(|a| format!("&{cursor}={a}")).unwrap_or_default();
                let (status, page) = get(
                    alice.clone(),
                    &format!("?{filter}&order={order}&limit=1{position}"),
                )
                .await;
                assert_eq!(status, StatusCode::OK, "{page}");
                let rows = page["records"].as_array().unwrap();
                assert!(rows.len() <= 1, "{page}");
                paged.extend(rows.iter().map(|r| r["id"].clone()));
                match page[next].as_u64() {
                    Some(n) => {
                        assert_eq!(rows.len(), 1, "a page with more to come is full: {page}");
                        at = Some(n);
                    }
                    None => break,
                }
                assert!(paged.len() <= whole.len() + 1, "paging does not end");
            }
            let ids: Vec<Value> = whole.iter().map(|r| r["id"].clone()).collect();
            assert_eq!(paged, ids, "{filter} {order}");
        }
    }
    // A cursor of the other order is refused, not silently read the wrong way.
    assert_eq!(
        get(alice.clone(), "?after=1").await.0,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        get(alice.clone(), "?order=oldest&before=9").await.0,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        get(alice.clone(), "?order=sideways").await.0,
        StatusCode::BAD_REQUEST
    );
    // Retry is offered only where it can succeed, and otherwise says why not.
    let (_, bobs) = get(bob.clone(), "").await;
    for row in bobs["records"].as_array().unwrap() {
        let denied = row["decision"]["effect"] == "deny";
        assert_eq!(row["retry"]["possible"], !denied, "{row}");
        if denied {
            assert!(
                row["retry"]["reason"]
                    .as_str()
                    .unwrap()
                    .starts_with("no grant lets you send"),
                "{row}"
            );
        }
    }
    // alice may do what bob was refused, so she may retry his refusal as herself; a
    // refusal of bad input would be refused again, whoever sent it.
    let (_, bob_denied) = get(alice.clone(), "?user=bob&status=denied").await;
    assert!(
        bob_denied["records"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["retry"]["possible"] == true),
        "{bob_denied}"
    );
    let (_, alice_denied) = get(alice.clone(), "?user=alice&status=denied").await;
    for row in alice_denied["records"].as_array().unwrap() {
        assert_eq!(row["retry"]["possible"], false, "{row}");
        assert!(
            row["retry"]["reason"]
                .as_str()
                .unwrap()
                .contains("bad input"),
            "{row}"
        );
    }
    let (_, billing) = get(alice.clone(), "?region=us&service=billing&status=succeeded").await;
    let billing = billing["records"].as_array().unwrap();
    assert_eq!(billing.len(), 1, "{billing:?}");
    assert!(
        billing[0]["outcome"]["detail"]
            .as_str()
            .unwrap()
            .starts_with("HTTP 200")
    );

    // Retry: the same request again, as the caller, freshly authorized and audited.
    let original = billing[0]["id"].as_str().unwrap().to_owned();
    let retried = d
        .http
        .post(format!("{}/api/audit/{original}/retry", d.base))
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap();
    assert_eq!(retried.status(), StatusCode::OK);
    {
        let hits = d.us_hits.lock().unwrap();
        assert_eq!(hits.len(), 2);
        assert_eq!(hits[1].body, br#"{"amount": 10}"#);
        assert_eq!(hits[1].path, "/invoices");
    }
    let (_, again) = get(alice.clone(), "?region=us&service=billing").await;
    let newest = again["records"][0].clone();
    assert_eq!(newest["retry_of"], original.as_str(), "{again}");
    // The body kept for that retry is sealed: neither the stored records nor the audit
    // API show it, yet the broker (holding the key file it made) could send it again.
    let stored: Vec<String> = d.audit().await.iter().map(Value::to_string).collect();
    let kept: Vec<&String> = stored
        .iter()
        .filter(|e| e.contains("body_sealed"))
        .collect();
    assert!(
        kept.len() >= 2,
        "the original and its retry keep their body"
    );
    let encoded = {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(br#"{"amount": 10}"#)
    };
    let shown = again.to_string();
    for text in stored.iter().chain([&shown]) {
        assert!(!text.contains("amount"), "a kept body in clear: {text}");
        assert!(
            !text.contains(encoded.trim_end_matches('=')),
            "a kept body merely encoded: {text}"
        );
    }
    assert_eq!(
        std::fs::metadata(d.dir.join("retry-bodies.key"))
            .unwrap()
            .len(),
        32
    );
    // Someone else's record is not theirs to see or retry; a refused one is refused again.
    let theirs = d
        .http
        .post(format!("{}/api/audit/{original}/retry", d.base))
        .bearer_auth(&bob)
        .send()
        .await
        .unwrap();
    assert_eq!(theirs.status(), StatusCode::NOT_FOUND);
    let (_, bobs) = get(bob.clone(), "?status=denied").await;
    let refused = bobs["records"][0]["id"].as_str().unwrap().to_owned();
    let again = d
        .http
        .post(format!("{}/api/audit/{refused}/retry", d.base))
        .bearer_auth(&bob)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::FORBIDDEN);

    // A service's own 401 comes back marked as the service's, so that a client can tell it
    // from the broker's (whose 401 means the session is over), whatever the service sent.
    let theirs = d
        .http
        .get(format!("{}/proxy/eu/orders/unauthorized", d.base))
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap();
    assert_eq!(theirs.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(theirs.headers()["x-broker-upstream"], "1");
    let ours = d
        .http
        .get(format!("{}/proxy/eu/orders/1", d.base))
        .bearer_auth("not-a-session")
        .send()
        .await
        .unwrap();
    assert_eq!(ours.status(), StatusCode::UNAUTHORIZED);
    assert!(!ours.headers().contains_key("x-broker-upstream"));
    // The browser's icon request is answered, not refused as unauthenticated.
    let icon = d
        .http
        .get(format!("{}/favicon.ico", d.base))
        .send()
        .await
        .unwrap();
    assert_eq!(icon.status(), StatusCode::OK);
    assert_eq!(icon.headers()["content-type"], "image/svg+xml");
    let _ = std::fs::remove_dir_all(&d.dir);
}

/// A GET sent byte for byte, so `..` reaches the server unnormalised.
async fn raw_get(base: &str, path: &str, token: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let address = base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    answer
}

#[cfg(feature = "postgres")]
#[tokio::test]
async fn audit_log_down_means_503_and_nothing_forwarded() {
    let _ = portcullis_test_support::service_or_skip!("PORTCULLIS_TEST_POSTGRES_URL");
    let _ = portcullis_test_support::service_or_skip!("PORTCULLIS_TEST_LDAP_URL");
    let admin_url = env("PORTCULLIS_TEST_POSTGRES_URL");
    let name = format!("access_broker_audit_{}", std::process::id());
    let admin = sqlx::PgPool::connect(&admin_url).await.unwrap();
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&admin)
        .await
        .unwrap();
    let (base, _) = admin_url.rsplit_once('/').unwrap();
    let d = Deployment::start("down", &format!("{base}/{name}")).await;
    let alice = d.login("alice").await;
    let (status, _) = d.call(&alice, "GET", "/proxy/eu/orders/1", b"").await;
    assert_eq!(status, StatusCode::OK);

    sqlx::query(&format!("DROP DATABASE {name} WITH (FORCE)"))
        .execute(&admin)
        .await
        .unwrap();
    let (status, answer) = d.call(&alice, "GET", "/proxy/eu/orders/2", b"").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{answer}");
    assert_eq!(answer["error"], "audit_unavailable");
    assert_eq!(
        d.eu_hits.lock().unwrap().len(),
        1,
        "nothing forwarded unaudited"
    );
    let _ = std::fs::remove_dir_all(&d.dir);
}

/// Runs the client mode of the binary; its exit status and standard output.
async fn client(args: &[&str], dir: &Path) -> (bool, String) {
    let output = Command::new(binary())
        .args(args)
        .current_dir(dir)
        .env("ACCESS_BROKER_PASSWORD", "alice-password")
        .output()
        .await
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}

#[tokio::test]
async fn bulk_runs_each_id_through_the_gate_and_can_be_cancelled() {
    let _ = portcullis_test_support::service_or_skip!("PORTCULLIS_TEST_LDAP_URL");
    let d = Deployment::start("bulk", "sqlite://audit.db").await;
    let dir = d.dir.to_str().unwrap().to_owned();
    let token_file = d.dir.join("token");
    let token_file = token_file.to_str().unwrap();
    let (ok, _) = client(
        &[
            "login",
            "--url",
            &d.base,
            "--username",
            "alice",
            "--token-file",
            token_file,
        ],
        &d.dir,
    )
    .await;
    assert!(ok, "login through the client");
    let (ok, out) = client(
        &[
            "call",
            "GET",
            "eu/orders/orders/7",
            "--url",
            &d.base,
            "--token-file",
            token_file,
        ],
        &d.dir,
    )
    .await;
    assert!(ok, "{out}");
    assert_eq!(
        serde_json::from_str::<Value>(out.trim()).unwrap()["user"],
        "alice"
    );

    // Four ids, one of which the service fails: three succeed, one is reported failed.
    std::fs::write(d.dir.join("ids.txt"), "# companies\nc1\nc2\nfail3\n\nc4\n").unwrap();
    let (ok, out) = client(
        &[
            "bulk",
            "POST",
            "eu/orders/companies/{id}/flags",
            "--ids-file",
            &format!("{dir}/ids.txt"),
            "--data",
            r#"{"company": "{id}", "flag": "new-ui"}"#,
            "--concurrency",
            "2",
            "--rate",
            "50",
            "--url",
            &d.base,
            "--token-file",
            token_file,
        ],
        &d.dir,
    )
    .await;
    assert!(!ok, "a bulk run with a failure exits with an error");
    let last: Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    assert_eq!(
        (
            last["state"].as_str(),
            last["succeeded"].as_u64(),
            last["failed"].as_u64()
        ),
        (Some("done"), Some(3), Some(1)),
        "{last}"
    );
    let failed: Vec<&Value> = last["results"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["status"] == 500)
        .collect();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0]["id"], "fail3");
    {
        let hits = d.eu_hits.lock().unwrap();
        let bodies: Vec<String> = hits
            .iter()
            .filter(|h| h.path.starts_with("/companies/"))
            .map(|h| String::from_utf8(h.body.clone()).unwrap())
            .collect();
        assert_eq!(bodies.len(), 4);
        assert!(bodies.contains(&r#"{"company": "c2", "flag": "new-ui"}"#.to_owned()));
    }
    // Each id has its own audit intent and outcome.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let events = d.audit().await;
    let bulk_intents = events
        .iter()
        .filter(|e| {
            e["kind"] == "intent"
                && e["request"]["target"]
                    .as_str()
                    .unwrap()
                    .starts_with("/proxy/eu/orders/companies/")
        })
        .count();
    assert_eq!(bulk_intents, 4);

    // A slow job cancelled at once: fewer ids than asked were sent.
    let alice = d.login("alice").await;
    let started: Value = d
        .http
        .post(format!("{}/api/bulk", d.base))
        .bearer_auth(&alice)
        .json(&json!({
            "method": "GET",
            "path_template": "/proxy/eu/orders/slow/{id}",
            "ids": ["a", "b", "c", "d", "e", "f"],
            "rate_per_second": 2,
        }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = started["id"].as_str().unwrap().to_owned();
    let cancel = d
        .http
        .post(format!("{}/api/bulk/{id}/cancel", d.base))
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap();
    assert_eq!(cancel.status(), StatusCode::OK);
    let mut view = Value::Null;
    for _ in 0..100 {
        view = d
            .http
            .get(format!("{}/api/bulk/{id}", d.base))
            .bearer_auth(&alice)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if view["state"] != "running" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(view["state"], "cancelled", "{view}");
    assert!(view["done"].as_u64().unwrap() < 6, "{view}");
    // Someone else's job is not theirs to see.
    let bob = d.login("bob").await;
    let theirs = d
        .http
        .get(format!("{}/api/bulk/{id}", d.base))
        .bearer_auth(&bob)
        .send()
        .await
        .unwrap();
    assert_eq!(theirs.status(), StatusCode::NOT_FOUND);
    // A bad template or id is refused before anything is sent.
    let bad = d
        .http
        .post(format!("{}/api/bulk", d.base))
        .bearer_auth(&alice)
        .json(&json!({"method": "GET", "path_template": "/proxy/eu/orders/{id}", "ids": ["../x"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    let _ = std::fs::remove_dir_all(&d.dir);
}

/// Starts a bulk job as `token`, sending `request_id` as the request's `X-Request-Id`.
async fn start_bulk(d: &Deployment, token: &str, request_id: &str, job: &Value) -> Value {
    let response = d
        .http
        .post(format!("{}/api/bulk", d.base))
        .bearer_auth(token)
        .header("x-request-id", request_id)
        .json(job)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    response.json().await.unwrap()
}

/// `GET` or `POST` on a bulk job: the status and the answer.
async fn bulk_op(d: &Deployment, token: &str, path: &str, post: bool) -> (StatusCode, Value) {
    let url = format!("{}/api/bulk/{path}", d.base);
    let request = if post {
        d.http.post(url)
    } else {
        d.http.get(url)
    };
    let response = request.bearer_auth(token).send().await.unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Issue 30, defect 1: two users sending the same `X-Request-Id` got the same job id, so
/// one's cancel stopped the other's job and an administrator reached only the first.
#[tokio::test]
async fn bulk_job_ids_are_the_brokers_and_each_operation_acts_on_the_callers_own_job() {
    let _ = portcullis_test_support::service_or_skip!("PORTCULLIS_TEST_LDAP_URL");
    let d = Deployment::start("bulk-ids", "sqlite://audit.db").await;
    let (alice, bob) = (d.login("alice").await, d.login("bob").await);
    let job = |prefix: &str| {
        json!({
            "method": "GET",
            "path_template": format!("/proxy/eu/orders/{prefix}/{{id}}"),
            "ids": ["1", "2", "3", "4", "5", "6"],
            "concurrency": 1,
            "rate_per_second": 5,
        })
    };
    // bob starts first, alice second, both with the same request id.
    let bobs = start_bulk(&d, &bob, "same-id-2", &job("bob")).await;
    let alices = start_bulk(&d, &alice, "same-id-2", &job("alice")).await;
    let (bob_job, alice_job) = (
        bobs["id"].as_str().unwrap().to_owned(),
        alices["id"].as_str().unwrap().to_owned(),
    );
    assert_ne!(bob_job, alice_job, "two jobs, two ids");
    for id in [&bob_job, &alice_job] {
        assert!(!id.contains("same-id-2"), "{id} comes from the caller");
        assert!(id.len() >= "bulk-".len() + 32, "{id} is not unguessable");
    }
    // alice cancels hers: hers stops, bob's runs on to its end.
    let (status, cancelled) = bulk_op(&d, &alice, &format!("{alice_job}/cancel"), true).await;
    assert_eq!(status, StatusCode::OK, "{cancelled}");
    assert_eq!(cancelled["id"], alice_job.as_str());
    assert_eq!(cancelled["owner"], "alice");
    assert_eq!(cancelled["request_id"], "same-id-2");
    let mut views = Vec::new();
    for (token, id) in [(&alice, &alice_job), (&bob, &bob_job)] {
        let mut view = Value::Null;
        for _ in 0..100 {
            view = bulk_op(&d, token, id, false).await.1;
            if view["state"] != "running" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        views.push(view);
    }
    assert_eq!(views[0]["state"], "cancelled", "{}", views[0]);
    assert!(views[0]["done"].as_u64().unwrap() < 6, "{}", views[0]);
    assert_eq!(
        views[0]["not_started"].as_u64().unwrap() + views[0]["done"].as_u64().unwrap(),
        6,
        "{}",
        views[0]
    );
    assert_eq!(
        views[1]["state"], "done",
        "bob's job ran to its end: {}",
        views[1]
    );
    assert_eq!(views[1]["succeeded"], 6, "{}", views[1]);
    {
        let hits = d.eu_hits.lock().unwrap();
        let bobs = hits.iter().filter(|h| h.path.starts_with("/bob/")).count();
        assert_eq!(bobs, 6, "every one of bob's ids was sent");
        assert!(
            hits.iter()
                .all(|h| !h.path.starts_with("/bob/") || h.user == "bob")
        );
    }
    // alice administers (she is in audit_groups): she reaches bob's job by its id, the
    // second of the two as well as the first.
    let (status, seen) = bulk_op(&d, &alice, &bob_job, false).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(seen["owner"], "bob");
    // bob administers nothing: alice's job is not his to see or cancel.
    assert_eq!(
        bulk_op(&d, &bob, &alice_job, false).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        bulk_op(&d, &bob, &format!("{alice_job}/cancel"), true)
            .await
            .0,
        StatusCode::NOT_FOUND
    );
    // A third job from bob with the same request id again: yet another id.
    let third = start_bulk(&d, &bob, "same-id-2", &job("bob-again")).await;
    assert_ne!(third["id"], bobs["id"]);
    assert_ne!(third["id"], alices["id"]);
    let _ = std::fs::remove_dir_all(&d.dir);
}

/// Sends `request` on a fresh connection and reads the answer's head (status line and
/// headers), lower-cased.
async fn raw_head(base: &str, request: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let address = base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    // The server may answer (and stop reading) before all of a large body is written.
    let _ = stream.write_all(request).await;
    let mut answer = Vec::new();
    let mut buffer = [0u8; 4096];
    tokio::time::timeout(Duration::from_secs(10), async {
        while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&buffer[..n]),
            }
        }
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&answer).to_ascii_lowercase();
    text.split("\r\n\r\n").next().unwrap_or_default().to_owned()
}

/// Issue 30, defect 5: an answer given before the request's body was read closed the
/// connection without saying so, and a client reusing connections failed its next request.
#[tokio::test]
async fn an_answer_before_the_body_is_read_says_connection_close() {
    let _ = portcullis_test_support::service_or_skip!("PORTCULLIS_TEST_LDAP_URL");
    let d = Deployment::start("close", "sqlite://audit.db").await;
    let alice = d.login("alice").await;
    let body = vec![b'x'; 200_000];
    let post = |path: &str, extra: &str, body: &[u8]| {
        let mut request = format!(
            "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{extra}Content-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        request.extend_from_slice(body);
        request
    };
    let bearer = format!("Authorization: Bearer {alice}\r\n");
    for (base, request, status) in [
        // The region proxy: no broker token, refused before the body is read.
        (&d.eu_proxy, post("/orders/1", "", &body), "401"),
        (&d.eu_proxy, post("/orders/1", "", b"{}"), "401"),
        // The broker: no session; a path refused before the body; a body over the limit.
        (&d.base, post("/proxy/eu/orders/1", "", &body), "401"),
        (
            &d.base,
            post("/proxy/eu/orders/a%2fb", &bearer, &body),
            "400",
        ),
        (&d.base, post("/proxy/eu/orders/1", &bearer, &body), "413"),
    ] {
        let head = raw_head(base, &request).await;
        assert!(head.starts_with(&format!("http/1.1 {status}")), "{head}");
        assert!(
            head.lines().any(|l| l == "connection: close"),
            "an answer with the body unread closes the connection and says so: {head}"
        );
    }
    // A request whose body was read keeps its connection.
    let head = raw_head(&d.base, &post("/proxy/eu/orders/1", &bearer, b"{}")).await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(!head.contains("connection: close"), "{head}");
    // A client that reuses connections gets through a refusal and the request after it.
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(1)
        .build()
        .unwrap();
    for _ in 0..3 {
        let refused = client
            .post(format!("{}/orders/1", d.eu_proxy))
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
        let next = client
            .get(format!("{}/orders/2", d.eu_proxy))
            .send()
            .await
            .expect("the next request on a reused connection");
        assert_eq!(next.status(), StatusCode::UNAUTHORIZED);
    }
    let _ = std::fs::remove_dir_all(&d.dir);
}

/// Quotes `text` for a POSIX shell.
fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// Issue 30, defect 3: after Ctrl-C the CLI's bar jumped to `40/40 (0s left)` and it
/// printed `cancelled: 0 of 40 failed` while the job had done 8; nothing said "cancelling"
/// when stderr was not a terminal; the JSON summary followed the bar on its line.
#[tokio::test]
async fn bulk_cli_after_ctrl_c_shows_what_was_done_failed_and_never_sent() {
    let _ = portcullis_test_support::service_or_skip!("PORTCULLIS_TEST_LDAP_URL");
    let d = Deployment::start("ctrl-c", "sqlite://audit.db").await;
    let dir = d.dir.to_str().unwrap().to_owned();
    let token_file = format!("{dir}/token");
    let (ok, _) = client(
        &[
            "login",
            "--url",
            &d.base,
            "--username",
            "alice",
            "--token-file",
            &token_file,
        ],
        &d.dir,
    )
    .await;
    assert!(ok);
    let ids: String = (1..=40).map(|n| format!("c{n}\n")).collect();
    std::fs::write(d.dir.join("ids.txt"), ids).unwrap();
    let hits_of = |prefix: &'static str| {
        let hits = d.eu_hits.clone();
        move || {
            hits.lock()
                .unwrap()
                .iter()
                .filter(|h| h.path.starts_with(prefix))
                .count()
        }
    };
    let args = |prefix: &str| -> Vec<String> {
        let template = format!("eu/orders/{prefix}/{{id}}");
        let ids = format!("{dir}/ids.txt");
        let args: [&str; 13] = [
            "bulk",
            "GET",
            &template,
            "--ids-file",
            &ids,
            "--concurrency",
            "1",
            "--rate",
            "5",
            "--url",
            &d.base,
            "--token-file",
            &token_file,
        ];
        args.map(str::to_owned).to_vec()
    };
    // The numbers in the summary line `cancelled: N of 40 sent (…), M never sent`.
    let summary_of = |text: &str| -> (u64, u64) {
        let line = text
            .lines()
            .find_map(|l| l.find("cancelled: ").map(|at| l[at..].trim_end()))
            .unwrap_or_else(|| panic!("no summary line in {text:?}"));
        let sent: u64 = line["cancelled: ".len()..]
            .split(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert!(line.contains(" of 40 sent ("), "{line}");
        let never: u64 = line
            .rsplit(", ")
            .next()
            .unwrap()
            .strip_suffix(" never sent")
            .unwrap_or_else(|| panic!("{line}"))
            .parse()
            .unwrap();
        (sent, never)
    };

    // stderr a pipe: the bar is hidden, "cancelling…" and the summary still show.
    let piped = Command::new(binary())
        .args(args("piped"))
        .current_dir(&d.dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let sent = hits_of("/piped/");
    eventually("a few ids were sent", || {
        let n = sent();
        async move { n >= 3 }
    })
    .await;
    let pid = piped.id().unwrap().to_string();
    let killed = Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .await
        .unwrap();
    assert!(killed.success());
    let output = tokio::time::timeout(Duration::from_secs(30), piped.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    );
    assert!(!output.status.success(), "a cancelled job is no success");
    assert!(stderr.contains("cancelling…"), "{stderr}");
    assert!(!stderr.contains("40/40"), "{stderr}");
    let last: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(last["state"], "cancelled", "{last}");
    let done = last["done"].as_u64().unwrap();
    assert!((3..40).contains(&done), "{last}");
    assert_eq!(summary_of(&stderr), (done, 40 - done), "{stderr}");
    assert_eq!(last["not_started"], 40 - done, "{last}");
    assert_eq!(sent() as u64, done, "what the job says was sent was sent");
    assert!(
        stderr.contains(&format!("0 failed, {} never sent", 40 - done)),
        "the exit message counts what was never sent: {stderr}"
    );

    // On a terminal (a pty from script(1)), Ctrl-C typed as ^C: the bar stops where the job
    // stopped, and the JSON starts on a line of its own.
    let command: Vec<String> = std::iter::once(binary().to_str().unwrap().to_owned())
        .chain(args("tty"))
        .map(|a| shell_quote(&a))
        .collect();
    let mut tty = Command::new("script")
        .args([
            "-qefc",
            &format!("stty cols 120 rows 40; exec {}", command.join(" ")),
            "/dev/null",
        ])
        .current_dir(&d.dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let sent = hits_of("/tty/");
    eventually("a few ids were sent", || {
        let n = sent();
        async move { n >= 3 }
    })
    .await;
    {
        use tokio::io::AsyncWriteExt;
        let stdin = tty.stdin.as_mut().unwrap();
        stdin.write_all(b"\x03").await.unwrap();
        stdin.flush().await.unwrap();
    }
    let output = tokio::time::timeout(Duration::from_secs(30), tty.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let screen = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(screen.contains("/40"), "the bar was drawn: {screen:?}");
    assert!(screen.contains("cancelling…"), "{screen:?}");
    assert!(!screen.contains("40/40"), "{screen:?}");
    // A line that is the JSON alone: not glued to the end of the bar's line.
    let last: Value = screen
        .split('\n')
        .map(|l| l.trim_end_matches('\r'))
        .filter(|l| l.starts_with("{\""))
        .find_map(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| panic!("the JSON does not start a line of its own: {screen:?}"));
    let done = last["done"].as_u64().unwrap();
    assert_eq!(last["state"], "cancelled", "{last}");
    assert_eq!(summary_of(&screen), (done, 40 - done), "{screen:?}");
    let _ = std::fs::remove_dir_all(&d.dir);
}

/// Polls `check` every 100 ms for up to 15 s.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..150 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting until {what}");
}

/// The text of the element with `id` ("" if it is not there yet).
async fn text_of(browser: &fantoccini::Client, id: &str) -> String {
    match browser.find(fantoccini::Locator::Id(id)).await {
        Ok(element) => element.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

async fn type_into(browser: &fantoccini::Client, id: &str, text: &str) {
    let element = browser.find(fantoccini::Locator::Id(id)).await.unwrap();
    element.send_keys(text).await.unwrap();
}

async fn click(browser: &fantoccini::Client, id: &str) {
    let element = browser.find(fantoccini::Locator::Id(id)).await.unwrap();
    element.click().await.unwrap();
}

/// The rows of the console's audit table, as text.
async fn audit_rows(browser: &fantoccini::Client) -> Vec<String> {
    let mut rows = Vec::new();
    for row in browser
        .find_all(fantoccini::Locator::Css("#audit-rows tr"))
        .await
        .unwrap_or_default()
    {
        rows.push(row.text().await.unwrap_or_default());
    }
    rows
}

/// Sends `path` (in eu/orders) from the console's form and waits for the answer's status.
async fn send_from_form(browser: &fantoccini::Client, path: &str) -> String {
    browser
        .execute(
            "document.getElementById('response-status').textContent = '';",
            vec![],
        )
        .await
        .unwrap();
    let field = browser.find(fantoccini::Locator::Id("path")).await.unwrap();
    field.clear().await.unwrap();
    field.send_keys(path).await.unwrap();
    click(browser, "send").await;
    let mut status = String::new();
    for _ in 0..150 {
        status = text_of(browser, "response-status").await;
        if !status.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!status.is_empty(), "no answer shown for {path}");
    status
}

/// The console's layout, measured in the page.
const MEASURE: &str = r##"
const rows = [...document.querySelectorAll("#audit-rows tr")];
const box = (element) => element.getBoundingClientRect();
const label = document.querySelector("label[for=headers]");
return {
  viewport: window.innerWidth,
  scroll_width: document.documentElement.scrollWidth,
  line_height: parseFloat(getComputedStyle(label).lineHeight),
  headers_label_height: box(label).height,
  header_row_height: box(document.querySelector("#audit thead tr")).height,
  table_right: box(document.getElementById("audit")).right,
  numbers: rows.map((r) => r.cells[0].textContent),
  row_heights: rows.map((r) => box(r).height),
  // Cells cut short (an ellipsis) in the columns that must show whole.
  clipped: rows.flatMap((r) => [0, 1, 2, 4].map((i) => r.cells[i])
    .filter((c) => c.scrollWidth > c.clientWidth).map((c) => c.textContent)),
  filter_tops: [...document.querySelectorAll("#audit-filter input, #audit-filter select, #audit-filter button")]
    .map((e) => Math.round(box(e).top)),
  targets: rows.map((r) => r.querySelector("td.target").title),
  badges: rows.map((r) => (r.querySelector(".badge") || {}).textContent || ""),
  retry_buttons: rows.map((r) => r.querySelector("button.retry") !== null),
  no_retry_reasons: rows.map((r) => (r.querySelector(".no-retry") || {}).title || ""),
  column_widths: [...document.querySelectorAll("#audit thead th")].map((th) => box(th).width),
};
"##;

/// The console in headless Chromium, at 1280 pixels: log in, send, read the audit log
/// (newest first, switchable), retry, and the issue 30 fixes: a service's 401 leaves the
/// session alone, rows are numbered 1, 2, 3…, one line each, with status badges, retry
/// offered only where it can succeed. A screenshot is saved and checked.
#[tokio::test]
async fn the_console_page_logs_in_sends_shows_the_audit_log_and_retries() {
    let _ = portcullis_test_support::service_or_skip!("PORTCULLIS_TEST_WEBDRIVER_URL");
    let _ = portcullis_test_support::service_or_skip!("PORTCULLIS_TEST_LDAP_URL");
    use fantoccini::Locator;
    let d = Deployment::start("page", "sqlite://audit.db").await;
    let profile = d.dir.join("chromium-profile");
    let browser = common::chromium(&profile, 1280, 1100).await;

    // Log in with the LDAP password.
    browser.goto(&format!("{}/audit", d.base)).await.unwrap();
    type_into(&browser, "username", "alice").await;
    type_into(&browser, "password", "alice-password").await;
    click(&browser, "login").await;
    eventually("the console shows alice logged in", || async {
        text_of(&browser, "who").await == "logged in as alice"
    })
    .await;

    // Send a request from the Postman-like form and see the service's answer.
    let status = send_from_form(&browser, "orders/77?from=page").await;
    assert!(status.starts_with("200"), "{status}");
    let shown = text_of(&browser, "response-body").await;
    assert!(shown.contains("\"user\": \"alice\""), "{shown}");
    assert_eq!(
        text_of(&browser, "response-origin").await,
        "from the service"
    );

    // It is in the audit log; pressing retry sends it again and adds a row, on top.
    eventually("the request appears in the audit log", || async {
        audit_rows(&browser)
            .await
            .iter()
            .any(|r| r.contains("/proxy/eu/orders/orders/77?from=page") && r.contains("succeeded"))
    })
    .await;
    let before = audit_rows(&browser).await.len();
    let retry = browser
        .find(Locator::Css("#audit-rows tr:first-child button.retry"))
        .await
        .unwrap();
    retry.click().await.unwrap();
    eventually("the retry appears as a new row, newest first", || async {
        let rows = browser
            .find_all(Locator::Css("#audit-rows tr:first-child .tag"))
            .await
            .unwrap_or_default();
        audit_rows(&browser).await.len() > before && !rows.is_empty()
    })
    .await;
    assert_eq!(
        d.eu_hits
            .lock()
            .unwrap()
            .iter()
            .filter(|h| h.path == "/orders/77?from=page")
            .count(),
        2,
        "sent once from the form and once by the retry"
    );

    // Issue 30, defect 2: a service answering 401 is shown as the answer; the session stays.
    let status = send_from_form(&browser, "orders/unauthorized").await;
    assert!(status.starts_with("401"), "{status}");
    assert_eq!(text_of(&browser, "who").await, "logged in as alice");
    assert_eq!(
        text_of(&browser, "response-origin").await,
        "from the service"
    );
    assert!(
        text_of(&browser, "response-body")
            .await
            .contains("/orders/unauthorized")
    );

    // A long path, and a refused one (an encoded slash: bad input, denied).
    let long = format!("orders/{}end", "a-rather-long-segment-name/".repeat(8));
    assert!(send_from_form(&browser, &long).await.starts_with("200"));
    let status = send_from_form(&browser, "a%2fb").await;
    assert!(status.starts_with("400"), "{status}");
    assert_eq!(
        text_of(&browser, "response-origin").await,
        "from the broker"
    );
    eventually("every request shows, with its outcome", || async {
        let rows = audit_rows(&browser).await;
        rows.len() == 5 && rows.iter().all(|r| !r.contains("pending"))
    })
    .await;

    let layout = browser.execute(MEASURE, vec![]).await.unwrap();
    let numbers = |layout: &Value| -> Vec<String> {
        layout["numbers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n.as_str().unwrap().to_owned())
            .collect()
    };
    let targets = |layout: &Value| -> Vec<String> {
        layout["targets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n.as_str().unwrap().to_owned())
            .collect()
    };
    // Issue 30, defect 4: newest first.
    let shown = targets(&layout);
    assert!(shown[0].ends_with("/proxy/eu/orders/a%2fb"), "{shown:?}");
    assert!(
        shown[1].contains("a-rather-long-segment-name/"),
        "{shown:?}"
    );
    assert!(shown[2].ends_with("/orders/unauthorized"), "{shown:?}");
    assert!(shown[4].ends_with("/orders/77?from=page"), "{shown:?}");
    // Rows numbered 1, 2, 3… whatever their audit sequence numbers.
    assert_eq!(numbers(&layout), ["1", "2", "3", "4", "5"], "{layout:#}");
    // Status badges; retry only where it can succeed, and the reason where it cannot.
    assert_eq!(
        layout["badges"],
        json!(["denied", "succeeded", "succeeded", "succeeded", "succeeded"]),
        "{layout:#}"
    );
    assert_eq!(
        layout["retry_buttons"],
        json!([false, true, true, true, true]),
        "{layout:#}"
    );
    // Number, time, user and status show whole; the filter's fields line up.
    assert_eq!(layout["clipped"], json!([]), "{layout:#}");
    let tops = layout["filter_tops"].as_array().unwrap();
    assert!(tops.iter().all(|t| t == &tops[0]), "{layout:#}");
    let reason = layout["no_retry_reasons"][0].as_str().unwrap();
    assert!(reason.contains("bad input"), "{layout:#}");
    // Readable at 1280 pixels: nothing wider than the window, every row one line high (the
    // long path ends in an ellipsis instead of breaking), the Headers label on one line.
    let number = |name: &str| layout[name].as_f64().unwrap();
    assert_eq!(number("viewport"), 1280.0, "{layout:#}");
    assert!(number("scroll_width") <= number("viewport"), "{layout:#}");
    assert!(number("table_right") <= number("viewport"), "{layout:#}");
    let one_line = number("header_row_height") * 1.25;
    for height in layout["row_heights"].as_array().unwrap() {
        assert!(height.as_f64().unwrap() <= one_line, "{layout:#}");
    }
    assert!(
        number("headers_label_height") <= number("line_height") * 1.5,
        "{layout:#}"
    );
    let columns: Vec<f64> = layout["column_widths"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w.as_f64().unwrap())
        .collect();
    assert_eq!(columns.len(), 7, "{layout:#}");
    assert!(
        columns[3] >= 250.0,
        "the request column has room: {layout:#}"
    );

    // The screenshot, for a person to look at, and checked: a PNG of the whole window.
    let png = browser.screenshot().await.unwrap();
    let saved = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("access-broker-console.png");
    std::fs::write(&saved, &png).unwrap();
    let png = std::fs::read(&saved).unwrap();
    assert!(
        png.len() > 10_000,
        "{} is {} bytes",
        saved.display(),
        png.len()
    );
    assert_eq!(
        &png[..8],
        b"\x89PNG\r\n\x1a\n",
        "{} is a PNG",
        saved.display()
    );
    let width = u32::from_be_bytes(png[16..20].try_into().unwrap());
    let height = u32::from_be_bytes(png[20..24].try_into().unwrap());
    assert_eq!(width, 1280, "{}", saved.display());
    assert!(height >= 800, "{}: {width}x{height}", saved.display());

    // The order switches: oldest first, still numbered from 1.
    browser
        .find(Locator::Id("f-order"))
        .await
        .unwrap()
        .select_by_value("oldest")
        .await
        .unwrap();
    eventually("the oldest request comes first", || async {
        let layout = browser.execute(MEASURE, vec![]).await.unwrap();
        targets(&layout)
            .first()
            .is_some_and(|t| t.ends_with("/orders/77?from=page"))
    })
    .await;
    let layout = browser.execute(MEASURE, vec![]).await.unwrap();
    assert_eq!(numbers(&layout), ["1", "2", "3", "4", "5"], "{layout:#}");
    assert!(targets(&layout)[4].ends_with("/proxy/eu/orders/a%2fb"));

    // The broker's own 401 (a session it no longer accepts) does end the session.
    browser
        .execute(
            "sessionStorage.setItem('broker-token', 'not-a-session'); location.reload();",
            vec![],
        )
        .await
        .unwrap();
    eventually("the console logs out on the broker's 401", || async {
        text_of(&browser, "who").await == "not logged in"
    })
    .await;
    browser.close().await.unwrap();
    let _ = std::fs::remove_dir_all(&d.dir);
}
