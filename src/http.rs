//! tower/axum integration: protect a route in one line with a [`Gate`].
//!
//! - [`AuthenticateLayer`] authenticates the `Authorization` header and puts the
//!   [`Principal`] and a [`CorrelationId`] in the request extensions.
//! - [`GuardLayer`] (from [`guard`]) does the whole gate for one action: authenticate (unless
//!   an outer layer did), authorize, check a presented approval, record the intent (fail
//!   closed), run the handler, record the outcome from the response status. The route
//!   declares which request attributes the authorizer sees in its context and the audit
//!   records: query parameters ([`GuardLayer::params`]), headers
//!   ([`GuardLayer::context_headers`]), the client address and the time.
//!
//! - [`EdgeLayer`] refuses malformed URLs (bad percent-escapes, non-UTF-8, control or
//!   invisible characters, over 8 KiB) with a JSON 400/414 before anything else runs, and
//!   turns every non-JSON error answer (unknown route, wrong method, the framework's
//!   rejections) into the same JSON shape.
//!
//! Refusals become responses through [`GateError`]'s `IntoResponse`: 401 with
//! `WWW-Authenticate`, 403 with the reason, 428 when an approval is required, 202 when the
//! presented approval is pending, 503 when the audit log (or the identity provider) is down.
//! Bodies are JSON: `{"error": "<code>", "message": "…"}` (plus `approval_id` for 202).
//!
//! ```
//! # async fn example(gate: std::sync::Arc<portcullis::gate::Gate>) {
//! use axum::{Extension, Router, routing::post};
//! use portcullis::http::{CorrelationId, guard};
//! use portcullis::{Action, Principal, Resource, ResourceKind};
//!
//! async fn deploy(Extension(who): Extension<Principal>, Extension(id): Extension<CorrelationId>) -> String {
//!     format!("{} deploys (request {})", who.subject(), id.0)
//! }
//!
//! let app: Router = Router::new()
//!     .route("/v1/envs/{env}/{stage}/deploys", post(deploy))
//!     .route_layer(guard(gate, Action::DEPLOY, |p| {
//!         Resource::new(ResourceKind::ENV_STAGE, format!("{}/{}", p.path("env")?, p.path("stage")?))
//!             .map_err(|e| e.to_string())
//!     }));
//! # let _ = app;
//! # }
//! ```

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::extract::{FromRequestParts, RawPathParams};
use axum::http::{HeaderValue, Request, StatusCode, header, request::Parts};
use axum::response::{IntoResponse, Response};
use portcullis_audit::Outcome;
use portcullis_core::{Action, Principal, Resource};
use serde_json::json;
use tower_layer::Layer;
use tower_service::Service;

use crate::gate::{CHALLENGE, Gate, GateError, GateRequest};

pub use crate::edge::{
    Edge, EdgeLayer, MAX_TARGET, Passthrough, UrlError, check_target, decode_component,
    decode_query, json_error,
};

/// The longest value a declared request parameter may have, in bytes (see
/// [`GuardLayer::params`]).
pub const MAX_PARAM: usize = 1024;

/// The largest body a guard reads for [`GuardLayer::body_params`], in bytes.
pub const MAX_GUARDED_BODY: usize = 64 * 1024;

/// The header a client may send to choose the correlation id (echoed in the response).
pub const REQUEST_ID_HEADER: &str = "x-request-id";
/// The header (or `approval_id` query parameter) presenting an approval.
pub const APPROVAL_HEADER: &str = "portcullis-approval";
const MAX_REQUEST_ID: usize = 128;

/// The correlation id of a request: the client's `x-request-id` when it is short and plain,
/// otherwise a new random one. It is in every audit record of the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorrelationId(pub String);

/// The id of the audit intent recorded for a guarded request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditIntentId(pub String);

