//! [`DecisionLog`] (feature `audit`): each policy decision recorded durably in a
//! portcullis-audit sink, with masked input paths left out.

use std::fmt;
use std::sync::Arc;

use portcullis_audit::{AuditEvent, AuditSink, EventKind, Receipt};
use portcullis_core::{Action, Decision, Principal, Resource, ResourceKind};
use serde_json::{Map, Value, json};

use crate::{Evaluation, PolicyError};

/// The action of decision-log events.
pub const EVALUATE: Action = Action::from_static("evaluate");
/// The resource kind of decision-log events; the id is the rule path.
pub const POLICY_RULE: ResourceKind = ResourceKind::from_static("policy_rule");
/// The action of a refused bundle's audit event.
pub const ACTIVATE: Action = Action::from_static("activate");
/// The resource kind of a refused bundle's audit event; the id is the bundle's name.
pub const POLICY_BUNDLE: ResourceKind = ResourceKind::from_static("policy_bundle");

/// Records policy decisions in an audit sink: who asked (the evaluating service), the
/// query, the input (masked paths removed and listed), the result or error, the bundle
/// revisions that answered, and an optional decision id.
///
/// An event's `decision` summarises the result: `true` (or `{"allow": true}`) is an allow,
/// an error a deny, anything else not applicable. Sensitive values that must stay
/// searchable belong in the audit log's own HMAC redaction (paths under `fields.input`).
pub struct DecisionLog {
    sink: Arc<dyn AuditSink>,
    actor: Principal,
    masks: Vec<Vec<String>>,
}

impl fmt::Debug for DecisionLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DecisionLog")
            .field("sink", &self.sink.name())
            .field("actor", &self.actor.subject())
            .field("masks", &self.masks)
            .finish()
    }
}

impl DecisionLog {
    /// Records into `sink` as `actor` (usually the service account of the evaluating
    /// service).
    pub fn new(sink: Arc<dyn AuditSink>, actor: Principal) -> Self {
        DecisionLog {
            sink,
            actor,
            masks: Vec::new(),
        }
    }

    /// Leaves the input values at `paths` (dot-separated, e.g. `user.password`) out of
    /// every record.
    ///
    /// # Errors
    ///
    /// [`PolicyError::InvalidPath`] for an empty path or segment.
    pub fn mask<I, S>(mut self, paths: I) -> Result<Self, PolicyError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        for path in paths {
            let path = path.as_ref();
            let segments: Vec<String> = path.split('.').map(str::to_owned).collect();
            if segments.iter().any(String::is_empty) {
                return Err(PolicyError::InvalidPath {
                    path: path.chars().take(64).collect(),
                    reason: "a mask path is dot-separated non-empty keys",
                });
            }
            self.masks.push(segments);
        }
        Ok(self)
    }

    /// `input` without the masked paths, and the paths that were present.
    #[must_use]
    pub fn masked(&self, input: &Value) -> (Value, Vec<String>) {
        let mut input = input.clone();
        let mut erased = Vec::new();
        for path in &self.masks {
            if remove_path(&mut input, path) {
                erased.push(path.join("."));
            }
        }
        (input, erased)
    }

    /// Records one decision and returns once it is durable. `input` is `None` for a
    /// decision made without one (the record then has no `input` field, as OPA's decision
    /// logs have none).
    ///
    /// # Errors
    ///
    /// [`PolicyError::DecisionLog`] if the event cannot be built (a query that is not a
    /// resource id, an oversized input) or the sink does not acknowledge it: the caller
    /// should not act on a decision it could not record.
    pub async fn record(
        &self,
        query: &str,
        input: Option<&Value>,
        outcome: &Result<Evaluation, PolicyError>,
        decision_id: Option<&str>,
    ) -> Result<Receipt, PolicyError> {
        let failed = PolicyError::DecisionLog;
        let resource = Resource::new(POLICY_RULE, query)
            .map_err(|e| failed(format!("query {query:?}: {e}")))?;
        let mut fields = Map::new();
        fields.insert("query".into(), json!(query));
        if let Some(input) = input {
            let (mut masked, erased) = self.masked(input);
            escape_controls(&mut masked);
            fields.insert("input".into(), masked);
            if !erased.is_empty() {
                fields.insert("erased".into(), json!(erased));
            }
        }
        if let Some(id) = decision_id {
            fields.insert("decision_id".into(), json!(id));
        }
        let decision = match outcome {
            Ok(evaluation) => {
                fields.insert("revisions".into(), json!(evaluation.revisions.as_ref()));
                let mut result = evaluation.result.clone().unwrap_or(Value::Null);
                escape_controls(&mut result);
                fields.insert("result".into(), result);
                fields.insert("defined".into(), json!(evaluation.result.is_some()));
                let allowed = match &evaluation.result {
                    Some(Value::Bool(b)) => *b,
                    Some(Value::Object(o)) => o.get("allow") == Some(&Value::Bool(true)),
                    _ => false,
                };
                if allowed {
                    Decision::allow(format!("{query} allowed"))
                } else {
                    Decision::not_applicable(format!("{query} did not allow"))
                }
            }
            Err(err) => {
                let mut error = json!(err.to_string());
                escape_controls(&mut error);
                fields.insert("error".into(), error);
                Decision::deny(format!("{query} failed to evaluate"))
            }
        };
        let mut event = AuditEvent::new(EventKind::Decision, &self.actor, EVALUATE, resource)
            .map_err(|e| failed(e.to_string()))?
            .with_decision(decision);
        if let Some(id) = decision_id {
            event = event.with_correlation_id(id);
        }
        for (name, value) in fields {
            event = event.with_field(name, value);
        }
        self.sink
            .record(event)
            .await
            .map_err(|e| failed(format!("not recorded: {e}")))
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

fn remove_path(value: &mut Value, path: &[String]) -> bool {
    match path.split_first() {
        None => false,
        Some((last, [])) => value
            .as_object_mut()
            .is_some_and(|o| o.remove(last).is_some()),
        Some((first, rest)) => value
            .get_mut(first.as_str())
            .is_some_and(|inner| remove_path(inner, rest)),
    }
}
