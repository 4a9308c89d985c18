//! Signed bundles in OPA's format: a `.signatures.json` at the bundle's top holding one
//! JWS whose payload lists every file of the bundle with its digest.
//!
//! [`BundleVerifier`] checks such a bundle against keys configured out of band before it is
//! read ([`Bundle::verified`](crate::Bundle::verified)); [`BundleSigner`] writes the
//! signature, for a delivery service that builds bundles. Both follow OPA so bundles signed
//! by `opa sign` verify here and the other way round: the key is chosen by the configured
//! key id, else the token's `kid`, else the payload's `keyid`; the payload's `scope` must
//! equal the configured one; JSON files (`.manifest`, `data.json`) are hashed in canonical
//! form (keys sorted, no whitespace, numbers as written), other files byte for byte.
//!
//! Signatures are made and checked with jsonwebtoken's aws-lc-rs provider named
//! explicitly, never with `jsonwebtoken::encode`/`decode`: those use the process-level
//! provider, which is ambiguous (and panics) when an embedder's graph enables a second
//! jsonwebtoken backend.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::crypto::CryptoProvider;
use jsonwebtoken::{DecodingKey, EncodingKey, Header};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::PolicyError;
use crate::bundle::clean_path;

/// The signature file's name, at the top of the bundle.
pub const SIGNATURES_FILE: &str = ".signatures.json";

/// The longest `.signatures.json` read.
const MAX_SIGNATURES_BYTES: usize = 1 << 20;

/// A JWS signature algorithm for bundle signatures, as written in JOSE (`RS256`,
/// `ES256`, `EdDSA`…); in configuration files it is that string. `none` is not one.
///
/// ```
/// use portcullis_policy::Algorithm;
///
/// let alg: Algorithm = "PS256".parse()?;
/// assert_eq!(alg, Algorithm::PS256);
/// assert_eq!(alg.to_string(), "PS256");
/// assert!(!alg.is_hmac());
/// assert!("none".parse::<Algorithm>().is_err());
/// # Ok::<(), portcullis_policy::PolicyError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Algorithm {
    /// HMAC with SHA-256 (a shared secret).
    HS256,
    /// HMAC with SHA-384 (a shared secret).
    HS384,
    /// HMAC with SHA-512 (a shared secret).
    HS512,
    /// ECDSA on P-256 with SHA-256.
    ES256,
    /// ECDSA on P-384 with SHA-384.
    ES384,
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    RS256,
    /// RSASSA-PKCS1-v1_5 with SHA-384.
    RS384,
    /// RSASSA-PKCS1-v1_5 with SHA-512.
    RS512,
    /// RSASSA-PSS with SHA-256.
    PS256,
    /// RSASSA-PSS with SHA-384.
    PS384,
    /// RSASSA-PSS with SHA-512.
    PS512,
    /// Ed25519.
    EdDSA,
}

/// Every algorithm, in the order of the enum.
const ALGORITHMS: [Algorithm; 12] = [
    Algorithm::HS256,
    Algorithm::HS384,
    Algorithm::HS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::EdDSA,
];