/// What a guarded handler did, in words, for the outcome record: insert it into the
/// response's extensions (`response.extensions_mut().insert(OutcomeDetail(…))`) and the
/// outcome reads `HTTP 201: granted OPERATOR to user:bob on env:checkout` instead of the
/// bare status. The intent is written before the body is read, so this is where what a
/// body asked for gets on the record. Control characters are escaped; at most 512
/// characters are kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutcomeDetail(pub String);

impl CorrelationId {
    fn of(parts: &Parts) -> CorrelationId {
        if let Some(existing) = parts.extensions.get::<CorrelationId>() {
            return existing.clone();
        }
        let given = parts
            .headers
            .get(REQUEST_ID_HEADER)
            .and_then(|v| v.to_str().ok())
            .filter(|v| {
                !v.is_empty()
                    && v.len() <= MAX_REQUEST_ID
                    && v.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
            });
        CorrelationId(match given {
            Some(v) => v.to_owned(),
            None => random_id(),
        })
    }
}

/// `req-` + milliseconds since the epoch (hex) + 64 random bits: unique, and ordered by
/// time, so audit logs index correlation ids by appending rather than at random places.
fn random_id() -> String {
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    // A correlation id is not a secret; if the system random source cannot seed this
    // thread's generator, a process-wide counter still keeps ids unique.
    let bytes: [u8; 8] = portcullis_core::unique_bytes().unwrap_or_else(|_| {
        static FALLBACK: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        FALLBACK
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            .to_be_bytes()
    });
    format!("req-{millis:012x}{}", hex::encode(bytes))
}

/// What an answer says of `err`: its own text, except for a failure on the service's side
/// (5xx: a store, the audit log or an identity provider out of reach), whose text may carry a
/// database's or a provider's internals (`null value in column …`, host names). Those answers
/// say only what is unavailable; the detail goes to the log.
fn public_message(err: &GateError) -> String {
    use portcullis_approval::ApprovalError;
    let general = match err {
        GateError::AuthUnavailable(_) => "authentication is unavailable; try again later",
        GateError::AuditUnavailable(_) => "audit log unavailable, nothing was done",
        GateError::Approval(ApprovalError::Store(_)) => {
            "the approval store is unavailable; nothing was changed"
        }
        GateError::Approval(_) if err.status() >= 500 => {
            "approvals are unavailable (a failure on the service's side); nothing was changed"
        }
        _ => return err.to_string(),
    };
    tracing::error!(code = err.code(), error = %err, "{general}");
    general.to_owned()
}

impl IntoResponse for GateError {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = match &self {
            GateError::ApprovalPending(id) => {
                json!({ "error": self.code(), "message": self.to_string(), "approval_id": id })
            }
            _ => json!({ "error": self.code(), "message": public_message(&self) }),
        };
        let mut response = (status, axum::Json(body)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(CHALLENGE),
            );
        }
        response
    }
}

/// The route's path parameters and the query string, for building the [`Resource`].
#[derive(Debug, Clone, Default)]
pub struct RouteParams {
    path: Vec<(String, String)>,
    query: BTreeMap<String, String>,
}

impl RouteParams {
    /// The parameters of `parts`; a query string that does not decode strictly
    /// ([`decode_query`]) or names a parameter twice is an error (a 400), never an empty or
    /// altered set of parameters.
    async fn of(parts: &mut Parts) -> Result<RouteParams, String> {
        let path = match RawPathParams::from_request_parts(parts, &()).await {
            Ok(raw) => raw
                .iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
            Err(_) => Vec::new(),
        };
        let mut query = BTreeMap::new();
        if let Some(raw) = parts.uri.query() {
            for (name, value) in decode_query(raw).map_err(|e| e.to_string())? {
                if query.contains_key(&name) {
                    return Err(format!(
                        "the query parameter `{name}` is given more than once"
                    ));
                }
                query.insert(name, value);
            }
        }
        Ok(RouteParams { path, query })
    }

    /// A path parameter (`{env}` in the route), or a message naming the missing one.
    ///
    /// # Errors
    ///
    /// The message, when the route has no such parameter.
    pub fn path(&self, name: &str) -> Result<&str, String> {
        self.path
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .ok_or_else(|| format!("the route has no path parameter `{name}`"))
    }

