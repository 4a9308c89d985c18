//! Against a real OpenID Connect provider (`oidc-provider-mock`, started by
//! `scripts/with-services`, which sets `PORTCULLIS_TEST_OIDC_URL`): log in headlessly, verify
//! the RS256 ID token through discovery + JWKS, verify the opaque access token at userinfo,
//! revoke and see it refused, and run both through a chain built from config.
#![cfg(feature = "oidc")]
#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "tests: a failed unwrap or index is a failed test"
)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use portcullis_token::{
    AuthChain, AuthConfig, AuthError, ChainResources, Credential, HttpOptions, JwtRules,
    JwtVerifier, OidcOptions, OpaqueEndpoint, OpaqueRules, OpaqueVerifier, ProviderMetadata,
    Scheme,
};
use serde_json::{Value, json};

fn issuer() -> String {
    std::env::var("PORTCULLIS_TEST_OIDC_URL").expect(
        "PORTCULLIS_TEST_OIDC_URL is not set: run the tests through scripts/test or \
         scripts/with-services, which start oidc-provider-mock on 127.0.0.1",
    )
}

/// A user name no other test uses, so revocations do not cross tests.
fn fresh_user(tag: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    )
}

struct Tokens {
    id_token: String,
    access_token: String,
}

/// The authorization-code flow, headless: POST the authorize URL with `sub`, follow nothing,
/// take the code from the redirect, exchange it.
async fn login(user: &str, groups: &[&str]) -> Tokens {
    let issuer = issuer();
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let set_claims = http
        .put(format!("{issuer}/users/{user}"))
        .json(&json!({"email": format!("{user}@example.com"), "groups": groups}))
        .send()
        .await
        .unwrap();
    assert!(set_claims.status().is_success(), "{}", set_claims.status());
    let redirect_uri = "http://127.0.0.1/callback";
    let authorize = http
        .post(format!("{issuer}/oauth2/authorize"))
        .query(&[
            ("client_id", "deploy-gate"),
            ("redirect_uri", redirect_uri),
            ("response_type", "code"),
            ("scope", "openid email"),
            ("state", "st"),
            ("nonce", "nn"),
        ])
        .form(&[("sub", user)])
        .send()
        .await
        .unwrap();
    assert_eq!(authorize.status(), 302);
    let location = authorize.headers()["location"].to_str().unwrap().to_owned();
    let code = reqwest::Url::parse(&location)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "code")
        .map(|(_, v)| v.into_owned())
        .expect("the redirect carries a code");
    let tokens: Value = http
        .post(format!("{issuer}/oauth2/token"))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", redirect_uri),
            ("client_id", "deploy-gate"),
            ("client_secret", "unused"),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    Tokens {
        id_token: tokens["id_token"].as_str().unwrap().to_owned(),
        access_token: tokens["access_token"].as_str().unwrap().to_owned(),
    }
}

async fn revoke(user: &str) {
    let status = reqwest::Client::new()
        .post(format!("{}/users/{user}/revoke-tokens", issuer()))
        .send()
        .await
        .unwrap()
        .status();
    assert!(status.is_success());
}

fn userinfo(cache: Duration) -> OpaqueVerifier {
    let mut rules = OpaqueRules::new(OpaqueEndpoint::Userinfo {
        url: format!("{}/userinfo", issuer()),
    });
    rules.cache_ttl = cache;
    OpaqueVerifier::new(rules, &HttpOptions::default()).unwrap()
}

#[tokio::test]
async fn discovery_finds_the_provider() {
    let _ = portcullis_test_support::service_or_skip!("PORTCULLIS_TEST_OIDC_URL");
    let http = portcullis_token::HttpClient::new(&HttpOptions::default()).unwrap();
    let metadata = ProviderMetadata::discover(&http, &issuer()).await.unwrap();
    assert_eq!(metadata.issuer, issuer());
    assert!(metadata.jwks_uri.ends_with("/jwks"));
    assert!(metadata.userinfo_endpoint.is_some());
}

