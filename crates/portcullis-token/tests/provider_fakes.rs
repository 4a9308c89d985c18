//! Key rotation, single-flight and rate-limited JWKS refresh, garbage and hanging providers,
//! and RFC 7662 introspection with its positive cache — against small local HTTP servers
//! (oidc-provider-mock has no introspection endpoint and cannot rotate keys on demand).
#![cfg(feature = "oidc")]
#![expect(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    reason = "tests: a failed unwrap or index is a failed test"
)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::{Form, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use jsonwebtoken::{EncodingKey, Header};
use portcullis_token::{
    Algorithm, AuthError, HttpOptions, JwtRules, JwtVerifier, OidcOptions, OpaqueEndpoint,
    OpaqueRules, OpaqueVerifier, SessionAlgorithm, SessionKey,
};
use serde_json::{Value, json};

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Normal,
    Garbage,
    Hang,
    Huge,
}

#[derive(Clone)]
struct Provider {
    issuer: Arc<Mutex<String>>,
    jwks: Arc<Mutex<Value>>,
    mode: Arc<Mutex<Mode>>,
    jwks_fetches: Arc<AtomicUsize>,
    introspections: Arc<AtomicUsize>,
}

async fn discovery(State(p): State<Provider>) -> Json<Value> {
    let issuer = p.issuer.lock().unwrap().clone();
    Json(
        json!({"issuer": issuer, "jwks_uri": format!("{issuer}/jwks"),
                "introspection_endpoint": format!("{issuer}/introspect")}),
    )
}

async fn jwks(State(p): State<Provider>) -> Response {
    p.jwks_fetches.fetch_add(1, Ordering::SeqCst);
    let mode = *p.mode.lock().unwrap();
    match mode {
        Mode::Normal => Json(p.jwks.lock().unwrap().clone()).into_response(),
        Mode::Garbage => (StatusCode::OK, "<html>not json</html>").into_response(),
        Mode::Huge => (StatusCode::OK, "[".repeat(2 * 1024 * 1024)).into_response(),
        Mode::Hang => {
            tokio::time::sleep(Duration::from_secs(60)).await;
            StatusCode::OK.into_response()
        }
    }
}

async fn introspect(
    State(p): State<Provider>,
    headers: HeaderMap,
    Form(form): Form<std::collections::HashMap<String, String>>,
) -> Response {
    p.introspections.fetch_add(1, Ordering::SeqCst);
    // client "gate" / secret "s3cret", Basic-encoded.
    let expected = "Basic Z2F0ZTpzM2NyZXQ=";
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(expected) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    // Slow enough that a burst of requests overlaps.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let answer = match form.get("token").map(String::as_str) {
        Some("good") => json!({"active": true, "sub": "alice", "groups": ["deployers"],
                               "aud": "gate", "iss": "https://idp.test", "exp": now + 600}),
        Some("expired") => {
            json!({"active": true, "sub": "alice", "aud": "gate", "iss": "https://idp.test", "exp": now - 1})
        }
        Some("other-aud") => {
            json!({"active": true, "sub": "alice", "aud": "elsewhere", "iss": "https://idp.test"})
        }
        Some("no-sub") => json!({"active": true, "aud": "gate", "iss": "https://idp.test"}),
        _ => json!({"active": false}),
    };
    Json(answer).into_response()
}

