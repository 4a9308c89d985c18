//! The edge of a JSON API ([`EdgeLayer`], feature `edge`; re-exported by
//! [`http`](crate::http)): a request whose URL is malformed is refused with a
//! JSON 400 (or 414) before any handler, authorizer or audit record sees it, and every error
//! answer — the service's own and the framework's (unknown route, wrong method, body too
//! large, wrong content type, a JSON body that does not parse) — has one JSON shape:
//! `{"error": "<code>", "message": "…"}`.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::http::{HeaderValue, Method, Request, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use tower_layer::Layer;
use tower_service::Service;

/// The longest request target (path and query) [`EdgeLayer`] accepts, in bytes.
pub const MAX_TARGET: usize = 8 * 1024;

/// The most of a non-JSON error body that is quoted in the JSON error replacing it.
const MAX_QUOTED: usize = 1024;

/// Why a request's URL was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UrlError {
    /// The path and query together are longer than [`MAX_TARGET`] (414).
    #[error("the request target is {len} bytes long; at most {max} are accepted")]
    TooLong {
        /// Its length in bytes.
        len: usize,
        /// The most accepted.
        max: usize,
    },
    /// A `%` not followed by two hexadecimal digits (400).
    #[error(
        "the {part} has a malformed percent-escape at byte {position}: `%` must be followed by \
         two hex digits (write `%25` for a literal `%`)"
    )]
    BadEscape {
        /// `path` or `query`.
        part: &'static str,
        /// Byte offset of the `%`.
        position: usize,
    },
    /// The decoded bytes are not UTF-8 (400).
    #[error("the {part} does not decode to UTF-8 text")]
    NotUtf8 {
        /// `path` or `query`.
        part: &'static str,
    },
    /// A control or other hidden character ([`portcullis_core::is_hidden_char`]), decoded (400).
    #[error(
        "the {part} holds U+{:04X}, a control or hidden character; remove it",
        u32::from(*ch)
    )]
    Hidden {
        /// `path` or `query`.
        part: &'static str,
        /// The character.
        ch: char,
    },
}

impl UrlError {
    /// The HTTP status for this refusal: 414 for a target too long, 400 otherwise.
    pub fn status(&self) -> StatusCode {
        match self {
            UrlError::TooLong { .. } => StatusCode::URI_TOO_LONG,
            _ => StatusCode::BAD_REQUEST,
        }
    }
}

/// Decodes one percent-encoded URL component strictly: every `%` starts a two-digit hex
/// escape, the result is UTF-8, and it holds no control or other hidden character
/// ([`portcullis_core::is_hidden_char`]). With `plus_is_space`, `+` decodes to a space (as in
/// a query string).
///
/// # Errors
///
/// [`UrlError::BadEscape`], [`UrlError::NotUtf8`] or [`UrlError::Hidden`], naming `part`.
///
/// ```
/// use portcullis::edge::decode_component;
/// assert_eq!(decode_component("a%20b+c", "query", true).unwrap(), "a b c");
/// assert!(decode_component("%ZZ", "query", true).is_err());
/// assert!(decode_component("%C3%28", "query", true).is_err()); // not UTF-8
/// assert!(decode_component("a%0Ab", "query", true).is_err()); // a newline
/// ```
pub fn decode_component(
    raw: &str,
    part: &'static str,
    plus_is_space: bool,
) -> Result<String, UrlError> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while let Some(&byte) = bytes.get(at) {
        match byte {
            b'%' => {
                let hex = bytes
                    .get(at + 1..at + 3)
                    .and_then(|pair| std::str::from_utf8(pair).ok())
                    .filter(|pair| pair.bytes().all(|b| b.is_ascii_hexdigit()))
                    .and_then(|pair| u8::from_str_radix(pair, 16).ok());
                let Some(decoded) = hex else {
                    return Err(UrlError::BadEscape { part, position: at });
                };
                out.push(decoded);
                at += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                at += 1;
            }
            other => {
                out.push(other);
                at += 1;
            }
        }
    }
    let text = String::from_utf8(out).map_err(|_| UrlError::NotUtf8 { part })?;
    if let Some(ch) = text.chars().find(|c| portcullis_core::is_hidden_char(*c)) {
        return Err(UrlError::Hidden { part, ch });
    }
    Ok(text)
}

