//! Bundle sources against a real folder and a real HTTP server on 127.0.0.1: hot reload,
//! ETags, and every failure leaving the active revision serving.
#![expect(
    clippy::unwrap_used,
    reason = "tests: a failed expectation is the failure being tested for"
)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use portcullis_policy::{
    Algorithm, Bundle, BundleLimits, BundleSigner, BundleVerifier, DirSource, EvalLimits,
    HttpSource, PolicyEngine, PolicyError, PolicyStore, PollOptions, SIGNATURES_FILE,
    VerificationKey, poll_once, spawn_poller,
};
use serde_json::json;

fn rego(revision: &str) -> String {
    format!(
        "package app\nrevision := \"{revision}\"\nallow if input.user == \"alice\"\ntest_alice if allow with input as {{\"user\": \"alice\"}}\n"
    )
}

fn write_bundle(dir: &Path, revision: &str, policy: &str) {
    std::fs::create_dir_all(dir.join("app")).unwrap();
    std::fs::write(
        dir.join(".manifest"),
        format!(r#"{{"revision": "{revision}", "roots": ["app"]}}"#),
    )
    .unwrap();
    std::fs::write(dir.join("app/policy.rego"), policy).unwrap();
}

fn scratch(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("portcullis-sources-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn active(store: &PolicyStore) -> Option<String> {
    store.revisions().get("app").cloned()
}

fn store() -> Arc<PolicyStore> {
    Arc::new(PolicyStore::in_memory(EvalLimits::default()))
}

#[tokio::test]
async fn a_folder_is_reloaded_when_it_changes_and_a_bad_edit_is_refused() {
    let dir = scratch("dir");
    write_bundle(&dir, "r1", &rego("r1"));
    let store = store();
    let mut source = DirSource::new("app", &dir, BundleLimits::default());
    assert!(poll_once(&store, &mut source).await.unwrap());
    assert_eq!(active(&store).as_deref(), Some("r1"));
    assert!(
        !poll_once(&store, &mut source).await.unwrap(),
        "nothing changed"
    );

    // Size and content change: a new revision.
    write_bundle(&dir, "r2-longer", &rego("r2-longer"));
    assert!(poll_once(&store, &mut source).await.unwrap());
    assert_eq!(active(&store).as_deref(), Some("r2-longer"));

    // A broken edit: refused, r2 keeps answering, the status says why.
    write_bundle(&dir, "r3", "package app\nallow if {");
    assert!(matches!(
        poll_once(&store, &mut source).await,
        Err(PolicyError::Compile { .. })
    ));
    assert_eq!(active(&store).as_deref(), Some("r2-longer"));
    let status = &store.status()[0];
    assert_eq!(status.failed_revision.as_deref(), Some("r3"));
    // A missing folder is an error too, not an empty policy.
    std::fs::remove_dir_all(&dir).unwrap();
    match poll_once(&store, &mut source).await {
        Err(err @ PolicyError::Bundle { .. }) => {
            assert!(err.to_string().contains("missing or not a folder"), "{err}");
        }
        other => panic!("a missing folder: {other:?}"),
    }
    let decision = store
        .evaluate("app/allow", &json!({"user": "alice"}))
        .unwrap();
    assert_eq!(decision.result, Some(json!(true)));
}

#[tokio::test]
async fn a_poller_hot_reloads_in_the_background() {
    let dir = scratch("poller");
    write_bundle(&dir, "p1", &rego("p1"));
    let store = store();
    let options = PollOptions::default()
        .with_interval(Duration::from_millis(20))
        .with_max_backoff(Duration::from_millis(100))
        .with_jitter_percent(10);
    let poller = spawn_poller(
        store.clone(),
        DirSource::new("app", &dir, BundleLimits::default()),
        options,
    );
    let wait_for = |want: &'static str| {
        let store = store.clone();
        async move {
            for _ in 0..500 {
                if active(&store).as_deref() == Some(want) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            panic!(
                "revision {want} never became active (have {:?})",
                active(&store)
            );
        }
    };
    wait_for("p1").await;
    write_bundle(&dir, "p2", &rego("p2"));
    wait_for("p2").await;
    let answer = store.evaluate("app/revision", &json!({})).unwrap();
    assert_eq!(answer.result, Some(json!("p2")));
    poller.abort();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn backoff_doubles_up_to_its_cap() {
    let options = PollOptions::default()
        .with_interval(Duration::from_secs(10))
        .with_max_backoff(Duration::from_secs(60))
        .with_jitter_percent(10);
    let pauses: Vec<u64> = (0..6).map(|f| options.pause(f).as_secs()).collect();
    assert_eq!(pauses, [10, 20, 40, 60, 60, 60]);
    assert_eq!(options.pause(u32::MAX).as_secs(), 60);
    // Jitter stays within ±10% and does vary.
    let jittered: Vec<Duration> = (0..200).map(|_| options.jittered_pause(0)).collect();
    assert!(
        jittered
            .iter()
            .all(|d| *d >= Duration::from_secs(9) && *d <= Duration::from_secs(11)),
        "{jittered:?}"
    );
    assert!(
        jittered.iter().any(|d| *d != jittered[0]),
        "no jitter at all"
    );
    let none = options.with_jitter_percent(0);
    assert_eq!(none.jittered_pause(1), Duration::from_secs(20));
}

/// A bundle server: the current tarball with an ETag, and routes that misbehave.
#[derive(Clone, Default)]
struct Server {
    bundle: Arc<Mutex<(Vec<u8>, String)>>,
    full: Arc<AtomicUsize>,
    not_modified: Arc<AtomicUsize>,
}

impl Server {
    fn publish(&self, revision: &str, policy: &str) {
        let bundle = Bundle::from_files(
            "app",
            [
                (
                    ".manifest".to_owned(),
                    format!(r#"{{"revision": "{revision}", "roots": ["app"]}}"#).into_bytes(),
                ),
                ("app/policy.rego".to_owned(), policy.as_bytes().to_vec()),
            ],
        )
        .unwrap();
        *self.bundle.lock().unwrap() = (bundle.to_tar_gz().unwrap(), format!("\"{revision}\""));
    }
}

async fn serve_bundle(State(server): State<Server>, headers: HeaderMap) -> Response {
    let (bytes, etag) = server.bundle.lock().unwrap().clone();
    if headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        == Some(etag.as_str())
    {
        server.not_modified.fetch_add(1, Ordering::SeqCst);
        return StatusCode::NOT_MODIFIED.into_response();
    }
    server.full.fetch_add(1, Ordering::SeqCst);
    ([(header::ETAG, etag)], bytes).into_response()
}

async fn start(server: Server) -> String {
    let app = axum::Router::new()
        .route("/bundle.tar.gz", get(serve_bundle))
        .route(
            "/hang",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(60)).await;
                "too late"
            }),
        )
        .route(
            "/error",
            get(|| async { StatusCode::INTERNAL_SERVER_ERROR }),
        )
        .route("/huge", get(|| async { vec![0_u8; 3 << 20] }))
        // A bundle URL that sends the poller elsewhere (as a downgrade to plain HTTP would).
        .route(
            "/redirect",
            get(|| async { (StatusCode::FOUND, [(header::LOCATION, "/bundle.tar.gz")]) }),
        )
        .route(
            "/private/bundle.tar.gz",
            get(|state: State<Server>, headers: HeaderMap| async move {
                let authorized = headers
                    .get(header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    == Some("Bearer host-secret");
                if authorized {
                    serve_bundle(state, headers).await
                } else {
                    StatusCode::UNAUTHORIZED.into_response()
                }
            }),
        )
        .with_state(server);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{address}")
}

#[tokio::test]
async fn an_http_source_uses_etags_and_survives_a_bad_server() {
    let server = Server::default();
    server.publish("h1", &rego("h1"));
    let base = start(server.clone()).await;
    let store = store();
    let timeout = Duration::from_secs(5);
    let mut source = HttpSource::new(
        "app",
        format!("{base}/bundle.tar.gz"),
        timeout,
        BundleLimits::default(),
    )
    .unwrap();
    assert!(poll_once(&store, &mut source).await.unwrap());
    assert_eq!(active(&store).as_deref(), Some("h1"));
    assert!(!poll_once(&store, &mut source).await.unwrap());
    assert_eq!(
        server.not_modified.load(Ordering::SeqCst),
        1,
        "asked with If-None-Match"
    );

    server.publish("h2", &rego("h2"));
    assert!(poll_once(&store, &mut source).await.unwrap());
    assert_eq!(active(&store).as_deref(), Some("h2"));

    // A revision that fails its own test is refused; h2 keeps serving; the bad one is
    // fetched again next time (it never became active), and refused again.
    server.publish(
        "h3",
        &rego("h3").replace("allow if input.user == \"alice\"", "allow := false"),
    );
    for _ in 0..2 {
        assert!(matches!(
            poll_once(&store, &mut source).await,
            Err(PolicyError::TestFailed { .. })
        ));
    }
    assert_eq!(active(&store).as_deref(), Some("h2"));
    assert_eq!(server.full.load(Ordering::SeqCst), 4);
}

/// A redirect is an error, never followed: the bundle's integrity must not move to another
/// URL (an https bundle URL redirected to plain http would otherwise be activated).
#[tokio::test]
async fn an_http_source_never_follows_a_redirect() {
    let server = Server::default();
    server.publish("moved", &rego("moved"));
    let base = start(server.clone()).await;
    let store = store();
    let mut source = HttpSource::new(
        "app",
        format!("{base}/redirect"),
        Duration::from_secs(5),
        BundleLimits::default(),
    )
    .unwrap();
    let err = poll_once(&store, &mut source).await.unwrap_err();
    assert!(err.to_string().contains("302"), "{err}");
    assert_eq!(active(&store), None);
    assert_eq!(
        server.full.load(Ordering::SeqCst),
        0,
        "the target was never fetched"
    );
}

#[tokio::test]
async fn a_hanging_failing_or_oversized_url_is_an_error_not_an_outage() {
    let server = Server::default();
    server.publish("ok", &rego("ok"));
    let base = start(server).await;
    let store = store();
    let mut good = HttpSource::new(
        "app",
        format!("{base}/bundle.tar.gz"),
        Duration::from_secs(5),
        BundleLimits::default(),
    )
    .unwrap();
    poll_once(&store, &mut good).await.unwrap();

    let small = BundleLimits::default().with_max_total_bytes(1024);
    let cases = [
        ("/hang", Duration::from_millis(300), BundleLimits::default()),
        ("/error", Duration::from_secs(5), BundleLimits::default()),
        ("/huge", Duration::from_secs(5), small),
        ("/missing", Duration::from_secs(5), BundleLimits::default()),
    ];
    for (path, timeout, limits) in cases {
        let mut source = HttpSource::new("app", format!("{base}{path}"), timeout, limits).unwrap();
        let started = std::time::Instant::now();
        let err = poll_once(&store, &mut source).await.unwrap_err();
        assert!(matches!(err, PolicyError::Bundle { .. }), "{path}: {err}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{path} was not cut off"
        );
        assert_eq!(active(&store).as_deref(), Some("ok"), "{path}");
        let last_error = store.status()[0].last_error.clone().unwrap();
        assert!(last_error.contains(path), "{path}: {last_error}");
    }
    // Unreachable (nothing listens on port 9 of 127.0.0.1).
    let mut closed = HttpSource::new(
        "app",
        "http://127.0.0.1:9/bundle.tar.gz",
        Duration::from_secs(2),
        BundleLimits::default(),
    )
    .unwrap();
    assert!(poll_once(&store, &mut closed).await.is_err());
    assert_eq!(active(&store).as_deref(), Some("ok"));
}

const SECRET: &[u8] = b"a shared bundle-signing secret, test only";

fn signer() -> BundleSigner {
    BundleSigner::hmac(Algorithm::HS256, SECRET)
        .unwrap()
        .key_id("release")
}

fn verifier() -> Arc<BundleVerifier> {
    Arc::new(BundleVerifier::new().key(
        "release",
        VerificationKey::hmac(Algorithm::HS256, SECRET).unwrap(),
    ))
}

/// Signs the bundle in `dir` as it stands, writing its `.signatures.json`.
fn sign_dir(dir: &Path) {
    let files = Bundle::files_from_dir("app", dir, &BundleLimits::default()).unwrap();
    std::fs::write(
        dir.join(SIGNATURES_FILE),
        signer().sign("app", &files).unwrap(),
    )
    .unwrap();
}

#[tokio::test]
async fn a_verifying_folder_source_takes_only_signed_bundles() {
    let dir = scratch("signed");
    write_bundle(&dir, "s1", &rego("s1"));
    let store = store();
    let mut source = DirSource::new("app", &dir, BundleLimits::default()).verify_with(verifier());
    assert!(matches!(
        poll_once(&store, &mut source).await,
        Err(PolicyError::Signature { .. })
    ));
    assert_eq!(active(&store), None);
    sign_dir(&dir);
    assert!(poll_once(&store, &mut source).await.unwrap());
    assert_eq!(active(&store).as_deref(), Some("s1"));
    // An edit after signing (the signature now stale) is refused; s1 keeps serving.
    std::fs::write(
        dir.join("app/policy.rego"),
        rego("s1").replace("alice", "mallory"),
    )
    .unwrap();
    assert!(matches!(
        poll_once(&store, &mut source).await,
        Err(PolicyError::Signature { .. })
    ));
    assert_eq!(active(&store).as_deref(), Some("s1"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_verifying_http_source_refuses_a_tampered_tarball() {
    let dir = scratch("signed-http");
    write_bundle(&dir, "t1", &rego("t1"));
    sign_dir(&dir);
    let tarball = |dir: &Path| {
        let files = Bundle::files_from_dir("app", dir, &BundleLimits::default()).unwrap();
        let mut tar = tar::Builder::new(flate2::write::GzEncoder::new(
            Vec::new(),
            flate2::Compression::default(),
        ));
        for (path, contents) in files {
            let mut header = tar::Header::new_gnu();
            header.set_size(contents.len() as u64);
            header.set_mode(0o644);
            tar.append_data(&mut header, path, contents.as_slice())
                .unwrap();
        }
        tar.into_inner().unwrap().finish().unwrap()
    };
    let server = Server::default();
    *server.bundle.lock().unwrap() = (tarball(&dir), "\"t1\"".to_owned());
    let base = start(server.clone()).await;
    let store = store();
    let mut source = HttpSource::new(
        "app",
        format!("{base}/bundle.tar.gz"),
        Duration::from_secs(5),
        BundleLimits::default(),
    )
    .unwrap()
    .verify_with(verifier());
    assert!(poll_once(&store, &mut source).await.unwrap());
    assert_eq!(active(&store).as_deref(), Some("t1"));

    // Same signature, another policy: refused, t1 keeps serving.
    write_bundle(&dir, "t1", &rego("t1").replace("alice", "mallory"));
    *server.bundle.lock().unwrap() = (tarball(&dir), "\"t1-tampered\"".to_owned());
    assert!(matches!(
        poll_once(&store, &mut source).await,
        Err(PolicyError::Signature { .. })
    ));
    assert_eq!(active(&store).as_deref(), Some("t1"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn an_http_source_sends_its_bearer_token_and_never_shows_it() {
    let server = Server::default();
    server.publish("b1", &rego("b1"));
    let base = start(server).await;
    let store = store();
    let url = format!("{base}/private/bundle.tar.gz");
    let timeout = Duration::from_secs(5);
    let mut anonymous =
        HttpSource::new("app", url.clone(), timeout, BundleLimits::default()).unwrap();
    let refused = poll_once(&store, &mut anonymous).await.unwrap_err();
    assert!(refused.to_string().contains("401"), "{refused}");
    let mut source = HttpSource::new("app", url, timeout, BundleLimits::default())
        .unwrap()
        .bearer_token("host-secret");
    assert!(!format!("{source:?}").contains("host-secret"));
    assert!(poll_once(&store, &mut source).await.unwrap());
    assert_eq!(active(&store).as_deref(), Some("b1"));
}
