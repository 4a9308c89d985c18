//! Workload identity cost.
//!
//! Targets (issue 32): a full mTLS handshake with SPIFFE verification ≤ 1.15× a plain rustls
//! mTLS handshake with the same keys (in memory, no sockets, no session resumption); after
//! the handshake, the per-request identity cost ≤ 1 µs (worked out once per connection);
//! `/health` over a keep-alive mTLS connection ≥ 0.8× the throughput of plain HTTP.
#![expect(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::indexing_slicing,
    reason = "benches set up fixed, valid inputs; a failure is a broken bench"
)]

#[path = "../crates/portcullis-identity/tests/support/certs.rs"]
mod certs;

use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::http::Request;
use certs::{Ca, Issued, Leaf};
use criterion::{Criterion, criterion_group, criterion_main};
use futures_util::FutureExt as _;
use portcullis::tls::identity::rustls::client::Resumption;
use portcullis::tls::identity::rustls::pki_types::{
    CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime,
};
use portcullis::tls::identity::rustls::server::danger::ClientCertVerifier as _;
use portcullis::tls::identity::rustls::server::{NoServerSessionStorage, WebPkiClientVerifier};
use portcullis::tls::identity::rustls::{
    ClientConfig, ClientConnection, RootCertStore, ServerConfig, ServerConnection,
};
use portcullis::tls::identity::{
    BundleSet, ClientAuth, IdentitySource, Material, PeerIds, SpiffeAuthenticator,
    SpiffeClientVerifier, Svid, TrustBundle, client_config, crypto_provider, inspect_leaf,
    peer_spiffe_id, server_config,
};
use portcullis::tls::{ConnectionIdentity, TlsServer};
use portcullis::token::AuthChain;

struct Keys {
    ca: Ca,
    server: Issued,
    client: Issued,
}

fn chain(issued: &Issued, ca: &Ca) -> Vec<CertificateDer<'static>> {
    vec![
        CertificateDer::from(issued.cert_der.clone()),
        CertificateDer::from(ca.der()),
    ]
}

fn key(issued: &Issued) -> PrivateKeyDer<'static> {
    PrivatePkcs8KeyDer::from(issued.key_der.clone()).into()
}

/// Full handshakes only: no tickets, no session cache.
fn no_resumption_server(config: &mut ServerConfig) {
    config.session_storage = Arc::new(NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
}

fn plain_configs(keys: &Keys) -> (Arc<ServerConfig>, Arc<ClientConfig>) {
    let provider = crypto_provider();
    let mut roots = RootCertStore::empty();
    roots.add(CertificateDer::from(keys.ca.der())).unwrap();
    let roots = Arc::new(roots);
    let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
        .build()
        .unwrap();
    let mut server = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain(&keys.server, &keys.ca), key(&keys.server))
        .unwrap();
    no_resumption_server(&mut server);
    let mut client = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(chain(&keys.client, &keys.ca), key(&keys.client))
        .unwrap();
    client.resumption = Resumption::disabled();
    (Arc::new(server), Arc::new(client))
}

fn source(keys: &Keys, leaf: &Issued) -> Arc<IdentitySource> {
    let provider = crypto_provider();
    let svid = Svid::from_der(chain(leaf, &keys.ca), key(leaf), &provider).unwrap();
    let bundles = BundleSet::new().with(
        TrustBundle::from_der(
            "prod.example".parse().unwrap(),
            vec![CertificateDer::from(keys.ca.der())],
        )
        .unwrap(),
    );
    IdentitySource::fixed(
        Material {
            svid: Some(svid),
            bundles,
        },
        provider,
    )
}

fn spiffe_configs(keys: &Keys) -> (Arc<ServerConfig>, Arc<ClientConfig>) {
    let mut server = server_config(
        &source(keys, &keys.server),
        ClientAuth::Required,
        PeerIds::Any,
    )
    .unwrap();
    no_resumption_server(&mut server);
    let mut client = client_config(
        &source(keys, &keys.client),
        PeerIds::exactly("spiffe://prod.example/deploy-gate".parse().unwrap()),
    )
    .unwrap();
    client.resumption = Resumption::disabled();
    (Arc::new(server), Arc::new(client))
}

