//! [`DecisionLog`] (feature `audit`): each policy decision recorded durably in a
//! portcullis-audit sink, in OPA's decision log layout, with masked values left out.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use chrono::{SecondsFormat, Utc};
use portcullis_audit::{AuditError, AuditEvent, AuditSink, EventKind, Receipt};
use portcullis_core::{Action, Decision, Principal, Resource, ResourceKind};
use serde_json::{Map, Value, json};

use crate::{Evaluation, PolicyEngine, PolicyError};

/// The action of decision-log events.
pub const EVALUATE: Action = Action::from_static("evaluate");
/// The resource kind of decision-log events; the id is the rule path (`data.a.b`), or
/// `data` for an ad-hoc query or a path that is not a resource id.
pub const POLICY_RULE: ResourceKind = ResourceKind::from_static("policy_rule");
/// The action of a refused bundle's audit event.
pub const ACTIVATE: Action = Action::from_static("activate");
/// The resource kind of a refused bundle's audit event; the id is the bundle's name.
pub const POLICY_BUNDLE: ResourceKind = ResourceKind::from_static("policy_bundle");

/// The rule a bundle defines to mask decision log records, as OPA's `system.log.mask`.
pub const MASK_RULE: &str = "data.system.log.mask";

/// Records policy decisions in an audit sink, each event's fields laid out as OPA's
/// decision log records are: `decision_id`, `path` (`authz/allow`) or `query`, `input`,
/// `result` (absent when undefined), `error`, `bundles` (`{name: {revision}}`),
/// `timestamp` (RFC 3339), `labels`, `metrics`, `requested_by`, and `erased` / `masked`
/// (the JSON pointers of the values removed or replaced). The audit log's hash chain
/// covers every record, and [`log`](DecisionLog::log) returns only once the record is
/// durable: a caller answers only after that.
///
/// Values are masked in two ways, static paths first:
///
/// - [`mask`](DecisionLog::mask): paths erased from every record;
/// - [`mask_policy`](DecisionLog::mask_policy): OPA's mask policy. When the policy set
///   defines `data.system.log.mask`, it is evaluated with the record as `input` (so
///   `input.input`, `input.result`, `input.path`…), and each member of the result is a
///   JSON pointer string to erase (`"/input/password"`) or an object
///   `{"op": "upsert", "path": "/input/ssn", "value": "***"}` (or `"op": "remove"`).
///   Pointers start with `/input` or `/result`. A mask policy that fails, or answers
///   anything else, leaves the whole input out of the record (`erased` holds `/input`,
///   `mask_error` says why): a broken mask must not leak what it was meant to hide.
///
/// An event's `decision` summarises the result: `true` (or `{"allow": true}`) is an allow,
/// an error a deny, anything else not applicable. Sensitive values that must stay
/// searchable belong in the audit log's own HMAC redaction (paths under `fields.input`).
pub struct DecisionLog {
    sink: Arc<dyn AuditSink>,
    actor: Principal,
    masks: Vec<Pointer>,
    labels: BTreeMap<String, String>,
    mask_policy: Option<Arc<dyn PolicyEngine>>,
}

impl fmt::Debug for DecisionLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let masks: Vec<String> = self.masks.iter().map(Pointer::to_string).collect();
        f.debug_struct("DecisionLog")
            .field("sink", &self.sink.name())
            .field("actor", &self.actor.subject())
            .field("masks", &masks)
            .field("labels", &self.labels)
            .field("mask_policy", &self.mask_policy.is_some())
            .finish()
    }
}

/// One decision to record: what was asked, with what input, and the outcome.
///
/// ```
/// # use portcullis_policy::{DecisionEntry, Evaluation};
/// # use std::sync::Arc;
/// let outcome = Ok(Evaluation { result: Some(true.into()), revisions: Arc::default() });
/// let entry = DecisionEntry::new("authz/allow", None, &outcome)
///     .decision_id("4ca636c1-55e4-417a-b1d8-4aceb67960d1")
///     .metric("timer_rego_query_eval_ns", 41_000);
/// # let _ = entry;
/// ```
#[derive(Debug, Clone)]
pub struct DecisionEntry<'a> {
    path: &'a str,
    query: Option<&'a str>,
    input: Option<&'a Value>,
    outcome: &'a Result<Evaluation, PolicyError>,
    decision_id: Option<&'a str>,
    requested_by: Option<&'a str>,
    metrics: BTreeMap<String, u64>,
}

