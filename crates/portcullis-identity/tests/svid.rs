//! X.509-SVID verification, bundles, file rotation and rustls handshakes, with certificates
//! made by rcgen on aws-lc-rs. (The openssl-made certificates are checked by
//! `scripts/tests/identity-openssl.sh` and the root `tests/tls.rs`.)
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "tests"
)]

mod support;

use std::path::PathBuf;
use std::sync::Arc;

use base64::Engine as _;
use portcullis_identity::rustls::pki_types::{
    CertificateDer, PrivatePkcs8KeyDer, ServerName, UnixTime,
};
use portcullis_identity::rustls::{ClientConnection, ServerConnection};
use portcullis_identity::{
    BundleError, BundleSet, ClientAuth, FileSource, IdentityFiles, IdentitySource, Material,
    PeerIds, SpiffeAuthenticator, SpiffeId, Svid, SvidError, SvidUsage, TrustBundle, TrustDomain,
    client_config, crypto_provider, peer_spiffe_id, server_config, verify_svid,
};
use portcullis_token::{AuthChain, VerifiedPeer};
use rcgen::KeyUsagePurpose;
use support::certs::{Ca, Issued, Leaf};

fn td(name: &str) -> TrustDomain {
    name.parse().unwrap()
}

fn der(pem_or_der: &[u8]) -> CertificateDer<'static> {
    CertificateDer::from(pem_or_der.to_vec())
}

fn bundle_of(domain: &str, ca: &Ca) -> TrustBundle {
    TrustBundle::from_pem(td(domain), ca.pem().as_bytes()).unwrap()
}

fn check(chain: &[&[u8]], bundles: &BundleSet) -> Result<SpiffeId, SvidError> {
    let chain: Vec<_> = chain.iter().map(|c| der(c)).collect();
    verify_svid(
        &chain,
        bundles,
        SvidUsage::Client,
        UnixTime::now(),
        crypto_provider().signature_verification_algorithms.all,
    )
    .map(|info| info.spiffe_id.unwrap())
}

#[test]
fn ca_intermediate_leaf_verifies_to_its_own_domain_bundle() {
    let root = Ca::root("prod.example");
    let inter = root.intermediate("prod.example");
    let leaf = inter.leaf(Leaf::svid("spiffe://prod.example/ns/payments/sa/api"));
    let bundles = BundleSet::new().with(bundle_of("prod.example", &root));
    let id = check(&[&leaf.cert_der, &inter.der()], &bundles).unwrap();
    assert_eq!(id.as_str(), "spiffe://prod.example/ns/payments/sa/api");
    // Without the intermediate the chain does not reach the root.
    assert_eq!(
        check(&[&leaf.cert_der], &bundles),
        Err(SvidError::UnknownIssuer)
    );
    // Server usage too (the leaf's EKU has both).
    let chain = [der(&leaf.cert_der), der(&inter.der())];
    assert!(
        verify_svid(
            &chain,
            &bundles,
            SvidUsage::Server,
            UnixTime::now(),
            crypto_provider().signature_verification_algorithms.all
        )
        .is_ok()
    );
    assert_eq!(check(&[], &bundles), Err(SvidError::EmptyChain));
}

#[test]
fn trust_domains_and_federation() {
    let prod = Ca::root("prod.example");
    let partner = Ca::root("partner.example");
    let ours = prod.leaf(Leaf::svid("spiffe://prod.example/a"));
    let theirs = partner.leaf(Leaf::svid("spiffe://partner.example/b"));
    // A partner SVID signed by *our* CA: a CA must not vouch for another trust domain.
    let forged = prod.leaf(Leaf::svid("spiffe://partner.example/b"));

    let only_prod = BundleSet::new().with(bundle_of("prod.example", &prod));
    assert!(check(&[&ours.cert_der], &only_prod).is_ok());
    assert_eq!(
        check(&[&theirs.cert_der], &only_prod),
        Err(SvidError::UntrustedDomain("partner.example".into()))
    );
    assert_eq!(
        check(&[&forged.cert_der], &only_prod),
        Err(SvidError::UntrustedDomain("partner.example".into()))
    );

    let federated = only_prod
        .clone()
        .with(bundle_of("partner.example", &partner));
    assert!(check(&[&theirs.cert_der], &federated).is_ok());
    assert_eq!(
        check(&[&forged.cert_der], &federated),
        Err(SvidError::UnknownIssuer)
    );
    // Our ID under the partner's CA: refused too.
    let forged_ours = partner.leaf(Leaf::svid("spiffe://prod.example/a"));
    assert_eq!(
        check(&[&forged_ours.cert_der], &federated),
        Err(SvidError::UnknownIssuer)
    );
}

