//! Bulk requests: one request template sent for many ids (a gradual rollout company by
//! company), with bounded concurrency and rate; each id goes through the whole gate and is
//! audited on its own; progress can be watched and the run cancelled.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use portcullis::Principal;
use portcullis::http::CorrelationId;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::broker::{Broker, forward};
use crate::error_response;

/// The placeholder replaced by each id.
pub(crate) const PLACEHOLDER: &str = "{id}";
const MAX_IDS: usize = 10_000;
const MAX_CONCURRENCY: usize = 32;
const MAX_RATE: u32 = 1_000;
/// Finished jobs kept for their owners to read, oldest dropped first.
const KEPT_JOBS: usize = 100;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct BulkRequest {
    pub(crate) method: String,
    /// `/proxy/{region}/{service}/…` with `{id}` somewhere.
    pub(crate) path_template: String,
    #[serde(default)]
    pub(crate) body_template: Option<String>,
    #[serde(default)]
    pub(crate) content_type: Option<String>,
    pub(crate) ids: Vec<String>,
    #[serde(default = "default_concurrency")]
    pub(crate) concurrency: usize,
    #[serde(default = "default_rate")]
    pub(crate) rate_per_second: u32,
}

fn default_concurrency() -> usize {
    4
}
fn default_rate() -> u32 {
    20
}

/// One id's result.
#[derive(Debug, Clone, Serialize)]
struct ItemResult {
    id: String,
    status: u16,
    bytes: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

pub(crate) struct Job {
    /// Made by the broker ([`job_id`]): unique, and unguessable by other users.
    id: String,
    owner: String,
    /// The `X-Request-Id` of the request that started the job (the caller's, or one the
    /// broker made): shown, never used to find the job.
    request_id: String,
    total: usize,
    started: AtomicUsize,
    cancelled: AtomicBool,
    finished: AtomicBool,
    results: Mutex<Vec<ItemResult>>,
}

impl Job {
    fn view(&self) -> Value {
        let results = self.results.lock().map(|r| r.clone()).unwrap_or_default();
        let succeeded = results.iter().filter(|r| r.status < 400).count();
        let started = self.started.load(Ordering::SeqCst).min(self.total);
        let state = if !self.finished.load(Ordering::SeqCst) {
            "running"
        } else if self.cancelled.load(Ordering::SeqCst) {
            "cancelled"
        } else {
            "done"
        };
        json!({
            "id": self.id,
            "owner": self.owner,
            "request_id": self.request_id,
            "state": state,
            "total": self.total,
            "started": started,
            // Once the job has ended, the ids never sent (cancelled before their turn).
            "not_started": self.total - started,
            "done": results.len(),
            "succeeded": succeeded,
            "failed": results.len() - succeeded,
            "results": results,
        })
    }
}

/// The bulk jobs: in this broker's memory (a restart forgets them, not their audit), or in
/// the store database, shared by every broker (`[store]`, see [`crate::fleet::PgJobs`]).
pub(crate) enum Jobs {
    Memory(MemoryJobs),
    #[cfg(feature = "postgres")]
    Postgres(crate::fleet::PgJobs),
}

impl Default for Jobs {
    fn default() -> Self {
        Jobs::Memory(MemoryJobs::default())
    }
}

/// The bulk jobs of this broker, in memory.
#[derive(Default)]
pub(crate) struct MemoryJobs {
    jobs: Mutex<Vec<Arc<Job>>>,
}

/// A job being run by this broker.
#[derive(Clone)]
enum Running {
    Memory(Arc<Job>),
    #[cfg(feature = "postgres")]
    Postgres(crate::fleet::PgJob),
}

impl Running {
    fn id(&self) -> &str {
        match self {
            Running::Memory(job) => &job.id,
            #[cfg(feature = "postgres")]
            Running::Postgres(job) => &job.id,
        }
    }

    /// Whether a cancel is known before waiting for a permit (in the database, the claim
    /// of each id checks it).
    fn cancelled(&self) -> bool {
        match self {
            Running::Memory(job) => job.cancelled.load(Ordering::SeqCst),
            #[cfg(feature = "postgres")]
            Running::Postgres(_) => false,
        }
    }

    /// Counts the next id as started; false if it must not be sent.
    async fn begin_item(&self) -> bool {
        match self {
            Running::Memory(job) => {
                job.started.fetch_add(1, Ordering::SeqCst);
                true
            }
            #[cfg(feature = "postgres")]
            Running::Postgres(job) => match job.begin_item().await {
                Ok(go) => go,
                Err(error) => {
                    // Fail closed: nothing more is sent that cannot be recorded.
                    tracing::warn!(job = %job.id, %error, "a bulk job stops: its next id cannot be claimed");
                    false
                }
            },
        }
    }

