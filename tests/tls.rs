//! `portcullis::tls` end to end: an axum router behind `AuthenticateLayer`, served over rustls
//! with SPIFFE client certificates, driven by reqwest (rcgen certificates, a rotated SVID
//! file), by curl and Python `requests` (openssl-made certificates from
//! `scripts/tests/identity-certs.sh`), with Envoy XFCC from a proxy and from a non-proxy.
#![cfg(feature = "tls")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "tests"
)]

#[path = "../crates/portcullis-identity/tests/support/certs.rs"]
mod certs;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::routing::get;
use axum::{Extension, Router};
use certs::{Ca, Issued, Leaf};
use portcullis::Principal;
use portcullis::gate::Gate;
use portcullis::http::AuthenticateLayer;
use portcullis::tls::identity::rustls::pki_types::CertificateDer;
use portcullis::tls::identity::rustls::pki_types::pem::PemObject as _;
use portcullis::tls::identity::{
    BundleSet, ClientAuth, FileSource, IdentityFiles, IdentitySource, Material, PeerIds,
    SpiffeAuthenticator, SpiffeIdPattern, Svid, SvidError, SvidUsage, TrustBundle, XfccPolicy,
    crypto_provider, verify_svid,
};
use portcullis::tls::{PeerIdentity, TlsServer, reqwest_client};
use portcullis::token::{AuthChain, AuthError, Authenticator, Credential};
use portcullis::{AuthMethod, PrincipalKind};

/// Accepts `token letmein` as the user alice: the chain's token method.
#[derive(Debug)]
struct Letmein;

#[portcullis::token::async_trait]
impl Authenticator for Letmein {
    fn name(&self) -> &str {
        "letmein"
    }
    async fn authenticate(&self, credential: &Credential) -> Result<Principal, AuthError> {
        if credential.secret() == "letmein" {
            Ok(
                Principal::builder(PrincipalKind::User, "alice", AuthMethod::SCRIPT_TOKEN)
                    .build()?,
            )
        } else {
            Err(AuthError::Unrecognized)
        }
    }
}

fn chain() -> Arc<AuthChain> {
    let spiffe = SpiffeAuthenticator::new()
        .group("spiffe://prod.example/ci", "ci")
        .unwrap()
        .group("spiffe://prod.example/ns/payments/*", "payments")
        .unwrap();
    Arc::new(AuthChain::new(vec![Arc::new(spiffe), Arc::new(Letmein)]))
}

async fn whoami(
    Extension(principal): Extension<Principal>,
    peer: Option<Extension<PeerIdentity>>,
) -> String {
    let groups: Vec<&str> = principal.groups().collect();
    let via = peer
        .and_then(|Extension(p)| p.forwarded_by().map(ToString::to_string))
        .unwrap_or_default();
    format!(
        "{} {} [{}] via={via}",
        principal.kind().as_str(),
        principal.subject(),
        groups.join(",")
    )
}

fn app(chain: Arc<AuthChain>) -> Router {
    let gate = Arc::new(Gate::builder().authenticator(chain).build().unwrap());
    Router::new()
        .route("/whoami", get(whoami))
        .route_layer(AuthenticateLayer::new(gate))
        .route("/health", get(|| async { "ok" }))
}

struct Running {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Running {
    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.await.unwrap().unwrap();
    }
}

async fn start(server: TlsServer) -> Running {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server.serve(listener, app(chain()), async move {
        let _ = rx.await;
    }));
    Running {
        addr,
        stop: Some(tx),
        task,
    }
}

struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!(
            "portcullis-tls-{name}-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn client_source(ca: &Ca, leaf: Option<&Issued>) -> Arc<IdentitySource> {
    let provider = crypto_provider();
    let svid = leaf
        .map(|l| Svid::from_pem(l.cert_pem.as_bytes(), l.key_pem.as_bytes(), &provider).unwrap());
    let bundles = BundleSet::new()
        .with(TrustBundle::from_pem("prod.example".parse().unwrap(), ca.pem().as_bytes()).unwrap());
    IdentitySource::fixed(Material { svid, bundles }, provider)
}

fn expect(id: &str) -> PeerIds {
    PeerIds::exactly(id.parse().unwrap())
}

