//! Static verification keys: a PEM public key (RSA, EC P-256 / P-384, Ed25519) and an HMAC
//! secret, what each key may verify, how its key id matches, and the inputs refused.
#![expect(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    reason = "tests: a failed unwrap or index is a failed test"
)]

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::{EncodingKey, Header};
use portcullis_core::ManualClock;
use portcullis_token::{
    Algorithm, AuthError, JwtRules, JwtVerifier, KeySet, SessionAlgorithm, SessionIssuer,
    SessionKey, session_rules,
};
use serde_json::{Value, json};

const T0: u64 = 1_800_000_000;
const RSA_SPKI: &str = include_str!("fixtures/rsa2048-test-only.pub.pem");

fn clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::new(UNIX_EPOCH + Duration::from_secs(T0)))
}

fn pem(label: &str, der: &[u8]) -> String {
    let body = STANDARD.encode(der);
    let lines: Vec<&str> = body
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        lines.join("\n")
    )
}

/// The session key's public key as `-----BEGIN PUBLIC KEY-----` (SubjectPublicKeyInfo).
fn public_pem(key: &SessionKey) -> String {
    let jwk = &key.public_jwks().unwrap()["keys"][0];
    let part = |name: &str| URL_SAFE_NO_PAD.decode(jwk[name].as_str().unwrap()).unwrap();
    let der = if key.algorithm() == SessionAlgorithm::ES256 {
        let mut der =
            hex::decode("3059301306072a8648ce3d020106082a8648ce3d03010703420004").unwrap();
        der.extend(part("x"));
        der.extend(part("y"));
        der
    } else {
        assert_eq!(key.algorithm(), SessionAlgorithm::EdDSA);
        let mut der = hex::decode("302a300506032b6570032100").unwrap();
        der.extend(part("x"));
        der
    };
    pem("PUBLIC KEY", &der)
}

fn rsa_token(kid: Option<&str>) -> String {
    let mut header = Header::new(jsonwebtoken::Algorithm::RS256);
    header.kid = kid.map(str::to_owned);
    let claims = json!({"iss": "https://idp.test", "aud": "gate", "sub": "alice",
                        "iat": T0, "exp": T0 + 600});
    jsonwebtoken::encode(
        &header,
        &claims,
        &EncodingKey::from_rsa_der(include_bytes!("fixtures/rsa2048-test-only.der")),
    )
    .unwrap()
}

fn rsa_rules() -> JwtRules {
    let mut rules = JwtRules::new("https://idp.test", "gate");
    rules.clock = clock();
    rules.algorithms = vec![Algorithm::RS256, Algorithm::PS256, Algorithm::ES256];
    rules
}

#[tokio::test]
async fn rsa_pem_in_both_encodings_verifies_and_kid_narrows_it() {
    let pkcs1 = {
        // The same key as PKCS#1 `RSA PUBLIC KEY`: the RSAPublicKey inside the SPKI.
        let spki = STANDARD
            .decode(
                RSA_SPKI
                    .lines()
                    .filter(|l| !l.starts_with("-----"))
                    .collect::<String>(),
            )
            .unwrap();
        pem("RSA PUBLIC KEY", &spki[24..])
    };
    for text in [RSA_SPKI.to_owned(), pkcs1] {
        let any = JwtVerifier::with_keys(
            "static",
            KeySet::from_public_key_pem(&text, None).unwrap(),
            rsa_rules(),
        )
        .unwrap();
        for kid in [None, Some("whatever")] {
            let principal = any.verify(&rsa_token(kid)).await.unwrap();
            assert_eq!(principal.subject(), "alice");
        }
        let named = JwtVerifier::with_keys(
            "static",
            KeySet::from_public_key_pem(&text, Some("k1")).unwrap(),
            rsa_rules(),
        )
        .unwrap();
        named.verify(&rsa_token(Some("k1"))).await.unwrap();
        named.verify(&rsa_token(None)).await.unwrap();
        assert!(matches!(
            named.verify(&rsa_token(Some("k2"))).await,
            Err(AuthError::UnknownKey(kid)) if kid == "k2"
        ));
    }
}

