//! Authorizers made of other authorizers: [`AllOf`], [`AnyOf`] and [`DenyOverrides`].
//!
//! | combinator        | allows when                           | explicit deny when                   |
//! |-------------------|---------------------------------------|--------------------------------------|
//! | [`AllOf`]         | every member allows                   | any member denies                    |
//! | [`AnyOf`]         | any member allows                     | none allows and one denies           |
//! | [`DenyOverrides`] | none denies and at least one allows   | any member denies                    |
//!
//! Otherwise the result is [`Effect::NotApplicable`], which is never permission. A combinator
//! with no members never allows. [`AllOf`] and [`DenyOverrides`] keep looking after a
//! not-applicable member so that a later explicit deny is never lost when they are nested.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use crate::{AccessRequest, Authorizer, Decision, Effect};

/// Defines a combinator struct with its builder methods.
macro_rules! combinator {
    ($(#[$meta:meta])* $name:ident, $default_name:literal) => {
        $(#[$meta])*
        #[derive(Clone)]
        pub struct $name {
            name: Cow<'static, str>,
            members: Vec<Arc<dyn Authorizer>>,
        }

        impl $name {
            #[doc = concat!("An empty `", stringify!($name), "` (which allows nothing) named `", $default_name, "`.")]
            #[must_use]
            pub fn new() -> Self {
                $name {
                    name: Cow::Borrowed($default_name),
                    members: Vec::new(),
                }
            }

            /// Adds a member.
            #[must_use]
            pub fn with(self, member: impl Authorizer + 'static) -> Self {
                self.with_arc(Arc::new(member))
            }

            /// Adds a shared member.
            #[must_use]
            pub fn with_arc(mut self, member: Arc<dyn Authorizer>) -> Self {
                self.members.push(member);
                self
            }

            /// Renames this combinator (the name appears in reasons).
            #[must_use]
            pub fn named(mut self, name: impl Into<Cow<'static, str>>) -> Self {
                self.name = name.into();
                self
            }

            /// The number of members.
            #[must_use]
            pub fn len(&self) -> usize {
                self.members.len()
            }

            /// Whether there are no members.
            #[must_use]
            pub fn is_empty(&self) -> bool {
                self.members.is_empty()
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl FromIterator<Arc<dyn Authorizer>> for $name {
            fn from_iter<I: IntoIterator<Item = Arc<dyn Authorizer>>>(members: I) -> Self {
                $name {
                    name: Cow::Borrowed($default_name),
                    members: members.into_iter().collect(),
                }
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                let names: Vec<&str> = self.members.iter().map(|m| m.name()).collect();
                f.debug_struct(stringify!($name))
                    .field("name", &self.name)
                    .field("members", &names)
                    .finish()
            }
        }
    };
}

combinator!(
    /// Allows only when every member allows; denies when any member denies.
    ///
    /// Stops at the first explicit deny. A not-applicable member makes the result
    /// not applicable unless a later member denies.
    ///
    /// ```
    /// use portcullis_core::{danger::AllowAll, AllOf, DenyAll};
    /// let both = AllOf::new().with(AllowAll).with(DenyAll);
    /// # use portcullis_core::*;
    /// # let p = Principal::builder(PrincipalKind::User, "a", AuthMethod::OIDC).build()?;
    /// assert!(both.check(&p, &Action::READ, &Resource::SYSTEM).is_denied());
    /// # Ok::<(), portcullis_core::Error>(())
    /// ```
    AllOf,
    "all-of"
);

combinator!(
    /// Allows when any member allows (permit-overrides); otherwise denies if any member
    /// denied, else is not applicable.
    ///
    /// Stops at the first allow: use it to offer alternatives, e.g. RBAC *or* a Rego policy.
    AnyOf,
    "any-of"
);

combinator!(
    /// Denies when any member denies; otherwise allows when at least one member allows.
    ///
    /// Use it to put vetoes (a change freeze, a blocklist) beside the rules that grant
    /// access: no member can ever override another member's deny.
    DenyOverrides,
    "deny-overrides"
);

/// `member: reason`, for combined reasons.
fn attributed(member: &dyn Authorizer, decision: &Decision) -> String {
    format!("{}: {}", member.name(), decision.reason())
}

/// `a: reason; b: reason`. Combinators keep member decisions unformatted and call this only
/// for the decision they return, so the common path formats one string at most.
fn attributed_list(decisions: &[(&dyn Authorizer, Decision)]) -> String {
    decisions
        .iter()
        .map(|(member, decision)| attributed(*member, decision))
        .collect::<Vec<_>>()
        .join("; ")
}

fn no_members(name: &str) -> Decision {
    Decision::not_applicable(format!("{name} has no members, so it allows nothing"))
}

impl Authorizer for AllOf {
    fn authorize(&self, request: &AccessRequest<'_>) -> Decision {
        if self.members.is_empty() {
            return no_members(&self.name);
        }
        let mut first_not_applicable = None;
        let mut allows = Vec::new();
        for member in &self.members {
            let decision = member.authorize(request);
            match decision.effect() {
                Effect::Deny => return Decision::deny(attributed(&**member, &decision)),
                Effect::NotApplicable => {
                    first_not_applicable.get_or_insert((&**member, decision));
                }
                Effect::Allow => allows.push((&**member, decision)),
            }
        }
        match first_not_applicable {
            Some((member, decision)) => Decision::not_applicable(format!(
                "{} needs every member to allow; {}",
                self.name,
                attributed(member, &decision)
            )),
            None => Decision::allow(attributed_list(&allows)),
        }
    }

    fn name(&self) -> &str {
        &self.name
    }
}

impl Authorizer for AnyOf {
    fn authorize(&self, request: &AccessRequest<'_>) -> Decision {
        if self.members.is_empty() {
            return no_members(&self.name);
        }
        let mut denied = false;
        let mut refusals = Vec::new();
        for member in &self.members {
            let decision = member.authorize(request);
            match decision.effect() {
                Effect::Allow => return Decision::allow(attributed(&**member, &decision)),
                Effect::Deny => denied = true,
                Effect::NotApplicable => {}
            }
            refusals.push((&**member, decision));
        }
        let reason = format!(
            "no member of {} allowed: {}",
            self.name,
            attributed_list(&refusals)
        );
        if denied {
            Decision::deny(reason)
        } else {
            Decision::not_applicable(reason)
        }
    }

    fn name(&self) -> &str {
        &self.name
    }
}

impl Authorizer for DenyOverrides {
    fn authorize(&self, request: &AccessRequest<'_>) -> Decision {
        if self.members.is_empty() {
            return no_members(&self.name);
        }
        let mut first_allow = None;
        let mut not_applicable = Vec::new();
        for member in &self.members {
            let decision = member.authorize(request);
            match decision.effect() {
                Effect::Deny => return Decision::deny(attributed(&**member, &decision)),
                Effect::Allow => {
                    first_allow.get_or_insert((&**member, decision));
                }
                Effect::NotApplicable => not_applicable.push((&**member, decision)),
            }
        }
        match first_allow {
            Some((member, decision)) => Decision::allow(attributed(member, &decision)),
            None => Decision::not_applicable(format!(
                "no member of {} allowed: {}",
                self.name,
                attributed_list(&not_applicable)
            )),
        }
    }

    fn name(&self) -> &str {
        &self.name
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::danger::AllowAll;
    use crate::{Action, AuthMethod, DenyAll, Principal, PrincipalKind, Resource, from_fn};

    fn check(authz: &dyn Authorizer) -> Decision {
        let p = Principal::builder(PrincipalKind::User, "carol", AuthMethod::OIDC)
            .build()
            .unwrap();
        authz.check(&p, &Action::DEPLOY, &Resource::SYSTEM)
    }

    fn abstain() -> impl Authorizer {
        from_fn("abstain", |_| Decision::not_applicable("no opinion"))
    }

    #[test]
    fn empty_combinators_allow_nothing() {
        assert!(!check(&AllOf::new()).is_allowed());
        assert!(!check(&AnyOf::new()).is_allowed());
        assert!(!check(&DenyOverrides::new()).is_allowed());
        assert!(check(&AllOf::new()).reason().contains("no members"));
    }

    #[test]
    fn all_of_reports_the_member_that_refused() {
        let d = check(&AllOf::new().with(AllowAll).with(abstain()));
        assert_eq!(d.effect(), Effect::NotApplicable);
        assert!(d.reason().contains("abstain: no opinion"), "{d}");
        let d = check(&AllOf::new().with(abstain()).with(DenyAll));
        assert!(d.is_denied(), "a later deny must not be lost: {d}");
        assert!(d.reason().starts_with("deny-all:"), "{d}");
        assert!(check(&AllOf::new().with(AllowAll).with(AllowAll)).is_allowed());
    }

    #[test]
    fn any_of_allows_on_the_first_allow() {
        let d = check(&AnyOf::new().with(DenyAll).with(AllowAll));
        assert!(d.is_allowed());
        assert!(d.reason().starts_with("danger-allow-all:"), "{d}");
        assert!(check(&AnyOf::new().with(DenyAll).with(abstain())).is_denied());
        assert_eq!(
            check(&AnyOf::new().with(abstain())).effect(),
            Effect::NotApplicable
        );
    }

    #[test]
    fn deny_overrides_lets_no_allow_beat_a_deny() {
        let d = check(&DenyOverrides::new().with(AllowAll).with(DenyAll));
        assert!(d.is_denied());
        assert!(check(&DenyOverrides::new().with(abstain()).with(AllowAll)).is_allowed());
        assert_eq!(
            check(&DenyOverrides::new().with(abstain())).effect(),
            Effect::NotApplicable
        );
    }

    #[test]
    fn names_and_nesting() {
        let inner = AllOf::new().with(AllowAll).named("inner");
        let outer: DenyOverrides = [Arc::new(inner) as Arc<dyn Authorizer>]
            .into_iter()
            .collect();
        assert_eq!(outer.len(), 1);
        let d = check(&outer);
        assert!(d.is_allowed());
        assert!(d.reason().starts_with("inner: danger-allow-all:"), "{d}");
        assert!(format!("{outer:?}").contains("inner"));
    }
}
