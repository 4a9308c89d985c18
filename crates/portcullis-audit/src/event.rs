//! [`AuditEvent`]: what is recorded, in a stable, versioned JSON form.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use portcullis_core::{Action, AuthMethod, Decision, Principal, PrincipalKind, Resource};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::AuditError;

/// What an event records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum EventKind {
    /// A decision to act, recorded before the action (write-ahead).
    Intent,
    /// The result of an action, linked to its intent by `outcome_of`.
    Outcome,
    /// A decision that leads to no action (typically a refusal).
    Decision,
}

impl EventKind {
    /// `intent`, `outcome` or `decision`, as in the JSON form.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Intent => "intent",
            EventKind::Outcome => "outcome",
            EventKind::Decision => "decision",
        }
    }
}

/// Who acted: a summary of the [`Principal`], without claims.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Actor {
    /// The subject id.
    pub subject: String,
    /// User, service or script token.
    pub kind: PrincipalKind,
    /// How it authenticated.
    pub auth_method: AuthMethod,
}

impl From<&Principal> for Actor {
    fn from(principal: &Principal) -> Self {
        Actor {
            subject: principal.subject().to_owned(),
            kind: principal.kind(),
            auth_method: principal.auth_method().clone(),
        }
    }
}

/// What was asked: an HTTP-ish summary of the request.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestSummary {
    /// The method or verb (`POST`).
    pub method: String,
    /// The target (`/v1/envs/checkout/prod/deploys`).
    pub target: String,
    /// Parameters (query, body fields). Configure sensitive ones to be HMACed.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub parameters: BTreeMap<String, Value>,
}

/// How an action ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum OutcomeStatus {
    /// It did what was asked.
    Succeeded,
    /// It ran and failed.
    Failed,
}

/// The outcome of an action, recorded after it, linked to the intent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Outcome {
    /// Succeeded or failed.
    pub status: OutcomeStatus,
    /// A short description (an error message, a result id).
    pub detail: String,
}

impl Outcome {
    /// Success, with a detail.
    #[must_use]
    pub fn succeeded(detail: impl Into<String>) -> Self {
        Outcome {
            status: OutcomeStatus::Succeeded,
            detail: detail.into(),
        }
    }

    /// Failure, with a detail.
    #[must_use]
    pub fn failed(detail: impl Into<String>) -> Self {
        Outcome {
            status: OutcomeStatus::Failed,
            detail: detail.into(),
        }
    }
}

/// One audit event.
///
/// Its JSON form is stable and versioned (records carry `"v": 1`); fields:
///
/// | field | meaning |
/// |---|---|
/// | `id` | UUID of the event (version 7: time-ordered, then random) |
/// | `time_ms` | milliseconds since the Unix epoch |
/// | `kind` | `intent`, `outcome` or `decision` |
/// | `actor` | `{subject, kind, auth_method}` |
/// | `action`, `resource` | what, on what (`{kind, id}`) |
/// | `decision` | `{effect, reason}` (absent on outcomes) |
/// | `request` | `{method, target, parameters}`, optional |
/// | `correlation_id` | ties the events of one request together, optional |
/// | `outcome`, `outcome_of` | on outcome events: `{status, detail}` and the intent's `id` |
/// | `fields` | free-form JSON |
///
/// No string anywhere in an event may hold a control character.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditEvent {
    /// The event's id (a UUID).
    pub id: String,
    /// When, in milliseconds since the Unix epoch.
    pub time_ms: u64,
    /// What the event records.
    pub kind: EventKind,
    /// Who.
    pub actor: Actor,
    /// What.
    pub action: Action,
    /// On what.
    pub resource: Resource,
    /// The authorization decision, with its reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision: Option<Decision>,
    /// The request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<RequestSummary>,
    /// Ties the events of one request together.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
    /// How the action ended (outcome events).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<Outcome>,
    /// The intent this outcome belongs to (outcome events).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome_of: Option<String>,
    /// Anything else.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub fields: BTreeMap<String, Value>,
}