#[tokio::test]
async fn ec_and_ed25519_pems_verify_only_their_own_algorithm() {
    for alg in [SessionAlgorithm::ES256, SessionAlgorithm::EdDSA] {
        let key = SessionKey::generate(alg).unwrap();
        let text = public_pem(&key);
        let issuer = SessionIssuer::new(key, "https://broker.test", "proxy")
            .unwrap()
            .with_clock(clock());
        let session = issuer.issue("carol", &["ops".to_owned()]).unwrap();
        let verifier = JwtVerifier::with_keys(
            "static",
            KeySet::from_public_key_pem(&text, None).unwrap(),
            issuer.rules(),
        )
        .unwrap();
        let principal = verifier.verify(session.expose()).await.unwrap();
        assert_eq!(principal.subject(), "carol");
        assert!(principal.in_group("ops"));

        // Allowed by the rules, but not by the key: an ES256 key never checks EdDSA.
        let mut wide = issuer.rules();
        wide.algorithms = vec![Algorithm::ES256, Algorithm::EdDSA, Algorithm::RS256];
        let other = SessionKey::generate(match alg {
            SessionAlgorithm::ES256 => SessionAlgorithm::EdDSA,
            _ => SessionAlgorithm::ES256,
        })
        .unwrap();
        let foreign = SessionIssuer::new(other, "https://broker.test", "proxy")
            .unwrap()
            .with_clock(clock())
            .issue("mallory", &[])
            .unwrap();
        let verifier = JwtVerifier::with_keys(
            "static",
            KeySet::from_public_key_pem(&text, None).unwrap(),
            wide,
        )
        .unwrap();
        assert!(matches!(
            verifier.verify(foreign.expose()).await,
            Err(AuthError::UnknownKey(_))
        ));
    }
}

