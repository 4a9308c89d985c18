//! The HTTP API: publishing, OPA's bundle and status endpoints for hosts, and operators'
//! promote / pause / resume / rollback, plus the scheduler. What operators read is in
//! `views.rs`, the UI's files in `ui.rs`.

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use portcullis::audit::{AuditEvent, AuditLog, AuditSink, EventKind};
use portcullis::delivery::{
    DecisionCounts, DeliveryError, Expected, FetchRecord, HostStatus, MAX_LOG_BYTES,
    MAX_STATUS_BYTES, Operation, Pipeline, RevisionId, StatusReport, check_artifact_name, now_ms,
};
use portcullis::gate::{CHALLENGE, Gate, GateError, GateRequest, RunError};
use portcullis::policy::RolloutEvent;
use portcullis::{AuthMethod, Decision, Principal, PrincipalKind, Resource};
use serde::Deserialize;
use serde_json::json;

use crate::host_id::{Peer, host_of};
use crate::tokens::TokenTable;
use crate::views::{OPERATIONS, operation_request};
use crate::{PROMOTE, PUBLISH, ROLLBACK, ui, views};

/// The service's state.
#[derive(Debug)]
pub(crate) struct App {
    /// Shared with its refresher when several instances share the store.
    pub(crate) pipeline: Arc<Pipeline>,
    pub(crate) gate: Gate,
    /// Host token digests → the host's SPIFFE ID.
    pub(crate) hosts: TokenTable<String>,
    pub(crate) max_bundle_bytes: usize,
    /// The audit log, for the scheduler's own changes (operators' go through the gate).
    pub(crate) audit: Arc<AuditLog>,
    /// Every configured host's SPIFFE ID, sorted: the hosts the UI lists.
    pub(crate) host_ids: Vec<String>,
}

/// The routes.
pub(crate) fn router(app: Arc<App>) -> Router {
    let bundle_limit = app.max_bundle_bytes;
    Router::new()
        .route(
            "/v1/artifacts/{name}/revisions",
            post(publish).layer(DefaultBodyLimit::max(bundle_limit)),
        )
        .route("/v1/artifacts", get(views::artifacts))
        .route("/v1/artifacts/{name}", get(views::artifact))
        .route("/v1/artifacts/{name}/hosts", get(views::hosts))
        .route("/v1/artifacts/{name}/{operation}", post(operate))
        .route("/bundles/{name}", get(bundle))
        .route(
            "/status",
            post(status).layer(DefaultBodyLimit::max(MAX_STATUS_BYTES)),
        )
        .route(
            "/logs",
            post(logs).layer(DefaultBodyLimit::max(MAX_LOG_BYTES)),
        )
        .route(
            "/v1/decision-counts",
            post(decision_counts).layer(DefaultBodyLimit::max(MAX_STATUS_BYTES)),
        )
        .route("/health", get(health))
        .merge(ui::routes())
        .layer(axum::middleware::from_fn(one_credential_and_encoding))
        .layer(DefaultBodyLimit::max(64 * 1024))
        .layer(axum::middleware::map_response(ui::nosniff))
        .with_state(app)
}

/// Refuses, before any handler: a request with more than one `Authorization` header (which
/// one names the caller would depend on the reader), and a body in a `Content-Encoding`
/// the endpoint does not read — `gzip` on `POST /logs` (OPA's decision log upload) only,
/// every other body plain — or named in more than one header.
async fn one_credential_and_encoding(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let headers = request.headers();
    if headers.get_all(header::AUTHORIZATION).iter().count() > 1 {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_parameter",
            "more than one Authorization header",
        );
    }
    let mut encodings = headers.get_all(header::CONTENT_ENCODING).iter();
    let encoding = encodings.next().map(|v| v.to_str().map(str::trim));
    let plain = match encoding {
        None => true,
        Some(Ok(v)) => v.eq_ignore_ascii_case("identity"),
        Some(Err(_)) => false,
    };
    let gzip_logs = request.uri().path() == "/logs"
        && matches!(encoding, Some(Ok(v)) if v.eq_ignore_ascii_case("gzip"));
    if encodings.next().is_some() || !(plain || gzip_logs) {
        return error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_encoding",
            "Content-Encoding: gzip on POST /logs, identity or none elsewhere, in one header",
        );
    }
    next.run(request).await
}

