//! The audit API: the proxied requests a caller may see, with their outcomes, newest first
//! unless asked otherwise; and retry of one of them, as the caller.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use portcullis::Principal;
use portcullis::audit::{AuditError, AuditEvent, AuditQuery, AuditRecord, EventKind};
use portcullis::http::CorrelationId;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::broker::{Broker, PROXY, SERVICE, forward};
use crate::error_response;
use crate::wire::body_hash;

/// The most audit pages (of [`PAGE`] records) one `/api/audit` call reads looking for rows.
const AUDIT_PAGES: usize = 20;
/// Records read at a time.
const PAGE: u32 = 200;
/// Newest first, the log is read backwards in windows of sequence numbers, each twice the
/// last (while rows are wanting), up to this many.
const MAX_WINDOW: u64 = 16 * PAGE as u64;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AuditParams {
    user: Option<String>,
    region: Option<String>,
    service: Option<String>,
    from_ms: Option<u64>,
    to_ms: Option<u64>,
    /// `succeeded`, `failed`, `denied` or `pending`.
    status: Option<String>,
    /// `newest` (the default) or `oldest` first.
    order: Option<String>,
    /// Oldest first: rows after this `seq` (the previous answer's `next_after`).
    after: Option<u64>,
    /// Newest first: rows before this `seq` (the previous answer's `next_before`).
    before: Option<u64>,
    limit: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Order {
    Newest,
    Oldest,
}

fn bad_request(message: impl Into<String>) -> Response {
    error_response(StatusCode::BAD_REQUEST, "bad_request", message.into())
}

fn unavailable(e: &AuditError) -> Response {
    error_response(
        StatusCode::SERVICE_UNAVAILABLE,
        "audit_unavailable",
        e.to_string(),
    )
}

impl AuditParams {
    /// The order asked for, or what is wrong with it (the cursor of the other order).
    fn order(&self) -> Result<Order, String> {
        let order = match self.order.as_deref() {
            None | Some("newest") => Order::Newest,
            Some("oldest") => Order::Oldest,
            Some(other) => return Err(format!("order is `newest` or `oldest`, not {other:?}")),
        };
        match (order, self.after, self.before) {
            (Order::Newest, Some(_), _) => Err(
                "`after` pages oldest first: add order=oldest, or page newest first with `before`"
                    .into(),
            ),
            (Order::Oldest, _, Some(_)) => Err(
                "`before` pages newest first: drop order=oldest, or page oldest first with `after`"
                    .into(),
            ),
            _ => Ok(order),
        }
    }
}

impl Broker {
    /// Why `who` retrying `event` would be refused again, if it would: a request refused
    /// as bad input, a body not kept, or no grant of the caller's covering it.
    fn retry_refusal(&self, who: &Principal, event: &AuditEvent) -> Option<String> {
        if event.kind == EventKind::Decision && event.action == PROXY {
            return Some("refused as bad input: a retry would be refused the same way".into());
        }
        let Some(request) = event
            .request
            .as_ref()
            .filter(|r| r.target.starts_with("/proxy/"))
        else {
            return Some("not a proxied request".into());
        };
        let parameter = |name: &str| request.parameters.get(name);
        if parameter("body_bytes")
            .and_then(Value::as_u64)
            .is_some_and(|n| n > 0)
            && parameter("body_sealed").is_none()
        {
            return Some("the body was too large to keep".into());
        }
        let Some((region, service)) = event.resource.id().split_once('/') else {
            return Some("not a region and service".into());
        };
        if self.grants_cover(who, &request.method, region, service) {
            None
        } else {
            Some(format!(
                "no grant lets you send {} to {region}/{service}",
                request.method.to_ascii_uppercase()
            ))
        }
    }

    /// One row of the audit view: the request (or refusal), its outcome, and whether the
    /// caller could retry it.
    fn audit_row(
        &self,
        who: &Principal,
        event: &AuditEvent,
        seq: u64,
        outcome: Option<&AuditEvent>,
    ) -> Value {
        let request = event.request.as_ref();
        let param = |name: &str| request.and_then(|r| r.parameters.get(name)).cloned();
        let refusal = self.retry_refusal(who, event);
        json!({
            "id": event.id,
            "seq": seq,
            "time_ms": event.time_ms,
            "user": event.actor.subject,
            "method": request.map(|r| r.method.clone()),
            "target": request.map(|r| r.target.clone()),
            "resource": event.resource.id(),
            "decision": event.decision.as_ref().map(|d| json!({
                "effect": d.effect(),
                "reason": d.reason(),
            })),
            "outcome": outcome.and_then(|o| o.outcome.as_ref()).map(|o| json!({
                "status": o.status,
                "detail": o.detail,
            })),
            "retry_of": param("retry_of"),
            "body_bytes": param("body_bytes"),
            "retry": { "possible": refusal.is_none(), "reason": refusal },
        })
    }

    /// The rows of `records` (requests and refusals, with their outcomes) in the records'
    /// order, with their `seq`, keeping those whose status is `status` (any if `None`).
    async fn rows_of(
        &self,
        who: &Principal,
        records: &[AuditRecord],
        status: Option<&str>,
    ) -> Result<Vec<(u64, Value)>, AuditError> {
        // Every intent's outcome in one read, not one lookup per row.
        let outcomes = self.audit.outcomes_of(records).await?;
        Ok(records
            .iter()
            .filter(|r| r.event.kind != EventKind::Outcome)
            .map(|record| {
                let outcome = outcomes.get(&record.event.id).map(|o| &o.event);
                let row = self.audit_row(who, &record.event, record.seq, outcome);
                (record.seq, row)
            })
            .filter(|(_, row)| status.is_none_or(|s| s == row_status(row)))
            .collect())
    }
}

/// The status a row is filtered by.
fn row_status(row: &Value) -> &str {
    if row.pointer("/decision/effect").and_then(Value::as_str) == Some("deny") {
        "denied"
    } else {
        row.pointer("/outcome/status")
            .and_then(Value::as_str)
            .unwrap_or("pending")
    }
}

/// `GET /api/audit`.
pub(crate) async fn audit_api(
    State(broker): State<Arc<Broker>>,
    Extension(who): Extension<Principal>,
    axum::extract::Query(params): axum::extract::Query<AuditParams>,
) -> Response {
    let order = match params.order() {
        Ok(order) => order,
        Err(message) => return bad_request(message),
    };
    let everyone = broker.sees_everyone(&who);
    let user = match params.user.clone() {
        Some(user) if user != who.subject() && !everyone => {
            return error_response(
                StatusCode::FORBIDDEN,
                "forbidden",
                "you may only see your own requests".into(),
            );
        }
        Some(user) => Some(user),
        None if everyone => None,
        None => Some(who.subject().to_owned()),
    };
    let resource = match (&params.region, &params.service) {
        (Some(region), Some(service)) => {
            match portcullis::Resource::new(SERVICE, format!("{region}/{service}")) {
                Ok(resource) => Some(resource),
                Err(e) => return bad_request(e.to_string()),
            }
        }
        (None, None) => None,
        _ => return bad_request("filter by region and service together"),
    };
    let query = AuditQuery {
        actor: user,
        resource,
        from_ms: params.from_ms,
        to_ms: params.to_ms,
        limit: PAGE,
        ..Default::default()
    };
    let limit = params.limit.unwrap_or(50).clamp(1, PAGE) as usize;
    let status = params.status.as_deref();
    let answer = match order {
        Order::Oldest => oldest_first(&broker, &who, query, params.after, limit, status)
            .await
            .map(|(rows, next)| json!({ "order": "oldest", "records": rows, "next_after": next })),
        Order::Newest => newest_first(&broker, &who, query, params.before, limit, status)
            .await
            .map(|(rows, next)| json!({ "order": "newest", "records": rows, "next_before": next })),
    };
    match answer {
        Ok(answer) => Json(answer).into_response(),
        Err(e) => unavailable(&e),
    }
}

/// Rows after `after`, oldest first. Outcome records and rows the status filter drops take
/// no place in the answer: pages are read until `limit` rows pass (or the log ends, or
/// [`AUDIT_PAGES`] were read); the cursor is the last record looked at.
async fn oldest_first(
    broker: &Broker,
    who: &Principal,
    mut query: AuditQuery,
    after: Option<u64>,
    limit: usize,
    status: Option<&str>,
) -> Result<(Vec<Value>, Option<u64>), AuditError> {
    query.after_seq = after;
    let mut rows = Vec::new();
    for _ in 0..AUDIT_PAGES {
        let page = broker.audit.query(&query).await?;
        for (seq, row) in broker.rows_of(who, &page.records, status).await? {
            rows.push(row);
            if rows.len() == limit {
                return Ok((rows, Some(seq)));
            }
        }
        match page.next_after {
            Some(next) => query.after_seq = Some(next),
            None => return Ok((rows, None)),
        }
    }
    Ok((rows, query.after_seq))
}

/// Rows before `before`, newest first. The log is read backwards a window of sequence
/// numbers at a time (each window in order, then its rows reversed); the cursor is the
/// `seq` below which the next page starts.
async fn newest_first(
    broker: &Broker,
    who: &Principal,
    query: AuditQuery,
    before: Option<u64>,
    limit: usize,
    status: Option<&str>,
) -> Result<(Vec<Value>, Option<u64>), AuditError> {
    let head = broker.audit.head().await?.seq;
    // The newest record still to look at.
    let mut upper = before.map_or(head, |b| b.saturating_sub(1).min(head));
    let mut window = (2 * limit as u64).max(16);
    let mut reads = 0;
    let mut rows = Vec::new();
    while upper > 0 {
        let lower = upper.saturating_sub(window);
        let mut records = Vec::new();
        let mut page_query = AuditQuery {
            after_seq: Some(lower),
            ..query.clone()
        };
        let mut complete = false;
        while reads < AUDIT_PAGES {
            reads += 1;
            let page = broker.audit.query(&page_query).await?;
            let (read, kept) = (page.records.len(), records.len());
            records.extend(page.records.into_iter().filter(|r| r.seq <= upper));
            let past_window = records.len() - kept < read;
            match page.next_after {
                // The page ended inside the window: read on.
                Some(next) if !past_window && next < upper => {
                    page_query.after_seq = Some(next);
                }
                _ => {
                    complete = true;
                    break;
                }
            }
        }
        if !complete {
            // Out of reads inside a window: its rows wait for the next call, which starts
            // at its top again.
            return Ok((rows, Some(upper + 1)));
        }
        for (seq, row) in broker
            .rows_of(who, &records, status)
            .await?
            .into_iter()
            .rev()
        {
            rows.push(row);
            if rows.len() == limit {
                return Ok((rows, Some(seq)));
            }
        }
        upper = lower;
        window = (window * 2).min(MAX_WINDOW);
        if reads >= AUDIT_PAGES && upper > 0 {
            return Ok((rows, Some(upper + 1)));
        }
    }
    Ok((rows, None))
}

/// `POST /api/audit/{id}/retry`: sends an earlier request again, as the caller, through
/// the whole gate: a fresh authorization and a new audit record that names the original.
pub(crate) async fn retry(
    State(broker): State<Arc<Broker>>,
    Extension(who): Extension<Principal>,
    Extension(correlation): Extension<CorrelationId>,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Response {
    let found = match broker.audit.get(&id).await {
        Ok(Some(found)) => found.event.event,
        Ok(None) => {
            return error_response(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("no audit record {id}"),
            );
        }
        Err(e) => return unavailable(&e),
    };
    if found.actor.subject != who.subject() && !broker.sees_everyone(&who) {
        return error_response(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no audit record {id}"),
        );
    }
    let Some(request) = found
        .request
        .as_ref()
        .filter(|r| r.target.starts_with("/proxy/"))
    else {
        return error_response(
            StatusCode::CONFLICT,
            "not_a_request",
            format!("{id} is not a proxied request"),
        );
    };
    let bytes = request
        .parameters
        .get("body_bytes")
        .and_then(Value::as_u64)
        .unwrap_or(0);
    let body = match request
        .parameters
        .get("body_sealed")
        .and_then(Value::as_str)
    {
        Some(sealed) => match broker.sealer.open(sealed) {
            // Opened, and the very body this record describes (not one sealed for another).
            Ok(body)
                if request
                    .parameters
                    .get("body_sha256")
                    .and_then(Value::as_str)
                    == Some(body_hash(&body).as_str()) =>
            {
                body
            }
            Ok(_) => {
                return error_response(
                    StatusCode::CONFLICT,
                    "body_unreadable",
                    "the kept body is not the one this record's hash names".into(),
                );
            }
            Err(e) => return error_response(StatusCode::CONFLICT, "body_unreadable", e),
        },
        None if bytes == 0 => Vec::new(),
        None => {
            return error_response(
                StatusCode::CONFLICT,
                "body_not_kept",
                format!(
                    "the original body ({bytes} bytes) was too large to keep, so it cannot be retried"
                ),
            );
        }
    };
    let mut builder = axum::http::Request::builder()
        .method(request.method.as_str())
        .uri(request.target.as_str());
    if let Some(kind) = request
        .parameters
        .get("content_type")
        .and_then(Value::as_str)
    {
        builder = builder.header(axum::http::header::CONTENT_TYPE, kind);
    }
    let Ok(rebuilt) = builder.body(Body::from(body)) else {
        return error_response(
            StatusCode::CONFLICT,
            "not_a_request",
            format!("{id} cannot be rebuilt"),
        );
    };
    let (parts, body) = rebuilt.into_parts();
    forward(broker, who, correlation.0, parts, body, Some(id)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(order: Option<&str>, after: Option<u64>, before: Option<u64>) -> AuditParams {
        AuditParams {
            order: order.map(str::to_owned),
            after,
            before,
            ..AuditParams::default()
        }
    }

    #[test]
    fn newest_first_unless_asked_and_each_order_has_its_own_cursor() {
        assert_eq!(params(None, None, None).order(), Ok(Order::Newest));
        assert_eq!(params(None, None, Some(9)).order(), Ok(Order::Newest));
        assert_eq!(
            params(Some("oldest"), Some(3), None).order(),
            Ok(Order::Oldest)
        );
        assert!(params(None, Some(3), None).order().is_err());
        assert!(params(Some("oldest"), None, Some(3)).order().is_err());
        assert!(params(Some("up"), None, None).order().is_err());
    }

    #[test]
    fn a_row_is_denied_or_has_its_outcome_or_is_pending() {
        assert_eq!(
            row_status(&json!({"decision": {"effect": "deny"}})),
            "denied"
        );
        assert_eq!(
            row_status(&json!({"decision": {"effect": "allow"}, "outcome": {"status": "failed"}})),
            "failed"
        );
        assert_eq!(
            row_status(&json!({"decision": {"effect": "allow"}, "outcome": null})),
            "pending"
        );
    }
}