#[test]
fn leaves_that_break_the_svid_rules() {
    let ca = Ca::root("prod.example");
    let bundles = BundleSet::new().with(bundle_of("prod.example", &ca));
    let id = "spiffe://prod.example/w";
    type Expect = fn(&SvidError) -> bool;
    let cases: Vec<(&str, Leaf, Expect)> = vec![
        (
            "expired",
            Leaf {
                expired: true,
                ..Leaf::svid(id)
            },
            |e| *e == SvidError::Expired,
        ),
        (
            "CA flag",
            Leaf {
                ca: true,
                key_usages: vec![KeyUsagePurpose::DigitalSignature],
                ..Leaf::svid(id)
            },
            |e| *e == SvidError::LeafIsCa,
        ),
        (
            "two URI SANs",
            Leaf {
                uris: vec![id.into(), "spiffe://prod.example/x".into()],
                ..Leaf::svid(id)
            },
            |e| *e == SvidError::MultipleUriSans(2),
        ),
        (
            "non-SPIFFE URI",
            Leaf {
                uris: vec!["https://prod.example/w".into()],
                ..Leaf::svid(id)
            },
            |e| matches!(e, SvidError::NotSpiffe(_)),
        ),
        (
            "DNS only",
            Leaf {
                uris: vec![],
                ..Leaf::svid(id)
            },
            |e| *e == SvidError::NoUriSan,
        ),
        (
            "the trust domain's own ID",
            Leaf {
                uris: vec!["spiffe://prod.example".into()],
                ..Leaf::svid(id)
            },
            |e| *e == SvidError::NoPath,
        ),
        (
            "key usage not critical",
            Leaf {
                key_usage_critical: false,
                ..Leaf::svid(id)
            },
            |e| *e == SvidError::KeyUsageNotCritical,
        ),
        (
            "no key usage",
            Leaf {
                key_usages: vec![],
                ..Leaf::svid(id)
            },
            |e| *e == SvidError::NoKeyUsage,
        ),
        (
            "keyCertSign",
            Leaf {
                key_usages: vec![
                    KeyUsagePurpose::DigitalSignature,
                    KeyUsagePurpose::KeyCertSign,
                ],
                ..Leaf::svid(id)
            },
            |e| *e == SvidError::SigningKeyUsage,
        ),
        (
            "cRLSign",
            Leaf {
                key_usages: vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::CrlSign],
                ..Leaf::svid(id)
            },
            |e| *e == SvidError::SigningKeyUsage,
        ),
        (
            "no digitalSignature",
            Leaf {
                key_usages: vec![KeyUsagePurpose::KeyEncipherment],
                ..Leaf::svid(id)
            },
            |e| *e == SvidError::NoDigitalSignature,
        ),
    ];
    for (name, spec, expected) in cases {
        let leaf = ca.leaf(spec);
        let err = check(&[&leaf.cert_der], &bundles).unwrap_err();
        assert!(expected(&err), "{name}: {err:?}");
        assert!(!err.to_string().is_empty());
    }
    assert!(matches!(
        check(&[b"not a certificate"], &bundles),
        Err(SvidError::Malformed(_))
    ));
}