/// `GET /health`: up, and whether this instance leads (runs the scheduler).
async fn health(State(app): State<Arc<App>>) -> Json<serde_json::Value> {
    Json(json!({"leader": app.pipeline.leading()}))
}

/// Runs [`Pipeline::tick`] every `every`, while this instance leads: automatic promotions
/// and rollbacks. With several instances on one store one leads; when it goes, another
/// takes the lead at its next turn (within `every`). The others only roll back what hosts'
/// own counts reported to them breached ([`Pipeline::roll_back_breaches`]).
pub(crate) async fn scheduler(app: Arc<App>, every: Duration) {
    let mut interval = tokio::time::interval(every);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut led = false;
    loop {
        interval.tick().await;
        let leads = match app.pipeline.lead().await {
            Ok(leads) => leads,
            Err(error) => {
                tracing::warn!(%error, "cannot tell whether this instance leads: not ticking");
                false
            }
        };
        if leads != led {
            tracing::info!(leader = leads, "scheduler leadership changed");
            led = leads;
        }
        // Followers act on the breaches hosts reported to them (each instance keeps the
        // hosts' own counts it received); the leader does that and everything else.
        let ticked = if leads {
            app.pipeline.tick().await
        } else {
            app.pipeline.roll_back_breaches().await
        };
        match ticked {
            Ok(events) => {
                for event in events {
                    tracing::info!(%event, "scheduler");
                    if let Err(error) = audit_scheduler(&app.audit, &event).await {
                        tracing::error!(%error, %event, "the scheduler's change is in the pipeline history but not in the audit log");
                    }
                }
            }
            Err(error) => tracing::error!(%error, "the scheduler could not record its changes"),
        }
    }
}

/// Every hour (first a minute after the start): deletes download records older than
/// `fetch_age` and all but each artifact's newest `events` events.
pub(crate) async fn prune(app: Arc<App>, fetch_age: Duration, events: u32) {
    let mut interval = tokio::time::interval_at(
        tokio::time::Instant::now() + Duration::from_secs(60),
        Duration::from_secs(3_600),
    );
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        match app.pipeline.prune(fetch_age, Some(events)).await {
            Ok(pruned) => tracing::info!(
                fetches = pruned.fetches,
                events = pruned.events,
                host_counts = pruned.host_counts,
                "pruned"
            ),
            Err(error) => tracing::error!(%error, "the prune failed; it runs again in an hour"),
        }
    }
}

/// Records a change the scheduler made (already persisted with the pipeline's history) in
/// the audit log, next to the operators' changes, as `service:scheduler`'s.
async fn audit_scheduler(audit: &AuditLog, event: &RolloutEvent) -> Result<(), String> {
    let (action, artifact, revision) = match event {
        RolloutEvent::Promoted {
            artifact, revision, ..
        }
        | RolloutEvent::Completed { artifact, revision } => (PROMOTE, artifact, revision),
        RolloutEvent::RolledBack {
            artifact, revision, ..
        } => (ROLLBACK, artifact, revision),
    };
    let scheduler = Principal::builder(
        PrincipalKind::Service,
        portcullis::delivery::SCHEDULER,
        AuthMethod::from_static("internal"),
    )
    .build()
    .map_err(|e| e.to_string())?;
    let resource: Resource = format!("artifact:{artifact}")
        .parse()
        .map_err(|e| format!("{e}"))?;
    let mut record = AuditEvent::new(EventKind::Decision, &scheduler, action, resource)
        .map_err(|e| e.to_string())?;
    record.decision = Some(Decision::allow(event.to_string()));
    record.fields.insert("revision".into(), json!(revision));
    audit
        .record(record)
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

pub(crate) fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    (
        status,
        Json(json!({"code": code, "message": message.into()})),
    )
        .into_response()
}

pub(crate) fn gate_error(err: &GateError) -> Response {
    let status = StatusCode::from_u16(err.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = error(status, err.code(), err.to_string());
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static(CHALLENGE),
        );
    }
    response
}

