//! `HttpSource::with_svid`: a bundle fetched over mutual TLS from a `TlsServer` that requires
//! client SVIDs, the server's SPIFFE ID authorized, no redirect followed, and the client's
//! SVID rotated on disk presented without a new source (rcgen certificates).
#![cfg(all(feature = "tls", feature = "policy"))]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "tests"
)]

#[path = "../crates/portcullis-identity/tests/support/certs.rs"]
mod certs;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Extension, Router};
use certs::{Ca, Leaf};
use portcullis::policy::{Bundle, BundleLimits, BundleSource, Fetched, HttpSource};
use portcullis::tls::identity::{
    ClientAuth, FileSource, IdentityFiles, PeerIds, SpiffeIdPattern, crypto_provider,
};
use portcullis::tls::{PeerIdentity, TlsServer};

const SERVER: &str = "spiffe://prod.example/policy-delivery";
const HOST: &str = "spiffe://prod.example/host/web-1";

fn scratch(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "portcullis-source-tls-{tag}-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn write_svid(dir: &Path, name: &str, ca: &Ca, leaf: Leaf) {
    let issued = ca.leaf(leaf);
    std::fs::write(dir.join(format!("{name}.pem")), &issued.cert_pem).unwrap();
    std::fs::write(dir.join(format!("{name}_key.pem")), &issued.key_pem).unwrap();
}

fn files(dir: &Path, name: &str) -> Arc<FileSource> {
    Arc::new(
        FileSource::load(
            IdentityFiles::new()
                .svid(
                    dir.join(format!("{name}.pem")),
                    dir.join(format!("{name}_key.pem")),
                )
                .bundle("prod.example".parse().unwrap(), dir.join("bundle.pem")),
            crypto_provider(),
        )
        .unwrap(),
    )
}

/// The bundle, served to a caller with a verified SVID only.
async fn serve_bundle(peer: Option<Extension<PeerIdentity>>) -> impl IntoResponse {
    if peer.is_none() {
        return (StatusCode::UNAUTHORIZED, HeaderMap::new(), Vec::new());
    };
    let tarball = Bundle::from_files(
        "authz",
        vec![(
            "authz.rego".to_owned(),
            b"package authz\n\nallow := true\n".to_vec(),
        )],
    )
    .unwrap()
    .to_tar_gz()
    .unwrap();
    let mut headers = HeaderMap::new();
    headers.insert(header::ETAG, HeaderValue::from_static("\"one\""));
    (StatusCode::OK, headers, tarball)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bundles_are_fetched_over_mtls_with_a_rotating_svid() {
    let dir = scratch("mtls");
    let ca = Ca::root("prod.example");
    std::fs::write(dir.join("bundle.pem"), ca.pem()).unwrap();
    write_svid(&dir, "server", &ca, Leaf::svid(SERVER));
    let server_files = files(&dir, "server");
    let router = Router::new()
        .route("/bundles/authz", get(serve_bundle))
        .route(
            "/moved",
            get(|| async {
                (
                    StatusCode::FOUND,
                    [(header::LOCATION, "/bundles/authz")],
                    "",
                )
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let served = tokio::spawn(
        TlsServer::from_source(server_files.source(), ClientAuth::Required, PeerIds::Any)
            .unwrap()
            .serve(listener, router, async move {
                let _ = stopped.await;
            }),
    );
    let url = format!("https://127.0.0.1:{port}/bundles/authz");
    let timeout = Duration::from_secs(5);
    let limits = BundleLimits::default();
    let server_id = || PeerIds::exactly(SERVER.parse().unwrap());

    // The host starts with an expired SVID (its helper is late): the server refuses it.
    write_svid(
        &dir,
        "host",
        &ca,
        Leaf {
            expired: true,
            ..Leaf::svid(HOST)
        },
    );
    let host_files = files(&dir, "host");
    let mut source = HttpSource::new("authz", &url, timeout, limits)
        .unwrap()
        .with_svid(host_files.source(), server_id())
        .unwrap();
    let refused = source.fetch().await;
    assert!(refused.is_err(), "an expired client SVID was accepted");

    // Rotated on disk and reloaded: the same source presents the new SVID.
    write_svid(&dir, "host", &ca, Leaf::svid(HOST));
    assert!(host_files.reload().unwrap());
    assert!(matches!(source.fetch().await.unwrap(), Fetched::Bundle(_)));

    // Only the expected server's SPIFFE ID is accepted, not any SVID of the trust domain.
    let mut wrong_server = HttpSource::new("authz", &url, timeout, limits)
        .unwrap()
        .with_svid(
            host_files.source(),
            PeerIds::Matching(vec![
                SpiffeIdPattern::parse("spiffe://prod.example/other").unwrap(),
            ]),
        )
        .unwrap();
    let err = wrong_server.fetch().await.unwrap_err();
    assert!(err.to_string().contains("GET"), "{err}");

    // Without the SVID (the system's roots, no client certificate) nothing is fetched.
    let mut plain = HttpSource::new("authz", &url, timeout, limits).unwrap();
    assert!(plain.fetch().await.is_err());

    // Redirects are never followed.
    let mut moved = HttpSource::new(
        "authz",
        format!("https://127.0.0.1:{port}/moved"),
        timeout,
        limits,
    )
    .unwrap()
    .with_svid(host_files.source(), server_id())
    .unwrap();
    let err = moved.fetch().await.unwrap_err();
    assert!(err.to_string().contains("302"), "{err}");

    // An SVID is presented over TLS only.
    let err = HttpSource::new(
        "authz",
        format!("http://127.0.0.1:{port}/bundles/authz"),
        timeout,
        limits,
    )
    .unwrap()
    .with_svid(host_files.source(), server_id())
    .unwrap_err();
    assert!(err.to_string().contains("https://"), "{err}");

    let _ = stop.send(());
    served.await.unwrap().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
