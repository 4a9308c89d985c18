//! [`KeySet`]: verification keys from a provider's JWKS, each with the algorithms its type
//! allows.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::DecodingKey;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, PublicKeyUse};
use serde_json::Value;

use super::MAX_KEYS;
use crate::{Algorithm, AuthError};

/// One verification key with what it may verify.
#[derive(Clone)]
struct VerifyKey {
    kid: Option<String>,
    /// The algorithms this key may verify: from the JWK's `alg` if given, else its type.
    algorithms: Vec<Algorithm>,
    key: DecodingKey,
}

impl std::fmt::Debug for VerifyKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyKey")
            .field("kid", &self.kid)
            .field("algorithms", &self.algorithms)
            .finish_non_exhaustive()
    }
}

/// A set of verification keys, as published at a JWKS endpoint. `Debug` shows key ids and
/// algorithms, never key material.
#[derive(Debug, Clone, Default)]
pub struct KeySet {
    keys: Vec<VerifyKey>,
}

/// The shortest HMAC secret accepted, in bytes (256 bits).
const MIN_HMAC_SECRET: usize = 32;

const RSA_ALGORITHMS: [Algorithm; 6] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
];

fn b64_len(field: &str, value: &str) -> Result<usize, String> {
    URL_SAFE_NO_PAD
        .decode(value.trim_end_matches('='))
        .map(|bytes| bytes.len())
        .map_err(|_| format!("`{field}` is not base64url"))
}

/// The algorithms a JWK may verify, after checking its parameters fit its type; an error
/// for keys that cannot be safe (short RSA moduli, wrong curve sizes, symmetric keys when
/// only public keys are expected).
fn algorithms_for(jwk: &Jwk, allow_symmetric: bool) -> Result<Vec<Algorithm>, String> {
    let by_type = match &jwk.algorithm {
        AlgorithmParameters::RSA(rsa) => {
            if b64_len("n", &rsa.n)? < 256 {
                return Err("RSA modulus shorter than 2048 bits".into());
            }
            b64_len("e", &rsa.e)?;
            RSA_ALGORITHMS.to_vec()
        }
        AlgorithmParameters::EllipticCurve(ec) => {
            let (size, alg) = match ec.curve {
                EllipticCurve::P256 => (32, Algorithm::ES256),
                EllipticCurve::P384 => (48, Algorithm::ES384),
                _ => return Err("EC key on an unsupported curve".into()),
            };
            if b64_len("x", &ec.x)? != size || b64_len("y", &ec.y)? != size {
                return Err("EC coordinates of the wrong size for the curve".into());
            }
            vec![alg]
        }
        AlgorithmParameters::OctetKeyPair(okp) => {
            if okp.curve != EllipticCurve::Ed25519 || b64_len("x", &okp.x)? != 32 {
                return Err("OKP key that is not a 32-byte Ed25519 key".into());
            }
            vec![Algorithm::EdDSA]
        }
        AlgorithmParameters::OctetKey(oct) => {
            if !allow_symmetric {
                return Err("symmetric key in a public key set".into());
            }
            if b64_len("k", &oct.value)? < MIN_HMAC_SECRET {
                return Err("HMAC key shorter than 256 bits".into());
            }
            vec![Algorithm::HS256, Algorithm::HS384, Algorithm::HS512]
        }
        _ => return Err("unsupported key type".into()),
    };
    match jwk.common.key_algorithm {
        None => Ok(by_type),
        Some(declared) => {
            let declared = jsonwebtoken::Algorithm::try_from(declared)
                .ok()
                .and_then(Algorithm::from_jwt)
                .ok_or_else(|| "`alg` is not a signature algorithm".to_owned())?;
            if by_type.contains(&declared) {
                Ok(vec![declared])
            } else {
                Err(format!("`alg` {declared} does not fit the key type"))
            }
        }
    }
}

impl KeySet {
    /// Parses a JWKS document (`{"keys": [...]}`). Keys that cannot verify signatures (an
    /// encryption key, an unknown type, a short RSA modulus, a curve/size mismatch) are
    /// skipped with a debug log, as other verifiers do; a document with no usable key is an
    /// error, since it could verify nothing.
    ///
    /// # Errors
    ///
    /// [`AuthError::Provider`] if it is not a JWKS document, has more than [`MAX_KEYS`]
    /// keys, or no usable key.
    pub fn from_jwks(document: &Value) -> Result<Self, AuthError> {
        Self::parse(document, false)
    }

    pub(crate) fn parse(document: &Value, allow_symmetric: bool) -> Result<Self, AuthError> {
        let keys = document
            .get("keys")
            .and_then(Value::as_array)
            .ok_or_else(|| AuthError::Provider("JWKS document has no `keys` array".into()))?;
        if keys.len() > MAX_KEYS {
            return Err(AuthError::Provider(format!(
                "JWKS document has {} keys; at most {MAX_KEYS} are accepted",
                keys.len()
            )));
        }
        let mut set = KeySet::default();
        for (index, raw) in keys.iter().enumerate() {
            let parsed = serde_json::from_value::<Jwk>(raw.clone())
                .map_err(|e| e.to_string())
                .and_then(|jwk| {
                    if matches!(jwk.common.public_key_use, Some(ref u) if *u != PublicKeyUse::Signature)
                    {
                        return Err("not a signature key (`use`)".into());
                    }
                    let algorithms = algorithms_for(&jwk, allow_symmetric)?;
                    let key = DecodingKey::from_jwk(&jwk).map_err(|e| e.to_string())?;
                    Ok(VerifyKey {
                        kid: jwk.common.key_id.clone(),
                        algorithms,
                        key,
                    })
                });
            match parsed {
                Ok(key) => set.keys.push(key),
                Err(why) => tracing::debug!(index, why = %why, "skipping JWKS key"),
            }
        }
        if set.keys.is_empty() {
            return Err(AuthError::Provider(
                "JWKS document has no usable signature key".into(),
            ));
        }
        Ok(set)
    }

    pub(crate) fn single(kid: Option<String>, algorithm: Algorithm, key: DecodingKey) -> Self {
        KeySet {
            keys: vec![VerifyKey {
                kid,
                algorithms: vec![algorithm],
                key,
            }],
        }
    }

    /// How many keys the set holds.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The keys that may verify a token with this `kid` (if any) and `alg`.
    pub(crate) fn candidates<'a>(
        &'a self,
        kid: Option<&'a str>,
        alg: Algorithm,
    ) -> impl Iterator<Item = &'a DecodingKey> + 'a {
        self.keys
            .iter()
            .filter(move |k| k.algorithms.contains(&alg))
            .filter(move |k| kid.is_none() || k.kid.as_deref() == kid)
            .map(|k| &k.key)
    }
}