/// Decodes a query string strictly ([`decode_component`] on every name and value), keeping
/// the order and any repeated names. An empty query has no pairs; a pair without `=` has
/// an empty value.
///
/// # Errors
///
/// As [`decode_component`].
///
/// ```
/// use portcullis::edge::decode_query;
/// let pairs = decode_query("build_id=12&note=a+b&flag").unwrap();
/// assert_eq!(pairs[1], ("note".to_owned(), "a b".to_owned()));
/// assert_eq!(pairs[2], ("flag".to_owned(), String::new()));
/// assert!(decode_query("build_id=%ZZ%C3%28").is_err());
/// ```
pub fn decode_query(query: &str) -> Result<Vec<(String, String)>, UrlError> {
    // Positions in errors count from the start of the query, not of the pair.
    let at = |offset: usize| {
        move |err: UrlError| match err {
            UrlError::BadEscape { part, position } => UrlError::BadEscape {
                part,
                position: position + offset,
            },
            other => other,
        }
    };
    let mut pairs = Vec::new();
    let mut offset = 0;
    for pair in query.split('&') {
        if !pair.is_empty() {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let value_offset = offset + name.len() + 1;
            pairs.push((
                decode_component(name, "query", true).map_err(at(offset))?,
                decode_component(value, "query", true).map_err(at(value_offset))?,
            ));
        }
        offset += pair.len() + 1;
    }
    Ok(pairs)
}

/// Checks a request target the way [`EdgeLayer`] does: at most [`MAX_TARGET`] bytes, and a
/// path and query that decode strictly.
///
/// # Errors
///
/// The first [`UrlError`] found.
pub fn check_target(uri: &Uri) -> Result<(), UrlError> {
    let len = uri.path_and_query().map_or(0, |pq| pq.as_str().len());
    if len > MAX_TARGET {
        return Err(UrlError::TooLong {
            len,
            max: MAX_TARGET,
        });
    }
    decode_component(uri.path(), "path", false)?;
    if let Some(query) = uri.query() {
        decode_query(query)?;
    }
    Ok(())
}

/// A JSON error answer: `{"error": code, "message": message}`.
pub fn json_error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    let body = json!({ "error": code, "message": message.into() });
    (status, axum::Json(body)).into_response()
}

/// The machine-readable code used for a framework error of `status`.
fn code_of(status: StatusCode) -> String {
    match status.as_u16() {
        400 => "bad_request".into(),
        401 => "unauthenticated".into(),
        403 => "forbidden".into(),
        404 => "not_found".into(),
        405 => "method_not_allowed".into(),
        406 => "not_acceptable".into(),
        408 => "request_timeout".into(),
        409 => "conflict".into(),
        411 => "length_required".into(),
        413 => "payload_too_large".into(),
        414 => "uri_too_long".into(),
        415 => "unsupported_media_type".into(),
        422 => "unprocessable_entity".into(),
        429 => "too_many_requests".into(),
        431 => "header_fields_too_large".into(),
        500 => "internal_error".into(),
        501 => "not_implemented".into(),
        502 => "bad_gateway".into(),
        503 => "unavailable".into(),
        504 => "gateway_timeout".into(),
        other => format!("http_{other}"),
    }
}

/// Marks a response that [`EdgeLayer`] must pass on untouched, such as a proxied upstream's
/// answer: insert it into the response's extensions.
#[derive(Debug, Clone, Copy, Default)]
pub struct Passthrough;

/// Applies the edge checks to every request of a router:
/// `router.layer(portcullis::http::EdgeLayer::new())`.
///
/// - A target longer than [`MAX_TARGET`] is refused with 414; a path or query with a
///   malformed percent-escape, bytes that are not UTF-8 once decoded, or a control or
///   invisible character is refused with 400 ([`check_target`]). Nothing behind the layer
///   runs, so nothing is authorized or audited for such a request.
/// - An error answer (4xx, 5xx) that is not JSON is replaced by
///   `{"error": code, "message": …}` with the same status and headers; the message quotes
///   the original body when it was text, or says what was not found or not allowed. Answers
///   marked [`Passthrough`] are left alone.
///
/// Limits enforced by the HTTP server before any layer runs are outside its reach (hyper
/// answers a target over 64 KiB or more than 100 headers itself, without a body).
#[derive(Debug, Clone, Copy)]
pub struct EdgeLayer {
    code_field: &'static str,
}

impl Default for EdgeLayer {
    fn default() -> Self {
        EdgeLayer {
            code_field: "error",
        }
    }
}

