//! `io.jwt.decode`, `io.jwt.decode_verify` and `io.jwt.verify_*`, with jsonwebtoken's
//! aws-lc-rs provider named explicitly (never the process-level default provider).
//!
//! ES512, which jsonwebtoken lacks, is verified with aws-lc-rs itself (the library behind
//! that provider): ECDSA P-521 with SHA-512, over the key's point as jsonwebtoken reads it.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use aws_lc_rs::hmac;
use base64::Engine as _;
use base64::alphabet::URL_SAFE;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use jsonwebtoken::crypto::CryptoProvider;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, DecodingKeyKind};
use regorus::Value;

use super::{Args, BuiltinError};

/// The one provider JWTs are verified with.
fn provider() -> &'static CryptoProvider {
    &jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER
}

/// base64url with or without padding, as OPA's `base64url.decode` reads it.
const BASE64URL: GeneralPurpose = GeneralPurpose::new(
    &URL_SAFE,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

/// The algorithms OPA knows in a JWT header or a JWK.
const ALGORITHMS: &[&str] = &[
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "HS256",
    "HS384", "HS512", "EdDSA",
];

/// A compact JWS split in its three base64url parts.
struct Token<'a> {
    header: &'a str,
    payload: &'a str,
    signature: &'a str,
}

impl<'a> Token<'a> {
    fn split(args: &Args<'_>, jwt: &'a str) -> Result<Self, BuiltinError> {
        if !jwt.contains('.') {
            return Err(args.invalid("encoded JWT had no period separators"));
        }
        let parts: Vec<&str> = jwt.split('.').collect();
        match parts.as_slice() {
            [header, payload, signature] => Ok(Token {
                header,
                payload,
                signature,
            }),
            _ => Err(args.invalid(format!(
                "encoded JWT must have 3 sections, found {}",
                parts.len()
            ))),
        }
    }

    /// The signed bytes: `header.payload`.
    fn message(&self) -> String {
        format!("{}.{}", self.header, self.payload)
    }

    fn signature(&self, args: &Args<'_>) -> Result<Vec<u8>, BuiltinError> {
        BASE64URL
            .decode(self.signature)
            .map_err(|e| args.invalid(format!("JWT signature had invalid encoding: {e}")))
    }

    /// The header: a JSON object, and not a JWE's (`enc`).
    fn header(&self, args: &Args<'_>) -> Result<BTreeMap<Value, Value>, BuiltinError> {
        let bytes = BASE64URL
            .decode(self.header)
            .map_err(|e| args.invalid(format!("JWT header had invalid encoding: {e}")))?;
        let header = json_object(args, &bytes).map_err(|e| match e {
            BuiltinError::Invalid { message, .. } => {
                args.invalid(format!("bad JWT header: {message}"))
            }
            other => other,
        })?;
        if header.contains_key(&Value::from("enc")) {
            return Err(args.invalid("JWT is a JWE object, which is not supported"));
        }
        Ok(header)
    }

    fn payload(&self, args: &Args<'_>) -> Result<Vec<u8>, BuiltinError> {
        BASE64URL
            .decode(self.payload)
            .map_err(|e| args.invalid(format!("JWT payload had invalid encoding: {e}")))
    }
}

/// `bytes` parsed as a JSON object.
fn json_object(args: &Args<'_>, bytes: &[u8]) -> Result<BTreeMap<Value, Value>, BuiltinError> {
    let text = std::str::from_utf8(bytes).map_err(|_| args.invalid("invalid JSON: not UTF-8"))?;
    match Value::from_json_str(text) {
        Ok(Value::Object(map)) => Ok((*map).clone()),
        Ok(_) => Err(args.invalid("decoded JSON type was not an Object")),
        Err(e) => Err(args.invalid(format!("invalid JSON: {e}"))),
    }
}

