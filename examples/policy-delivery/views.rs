//! What operators read: the artifacts they may see, one artifact's pipeline (steps, the
//! candidate against its step's limits, revisions, history) and its hosts a page at a time.
//! Each view is authorized per artifact (`READER`), and says what the caller may do there,
//! asked of the gate's authorizer with the very request the operation endpoints send it —
//! a hint for the UI, never a permission: the operation endpoints still decide.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use portcullis::delivery::{HostStatus, now_ms};
use portcullis::edge::decode_query;
use portcullis::gate::GateRequest;
use portcullis::{AccessRequest, Action, Principal, Resource};
use serde_json::{Value, json};

use crate::app::{App, artifact_resource, delivery_error, gate_error, principal};
use crate::{PAUSE, PROMOTE, PUBLISH, RESUME, ROLLBACK};

/// The operations on an artifact, by the name in their path, in the order the UI shows them.
pub(crate) const OPERATIONS: [(&str, Action); 4] = [
    ("promote", PROMOTE),
    ("pause", PAUSE),
    ("resume", RESUME),
    ("rollback", ROLLBACK),
];

/// The request `POST /v1/artifacts/{name}/{operation}` puts to the gate (before its
/// reason): what [`allowed`] asks the authorizer about, so both get the same answer.
pub(crate) fn operation_request(
    name: &str,
    operation: &str,
    action: Action,
    resource: Resource,
) -> GateRequest {
    GateRequest::new(action, resource).http("POST", format!("/v1/artifacts/{name}/{operation}"))
}

/// What `principal` may do to artifact `name`: each operation, and publishing, as the
/// endpoints' gate would authorize it (asked without recording anything: a hint is not an
/// attempt).
fn allowed(app: &App, principal: &Principal, name: &str, resource: &Resource) -> Value {
    let publish = GateRequest::new(PUBLISH, resource.clone())
        .http("POST", format!("/v1/artifacts/{name}/revisions"));
    let requests = OPERATIONS
        .into_iter()
        .map(|(operation, action)| {
            (
                operation,
                operation_request(name, operation, action, resource.clone()),
            )
        })
        .chain(std::iter::once(("publish", publish)));
    let mut allowed = serde_json::Map::new();
    for (operation, request) in requests {
        let decision = app.gate.authorizer().authorize(
            &AccessRequest::new(principal, &request.action, &request.resource)
                .with_context(&request.context),
        );
        allowed.insert(operation.to_owned(), json!(decision.is_allowed()));
    }
    Value::Object(allowed)
}

/// The manifest revision of `revision` of `artifact` (what hosts report), if known.
fn named(app: &App, artifact: &str, revision: Option<&str>) -> Option<String> {
    revision.and_then(|r| app.pipeline.bundle_revision(artifact, r))
}

/// `GET /v1/artifacts`: every artifact the caller may read, with its bundle, steps, state
/// and what the caller may do (an empty list, not a refusal, when it may read none).
pub(crate) async fn artifacts(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    let principal = match principal(&app, &headers).await {
        Ok(p) => p,
        Err(err) => return gate_error(&err),
    };
    let mut listed = Vec::new();
    for artifact in &app.pipeline.config().artifacts {
        let Ok(resource) = artifact_resource(&app, &artifact.name) else {
            continue;
        };
        let readable = app
            .gate
            .authorizer()
            .authorize(&AccessRequest::new(&principal, &Action::READ, &resource))
            .is_allowed();
        if !readable {
            continue;
        }
        let state = app.pipeline.state(&artifact.name).await;
        let candidate = state.as_ref().and_then(|s| s.candidate.as_ref());
        let stable = state.as_ref().and_then(|s| s.stable.as_deref());
        listed.push(json!({
            "artifact": artifact.name,
            "bundle": app.pipeline.bundle_of(&artifact.name),
            "steps": artifact.steps.iter().map(|s| &s.name).collect::<Vec<_>>(),
            "state": state,
            "stable_bundle_revision": named(&app, &artifact.name, stable),
            "candidate_bundle_revision":
                named(&app, &artifact.name, candidate.map(|c| c.revision.as_str())),
            "candidate_step": candidate
                .and_then(|c| artifact.steps.get(c.step))
                .map(|s| &s.name),
            "allowed": allowed(&app, &principal, &artifact.name, &resource),
        }));
    }
    Json(json!({ "principal": principal.to_string(), "artifacts": listed })).into_response()
}

