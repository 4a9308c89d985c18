//! What the broker and the region proxies agree on: the forwarded path's shape, which
//! headers cross, the request hash and the broker token's claims.

use axum::http::{HeaderMap, HeaderName, Method, header};
use ring::digest::{SHA256, digest};
use serde::{Deserialize, Serialize};

/// The header carrying the broker's token from the broker to a region proxy. A request
/// that arrives at the broker with it set is refused: only the broker mints it.
pub(crate) const BROKER_TOKEN: &str = "x-broker-token";
/// The header naming the user to the upstream service, set by the region proxy.
pub(crate) const FORWARDED_USER: &str = "x-forwarded-user";
/// The broker token's issuer.
pub(crate) const ISSUER: &str = "access-broker";
/// How long a broker token lives: long enough to cross to the region, no longer.
pub(crate) const TOKEN_SECONDS: u64 = 30;

/// The broker token's claims: who, which region (the audience), and a hash binding the
/// token to one exact request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct BrokerClaims {
    pub(crate) iss: String,
    pub(crate) aud: String,
    pub(crate) sub: String,
    pub(crate) iat: u64,
    pub(crate) exp: u64,
    /// Unique per token: a region proxy accepts each once.
    pub(crate) jti: String,
    /// The service in the region.
    pub(crate) svc: String,
    /// [`request_hash`] of the request as forwarded.
    pub(crate) rh: String,
}

/// Why a request cannot be forwarded.
#[derive(Debug, thiserror::Error)]
pub(crate) enum WireError {
    #[error("{0}")]
    Path(String),
    #[error("header {0} may not be set by the caller")]
    ForbiddenHeader(String),
}

/// The SHA-256 (hex) of a body.
pub(crate) fn body_hash(body: &[u8]) -> String {
    hex::encode(digest(&SHA256, body))
}

/// The SHA-256 (hex) binding a token to `method`, `path_and_query` (as the region proxy
/// receives it: `/{service}/{rest}?{query}`) and the body, given as its [`body_hash`].
pub(crate) fn request_hash(method: &Method, path_and_query: &str, body_hash: &str) -> String {
    let canonical = format!("{}\n{path_and_query}\n{body_hash}", method.as_str());
    hex::encode(digest(&SHA256, canonical.as_bytes()))
}

/// The HTTP client both sides forward with: a whole-request timeout, no redirects
/// followed (a service's redirect goes back to the caller), and TCP_NODELAY.
pub(crate) fn forwarding_client(timeout_seconds: u64) -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(timeout_seconds))
        .redirect(reqwest::redirect::Policy::none())
        .tcp_nodelay(true)
        .build()
        .map_err(|e| e.to_string())
}

/// A region or service name: what a config key and a URL segment may both be.
pub(crate) fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Checks the part of a path forwarded to a service (after `/{service}`), as it arrived,
/// still percent-encoded: only path characters; no `.`/`..` segment, empty segment or
/// backslash, spelled plainly or percent-encoded; no encoded `/`, `\`, `%` games or NUL.
/// Returns it unchanged, so the service sees exactly what was checked.
pub(crate) fn check_rest(rest: &str) -> Result<&str, WireError> {
    let bad = |why: &str| Err(WireError::Path(format!("path {rest:?} refused: {why}")));
    if rest.len() > 2048 {
        return bad("longer than 2048 bytes");
    }
    let allowed = |b: u8| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/%".contains(&b);
    if let Some(b) = rest.bytes().find(|b| !allowed(*b)) {
        return bad(&format!("character {:?} is not allowed", char::from(b)));
    }
    for segment in rest.split('/') {
        let Some(decoded) = percent_decode(segment) else {
            return bad("a malformed percent escape");
        };
        if decoded.contains(&b'/') || decoded.contains(&b'\\') {
            return bad("an encoded slash or backslash");
        }
        if decoded.contains(&b'%') {
            return bad("a double-encoded escape");
        }
        if decoded.iter().any(u8::is_ascii_control) {
            return bad("an encoded control character");
        }
        if decoded == b"." || decoded == b".." {
            return bad("a dot segment");
        }
    }
    if rest.starts_with('/') || rest.contains("//") {
        return bad("an empty segment");
    }
    Ok(rest)
}

fn percent_decode(segment: &str) -> Option<Vec<u8>> {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let text = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(text, 16).ok()?);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    Some(out)
}

/// Headers that describe one connection, not the request (RFC 9110 §7.6.1), and never
/// cross a proxy; plus any header the `Connection` header names.
fn hop_by_hop(headers: &HeaderMap) -> Vec<HeaderName> {
    let mut names: Vec<HeaderName> = [
        header::CONNECTION,
        header::PROXY_AUTHENTICATE,
        header::PROXY_AUTHORIZATION,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
        HeaderName::from_static("keep-alive"),
        HeaderName::from_static("proxy-connection"),
    ]
    .into();
    for value in headers.get_all(header::CONNECTION) {
        if let Ok(text) = value.to_str() {
            names.extend(
                text.split(',')
                    .filter_map(|name| HeaderName::try_from(name.trim()).ok()),
            );
        }
    }
    names
}

/// The caller's headers as they may be forwarded: hop-by-hop headers, `Host`,
/// `Content-Length` (recomputed), the caller's own credentials and anything in
/// `also_drop` removed.
pub(crate) fn forwardable(headers: &HeaderMap, also_drop: &[&str]) -> HeaderMap {
    let mut out = headers.clone();
    for name in hop_by_hop(headers) {
        out.remove(name);
    }
    for name in [
        header::HOST,
        header::CONTENT_LENGTH,
        header::AUTHORIZATION,
        header::COOKIE,
    ] {
        out.remove(name);
    }
    for name in also_drop {
        out.remove(*name);
    }
    out
}

/// Response headers that may go back to the caller.
pub(crate) fn returnable(headers: &HeaderMap) -> HeaderMap {
    let mut out = headers.clone();
    for name in hop_by_hop(headers) {
        out.remove(name);
    }
    out.remove(header::CONTENT_LENGTH);
    out
}

/// Refuses a request that tries to carry the broker's own token.
pub(crate) fn refuse_broker_header(headers: &HeaderMap) -> Result<(), WireError> {
    if headers.contains_key(BROKER_TOKEN) {
        return Err(WireError::ForbiddenHeader(BROKER_TOKEN.to_owned()));
    }
    Ok(())
}

pub(crate) fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