pub(crate) fn delivery_error(err: &DeliveryError) -> Response {
    let (status, code) = match err {
        DeliveryError::Refused(_) | DeliveryError::OutsideNamespace { .. } => {
            (StatusCode::UNPROCESSABLE_ENTITY, "bundle_refused")
        }
        DeliveryError::Exists { .. } => (StatusCode::CONFLICT, "revision_exists"),
        DeliveryError::RevisionNameTaken { .. } => (StatusCode::CONFLICT, "revision_name_taken"),
        DeliveryError::UnknownArtifact(_) | DeliveryError::NotFound { .. } => {
            (StatusCode::NOT_FOUND, "resource_not_found")
        }
        DeliveryError::Invalid(_) | DeliveryError::Status(_) => {
            (StatusCode::BAD_REQUEST, "invalid_parameter")
        }
        DeliveryError::Rollout(_) => (StatusCode::CONFLICT, "rollout_refused"),
        DeliveryError::Remote { .. } => {
            // Where and why go to the log, not to hosts and publishers.
            tracing::error!(error = %err, "artifact store failure");
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "artifact_store_unavailable",
                "the artifact store could not be reached; try again".to_owned(),
            );
        }
        DeliveryError::StoreUnavailable(_) => {
            tracing::error!(error = %err, "pipeline store unavailable");
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "store_unavailable",
                "the pipeline store could not be reached; try again".to_owned(),
            );
        }
        _ => {
            tracing::error!(error = %err, "delivery failure");
            (StatusCode::INTERNAL_SERVER_ERROR, "internal_error")
        }
    };
    error(status, code, err.to_string())
}

fn authorization(headers: &HeaderMap) -> Option<&[u8]> {
    headers
        .get(header::AUTHORIZATION)
        .map(HeaderValue::as_bytes)
}

/// The artifact `name` as a resource, if it is configured.
pub(crate) fn artifact_resource(app: &App, name: &str) -> Result<Resource, DeliveryError> {
    check_artifact_name(name)?;
    if app.pipeline.bundle_of(name).is_none() {
        return Err(DeliveryError::UnknownArtifact(name.to_owned()));
    }
    format!("artifact:{name}")
        .parse()
        .map_err(|e| DeliveryError::Invalid(format!("{e}")))
}

pub(crate) async fn principal(app: &App, headers: &HeaderMap) -> Result<Principal, GateError> {
    app.gate.authenticate(authorization(headers)).await
}