impl EdgeLayer {
    /// The layer, answering errors as `{"error": code, "message": …}`.
    pub fn new() -> Self {
        EdgeLayer::default()
    }

    /// Names the field holding the machine-readable code: an OPA-compatible service
    /// answers `{"code": …, "message": …}` as OPA does, with `with_code_field("code")`.
    #[must_use]
    pub fn with_code_field(mut self, name: &'static str) -> Self {
        self.code_field = name;
        self
    }
}

impl<S> Layer<S> for EdgeLayer {
    type Service = Edge<S>;

    fn layer(&self, inner: S) -> Edge<S> {
        Edge {
            inner,
            code_field: self.code_field,
        }
    }
}

/// A service behind an [`EdgeLayer`].
#[derive(Debug, Clone)]
pub struct Edge<S> {
    inner: S,
    code_field: &'static str,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S> Service<Request<Body>> for Edge<S>
where
    S: Service<Request<Body>, Response = Response> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Send,
{
    type Response = Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let ready = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, ready);
        let field = self.code_field;
        Box::pin(async move {
            if let Err(err) = check_target(request.uri()) {
                let status = err.status();
                let body = json!({ field: code_of(status), "message": err.to_string() });
                return Ok((status, axum::Json(body)).into_response());
            }
            let method = request.method().clone();
            let path = request.uri().path().to_owned();
            let response = inner.call(request).await?;
            Ok(as_json_error(response, &method, &path, field).await)
        })
    }
}

fn is_json(response: &Response) -> bool {
    response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|mime| {
            let mime = mime.trim().to_ascii_lowercase();
            mime == "application/json" || mime.ends_with("+json")
        })
}

/// `response` unchanged, or its JSON replacement when it is a non-JSON error answer.
async fn as_json_error(
    response: Response,
    method: &Method,
    path: &str,
    code_field: &str,
) -> Response {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error())
        || is_json(&response)
        || response.extensions().get::<Passthrough>().is_some()
        || method == Method::HEAD
    {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let text = match axum::body::to_bytes(body, MAX_QUOTED).await {
        Ok(bytes) => String::from_utf8_lossy(&bytes).trim().to_owned(),
        Err(_) => String::new(),
    };
    let message = if !text.is_empty() {
        text.chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect()
    } else {
        match status {
            StatusCode::NOT_FOUND => format!("no route for {method} {path}"),
            StatusCode::METHOD_NOT_ALLOWED => {
                // Under `Router::layer` the router adds its `Allow` header after this layer.
                match parts
                    .headers
                    .get(header::ALLOW)
                    .and_then(|v| v.to_str().ok())
                {
                    Some(allowed) => {
                        format!("{method} is not allowed on {path}; allowed: {allowed}")
                    }
                    None => format!(
                        "{method} is not allowed on {path}; the Allow header lists the methods that are"
                    ),
                }
            }
            other => other
                .canonical_reason()
                .unwrap_or("the request failed")
                .to_owned(),
        }
    };
    let body = json!({ code_field: code_of(status), "message": message }).to_string();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Response::from_parts(parts, Body::from(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn components_decode_strictly() {
        assert_eq!(decode_component("%2e%2E", "path", false).unwrap(), "..");
        assert_eq!(decode_component("a+b", "path", false).unwrap(), "a+b");
        assert_eq!(decode_component("é%C3%A9", "query", true).unwrap(), "éé");
        for bad in [
            "%",
            "%2",
            "%ZZ",
            "a%g0",
            "%C3%28",
            "%FF",
            "a%00",
            "%E2%80%8B",
            "%E2%80%AE",
        ] {
            assert!(decode_component(bad, "query", true).is_err(), "{bad}");
        }
        assert!(matches!(
            decode_component("ab%Z1", "query", true),
            Err(UrlError::BadEscape { position: 2, .. })
        ));
        assert!(matches!(
            decode_query("a=1&build_id=%ZZ"),
            Err(UrlError::BadEscape { position: 13, .. })
        ));
    }

    #[test]
    fn targets_are_bounded() {
        let long: Uri = format!("/a?x={}", "y".repeat(MAX_TARGET)).parse().unwrap();
        let err = check_target(&long).unwrap_err();
        assert_eq!(err.status(), StatusCode::URI_TOO_LONG);
        let fine: Uri = "/v1/envs/checkout/prod/deploys?build_id=1".parse().unwrap();
        assert!(check_target(&fine).is_ok());
    }
}