    async fn record(&self, result: ItemResult) {
        match self {
            Running::Memory(job) => {
                if let Ok(mut results) = job.results.lock() {
                    results.push(result);
                }
            }
            #[cfg(feature = "postgres")]
            Running::Postgres(job) => {
                let recorded = job
                    .record(
                        &result.id,
                        result.status,
                        result.bytes,
                        result.error.as_deref(),
                    )
                    .await;
                if let Err(error) = recorded {
                    tracing::warn!(job = %job.id, %error, "a bulk result could not be recorded (the audit log has it)");
                }
            }
        }
    }

    async fn finish(&self) {
        match self {
            Running::Memory(job) => job.finished.store(true, Ordering::SeqCst),
            #[cfg(feature = "postgres")]
            Running::Postgres(job) => {
                if let Err(error) = job.finish().await {
                    tracing::warn!(job = %job.id, %error, "a bulk job's end could not be recorded");
                }
            }
        }
    }
}

impl MemoryJobs {
    fn find(&self, id: &str, who: &Principal, everyone: bool) -> Option<Arc<Job>> {
        let jobs = self.jobs.lock().ok()?;
        jobs.iter()
            .find(|j| j.id == id && (everyone || j.owner == who.subject()))
            .cloned()
    }

    fn add(&self, job: Arc<Job>) {
        if let Ok(mut jobs) = self.jobs.lock() {
            if jobs.len() >= KEPT_JOBS
                && let Some(oldest) = jobs.iter().position(|j| j.finished.load(Ordering::SeqCst))
            {
                jobs.remove(oldest);
            }
            jobs.push(job);
        }
    }
}

/// A fresh job id: `bulk-` and 128 random bits, hex.
fn job_id() -> Option<String> {
    let bytes: [u8; 16] = portcullis_core::unique_bytes().ok()?;
    Some(format!("bulk-{}", hex::encode(bytes)))
}

fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

fn check(request: &BulkRequest) -> Result<(), String> {
    if !request.path_template.starts_with("/proxy/") {
        return Err("path_template must start with /proxy/".into());
    }
    if !request.path_template.contains(PLACEHOLDER)
        && !request
            .body_template
            .as_deref()
            .is_some_and(|b| b.contains(PLACEHOLDER))
    {
        return Err(format!("neither template holds {PLACEHOLDER}"));
    }
    if request.ids.is_empty() || request.ids.len() > MAX_IDS {
        return Err(format!("send 1 to {MAX_IDS} ids"));
    }
    if let Some(bad) = request.ids.iter().find(|id| !valid_id(id)) {
        return Err(format!("id {bad:?} is not 1-128 of A-Z a-z 0-9 - _ ."));
    }
    if !(1..=MAX_CONCURRENCY).contains(&request.concurrency) {
        return Err(format!("concurrency is 1 to {MAX_CONCURRENCY}"));
    }
    if !(1..=MAX_RATE).contains(&request.rate_per_second) {
        return Err(format!("rate_per_second is 1 to {MAX_RATE}"));
    }
    Ok(())
}

/// `POST /api/bulk`: starts a job, answers 202 with its id.
pub(crate) async fn start(
    State(broker): State<Arc<Broker>>,
    Extension(who): Extension<Principal>,
    Extension(correlation): Extension<CorrelationId>,
    body: axum::body::Bytes,
) -> Response {
    let request: BulkRequest = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(e) => return error_response(StatusCode::BAD_REQUEST, "bad_request", e.to_string()),
    };
    if let Err(reason) = check(&request) {
        return error_response(StatusCode::BAD_REQUEST, "bad_request", reason);
    }
    // The id is the broker's, never the caller's: a request id is whatever the caller sent,
    // and two callers sending the same one must not share a job.
    let Some(id) = job_id() else {
        return error_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the system random source failed".to_owned(),
        );
    };
    let total = request.ids.len();
    let job = match &broker.jobs {
        Jobs::Memory(jobs) => {
            let job = Arc::new(Job {
                id,
                owner: who.subject().to_owned(),
                request_id: correlation.0,
                total,
                started: AtomicUsize::new(0),
                cancelled: AtomicBool::new(false),
                finished: AtomicBool::new(false),
                results: Mutex::new(Vec::new()),
            });
            jobs.add(job.clone());
            Running::Memory(job)
        }
        #[cfg(feature = "postgres")]
        Jobs::Postgres(jobs) => {
            match jobs
                .create(&id, who.subject(), &correlation.0, &request.ids)
                .await
            {
                Ok(job) => Running::Postgres(job),
                Err(e) => return unavailable(e),
            }
        }
    };
    let id = job.id().to_owned();
    tokio::spawn(run(broker, who, job, request));
    (
        StatusCode::ACCEPTED,
        Json(json!({ "id": id, "total": total })),
    )
        .into_response()
}

#[cfg(feature = "postgres")]
fn unavailable(message: String) -> Response {
    error_response(
        StatusCode::SERVICE_UNAVAILABLE,
        "store_unavailable",
        message,
    )
}

