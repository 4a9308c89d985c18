//! The answer of an [`Authorizer`](crate::Authorizer): allow, deny or not applicable, with a
//! reason an operator can read.

use std::borrow::Cow;
use std::fmt;

use serde::{Deserialize, Serialize};

/// The outcome of a [`Decision`].
///
/// Three values, as in XACML, so that authorizers compose: an authorizer that has nothing to
/// say about a request (no role binding matches, no policy rule applies) answers
/// [`NotApplicable`](Effect::NotApplicable), which combinators treat differently from an
/// explicit [`Deny`](Effect::Deny). Only [`Allow`](Effect::Allow) lets a request through:
/// `NotApplicable` is never permission.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Effect {
    /// The request is permitted.
    Allow,
    /// The request is explicitly forbidden; this overrides allows in
    /// [`DenyOverrides`](crate::DenyOverrides) and [`AllOf`](crate::AllOf).
    Deny,
    /// The authorizer neither permits nor forbids; callers must treat it as a denial.
    NotApplicable,
}

impl fmt::Display for Effect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Effect::Allow => "allow",
            Effect::Deny => "deny",
            Effect::NotApplicable => "not applicable",
        })
    }
}

/// An authorization decision: an [`Effect`] and the reason for it.
///
/// Reasons are for operators and audit logs ("role OPERATOR on env:checkout via group
/// deployers"); static reasons cost no allocation.
///
/// ```
/// use portcullis_core::{Decision, Effect};
/// let d = Decision::not_applicable("no role binding for user:bob on env:checkout");
/// assert!(!d.is_allowed());
/// assert_eq!(d.effect(), Effect::NotApplicable);
/// assert_eq!(d.to_string(), "not applicable: no role binding for user:bob on env:checkout");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[must_use = "a decision that is not checked protects nothing"]
pub struct Decision {
    effect: Effect,
    reason: Cow<'static, str>,
}

impl Decision {
    /// A decision with the given effect and reason.
    pub fn new(effect: Effect, reason: impl Into<Cow<'static, str>>) -> Self {
        Decision {
            effect,
            reason: reason.into(),
        }
    }

    /// Permit, because of `reason`.
    pub fn allow(reason: impl Into<Cow<'static, str>>) -> Self {
        Decision::new(Effect::Allow, reason)
    }

    /// Forbid explicitly, because of `reason`.
    pub fn deny(reason: impl Into<Cow<'static, str>>) -> Self {
        Decision::new(Effect::Deny, reason)
    }

    /// Neither permit nor forbid, because of `reason` (treated as a denial by callers).
    pub fn not_applicable(reason: impl Into<Cow<'static, str>>) -> Self {
        Decision::new(Effect::NotApplicable, reason)
    }

    /// The effect.
    #[must_use]
    pub fn effect(&self) -> Effect {
        self.effect
    }

    /// The reason, for operators.
    #[must_use]
    pub fn reason(&self) -> &str {
        &self.reason
    }

    /// Whether the request may go ahead: true only for [`Effect::Allow`].
    #[must_use]
    pub fn is_allowed(&self) -> bool {
        self.effect == Effect::Allow
    }

    /// Whether the request was explicitly forbidden ([`Effect::Deny`]).
    #[must_use]
    pub fn is_denied(&self) -> bool {
        self.effect == Effect::Deny
    }

    /// Splits into effect and reason.
    #[must_use]
    pub fn into_parts(self) -> (Effect, Cow<'static, str>) {
        (self.effect, self.reason)
    }
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.effect, self.reason)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_allow_is_allowed() {
        assert!(Decision::allow("ok").is_allowed());
        assert!(!Decision::deny("no").is_allowed());
        assert!(Decision::deny("no").is_denied());
        assert!(!Decision::not_applicable("n/a").is_allowed());
        assert!(!Decision::not_applicable("n/a").is_denied());
    }

    #[test]
    fn json_form() {
        let d = Decision::deny("frozen");
        let json = serde_json::to_string(&d).unwrap();
        assert_eq!(json, r#"{"effect":"deny","reason":"frozen"}"#);
        assert_eq!(serde_json::from_str::<Decision>(&json).unwrap(), d);
        assert_eq!(
            serde_json::to_string(&Effect::NotApplicable).unwrap(),
            r#""not_applicable""#
        );
    }
}