/// `io.jwt.decode(jwt)`: `[header, payload, signature]` without any check of the
/// signature (hex-encoded); a payload of content type `JWT` is decoded in turn.
pub(super) fn decode(args: &Args<'_>) -> Result<Value, BuiltinError> {
    let mut jwt = args.string(0)?.to_owned();
    // A nested JWT is at most as long as the one holding it, so this ends.
    loop {
        let token = Token::split(args, &jwt)?;
        let header = token.header(args)?;
        let payload = token.payload(args)?;
        if header.get(&Value::from("cty")) == Some(&Value::from("JWT")) {
            let inner =
                String::from_utf8(payload).map_err(|_| args.invalid("nested JWT is not UTF-8"))?;
            jwt = inner.trim_matches(|c| c == '"' || c == '\'').to_owned();
            continue;
        }
        let payload = json_object(args, &payload)?;
        let signature = token.signature(args)?;
        return Ok(Value::from(vec![
            Value::from(header),
            Value::from(payload),
            Value::from(hex::encode(signature)),
        ]));
    }
}

/// A verification key from a certificate, a public key or a JWK, with the JWK's algorithm
/// and id. A PEM key is kept in every form jsonwebtoken reads it as (RSA, EC, Ed25519).
struct Key {
    forms: Vec<DecodingKey>,
    alg: Option<String>,
    kid: Option<String>,
}

/// The keys in a PEM certificate or `PUBLIC KEY`, or in a JWK or JWK set (keys of an
/// algorithm OPA does not know are skipped).
fn keys(args: &Args<'_>, text: &str) -> Result<Vec<Key>, BuiltinError> {
    if let Some(start) = text.find("-----BEGIN ") {
        let label = text
            .get(start + "-----BEGIN ".len()..)
            .and_then(|rest| rest.split_once("-----"))
            .map(|(label, _)| label);
        if !matches!(label, Some("CERTIFICATE" | "PUBLIC KEY")) {
            return Err(args.invalid("failed to extract a Key from the PEM certificate"));
        }
        let pem = text.as_bytes();
        let forms: Vec<DecodingKey> = [
            DecodingKey::from_rsa_pem(pem),
            DecodingKey::from_ec_pem(pem),
            DecodingKey::from_ed_pem(pem),
        ]
        .into_iter()
        .filter_map(Result::ok)
        .collect();
        if forms.is_empty() {
            return Err(args.invalid("failed to parse a PEM certificate or public key"));
        }
        return Ok(vec![Key {
            forms,
            alg: None,
            kid: None,
        }]);
    }
    let json: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| args.invalid(format!("failed to parse a JWK key (set): {e}")))?;
    let jwks: Vec<Jwk> = if json.get("keys").is_some() {
        serde_json::from_value::<JwkSet>(json)
            .map_err(|e| args.invalid(format!("failed to parse a JWK key set: {e}")))?
            .keys
    } else {
        vec![
            serde_json::from_value::<Jwk>(json)
                .map_err(|e| args.invalid(format!("failed to parse a JWK key: {e}")))?,
        ]
    };
    let mut keys = Vec::with_capacity(jwks.len());
    for jwk in jwks {
        let alg = jwk.common.key_algorithm.map(|alg| {
            serde_json::to_value(alg)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default()
        });
        if alg.as_deref().is_some_and(|a| !ALGORITHMS.contains(&a)) {
            continue;
        }
        let key = DecodingKey::from_jwk(&jwk)
            .map_err(|e| args.invalid(format!("failed to use a JWK key: {e}")))?;
        keys.push(Key {
            forms: vec![key],
            alg,
            kid: jwk.common.key_id,
        });
    }
    Ok(keys)
}

/// A JWS algorithm: one of jsonwebtoken's, or ES512.
#[derive(Debug, Clone, Copy)]
pub(super) enum Alg {
    Jwt(Algorithm),
    Es512,
}