impl<'a> DecisionEntry<'a> {
    /// A decision on the rule or document at `path` (`authz/allow` or `data.authz.allow`)
    /// with `input` (`None`: made without one; the record then has no `input`).
    pub fn new(
        path: &'a str,
        input: Option<&'a Value>,
        outcome: &'a Result<Evaluation, PolicyError>,
    ) -> Self {
        DecisionEntry {
            path,
            query: None,
            input,
            outcome,
            decision_id: None,
            requested_by: None,
            metrics: BTreeMap::new(),
        }
    }

    /// An ad-hoc query (OPA's `POST /v1/query`): the record has `query` instead of `path`.
    pub fn query(
        query: &'a str,
        input: Option<&'a Value>,
        outcome: &'a Result<Evaluation, PolicyError>,
    ) -> Self {
        DecisionEntry {
            query: Some(query),
            ..DecisionEntry::new("", input, outcome)
        }
    }

    /// The id the caller was given (also the event's correlation id).
    #[must_use]
    pub fn decision_id(mut self, id: &'a str) -> Self {
        self.decision_id = Some(id);
        self
    }

    /// Who asked: the client's address, as OPA's `requested_by`.
    #[must_use]
    pub fn requested_by(mut self, who: &'a str) -> Self {
        self.requested_by = Some(who);
        self
    }

    /// Adds a metric (OPA's names: `timer_rego_query_eval_ns`, `timer_server_handler_ns`…).
    #[must_use]
    pub fn metric(mut self, name: impl Into<String>, value: u64) -> Self {
        self.metrics.insert(name.into(), value);
        self
    }
}

/// A JSON pointer into a record, below `/input` or `/result`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Pointer(Vec<String>);

impl Pointer {
    /// Parses `/input/a/b` (RFC 6901, `~0` and `~1` unescaped); the first segment must be
    /// `input` or `result`.
    fn parse(text: &str) -> Result<Pointer, String> {
        let rest = text
            .strip_prefix('/')
            .ok_or_else(|| format!("{:?} is not a JSON pointer", short(text)))?;
        let segments: Vec<String> = rest
            .split('/')
            .map(|s| s.replace("~1", "/").replace("~0", "~"))
            .collect();
        match segments.first().map(String::as_str) {
            Some("input" | "result") => Ok(Pointer(segments)),
            _ => Err(format!(
                "{:?}: only values under /input and /result can be masked",
                short(text)
            )),
        }
    }

    /// A static mask path: a JSON pointer, or dot-separated keys under the input
    /// (`user.password`, `input.user.password`).
    fn from_config(text: &str) -> Result<Pointer, PolicyError> {
        let invalid = |reason| PolicyError::InvalidPath {
            path: short(text),
            reason,
        };
        if text.starts_with('/') {
            return Pointer::parse(text)
                .map_err(|_| invalid("a mask pointer starts with /input/ or /result/"));
        }
        let mut segments: Vec<String> = text.split('.').map(str::to_owned).collect();
        if segments.iter().any(String::is_empty) {
            return Err(invalid("a mask path is dot-separated non-empty keys"));
        }
        if segments.first().map(String::as_str) != Some("input") {
            segments.insert(0, "input".to_owned());
        }
        Ok(Pointer(segments))
    }
}

impl fmt::Display for Pointer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for segment in &self.0 {
            write!(f, "/{}", segment.replace('~', "~0").replace('/', "~1"))?;
        }
        Ok(())
    }
}

fn short(text: &str) -> String {
    text.chars().take(64).collect()
}

/// What the mask policy asks for.
enum MaskOp {
    Remove(Pointer),
    Upsert(Pointer, Value),
}

impl DecisionLog {
    /// Records into `sink` as `actor` (usually the service account of the evaluating
    /// service).
    pub fn new(sink: Arc<dyn AuditSink>, actor: Principal) -> Self {
        DecisionLog {
            sink,
            actor,
            masks: Vec::new(),
            labels: BTreeMap::new(),
            mask_policy: None,
        }
    }