/// A fresh time-ordered UUID (v7): the millisecond `time_ms` followed by 74 random bits
/// from [`portcullis_core::unique_bytes`] (an id must be unique, not secret). Ids of events
/// recorded one after another sort together, so a database index on the id grows at its end
/// instead of touching a random page per event.
pub(crate) fn new_id(time_ms: u64) -> Result<String, AuditError> {
    let mut bytes: [u8; 16] =
        portcullis_core::unique_bytes().map_err(|e| AuditError::Crypto(e.to_string()))?;
    // RFC 9562 layout: 48-bit big-endian milliseconds, then version, random, variant.
    let (time, _) = bytes.split_at_mut(6);
    time.copy_from_slice(time_ms.to_be_bytes().get(2..).unwrap_or_default());
    Ok(uuid::Builder::from_bytes(bytes)
        .with_version(uuid::Version::SortRand)
        .with_variant(uuid::Variant::RFC4122)
        .into_uuid()
        .to_string())
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl AuditEvent {
    /// An event of `kind` by `principal`, stamped now with a new id.
    ///
    /// # Errors
    ///
    /// [`AuditError::Crypto`] if the system random source fails.
    pub fn new(
        kind: EventKind,
        principal: &Principal,
        action: Action,
        resource: Resource,
    ) -> Result<Self, AuditError> {
        let time_ms = now_ms();
        Ok(AuditEvent {
            id: new_id(time_ms)?,
            time_ms,
            kind,
            actor: principal.into(),
            action,
            resource,
            decision: None,
            request: None,
            correlation_id: None,
            outcome: None,
            outcome_of: None,
            fields: BTreeMap::new(),
        })
    }

    /// An intent: `principal` was allowed by `decision` and is about to act.
    ///
    /// # Errors
    ///
    /// As [`AuditEvent::new`].
    pub fn intent(
        principal: &Principal,
        action: Action,
        resource: Resource,
        decision: Decision,
    ) -> Result<Self, AuditError> {
        Ok(
            AuditEvent::new(EventKind::Intent, principal, action, resource)?
                .with_decision(decision),
        )
    }

    /// A decision that leads to no action (a refusal, usually).
    ///
    /// # Errors
    ///
    /// As [`AuditEvent::new`].
    pub fn decision(
        principal: &Principal,
        action: Action,
        resource: Resource,
        decision: Decision,
    ) -> Result<Self, AuditError> {
        Ok(
            AuditEvent::new(EventKind::Decision, principal, action, resource)?
                .with_decision(decision),
        )
    }

    /// The outcome of `intent`: same actor, action, resource and correlation id.
    ///
    /// # Errors
    ///
    /// As [`AuditEvent::new`].
    pub fn outcome_of(intent: &AuditEvent, outcome: Outcome) -> Result<Self, AuditError> {
        let time_ms = now_ms();
        Ok(AuditEvent {
            id: new_id(time_ms)?,
            time_ms,
            kind: EventKind::Outcome,
            actor: intent.actor.clone(),
            action: intent.action.clone(),
            resource: intent.resource.clone(),
            decision: None,
            request: None,
            correlation_id: intent.correlation_id.clone(),
            outcome: Some(outcome),
            outcome_of: Some(intent.id.clone()),
            fields: BTreeMap::new(),
        })
    }

    /// Sets the decision.
    #[must_use]
    pub fn with_decision(mut self, decision: Decision) -> Self {
        self.decision = Some(decision);
        self
    }

    /// Sets the request summary.
    #[must_use]
    pub fn with_request(mut self, request: RequestSummary) -> Self {
        self.request = Some(request);
        self
    }

    /// Sets the correlation id.
    #[must_use]
    pub fn with_correlation_id(mut self, id: impl Into<String>) -> Self {
        self.correlation_id = Some(id.into());
        self
    }

    /// Adds a free-form field.
    #[must_use]
    pub fn with_field(mut self, name: impl Into<String>, value: Value) -> Self {
        self.fields.insert(name.into(), value);
        self
    }
}

/// Rejects control characters in every string and key of `value`, naming the field.
pub(crate) fn check_strings(value: &Value, path: &mut String) -> Result<(), AuditError> {
    let bad = |s: &str| s.chars().find(|c| c.is_control());
    match value {
        Value::String(s) => match bad(s) {
            Some(ch) => Err(AuditError::ControlCharacter {
                field: path.clone(),
                ch,
            }),
            None => Ok(()),
        },
        Value::Array(items) => items.iter().try_for_each(|item| check_strings(item, path)),
        Value::Object(map) => {
            for (key, item) in map {
                let len = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(key);
                if let Some(ch) = bad(key) {
                    return Err(AuditError::ControlCharacter {
                        field: path.clone(),
                        ch,
                    });
                }
                check_strings(item, path)?;
                path.truncate(len);
            }
            Ok(())
        }
        Value::Null | Value::Bool(_) | Value::Number(_) => Ok(()),
    }
}

/// The canonical JSON of `event`: compact, keys sorted at every level. Byte for byte what
/// `serde_json` writes for the event's `Value` (the form [`crate::chain`] seals), written
/// straight from the struct, without building and dropping that value first.
pub(crate) fn canonical_json(event: &AuditEvent) -> Result<String, AuditError> {
    // Destructured whole: a new field does not compile until it is written here too.
    let AuditEvent {
        id,
        time_ms,
        kind,
        actor,
        action,
        resource,
        decision,
        request,
        correlation_id,
        outcome,
        outcome_of,
        fields,
    } = event;
    let mut out = Canonical(Vec::with_capacity(512));
    // Keys in sorted order.
    out.key('{', "action")?.string(action.as_str())?;
    let Actor {
        subject,
        kind: actor_kind,
        auth_method,
    } = actor;
    out.key(',', "actor")?;
    out.key('{', "auth_method")?.string(auth_method.as_str())?;
    out.key(',', "kind")?.string(actor_kind.as_str())?;
    out.key(',', "subject")?.string(subject)?;
    out.close();
    if let Some(correlation_id) = correlation_id {
        out.key(',', "correlation_id")?.string(correlation_id)?;
    }
    if let Some(decision) = decision {
        out.key(',', "decision")?;
        out.key('{', "effect")?.value(&decision.effect())?;
        out.key(',', "reason")?.string(decision.reason())?;
        out.close();
    }
    if !fields.is_empty() {
        out.key(',', "fields")?.value(fields)?;
    }
    out.key(',', "id")?.string(id)?;
    out.key(',', "kind")?.string(kind.as_str())?;
    if let Some(Outcome { status, detail }) = outcome {
        out.key(',', "outcome")?;
        out.key('{', "detail")?.string(detail)?;
        out.key(',', "status")?.value(status)?;
        out.close();
    }
    if let Some(outcome_of) = outcome_of {
        out.key(',', "outcome_of")?.string(outcome_of)?;
    }
    if let Some(RequestSummary {
        method,
        target,
        parameters,
    }) = request
    {
        out.key(',', "request")?;
        out.key('{', "method")?.string(method)?;
        if !parameters.is_empty() {
            out.key(',', "parameters")?.value(parameters)?;
        }
        out.key(',', "target")?.string(target)?;
        out.close();
    }
    out.key(',', "resource")?;
    out.key('{', "id")?.string(resource.id())?;
    out.key(',', "kind")?.string(resource.kind().as_str())?;
    out.close();
    out.key(',', "time_ms")?.value(time_ms)?;
    out.close();
    String::from_utf8(out.0).map_err(|e| AuditError::Malformed(e.to_string()))
}

/// A JSON writer for [`canonical_json`]; strings and values are escaped by `serde_json`.
struct Canonical(Vec<u8>);

impl Canonical {
    /// Writes `open` (`{` or `,`), then `"name":`.
    fn key(&mut self, open: char, name: &str) -> Result<&mut Self, AuditError> {
        self.0.push(open as u8);
        self.string(name)?;
        self.0.push(b':');
        Ok(self)
    }

    fn string(&mut self, text: &str) -> Result<&mut Self, AuditError> {
        self.value(text)
    }

    fn value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<&mut Self, AuditError> {
        serde_json::to_writer(&mut self.0, value)
            .map_err(|e| AuditError::Malformed(e.to_string()))?;
        Ok(self)
    }

    fn close(&mut self) {
        self.0.push(b'}');
    }
}

/// [`check_strings`] on the event's JSON form, read from the struct: the same fields, in the
/// same (sorted) order, so the same first error.
pub(crate) fn check_event_strings(event: &AuditEvent) -> Result<(), AuditError> {
    fn text(path: &str, value: &str) -> Result<(), AuditError> {
        match value.chars().find(|c| c.is_control()) {
            Some(ch) => Err(AuditError::ControlCharacter {
                field: path.to_owned(),
                ch,
            }),
            None => Ok(()),
        }
    }
    fn map(path: &str, entries: &BTreeMap<String, Value>) -> Result<(), AuditError> {
        let mut path = path.to_owned();
        for (key, item) in entries {
            let len = path.len();
            path.push('.');
            path.push_str(key);
            text(&path, key)?;
            check_strings(item, &mut path)?;
            path.truncate(len);
        }
        Ok(())
    }
    text("action", event.action.as_str())?;
    text("actor.auth_method", event.actor.auth_method.as_str())?;
    text("actor.subject", &event.actor.subject)?;
    if let Some(correlation_id) = &event.correlation_id {
        text("correlation_id", correlation_id)?;
    }
    if let Some(decision) = &event.decision {
        text("decision.reason", decision.reason())?;
    }
    map("fields", &event.fields)?;
    text("id", &event.id)?;
    if let Some(outcome) = &event.outcome {
        text("outcome.detail", &outcome.detail)?;
    }
    if let Some(outcome_of) = &event.outcome_of {
        text("outcome_of", outcome_of)?;
    }
    if let Some(request) = &event.request {
        text("request.method", &request.method)?;
        map("request.parameters", &request.parameters)?;
        text("request.target", &request.target)?;
    }
    text("resource.id", event.resource.id())?;
    text("resource.kind", event.resource.kind().as_str())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn alice() -> Principal {
        Principal::builder(PrincipalKind::User, "alice", AuthMethod::OIDC)
            .build()
            .unwrap()
    }

    #[test]
    fn ids_are_version_7_and_sort_by_time() {
        let early = new_id(1_700_000_000_000).unwrap();
        let late = new_id(1_700_000_000_001).unwrap();
        let parsed = uuid::Uuid::parse_str(&early).unwrap();
        assert_eq!(parsed.get_version(), Some(uuid::Version::SortRand));
        assert_eq!(parsed.get_variant(), uuid::Variant::RFC4122);
        assert_eq!(
            parsed.get_timestamp().map(|t| t.to_unix()),
            Some((1_700_000_000, 0))
        );
        assert!(early < late, "{early} should sort before {late}");
        assert_ne!(new_id(5).unwrap(), new_id(5).unwrap(), "random bits differ");
    }

    #[test]
    fn json_form_is_stable() {
        let mut e = AuditEvent::intent(
            &alice(),
            Action::DEPLOY,
            "env:checkout".parse().unwrap(),
            Decision::allow("ok"),
        )
        .unwrap()
        .with_correlation_id("req-1");
        e.id = "00000000-0000-4000-8000-000000000000".into();
        e.time_ms = 1;
        assert_eq!(
            serde_json::to_value(&e).unwrap(),
            json!({"id":"00000000-0000-4000-8000-000000000000","time_ms":1,"kind":"intent",
                   "actor":{"subject":"alice","kind":"user","auth_method":"oidc"},
                   "action":"deploy","resource":{"kind":"env","id":"checkout"},
                   "decision":{"effect":"allow","reason":"ok"},"correlation_id":"req-1"})
        );
        let o = AuditEvent::outcome_of(&e, Outcome::succeeded("deploy 7")).unwrap();
        assert_eq!(o.outcome_of.as_deref(), Some(e.id.as_str()));
        assert_eq!(o.correlation_id.as_deref(), Some("req-1"));
        assert_ne!(o.id, e.id);
    }

    /// Strings that need escaping, controls, quotes, backslashes and non-ASCII included.
    fn text() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-z0-9 ._/-]{0,12}",
            any::<String>(),
            "[\\\"\u{0}-\u{1f}\u{7f}-\u{a0}\u{2028}é😀a]{0,8}",
        ]
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            text().prop_map(Value::from),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
                prop::collection::btree_map(text(), inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    fn map() -> impl Strategy<Value = BTreeMap<String, Value>> {
        prop::collection::btree_map(text(), json_value(), 0..3)
    }

    fn event() -> impl Strategy<Value = AuditEvent> {
        let resource = ("[a-z][a-z0-9_]{0,8}", "[a-zA-Z0-9/._-]{1,16}")
            .prop_filter_map("a valid resource", |(kind, id)| {
                Resource::new(kind.parse().ok()?, id).ok()
            });
        let decision = prop::option::of((any::<bool>(), text()).prop_map(|(allow, why)| {
            if allow {
                Decision::allow(why)
            } else {
                Decision::deny(why)
            }
        }));
        let request = prop::option::of((text(), text(), map()).prop_map(
            |(method, target, parameters)| RequestSummary {
                method,
                target,
                parameters,
            },
        ));
        let outcome = prop::option::of((any::<bool>(), text()).prop_map(|(ok, detail)| {
            if ok {
                Outcome::succeeded(detail)
            } else {
                Outcome::failed(detail)
            }
        }));
        (
            (text(), any::<u64>(), 0..3u8, text(), resource),
            (decision, request, prop::option::of(text()), outcome),
            (prop::option::of(text()), map()),
        )
            .prop_map(
                |(
                    (id, time_ms, kind, subject, resource),
                    (decision, request, correlation_id, outcome),
                    (outcome_of, fields),
                )| AuditEvent {
                    id,
                    time_ms,
                    kind: [EventKind::Intent, EventKind::Outcome, EventKind::Decision]
                        [usize::from(kind)],
                    actor: Actor {
                        subject,
                        kind: PrincipalKind::ScriptToken,
                        auth_method: AuthMethod::OIDC,
                    },
                    action: Action::DEPLOY,
                    resource,
                    decision,
                    request,
                    correlation_id,
                    outcome,
                    outcome_of,
                    fields,
                },
            )
    }

    proptest! {
        /// The struct-based fast path writes, checks and indexes exactly what the path
        /// through `serde_json::Value` (used with a redactor) does.
        #[test]
        fn canonical_json_matches_the_value_path(event in event()) {
            let value = serde_json::to_value(&event).unwrap();
            prop_assert_eq!(canonical_json(&event).unwrap(), serde_json::to_string(&value).unwrap());
            prop_assert_eq!(
                check_event_strings(&event).map_err(|e| e.to_string()),
                check_strings(&value, &mut String::new()).map_err(|e| e.to_string())
            );
            prop_assert_eq!(
                crate::RecordIndex::of_event(&event),
                crate::RecordIndex::of_value(&value)
            );
        }
    }

    #[test]
    fn control_characters_are_found_with_their_path() {
        let v = json!({"request": {"parameters": {"note": "a\u{1b}[31m"}}});
        let err = check_strings(&v, &mut String::new()).unwrap_err();
        assert!(err.to_string().contains("request.parameters.note"), "{err}");
        assert!(check_strings(&json!({"ok": ["fine", 1, null]}), &mut String::new()).is_ok());
    }
}