impl Alg {
    /// The algorithm a JWT header names, if it is one of these.
    pub(super) fn parse(name: &str) -> Option<Alg> {
        match name {
            "ES512" => Some(Alg::Es512),
            other => other.parse().ok().map(Alg::Jwt),
        }
    }
}

/// Whether `signature` over `message` verifies under one form of `key` with `alg`.
fn verifies(key: &Key, alg: Alg, message: &[u8], signature: &[u8]) -> bool {
    match alg {
        Alg::Jwt(alg) => {
            let signature = signature.to_vec();
            key.forms.iter().any(|form| {
                (provider().verifier_factory)(&alg, form)
                    .is_ok_and(|verifier| verifier.verify(message, &signature).is_ok())
            })
        }
        Alg::Es512 => key.forms.iter().any(|form| match form.kind() {
            DecodingKeyKind::SecretOrDer(point)
                if form.family() == jsonwebtoken::AlgorithmFamily::Ec =>
            {
                aws_lc_rs::signature::UnparsedPublicKey::new(
                    &aws_lc_rs::signature::ECDSA_P521_SHA512_FIXED,
                    point,
                )
                .verify(message, signature)
                .is_ok()
            }
            _ => false,
        }),
    }
}

/// OPA's choice of keys: the key whose id is the header's `kid` alone if there is one;
/// otherwise every key without an algorithm or of the header's algorithm.
fn verify_with_keys(
    keys: &[Key],
    header_alg: &str,
    kid: Option<&str>,
    alg: Alg,
    message: &[u8],
    signature: &[u8],
) -> bool {
    if let Some(key) = kid.and_then(|kid| keys.iter().find(|k| k.kid.as_deref() == Some(kid))) {
        return verifies(key, alg, message, signature);
    }
    keys.iter()
        .filter(|key| key.alg.as_deref().is_none_or(|a| a == header_alg))
        .any(|key| verifies(key, alg, message, signature))
}

/// A string member of a JWT header, if present.
fn header_string(
    args: &Args<'_>,
    header: &BTreeMap<Value, Value>,
    name: &str,
) -> Result<Option<String>, BuiltinError> {
    match header.get(&Value::from(name)) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.to_string())),
        Some(_) => Err(args.invalid(format!("{name}: must be a string"))),
    }
}

/// `io.jwt.verify_<alg>(jwt, certificate)` for an asymmetric algorithm.
fn verify_asymmetric(args: &Args<'_>, alg: Alg) -> Result<Value, BuiltinError> {
    let token = Token::split(args, args.string(0)?)?;
    let keys = keys(args, args.string(1)?)?;
    let signature = token.signature(args)?;
    let header = token.header(args)?;
    let header_alg = header_string(args, &header, "alg")?.unwrap_or_default();
    let kid = header_string(args, &header, "kid")?;
    let message = token.message();
    Ok(Value::from(verify_with_keys(
        &keys,
        &header_alg,
        kid.as_deref(),
        alg,
        message.as_bytes(),
        &signature,
    )))
}

/// `io.jwt.verify_hs<n>(jwt, secret)`.
fn verify_hmac(args: &Args<'_>, alg: hmac::Algorithm) -> Result<Value, BuiltinError> {
    let token = Token::split(args, args.string(0)?)?;
    let secret = args.string(1)?;
    let signature = token.signature(args)?;
    let key = hmac::Key::new(alg, secret.as_bytes());
    Ok(Value::from(
        hmac::verify(&key, token.message().as_bytes(), &signature).is_ok(),
    ))
}

macro_rules! verify_fns {
    ($($name:ident => $alg:ident),* $(,)?) => {$(
        #[doc = concat!("`io.jwt.", stringify!($name), "(jwt, certificate)`.")]
        pub(super) fn $name(args: &Args<'_>) -> Result<Value, BuiltinError> {
            verify_asymmetric(args, Alg::Jwt(Algorithm::$alg))
        }
    )*};
}

