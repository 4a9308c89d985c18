//! [`KeySet`]: verification keys, from a provider's JWKS or given statically (a PEM public
//! key, an HMAC secret), each with the algorithms its type allows.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::DecodingKey;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, PublicKeyUse};
use serde_json::Value;

use super::MAX_KEYS;
use crate::{Algorithm, AuthError};

/// One verification key with what it may verify.
#[derive(Clone)]
struct VerifyKey {
    kid: Option<String>,
    /// A static key given without a key id verifies tokens whatever their `kid`.
    any_kid: bool,
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

/// A set of verification keys: a provider's JWKS ([`KeySet::from_jwks`]), or one key
/// configured statically ([`KeySet::from_public_key_pem`], [`KeySet::from_hmac_secret`]).
/// `Debug` shows key ids and algorithms, never key material.
#[derive(Debug, Clone, Default)]
pub struct KeySet {
    keys: Vec<VerifyKey>,
}

/// The shortest HMAC secret accepted, in bytes (256 bits).
const MIN_HMAC_SECRET: usize = 32;

/// DER of the named-curve OIDs in an EC `SubjectPublicKeyInfo`.
const P256_OID: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
const P384_OID: &[u8] = &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22];

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

/// The label and DER body of the first PEM block in `pem`.
fn pem_block(pem: &str) -> Option<(&str, Vec<u8>)> {
    let (_, rest) = pem.split_once("-----BEGIN ")?;
    let (label, rest) = rest.split_once("-----")?;
    let (body, _) = rest.split_once(&format!("-----END {label}-----"))?;
    let body: String = body.split_whitespace().collect();
    Some((label, STANDARD.decode(body).ok()?))
}

/// An RSA (2048 bits or more), EC (P-256, P-384) or Ed25519 public key from PEM, with the
/// algorithms it may verify.
fn public_key_from_pem(pem: &str) -> Result<(Vec<Algorithm>, DecodingKey), String> {
    let (label, der) = pem_block(pem).ok_or(concat!(
        "no readable PEM block: base64 between `-----BEGIN PUBLIC KEY-----` ",
        "and `-----END PUBLIC KEY-----`"
    ))?;
    match label {
        "PUBLIC KEY" | "RSA PUBLIC KEY" => {}
        label if label.contains("PRIVATE") => {
            return Err(format!(
                "`{label}` is a private key; give its public key (`openssl pkey -pubout`)"
            ));
        }
        label => {
            return Err(format!(
                "`{label}` is not a public key; expected `PUBLIC KEY` or `RSA PUBLIC KEY`"
            ));
        }
    }
    if let Ok(rsa) = DecodingKey::from_rsa_pem(pem.as_bytes()) {
        let der = rsa.try_get_as_bytes().map_err(|e| e.to_string())?;
        let (n, e) = (crate::jws::provider()
            .key_utils
            .rsa_pub_components_from_public_key)(der)
        .map_err(|e| format!("not a valid RSA public key: {e}"))?;
        if n.iter().skip_while(|b| **b == 0).count() < 256 {
            return Err("RSA modulus shorter than 2048 bits".into());
        }
        return Ok((
            RSA_ALGORITHMS.to_vec(),
            DecodingKey::from_rsa_raw_components(&n, &e),
        ));
    }
    if let Ok(ec) = DecodingKey::from_ec_pem(pem.as_bytes()) {
        let point = ec.try_get_as_bytes().map_err(|e| e.to_string())?;
        let names = |oid: &[u8]| der.windows(oid.len()).any(|w| w == oid);
        let alg = match point.len() {
            65 if names(P256_OID) => Algorithm::ES256,
            97 if names(P384_OID) => Algorithm::ES384,
            _ => return Err("EC key that is not an uncompressed P-256 or P-384 key".into()),
        };
        if point.first() != Some(&0x04) {
            return Err("EC key that is not an uncompressed P-256 or P-384 key".into());
        }
        return Ok((vec![alg], ec));
    }
    if let Ok(ed) = DecodingKey::from_ed_pem(pem.as_bytes()) {
        if ed.try_get_as_bytes().map(<[u8]>::len).ok() != Some(32) {
            return Err("OKP key that is not a 32-byte Ed25519 key".into());
        }
        return Ok((vec![Algorithm::EdDSA], ed));
    }
    Err("not an RSA, EC (P-256, P-384) or Ed25519 public key".into())
}

impl KeySet {
    /// Parses a JWKS document (`{"keys": [...]}`). Keys that cannot verify signatures (an
    /// encryption key, an unknown type, a short RSA modulus, a curve/size mismatch) are
    /// skipped with a debug log, as other verifiers do; a document with no usable key is an
    /// error, since it could verify nothing. Symmetric (`oct`) keys are refused: a provider
    /// publishes public keys; use [`KeySet::from_hmac_secret`] for a shared secret.
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
                        any_kid: false,
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