impl Algorithm {
    /// The JOSE name: `"RS256"`, `"EdDSA"`…
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::HS256 => "HS256",
            Algorithm::HS384 => "HS384",
            Algorithm::HS512 => "HS512",
            Algorithm::ES256 => "ES256",
            Algorithm::ES384 => "ES384",
            Algorithm::RS256 => "RS256",
            Algorithm::RS384 => "RS384",
            Algorithm::RS512 => "RS512",
            Algorithm::PS256 => "PS256",
            Algorithm::PS384 => "PS384",
            Algorithm::PS512 => "PS512",
            Algorithm::EdDSA => "EdDSA",
        }
    }

    /// Whether this is an HMAC (shared-secret) algorithm.
    #[must_use]
    pub fn is_hmac(self) -> bool {
        matches!(self, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512)
    }

    fn to_jwt(self) -> jsonwebtoken::Algorithm {
        use jsonwebtoken::Algorithm as J;
        match self {
            Algorithm::HS256 => J::HS256,
            Algorithm::HS384 => J::HS384,
            Algorithm::HS512 => J::HS512,
            Algorithm::ES256 => J::ES256,
            Algorithm::ES384 => J::ES384,
            Algorithm::RS256 => J::RS256,
            Algorithm::RS384 => J::RS384,
            Algorithm::RS512 => J::RS512,
            Algorithm::PS256 => J::PS256,
            Algorithm::PS384 => J::PS384,
            Algorithm::PS512 => J::PS512,
            Algorithm::EdDSA => J::EdDSA,
        }
    }

    /// The local name of a JWT library algorithm; `None` for one not accepted here.
    fn from_jwt(alg: jsonwebtoken::Algorithm) -> Option<Self> {
        ALGORITHMS.into_iter().find(|a| a.to_jwt() == alg)
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Algorithm {
    type Err = PolicyError;

    /// Parses a JOSE name, exactly (case matters, as in a JWS header).
    ///
    /// # Errors
    ///
    /// [`PolicyError::Signature`] naming the algorithms there are.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ALGORITHMS
            .into_iter()
            .find(|a| a.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = ALGORITHMS.iter().map(|a| a.as_str()).collect();
                key_error(format!(
                    "unknown signature algorithm {:?}: use one of {}",
                    s.chars().take(40).collect::<String>(),
                    names.join(", ")
                ))
            })
    }
}

/// The one provider bundle signatures are made and checked with, named explicitly so the
/// process-level default (ambiguous with two backends in a graph) is never consulted.
fn provider() -> &'static CryptoProvider {
    &jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER
}

/// A key that bundle signatures are verified with.
#[derive(Clone)]
pub struct VerificationKey {
    algorithm: Algorithm,
    key: DecodingKey,
    scope: Option<String>,
    /// An HMAC secret (never shown) rather than a public key.
    secret: bool,
}

impl fmt::Debug for VerificationKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerificationKey")
            .field("algorithm", &self.algorithm)
            .field("scope", &self.scope)
            .field(
                "key",
                &if self.secret {
                    "<redacted secret>"
                } else {
                    "<public key>"
                },
            )
            .finish()
    }
}

fn key_error(message: impl Into<String>) -> PolicyError {
    PolicyError::Signature {
        bundle: "<key>".to_owned(),
        message: message.into(),
    }
}

/// The kinds of PEM key an algorithm takes.
enum Family {
    Rsa,
    Ec,
    Ed,
}

/// The PEM key kind for `algorithm`; HMAC algorithms take a secret (`hmac` names the
/// constructor to use instead).
fn pem_family(algorithm: Algorithm, hmac: &str) -> Result<Family, PolicyError> {
    match algorithm {
        Algorithm::ES256 | Algorithm::ES384 => Ok(Family::Ec),
        Algorithm::EdDSA => Ok(Family::Ed),
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => Err(key_error(format!(
            "{algorithm} takes a shared secret ({hmac}), not a PEM key"
        ))),
        // RS256/384/512 and PS256/384/512.
        _ => Ok(Family::Rsa),
    }
}

impl VerificationKey {
    /// A public key in PEM (`PUBLIC KEY`, or `RSA PUBLIC KEY` for RSA) for `algorithm`:
    /// RS256/384/512, PS256/384/512, ES256/384 or EdDSA.
    ///
    /// # Errors
    ///
    /// [`PolicyError::Signature`] if the algorithm is an HMAC one or the PEM does not hold
    /// a key of its kind.
    pub fn from_pem(algorithm: Algorithm, pem: &[u8]) -> Result<Self, PolicyError> {
        let key = match pem_family(algorithm, "VerificationKey::hmac")? {
            Family::Ec => DecodingKey::from_ec_pem(pem),
            Family::Ed => DecodingKey::from_ed_pem(pem),
            Family::Rsa => DecodingKey::from_rsa_pem(pem),
        }
        .map_err(|e| key_error(format!("not a {algorithm} public key in PEM: {e}")))?;
        Ok(VerificationKey {
            algorithm,
            key,
            scope: None,
            secret: false,
        })
    }