async fn run(broker: Arc<Broker>, who: Principal, job: Running, request: BulkRequest) {
    #[cfg(feature = "postgres")]
    let _alive = match &job {
        Running::Postgres(job) => Some(job.heartbeat()),
        Running::Memory(_) => None,
    };
    let request = Arc::new(request);
    let permits = Arc::new(tokio::sync::Semaphore::new(request.concurrency));
    let mut pace = tokio::time::interval(Duration::from_secs(1) / request.rate_per_second);
    pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut running = tokio::task::JoinSet::new();
    for (n, id) in request.ids.iter().enumerate() {
        pace.tick().await;
        if job.cancelled() {
            break;
        }
        let Ok(permit) = permits.clone().acquire_owned().await else {
            break;
        };
        if !job.begin_item().await {
            break;
        }
        let (broker, who, job, request, id) = (
            broker.clone(),
            who.clone(),
            job.clone(),
            request.clone(),
            id.clone(),
        );
        running.spawn(async move {
            let result = one(&broker, &who, job.id(), &request, &id, n).await;
            job.record(result).await;
            drop(permit);
        });
    }
    while running.join_next().await.is_some() {}
    job.finish().await;
}

async fn one(
    broker: &Arc<Broker>,
    who: &Principal,
    job_id: &str,
    request: &BulkRequest,
    id: &str,
    n: usize,
) -> ItemResult {
    let failed = |status: u16, error: String| ItemResult {
        id: id.to_owned(),
        status,
        bytes: 0,
        error: Some(error),
    };
    let path = request.path_template.replace(PLACEHOLDER, id);
    let body = request
        .body_template
        .as_deref()
        .map(|b| b.replace(PLACEHOLDER, id))
        .unwrap_or_default();
    let mut builder = axum::http::Request::builder()
        .method(request.method.as_str())
        .uri(path.as_str());
    if let Some(kind) = &request.content_type {
        builder = builder.header(axum::http::header::CONTENT_TYPE, kind.as_str());
    }
    let Ok(built) = builder.body(Body::from(body)) else {
        return failed(400, format!("{path} is not a valid request"));
    };
    let (parts, body) = built.into_parts();
    let correlation = format!("{job_id}-{n}");
    let response = forward(broker.clone(), who.clone(), correlation, parts, body, None).await;
    let status = response.status().as_u16();
    match axum::body::to_bytes(response.into_body(), 16 << 20).await {
        Ok(bytes) if status < 400 => ItemResult {
            id: id.to_owned(),
            status,
            bytes: bytes.len(),
            error: None,
        },
        Ok(bytes) => {
            let reason = serde_json::from_slice::<Value>(&bytes)
                .ok()
                .and_then(|v| v.get("message").and_then(Value::as_str).map(str::to_owned))
                .unwrap_or_else(|| format!("HTTP {status}"));
            failed(status, reason)
        }
        Err(e) => failed(502, format!("the response failed: {e}")),
    }
}

/// `GET /api/bulk/{id}`: progress and per-id results.
pub(crate) async fn status(
    State(broker): State<Arc<Broker>>,
    Extension(who): Extension<Principal>,
    Path(id): Path<String>,
) -> Response {
    let everyone = broker.sees_everyone(&who);
    match &broker.jobs {
        Jobs::Memory(jobs) => match jobs.find(&id, &who, everyone) {
            Some(job) => Json(job.view()).into_response(),
            None => not_found(&id),
        },
        #[cfg(feature = "postgres")]
        Jobs::Postgres(jobs) => match jobs.view(&id, who.subject(), everyone).await {
            Ok(Some(view)) => Json(view).into_response(),
            Ok(None) => not_found(&id),
            Err(e) => unavailable(e),
        },
    }
}

fn not_found(id: &str) -> Response {
    error_response(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("no bulk job {id}"),
    )
}

/// `POST /api/bulk/{id}/cancel`: no new ids are started; those under way finish.
pub(crate) async fn cancel(
    State(broker): State<Arc<Broker>>,
    Extension(who): Extension<Principal>,
    Path(id): Path<String>,
) -> Response {
    let everyone = broker.sees_everyone(&who);
    match &broker.jobs {
        Jobs::Memory(jobs) => match jobs.find(&id, &who, everyone) {
            Some(job) => {
                job.cancelled.store(true, Ordering::SeqCst);
                Json(job.view()).into_response()
            }
            None => not_found(&id),
        },
        #[cfg(feature = "postgres")]
        Jobs::Postgres(jobs) => match jobs.cancel(&id, who.subject(), everyone).await {
            Ok(true) => match jobs.view(&id, who.subject(), everyone).await {
                Ok(Some(view)) => Json(view).into_response(),
                Ok(None) => not_found(&id),
                Err(e) => unavailable(e),
            },
            Ok(false) => not_found(&id),
            Err(e) => unavailable(e),
        },
    }
}