    /// One public key in PEM: `-----BEGIN PUBLIC KEY-----` (SubjectPublicKeyInfo) for RSA,
    /// EC P-256 / P-384 and Ed25519, or `-----BEGIN RSA PUBLIC KEY-----` (PKCS#1). The key
    /// verifies only what its type allows: RSA (at least 2048 bits) RS256–RS512 and
    /// PS256–PS512, P-256 ES256, P-384 ES384, Ed25519 EdDSA; the verifier's
    /// [`JwtRules::algorithms`](crate::JwtRules::algorithms) narrows that further.
    ///
    /// With `kid`, only tokens whose header names that key id (or none) are checked with
    /// the key; without, every token is.
    ///
    /// ```
    /// use portcullis_token::{JwtRules, JwtVerifier, KeySet};
    ///
    /// // A partner's Ed25519 key, as `openssl pkey -pubout` prints it.
    /// let pem = "-----BEGIN PUBLIC KEY-----
    /// MCowBQYDK2VwAyEAN+XsAQDLfSLMmQrfPPV7GSEItAhDJUX2dZEGkWqZd6A=
    /// -----END PUBLIC KEY-----";
    /// let keys = KeySet::from_public_key_pem(pem, Some("partner-2025"))?;
    /// // Rules allow RS256, ES256 and EdDSA by default; the key itself allows EdDSA only.
    /// let rules = JwtRules::new("https://partner.example", "my-service");
    /// let verifier = JwtVerifier::with_keys("partner", keys, rules)?;
    ///
    /// // A private key is refused, with a message that says what to give instead.
    /// let private = "-----BEGIN PRIVATE KEY-----
    /// MC4CAQAwBQYDK2VwBCIEIKzg2fLPmu3frd/oP3LaBZGMZqll4MhlY7jyCt9yR/ms
    /// -----END PRIVATE KEY-----";
    /// let refused = KeySet::from_public_key_pem(private, None).unwrap_err();
    /// assert!(refused.to_string().contains("openssl pkey -pubout"));
    /// # Ok::<(), portcullis_token::AuthError>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`AuthError::Config`] saying what is wrong: no PEM block, a private key or
    /// certificate, an unsupported key type or curve, an RSA modulus under 2048 bits.
    pub fn from_public_key_pem(pem: &str, kid: Option<&str>) -> Result<Self, AuthError> {
        let (algorithms, key) = public_key_from_pem(pem)
            .map_err(|why| AuthError::Config(format!("public key PEM: {why}")))?;
        Ok(Self::one(kid, algorithms, key))
    }

    /// One HMAC secret, shared by the issuer and this verifier, of at least 32 bytes. It
    /// verifies HS256, HS384 from 48 bytes and HS512 from 64 (RFC 7518: a key at least as
    /// long as the hash); a verifier's [`JwtRules::algorithms`](crate::JwtRules::algorithms)
    /// must then list only HS* algorithms. `kid` as for
    /// [`KeySet::from_public_key_pem`]. The set keeps a copy of the secret, dropped (and
    /// zeroed) with it; `Debug` never shows it.
    ///
    /// ```
    /// use portcullis_token::{
    ///     JwtVerifier, KeySet, SessionAlgorithm, SessionIssuer, SessionKey, session_rules,
    /// };
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), portcullis_token::AuthError> {
    /// // The same 32+ random bytes on both sides, from your secret store.
    /// let secret = [0x5a_u8; 32];
    ///
    /// // The issuing service:
    /// let key = SessionKey::from_secret(SessionAlgorithm::HS256, &secret)?;
    /// let issuer = SessionIssuer::new(key, "https://broker.example", "region-proxy")?;
    /// let session = issuer.issue("alice", &[])?;
    ///
    /// // The verifying service:
    /// let rules = session_rules(
    ///     "https://broker.example",
    ///     vec!["region-proxy".into()],
    ///     SessionAlgorithm::HS256,
    ///     std::sync::Arc::new(portcullis_core::SystemClock),
    /// );
    /// let verifier = JwtVerifier::with_keys("sessions", KeySet::from_hmac_secret(&secret, None)?, rules)?;
    /// assert_eq!(verifier.verify(session.expose()).await?.subject(), "alice");
    ///
    /// assert!(KeySet::from_hmac_secret(b"too short", None).is_err());
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`AuthError::Config`] for a secret shorter than 32 bytes.
    pub fn from_hmac_secret(secret: &[u8], kid: Option<&str>) -> Result<Self, AuthError> {
        if secret.len() < MIN_HMAC_SECRET {
            return Err(AuthError::Config(format!(
                "an HMAC secret needs at least {MIN_HMAC_SECRET} bytes (256 bits); this one has {}",
                secret.len()
            )));
        }
        let mut algorithms = vec![Algorithm::HS256];
        if secret.len() >= 48 {
            algorithms.push(Algorithm::HS384);
        }
        if secret.len() >= 64 {
            algorithms.push(Algorithm::HS512);
        }
        Ok(Self::one(kid, algorithms, DecodingKey::from_secret(secret)))
    }

    /// One static key; without `kid` it is tried whatever the token's `kid`.
    fn one(kid: Option<&str>, algorithms: Vec<Algorithm>, key: DecodingKey) -> Self {
        KeySet {
            keys: vec![VerifyKey {
                kid: kid.map(str::to_owned),
                any_kid: kid.is_none(),
                algorithms,
                key,
            }],
        }
    }

    /// Adds one key with an id (a key of a session key ring).
    pub(crate) fn push_single(&mut self, kid: String, algorithm: Algorithm, key: DecodingKey) {
        self.keys.push(VerifyKey {
            kid: Some(kid),
            any_kid: false,
            algorithms: vec![algorithm],
            key,
        });
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
            .filter(move |k| k.any_kid || kid.is_none() || k.kid.as_deref() == kid)
            .map(|k| &k.key)
    }
}