/// One full handshake in memory; the server connection afterwards.
fn handshake(server: &Arc<ServerConfig>, client: &Arc<ClientConfig>) -> ServerConnection {
    let mut s = ServerConnection::new(server.clone()).unwrap();
    let mut c =
        ClientConnection::new(client.clone(), ServerName::try_from("localhost").unwrap()).unwrap();
    let mut buf = Vec::with_capacity(8192);
    while s.is_handshaking() || c.is_handshaking() {
        buf.clear();
        c.write_tls(&mut buf).unwrap();
        s.read_tls(&mut &buf[..]).unwrap();
        s.process_new_packets().unwrap();
        buf.clear();
        s.write_tls(&mut buf).unwrap();
        c.read_tls(&mut &buf[..]).unwrap();
        c.process_new_packets().unwrap();
    }
    s
}

fn handshakes(c: &mut Criterion) {
    let ca = Ca::root("prod.example");
    let inter = ca.intermediate("prod.example");
    let keys = Keys {
        server: inter.leaf(Leaf::svid("spiffe://prod.example/deploy-gate")),
        client: inter.leaf(Leaf::svid("spiffe://prod.example/ci")),
        ca: inter,
    };
    // The bundle is the intermediate here, so both variants verify the same one-link chain.
    let plain = plain_configs(&keys);
    let spiffe = spiffe_configs(&keys);
    assert!(peer_spiffe_id(handshake(&spiffe.0, &spiffe.1).peer_certificates()).is_ok());
    assert!(handshake(&plain.0, &plain.1).peer_certificates().is_some());
    drop(ca);

    // The one step that differs between the two handshakes, measured alone (the handshakes'
    // own spread on a busy machine is larger than the difference).
    let now = UnixTime::now();
    let client_chain = chain(&keys.client, &keys.ca);
    let mut roots = RootCertStore::empty();
    roots.add(CertificateDer::from(keys.ca.der())).unwrap();
    let webpki = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), crypto_provider())
        .build()
        .unwrap();
    let spiffe_verifier =
        SpiffeClientVerifier::new(source(&keys, &keys.server), true, PeerIds::Any);
    assert!(
        webpki
            .verify_client_cert(&client_chain[0], &client_chain[1..], now)
            .is_ok()
    );
    assert!(
        spiffe_verifier
            .verify_client_cert(&client_chain[0], &client_chain[1..], now)
            .is_ok()
    );
    let mut group = c.benchmark_group("client_cert_verification");
    group.bench_function("webpki", |b| {
        b.iter(|| black_box(webpki.verify_client_cert(&client_chain[0], &client_chain[1..], now)));
    });
    group.bench_function("spiffe", |b| {
        b.iter(|| {
            black_box(spiffe_verifier.verify_client_cert(&client_chain[0], &client_chain[1..], now))
        });
    });
    group.finish();

    let mut group = c.benchmark_group("mtls_handshake");
    group.bench_function("plain_rustls_webpki", |b| {
        b.iter(|| black_box(handshake(&plain.0, &plain.1)));
    });
    group.bench_function("spiffe_verified", |b| {
        b.iter(|| black_box(handshake(&spiffe.0, &spiffe.1)));
    });
    group.bench_function("spiffe_verified_plus_peer_id", |b| {
        b.iter(|| {
            let s = handshake(&spiffe.0, &spiffe.1);
            black_box(peer_spiffe_id(s.peer_certificates()).unwrap())
        });
    });
    group.finish();
}