/// `GET /v1/artifacts/{name}`: the pipeline (steps, state, the candidate against its
/// step's limits), its revisions, the newest 200 events (oldest first) and what the caller
/// may do, for a READER of the artifact. Hosts are paged: `GET /v1/artifacts/{name}/hosts`.
pub(crate) async fn artifact(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    let principal = match principal(&app, &headers).await {
        Ok(p) => p,
        Err(err) => return gate_error(&err),
    };
    let resource = match artifact_resource(&app, &name) {
        Ok(r) => r,
        Err(err) => return delivery_error(&err),
    };
    let request = GateRequest::new(Action::READ, resource.clone());
    if let Err(err) = app.gate.enforce(&principal, &request).await {
        return gate_error(&err);
    }
    let pipeline = &app.pipeline;
    let store = pipeline.store();
    let (revisions, events) = match (
        store.revisions(&name).await,
        store.events(Some(&name), 200).await,
    ) {
        (Ok(r), Ok(e)) => (r, e),
        (Err(err), _) | (_, Err(err)) => return delivery_error(&err),
    };
    let revisions: Vec<Value> = revisions
        .iter()
        .map(|r| {
            json!({
                "revision": r.revision.to_string(),
                "bundle_revision": r.bundle_revision,
                "size": r.size,
                "published_by": r.published_by,
                "published_at_ms": r.published_at_ms,
            })
        })
        .collect();
    let events: Vec<Value> = events
        .iter()
        .map(|e| {
            json!({
                "id": e.id, "at_ms": e.at_ms, "revision": e.revision,
                "bundle_revision": named(&app, &name, e.revision.as_deref()),
                "kind": e.kind, "actor": e.actor, "message": e.message,
            })
        })
        .collect();
    Json(json!({
        "artifact": name,
        "bundle": pipeline.bundle_of(&name),
        "principal": principal.to_string(),
        "steps": pipeline.config().artifacts.iter().find(|a| a.name == name).map(|a| &a.steps),
        "state": pipeline.state(&name).await,
        "readiness": pipeline.readiness(&name).await,
        "revisions": revisions,
        "events": events,
        "allowed": allowed(&app, &principal, &name, &resource),
        "now_ms": now_ms(),
    }))
    .into_response()
}

/// The hosts a page holds when the request does not say.
const DEFAULT_LIMIT: usize = 50;
/// The most hosts one page holds.
pub(crate) const MAX_LIMIT: usize = 500;
/// The longest SPIFFE-ID filter.
const MAX_FILTER: usize = 256;

/// How a host stands against what the pipeline assigns it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HostState {
    /// It reported running the revision assigned to it.
    Current,
    /// It reported running another revision (or none while one is assigned).
    Drift,
    /// It has not reported on the artifact's bundle.
    Unreported,
    /// Its last report carries an error.
    Error,
}

impl HostState {
    const ALL: [HostState; 4] = [
        HostState::Current,
        HostState::Drift,
        HostState::Unreported,
        HostState::Error,
    ];

    fn name(self) -> &'static str {
        match self {
            HostState::Current => "current",
            HostState::Drift => "drift",
            HostState::Unreported => "unreported",
            HostState::Error => "error",
        }
    }

    fn of(status: Option<&HostStatus>, assigned: Option<&str>) -> HostState {
        match status {
            None => HostState::Unreported,
            Some(s) if s.error.is_some() => HostState::Error,
            Some(s) if s.active_revision.as_deref() == assigned => HostState::Current,
            Some(_) => HostState::Drift,
        }
    }
}

/// A bad query parameter: answered `400 {"code": "invalid_parameter", "parameter": …}`.
#[derive(Debug, PartialEq, Eq)]
struct BadParameter {
    parameter: String,
    message: String,
}

impl BadParameter {
    fn new(parameter: &str, message: impl Into<String>) -> BadParameter {
        BadParameter {
            parameter: parameter.to_owned(),
            message: message.into(),
        }
    }

    fn into_response(self) -> Response {
        (
            StatusCode::BAD_REQUEST,
            Json(json!({
                "code": "invalid_parameter",
                "parameter": self.parameter,
                "message": self.message,
            })),
        )
            .into_response()
    }
}

/// `GET /v1/artifacts/{name}/hosts`'s parameters, checked.
#[derive(Debug, PartialEq, Eq)]
struct HostQuery {
    offset: usize,
    limit: usize,
    /// Lower case; empty for every host.
    filter: String,
    state: Option<HostState>,
}

fn count(parameter: &str, value: &str) -> Result<usize, BadParameter> {
    if value.is_empty() || value.len() > 9 || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(BadParameter::new(
            parameter,
            format!("{parameter} is a whole number from 0 to 999999999, not {value:?}"),
        ));
    }
    value
        .parse()
        .map_err(|_| BadParameter::new(parameter, format!("{parameter} {value:?} is too large")))
}