    /// A shared secret for HS256/384/512.
    ///
    /// # Errors
    ///
    /// [`PolicyError::Signature`] if the algorithm is not an HMAC one or the secret is
    /// shorter than 32 bytes.
    pub fn hmac(algorithm: Algorithm, secret: &[u8]) -> Result<Self, PolicyError> {
        if !algorithm.is_hmac() {
            return Err(key_error(format!("{algorithm} is not an HMAC algorithm")));
        }
        if secret.len() < 32 {
            return Err(key_error("an HMAC secret must be at least 32 bytes"));
        }
        Ok(VerificationKey {
            algorithm,
            key: DecodingKey::from_secret(secret),
            scope: None,
            secret: true,
        })
    }

    /// The scope a signature made with this key must carry, unless the verifier names one.
    #[must_use]
    pub fn with_scope(mut self, scope: impl Into<String>) -> Self {
        self.scope = Some(scope.into());
        self
    }
}

/// Checks bundle signatures: which keys are trusted, which one to use, which scope to
/// expect. A bundle read with a verifier must be signed, every file must be listed in the
/// signature with a matching digest, and the signature may list no file the bundle lacks.
///
/// ```
/// use portcullis_policy::{Algorithm, BundleSigner, BundleVerifier, VerificationKey};
///
/// let secret = b"a shared secret of at least 32 bytes!!";
/// let signer = BundleSigner::hmac(Algorithm::HS256, secret)?.key_id("ci");
/// let mut files = vec![
///     (".manifest".to_owned(), br#"{"revision": "7", "roots": ["authz"]}"#.to_vec()),
///     ("authz/p.rego".to_owned(), b"package authz\nallow := true\n".to_vec()),
/// ];
/// files.push((".signatures.json".to_owned(), signer.sign("authz", &files)?));
///
/// let verifier = BundleVerifier::new().key("ci", VerificationKey::hmac(Algorithm::HS256, secret)?);
/// let bundle = portcullis_policy::Bundle::verified("authz", files.clone(), &verifier)?;
/// assert_eq!(bundle.revision(), "7");
///
/// // One changed byte and the bundle is refused.
/// files[1].1 = b"package authz\nallow := false\n".to_vec();
/// assert!(portcullis_policy::Bundle::verified("authz", files, &verifier).is_err());
/// # Ok::<(), portcullis_policy::PolicyError>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct BundleVerifier {
    keys: BTreeMap<String, VerificationKey>,
    key_id: Option<String>,
    scope: Option<String>,
}

/// One file as the signature lists it.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct SignedFile {
    name: String,
    hash: String,
    algorithm: String,
}

/// The JWS payload.
#[derive(Debug, Serialize, Deserialize)]
struct SignedFiles {
    files: Vec<SignedFile>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    keyid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    scope: Option<String>,
}

/// The `.signatures.json` document.
#[derive(Debug, Serialize, Deserialize)]
struct SignaturesDocument {
    signatures: Vec<String>,
}

impl BundleVerifier {
    /// A verifier that trusts no key yet (and so refuses every bundle).
    pub fn new() -> Self {
        BundleVerifier::default()
    }

    /// Trusts `key` under `id`.
    #[must_use]
    pub fn key(mut self, id: impl Into<String>, key: VerificationKey) -> Self {
        self.keys.insert(id.into(), key);
        self
    }

    /// Always verifies with the key `id`, whatever the signature names (OPA's
    /// `signing.keyid`).
    #[must_use]
    pub fn key_id(mut self, id: impl Into<String>) -> Self {
        self.key_id = Some(id.into());
        self
    }