async fn start() -> Provider {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let issuer = format!("http://{}", listener.local_addr().unwrap());
    let provider = Provider {
        issuer: Arc::new(Mutex::new(issuer)),
        jwks: Arc::new(Mutex::new(json!({"keys": []}))),
        mode: Arc::new(Mutex::new(Mode::Normal)),
        jwks_fetches: Arc::new(AtomicUsize::new(0)),
        introspections: Arc::new(AtomicUsize::new(0)),
    };
    let app = Router::new()
        .route("/.well-known/openid-configuration", get(discovery))
        .route("/jwks", get(jwks))
        .route("/introspect", post(introspect))
        .with_state(provider.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    provider
}

impl Provider {
    fn issuer(&self) -> String {
        self.issuer.lock().unwrap().clone()
    }

    fn publish(&self, keys: &[&SessionKey]) {
        let keys: Vec<Value> = keys
            .iter()
            .map(|k| k.public_jwks().unwrap()["keys"][0].clone())
            .collect();
        *self.jwks.lock().unwrap() = json!({ "keys": keys });
    }

    fn token(&self, key: &SessionKey) -> String {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let mut header = Header::new(jsonwebtoken::Algorithm::ES256);
        header.kid = Some(key.kid().to_owned());
        let claims = json!({"iss": self.issuer(), "aud": "gate", "sub": "alice", "exp": now + 300});
        jsonwebtoken::encode(
            &header,
            &claims,
            &EncodingKey::from_ec_der(key.secret_material()),
        )
        .unwrap()
    }
}

fn es256_keys<const N: usize>() -> [SessionKey; N] {
    std::array::from_fn(|_| SessionKey::generate(SessionAlgorithm::ES256).unwrap())
}

fn options(min_refresh: Duration) -> OidcOptions {
    OidcOptions {
        http: HttpOptions::default().with_timeout(Duration::from_millis(500)),
        min_refresh_interval: min_refresh,
        ..OidcOptions::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_refreshes_once_and_unknown_kids_are_rate_limited() {
    let provider = start().await;
    let [a, b, c] = es256_keys();
    provider.publish(&[&a]);
    let verifier = Arc::new(
        JwtVerifier::discover(
            JwtRules::new(provider.issuer(), "gate"),
            options(Duration::from_millis(300)),
        )
        .await
        .unwrap(),
    );
    assert_eq!(
        verifier
            .verify(&provider.token(&a))
            .await
            .unwrap()
            .subject(),
        "alice"
    );
    assert_eq!(provider.jwks_fetches.load(Ordering::SeqCst), 1);

    // Rotation: B appears. Twenty concurrent tokens signed by B share one fetch.
    tokio::time::sleep(Duration::from_millis(350)).await;
    provider.publish(&[&a, &b]);
    let token_b = provider.token(&b);
    let results = futures_join(&verifier, &token_b, 20).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert_eq!(provider.jwks_fetches.load(Ordering::SeqCst), 2);

    // A flood of unknown key ids right after: rate-limited, no fetch at all.
    let token_c = provider.token(&c);
    let results = futures_join(&verifier, &token_c, 20).await;
    assert!(
        results
            .iter()
            .all(|r| matches!(r, Err(AuthError::UnknownKey(_)))),
        "{results:?}"
    );
    assert_eq!(provider.jwks_fetches.load(Ordering::SeqCst), 2);

    // After the interval: one fetch, still unknown.
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert!(matches!(
        verifier.verify(&token_c).await,
        Err(AuthError::UnknownKey(_))
    ));
    assert_eq!(provider.jwks_fetches.load(Ordering::SeqCst), 3);

    // A token from another issuer never causes a fetch.
    tokio::time::sleep(Duration::from_millis(350)).await;
    let mut header = Header::new(jsonwebtoken::Algorithm::ES256);
    header.kid = Some("zzz".into());
    let foreign = jsonwebtoken::encode(
        &header,
        &json!({"iss": "https://elsewhere", "aud": "gate", "sub": "x", "exp": 4_000_000_000u64}),
        &EncodingKey::from_ec_der(c.secret_material()),
    )
    .unwrap();
    assert!(matches!(
        verifier.verify(&foreign).await,
        Err(AuthError::UnknownIssuer(_))
    ));
    assert_eq!(provider.jwks_fetches.load(Ordering::SeqCst), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_acceptances_end_when_their_key_is_withdrawn() {
    let provider = start().await;
    let [a, b, unknown] = es256_keys();
    provider.publish(&[&a, &b]);
    let cached = |max_age: Duration| {
        let provider = provider.clone();
        async move {
            JwtVerifier::discover(
                JwtRules::new(provider.issuer(), "gate"),
                OidcOptions {
                    max_age,
                    ..options(Duration::from_millis(300))
                },
            )
            .await
            .unwrap()
            .cache_verified(100, Duration::from_secs(60))
            .unwrap()
        }
    };

    // A refresh that another token causes ends the withdrawn key's cached acceptances.
    let verifier = cached(Duration::from_secs(3600)).await;
    let (token_a, token_b) = (provider.token(&a), provider.token(&b));
    for token in [&token_a, &token_b] {
        assert_eq!(verifier.verify(token).await.unwrap().subject(), "alice");
    }
    assert_eq!(verifier.cached_tokens(), 2);
    provider.publish(&[&b]);
    // Nothing has refreshed the set yet: the acceptance still counts.
    assert!(verifier.verify(&token_a).await.is_ok());
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert!(matches!(
        verifier.verify(&provider.token(&unknown)).await,
        Err(AuthError::UnknownKey(_))
    ));
    assert!(matches!(
        verifier.verify(&token_a).await,
        Err(AuthError::UnknownKey(_))
    ));
    assert_eq!(
        verifier.cached_tokens(),
        1,
        "the withdrawn key's entry is forgotten"
    );
    assert!(
        verifier.verify(&token_b).await.is_ok(),
        "the kept key's entry still counts"
    );

    // With every request a hit, the set is still refreshed once it is older than max_age.
    provider.publish(&[&a, &b]);
    let verifier = cached(Duration::from_millis(500)).await;
    assert!(verifier.verify(&token_a).await.is_ok());
    let fetches = provider.jwks_fetches.load(Ordering::SeqCst);
    provider.publish(&[&b]);
    assert!(verifier.verify(&token_a).await.is_ok());
    assert_eq!(
        provider.jwks_fetches.load(Ordering::SeqCst),
        fetches,
        "a hit, no fetch"
    );
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(matches!(
        verifier.verify(&token_a).await,
        Err(AuthError::UnknownKey(_))
    ));
    assert_eq!(provider.jwks_fetches.load(Ordering::SeqCst), fetches + 1);
    assert_eq!(verifier.cached_tokens(), 0);
}

async fn futures_join(
    verifier: &Arc<JwtVerifier>,
    token: &str,
    n: usize,
) -> Vec<Result<portcullis_core::Principal, AuthError>> {
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let verifier = verifier.clone();
            let token = token.to_owned();
            tokio::spawn(async move { verifier.verify(&token).await })
        })
        .collect();
    let mut out = Vec::new();
    for task in tasks {
        out.push(task.await.unwrap());
    }
    out
}

#[tokio::test]
async fn garbage_huge_and_hanging_providers_are_typed_errors() {
    let provider = start().await;
    let a = SessionKey::generate(SessionAlgorithm::ES256).unwrap();
    provider.publish(&[&a]);
    for mode in [Mode::Garbage, Mode::Huge, Mode::Hang] {
        *provider.mode.lock().unwrap() = mode;
        let result = tokio::time::timeout(
            Duration::from_secs(10),
            JwtVerifier::discover(
                JwtRules::new(provider.issuer(), "gate"),
                options(Duration::ZERO),
            ),
        )
        .await
        .expect("the HTTP timeout bounds the wait");
        assert!(matches!(result, Err(AuthError::Provider(_))), "{result:?}");
    }
    // A discovery document naming another issuer is refused.
    *provider.mode.lock().unwrap() = Mode::Normal;
    let mut rules = JwtRules::new(format!("{}/", provider.issuer()), "gate");
    rules.algorithms = vec![Algorithm::ES256];
    assert!(matches!(
        JwtVerifier::discover(rules, options(Duration::ZERO)).await,
        Err(AuthError::Provider(_))
    ));
    // Nothing listens: a typed error too.
    let closed = JwtRules::new("http://127.0.0.1:9", "gate");
    assert!(matches!(
        JwtVerifier::discover(closed, options(Duration::ZERO)).await,
        Err(AuthError::Provider(_))
    ));
}

#[tokio::test]
async fn a_failed_refresh_keeps_the_cached_keys() {
    let provider = start().await;
    let a = SessionKey::generate(SessionAlgorithm::ES256).unwrap();
    provider.publish(&[&a]);
    let mut opts = options(Duration::ZERO);
    opts.max_age = Duration::ZERO; // every use wants a refresh
    let verifier = JwtVerifier::discover(JwtRules::new(provider.issuer(), "gate"), opts)
        .await
        .unwrap();
    *provider.mode.lock().unwrap() = Mode::Garbage;
    assert!(verifier.verify(&provider.token(&a)).await.is_ok());
}

fn introspection(provider: &Provider, secret: &str, cache: Duration) -> OpaqueVerifier {
    let mut rules = OpaqueRules::new(OpaqueEndpoint::Introspection {
        url: format!("{}/introspect", provider.issuer()),
        client_id: "gate".into(),
        client_secret: secret.into(),
    });
    rules.cache_ttl = cache;
    rules.issuer = Some("https://idp.test".into());
    rules.audiences = vec!["gate".into()];
    OpaqueVerifier::new(rules, &HttpOptions::default()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn introspection_burst_costs_one_call() {
    let provider = start().await;
    let verifier = Arc::new(introspection(&provider, "s3cret", Duration::from_secs(30)));
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let v = verifier.clone();
            tokio::spawn(async move { v.verify("good").await })
        })
        .collect();
    for task in tasks {
        let p = task.await.unwrap().unwrap();
        assert_eq!(p.subject(), "alice");
        assert!(p.in_group("deployers"));
    }
    assert_eq!(provider.introspections.load(Ordering::SeqCst), 1);
    assert_eq!(verifier.provider_calls(), 1);
    assert!(!format!("{verifier:?}").contains("s3cret"));

    // Negative answers are not cached: each is asked again.
    for _ in 0..2 {
        assert!(matches!(
            verifier.verify("revoked").await,
            Err(AuthError::InvalidToken)
        ));
    }
    assert_eq!(provider.introspections.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn introspection_answers_are_checked() {
    let provider = start().await;
    let verifier = introspection(&provider, "s3cret", Duration::ZERO);
    assert!(matches!(
        verifier.verify("expired").await,
        Err(AuthError::Expired)
    ));
    assert!(matches!(
        verifier.verify("other-aud").await,
        Err(AuthError::WrongAudience)
    ));
    assert!(matches!(
        verifier.verify("no-sub").await,
        Err(AuthError::MissingClaim(_))
    ));
    assert!(verifier.verify("good").await.is_ok());
    assert!(verifier.verify("good").await.is_ok());
    assert_eq!(
        verifier.provider_calls(),
        5,
        "cache disabled: every check asks"
    );
    let wrong_secret = introspection(&provider, "wrong", Duration::ZERO);
    assert!(matches!(
        wrong_secret.verify("good").await,
        Err(AuthError::Provider(_))
    ));
}

#[tokio::test(start_paused = true)]
async fn cached_answers_expire() {
    let provider = start().await;
    let verifier = introspection(&provider, "s3cret", Duration::from_secs(30));
    assert!(verifier.verify("good").await.is_ok());
    tokio::time::advance(Duration::from_secs(29)).await;
    assert!(verifier.verify("good").await.is_ok());
    assert_eq!(verifier.provider_calls(), 1);
    tokio::time::advance(Duration::from_secs(2)).await;
    assert!(verifier.verify("good").await.is_ok());
    assert_eq!(verifier.provider_calls(), 2);
}

#[test]
fn an_unbounded_cache_is_refused() {
    let mut rules = OpaqueRules::new(OpaqueEndpoint::Userinfo {
        url: "http://127.0.0.1:9/userinfo".into(),
    });
    rules.cache_ttl = Duration::MAX;
    assert!(matches!(
        OpaqueVerifier::new(rules, &HttpOptions::default()),
        Err(AuthError::Config(_))
    ));
}