verify_fns! {
    verify_rs256 => RS256,
    verify_rs384 => RS384,
    verify_rs512 => RS512,
    verify_ps256 => PS256,
    verify_ps384 => PS384,
    verify_ps512 => PS512,
    verify_es256 => ES256,
    verify_es384 => ES384,
    verify_eddsa => EdDSA,
}

/// `io.jwt.verify_es512(jwt, certificate)`.
pub(super) fn verify_es512(args: &Args<'_>) -> Result<Value, BuiltinError> {
    verify_asymmetric(args, Alg::Es512)
}

/// `io.jwt.verify_hs256(jwt, secret)`.
pub(super) fn verify_hs256(args: &Args<'_>) -> Result<Value, BuiltinError> {
    verify_hmac(args, hmac::HMAC_SHA256)
}

/// `io.jwt.verify_hs384(jwt, secret)`.
pub(super) fn verify_hs384(args: &Args<'_>) -> Result<Value, BuiltinError> {
    verify_hmac(args, hmac::HMAC_SHA384)
}

/// `io.jwt.verify_hs512(jwt, secret)`.
pub(super) fn verify_hs512(args: &Args<'_>) -> Result<Value, BuiltinError> {
    verify_hmac(args, hmac::HMAC_SHA512)
}

/// The constraints of `io.jwt.decode_verify`.
struct Constraints {
    keys: Option<Vec<Key>>,
    secret: Option<String>,
    alg: Option<String>,
    iss: Option<String>,
    aud: Option<String>,
    /// Seconds since the epoch.
    time: f64,
}

fn constraints(args: &Args<'_>) -> Result<Constraints, BuiltinError> {
    let mut c = Constraints {
        keys: None,
        secret: None,
        alg: None,
        iss: None,
        aud: None,
        time: -1.0,
    };
    for (name, value) in args.object(1)? {
        let name = match name {
            Value::String(s) => s.as_ref(),
            _ => return Err(args.invalid("token validation constraint names are strings")),
        };
        let string = || match value {
            Value::String(s) => Ok(s.to_string()),
            _ => Err(args.invalid(format!("{name} constraint: must be a string"))),
        };
        match name {
            "cert" => c.keys = Some(keys(args, &string()?)?),
            "secret" => c.secret = Some(string()?).filter(|s| !s.is_empty()),
            "alg" => c.alg = Some(string()?).filter(|s| !s.is_empty()),
            "iss" => c.iss = Some(string()?).filter(|s| !s.is_empty()),
            "aud" => c.aud = Some(string()?).filter(|s| !s.is_empty()),
            "time" => {
                let nanos = value
                    .as_f64()
                    .map_err(|_| args.invalid("token time constraint: must be a number"))?;
                if nanos < 0.0 {
                    return Err(args.invalid("token time constraint: must not be negative"));
                }
                c.time = nanos / 1e9;
            }
            other => {
                return Err(args.invalid(format!("unknown token validation constraint: {other}")));
            }
        }
    }
    if c.time < 0.0 {
        c.time = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_err(|_| args.invalid("the clock is before 1970"))?
            .as_secs_f64();
    }
    match (&c.keys, &c.secret) {
        (Some(_), Some(_)) => Err(args.invalid("duplicate key constraints")),
        (None, None) => Err(args.invalid("no key constraint")),
        _ => Ok(c),
    }
}