    /// The scope signatures must carry, overriding the key's own.
    #[must_use]
    pub fn scope(mut self, scope: impl Into<String>) -> Self {
        self.scope = Some(scope.into());
        self
    }

    /// Verifies bundle `bundle`'s `files` (paths as in the bundle) against their
    /// `.signatures.json`.
    ///
    /// # Errors
    ///
    /// [`PolicyError::Signature`] if the signature is missing, malformed, made with an
    /// unknown key or another algorithm, does not verify, has the wrong scope, or the
    /// files and the digests it lists differ in any way; [`PolicyError::Bundle`] for a
    /// bad path.
    pub fn verify(&self, bundle: &str, files: &[(String, Vec<u8>)]) -> Result<(), PolicyError> {
        let fail = |message: String| PolicyError::Signature {
            bundle: bundle.to_owned(),
            message,
        };
        let mut contents = Vec::with_capacity(files.len());
        let mut signatures = None;
        for (raw, bytes) in files {
            let path = clean_path(bundle, raw)?;
            if path == SIGNATURES_FILE {
                signatures = Some(bytes);
            } else {
                contents.push((path, bytes));
            }
        }
        let signatures = signatures.ok_or_else(|| {
            fail(format!(
                "the bundle is not signed ({SIGNATURES_FILE} is missing) and signatures are required"
            ))
        })?;
        if signatures.len() > MAX_SIGNATURES_BYTES {
            return Err(fail(format!("{SIGNATURES_FILE} is over 1 MiB")));
        }
        let document: SignaturesDocument = serde_json::from_slice(signatures)
            .map_err(|e| fail(format!("{SIGNATURES_FILE}: {e}")))?;
        let [token] = document.signatures.as_slice() else {
            return Err(fail(format!(
                "{SIGNATURES_FILE} must hold exactly one signature, not {}",
                document.signatures.len()
            )));
        };
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| fail(format!("the signature is not a JWS: {e}")))?;
        let key_id = match (&self.key_id, &header.kid) {
            (Some(id), _) | (None, Some(id)) => id.clone(),
            (None, None) => unverified_keyid(token).ok_or_else(|| {
                fail("the signature names no key (no kid, no keyid) and none is configured".into())
            })?,
        };
        let key = self
            .keys
            .get(&key_id)
            .ok_or_else(|| fail(format!("signed with unknown key {key_id:?}")))?;
        if Algorithm::from_jwt(header.alg) != Some(key.algorithm) {
            return Err(fail(format!(
                "signed with {:?}, but key {key_id:?} is for {}",
                header.alg, key.algorithm
            )));
        }
        let payload = verify_jws(token, key).map_err(|e| {
            fail(format!(
                "the signature does not verify with key {key_id:?}: {e}"
            ))
        })?;
        let expected = self.scope.as_ref().or(key.scope.as_ref());
        if payload.scope.as_ref().filter(|s| !s.is_empty()) != expected.filter(|s| !s.is_empty()) {
            return Err(fail(format!(
                "the signature's scope {:?} is not the expected {:?}",
                payload.scope.unwrap_or_default(),
                expected.cloned().unwrap_or_default()
            )));
        }
        let mut listed = BTreeMap::new();
        for file in payload.files {
            let name = clean_path(bundle, &file.name)?;
            if listed.insert(name.clone(), file).is_some() {
                return Err(fail(format!("the signature lists {name:?} twice")));
            }
        }
        for (path, bytes) in contents {
            let file = listed
                .remove(&path)
                .ok_or_else(|| fail(format!("{path} is not covered by the signature")))?;
            let want = hex::decode(&file.hash)
                .map_err(|_| fail(format!("{path}: the listed hash is not hex")))?;
            let got =
                digest(&file.algorithm, &path, bytes).map_err(|e| fail(format!("{path}: {e}")))?;
            // Digests of the bundle's own files: nothing secret to time.
            if want != got {
                return Err(fail(format!("{path}: digest mismatch")));
            }
        }
        if !listed.is_empty() {
            let missing: Vec<&str> = listed.keys().map(String::as_str).collect();
            return Err(fail(format!(
                "the signature lists files the bundle lacks: {}",
                missing.join(", ")
            )));
        }
        Ok(())
    }
}