/// `POST /v1/artifacts/{name}/revisions`: a bundle tarball, from a PUBLISHER of the artifact.
async fn publish(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let principal = match principal(&app, &headers).await {
        Ok(p) => p,
        Err(err) => return gate_error(&err),
    };
    let resource = match artifact_resource(&app, &name) {
        Ok(r) => r,
        Err(err) => return delivery_error(&err),
    };
    let revision = RevisionId::of(&body);
    let request = GateRequest::new(PUBLISH, resource)
        .http("POST", format!("/v1/artifacts/{name}/revisions"))
        .param("revision", revision.to_string())
        .param("bytes", body.len());
    let actor = principal.to_string();
    let published = app
        .gate
        .run(&principal, &request, |_| {
            app.pipeline.publish(&name, body.to_vec(), &actor)
        })
        .await;
    match published {
        Ok(p) => (
            StatusCode::CREATED,
            Json(json!({
                "artifact": name,
                "revision": p.revision.to_string(),
                "bundle_revision": p.bundle_revision,
            })),
        )
            .into_response(),
        Err(RunError::Refused(err)) => gate_error(&err),
        Err(RunError::Action(err)) => delivery_error(&err),
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct OperationBody {
    #[serde(default)]
    reason: Option<String>,
    /// The candidate (its content id) the operator decided about, as the view showed it:
    /// if another has replaced it since (a new publish, a rollback), the operation is
    /// refused instead of acting on a revision nobody looked at.
    #[serde(default)]
    revision: Option<String>,
    /// The step (its index) the view showed that candidate at: if it has moved on since
    /// (another operator, a second click), the operation is refused.
    #[serde(default)]
    step: Option<usize>,
}

/// `POST /v1/artifacts/{name}/{promote|pause|resume|rollback}`, body `{"reason": "…"}`
/// (optional), from an OPERATOR of the artifact; recorded in the audit log before it acts.
async fn operate(
    State(app): State<Arc<App>>,
    Path((name, operation)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(action) = OPERATIONS
        .iter()
        .find(|(name, _)| *name == operation)
        .map(|(_, action)| action.clone())
    else {
        return error(
            StatusCode::NOT_FOUND,
            "resource_not_found",
            "operations are promote, pause, resume and rollback",
        );
    };
    let principal = match principal(&app, &headers).await {
        Ok(p) => p,
        Err(err) => return gate_error(&err),
    };
    let resource = match artifact_resource(&app, &name) {
        Ok(r) => r,
        Err(err) => return delivery_error(&err),
    };
    let parsed: OperationBody = if body.is_empty() {
        OperationBody::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(parsed) => parsed,
            Err(e) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "invalid_parameter",
                    format!("the body is {{\"reason\": \"…\"}} or empty: {e}"),
                );
            }
        }
    };
    let reason = parsed
        .reason
        .unwrap_or_else(|| format!("{operation} by an operator"));
    // Shown to operators and written to the history and audit log: no character that
    // hides or reorders what is shown around it.
    if let Some(c) = reason.chars().find(|c| portcullis::is_unfit_for_label(*c)) {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_parameter",
            format!(
                "the reason holds U+{:04X}, a hidden character or a line break or space \
                 other than U+0020",
                u32::from(c)
            ),
        );
    }
    let mut request =
        operation_request(&name, &operation, action, resource).param("reason", reason.clone());
    let expected = match (parsed.revision, parsed.step) {
        (None, None) => None,
        (None, Some(_)) => {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_parameter",
                "a step names the candidate's step: send the candidate's revision with it",
            );
        }
        (Some(revision), step) => {
            request = request.param("revision", revision.clone());
            let mut expected = Expected::revision(revision);
            if let Some(step) = step {
                request = request.param("step", step);
                expected = expected.at_step(step);
            }
            Some(expected)
        }
    };
    let actor = principal.to_string();
    let pipeline = &app.pipeline;
    let op = match operation.as_str() {
        "promote" => Operation::Promote,
        "pause" => Operation::Pause { reason },
        "resume" => Operation::Resume,
        _ => Operation::Rollback { reason },
    };
    // The expected candidate is checked in the pipeline's own turn, with the operation.
    let done = app
        .gate
        .run(&principal, &request, |_| {
            pipeline.operate(&name, &op, &actor, expected.as_ref())
        })
        .await;
    match done {
        Ok(event) => Json(json!({
            "artifact": name,
            "event": event,
            "state": pipeline.state(&name).await,
        }))
        .into_response(),
        Err(RunError::Refused(err)) => gate_error(&err),
        Err(RunError::Action(err)) => delivery_error(&err),
    }
}

/// Whether `If-None-Match` names `etag` (or is `*`).
fn none_match(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|tag| tag.trim().trim_start_matches("W/"))
        .any(|tag| tag == etag || tag == "*")
}

/// `GET /bundles/{name}` (OPA's bundle service protocol): the revision the pipeline assigns
/// to the calling host, identified by its client certificate or token ([`host_of`]), with an
/// `ETag`; 304 when `If-None-Match` names it.
async fn bundle(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
    method: axum::http::Method,
    peer: Peer,
    headers: HeaderMap,
) -> Response {
    let host = match host_of(&app, &peer, &headers) {
        Ok(host) => host,
        Err(refused) => return refused,
    };
    let Some(artifact) = app.pipeline.artifact_of(&name).map(str::to_owned) else {
        return error(
            StatusCode::NOT_FOUND,
            "resource_not_found",
            format!("no artifact serves bundle {name:?}"),
        );
    };
    let Some(revision) = app.pipeline.revision_for(&artifact, &host).await else {
        return error(
            StatusCode::NOT_FOUND,
            "resource_not_found",
            format!("artifact {artifact:?} has no revision for {host} yet"),
        );
    };
    let etag = format!("\"{revision}\"");
    // One URL, a different revision per host: caches must neither share nor reuse it unchecked.
    let private = [
        (header::CACHE_CONTROL, "private, no-cache"),
        (header::VARY, "Authorization"),
    ];
    if none_match(&headers, &etag) {
        return (StatusCode::NOT_MODIFIED, private, [(header::ETAG, etag)]).into_response();
    }
    if method == axum::http::Method::HEAD {
        // Nothing is downloaded: no access record (axum drops the body of a HEAD anyway).
        return (
            StatusCode::OK,
            private,
            [
                (header::ETAG, etag),
                (header::CONTENT_TYPE, "application/gzip".to_owned()),
            ],
        )
            .into_response();
    }
    let tarball = match app.pipeline.tarball(&artifact, &revision).await {
        Ok(t) => t,
        Err(err) => return delivery_error(&err),
    };
    let fetch = FetchRecord {
        at_ms: now_ms(),
        spiffe_id: host,
        artifact,
        revision: revision.to_string(),
    };
    if let Err(err) = app.pipeline.record_fetch(&fetch).await {
        // The access record is how operators see who runs what: no record, no bundle.
        return delivery_error(&err);
    }
    (
        StatusCode::OK,
        private,
        [
            (header::ETAG, etag),
            (header::CONTENT_TYPE, "application/gzip".to_owned()),
        ],
        Body::from(Bytes::from_owner(tarball)),
    )
        .into_response()
}