    /// A query parameter.
    pub fn query(&self, name: &str) -> Option<&str> {
        self.query.get(name).map(String::as_str)
    }
}

type ResourceFn = dyn Fn(&RouteParams) -> Result<Resource, String> + Send + Sync;

/// Protects a route: `router.route_layer(guard(gate, Action::DEPLOY, |p| …))`.
///
/// `resource` builds the resource from the route's parameters; an error becomes a 400. Add it
/// with `route_layer` (on a `Router` or a `MethodRouter`): only there are the matched path
/// parameters known; under a plain `layer` the route has none and `p.path(…)` fails.
///
/// Only the query parameters the route declares with [`GuardLayer::params`] are the
/// request's parameters, recorded in the intent and bound into approvals (each at most
/// [`MAX_PARAM`] bytes, or a 400); others are ignored and never recorded, so a client cannot
/// grow an audit record. `approval_id` (or the `portcullis-approval` header) presents an
/// approval. A query string that does not decode strictly is a 400.
pub fn guard<F>(gate: Arc<Gate>, action: Action, resource: F) -> GuardLayer
where
    F: Fn(&RouteParams) -> Result<Resource, String> + Send + Sync + 'static,
{
    GuardLayer {
        shared: Arc::new(GuardShared {
            gate,
            action,
            resource: Arc::new(resource),
            params: Vec::new(),
            body_fields: Vec::new(),
            headers: Vec::new(),
            client_address: false,
            time: false,
        }),
    }
}

#[derive(Clone)]
struct GuardShared {
    gate: Arc<Gate>,
    action: Action,
    resource: Arc<ResourceFn>,
    params: Vec<String>,
    body_fields: Vec<String>,
    headers: Vec<header::HeaderName>,
    client_address: bool,
    time: bool,
}

impl GuardLayer {
    /// Declares the query parameters that define the action: each one present is recorded
    /// in the audit intent and bound into approvals. Undeclared parameters are ignored.
    ///
    /// ```
    /// # fn example(gate: std::sync::Arc<portcullis::gate::Gate>) {
    /// use portcullis::http::guard;
    /// use portcullis::{Action, Resource, ResourceKind};
    /// let layer = guard(gate, Action::DEPLOY, |p| {
    ///     Resource::new(ResourceKind::ENV, p.path("env")?).map_err(|e| e.to_string())
    /// })
    /// .params(["build_id", "ticket"]);
    /// # let _ = layer;
    /// # }
    /// ```
    ///
    /// Declared parameters are also in the authorizer's [`Context`](portcullis_core::Context)
    /// under their own names (`input.context.ticket` for a Rego policy).
    #[must_use]
    pub fn params<I, N>(mut self, names: I) -> Self
    where
        I: IntoIterator<Item = N>,
        N: Into<String>,
    {
        let shared = Arc::make_mut(&mut self.shared);
        shared.params.extend(names.into_iter().map(Into::into));
        shared.params.sort();
        shared.params.dedup();
        self
    }

    /// Declares fields of a JSON object body that define the action, as
    /// [`params`](Self::params) does for the query: each one present (a string, number or
    /// boolean, at most [`MAX_PARAM`] bytes) is recorded in the intent — before the handler
    /// runs — bound into approvals and put in the context. A query parameter of the same
    /// name wins. The body (at most [`MAX_GUARDED_BODY`] bytes, or a 413) is read here and
    /// handed on unchanged; a body that is not a JSON object adds nothing (the handler
    /// refuses it).
    #[must_use]
    pub fn body_params<I, N>(mut self, names: I) -> Self
    where
        I: IntoIterator<Item = N>,
        N: Into<String>,
    {
        let shared = Arc::make_mut(&mut self.shared);
        shared.body_fields.extend(names.into_iter().map(Into::into));
        shared.body_fields.sort();
        shared.body_fields.dedup();
        self
    }