/// Checks the signature of compact JWS `token` with `key` (through [`provider`]) and
/// returns its payload.
fn verify_jws(token: &str, key: &VerificationKey) -> Result<SignedFiles, String> {
    let (message, signature) = token
        .rsplit_once('.')
        .ok_or("a JWS has three dot-separated parts")?;
    let (_, payload) = message
        .split_once('.')
        .ok_or("a JWS has three dot-separated parts")?;
    let signature = URL_SAFE_NO_PAD
        .decode(signature)
        .map_err(|_| "the signature is not base64url")?;
    // A key of another type (an RSA key for ES256…) is refused here, before any check.
    let verifier = (provider().verifier_factory)(&key.algorithm.to_jwt(), &key.key)
        .map_err(|e| format!("the key does not fit {}: {e}", key.algorithm))?;
    verifier
        .verify(message.as_bytes(), &signature)
        .map_err(|_| "the signature is not the files' signature".to_owned())?;
    let payload = URL_SAFE_NO_PAD
        .decode(payload)
        .map_err(|_| "the payload is not base64url")?;
    serde_json::from_slice(&payload).map_err(|e| format!("the payload is not a file list: {e}"))
}

/// The deprecated `keyid` claim, read before verification only to choose the key.
fn unverified_keyid(token: &str) -> Option<String> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    let claims: SignedFiles = serde_json::from_slice(&bytes).ok()?;
    claims.keyid.filter(|k| !k.is_empty())
}

/// Whether OPA hashes the file as a JSON document rather than as bytes.
fn structured(path: &str) -> bool {
    let file = path.rsplit('/').next().unwrap_or(path);
    matches!(
        file,
        "data.json" | "data.yaml" | ".manifest" | SIGNATURES_FILE
    )
}

/// The digest of one file as OPA computes it.
fn digest(algorithm: &str, path: &str, bytes: &[u8]) -> Result<Vec<u8>, String> {
    let algorithm = match algorithm {
        "SHA-256" => &aws_lc_rs::digest::SHA256,
        "SHA-384" => &aws_lc_rs::digest::SHA384,
        "SHA-512" => &aws_lc_rs::digest::SHA512,
        "SHA-512-256" => &aws_lc_rs::digest::SHA512_256,
        other => {
            return Err(format!(
                "hash algorithm {other:?} is not accepted (SHA-256, SHA-384, SHA-512, SHA-512-256)"
            ));
        }
    };
    let canonical;
    let bytes = if structured(path) {
        let raw: &RawValue = serde_json::from_slice(bytes).map_err(|e| format!("not JSON: {e}"))?;
        let mut out = Vec::with_capacity(bytes.len());
        canonical_json(raw, &mut out).map_err(|e| format!("not JSON: {e}"))?;
        canonical = out;
        &canonical
    } else {
        bytes
    };
    Ok(aws_lc_rs::digest::digest(algorithm, bytes)
        .as_ref()
        .to_vec())
}

/// Writes `value` as OPA hashes it: object keys sorted, no whitespace, strings escaped as
/// Go's encoder does (without HTML escaping), numbers exactly as written.
fn canonical_json(value: &RawValue, out: &mut Vec<u8>) -> Result<(), serde_json::Error> {
    let text = value.get().trim();
    match text.as_bytes().first() {
        Some(b'{') => {
            let object: BTreeMap<String, &RawValue> = serde_json::from_str(text)?;
            out.push(b'{');
            for (i, (key, value)) in object.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_string(&key, out)?;
                out.push(b':');
                canonical_json(value, out)?;
            }
            out.push(b'}');
        }
        Some(b'[') => {
            let items: Vec<&RawValue> = serde_json::from_str(text)?;
            out.push(b'[');
            for (i, item) in items.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                canonical_json(item, out)?;
            }
            out.push(b']');
        }
        Some(b'"') => {
            let string: String = serde_json::from_str(text)?;
            write_string(&string, out)?;
        }
        _ => out.extend_from_slice(text.as_bytes()),
    }
    Ok(())
}

