//! JWS compact signing and signature checks with an explicit crypto provider.
//!
//! `jsonwebtoken::encode` / `decode` use the process-level `CryptoProvider`, which the library
//! picks from its crate features: with both `rust_crypto` and `aws_lc_rs` in a build (this
//! crate enables `aws_lc_rs`; an embedder's graph may add the other) the choice is ambiguous
//! and every signature panics. So this crate never asks for the process default: it builds
//! signers and verifiers from the aws-lc-rs provider itself, whatever else is compiled in or
//! installed, and leaves the process default to the embedder.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::crypto::CryptoProvider;
use jsonwebtoken::{DecodingKey, EncodingKey};
use serde_json::{Map, Value, json};

use crate::{Algorithm, AuthError};

/// The one provider this crate signs and verifies with.
pub(crate) fn provider() -> &'static CryptoProvider {
    &jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER
}

/// What a verifier needs from a JWT header.
#[derive(Debug)]
pub(crate) struct JwsHeader {
    pub(crate) alg: Algorithm,
    pub(crate) kid: Option<String>,
}

/// Reads the header of a compact JWS (no key involved).
pub(crate) fn header(token: &str) -> Result<JwsHeader, AuthError> {
    // `alg: none` and unknown algorithms fail here: they are not algorithm values.
    let header =
        jsonwebtoken::decode_header(token).map_err(|e| AuthError::Malformed(e.to_string()))?;
    let alg = Algorithm::from_jwt(header.alg)
        .ok_or_else(|| AuthError::DisallowedAlgorithm(format!("{:?}", header.alg)))?;
    Ok(JwsHeader {
        alg,
        kid: header.kid,
    })
}

/// Signs `claims` as a JWT with `alg` and `kid` in the header.
pub(crate) fn sign(
    alg: Algorithm,
    kid: &str,
    claims: &Value,
    key: &EncodingKey,
) -> Result<String, AuthError> {
    let failed = |e: &dyn std::fmt::Display| AuthError::Crypto(format!("signing a JWT: {e}"));
    let signer = (provider().signer_factory)(&alg.to_jwt(), key).map_err(|e| failed(&e))?;
    let header = json!({"typ": "JWT", "alg": alg.as_str(), "kid": kid});
    let mut token = String::with_capacity(512);
    URL_SAFE_NO_PAD.encode_string(header.to_string(), &mut token);
    token.push('.');
    URL_SAFE_NO_PAD.encode_string(claims.to_string(), &mut token);
    let signature = signer.try_sign(token.as_bytes()).map_err(|e| failed(&e))?;
    token.push('.');
    URL_SAFE_NO_PAD.encode_string(signature, &mut token);
    Ok(token)
}

/// Checks the signature of `token` as `alg` under `key`, then returns its claims.
pub(crate) fn verify(
    token: &str,
    alg: Algorithm,
    key: &DecodingKey,
) -> Result<Map<String, Value>, AuthError> {
    let malformed = |what: &str| AuthError::Malformed(what.to_owned());
    let (message, signature) = token
        .rsplit_once('.')
        .ok_or_else(|| malformed("a JWT has three dot-separated parts"))?;
    let (_, payload) = message
        .split_once('.')
        .ok_or_else(|| malformed("a JWT has three dot-separated parts"))?;
    let signature = URL_SAFE_NO_PAD
        .decode(signature)
        .map_err(|_| malformed("the JWT signature is not base64url"))?;
    // A key of another type (an RSA key for ES256…) is refused here, before any check.
    let verifier = (provider().verifier_factory)(&alg.to_jwt(), key)
        .map_err(|_| AuthError::DisallowedAlgorithm(alg.to_string()))?;
    verifier
        .verify(message.as_bytes(), &signature)
        .map_err(|_| AuthError::BadSignature)?;
    let payload = URL_SAFE_NO_PAD
        .decode(payload)
        .map_err(|_| malformed("the JWT payload is not base64url"))?;
    serde_json::from_slice(&payload)
        .map_err(|e| AuthError::Malformed(format!("the JWT payload is not a JSON object: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_and_verifies_hmac_and_refuses_tampering() {
        let secret = [7u8; 32];
        let claims = json!({"sub": "alice", "n": 1});
        let token = sign(
            Algorithm::HS256,
            "k1",
            &claims,
            &EncodingKey::from_secret(&secret),
        )
        .unwrap();
        let header = header(&token).unwrap();
        assert_eq!(
            (header.alg, header.kid.as_deref()),
            (Algorithm::HS256, Some("k1"))
        );
        let key = DecodingKey::from_secret(&secret);
        let got = verify(&token, Algorithm::HS256, &key).unwrap();
        assert_eq!(Value::Object(got), claims);

        let other = DecodingKey::from_secret(&[8u8; 32]);
        assert!(matches!(
            verify(&token, Algorithm::HS256, &other),
            Err(AuthError::BadSignature)
        ));
        // The same bytes as a public key for another algorithm: refused before any check.
        assert!(matches!(
            verify(&token, Algorithm::ES256, &key),
            Err(AuthError::DisallowedAlgorithm(_))
        ));
        let (signed, _) = token.rsplit_once('.').unwrap();
        let forged = format!("{signed}.AAAA");
        assert!(matches!(
            verify(&forged, Algorithm::HS256, &key),
            Err(AuthError::BadSignature)
        ));
        assert!(matches!(
            verify("nodots", Algorithm::HS256, &key),
            Err(AuthError::Malformed(_))
        ));
    }
}