    /// Puts these request headers into the authorizer's context, as `headers.<name>`
    /// (lower case; each at most [`MAX_PARAM`] bytes of visible ASCII, or a 400; a header
    /// sent twice is a 400). Names that are not valid header names are ignored.
    #[must_use]
    pub fn context_headers<I, N>(mut self, names: I) -> Self
    where
        I: IntoIterator<Item = N>,
        N: AsRef<str>,
    {
        let shared = Arc::make_mut(&mut self.shared);
        shared.headers.extend(
            names
                .into_iter()
                .filter_map(|n| header::HeaderName::from_bytes(n.as_ref().as_bytes()).ok()),
        );
        self
    }

    /// Puts the client's address into the context as `client_address` (the peer's IP, from
    /// axum's `ConnectInfo<SocketAddr>`; absent when the server was not started with
    /// `into_make_service_with_connect_info`).
    #[must_use]
    pub fn context_client_address(mut self) -> Self {
        Arc::make_mut(&mut self.shared).client_address = true;
        self
    }

    /// Puts the time of the request into the context as `time_ms` (milliseconds since the
    /// Unix epoch), for rules such as change freezes.
    #[must_use]
    pub fn context_time(mut self) -> Self {
        Arc::make_mut(&mut self.shared).time = true;
        self
    }
}

/// The context the route declared, from `parts`; a message (a 400) for an unusable header.
fn declared_context(
    shared: &GuardShared,
    parts: &Parts,
    gated: &mut GateRequest,
) -> Result<(), String> {
    for (name, value) in &gated.params {
        gated.context.insert(name.clone(), value.clone());
    }
    if !shared.headers.is_empty() {
        let mut found = serde_json::Map::new();
        for name in &shared.headers {
            let mut values = parts.headers.get_all(name).iter();
            let Some(value) = values.next() else { continue };
            if values.next().is_some() {
                return Err(format!("the header `{name}` is sent more than once"));
            }
            let text = value
                .to_str()
                .ok()
                .filter(|v| v.len() <= MAX_PARAM)
                .ok_or_else(|| {
                    format!(
                        "the header `{name}` must be at most {MAX_PARAM} bytes of visible ASCII"
                    )
                })?;
            found.insert(name.as_str().to_owned(), text.into());
        }
        gated
            .context
            .insert("headers", serde_json::Value::Object(found));
    }
    if shared.client_address
        && let Some(info) = parts
            .extensions
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
    {
        gated
            .context
            .insert("client_address", info.0.ip().to_string().into());
    }
    if shared.time {
        let millis = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        gated.context.insert("time_ms", millis.into());
    }
    Ok(())
}

/// The layer [`guard`] returns.
#[derive(Clone)]
pub struct GuardLayer {
    shared: Arc<GuardShared>,
}

impl std::fmt::Debug for GuardLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuardLayer")
            .field("action", &self.shared.action)
            .finish_non_exhaustive()
    }
}

impl<S> Layer<S> for GuardLayer {
    type Service = Guarded<S>;

    fn layer(&self, inner: S) -> Guarded<S> {
        Guarded {
            inner,
            shared: self.shared.clone(),
        }
    }
}

/// A service behind a [`GuardLayer`].
#[derive(Clone)]
pub struct Guarded<S> {
    inner: S,
    shared: Arc<GuardShared>,
}

impl<S> std::fmt::Debug for Guarded<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guarded")
            .field("action", &self.shared.action)
            .finish_non_exhaustive()
    }
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// The principal of `parts`: set by an outer [`AuthenticateLayer`], or authenticated now.
async fn principal_of(gate: &Gate, parts: &Parts) -> Result<Principal, GateError> {
    if let Some(principal) = parts.extensions.get::<Principal>() {
        return Ok(principal.clone());
    }
    // Two credentials are ambiguous: which one a proxy or framework reads first differs.
    if parts
        .headers
        .get_all(header::AUTHORIZATION)
        .iter()
        .nth(1)
        .is_some()
    {
        return Err(GateError::BadRequest(
            "send one Authorization header, not several".into(),
        ));
    }
    let header = parts
        .headers
        .get(header::AUTHORIZATION)
        .map(HeaderValue::as_bytes);
    gate.authenticate(header).await
}