impl HostQuery {
    /// Parses `offset`, `limit` (1–[`MAX_LIMIT`]), `filter` (a part of the SPIFFE ID) and
    /// `state` (`current`, `drift`, `unreported`, `error`); anything else is refused.
    fn parse(query: Option<&str>) -> Result<HostQuery, BadParameter> {
        let pairs = decode_query(query.unwrap_or_default())
            .map_err(|e| BadParameter::new("query", e.to_string()))?;
        let mut parsed = HostQuery {
            offset: 0,
            limit: DEFAULT_LIMIT,
            filter: String::new(),
            state: None,
        };
        let mut seen: Vec<&str> = Vec::new();
        for (name, value) in &pairs {
            if seen.contains(&name.as_str()) {
                return Err(BadParameter::new(name, format!("{name} is given twice")));
            }
            match name.as_str() {
                "offset" => parsed.offset = count("offset", value)?,
                "limit" => {
                    parsed.limit = count("limit", value)?;
                    if !(1..=MAX_LIMIT).contains(&parsed.limit) {
                        return Err(BadParameter::new(
                            "limit",
                            format!("limit is 1 to {MAX_LIMIT} hosts a page, not {value}"),
                        ));
                    }
                }
                "filter" => {
                    if value.chars().count() > MAX_FILTER {
                        return Err(BadParameter::new(
                            "filter",
                            format!("filter is at most {MAX_FILTER} characters"),
                        ));
                    }
                    parsed.filter = value.to_lowercase();
                }
                "state" => {
                    let state = HostState::ALL.into_iter().find(|s| s.name() == value);
                    if state.is_none() && !value.is_empty() {
                        return Err(BadParameter::new(
                            "state",
                            format!(
                                "state is current, drift, unreported or error, not {:?}",
                                value.chars().take(40).collect::<String>()
                            ),
                        ));
                    }
                    parsed.state = state;
                }
                other => {
                    return Err(BadParameter::new(
                        other,
                        format!(
                            "unknown parameter {:?}: the parameters are offset, limit, filter \
                             and state",
                            other.chars().take(40).collect::<String>()
                        ),
                    ));
                }
            }
            seen.push(name);
        }
        Ok(parsed)
    }
}

