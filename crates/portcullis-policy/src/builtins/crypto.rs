//! `crypto.*` hashes and HMACs, as lowercase hex (SHA on `ring`; MD5, which `ring` does
//! not offer, on the `md-5` digest).

use aws_lc_rs::{digest, hmac};
use md5::{Digest as _, Md5};
use regorus::Value;

use super::{Args, BuiltinError};

fn hex_string(bytes: impl AsRef<[u8]>) -> Value {
    Value::from(hex::encode(bytes))
}

/// `crypto.md5(x)`: the MD5 digest of string `x`.
pub(super) fn md5(args: &Args<'_>) -> Result<Value, BuiltinError> {
    Ok(hex_string(Md5::digest(args.string(0)?.as_bytes())))
}

/// `crypto.sha1(x)`.
pub(super) fn sha1(args: &Args<'_>) -> Result<Value, BuiltinError> {
    let x = args.string(0)?;
    Ok(hex_string(digest::digest(
        &digest::SHA1_FOR_LEGACY_USE_ONLY,
        x.as_bytes(),
    )))
}

/// `crypto.sha256(x)`.
pub(super) fn sha256(args: &Args<'_>) -> Result<Value, BuiltinError> {
    Ok(hex_string(digest::digest(
        &digest::SHA256,
        args.string(0)?.as_bytes(),
    )))
}

fn ring_hmac(args: &Args<'_>, algorithm: hmac::Algorithm) -> Result<Value, BuiltinError> {
    let (x, key) = (args.string(0)?, args.string(1)?);
    let key = hmac::Key::new(algorithm, key.as_bytes());
    Ok(hex_string(hmac::sign(&key, x.as_bytes())))
}

/// `crypto.hmac.sha1(x, key)`.
pub(super) fn hmac_sha1(args: &Args<'_>) -> Result<Value, BuiltinError> {
    ring_hmac(args, hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY)
}

/// `crypto.hmac.sha256(x, key)`.
pub(super) fn hmac_sha256(args: &Args<'_>) -> Result<Value, BuiltinError> {
    ring_hmac(args, hmac::HMAC_SHA256)
}

/// `crypto.hmac.sha512(x, key)`.
pub(super) fn hmac_sha512(args: &Args<'_>) -> Result<Value, BuiltinError> {
    ring_hmac(args, hmac::HMAC_SHA512)
}

/// MD5's block size in bytes.
const MD5_BLOCK: usize = 64;

/// `crypto.hmac.md5(x, key)`: HMAC (RFC 2104) over MD5.
pub(super) fn hmac_md5(args: &Args<'_>) -> Result<Value, BuiltinError> {
    let (x, key) = (args.string(0)?, args.string(1)?);
    let mut block = [0u8; MD5_BLOCK];
    if key.len() > MD5_BLOCK {
        let hashed = Md5::digest(key.as_bytes());
        block
            .iter_mut()
            .zip(hashed.iter())
            .for_each(|(b, k)| *b = *k);
    } else {
        block
            .iter_mut()
            .zip(key.as_bytes())
            .for_each(|(b, k)| *b = *k);
    }
    let pad = |with: u8| block.map(|b| b ^ with);
    let inner = Md5::new()
        .chain_update(pad(0x36))
        .chain_update(x.as_bytes())
        .finalize();
    let outer = Md5::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize();
    Ok(hex_string(outer))
}

/// `crypto.hmac.equal(mac1, mac2)`: whether two MACs are equal. Strings of one length are
/// compared in time that does not depend on where they differ.
pub(super) fn hmac_equal(args: &Args<'_>) -> Result<Value, BuiltinError> {
    let (a, b) = (args.string(0)?, args.string(1)?);
    let difference = a
        .bytes()
        .zip(b.bytes())
        .fold(0u8, |acc, (x, y)| std::hint::black_box(acc | (x ^ y)));
    Ok(Value::from(a.len() == b.len() && difference == 0))
}
