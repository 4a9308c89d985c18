//! Built and run by `tests/backend_probe.rs` in a graph where jsonwebtoken has both crypto
//! backends, `aws_lc_rs` and `rust_crypto`, as an embedder's graph may. It checks that the
//! graph really is ambiguous (jsonwebtoken's own `encode` panics), then that session tokens
//! of every algorithm, and static keys, still sign and verify through portcullis-token.

use std::panic;
use std::process::ExitCode;

use jsonwebtoken::{EncodingKey, Header};
use portcullis_token::{
    AuthError, JwtVerifier, KeySet, SessionAlgorithm, SessionIssuer, SessionKey,
};

fn jsonwebtoken_default_panics() -> bool {
    let quiet = panic::take_hook();
    panic::set_hook(Box::new(|_| {}));
    let panicked = panic::catch_unwind(|| {
        jsonwebtoken::encode(
            &Header::default(),
            &serde_json::json!({"sub": "probe"}),
            &EncodingKey::from_secret(&[7; 32]),
        )
    })
    .is_err();
    panic::set_hook(quiet);
    panicked
}

async fn round_trips() -> Result<(), AuthError> {
    for alg in [
        SessionAlgorithm::EdDSA,
        SessionAlgorithm::ES256,
        SessionAlgorithm::HS256,
    ] {
        let key = SessionKey::generate(alg)?;
        let secret = key.secret_material().to_vec();
        let issuer = SessionIssuer::new(key, "https://probe.test", "probe")?;
        let session = issuer.issue("alice", &["probers".to_owned()])?;
        let principal = issuer.verifier()?.verify(session.expose()).await?;
        assert_eq!(principal.subject(), "alice");
        println!("{alg:?}: issued and verified");
        if alg == SessionAlgorithm::HS256 {
            let keys = KeySet::from_hmac_secret(&secret, None)?;
            let verifier = JwtVerifier::with_keys("static", keys, issuer.rules())?;
            verifier.verify(session.expose()).await?;
            println!("HS256 with KeySet::from_hmac_secret: verified");
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    if !jsonwebtoken_default_panics() {
        eprintln!(
            "probe: jsonwebtoken::encode works here, so this graph does not have both backends"
        );
        return ExitCode::FAILURE;
    }
    println!("jsonwebtoken's process-level provider: ambiguous (encode panics)");
    let runtime = match tokio::runtime::Builder::new_current_thread().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("probe: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(round_trips()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("probe: {e}");
            ExitCode::FAILURE
        }
    }
}
