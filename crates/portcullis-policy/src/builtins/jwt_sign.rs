//! `io.jwt.encode_sign` and `io.jwt.encode_sign_raw`: a compact JWS signed with a private
//! JWK (the first of a JWK set), through jsonwebtoken's aws-lc-rs provider named
//! explicitly. Keys: `oct` (HS*), `RSA` with its CRT parameters (RS*, PS*), `EC` P-256 /
//! P-384 (ES256 / ES384) and `OKP` Ed25519 (EdDSA); `EC` P-521 (ES512, which jsonwebtoken
//! lacks) with aws-lc-rs itself.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey};

use super::jwt::Alg;
use regorus::Value;

use super::{Args, BuiltinError};

/// The algorithms OPA signs with.
const ALGORITHMS: &[&str] = &[
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "HS256",
    "HS384", "HS512", "EdDSA",
];

/// A DER element: tag, length, content.
fn der(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(u8::try_from(len).unwrap_or(0));
    } else {
        let bytes: Vec<u8> = len
            .to_be_bytes()
            .into_iter()
            .skip_while(|b| *b == 0)
            .collect();
        out.push(0x80 | u8::try_from(bytes.len()).unwrap_or(0));
        out.extend(bytes);
    }
    out.extend_from_slice(content);
    out
}

/// A DER INTEGER of an unsigned big-endian number.
fn der_uint(bytes: &[u8]) -> Vec<u8> {
    let trimmed: &[u8] = match bytes.iter().position(|b| *b != 0) {
        Some(first) => bytes.get(first..).unwrap_or(&[0]),
        None => &[0],
    };
    let mut content = Vec::with_capacity(trimmed.len() + 1);
    if trimmed.first().is_some_and(|b| b & 0x80 != 0) {
        content.push(0);
    }
    content.extend_from_slice(trimmed);
    der(0x02, &content)
}

fn sequence(parts: &[Vec<u8>]) -> Vec<u8> {
    der(0x30, &parts.concat())
}

/// A member of a JWK, base64url-decoded.
fn member(args: &Args<'_>, jwk: &serde_json::Value, name: &str) -> Result<Vec<u8>, BuiltinError> {
    let text = jwk
        .get(name)
        .and_then(serde_json::Value::as_str)
        .ok_or_else(|| args.invalid(format!("the JWK has no {name}")))?;
    URL_SAFE_NO_PAD
        .decode(text.trim_end_matches('='))
        .map_err(|_| args.invalid(format!("the JWK's {name} is not base64url")))
}

/// The signing key of a JWK, for `alg`.
fn signing_key(
    args: &Args<'_>,
    jwk: &serde_json::Value,
    alg: Algorithm,
) -> Result<EncodingKey, BuiltinError> {
    let kty = jwk
        .get("kty")
        .and_then(serde_json::Value::as_str)
        .unwrap_or_default();
    match kty {
        "oct" => Ok(EncodingKey::from_secret(&member(args, jwk, "k")?)),
        "RSA" => {
            let mut parts = vec![der_uint(&[0])];
            for name in ["n", "e", "d", "p", "q", "dp", "dq", "qi"] {
                parts.push(der_uint(&member(args, jwk, name)?));
            }
            Ok(EncodingKey::from_rsa_der(&sequence(&parts)))
        }
        "EC" => {
            let crv = jwk
                .get("crv")
                .and_then(serde_json::Value::as_str)
                .unwrap_or_default();
            let (curve_oid, size): (&[u8], usize) = match crv {
                "P-256" => (&[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07], 32),
                "P-384" => (&[0x2b, 0x81, 0x04, 0x00, 0x22], 48),
                other => {
                    return Err(args.invalid(format!("unsupported EC curve for signing: {other}")));
                }
            };
            let pad = |bytes: Vec<u8>| {
                let mut padded = vec![0u8; size.saturating_sub(bytes.len())];
                padded.extend(bytes);
                padded
            };
            let d = pad(member(args, jwk, "d")?);
            let mut point = vec![0x00, 0x04];
            point.extend(pad(member(args, jwk, "x")?));
            point.extend(pad(member(args, jwk, "y")?));
            let ec_private_key =
                sequence(&[der_uint(&[1]), der(0x04, &d), der(0xa1, &der(0x03, &point))]);
            let algorithm = sequence(&[
                der(0x06, &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01]),
                der(0x06, curve_oid),
            ]);
            Ok(EncodingKey::from_ec_der(&sequence(&[
                der_uint(&[0]),
                algorithm,
                der(0x04, &ec_private_key),
            ])))
        }
        "OKP" if jwk.get("crv").and_then(serde_json::Value::as_str) == Some("Ed25519") => {
            let seed = member(args, jwk, "d")?;
            Ok(EncodingKey::from_ed_der(&sequence(&[
                der_uint(&[0]),
                sequence(&[der(0x06, &[0x2b, 0x65, 0x70])]),
                der(0x04, &der(0x04, &seed)),
            ])))
        }
        other => Err(args.invalid(format!("unsupported JWK key type for {alg:?}: {other:?}"))),
    }
}