/// The path the client asked for: the whole of it, also inside a nested router (which sees
/// only the rest of the path).
pub fn request_path(parts: &Parts) -> &str {
    parts
        .extensions
        .get::<axum::extract::OriginalUri>()
        .map_or_else(|| parts.uri.path(), |original| original.0.path())
}

fn with_request_id(mut response: Response, id: &CorrelationId) -> Response {
    if let Ok(value) = HeaderValue::from_str(&id.0) {
        response.headers_mut().insert(REQUEST_ID_HEADER, value);
    }
    response
}

impl<S> Service<Request<Body>> for Guarded<S>
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
        // The clone that was polled ready serves this call.
        let ready = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, ready);
        let shared = self.shared.clone();
        Box::pin(async move {
            let (mut parts, mut body) = request.into_parts();
            let correlation = CorrelationId::of(&parts);
            let refuse = |err: GateError| Ok(with_request_id(err.into_response(), &correlation));
            let principal = match principal_of(&shared.gate, &parts).await {
                Ok(p) => p,
                Err(err) => return refuse(err),
            };
            let mut fields = serde_json::Map::new();
            if !shared.body_fields.is_empty() {
                let Ok(bytes) = axum::body::to_bytes(body, MAX_GUARDED_BODY).await else {
                    let message = format!("the body is over {MAX_GUARDED_BODY} bytes");
                    let response =
                        json_error(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", message);
                    return Ok(with_request_id(response, &correlation));
                };
                if let Ok(serde_json::Value::Object(object)) =
                    serde_json::from_slice::<serde_json::Value>(&bytes)
                {
                    fields = object;
                }
                body = Body::from(bytes);
            }
            let params = RouteParams::of(&mut parts).await;
            let (resource, params) =
                match params.and_then(|p| (shared.resource)(&p).map(|r| (r, p))) {
                    Ok(found) => found,
                    Err(message) => {
                        let body = json!({ "error": "bad_request", "message": message });
                        let response = (StatusCode::BAD_REQUEST, axum::Json(body)).into_response();
                        return Ok(with_request_id(response, &correlation));
                    }
                };
            let mut gated = GateRequest::new(shared.action.clone(), resource)
                .http(parts.method.as_str(), request_path(&parts))
                .correlation_id(correlation.0.clone());
            gated.approval_id = parts
                .headers
                .get(APPROVAL_HEADER)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            if let Some(id) = params.query("approval_id") {
                gated.approval_id = Some(id.to_owned());
            }
            for name in &shared.params {
                let Some(value) = params.query(name) else {
                    continue;
                };
                if value.len() > MAX_PARAM {
                    let message = format!(
                        "the parameter `{name}` is {} bytes long; at most {MAX_PARAM} are accepted",
                        value.len()
                    );
                    let response = json_error(StatusCode::BAD_REQUEST, "bad_request", message);
                    return Ok(with_request_id(response, &correlation));
                }
                gated.params.insert(name.clone(), value.into());
            }
            for name in &shared.body_fields {
                if gated.params.contains_key(name) {
                    continue;
                }
                let value = match fields.remove(name) {
                    None | Some(serde_json::Value::Null) => continue,
                    Some(v @ (serde_json::Value::Number(_) | serde_json::Value::Bool(_))) => v,
                    Some(serde_json::Value::String(text)) if text.len() <= MAX_PARAM => {
                        serde_json::Value::String(text)
                    }
                    Some(_) => {
                        let message = format!(
                            "the field `{name}` must be a string of at most {MAX_PARAM} bytes, a number or a boolean"
                        );
                        let response = json_error(StatusCode::BAD_REQUEST, "bad_request", message);
                        return Ok(with_request_id(response, &correlation));
                    }
                };
                gated.params.insert(name.clone(), value);
            }
            if let Err(message) = declared_context(&shared, &parts, &mut gated) {
                let response = json_error(StatusCode::BAD_REQUEST, "bad_request", message);
                return Ok(with_request_id(response, &correlation));
            }
            let admitted = match shared.gate.admit(&principal, &gated).await {
                Ok(a) => a,
                Err(err) => return refuse(err),
            };
            parts
                .extensions
                .insert(AuditIntentId(admitted.receipt().id.clone()));
            parts.extensions.insert(principal);
            parts.extensions.insert(correlation.clone());
            match inner.call(Request::from_parts(parts, body)).await {
                Ok(response) => {
                    let status = response.status();
                    let detail = match response.extensions().get::<OutcomeDetail>() {
                        Some(said) => format!(
                            "HTTP {}: {}",
                            status.as_u16(),
                            crate::gate::printable(&said.0, 512)
                        ),
                        None => format!("HTTP {}", status.as_u16()),
                    };
                    let outcome = if status.is_success() || status.is_redirection() {
                        Outcome::succeeded(detail)
                    } else {
                        Outcome::failed(detail)
                    };
                    admitted.finish(outcome).await;
                    Ok(with_request_id(response, &correlation))
                }
                Err(err) => {
                    admitted.finish(Outcome::failed("the handler failed")).await;
                    Err(err)
                }
            }
        })
    }
}