/// `POST /status` (OPA's status API): what the calling host has active, recorded under the
/// SPIFFE ID its certificate or token names ([`host_of`]; never one the report claims).
async fn status(
    State(app): State<Arc<App>>,
    peer: Peer,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let host = match host_of(&app, &peer, &headers) {
        Ok(host) => host,
        Err(refused) => return refused,
    };
    let report = match StatusReport::parse(&body) {
        Ok(report) => report,
        Err(err) => return delivery_error(&err),
    };
    let at = now_ms();
    let statuses: Vec<HostStatus> = report
        .bundles
        .into_iter()
        .filter(|b| app.pipeline.artifact_of(&b.name).is_some())
        .map(|b| HostStatus {
            spiffe_id: host.clone(),
            bundle: b.name,
            active_revision: b.active_revision,
            error: b.error,
            reported_at_ms: at,
        })
        .collect();
    match app.pipeline.store().record_status(&statuses).await {
        Ok(()) => Json(json!({})).into_response(),
        Err(err) => delivery_error(&err),
    }
}

/// `POST /logs` (OPA's decision log upload, gzip or plain JSON): the calling host's decisions
/// counted for the candidates assigned to it, which the scheduler judges against the step's
/// thresholds.
async fn logs(
    State(app): State<Arc<App>>,
    peer: Peer,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let host = match host_of(&app, &peer, &headers) {
        Ok(host) => host,
        Err(refused) => return refused,
    };
    // gzip (what OPA sends) or none: any other encoding is refused, never read as JSON.
    let gzip = match headers
        .get(header::CONTENT_ENCODING)
        .map(|v| v.to_str().map(str::trim))
    {
        None => false,
        Some(Ok(v)) if v.eq_ignore_ascii_case("identity") => false,
        Some(Ok(v)) if v.eq_ignore_ascii_case("gzip") => true,
        Some(_) => {
            return error(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_encoding",
                "Content-Encoding must be gzip, identity or absent",
            );
        }
    };
    count(app, host, DecisionCounts::parse(&body, gzip)).await
}

/// `POST /v1/decision-counts`: the compact counters report policy-sidecar sends, counted
/// as `POST /logs` counts.
async fn decision_counts(
    State(app): State<Arc<App>>,
    peer: Peer,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let host = match host_of(&app, &peer, &headers) {
        Ok(host) => host,
        Err(refused) => return refused,
    };
    count(app, host, DecisionCounts::parse_compact(&body)).await
}

async fn count(
    app: Arc<App>,
    host: String,
    counts: Result<DecisionCounts, DeliveryError>,
) -> Response {
    let counts = match counts {
        Ok(counts) => counts,
        Err(err) => return delivery_error(&err),
    };
    // On a task of its own: this call may be writing other hosts' reports with its own
    // (group commit), which must be written and answered even if this host hangs up.
    let reported = tokio::spawn(async move { app.pipeline.report(&host, &counts).await }).await;
    match reported {
        Ok(Ok(counted)) => Json(json!({"counted": counted})).into_response(),
        Ok(Err(err)) => delivery_error(&err),
        Err(err) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            format!("the report was not recorded: {err}"),
        ),
    }
}