/// GET `path` with `client`; the status and body, or the transport error.
async fn get_with(
    client: &Arc<IdentitySource>,
    server_id: &str,
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<(u16, String), String> {
    let http = reqwest_client(client, expect(server_id))
        .unwrap()
        .build()
        .unwrap();
    let mut request = http.get(format!("https://localhost:{}{path}", addr.port()));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.map_err(|e| format!("{e:?}"))?;
    let status = response.status().as_u16();
    Ok((status, response.text().await.unwrap()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reqwest_clients_with_svids_tokens_xfcc_and_a_rotated_server_svid() {
    let ca = Ca::root("prod.example");
    let dir = TempDir::new("rotate");
    let write_server = |id: &str| {
        let leaf = ca.leaf(Leaf::svid(id));
        std::fs::write(dir.0.join("svid.pem"), &leaf.cert_pem).unwrap();
        std::fs::write(dir.0.join("svid_key.pem"), &leaf.key_pem).unwrap();
    };
    write_server("spiffe://prod.example/deploy-gate");
    std::fs::write(dir.0.join("bundle.pem"), ca.pem()).unwrap();
    let files = FileSource::load(
        IdentityFiles::new()
            .svid(dir.0.join("svid.pem"), dir.0.join("svid_key.pem"))
            .bundle("prod.example".parse().unwrap(), dir.0.join("bundle.pem")),
        crypto_provider(),
    )
    .unwrap();
    let proxy_policy =
        XfccPolicy::new().proxy(SpiffeIdPattern::parse("spiffe://prod.example/envoy").unwrap());
    let server = TlsServer::from_source(files.source(), ClientAuth::Optional, PeerIds::Any)
        .unwrap()
        .authenticate_peers(chain())
        .forwarded_by(proxy_policy);
    let running = start(server).await;
    let addr = running.addr;
    let gate_id = "spiffe://prod.example/deploy-gate";

    let ci = client_source(&ca, Some(&ca.leaf(Leaf::svid("spiffe://prod.example/ci"))));
    let nobody = client_source(&ca, None);
    let envoy = client_source(
        &ca,
        Some(&ca.leaf(Leaf::svid("spiffe://prod.example/envoy"))),
    );

    // The SVID is the identity; its groups come from the patterns.
    let (status, body) = get_with(&ci, gate_id, addr, "/whoami", &[]).await.unwrap();
    assert_eq!(
        (status, body.as_str()),
        (200, "service spiffe://prod.example/ci [ci] via=")
    );
    assert_eq!(
        get_with(&ci, gate_id, addr, "/health", &[]).await.unwrap(),
        (200, "ok".into())
    );

    // The client authorizes the server's ID, not only its CA.
    let err = get_with(&ci, "spiffe://prod.example/other", addr, "/whoami", &[]).await;
    assert!(err.is_err(), "{err:?}");

    // No certificate: the chain's token method, or 401.
    let auth = [("authorization", "token letmein")];
    let (status, body) = get_with(&nobody, gate_id, addr, "/whoami", &auth)
        .await
        .unwrap();
    assert_eq!((status, body.as_str()), (200, "user alice [] via="));
    let (status, _) = get_with(&nobody, gate_id, addr, "/whoami", &[])
        .await
        .unwrap();
    assert_eq!(status, 401);
    // A certificate and a token at once are ambiguous.
    let (status, _) = get_with(&ci, gate_id, addr, "/whoami", &auth)
        .await
        .unwrap();
    assert_eq!(status, 400);

    // XFCC: from a non-proxy refused, from the proxy believed.
    let xfcc = [(
        "x-forwarded-client-cert",
        "By=spiffe://prod.example/envoy;Hash=00ff;URI=spiffe://prod.example/ns/payments/sa/api",
    )];
    let (status, body) = get_with(&ci, gate_id, addr, "/whoami", &xfcc)
        .await
        .unwrap();
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("only from a configured proxy"), "{body}");
    let (status, _) = get_with(&nobody, gate_id, addr, "/whoami", &xfcc)
        .await
        .unwrap();
    assert_eq!(status, 401);
    let (status, body) = get_with(&envoy, gate_id, addr, "/whoami", &xfcc)
        .await
        .unwrap();
    assert_eq!(
        (status, body.as_str()),
        (
            200,
            "service spiffe://prod.example/ns/payments/sa/api [payments] via=spiffe://prod.example/envoy"
        )
    );
    // The proxy without XFCC is not itself the caller.
    let (status, _) = get_with(&envoy, gate_id, addr, "/whoami", &[])
        .await
        .unwrap();
    assert_eq!(status, 401);
    let (status, _) = get_with(
        &envoy,
        gate_id,
        addr,
        "/whoami",
        &[("x-forwarded-client-cert", "URI=\"open")],
    )
    .await
    .unwrap();
    assert_eq!(status, 400);

    // A client SVID from an unknown CA fails the handshake.
    let stranger_ca = Ca::root("prod.example");
    let stranger = client_source(
        &ca,
        Some(&stranger_ca.leaf(Leaf::svid("spiffe://prod.example/ci"))),
    );
    assert!(
        get_with(&stranger, gate_id, addr, "/whoami", &[])
            .await
            .is_err()
    );

    // Rotation: the server's SVID file changes; new connections see the new one, no restart.
    write_server("spiffe://prod.example/deploy-gate-v2");
    assert!(files.reload().unwrap());
    let (status, _) = get_with(
        &ci,
        "spiffe://prod.example/deploy-gate-v2",
        addr,
        "/whoami",
        &[],
    )
    .await
    .unwrap();
    assert_eq!(status, 200);
    assert!(get_with(&ci, gate_id, addr, "/whoami", &[]).await.is_err());

    running.stop().await;
}

/// Whether `tool` runs; without it the test is skipped, or fails under
/// `PORTCULLIS_REQUIRE_SERVICES=1` (scripts/install-deps installs it).
fn have(tool: &str, args: &[&str]) -> bool {
    let ok = std::process::Command::new(tool)
        .args(args)
        .output()
        .is_ok_and(|out| out.status.success());
    if !ok {
        assert!(
            std::env::var("PORTCULLIS_REQUIRE_SERVICES").as_deref() != Ok("1"),
            "{tool} is required (PORTCULLIS_REQUIRE_SERVICES=1); scripts/install-deps installs it"
        );
        eprintln!("skipped: `{tool}` is not available; scripts/install-deps installs it");
    }
    ok
}

fn openssl_certs(dir: &Path) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/tests/identity-certs.sh");
    let out = std::process::Command::new("bash")
        .arg(script)
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn chain_of(path: &Path) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_file_iter(path)
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap()
}

#[test]
fn openssl_made_svids_verify_as_the_spec_says() {
    if !have("openssl", &["version"]) {
        return;
    }
    let dir = TempDir::new("openssl-verify");
    openssl_certs(&dir.0);
    let bundle = |file: &str, domain: &str| {
        TrustBundle::from_pem(
            domain.parse().unwrap(),
            &std::fs::read(dir.0.join(file)).unwrap(),
        )
        .unwrap()
    };
    let prod = BundleSet::new().with(bundle("bundle.pem", "prod.example"));
    let federated = prod
        .clone()
        .with(bundle("other-bundle.pem", "other.example"));
    let provider = crypto_provider();
    let check = |file: &str, bundles: &BundleSet| {
        verify_svid(
            &chain_of(&dir.0.join(file)),
            bundles,
            SvidUsage::Client,
            portcullis::tls::identity::rustls::pki_types::UnixTime::now(),
            provider.signature_verification_algorithms.all,
        )
        .map(|info| info.spiffe_id.unwrap().to_string())
    };
    assert_eq!(
        check("client.pem", &prod).unwrap(),
        "spiffe://prod.example/ci"
    );
    assert_eq!(
        check("server.pem", &prod).unwrap(),
        "spiffe://prod.example/deploy-gate"
    );
    // Without the intermediate, the leaf does not reach the root.
    assert_eq!(
        check("client.leaf.pem", &prod),
        Err(SvidError::UnknownIssuer)
    );
    assert_eq!(
        check("wrong-domain.pem", &prod),
        Err(SvidError::UntrustedDomain("other.example".into()))
    );
    // Federated with other.example, a prod CA still cannot vouch for an other.example ID.
    assert_eq!(
        check("wrong-domain.pem", &federated),
        Err(SvidError::UnknownIssuer)
    );
    assert_eq!(
        check("other-client.pem", &federated).unwrap(),
        "spiffe://other.example/ci"
    );
    assert_eq!(check("expired.pem", &prod), Err(SvidError::Expired));
    assert_eq!(check("leaf-ca.pem", &prod), Err(SvidError::LeafIsCa));
    assert_eq!(
        check("two-uris.pem", &prod),
        Err(SvidError::MultipleUriSans(2))
    );
    assert!(matches!(
        check("non-spiffe.pem", &prod),
        Err(SvidError::NotSpiffe(_))
    ));
    assert_eq!(check("dns-only.pem", &prod), Err(SvidError::NoUriSan));
    // The openssl key files load as the workload's SVID.
    let svid = Svid::from_pem(
        &std::fs::read(dir.0.join("server.pem")).unwrap(),
        &std::fs::read(dir.0.join("server.key")).unwrap(),
        &provider,
    )
    .unwrap();
    assert_eq!(
        svid.spiffe_id().map(ToString::to_string).as_deref(),
        Some("spiffe://prod.example/deploy-gate")
    );
    assert!(
        Svid::from_pem(
            &std::fs::read(dir.0.join("server.pem")).unwrap(),
            &std::fs::read(dir.0.join("client.key")).unwrap(),
            &provider,
        )
        .is_err(),
        "a key that is not the leaf's"
    );
}

/// curl's exit code, HTTP status (or 0) and body.
async fn curl(addr: SocketAddr, dir: &Path, args: &[&str]) -> (i32, u16, String) {
    let out = tokio::process::Command::new("curl")
        .args(["-sS", "-o", "-", "-w", "\n%{http_code}", "--cacert"])
        .arg(dir.join("bundle.pem"))
        .args(args)
        .arg(format!("https://localhost:{}/whoami", addr.port()))
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (
        out.status.code().unwrap_or(-1),
        code.trim().parse().unwrap_or(0),
        body.to_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_and_python_requests_with_openssl_certificates() {
    if !have("openssl", &["version"]) || !have("curl", &["--version"]) {
        return;
    }
    let dir = TempDir::new("curl");
    openssl_certs(&dir.0);
    let files = FileSource::load(
        IdentityFiles::new()
            .svid(dir.0.join("server.pem"), dir.0.join("server.key"))
            .bundle("prod.example".parse().unwrap(), dir.0.join("bundle.pem")),
        crypto_provider(),
    )
    .unwrap();
    let server = TlsServer::from_source(files.source(), ClientAuth::Optional, PeerIds::Any)
        .unwrap()
        .authenticate_peers(chain());
    let running = start(server).await;
    let addr = running.addr;
    let path = |f: &str| dir.0.join(f).to_string_lossy().into_owned();

    let (exit, status, body) = curl(
        addr,
        &dir.0,
        &["--cert", &path("client.pem"), "--key", &path("client.key")],
    )
    .await;
    assert_eq!((exit, status), (0, 200), "{body}");
    assert_eq!(body, "service spiffe://prod.example/ci [ci] via=");

    let (exit, status, _) = curl(addr, &dir.0, &[]).await;
    assert_eq!((exit, status), (0, 401), "no certificate, no token");
    let (exit, status, body) = curl(addr, &dir.0, &["-H", "Authorization: token letmein"]).await;
    assert_eq!(
        (exit, status, body.as_str()),
        (0, 200, "user alice [] via=")
    );

    // XFCC from a client that is not a configured proxy.
    let (exit, status, _) = curl(
        addr,
        &dir.0,
        &[
            "--cert",
            &path("client.pem"),
            "--key",
            &path("client.key"),
            "-H",
            "x-forwarded-client-cert: URI=spiffe://prod.example/admin",
        ],
    )
    .await;
    assert_eq!((exit, status), (0, 401));

    // Certificates that break the rules fail the handshake: no HTTP status at all.
    for bad in [
        "expired",
        "leaf-ca",
        "two-uris",
        "non-spiffe",
        "dns-only",
        "wrong-domain",
        "other-client",
    ] {
        let (exit, status, _) = curl(
            addr,
            &dir.0,
            &[
                "--cert",
                &path(&format!("{bad}.pem")),
                "--key",
                &path(&format!("{bad}.key")),
            ],
        )
        .await;
        assert!(
            exit != 0 && status == 0,
            "{bad}: curl exit {exit}, status {status}"
        );
    }

    if have("python3", &["-c", "import requests"]) {
        let script = format!(
            "import requests\nr = requests.get('https://localhost:{}/whoami', cert=({:?}, {:?}), verify={:?})\nprint(r.status_code, r.text)",
            addr.port(),
            path("client.pem"),
            path("client.key"),
            path("bundle.pem"),
        );
        let out = tokio::process::Command::new("python3")
            .args(["-c", &script])
            .output()
            .await
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "200 service spiffe://prod.example/ci [ci] via=",
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    running.stop().await;
}

#[tokio::test]
async fn a_connection_does_not_outlive_its_client_certificate() {
    use portcullis::tls::ConnectionIdentity;
    use portcullis::tls::identity::LeafInfo;

    let ca = Ca::root("prod.example");
    let server = TlsServer::from_source(
        &client_source(
            &ca,
            Some(&ca.leaf(Leaf::svid("spiffe://prod.example/deploy-gate"))),
        ),
        ClientAuth::Optional,
        PeerIds::Any,
    )
    .unwrap()
    .authenticate_peers(chain());
    let remote: SocketAddr = "127.0.0.1:5000".parse().unwrap();
    let leaf = |not_after| LeafInfo {
        spiffe_id: Some("spiffe://prod.example/ci".parse().unwrap()),
        not_after,
    };
    let request = || {
        axum::http::Request::get("/whoami")
            .body(axum::body::Body::empty())
            .unwrap()
    };

    let current = ConnectionIdentity::establish(
        &server,
        Some(leaf(
            std::time::SystemTime::now() + std::time::Duration::from_secs(3600),
        )),
        remote,
    )
    .await;
    let mut ok = request();
    current.identify(&mut ok).await.unwrap();
    assert_eq!(
        ok.extensions().get::<Principal>().map(Principal::subject),
        Some("spiffe://prod.example/ci")
    );
    assert!(ok.extensions().get::<PeerIdentity>().is_some());

    let expired = ConnectionIdentity::establish(
        &server,
        Some(leaf(
            std::time::UNIX_EPOCH + std::time::Duration::from_secs(1),
        )),
        remote,
    )
    .await;
    let mut refused = request();
    let err = expired.identify(&mut refused).await.unwrap_err();
    assert_eq!(err.status(), 401, "{err}");
    assert!(refused.extensions().get::<Principal>().is_none());
}

/// A keep-alive connection was admitted under the bundle in force at its handshake. Once the
/// bundle rotates, each request on it re-verifies the client's chain against the new bundle:
/// a client whose CA left is refused on the open connection too, not only at reconnect.
#[tokio::test]
async fn an_open_connection_is_refused_once_its_ca_leaves_the_bundle() {
    let ca = Ca::root("prod.example");
    let next = Ca::root("prod.example");
    let dir = TempDir::new("bundle-rotation");
    let server_leaf = ca.leaf(Leaf::svid("spiffe://prod.example/deploy-gate"));
    std::fs::write(dir.0.join("svid.pem"), &server_leaf.cert_pem).unwrap();
    std::fs::write(dir.0.join("svid_key.pem"), &server_leaf.key_pem).unwrap();
    std::fs::write(dir.0.join("bundle.pem"), ca.pem()).unwrap();
    let files = FileSource::load(
        IdentityFiles::new()
            .svid(dir.0.join("svid.pem"), dir.0.join("svid_key.pem"))
            .bundle("prod.example".parse().unwrap(), dir.0.join("bundle.pem")),
        crypto_provider(),
    )
    .unwrap();
    let server = TlsServer::from_source(files.source(), ClientAuth::Optional, PeerIds::Any)
        .unwrap()
        .authenticate_peers(chain());
    let running = start(server).await;
    let ci = client_source(&ca, Some(&ca.leaf(Leaf::svid("spiffe://prod.example/ci"))));
    // One client, one pooled connection for every request below.
    let http = reqwest_client(&ci, expect("spiffe://prod.example/deploy-gate"))
        .unwrap()
        .pool_max_idle_per_host(1)
        .build()
        .unwrap();
    let url = format!("https://localhost:{}/whoami", running.addr.port());
    let whoami = || async {
        let response = http.get(&url).send().await.unwrap();
        (response.status().as_u16(), response.text().await.unwrap())
    };
    assert_eq!(whoami().await.0, 200);
    // The same bundle written again (a new file, same CA): still admitted.
    std::fs::write(dir.0.join("bundle.pem"), format!("{}\n", ca.pem())).unwrap();
    assert!(files.reload().unwrap());
    assert_eq!(whoami().await.0, 200);
    // The CA is rotated out: the open connection's next request is refused.
    std::fs::write(dir.0.join("bundle.pem"), next.pem()).unwrap();
    assert!(files.reload().unwrap());
    let (status, body) = whoami().await;
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("no longer verifies"), "{body}");
    running.stop().await;
}
