//! The crate never asks jsonwebtoken for its process-level crypto provider: with that
//! provider replaced by one that panics (as the automatic one does when a graph has both
//! backends, see `backend_probe.rs`), every signing and verifying path still works.
//! One test: the provider is installed once per process.
#![expect(
    clippy::unwrap_used,
    clippy::panic,
    reason = "tests: a failed unwrap is a failed test; the poisoned provider must panic"
)]

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::crypto::{CryptoProvider, KeyUtils};
use portcullis_core::ManualClock;
use portcullis_token::{
    Algorithm, JwtRules, JwtVerifier, KeySet, SessionAlgorithm, SessionIssuer, SessionKey,
};
use serde_json::json;

static POISONED: CryptoProvider = CryptoProvider {
    signer_factory: |_, _| panic!("portcullis-token used the process-level signer"),
    verifier_factory: |_, _| panic!("portcullis-token used the process-level verifier"),
    key_utils: KeyUtils::new_unimplemented(),
};

/// An RS256 token signed with aws-lc-rs directly, not jsonwebtoken (whose default is poisoned here).
fn rs256(claims: &serde_json::Value) -> String {
    let pair = aws_lc_rs::signature::RsaKeyPair::from_der(include_bytes!(
        "fixtures/rsa2048-test-only.der"
    ))
    .unwrap();
    let header = json!({"alg": "RS256", "typ": "JWT"});
    let message = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let mut signature = vec![0; pair.public_modulus_len()];
    pair.sign(
        &aws_lc_rs::signature::RSA_PKCS1_SHA256,
        &aws_lc_rs::rand::SystemRandom::new(),
        message.as_bytes(),
        &mut signature,
    )
    .unwrap();
    format!("{message}.{}", URL_SAFE_NO_PAD.encode(signature))
}

#[tokio::test]
async fn signing_and_verifying_never_use_the_process_level_provider() {
    POISONED.install_default().unwrap();

    for alg in [
        SessionAlgorithm::EdDSA,
        SessionAlgorithm::ES256,
        SessionAlgorithm::HS256,
    ] {
        let issuer = SessionIssuer::new(
            SessionKey::generate(alg).unwrap(),
            "https://broker.test",
            "proxy",
        )
        .unwrap();
        let session = issuer.issue("alice", &[]).unwrap();
        let principal = issuer.verifier().unwrap().verify(session.expose()).await;
        assert_eq!(principal.unwrap().subject(), "alice", "{alg:?}");
    }

    let t0 = 1_800_000_000;
    let mut rules = JwtRules::new("https://idp.test", "gate");
    rules.clock = Arc::new(ManualClock::new(UNIX_EPOCH + Duration::from_secs(t0)));
    rules.algorithms = vec![Algorithm::RS256];
    let token = rs256(
        &json!({"iss": "https://idp.test", "aud": "gate", "sub": "bob",
                              "exp": t0 + 60}),
    );
    let jwks: serde_json::Value =
        serde_json::from_str(include_str!("fixtures/rsa2048-test-only.jwks.json")).unwrap();
    let pem = include_str!("fixtures/rsa2048-test-only.pub.pem");
    for keys in [
        KeySet::from_jwks(&jwks).unwrap(),
        KeySet::from_public_key_pem(pem, None).unwrap(),
    ] {
        let verifier = JwtVerifier::with_keys("oidc", keys, rules.clone()).unwrap();
        assert_eq!(verifier.verify(&token).await.unwrap().subject(), "bob");
    }
}