/// A JSON string as Go writes it: as serde_json does, plus U+2028 and U+2029 escaped.
fn write_string(s: &str, out: &mut Vec<u8>) -> Result<(), serde_json::Error> {
    let encoded = serde_json::to_string(s)?;
    out.extend_from_slice(
        encoded
            .replace('\u{2028}', "\\u2028")
            .replace('\u{2029}', "\\u2029")
            .as_bytes(),
    );
    Ok(())
}

/// Signs bundles as `opa sign` does: a `.signatures.json` listing the SHA-256 of every
/// file, in a JWS made with a private key or a shared secret.
#[derive(Clone)]
pub struct BundleSigner {
    algorithm: Algorithm,
    key: EncodingKey,
    key_id: Option<String>,
    scope: Option<String>,
}

impl fmt::Debug for BundleSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BundleSigner")
            .field("algorithm", &self.algorithm)
            .field("key_id", &self.key_id)
            .field("scope", &self.scope)
            .field("key", &"<redacted>")
            .finish()
    }
}

impl BundleSigner {
    /// A signer with a private key in PEM (PKCS#8 `PRIVATE KEY`, or `RSA PRIVATE KEY` /
    /// `EC PRIVATE KEY`) for `algorithm`.
    ///
    /// # Errors
    ///
    /// [`PolicyError::Signature`] if the algorithm is an HMAC one or the PEM does not hold
    /// a private key of its kind.
    pub fn from_pem(algorithm: Algorithm, pem: &[u8]) -> Result<Self, PolicyError> {
        let key = match pem_family(algorithm, "BundleSigner::hmac")? {
            Family::Ec => EncodingKey::from_ec_pem(pem),
            Family::Ed => EncodingKey::from_ed_pem(pem),
            Family::Rsa => EncodingKey::from_rsa_pem(pem),
        }
        .map_err(|e| key_error(format!("not a {algorithm} private key in PEM: {e}")))?;
        Ok(BundleSigner {
            algorithm,
            key,
            key_id: None,
            scope: None,
        })
    }

    /// A signer with a shared secret for HS256/384/512.
    ///
    /// # Errors
    ///
    /// As [`VerificationKey::hmac`].
    pub fn hmac(algorithm: Algorithm, secret: &[u8]) -> Result<Self, PolicyError> {
        VerificationKey::hmac(algorithm, secret)?;
        Ok(BundleSigner {
            algorithm,
            key: EncodingKey::from_secret(secret),
            key_id: None,
            scope: None,
        })
    }

    /// Names the key in the signature's `kid` header.
    #[must_use]
    pub fn key_id(mut self, id: impl Into<String>) -> Self {
        self.key_id = Some(id.into());
        self
    }

    /// Puts `scope` in the signed payload.
    #[must_use]
    pub fn scope(mut self, scope: impl Into<String>) -> Self {
        self.scope = Some(scope.into());
        self
    }

