//! [`RegoAuthorizer`]: core's [`Authorizer`] answered by a Rego rule.

use std::sync::Arc;

use portcullis_core::{AccessRequest, Authorizer, Decision};
use serde_json::{Value, json};

use crate::{PolicyEngine, PolicyError, rule_path};

/// An [`Authorizer`] that asks one Rego rule.
///
/// The rule sees `input` as
/// `{"principal": {subject, kind, groups, auth_method, claims, …}, "action": "deploy",
/// "resource": {"kind": "env", "id": "checkout"}, "context": {…}}` and answers either a
/// boolean or an object `{"allow": bool, "deny": bool, "reason": string}`:
///
/// | result | decision |
/// |---|---|
/// | `true`, or `{"allow": true}` | allow |
/// | `{"deny": true}` (wins over `allow`) | deny |
/// | `false`, undefined, `{"allow": false}` | not applicable: this policy grants nothing |
/// | anything else, an evaluation error, no active policy | **deny** (fail closed) |
///
/// ```
/// use std::sync::Arc;
/// use portcullis_core::{Action, AuthMethod, Authorizer, Effect, Principal, PrincipalKind};
/// use portcullis_policy::{Bundle, PolicyStore, RegoAuthorizer};
///
/// let store = Arc::new(PolicyStore::in_memory(Default::default()));
/// store.activate(Bundle::from_files("deploys", [(
///     "deploy.rego".to_owned(),
///     br#"package deploy
///         allow if {
///             input.action == "deploy"
///             "release-managers" in input.principal.groups
///         }"#.to_vec(),
/// )])?)?;
/// let authorizer = RegoAuthorizer::new(store, "data.deploy.allow")?;
/// let alice = Principal::builder(PrincipalKind::User, "alice", AuthMethod::OIDC)
///     .groups(["release-managers"])
///     .build()?;
/// let checkout = "env:checkout".parse()?;
/// assert_eq!(authorizer.check(&alice, &Action::DEPLOY, &checkout).effect(), Effect::Allow);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct RegoAuthorizer<E> {
    engine: Arc<E>,
    rule: String,
    name: String,
}

impl<E: PolicyEngine> RegoAuthorizer<E> {
    /// Asks `rule` (`data.pkg.allow` or `pkg/allow`) of `engine`.
    ///
    /// # Errors
    ///
    /// [`PolicyError::InvalidPath`] if `rule` is not a rule path.
    pub fn new(engine: Arc<E>, rule: &str) -> Result<Self, PolicyError> {
        let rule = rule_path(rule)?;
        Ok(RegoAuthorizer {
            engine,
            name: format!("rego {rule}"),
            rule,
        })
    }

    /// The input document the rule sees for `request`.
    #[must_use]
    pub fn input(request: &AccessRequest<'_>) -> Value {
        json!({
            "principal": request.principal,
            "action": request.action.as_str(),
            "resource": request.resource,
            "context": request.context,
        })
    }
}

impl<E: PolicyEngine> Authorizer for RegoAuthorizer<E> {
    fn authorize(&self, request: &AccessRequest<'_>) -> Decision {
        let evaluation = match self.engine.evaluate(&self.rule, &Self::input(request)) {
            Ok(evaluation) => evaluation,
            Err(err) => {
                return Decision::deny(format!("{}: evaluation failed: {err}", self.name));
            }
        };
        let reason = |default: &str, object: Option<&serde_json::Map<String, Value>>| {
            let given = object
                .and_then(|o| o.get("reason"))
                .and_then(Value::as_str)
                .unwrap_or(default);
            format!("{}: {given}", self.name)
        };
        match evaluation.result {
            Some(Value::Bool(true)) => Decision::allow(reason("allowed", None)),
            None | Some(Value::Bool(false)) => {
                Decision::not_applicable(reason("not allowed", None))
            }
            Some(Value::Object(object)) => {
                let flag = |key: &str| object.get(key).map(Value::as_bool);
                match (flag("deny"), flag("allow")) {
                    (Some(None), _) | (_, Some(None)) => Decision::deny(format!(
                        "{}: `allow` and `deny` must be booleans; failing closed",
                        self.name
                    )),
                    (Some(Some(true)), _) => Decision::deny(reason("denied", Some(&object))),
                    (_, Some(Some(true))) => Decision::allow(reason("allowed", Some(&object))),
                    _ => Decision::not_applicable(reason("not allowed", Some(&object))),
                }
            }
            Some(other) => Decision::deny(format!(
                "{}: expected a boolean or an object with allow/deny, got {}; failing closed",
                self.name,
                kind_of(&other)
            )),
        }
    }

    fn name(&self) -> &str {
        &self.name
    }
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