fn per_request(c: &mut Criterion) {
    let ca = Ca::root("prod.example");
    let keys = Keys {
        server: ca.leaf(Leaf::svid("spiffe://prod.example/deploy-gate")),
        client: ca.leaf(Leaf::svid("spiffe://prod.example/ci")),
        ca,
    };
    let chain = Arc::new(AuthChain::new(vec![Arc::new(
        SpiffeAuthenticator::new()
            .group("spiffe://prod.example/ci", "ci")
            .unwrap()
            .group("spiffe://prod.example/ns/*", "workloads")
            .unwrap(),
    )]));
    let server = TlsServer::from_source(
        &source(&keys, &keys.server),
        ClientAuth::Optional,
        PeerIds::Any,
    )
    .unwrap()
    .authenticate_peers(chain);
    let remote: SocketAddr = "127.0.0.1:40000".parse().unwrap();
    let client_leaf = inspect_leaf(&keys.client.cert_der).unwrap();
    let connection = ConnectionIdentity::establish(&server, Some(client_leaf.clone()), remote)
        .now_or_never()
        .expect("the SPIFFE authenticator answers at once");

    let mut group = c.benchmark_group("identity_per_request");
    group.bench_function("extensions_from_the_connection", |b| {
        b.iter_batched(
            || {
                Request::get("/v1/envs/checkout/prod/deploys")
                    .header("user-agent", "bench")
                    .body(Body::empty())
                    .unwrap()
            },
            |mut request| {
                // Ready at once without XFCC: polled once, no runtime in the measurement.
                connection
                    .identify(&mut request)
                    .now_or_never()
                    .expect("ready")
                    .unwrap();
                black_box(request)
            },
            criterion::BatchSize::SmallInput,
        );
    });
    group.bench_function("per_connection_establish", |b| {
        b.iter(|| {
            black_box(
                ConnectionIdentity::establish(&server, Some(client_leaf.clone()), remote)
                    .now_or_never()
                    .expect("ready"),
            )
        });
    });
    group.finish();
}

/// Sequential `/health` requests on one keep-alive connection: plain HTTP (`axum::serve`)
/// against mutual TLS (`TlsServer`, SPIFFE-verified client), same router, same client
/// library. The time per request bounds the throughput ratio the issue asks about.
fn keep_alive_health(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let ca = Ca::root("prod.example");
    let keys = Keys {
        server: ca.leaf(Leaf::svid("spiffe://prod.example/deploy-gate")),
        client: ca.leaf(Leaf::svid("spiffe://prod.example/ci")),
        ca,
    };
    let router = || axum::Router::new().route("/health", axum::routing::get(|| async { "ok" }));
    let (plain_url, tls_url) = runtime.block_on(async {
        let plain = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let plain_addr = plain.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(plain, router()).await });
        let tls = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let tls_addr = tls.local_addr().unwrap();
        let server = TlsServer::from_source(
            &source(&keys, &keys.server),
            ClientAuth::Required,
            PeerIds::Any,
        )
        .unwrap();
        tokio::spawn(server.serve(tls, router(), std::future::pending()));
        (
            format!("http://{plain_addr}/health"),
            format!("https://localhost:{}/health", tls_addr.port()),
        )
    });
    let plain_client = reqwest::Client::builder().build().unwrap();
    let tls_client = portcullis::tls::reqwest_client(
        &source(&keys, &keys.client),
        PeerIds::exactly("spiffe://prod.example/deploy-gate".parse().unwrap()),
    )
    .unwrap()
    .build()
    .unwrap();
    let get = |client: &reqwest::Client, url: &str| {
        runtime.block_on(async {
            let response = client.get(url).send().await.unwrap();
            assert!(response.status().is_success());
            black_box(response.bytes().await.unwrap())
        })
    };
    get(&plain_client, &plain_url);
    get(&tls_client, &tls_url);

    let mut group = c.benchmark_group("health_keep_alive");
    group.bench_function("plain_http", |b| b.iter(|| get(&plain_client, &plain_url)));
    group.bench_function("mtls_spiffe", |b| b.iter(|| get(&tls_client, &tls_url)));
    group.finish();
}

criterion_group!(benches, handshakes, per_request, keep_alive_health);
criterion_main!(benches);
