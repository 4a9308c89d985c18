//! What the broker and the region proxies agree on: the forwarded path's shape, which
//! headers cross, the request hash and the broker token's claims.

use aws_lc_rs::digest::{SHA256, digest};
use axum::http::{HeaderMap, HeaderName, Method, header};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::crypto::CryptoProvider;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header};
use serde::{Deserialize, Serialize};

/// The header carrying the broker's token from the broker to a region proxy. A request
/// that arrives at the broker with it set is refused: only the broker mints it.
pub(crate) const BROKER_TOKEN: &str = "x-broker-token";
/// The header naming the user to the upstream service, set by the region proxy.
pub(crate) const FORWARDED_USER: &str = "x-forwarded-user";
/// Set (to `1`) on every answer that comes from behind the broker or a region proxy rather
/// than from the broker itself, whatever the upstream sent under that name: a client can
/// tell a service's 401 from the broker's own (its session is over) by it.
pub(crate) const UPSTREAM_ANSWER: &str = "x-broker-upstream";
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

/// The provider broker tokens are signed and checked with, named explicitly:
/// `jsonwebtoken::encode`/`decode` would ask the process-level provider, which is ambiguous
/// (and panics) when a build enables a second jsonwebtoken backend.
fn jws_provider() -> &'static CryptoProvider {
    &jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER
}

/// Signs `claims` as an EdDSA JWT with `kid` in its header.
pub(crate) fn sign_broker_token(
    kid: &str,
    claims: &BrokerClaims,
    key: &EncodingKey,
) -> Result<String, String> {
    let signer =
        (jws_provider().signer_factory)(&Algorithm::EdDSA, key).map_err(|e| e.to_string())?;
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some(kid.to_owned());
    let header = serde_json::to_vec(&header).map_err(|e| e.to_string())?;
    let claims = serde_json::to_vec(claims).map_err(|e| e.to_string())?;
    let mut token = String::with_capacity(512);
    URL_SAFE_NO_PAD.encode_string(header, &mut token);
    token.push('.');
    URL_SAFE_NO_PAD.encode_string(claims, &mut token);
    let signature = signer
        .try_sign(token.as_bytes())
        .map_err(|e| e.to_string())?;
    token.push('.');
    URL_SAFE_NO_PAD.encode_string(signature, &mut token);
    Ok(token)
}

/// Checks the EdDSA signature of broker token `token` with `key` and returns its claims
/// (whose issuer, audience and lifetime the caller checks).
pub(crate) fn verify_broker_token(token: &str, key: &DecodingKey) -> Result<BrokerClaims, String> {
    let (message, signature) = token
        .rsplit_once('.')
        .ok_or("a JWT has three dot-separated parts")?;
    let (_, payload) = message
        .split_once('.')
        .ok_or("a JWT has three dot-separated parts")?;
    let signature = URL_SAFE_NO_PAD
        .decode(signature)
        .map_err(|_| "the signature is not base64url")?;
    let verifier =
        (jws_provider().verifier_factory)(&Algorithm::EdDSA, key).map_err(|e| e.to_string())?;
    verifier
        .verify(message.as_bytes(), &signature)
        .map_err(|_| "InvalidSignature")?;
    let payload = URL_SAFE_NO_PAD
        .decode(payload)
        .map_err(|_| "the payload is not base64url")?;
    serde_json::from_slice(&payload)
        .map_err(|e| format!("the claims are not a broker token's: {e}"))
}

/// Why a request cannot be forwarded.
#[derive(Debug, thiserror::Error)]
pub(crate) enum WireError {
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

/// Whether a request says it has a body: a `Content-Length` above zero, or chunked.
fn announces_body(headers: &HeaderMap) -> bool {
    if headers.contains_key(header::TRANSFER_ENCODING) {
        return true;
    }
    headers
        .get(header::CONTENT_LENGTH)
        .is_some_and(|v| v.to_str().map_or(true, |v| v.trim() != "0"))
}

/// Middleware: a request whose body was not read to its end (refused before it was read,
/// or over the size limit) is answered with `Connection: close`. Its unread bytes are still
/// on the connection, so the server closes it after the answer; without the header a client
/// that reuses connections would send its next request down a closing one and fail.
pub(crate) async fn close_if_unread(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use futures_util::StreamExt as _;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    if !announces_body(request.headers()) {
        return next.run(request).await;
    }
    let read = Arc::new(AtomicBool::new(false));
    let (parts, body) = request.into_parts();
    let watched = futures_util::stream::unfold(
        Some((body.into_data_stream(), read.clone())),
        |state| async move {
            let (mut data, read) = state?;
            match data.next().await {
                Some(Ok(chunk)) => Some((Ok(chunk), Some((data, read)))),
                Some(Err(e)) => Some((Err(e), None)),
                None => {
                    read.store(true, Ordering::SeqCst);
                    None
                }
            }
        },
    );
    let request = axum::extract::Request::from_parts(parts, axum::body::Body::from_stream(watched));
    let mut response = next.run(request).await;
    if !read.load(Ordering::SeqCst) {
        response.headers_mut().insert(
            header::CONNECTION,
            axum::http::HeaderValue::from_static("close"),
        );
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, axum::http::HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn a_body_is_announced_by_a_length_above_zero_or_chunking() {
        assert!(!announces_body(&headers(&[])));
        assert!(!announces_body(&headers(&[("content-length", "0")])));
        assert!(announces_body(&headers(&[("content-length", "12")])));
        assert!(announces_body(&headers(&[(
            "transfer-encoding",
            "chunked"
        )])));
        // Unparseable: assumed to have a body, so a refusal closes the connection.
        assert!(announces_body(&headers(&[("content-length", "x")])));
    }
}