    /// Leaves the values at `paths` out of every record: JSON pointers (`/input/password`,
    /// `/result/token`), or dot-separated keys under the input (`user.password`, also
    /// written `input.user.password`).
    ///
    /// # Errors
    ///
    /// [`PolicyError::InvalidPath`] for an empty path or segment, or a pointer outside
    /// `/input` and `/result`.
    pub fn mask<I, S>(mut self, paths: I) -> Result<Self, PolicyError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        for path in paths {
            self.masks.push(Pointer::from_config(path.as_ref())?);
        }
        Ok(self)
    }

    /// Masks each record by the policy at [`MASK_RULE`] in `engine` (usually the store
    /// that makes the decisions), as OPA does; see [`DecisionLog`].
    #[must_use]
    pub fn mask_policy(mut self, engine: Arc<dyn PolicyEngine>) -> Self {
        self.mask_policy = Some(engine);
        self
    }

    /// Labels every record carries (OPA's `labels`: `id`, `version`, `app`…).
    #[must_use]
    pub fn labels<I, K, V>(mut self, labels: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        self.labels
            .extend(labels.into_iter().map(|(k, v)| (k.into(), v.into())));
        self
    }

    /// `input` without the statically masked paths, and the pointers that were present.
    #[must_use]
    pub fn masked(&self, input: &Value) -> (Value, Vec<String>) {
        let mut record = Map::new();
        record.insert("input".into(), input.clone());
        let mut erased = Vec::new();
        for pointer in &self.masks {
            if remove(&mut record, pointer) {
                erased.push(pointer.to_string());
            }
        }
        (record.remove("input").unwrap_or(Value::Null), erased)
    }

    /// Records one decision and returns once it is durable. `input` is `None` for a
    /// decision made without one (the record then has no `input` field, as OPA's decision
    /// logs have none). `query` is the rule path (`data.authz.allow` or `authz/allow`).
    ///
    /// # Errors
    ///
    /// As [`log`](DecisionLog::log).
    pub async fn record(
        &self,
        query: &str,
        input: Option<&Value>,
        outcome: &Result<Evaluation, PolicyError>,
        decision_id: Option<&str>,
    ) -> Result<Receipt, PolicyError> {
        let mut entry = DecisionEntry::new(query, input, outcome);
        entry.decision_id = decision_id;
        self.log(&entry).await
    }

    /// Records one decision, masked, and returns once it is durable.
    ///
    /// # Errors
    ///
    /// [`PolicyError::Input`] if the record is larger than the sink accepts
    /// ([`AuditError::TooLarge`]: an oversized input or result, refused every time);
    /// [`PolicyError::DecisionLog`] if the event cannot be built otherwise or the sink does
    /// not acknowledge it. Either way the caller should not act on a decision it could not
    /// record.
    pub async fn log(&self, entry: &DecisionEntry<'_>) -> Result<Receipt, PolicyError> {
        let failed = PolicyError::DecisionLog;
        let (path, rule) = match entry.query {
            Some(_) => (None, None),
            None => {
                let rule = crate::rule_path(entry.path).ok();
                (Some(opa_path(entry.path)), rule)
            }
        };
        // Any rule path is a resource id; an arbitrary key or a query falls back to `data`.
        let resource = rule
            .as_deref()
            .and_then(|id| Resource::new(POLICY_RULE, id).ok())
            .map_or_else(|| Resource::new(POLICY_RULE, "data"), Ok)
            .map_err(|e| failed(e.to_string()))?;
        let mut record = Map::new();
        if let Some(id) = entry.decision_id {
            record.insert("decision_id".into(), json!(id));
        }
        if let Some(path) = &path {
            record.insert("path".into(), json!(path));
        }
        if let Some(query) = entry.query {
            record.insert("query".into(), json!(query));
        }
        if let Some(input) = entry.input {
            record.insert("input".into(), input.clone());
        }
        let described = path.as_deref().map_or("the query", |p| p);
        let decision = match entry.outcome {
            Ok(evaluation) => {
                record.insert("bundles".into(), bundles(evaluation));
                if let Some(result) = &evaluation.result {
                    record.insert("result".into(), result.clone());
                }
                let allowed = match &evaluation.result {
                    Some(Value::Bool(b)) => *b,
                    Some(Value::Object(o)) => o.get("allow") == Some(&Value::Bool(true)),
                    _ => false,
                };
                if allowed {
                    Decision::allow(format!("{described} allowed"))
                } else {
                    Decision::not_applicable(format!("{described} did not allow"))
                }
            }
            Err(err) => {
                record.insert(
                    "error".into(),
                    json!({"code": error_code(err), "message": err.to_string()}),
                );
                Decision::deny(format!("{described} failed to evaluate"))
            }
        };
        if !self.labels.is_empty() {
            record.insert("labels".into(), json!(self.labels));
        }
        if let Some(who) = entry.requested_by {
            record.insert("requested_by".into(), json!(who));
        }
        record.insert(
            "timestamp".into(),
            json!(Utc::now().to_rfc3339_opts(SecondsFormat::Nanos, true)),
        );
        if !entry.metrics.is_empty() {
            record.insert("metrics".into(), json!(entry.metrics));
        }
        self.apply_masks(&mut record);
        let mut event = AuditEvent::new(EventKind::Decision, &self.actor, EVALUATE, resource)
            .map_err(|e| failed(e.to_string()))?
            .with_decision(decision);
        if let Some(id) = entry.decision_id {
            event = event.with_correlation_id(id);
        }
        for (name, mut value) in record {
            escape_controls(&mut value);
            event = event.with_field(name, value);
        }
        self.sink.record(event).await.map_err(|e| match e {
            // The record itself is too large: no retry can help, the request must shrink.
            AuditError::TooLarge { .. } => PolicyError::Input(format!(
                "the decision's log record is too large for the decision log: {e}"
            )),
            e => failed(format!("not recorded: {e}")),
        })
    }

    /// Applies the static masks, then the mask policy, listing what was touched.
    fn apply_masks(&self, record: &mut Map<String, Value>) {
        let mut erased = Vec::new();
        let mut masked = Vec::new();
        for pointer in &self.masks {
            if remove(record, pointer) {
                erased.push(pointer.to_string());
            }
        }
        match self.policy_masks(record) {
            Ok(ops) => {
                for op in ops {
                    match op {
                        MaskOp::Remove(pointer) => {
                            if remove(record, &pointer) {
                                erased.push(pointer.to_string());
                            }
                        }
                        MaskOp::Upsert(pointer, value) => {
                            if upsert(record, &pointer, value) {
                                masked.push(pointer.to_string());
                            }
                        }
                    }
                }
            }
            Err(message) => {
                // Fail closed: nothing of the input may leak past a broken mask.
                if record.remove("input").is_some() {
                    erased.push("/input".to_owned());
                }
                record.insert("mask_error".into(), json!(message));
            }
        }
        erased.dedup();
        if !erased.is_empty() {
            record.insert("erased".into(), json!(erased));
        }
        if !masked.is_empty() {
            record.insert("masked".into(), json!(masked));
        }
    }

    /// What the mask policy asks for this record; `Err` when it fails or answers
    /// something that is not a mask.
    fn policy_masks(&self, record: &Map<String, Value>) -> Result<Vec<MaskOp>, String> {
        let Some(engine) = &self.mask_policy else {
            return Ok(Vec::new());
        };
        let input = Value::Object(record.clone());
        let answer = match engine.evaluate(MASK_RULE, &input) {
            Ok(evaluation) => evaluation.result,
            // No policy at all: there is no mask policy either.
            Err(PolicyError::NoPolicy) => None,
            Err(err) => return Err(format!("the mask policy failed: {err}")),
        };
        let items = match answer {
            None => return Ok(Vec::new()),
            Some(Value::Array(items)) => items,
            Some(other) => {
                return Err(format!(
                    "the mask policy answered {}, not a set of JSON pointers",
                    kind(&other)
                ));
            }
        };
        items.into_iter().map(mask_op).collect()
    }
}