#[tokio::test]
async fn id_token_verifies_through_discovery_and_jwks() {
    let _ = portcullis_test_support::service_or_skip!("PORTCULLIS_TEST_OIDC_URL");
    let user = fresh_user("alice");
    let tokens = login(&user, &["deployers", "release-managers"]).await;
    let verifier = JwtVerifier::discover(
        JwtRules::new(issuer(), "deploy-gate"),
        OidcOptions::default(),
    )
    .await
    .unwrap();
    let principal = verifier.verify(&tokens.id_token).await.unwrap();
    assert_eq!(principal.subject(), user);
    assert!(principal.in_group("deployers"), "{principal:?}");
    assert!(principal.in_group("release-managers"));
    assert_eq!(
        principal.claim("email"),
        Some(&json!(format!("{user}@example.com")))
    );
    assert!(principal.expires_at().is_some());

    let elsewhere = JwtVerifier::discover(
        JwtRules::new(issuer(), "another-app"),
        OidcOptions::default(),
    )
    .await
    .unwrap();
    assert!(matches!(
        elsewhere.verify(&tokens.id_token).await,
        Err(AuthError::WrongAudience)
    ));
    // Only RS256 is published; an allow-list without it refuses the token.
    let mut strict = JwtRules::new(issuer(), "deploy-gate");
    strict.algorithms = vec![portcullis_token::Algorithm::ES256];
    let strict = JwtVerifier::discover(strict, OidcOptions::default())
        .await
        .unwrap();
    assert!(matches!(
        strict.verify(&tokens.id_token).await,
        Err(AuthError::DisallowedAlgorithm(_))
    ));
}

#[tokio::test]
async fn opaque_access_token_verifies_at_userinfo_until_revoked() {
    let _ = portcullis_test_support::service_or_skip!("PORTCULLIS_TEST_OIDC_URL");
    let user = fresh_user("bob");
    let tokens = login(&user, &["ops"]).await;
    let verifier = userinfo(Duration::ZERO);
    let principal = verifier.verify(&tokens.access_token).await.unwrap();
    assert_eq!(principal.subject(), user);
    assert!(principal.in_group("ops"));
    revoke(&user).await;
    assert!(matches!(
        verifier.verify(&tokens.access_token).await,
        Err(AuthError::InvalidToken)
    ));
    assert!(matches!(
        verifier.verify("made-up-token").await,
        Err(AuthError::InvalidToken)
    ));
}

#[tokio::test]
async fn a_burst_costs_one_userinfo_call_and_the_cache_is_bounded_by_its_ttl() {
    let _ = portcullis_test_support::service_or_skip!("PORTCULLIS_TEST_OIDC_URL");
    let user = fresh_user("carol");
    let tokens = login(&user, &[]).await;
    let verifier = std::sync::Arc::new(userinfo(Duration::from_secs(1)));
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let v = verifier.clone();
            let t = tokens.access_token.clone();
            tokio::spawn(async move { v.verify(&t).await })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap().unwrap().subject(), user);
    }
    assert_eq!(verifier.provider_calls(), 1);
    revoke(&user).await;
    // Within the TTL the cached answer stands (the documented trade-off)…
    assert!(verifier.verify(&tokens.access_token).await.is_ok());
    // …and after it the revocation shows.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert!(matches!(
        verifier.verify(&tokens.access_token).await,
        Err(AuthError::InvalidToken)
    ));
}

#[tokio::test]
async fn chain_from_config_routes_each_token_to_its_method() {
    let _ = portcullis_test_support::service_or_skip!("PORTCULLIS_TEST_OIDC_URL");
    let config = AuthConfig::from_toml(&format!(
        r#"
        [[method]]
        type = "oidc"
        issuer = "{issuer}"
        audiences = ["deploy-gate"]

        [[method]]
        type = "userinfo"
        issuer = "{issuer}"
        cache_seconds = 0
        "#,
        issuer = issuer()
    ))
    .unwrap();
    let chain = AuthChain::from_config(&config, &ChainResources::default())
        .await
        .unwrap();
    assert_eq!(chain.method_names(), ["oidc", "userinfo"]);
    let user = fresh_user("dave");
    let tokens = login(&user, &["deployers"]).await;
    let header = format!("Bearer {}", tokens.id_token);
    let by_jwt = chain
        .authenticate_header(Some(header.as_bytes()))
        .await
        .unwrap();
    assert_eq!(by_jwt.auth_method(), &portcullis_core::AuthMethod::OIDC);
    let header = format!("token {}", tokens.access_token);
    let by_userinfo = chain
        .authenticate_header(Some(header.as_bytes()))
        .await
        .unwrap();
    assert_eq!(by_userinfo.subject(), user);
    assert_eq!(
        by_userinfo.auth_method(),
        &portcullis_core::AuthMethod::OAUTH_USERINFO
    );
    revoke(&user).await;
    let credential = Credential::new(Scheme::Bearer, tokens.access_token).unwrap();
    assert!(matches!(
        chain.authenticate(Some(&credential)).await,
        Err(AuthError::InvalidToken)
    ));
}