#[test]
fn p384_is_accepted_and_unsafe_or_unsupported_pems_are_config_errors() {
    let p384 = "-----BEGIN PUBLIC KEY-----
MHYwEAYHKoZIzj0CAQYFK4EEACIDYgAEmuiGq1eiTujOrPxbosedvQbfqtZ+U7cO
trsyPQPFmMmCIQ/zE1wkMqsgCDOg20xzOD0dHwjLnb3EqTVNjH6AH5CFvQ32V5kz
HWHA2eLXlaPLBR3rmVz89iPcJrTw+oCU
-----END PUBLIC KEY-----";
    assert_eq!(KeySet::from_public_key_pem(p384, None).unwrap().len(), 1);

    let rsa1024 = "-----BEGIN PUBLIC KEY-----
MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQC+WRENJ9zdZaIt6HCSC63r8Q73
7XiUT8gERfpNfjJLmI5Ua6nSI78vX/Fj/IROzTDJDBDl+F96wlDWLOVYQWzSLlyy
2ATezEZazjKIIE6ApKTM13HPYD6wB6hrT5ctfZxAOCZie5yAR57H46jMBHo6Pj6H
soobH05lwjJBKttMNwIDAQAB
-----END PUBLIC KEY-----";
    let secp256k1 = "-----BEGIN PUBLIC KEY-----
MFYwEAYHKoZIzj0CAQYFK4EEAAoDQgAERF5DxPSEpT9W5R3Ey87vBLJNzGGJMk+n
5wSgoRMBCHQainPSUsRsnEIppdpC2QYf0Lt8BamaWS114/HpHOJx+A==
-----END PUBLIC KEY-----";
    let ed448 = "-----BEGIN PUBLIC KEY-----
MEMwBQYDK2VxAzoAfpLHi7gBvb3B+5/O7qbsEvOKQF+lf1Z/h2iaWMEpx4Wv90SU
3PbBvlRT5VjxT0KAPIw9pGpuEiEA
-----END PUBLIC KEY-----";
    let private = "-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEIKzg2fLPmu3frd/oP3LaBZGMZqll4MhlY7jyCt9yR/ms
-----END PRIVATE KEY-----";
    let rsa_private = pem(
        "RSA PRIVATE KEY",
        include_bytes!("fixtures/rsa2048-test-only.der"),
    );
    let certificate = pem("CERTIFICATE", b"not really");
    let cases: [(&str, &str); 9] = [
        (rsa1024, "2048 bits"),
        (secp256k1, "P-256 or P-384"),
        (ed448, "not an RSA, EC"),
        (private, "openssl pkey -pubout"),
        (&rsa_private, "openssl pkey -pubout"),
        (&certificate, "not a public key"),
        ("", "readable PEM block"),
        (
            "-----BEGIN PUBLIC KEY-----\n!!!\n-----END PUBLIC KEY-----",
            "readable PEM block",
        ),
        (
            "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----",
            "not an RSA, EC",
        ),
    ];
    for (text, says) in cases {
        match KeySet::from_public_key_pem(text, None) {
            Err(AuthError::Config(why)) => assert!(why.contains(says), "{why:?} for {says}"),
            other => panic!("expected a config error saying {says:?}, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn hmac_secret_verifies_the_issuers_sessions_and_hash_sized_algorithms() {
    assert!(matches!(
        KeySet::from_hmac_secret(&[1; 31], None),
        Err(AuthError::Config(why)) if why.contains("at least 32 bytes")
    ));
    let secret = [9u8; 32];
    let key = SessionKey::from_secret(SessionAlgorithm::HS256, &secret).unwrap();
    let issuer = SessionIssuer::new(key, "https://broker.test", "proxy")
        .unwrap()
        .with_clock(clock());
    let session = issuer.issue("dave", &[]).unwrap();
    let rules = session_rules(
        "https://broker.test",
        vec!["proxy".into()],
        SessionAlgorithm::HS256,
        clock(),
    );
    // The issuer's tokens name a key id; a secret given without one accepts any.
    let verifier = JwtVerifier::with_keys(
        "hmac",
        KeySet::from_hmac_secret(&secret, None).unwrap(),
        rules.clone(),
    )
    .unwrap();
    assert_eq!(
        verifier.verify(session.expose()).await.unwrap().subject(),
        "dave"
    );
    let wrong = JwtVerifier::with_keys(
        "hmac",
        KeySet::from_hmac_secret(&[8u8; 32], None).unwrap(),
        rules,
    )
    .unwrap();
    assert!(matches!(
        wrong.verify(session.expose()).await,
        Err(AuthError::BadSignature)
    ));

    // HS512 needs a 64-byte secret: a 32-byte one never checks it.
    let hs512 = |secret: &[u8]| {
        let mut header = Header::new(jsonwebtoken::Algorithm::HS512);
        header.kid = None;
        let claims: Value = json!({"iss": "https://broker.test", "aud": "proxy", "sub": "erin",
                                   "exp": T0 + 60});
        jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(secret)).unwrap()
    };
    let mut rules = JwtRules::new("https://broker.test", "proxy");
    rules.clock = clock();
    rules.algorithms = vec![Algorithm::HS512];
    let short = JwtVerifier::with_keys(
        "hmac",
        KeySet::from_hmac_secret(&secret, None).unwrap(),
        rules.clone(),
    )
    .unwrap();
    assert!(matches!(
        short.verify(&hs512(&secret)).await,
        Err(AuthError::UnknownKey(_))
    ));
    let long_secret = [3u8; 64];
    let long = JwtVerifier::with_keys(
        "hmac",
        KeySet::from_hmac_secret(&long_secret, None).unwrap(),
        rules,
    )
    .unwrap();
    assert_eq!(
        long.verify(&hs512(&long_secret)).await.unwrap().subject(),
        "erin"
    );
}

#[test]
fn debug_never_shows_key_material() {
    let secret = [0x41u8; 32];
    let shown = format!(
        "{:?}",
        KeySet::from_hmac_secret(&secret, Some("k")).unwrap()
    );
    assert!(shown.contains("HS256"), "{shown}");
    assert!(
        !shown.contains("65, 65") && !shown.contains("AAAA"),
        "{shown}"
    );
}