/// One member of the mask policy's answer.
fn mask_op(item: Value) -> Result<MaskOp, String> {
    let invalid = |what: &str| format!("the mask policy answered {what}");
    match item {
        Value::String(pointer) => Pointer::parse(&pointer).map(MaskOp::Remove),
        Value::Object(mut op) => {
            let pointer = match op.get("path") {
                Some(Value::String(p)) => Pointer::parse(p)?,
                _ => return Err(invalid("an object without a string \"path\"")),
            };
            match op.get("op").and_then(Value::as_str) {
                Some("remove") | None => Ok(MaskOp::Remove(pointer)),
                Some("upsert") => {
                    let value = op
                        .remove("value")
                        .ok_or_else(|| invalid("an upsert without a \"value\""))?;
                    Ok(MaskOp::Upsert(pointer, value))
                }
                Some(other) => Err(format!(
                    "the mask policy answered op {:?}: use \"remove\" or \"upsert\"",
                    short(other)
                )),
            }
        }
        other => Err(invalid(&format!("{} as a mask", kind(&other)))),
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// `data.a.b`, `/a/b` → `a/b`, as OPA's decision logs spell paths.
fn opa_path(path: &str) -> String {
    if path == "data" {
        String::new()
    } else if let Some(rest) = path.strip_prefix("data.") {
        rest.replace('.', "/")
    } else {
        path.trim_matches('/').to_owned()
    }
}

/// `{name: {"revision": …}}`, as OPA's `bundles`.
fn bundles(evaluation: &Evaluation) -> Value {
    Value::Object(
        evaluation
            .revisions
            .iter()
            .map(|(name, revision)| (name.clone(), json!({ "revision": revision })))
            .collect(),
    )
}

/// The OPA-style code of an evaluation error.
fn error_code(err: &PolicyError) -> &'static str {
    match err {
        PolicyError::InvalidPath { .. } | PolicyError::Input(_) => "invalid_parameter",
        PolicyError::NoPolicy => "unavailable",
        _ => "internal_error",
    }
}

/// Removes the value at `pointer`; whether there was one.
fn remove(record: &mut Map<String, Value>, pointer: &Pointer) -> bool {
    let Some((first, rest)) = pointer.0.split_first() else {
        return false;
    };
    let Some((last, middle)) = rest.split_last() else {
        return record.remove(first).is_some();
    };
    let mut value = match record.get_mut(first) {
        Some(value) => value,
        None => return false,
    };
    for segment in middle {
        value = match child(value, segment) {
            Some(inner) => inner,
            None => return false,
        };
    }
    match value {
        Value::Object(map) => map.remove(last).is_some(),
        Value::Array(items) => match last.parse::<usize>() {
            Ok(i) if i < items.len() => {
                items.remove(i);
                true
            }
            _ => false,
        },
        _ => false,
    }
}

/// Sets the value at `pointer`, creating missing objects on the way (under an `input`
/// or `result` the record has); whether it was set.
fn upsert(record: &mut Map<String, Value>, pointer: &Pointer, new: Value) -> bool {
    let Some((first, rest)) = pointer.0.split_first() else {
        return false;
    };
    let Some(mut value) = record.get_mut(first) else {
        return false;
    };
    let Some((last, middle)) = rest.split_last() else {
        *value = new;
        return true;
    };
    for segment in middle {
        if let Value::Object(map) = value {
            value = map
                .entry(segment.clone())
                .or_insert_with(|| Value::Object(Map::new()));
        } else {
            match child(value, segment) {
                Some(inner) => value = inner,
                None => return false,
            }
        }
    }
    match value {
        Value::Object(map) => {
            map.insert(last.clone(), new);
            true
        }
        Value::Array(items) => match last.parse::<usize>() {
            Ok(i) if i < items.len() => {
                if let Some(slot) = items.get_mut(i) {
                    *slot = new;
                }
                true
            }
            _ => false,
        },
        _ => false,
    }
}

fn child<'v>(value: &'v mut Value, segment: &str) -> Option<&'v mut Value> {
    match value {
        Value::Object(map) => map.get_mut(segment),
        Value::Array(items) => segment.parse::<usize>().ok().and_then(|i| items.get_mut(i)),
        _ => None,
    }
}