/// Authenticates every request: the [`Principal`] and a [`CorrelationId`] go into the
/// request extensions (handlers read them with `Extension<Principal>`); a missing or bad
/// credential is a 401 with `WWW-Authenticate`.
#[derive(Clone)]
pub struct AuthenticateLayer {
    gate: Arc<Gate>,
}

impl AuthenticateLayer {
    /// Authenticates with `gate`'s chain.
    pub fn new(gate: Arc<Gate>) -> Self {
        AuthenticateLayer { gate }
    }
}

impl std::fmt::Debug for AuthenticateLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthenticateLayer").finish_non_exhaustive()
    }
}

impl<S> Layer<S> for AuthenticateLayer {
    type Service = Authenticated<S>;

    fn layer(&self, inner: S) -> Authenticated<S> {
        Authenticated {
            inner,
            gate: self.gate.clone(),
        }
    }
}

/// A service behind an [`AuthenticateLayer`].
#[derive(Clone)]
pub struct Authenticated<S> {
    inner: S,
    gate: Arc<Gate>,
}

impl<S> std::fmt::Debug for Authenticated<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticated").finish_non_exhaustive()
    }
}

impl<S> Service<Request<Body>> for Authenticated<S>
where
    S: Service<Request<Body>, Response = Response> + Clone + Send + 'static,
    S::Future: Send,
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
        let gate = self.gate.clone();
        Box::pin(async move {
            let (mut parts, body) = request.into_parts();
            let correlation = CorrelationId::of(&parts);
            match principal_of(&gate, &parts).await {
                Ok(principal) => {
                    parts.extensions.insert(principal);
                    parts.extensions.insert(correlation.clone());
                    let response = inner.call(Request::from_parts(parts, body)).await?;
                    Ok(with_request_id(response, &correlation))
                }
                Err(err) => Ok(with_request_id(err.into_response(), &correlation)),
            }
        })
    }
}

/// Resolves when the process is asked to stop: Ctrl-C (SIGINT) or, on Unix, SIGTERM (what
/// systemd, Kubernetes and `docker stop` send). For
/// `axum::serve(...).with_graceful_shutdown(shutdown_signal())`, so requests in flight
/// finish and the caller can then [flush](portcullis_audit::AuditLog::flush) the outcomes
/// its gate submitted. If a handler cannot be installed, that signal is never seen.
pub async fn shutdown_signal() {
    let interrupt = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {}
        () = terminate => {}
    }
}