/// `io.jwt.decode_verify(jwt, constraints)`: `[true, header, payload]` when the signature
/// verifies with the `cert` or `secret` of `constraints` and the token meets them (`alg`,
/// `iss`, `aud`, and `exp` / `nbf` at `time`, nanoseconds, default now); `[false, {}, {}]`
/// otherwise. A malformed token or constraint is an error.
pub(super) fn decode_verify(args: &Args<'_>) -> Result<Value, BuiltinError> {
    let unverified = || {
        Value::from(vec![
            Value::from(false),
            Value::new_object(),
            Value::new_object(),
        ])
    };
    let constraints = constraints(args)?;
    let mut jwt = args.string(0)?.to_owned();
    let (header, payload) = loop {
        let token = Token::split(args, &jwt)?;
        let header = token.header(args)?;
        let alg = header_string(args, &header, "alg")?.unwrap_or_default();
        let kid = header_string(args, &header, "kid")?;
        header_string(args, &header, "typ")?;
        let cty = header_string(args, &header, "cty")?;
        let crit = match header.get(&Value::from("crit")) {
            None => Vec::new(),
            Some(Value::Array(items)) if !items.is_empty() => items
                .iter()
                .map(|item| match item {
                    Value::String(s) => Ok(s.to_string()),
                    _ => Err(args.invalid("crit: must be a list of strings")),
                })
                .collect::<Result<Vec<_>, _>>()?,
            Some(Value::Array(_)) => return Err(args.invalid("crit: must be a nonempty list")),
            Some(_) => return Err(args.invalid("crit: must be a list")),
        };
        // A header without `alg`, or one naming a critical parameter not understood here.
        let known = ["alg", "kid", "typ", "cty", "crit"];
        let unknown_critical = header.keys().any(|k| match k {
            Value::String(k) => !known.contains(&k.as_ref()) && crit.iter().any(|c| c == &**k),
            _ => false,
        });
        if alg.is_empty() || unknown_critical {
            return Ok(unverified());
        }
        if constraints.alg.as_ref().is_some_and(|want| *want != alg) {
            return Ok(unverified());
        }
        let signature = token.signature(args)?;
        let message = token.message();
        let verified = match Alg::parse(&alg) {
            None => false,
            Some(algorithm) => match (&constraints.keys, &constraints.secret) {
                (Some(keys), _) => verify_with_keys(
                    keys,
                    &alg,
                    kid.as_deref(),
                    algorithm,
                    message.as_bytes(),
                    &signature,
                ),
                (None, Some(secret)) => {
                    let key = Key {
                        forms: vec![DecodingKey::from_secret(secret.as_bytes())],
                        alg: None,
                        kid: None,
                    };
                    verifies(&key, algorithm, message.as_bytes(), &signature)
                }
                (None, None) => false,
            },
        };
        if !verified {
            return Ok(unverified());
        }
        let payload = token.payload(args)?;
        if cty.is_some_and(|cty| cty.eq_ignore_ascii_case("JWT")) {
            jwt =
                String::from_utf8(payload).map_err(|_| args.invalid("nested JWT is not UTF-8"))?;
            continue;
        }
        break (header, json_object(args, &payload)?);
    };
    if let Some(iss) = &constraints.iss
        && payload.get(&Value::from("iss")) != Some(&Value::from(iss.as_str()))
    {
        return Ok(unverified());
    }
    match payload.get(&Value::from("aud")) {
        Some(aud) => {
            let want = Value::from(constraints.aud.as_deref().unwrap_or_default());
            let matches = match aud {
                Value::String(_) => *aud == want,
                Value::Array(items) => items.contains(&want),
                _ => false,
            };
            if !matches {
                return Ok(unverified());
            }
        }
        None if constraints.aud.is_some() => return Ok(unverified()),
        None => {}
    }
    let seconds = |name: &str| match payload.get(&Value::from(name)) {
        None => Ok(None),
        Some(Value::Number(_)) => Ok(payload
            .get(&Value::from(name))
            .and_then(|v| v.as_f64().ok())),
        Some(_) => Err(args.invalid(format!("{name} value must be a number"))),
    };
    if seconds("exp")?.is_some_and(|exp| constraints.time >= exp) {
        return Ok(unverified());
    }
    if seconds("nbf")?.is_some_and(|nbf| constraints.time < nbf) {
        return Ok(unverified());
    }
    Ok(Value::from(vec![
        Value::from(true),
        Value::from(header),
        Value::from(payload),
    ]))
}