/// `GET /v1/artifacts/{name}/hosts?offset=&limit=&filter=&state=`: the configured hosts
/// (and any other host that reported on the artifact's bundle), by SPIFFE ID, a page at a
/// time — each with the step whose scope covers it, the revision the pipeline assigns it,
/// what it last reported and when, and whether it runs what it is assigned — with counts
/// by state over the hosts the filter matches, and by step over every host. For a READER
/// of the artifact.
pub(crate) async fn hosts(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let principal = match principal(&app, &headers).await {
        Ok(p) => p,
        Err(err) => return gate_error(&err),
    };
    let resource = match artifact_resource(&app, &name) {
        Ok(r) => r,
        Err(err) => return delivery_error(&err),
    };
    if let Err(err) = app
        .gate
        .enforce(&principal, &GateRequest::new(Action::READ, resource))
        .await
    {
        return gate_error(&err);
    }
    let query = match HostQuery::parse(query.as_deref()) {
        Ok(query) => query,
        Err(bad) => return bad.into_response(),
    };
    let pipeline = &app.pipeline;
    let bundle = pipeline.bundle_of(&name).unwrap_or_default().to_owned();
    let statuses = match pipeline.store().host_statuses_of(&bundle).await {
        Ok(statuses) => statuses,
        Err(err) => return delivery_error(&err),
    };
    // Configured hosts, and hosts that reported but are no longer configured.
    let mut known: BTreeMap<&str, (bool, Option<&HostStatus>)> = app
        .host_ids
        .iter()
        .map(|id| (id.as_str(), (true, None)))
        .collect();
    for status in &statuses {
        known
            .entry(status.spiffe_id.as_str())
            .or_insert((false, None))
            .1 = Some(status);
    }
    let total = known.len();
    let hosts: Vec<(&str, bool, Option<&HostStatus>)> = known
        .into_iter()
        .map(|(id, (configured, status))| (id, configured, status))
        .collect();
    let ids: Vec<&str> = hosts.iter().map(|(id, _, _)| *id).collect();
    let assignments = pipeline.assignments(&name, &ids).await;
    let steps: Vec<String> = pipeline
        .config()
        .artifacts
        .iter()
        .find(|a| a.name == name)
        .map(|a| a.steps.iter().map(|s| s.name.clone()).collect())
        .unwrap_or_default();
    // Which step reaches each host first is the pipeline's, whatever the filter.
    let mut by_step = vec![0_usize; steps.len()];
    let mut no_step = 0_usize;
    for assignment in &assignments {
        match assignment.step.and_then(|i| by_step.get_mut(i)) {
            Some(n) => *n += 1,
            None => no_step += 1,
        }
    }
    let mut by_state = [0_usize; 4];
    let mut filtered = 0_usize;
    let mut matched = 0_usize;
    let mut rows = Vec::new();
    for ((id, configured, status), assignment) in hosts.iter().zip(&assignments) {
        if !query.filter.is_empty() && !id.to_lowercase().contains(&query.filter) {
            continue;
        }
        filtered += 1;
        let assigned = assignment.revision.as_ref().map(|r| r.to_string());
        let assigned_named = named(&app, &name, assigned.as_deref());
        let state = HostState::of(*status, assigned_named.as_deref());
        if let Some(n) = HostState::ALL
            .iter()
            .position(|s| *s == state)
            .and_then(|i| by_state.get_mut(i))
        {
            *n += 1;
        }
        if query.state.is_some_and(|wanted| wanted != state) {
            continue;
        }
        matched += 1;
        if matched <= query.offset || rows.len() >= query.limit {
            continue;
        }
        rows.push(json!({
            "spiffe_id": id,
            "configured": configured,
            "step": assignment.step.and_then(|i| steps.get(i)),
            "assigned_revision": assigned,
            "assigned_bundle_revision": assigned_named,
            "active_revision": status.and_then(|s| s.active_revision.as_deref()),
            "error": status.and_then(|s| s.error.as_deref()),
            "reported_at_ms": status.map(|s| s.reported_at_ms),
            "state": state.name(),
        }));
    }
    let counts: serde_json::Map<String, Value> = HostState::ALL
        .iter()
        .zip(by_state)
        .map(|(state, n)| (state.name().to_owned(), json!(n)))
        .collect();
    Json(json!({
        "artifact": name,
        "bundle": bundle,
        "total": total,
        "filtered": filtered,
        "matched": matched,
        "offset": query.offset,
        "limit": query.limit,
        "counts": counts,
        "steps": steps,
        "per_step": by_step,
        "no_step": no_step,
        "hosts": rows,
        "now_ms": now_ms(),
    }))
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(query: &str) -> Result<HostQuery, BadParameter> {
        HostQuery::parse(Some(query))
    }

    #[test]
    fn host_queries_are_parsed_strictly() {
        assert_eq!(
            HostQuery::parse(None).unwrap(),
            HostQuery {
                offset: 0,
                limit: DEFAULT_LIMIT,
                filter: String::new(),
                state: None
            }
        );
        let query = parse("offset=950&limit=500&filter=Prod%2Fhost-9&state=drift").unwrap();
        assert_eq!(
            query,
            HostQuery {
                offset: 950,
                limit: MAX_LIMIT,
                filter: "prod/host-9".into(),
                state: Some(HostState::Drift)
            }
        );
        assert_eq!(
            parse("state=").unwrap().state,
            None,
            "an empty state is every state"
        );
        for (bad, parameter) in [
            ("limit=0", "limit"),
            ("limit=501", "limit"),
            ("limit=-1", "limit"),
            ("limit=", "limit"),
            ("offset=1e3", "offset"),
            ("offset=+5", "offset"),
            ("offset=99999999999999999999", "offset"),
            ("state=running", "state"),
            ("sort=name", "sort"),
            ("limit=5&limit=6", "limit"),
            ("filter=%ZZ", "query"),
            ("filter=a%00b", "query"),
        ] {
            let refused = parse(bad).unwrap_err();
            assert_eq!(refused.parameter, parameter, "{bad}: {refused:?}");
            assert!(!refused.message.is_empty());
        }
        let long = format!("filter={}", "a".repeat(MAX_FILTER + 1));
        assert_eq!(parse(&long).unwrap_err().parameter, "filter");
        assert!(parse(&format!("filter={}", "é".repeat(MAX_FILTER))).is_ok());
    }

    #[test]
    fn a_host_is_current_only_on_what_it_is_assigned() {
        let status = |active: Option<&str>, error: Option<&str>| HostStatus {
            spiffe_id: "spiffe://example.org/h".into(),
            bundle: "authz".into(),
            active_revision: active.map(str::to_owned),
            error: error.map(str::to_owned),
            reported_at_ms: 1,
        };
        let current = status(Some("r2"), None);
        assert_eq!(
            HostState::of(Some(&current), Some("r2")),
            HostState::Current
        );
        assert_eq!(HostState::of(Some(&current), Some("r1")), HostState::Drift);
        assert_eq!(HostState::of(Some(&current), None), HostState::Drift);
        let idle = status(None, None);
        assert_eq!(HostState::of(Some(&idle), None), HostState::Current);
        assert_eq!(HostState::of(Some(&idle), Some("r1")), HostState::Drift);
        let failed = status(Some("r2"), Some("bundle_error: bad"));
        assert_eq!(HostState::of(Some(&failed), Some("r2")), HostState::Error);
        assert_eq!(HostState::of(None, Some("r2")), HostState::Unreported);
    }
}
