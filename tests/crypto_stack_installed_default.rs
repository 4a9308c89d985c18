//! The HTTP clients stay on aws-lc-rs when the application installs another rustls provider
//! as the process-level default (here ring). Which stack a client runs on is read from the
//! wire: its TLS ClientHello offers the hybrid post-quantum group X25519MLKEM768, which
//! aws-lc-rs has and ring does not. (A test binary of its own: it installs a process default.)
#![cfg(all(feature = "oidc", feature = "duo", feature = "policy", feature = "tls"))]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "tests"
)]

use std::time::{Duration, Instant};

use portcullis::approval::{DuoClient, DuoConfig};
use portcullis::policy::{BundleLimits, EvalLimits, HttpSource, PolicyStore, poll_once};
use portcullis::tls::identity::rustls;
use portcullis::token::{HttpClient, HttpOptions, ProviderMetadata};
use tokio::io::AsyncReadExt as _;
use tokio::net::TcpListener;

/// TLS's code for X25519MLKEM768.
const X25519_MLKEM768: u16 = 0x11ec;

/// The `supported_groups` a TLS ClientHello (one record) offers.
fn offered_groups(hello: &[u8]) -> Vec<u16> {
    let u16_at = |at: usize| u16::from_be_bytes([hello[at], hello[at + 1]]);
    // Record header (5), handshake header (4), version (2), random (32).
    let mut at = 5 + 4 + 2 + 32;
    at += 1 + usize::from(hello[at]); // session id
    at += 2 + usize::from(u16_at(at)); // cipher suites
    at += 1 + usize::from(hello[at]); // compression methods
    let end = at + 2 + usize::from(u16_at(at));
    at += 2;
    while at + 4 <= end {
        let (kind, len) = (u16_at(at), usize::from(u16_at(at + 2)));
        if kind == 0x000a {
            let list = &hello[at + 6..at + 4 + len];
            return list
                .chunks(2)
                .map(|c| u16::from_be_bytes([c[0], c[1]]))
                .collect();
        }
        at += 4 + len;
    }
    panic!("no supported_groups extension in {hello:02x?}");
}

/// A listener that records the first ClientHello it receives and hangs up.
async fn hello_catcher() -> (String, tokio::task::JoinHandle<Vec<u8>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let caught = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut hello = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(5);
        // The record's length is in its header; read until it is complete.
        while (hello.len() < 5
            || hello.len() < 5 + usize::from(u16::from_be_bytes([hello[3], hello[4]])))
            && Instant::now() < deadline
        {
            let mut buf = [0_u8; 4096];
            let n = stream.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            hello.extend_from_slice(&buf[..n]);
        }
        hello
    });
    (format!("https://{address}"), caught)
}

#[tokio::test]
async fn http_clients_ignore_an_installed_ring_default() {
    rustls::crypto::ring::default_provider()
        .install_default()
        .unwrap();
    // The premise: a plain rustls client now runs on ring and offers no ML-KEM.
    let ring_config = rustls::ClientConfig::builder()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    assert!(
        !ring_config
            .crypto_provider()
            .kx_groups
            .iter()
            .any(|g| u16::from(g.name()) == X25519_MLKEM768)
    );

    // OIDC discovery.
    let (base, caught) = hello_catcher().await;
    let http = HttpClient::new(&HttpOptions::default()).unwrap();
    assert!(ProviderMetadata::discover(&http, &base).await.is_err());
    let groups = offered_groups(&caught.await.unwrap());
    assert!(groups.contains(&X25519_MLKEM768), "OIDC: {groups:04x?}");

    // Duo.
    let (base, caught) = hello_catcher().await;
    let mut config = DuoConfig::new(
        base.trim_start_matches("https://"),
        "DIXXXXXXXXXXXXXXXXXX",
        "a-secret-key-of-forty-characters-0123456",
    );
    config.request_timeout = Duration::from_secs(2);
    let duo = DuoClient::new(config).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    assert!(
        duo.call("GET", "/auth/v2/check", &[], deadline)
            .await
            .is_err()
    );
    let groups = offered_groups(&caught.await.unwrap());
    assert!(groups.contains(&X25519_MLKEM768), "Duo: {groups:04x?}");

    // Bundle polling.
    let (base, caught) = hello_catcher().await;
    let store = std::sync::Arc::new(PolicyStore::in_memory(EvalLimits::default()));
    let mut source = HttpSource::new(
        "app",
        format!("{base}/bundle.tar.gz"),
        Duration::from_secs(2),
        BundleLimits::default(),
    )
    .unwrap();
    assert!(poll_once(&store, &mut source).await.is_err());
    let groups = offered_groups(&caught.await.unwrap());
    assert!(groups.contains(&X25519_MLKEM768), "bundles: {groups:04x?}");
}
