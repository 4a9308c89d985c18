//! One crypto stack, whatever else the final graph enables. The workspace runs rustls, JWTs,
//! digests and HMACs on aws-lc-rs; this test's graph also turns on rustls's `ring` provider
//! (the dev-dependency in `Cargo.toml`), as an embedder's other dependencies may, so rustls has
//! no process-level default and anything that asks for one panics. Every place that builds a
//! TLS configuration or an HTTP client must still work: the HTTP clients here, the LDAP client
//! (`crates/portcullis-directory/tests/ldap.rs`), SPIFFE mTLS handshakes (`tests/tls.rs`) and
//! JWTs with both jsonwebtoken backends (`crates/portcullis-token/tests/backend_probe.rs`).
#![cfg(all(feature = "tls", feature = "oidc", feature = "duo", feature = "policy"))]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

use std::time::Duration;

use portcullis::approval::{DuoClient, DuoConfig};
use portcullis::policy::{BundleLimits, HttpSource};
use portcullis::tls::identity::crypto_provider;
use portcullis::tls::identity::rustls;
use portcullis::token::{HttpClient, HttpOptions};

/// The premise: two providers are compiled in and none is installed, so rustls's own
/// `ClientConfig::builder()` (which reads the process-level default) panics. Without this the
/// other tests would prove nothing.
#[test]
fn the_graph_really_has_two_providers() {
    assert!(rustls::crypto::CryptoProvider::get_default().is_none());
    let ring = rustls::crypto::ring::default_provider();
    let aws_lc_rs = rustls::crypto::aws_lc_rs::default_provider();
    assert_ne!(ring.cipher_suites.len(), 0);
    assert_ne!(aws_lc_rs.cipher_suites.len(), 0);
    let ambiguous = std::panic::catch_unwind(rustls::ClientConfig::builder);
    assert!(ambiguous.is_err(), "rustls picked a process-level provider");
}

/// The provider the workspace passes is aws-lc-rs (its suites, its key exchange groups).
#[test]
fn the_workspace_provider_is_aws_lc_rs() {
    let ours = crypto_provider();
    let expected = rustls::crypto::aws_lc_rs::default_provider();
    let names = |p: &rustls::crypto::CryptoProvider| {
        p.cipher_suites
            .iter()
            .map(|s| s.suite())
            .collect::<Vec<_>>()
    };
    assert_eq!(names(&ours), names(&expected));
    let groups = |p: &rustls::crypto::CryptoProvider| {
        p.kx_groups.iter().map(|g| g.name()).collect::<Vec<_>>()
    };
    assert_eq!(groups(&ours), groups(&expected));
    // A configuration built on it needs no default.
    rustls::ClientConfig::builder_with_provider(ours)
        .with_safe_default_protocol_versions()
        .unwrap();
}

/// The library's HTTP clients (OIDC discovery/JWKS/introspection, Duo, bundle polling) and a
/// plain reqwest client are built without a process-level provider and without panicking.
#[tokio::test]
async fn every_http_client_builds_without_a_process_default() {
    HttpClient::new(&HttpOptions::default()).unwrap();
    DuoClient::new(DuoConfig::new(
        "api-example.duosecurity.com",
        "DIXXXXXXXXXXXXXXXXXX",
        "a-secret-key-of-forty-characters-0123456",
    ))
    .unwrap();
    HttpSource::new(
        "authz",
        "https://bundles.example/authz",
        Duration::from_secs(1),
        BundleLimits::default(),
    )
    .unwrap();
    reqwest::Client::new();
    // Still nothing installed: the clients took their provider explicitly.
    assert!(rustls::crypto::CryptoProvider::get_default().is_none());
}