#[test]
fn spiffe_bundle_json() {
    let ca = Ca::root("prod.example");
    let b64 = base64::engine::general_purpose::STANDARD.encode(ca.der());
    let json = format!(
        r#"{{"keys":[
            {{"use":"jwt-svid","kty":"EC","kid":"k1","crv":"P-256","x":"a","y":"b"}},
            {{"use":"x509-svid","kty":"EC","crv":"P-256","x":"a","y":"b","x5c":["{b64}"]}}
        ],"spiffe_sequence":7,"spiffe_refresh_hint":300}}"#
    );
    let bundle = TrustBundle::parse(td("prod.example"), json.as_bytes()).unwrap();
    assert_eq!((bundle.certs().len(), bundle.sequence()), (1, Some(7)));
    let leaf = ca.leaf(Leaf::svid("spiffe://prod.example/w"));
    assert!(check(&[&leaf.cert_der], &BundleSet::new().with(bundle)).is_ok());

    for bad in [
        "{}".to_owned(),
        r#"{"keys":[]}"#.to_owned(),
        r#"{"keys":[{"use":"x509-svid"}]}"#.to_owned(),
        format!(r#"{{"keys":[{{"use":"x509-svid","x5c":["{b64}","{b64}"]}}]}}"#),
        r#"{"keys":[{"use":"x509-svid","x5c":["!!"]}]}"#.to_owned(),
        r#"{"keys":[{"use":"x509-svid","x5c":["AAAA"]}]}"#.to_owned(),
        "{".to_owned(),
    ] {
        assert!(
            TrustBundle::parse(td("prod.example"), bad.as_bytes()).is_err(),
            "{bad}"
        );
    }
    assert_eq!(
        TrustBundle::from_pem(td("t"), b"").unwrap_err(),
        BundleError::Empty
    );
}

struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!(
            "portcullis-identity-{name}-{}-{}",
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

fn write_svid(dir: &TempDir, leaf: &Issued) {
    std::fs::write(dir.0.join("svid.pem"), &leaf.cert_pem).unwrap();
    std::fs::write(dir.0.join("svid_key.pem"), &leaf.key_pem).unwrap();
}

#[test]
fn files_rotate_and_a_broken_file_keeps_the_old_material() {
    let dir = TempDir::new("rotate");
    let ca = Ca::root("prod.example");
    write_svid(&dir, &ca.leaf(Leaf::svid("spiffe://prod.example/v1")));
    std::fs::write(dir.0.join("bundle.pem"), ca.pem()).unwrap();
    let files = IdentityFiles::new()
        .svid(dir.0.join("svid.pem"), dir.0.join("svid_key.pem"))
        .bundle(td("prod.example"), dir.0.join("bundle.pem"));
    let source = FileSource::load(files.clone(), crypto_provider()).unwrap();
    let id = |s: &FileSource| {
        s.source()
            .current()
            .svid
            .as_ref()
            .unwrap()
            .spiffe_id()
            .unwrap()
            .to_string()
    };
    assert_eq!(id(&source), "spiffe://prod.example/v1");
    assert!(!source.reload().unwrap(), "nothing changed");

    write_svid(&dir, &ca.leaf(Leaf::svid("spiffe://prod.example/v2")));
    assert!(source.reload().unwrap());
    assert_eq!(id(&source), "spiffe://prod.example/v2");

    // Half-written rotation: a new certificate with the old key.
    let v3 = ca.leaf(Leaf::svid("spiffe://prod.example/v3"));
    std::fs::write(dir.0.join("svid.pem"), &v3.cert_pem).unwrap();
    assert!(source.reload().is_err());
    assert!(!source.poll());
    assert_eq!(
        id(&source),
        "spiffe://prod.example/v2",
        "the old material stays in force"
    );
    std::fs::write(dir.0.join("svid_key.pem"), &v3.key_pem).unwrap();
    assert!(source.reload().unwrap());
    assert_eq!(id(&source), "spiffe://prod.example/v3");

    // A broken bundle keeps the old bundles.
    std::fs::write(dir.0.join("bundle.pem"), "garbage").unwrap();
    assert!(source.reload().is_err());
    assert!(!source.source().current().bundles.is_empty());

    // Pinned: a rotation within the same ID is taken, one to another ID is refused.
    std::fs::write(dir.0.join("bundle.pem"), ca.pem()).unwrap();
    let pinned = FileSource::load(files.clone(), crypto_provider())
        .unwrap()
        .pin_spiffe_id();
    write_svid(&dir, &ca.leaf(Leaf::svid("spiffe://prod.example/v3")));
    assert!(pinned.reload().unwrap());
    write_svid(&dir, &ca.leaf(Leaf::svid("spiffe://prod.example/other")));
    let err = pinned.reload().unwrap_err();
    assert!(
        matches!(
            err,
            portcullis_identity::SourceError::SpiffeIdChanged { .. }
        ),
        "{err}"
    );
    assert!(!pinned.poll());
    assert_eq!(id(&pinned), "spiffe://prod.example/v3");

    // A missing file at start is an error, not an empty identity.
    std::fs::remove_file(dir.0.join("svid_key.pem")).unwrap();
    assert!(FileSource::load(files, crypto_provider()).is_err());
}

#[tokio::test]
async fn watch_picks_up_a_rotated_svid() {
    let dir = TempDir::new("watch");
    let ca = Ca::root("prod.example");
    write_svid(&dir, &ca.leaf(Leaf::svid("spiffe://prod.example/old")));
    std::fs::write(dir.0.join("bundle.pem"), ca.pem()).unwrap();
    let files = IdentityFiles::new()
        .svid(dir.0.join("svid.pem"), dir.0.join("svid_key.pem"))
        .bundle(td("prod.example"), dir.0.join("bundle.pem"));
    let source = Arc::new(FileSource::load(files, crypto_provider()).unwrap());
    let task = source.watch(std::time::Duration::from_millis(20));
    // Files written within the same mtime tick as the first load still differ in size.
    write_svid(
        &dir,
        &ca.leaf(Leaf::svid("spiffe://prod.example/new-and-longer")),
    );
    let mut seen = String::new();
    for _ in 0..500 {
        seen = source
            .source()
            .current()
            .svid
            .as_ref()
            .unwrap()
            .spiffe_id()
            .unwrap()
            .to_string();
        if seen.ends_with("new-and-longer") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    task.abort();
    assert_eq!(seen, "spiffe://prod.example/new-and-longer");
}

fn source_for(ca: &Ca, leaf: Option<&Issued>, domains: &[(&str, &Ca)]) -> Arc<IdentitySource> {
    let provider = crypto_provider();
    let svid = leaf.map(|l| {
        Svid::from_der(
            vec![der(&l.cert_der)],
            PrivatePkcs8KeyDer::from(l.key_der.clone()).into(),
            &provider,
        )
        .unwrap()
    });
    let mut bundles = BundleSet::new().with(bundle_of("prod.example", ca));
    for (name, other) in domains {
        bundles.insert(bundle_of(name, other));
    }
    IdentitySource::fixed(Material { svid, bundles }, provider)
}

/// Runs a handshake in memory; the server's view of the client ID, or the first error.
fn handshake(
    server: &Arc<IdentitySource>,
    client_auth: ClientAuth,
    client: &Arc<IdentitySource>,
    expected_server: PeerIds,
) -> Result<Option<SpiffeId>, String> {
    let server_cfg = Arc::new(server_config(server, client_auth, PeerIds::Any).unwrap());
    let client_cfg = Arc::new(client_config(client, expected_server).unwrap());
    let mut s = ServerConnection::new(server_cfg).unwrap();
    let mut c =
        ClientConnection::new(client_cfg, ServerName::try_from("localhost").unwrap()).unwrap();
    for _ in 0..10 {
        let mut buf = Vec::new();
        c.write_tls(&mut buf).map_err(|e| e.to_string())?;
        let mut rd = &buf[..];
        while !rd.is_empty() {
            s.read_tls(&mut rd).map_err(|e| e.to_string())?;
        }
        s.process_new_packets()
            .map_err(|e| format!("server: {e}"))?;
        let mut buf = Vec::new();
        s.write_tls(&mut buf).map_err(|e| e.to_string())?;
        let mut rd = &buf[..];
        while !rd.is_empty() {
            c.read_tls(&mut rd).map_err(|e| e.to_string())?;
        }
        c.process_new_packets()
            .map_err(|e| format!("client: {e}"))?;
        if !s.is_handshaking() && !c.is_handshaking() {
            return Ok(peer_spiffe_id(s.peer_certificates()).ok());
        }
    }
    Err("handshake did not finish".into())
}

#[test]
fn mutual_tls_handshakes_authorize_both_sides() {
    let ca = Ca::root("prod.example");
    let server_leaf = ca.leaf(Leaf::svid("spiffe://prod.example/deploy-gate"));
    let client_leaf = ca.leaf(Leaf::svid("spiffe://prod.example/ci"));
    let server = source_for(&ca, Some(&server_leaf), &[]);
    let client = source_for(&ca, Some(&client_leaf), &[]);
    let gate_id: SpiffeId = "spiffe://prod.example/deploy-gate".parse().unwrap();

    let seen = handshake(
        &server,
        ClientAuth::Required,
        &client,
        PeerIds::exactly(gate_id.clone()),
    );
    assert_eq!(seen.unwrap().unwrap().as_str(), "spiffe://prod.example/ci");

    // The right CA but the wrong server workload: the client refuses.
    let err = handshake(
        &server,
        ClientAuth::Required,
        &client,
        PeerIds::exactly("spiffe://prod.example/other".parse().unwrap()),
    )
    .unwrap_err();
    assert!(err.starts_with("client:"), "{err}");

    // No client SVID: refused when required, admitted without identity when optional.
    let anonymous = source_for(&ca, None, &[]);
    assert!(handshake(&server, ClientAuth::Required, &anonymous, PeerIds::Any).is_err());
    assert_eq!(
        handshake(&server, ClientAuth::Optional, &anonymous, PeerIds::Any),
        Ok(None)
    );

    // A client SVID the server cannot verify fails the handshake even when optional.
    let stranger_ca = Ca::root("stranger.example");
    let stranger_leaf = stranger_ca.leaf(Leaf::svid("spiffe://stranger.example/x"));
    let stranger = source_for(&ca, Some(&stranger_leaf), &[]);
    let err = handshake(&server, ClientAuth::Optional, &stranger, PeerIds::Any).unwrap_err();
    assert!(err.starts_with("server:"), "{err}");

    // An expired client SVID, too.
    let expired = source_for(
        &ca,
        Some(&ca.leaf(Leaf {
            expired: true,
            ..Leaf::svid("spiffe://prod.example/ci")
        })),
        &[],
    );
    assert!(handshake(&server, ClientAuth::Optional, &expired, PeerIds::Any).is_err());
}

#[test]
fn a_server_can_admit_only_some_clients() {
    let ca = Ca::root("prod.example");
    let server = source_for(
        &ca,
        Some(&ca.leaf(Leaf::svid("spiffe://prod.example/region-proxy"))),
        &[],
    );
    let broker = source_for(
        &ca,
        Some(&ca.leaf(Leaf::svid("spiffe://prod.example/access-broker"))),
        &[],
    );
    let other = source_for(
        &ca,
        Some(&ca.leaf(Leaf::svid("spiffe://prod.example/other"))),
        &[],
    );
    let only_broker = PeerIds::exactly("spiffe://prod.example/access-broker".parse().unwrap());
    let cfg = |source: &Arc<IdentitySource>| {
        Arc::new(server_config(source, ClientAuth::Required, only_broker.clone()).unwrap())
    };
    for (client, ok) in [(&broker, true), (&other, false)] {
        let mut s = ServerConnection::new(cfg(&server)).unwrap();
        let mut c = ClientConnection::new(
            Arc::new(client_config(client, PeerIds::Any).unwrap()),
            ServerName::try_from("localhost").unwrap(),
        )
        .unwrap();
        let mut result = Ok(());
        for _ in 0..10 {
            let mut buf = Vec::new();
            c.write_tls(&mut buf).unwrap();
            s.read_tls(&mut &buf[..]).unwrap();
            if let Err(e) = s.process_new_packets() {
                result = Err(e);
                break;
            }
            let mut buf = Vec::new();
            s.write_tls(&mut buf).unwrap();
            c.read_tls(&mut &buf[..]).unwrap();
            let _ = c.process_new_packets();
            if !s.is_handshaking() {
                break;
            }
        }
        assert_eq!(result.is_ok(), ok, "{result:?}");
    }
}

#[tokio::test]
async fn verified_peers_become_service_principals_in_the_chain() {
    let spiffe = SpiffeAuthenticator::new()
        .group("spiffe://prod.example/ns/payments/*", "payments")
        .unwrap()
        .group("spiffe://prod.example/ci/deployer", "deployers")
        .unwrap()
        .trust_domains([td("prod.example")]);
    let chain = AuthChain::new(vec![Arc::new(spiffe)]);
    let p = chain
        .authenticate_peer(&VerifiedPeer::new(
            "spiffe://prod.example/ns/payments/sa/api",
        ))
        .await
        .unwrap();
    assert_eq!(p.subject(), "spiffe://prod.example/ns/payments/sa/api");
    assert_eq!(p.kind(), portcullis_core::PrincipalKind::Service);
    assert_eq!(p.groups().collect::<Vec<_>>(), ["payments"]);
    assert_eq!(p.auth_method(), &portcullis_identity::X509_SVID);
    assert!(
        chain
            .authenticate_peer(&VerifiedPeer::new(
                "spiffe://partner.example/ns/payments/sa/api"
            ))
            .await
            .is_err()
    );
    // Not a SPIFFE ID: not this method's, and bearer tokens are not either.
    assert!(matches!(
        chain
            .authenticate_peer(&VerifiedPeer::new("https://x"))
            .await,
        Err(portcullis_token::AuthError::Unrecognized)
    ));
    assert!(matches!(
        chain.authenticate_header(Some(b"token abc")).await,
        Err(portcullis_token::AuthError::Unrecognized)
    ));
    assert!(
        SpiffeAuthenticator::new()
            .group("spiffe://x/*/y", "g")
            .is_err()
    );
    assert!(
        SpiffeAuthenticator::new()
            .group("spiffe://x/y", "bad group")
            .is_err()
    );
}

/// Moves TLS records between `c` and `s` until both finished the handshake and every
/// record after it (TLS 1.3 session tickets) arrived.
fn pump(s: &mut ServerConnection, c: &mut ClientConnection) -> Result<(), String> {
    for _ in 0..10 {
        let mut buf = Vec::new();
        c.write_tls(&mut buf).map_err(|e| e.to_string())?;
        s.read_tls(&mut &buf[..]).map_err(|e| e.to_string())?;
        s.process_new_packets()
            .map_err(|e| format!("server: {e}"))?;
        let mut buf = Vec::new();
        s.write_tls(&mut buf).map_err(|e| e.to_string())?;
        c.read_tls(&mut &buf[..]).map_err(|e| e.to_string())?;
        c.process_new_packets()
            .map_err(|e| format!("client: {e}"))?;
        if !s.is_handshaking() && !c.is_handshaking() && !s.wants_write() && !c.wants_write() {
            return Ok(());
        }
    }
    Err("handshake did not finish".into())
}

/// A resumed session skips the client certificate, so a client admitted once would stay
/// admitted after its CA left the bundle (or its ID left the accepted ones). A server that
/// verifies clients therefore never resumes: every connection shows its SVID again.
#[test]
fn a_server_that_verifies_clients_never_resumes_a_session() {
    use rustls::HandshakeKind;

    let ca = Ca::root("prod.example");
    let server = source_for(
        &ca,
        Some(&ca.leaf(Leaf::svid("spiffe://prod.example/deploy-gate"))),
        &[],
    );
    let client = source_for(
        &ca,
        Some(&ca.leaf(Leaf::svid("spiffe://prod.example/ci"))),
        &[],
    );
    for auth in [ClientAuth::Required, ClientAuth::Optional] {
        let server_cfg = Arc::new(server_config(&server, auth, PeerIds::Any).unwrap());
        let mut client_cfg = client_config(&client, PeerIds::Any).unwrap();
        // The client would resume if it could (its cache is shared by both connections).
        client_cfg.resumption = rustls::client::Resumption::in_memory_sessions(16);
        let client_cfg = Arc::new(client_cfg);
        for round in 0..2 {
            let mut s = ServerConnection::new(server_cfg.clone()).unwrap();
            let mut c = ClientConnection::new(
                client_cfg.clone(),
                ServerName::try_from("localhost").unwrap(),
            )
            .unwrap();
            pump(&mut s, &mut c).unwrap();
            assert_eq!(
                s.handshake_kind(),
                Some(HandshakeKind::Full),
                "{auth:?} round {round}"
            );
            assert_eq!(
                peer_spiffe_id(s.peer_certificates()).unwrap().as_str(),
                "spiffe://prod.example/ci"
            );
        }
    }
}