/// Signs `header.payload` (both raw bytes, base64url-encoded here) with the first key of
/// the JWK (set) `jwk`.
fn sign(args: &Args<'_>, header: &[u8], payload: &[u8], jwk: &str) -> Result<Value, BuiltinError> {
    let jwk: serde_json::Value = serde_json::from_str(jwk)
        .map_err(|e| args.invalid(format!("failed to parse the JWK: {e}")))?;
    let key = match jwk.get("keys") {
        Some(keys) => keys
            .as_array()
            .and_then(|keys| keys.first())
            .ok_or_else(|| args.invalid("no keys found in JWK set"))?,
        None => &jwk,
    };
    let parsed: serde_json::Value = serde_json::from_slice(header)
        .map_err(|e| args.invalid(format!("missing or invalid 'alg' header: {e}")))?;
    let alg = parsed
        .get("alg")
        .and_then(serde_json::Value::as_str)
        .ok_or_else(|| {
            args.invalid("missing or invalid 'alg' header: unsupported signature algorithm")
        })?;
    if !ALGORITHMS.contains(&alg) {
        return Err(args.invalid(format!("unknown JWS algorithm: {alg}")));
    }
    let algorithm = Alg::parse(alg)
        .ok_or_else(|| args.invalid(format!("unsupported signature algorithm: {alg}")))?;
    let typ = parsed.get("typ").and_then(serde_json::Value::as_str);
    if typ.is_none_or(|t| t == "JWT")
        && serde_json::from_slice::<serde::de::IgnoredAny>(payload).is_err()
    {
        return Err(args.invalid("type is JWT but payload is not JSON"));
    }
    let mut token = String::new();
    URL_SAFE_NO_PAD.encode_string(header, &mut token);
    token.push('.');
    URL_SAFE_NO_PAD.encode_string(payload, &mut token);
    let signature = match algorithm {
        Alg::Jwt(algorithm) => {
            let key = signing_key(args, key, algorithm)?;
            let signer =
                (jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER.signer_factory)(&algorithm, &key)
                    .map_err(|e| args.invalid(format!("the key cannot sign {alg}: {e}")))?;
            signer
                .try_sign(token.as_bytes())
                .map_err(|e| args.invalid(format!("signing failed: {e}")))?
        }
        Alg::Es512 => sign_es512(args, key, token.as_bytes())?,
    };
    token.push('.');
    URL_SAFE_NO_PAD.encode_string(signature, &mut token);
    Ok(Value::from(token))
}

/// An ES512 signature (ECDSA P-521, SHA-512, fixed-size `r || s`) by the `EC` JWK `jwk`,
/// with aws-lc-rs itself: jsonwebtoken has no ES512.
fn sign_es512(
    args: &Args<'_>,
    jwk: &serde_json::Value,
    message: &[u8],
) -> Result<Vec<u8>, BuiltinError> {
    use aws_lc_rs::signature::{ECDSA_P521_SHA512_FIXED_SIGNING, EcdsaKeyPair};
    if jwk.get("kty").and_then(serde_json::Value::as_str) != Some("EC")
        || jwk.get("crv").and_then(serde_json::Value::as_str) != Some("P-521")
    {
        return Err(args.invalid("ES512 needs an EC JWK on curve P-521"));
    }
    let pad = |bytes: Vec<u8>| {
        let mut padded = vec![0u8; 66usize.saturating_sub(bytes.len())];
        padded.extend(bytes);
        padded
    };
    let d = pad(member(args, jwk, "d")?);
    let mut point = vec![0x04];
    point.extend(pad(member(args, jwk, "x")?));
    point.extend(pad(member(args, jwk, "y")?));
    let pair =
        EcdsaKeyPair::from_private_key_and_public_key(&ECDSA_P521_SHA512_FIXED_SIGNING, &d, &point)
            .map_err(|e| args.invalid(format!("the JWK is not a P-521 key pair: {e}")))?;
    let signature = pair
        .sign(&aws_lc_rs::rand::SystemRandom::new(), message)
        .map_err(|e| args.invalid(format!("signing failed: {e}")))?;
    Ok(signature.as_ref().to_vec())
}

/// JSON as Go's `json.Marshal` writes it: compact, object keys sorted, `<`, `>`, `&`,
/// U+2028 and U+2029 escaped.
fn go_json(args: &Args<'_>, value: &Value) -> Result<Vec<u8>, BuiltinError> {
    let json = serde_json::to_string(value)
        .map_err(|e| args.invalid(format!("failed to marshal JSON: {e}")))?;
    Ok(json
        .replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
        .replace('\u{2028}', "\\u2028")
        .replace('\u{2029}', "\\u2029")
        .into_bytes())
}

/// `io.jwt.encode_sign(headers, payload, key)`: the objects serialized as Go's JSON.
pub(super) fn encode_sign(args: &Args<'_>) -> Result<Value, BuiltinError> {
    args.object(0)?;
    args.object(1)?;
    args.object(2)?;
    let header = go_json(args, args.get(0)?)?;
    let payload = go_json(args, args.get(1)?)?;
    let key = String::from_utf8(go_json(args, args.get(2)?)?)
        .map_err(|_| args.invalid("the key is not UTF-8"))?;
    sign(args, &header, &payload, &key)
}

/// `io.jwt.encode_sign_raw(headers, payload, key)`: the strings used as they are.
pub(super) fn encode_sign_raw(args: &Args<'_>) -> Result<Value, BuiltinError> {
    let (header, payload, key) = (args.string(0)?, args.string(1)?, args.string(2)?);
    sign(args, header.as_bytes(), payload.as_bytes(), key)
}