/// `text` with each control character written as `\u{…}`.
fn escape_text(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_unicode().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// Audit records hold no control characters: write them as `\u{…}` text instead (an input
/// may hold any, in values and keys; a compiler message holds newlines).
fn escape_controls(value: &mut Value) {
    let has_control = |s: &str| s.chars().any(char::is_control);
    match value {
        Value::String(text) if has_control(text) => *text = escape_text(text),
        Value::Array(items) => items.iter_mut().for_each(escape_controls),
        Value::Object(map) => {
            let keys: Vec<String> = map.keys().filter(|k| has_control(k)).cloned().collect();
            for key in keys {
                if let Some(inner) = map.remove(&key) {
                    map.insert(escape_text(&key), inner);
                }
            }
            map.values_mut().for_each(escape_controls);
        }
        _ => {}
    }
}

impl DecisionLog {
    /// Records that bundle `name` (at `revision`, when known) was not activated, and why:
    /// a denied `activate` on `policy_bundle:<name>`.
    ///
    /// # Errors
    ///
    /// [`PolicyError::DecisionLog`] if the sink does not acknowledge it.
    pub async fn record_refused_bundle(
        &self,
        name: &str,
        revision: Option<&str>,
        error: &PolicyError,
    ) -> Result<Receipt, PolicyError> {
        let resource = Resource::new(POLICY_BUNDLE, name)
            .map_err(|e| PolicyError::DecisionLog(format!("bundle {name:?}: {e}")))?;
        let mut message = json!(error.to_string());
        escape_controls(&mut message);
        let event = AuditEvent::new(EventKind::Decision, &self.actor, ACTIVATE, resource)
            .map_err(|e| PolicyError::DecisionLog(e.to_string()))?
            .with_decision(Decision::deny(format!("bundle {name} refused")))
            .with_field("revision", json!(revision))
            .with_field("error", message);
        self.sink
            .record(event)
            .await
            .map_err(|e| PolicyError::DecisionLog(format!("not recorded: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pointer(text: &str) -> Pointer {
        Pointer::parse(text).unwrap_or_else(|e| unreachable!("{e}"))
    }

    #[test]
    fn pointers_parse_escape_and_stay_under_input_and_result() {
        assert_eq!(pointer("/input/a~1b/c~0d").0, ["input", "a/b", "c~d"]);
        assert_eq!(pointer("/input/a~1b/c~0d").to_string(), "/input/a~1b/c~0d");
        assert!(Pointer::parse("input/a").is_err());
        assert!(Pointer::parse("/labels/id").is_err());
        assert!(Pointer::parse("/").is_err());
        let from_dots = Pointer::from_config("user.password").ok();
        assert_eq!(from_dots, Some(pointer("/input/user/password")));
        let prefixed = Pointer::from_config("input.user.password").ok();
        assert_eq!(prefixed, Some(pointer("/input/user/password")));
        assert!(Pointer::from_config("a..b").is_err());
        assert!(Pointer::from_config("/decision_id").is_err());
    }

    #[test]
    fn remove_and_upsert_walk_objects_and_arrays() {
        let mut record = Map::new();
        record.insert("input".into(), json!({"a": [{"b": 1}, {"b": 2}], "c": 3}));
        assert!(remove(&mut record, &pointer("/input/a/1/b")));
        assert!(!remove(&mut record, &pointer("/input/a/7/b")));
        assert!(!remove(&mut record, &pointer("/result/x")));
        assert!(upsert(&mut record, &pointer("/input/x/y"), json!("***")));
        assert!(upsert(&mut record, &pointer("/input/a/0"), json!(0)));
        assert!(!upsert(&mut record, &pointer("/input/a/9"), json!(0)));
        assert!(!upsert(&mut record, &pointer("/result/x"), json!(0)));
        assert!(!upsert(&mut record, &pointer("/input/c/d"), json!(0)));
        assert_eq!(
            record["input"],
            json!({"a": [0, {}], "c": 3, "x": {"y": "***"}})
        );
        assert!(remove(&mut record, &pointer("/input")));
        assert!(record.is_empty());
    }

    #[test]
    fn paths_are_written_as_opa_writes_them() {
        assert_eq!(opa_path("data.authz.allow"), "authz/allow");
        assert_eq!(opa_path("/authz/allow"), "authz/allow");
        assert_eq!(opa_path("servers/0"), "servers/0");
        assert_eq!(opa_path("data"), "");
    }
}
