//! The Duo client against a Duo-compatible server on 127.0.0.1 that checks every signature
//! the way Duo does (its own canonicalisation, written here independently) and scripts
//! allow / deny / waiting→allow / timeout / rate limiting per user.
#![cfg(feature = "duo")]
#![expect(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    reason = "tests: a failed unwrap or index is a failed test"
)]

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_lc_rs::hmac;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use portcullis_approval::duo::decode_response;
use portcullis_approval::{DuoClient, DuoConfig, DuoSignature, FactorOutcome, Prompt};
use serde_json::{Value, json};

const IKEY: &str = "DIXXXXXXXXXXXXXXXXXX";
const SKEY: &str = "deadbeefdeadbeefdeadbeefdeadbeefdeadbeef";

#[derive(Clone, Default)]
struct Duo {
    host: Arc<Mutex<String>>,
    calls: Arc<AtomicUsize>,
    status_polls: Arc<AtomicUsize>,
    rate_limited_once: Arc<AtomicUsize>,
    pushinfo: Arc<Mutex<Vec<String>>>,
    /// txid → user
    txids: Arc<Mutex<HashMap<String, String>>>,
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap();
            out.push(u8::from_str_radix(hex, 16).unwrap());
            i += 3;
        } else {
            out.push(if bytes[i] == b'+' { b' ' } else { bytes[i] });
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

/// Duo's canonical form, rebuilt from the decoded parameters.
fn canon_params(params: &BTreeMap<String, String>) -> String {
    let enc = |s: &str| {
        s.bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect::<String>()
    };
    params
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect::<Vec<_>>()
        .join("&")
}

fn parse(text: &str) -> BTreeMap<String, String> {
    text.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn verify(
    duo: &Duo,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
    params: &BTreeMap<String, String>,
) -> bool {
    let date = headers
        .get("date")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let Some(basic) = auth.strip_prefix("Basic ") else {
        return false;
    };
    let decoded = String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(basic)
            .unwrap(),
    )
    .unwrap();
    let Some((ikey, sig)) = decoded.split_once(':') else {
        return false;
    };
    let canonical = format!(
        "{date}\n{}\n{}\n{path}\n{}",
        method.as_str(),
        duo.host.lock().unwrap().to_lowercase(),
        canon_params(params)
    );
    // Duo accepts either signature: 40 hex digits are SHA-1, 128 are SHA-512.
    let alg = if sig.len() == 40 {
        hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY
    } else {
        hmac::HMAC_SHA512
    };
    let expected = hex::encode(hmac::sign(
        &hmac::Key::new(alg, SKEY.as_bytes()),
        canonical.as_bytes(),
    ));
    ikey == IKEY && expected == sig
}

fn ok(response: Value) -> Response {
    Json(json!({"stat": "OK", "response": response})).into_response()
}

fn fail(status: StatusCode, code: i64, message: &str) -> Response {
    (
        status,
        Json(json!({"stat": "FAIL", "code": code, "message": message})),
    )
        .into_response()
}

async fn post_handler(
    State(duo): State<Duo>,
    uri: Uri,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    duo.calls.fetch_add(1, Ordering::SeqCst);
    let params = parse(std::str::from_utf8(&body).unwrap());
    if !verify(&duo, &method, uri.path(), &headers, &params) {
        return fail(
            StatusCode::UNAUTHORIZED,
            40103,
            "Invalid signature in request credentials",
        );
    }
    let user = params.get("username").cloned().unwrap_or_default();
    match uri.path() {
        "/auth/v2/preauth" => match user.as_str() {
            "bypass" => ok(json!({"result": "allow", "status_msg": "Allowing unknown user"})),
            "locked" => ok(json!({"result": "deny", "status_msg": "Locked out"})),
            "new" => ok(json!({"result": "enroll", "enroll_portal_url": "https://x"})),
            _ => ok(
                json!({"result": "auth", "devices": [{"device": "DP1", "capabilities": ["push"]}]}),
            ),
        },
        "/auth/v2/auth" => {
            if user == "busy" && duo.rate_limited_once.fetch_add(1, Ordering::SeqCst) == 0 {
                return (
                    StatusCode::TOO_MANY_REQUESTS,
                    Json(json!({"stat": "FAIL", "code": 42901, "message": "Too Many Requests"})),
                )
                    .into_response();
            }
            assert_eq!(params["factor"], "push");
            assert_eq!(params["async"], "1");
            duo.pushinfo
                .lock()
                .unwrap()
                .push(params["pushinfo"].clone());
            let txid = format!("tx-{user}-{}", duo.calls.load(Ordering::SeqCst));
            duo.txids.lock().unwrap().insert(txid.clone(), user);
            ok(json!({"txid": txid}))
        }
        _ => fail(StatusCode::NOT_FOUND, 40400, "not found"),
    }
}

async fn status_handler(
    State(duo): State<Duo>,
    uri: Uri,
    method: Method,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    duo.calls.fetch_add(1, Ordering::SeqCst);
    let polls = duo.status_polls.fetch_add(1, Ordering::SeqCst);
    let params = parse(&query.unwrap_or_default());
    if !verify(&duo, &method, uri.path(), &headers, &params) {
        return fail(
            StatusCode::UNAUTHORIZED,
            40103,
            "Invalid signature in request credentials",
        );
    }
    let user = duo
        .txids
        .lock()
        .unwrap()
        .get(&params["txid"])
        .cloned()
        .unwrap_or_default();
    let result = match user.as_str() {
        "approver" | "busy" => "allow",
        "refuser" => "deny",
        "slow" if polls >= 2 => "allow",
        "garbled" => return (StatusCode::OK, "{\"stat\": \"OK\"").into_response(),
        _ => "waiting",
    };
    ok(json!({"result": result, "status": result, "status_msg": "..."}))
}

async fn start() -> (Duo, String) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let host = listener.local_addr().unwrap().to_string();
    let duo = Duo::default();
    *duo.host.lock().unwrap() = host.clone();
    let app = Router::new()
        .route("/auth/v2/preauth", post(post_handler))
        .route("/auth/v2/auth", post(post_handler))
        .route("/auth/v2/auth_status", get(status_handler))
        .with_state(duo.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (duo, host)
}

fn client(host: &str, signature: DuoSignature, skey: &str, timeout: Duration) -> DuoClient {
    let mut config = DuoConfig::new(host, IKEY, skey);
    config.scheme = "http".into();
    config.signature = signature;
    config.poll_interval = Duration::from_millis(100);
    config.timeout = timeout;
    config.push_type = "Deploy approval".into();
    DuoClient::new(config).unwrap()
}

fn prompt() -> Prompt {
    Prompt {
        request_id: "apr_1".into(),
        requester: "alice".into(),
        action: "deploy".into(),
        resource: "env_stage:checkout/prod".into(),
        reason: "ship it & fast".into(),
    }
}

#[tokio::test]
async fn scripted_answers_under_both_signatures() {
    let (duo, host) = start().await;
    for signature in [DuoSignature::HmacSha1, DuoSignature::HmacSha512] {
        let c = client(&host, signature, SKEY, Duration::from_secs(5));
        assert_eq!(c.push("approver", &prompt()).await, FactorOutcome::Allow);
        assert_eq!(c.push("refuser", &prompt()).await, FactorOutcome::Deny);
        assert_eq!(c.push("locked", &prompt()).await, FactorOutcome::Deny);
        assert!(
            matches!(c.push("bypass", &prompt()).await, FactorOutcome::Error(_)),
            "no factor is no approval"
        );
        assert!(matches!(
            c.push("new", &prompt()).await,
            FactorOutcome::Error(_)
        ));
        assert!(matches!(
            c.push("garbled", &prompt()).await,
            FactorOutcome::Error(_)
        ));
    }
    let info = duo.pushinfo.lock().unwrap()[0].clone();
    let info = parse(&info);
    assert_eq!(info["action"], "deploy");
    assert_eq!(info["resource"], "env_stage:checkout/prod");
    assert_eq!(info["requester"], "alice");
    assert_eq!(info["reason"], "ship it & fast");
}

#[tokio::test]
async fn waiting_then_allow_polls_at_the_interval() {
    let (duo, host) = start().await;
    let c = client(
        &host,
        DuoSignature::HmacSha512,
        SKEY,
        Duration::from_secs(5),
    );
    assert_eq!(c.push("slow", &prompt()).await, FactorOutcome::Allow);
    assert_eq!(duo.status_polls.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn no_answer_times_out_without_spinning() {
    let (duo, host) = start().await;
    let c = client(
        &host,
        DuoSignature::HmacSha512,
        SKEY,
        Duration::from_millis(600),
    );
    assert_eq!(c.push("sleeper", &prompt()).await, FactorOutcome::Timeout);
    // 600 ms at one poll per 100 ms: a handful of polls, never a busy loop.
    let polls = duo.status_polls.load(Ordering::SeqCst);
    assert!((2..=8).contains(&polls), "{polls} polls");
}

#[tokio::test]
async fn dropping_the_push_stops_polling() {
    let (duo, host) = start().await;
    let c = client(
        &host,
        DuoSignature::HmacSha512,
        SKEY,
        Duration::from_secs(60),
    );
    let _ = tokio::time::timeout(Duration::from_millis(350), c.push("sleeper", &prompt())).await;
    // A poll already on the wire when the push was dropped may still reach the server (and
    // be counted) a moment later; a push that kept polling would add several more below.
    tokio::time::sleep(Duration::from_millis(150)).await;
    let after_drop = duo.status_polls.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(duo.status_polls.load(Ordering::SeqCst), after_drop);
}

#[tokio::test]
async fn rate_limits_back_off_and_bad_keys_fail() {
    let (duo, host) = start().await;
    let c = client(&host, DuoSignature::HmacSha1, SKEY, Duration::from_secs(5));
    assert_eq!(c.push("busy", &prompt()).await, FactorOutcome::Allow);
    assert_eq!(
        duo.rate_limited_once.load(Ordering::SeqCst),
        2,
        "retried after the 429"
    );
    let wrong = client(
        &host,
        DuoSignature::HmacSha512,
        "0123456789abcdef0123",
        Duration::from_secs(5),
    );
    match wrong.push("approver", &prompt()).await {
        FactorOutcome::Error(message) => assert!(message.contains("40103"), "{message}"),
        other => panic!("{other:?}"),
    }
    // Nothing listening: an error, not an approval.
    let closed = client(
        "127.0.0.1:9",
        DuoSignature::HmacSha512,
        SKEY,
        Duration::from_secs(5),
    );
    assert!(matches!(
        closed.push("approver", &prompt()).await,
        FactorOutcome::Error(_)
    ));
    assert!(!format!("{wrong:?}").contains("0123456789abcdef0123"));
    assert!(decode_response(200, b"{}").is_err());
}