    /// The `.signatures.json` for bundle `bundle`'s `files` (any existing
    /// `.signatures.json` among them is left out).
    ///
    /// # Errors
    ///
    /// [`PolicyError::Bundle`] for a bad path or a JSON file that does not parse;
    /// [`PolicyError::Signature`] if signing fails.
    pub fn sign(&self, bundle: &str, files: &[(String, Vec<u8>)]) -> Result<Vec<u8>, PolicyError> {
        let mut listed = Vec::with_capacity(files.len());
        for (raw, bytes) in files {
            let name = clean_path(bundle, raw)?;
            if name == SIGNATURES_FILE {
                continue;
            }
            let hash = digest("SHA-256", &name, bytes)
                .map_err(|e| PolicyError::bundle(bundle, format!("{name}: {e}")))?;
            listed.push(SignedFile {
                name,
                hash: hex::encode(hash),
                algorithm: "SHA-256".to_owned(),
            });
        }
        let payload = SignedFiles {
            files: listed,
            keyid: None,
            scope: self.scope.clone(),
        };
        let mut header = Header::new(self.algorithm.to_jwt());
        header.kid.clone_from(&self.key_id);
        let token = self
            .token(&header, &payload)
            .map_err(|message| PolicyError::Signature {
                bundle: bundle.to_owned(),
                message: format!("signing failed: {message}"),
            })?;
        serde_json::to_vec(&SignaturesDocument {
            signatures: vec![token],
        })
        .map_err(|e| PolicyError::bundle(bundle, e.to_string()))
    }
}

impl BundleSigner {
    /// The compact JWS of `payload` under `header`, signed through [`provider`].
    fn token(&self, header: &Header, payload: &SignedFiles) -> Result<String, String> {
        let signer = (provider().signer_factory)(&self.algorithm.to_jwt(), &self.key)
            .map_err(|e| e.to_string())?;
        let header = serde_json::to_vec(header).map_err(|e| e.to_string())?;
        let payload = serde_json::to_vec(payload).map_err(|e| e.to_string())?;
        let mut token = String::with_capacity(256 + payload.len() * 4 / 3);
        URL_SAFE_NO_PAD.encode_string(header, &mut token);
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(payload, &mut token);
        let signature = signer
            .try_sign(token.as_bytes())
            .map_err(|e| e.to_string())?;
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(signature, &mut token);
        Ok(token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canonical(json: &str) -> String {
        let raw: &RawValue = serde_json::from_str(json).unwrap_or_else(|e| unreachable!("{e}"));
        let mut out = Vec::new();
        canonical_json(raw, &mut out).unwrap_or_else(|e| unreachable!("{e}"));
        String::from_utf8(out).unwrap_or_else(|e| unreachable!("{e}"))
    }

    #[test]
    fn json_is_hashed_in_go_canonical_form() {
        assert_eq!(
            canonical(" { \"b\" : [ 1.50 , 2e3, -0 ], \"a\": {\"z\": null, \"y\": true} } "),
            r#"{"a":{"y":true,"z":null},"b":[1.50,2e3,-0]}"#
        );
        assert_eq!(
            canonical(r#"{"s": "<&>\u2028\n\u0001é\/"}"#),
            "{\"s\":\"<&>\\u2028\\n\\u0001é/\"}"
        );
        // Keys sort by bytes, as Go's sort.Strings does.
        assert_eq!(
            canonical(r#"{"b":1,"B":2,"é":3,"a":4}"#),
            r#"{"B":2,"a":4,"b":1,"é":3}"#
        );
    }

    #[test]
    fn algorithm_names_round_trip_through_str_serde_and_the_jwt_library() {
        for alg in ALGORITHMS {
            assert_eq!(alg.as_str().parse::<Algorithm>().ok(), Some(alg));
            let json = serde_json::to_string(&alg).unwrap_or_default();
            assert_eq!(json, format!("\"{alg}\""));
            assert_eq!(Algorithm::from_jwt(alg.to_jwt()), Some(alg));
            assert_eq!(format!("{:?}", alg.to_jwt()), alg.as_str());
        }
        assert!("none".parse::<Algorithm>().is_err());
        assert!("rs256".parse::<Algorithm>().is_err());
    }

    #[test]
    fn only_json_documents_are_structured() {
        assert!(structured(".manifest"));
        assert!(structured("a/b/data.json"));
        assert!(!structured("a/b/policy.rego"));
        assert!(!structured("a/other.json"));
        assert!(digest("MD5", "x.rego", b"").is_err());
        assert!(digest("SHA-1", "x.rego", b"").is_err());
        assert_eq!(
            hex::encode(digest("SHA-256", "x.rego", b"abc").unwrap_or_default()),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
