//! JWT verification and JWKS parsing on untrusted bytes: never a panic. A token verified by a
//! fresh Ed25519 key can only be one that key signed, which the fuzzer cannot produce.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use portcullis_token::{JwtVerifier, KeySet, SessionAlgorithm, SessionIssuer, SessionKey};

fn verifier() -> &'static (tokio::runtime::Runtime, JwtVerifier) {
    static VERIFIER: OnceLock<(tokio::runtime::Runtime, JwtVerifier)> = OnceLock::new();
    VERIFIER.get_or_init(|| {
        let key = SessionKey::generate(SessionAlgorithm::EdDSA).expect("key");
        let issuer = SessionIssuer::new(key, "https://fuzz.test", "fuzz").expect("issuer");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        (runtime, issuer.verifier().expect("verifier"))
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (runtime, verifier) = verifier();
    assert!(runtime.block_on(verifier.verify(text)).is_err());
    if let Ok(document) = serde_json::from_str::<serde_json::Value>(text) {
        let _ = KeySet::from_jwks(&document);
    }
});
