//! The [`Authorizer`] trait, the request it judges, and its simplest implementations.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::{Action, Decision, Principal, Resource};

/// Decides whether a [`Principal`] may perform an [`Action`] on a [`Resource`].
///
/// Implementations are synchronous and should be allocation-light: they run on every request,
/// so they read in-memory state (a snapshot of role bindings, a compiled policy) and never
/// do I/O. The trait is object safe and `Send + Sync`, so authorizers live in
/// `Arc<dyn Authorizer>` and compose with [`AllOf`](crate::AllOf),
/// [`AnyOf`](crate::AnyOf) and [`DenyOverrides`](crate::DenyOverrides).
///
/// Errors inside an authorizer must become a [`Decision::deny`] with a reason, never an
/// allow: callers act only on [`Decision::is_allowed`].
///
/// ```
/// use portcullis_core::{AccessRequest, Authorizer, Decision};
///
/// /// Lets members of `deployers` deploy; has nothing to say about anything else.
/// struct Deployers;
///
/// impl Authorizer for Deployers {
///     fn authorize(&self, request: &AccessRequest<'_>) -> Decision {
///         if request.action.as_str() != "deploy" {
///             Decision::not_applicable("only judges deploys")
///         } else if request.principal.in_group("deployers") {
///             Decision::allow("member of deployers")
///         } else {
///             Decision::not_applicable("not a member of deployers")
///         }
///     }
/// }
/// ```
pub trait Authorizer: Send + Sync {
    /// Judges one request.
    fn authorize(&self, request: &AccessRequest<'_>) -> Decision;

    /// A short name for reasons and logs; defaults to the type name.
    fn name(&self) -> &str {
        std::any::type_name::<Self>()
    }

    /// Judges `principal` doing `action` on `resource`, with an empty context.
    fn check(&self, principal: &Principal, action: &Action, resource: &Resource) -> Decision {
        self.authorize(&AccessRequest::new(principal, action, resource))
    }
}

/// Extra attributes of a request that an authorizer may consult: the time of day for a
/// change freeze, the client address, request parameters. Keys are free-form; values are
/// JSON.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Context(BTreeMap<String, serde_json::Value>);

/// The context of requests that have none.
static EMPTY_CONTEXT: Context = Context(BTreeMap::new());

impl Context {
    /// An empty context.
    #[must_use]
    pub const fn new() -> Self {
        Context(BTreeMap::new())
    }

    /// Sets an attribute, returning the old value of that key.
    pub fn insert(
        &mut self,
        key: impl Into<String>,
        value: serde_json::Value,
    ) -> Option<serde_json::Value> {
        self.0.insert(key.into(), value)
    }

    /// Sets an attribute, builder style.
    #[must_use]
    pub fn with(mut self, key: impl Into<String>, value: serde_json::Value) -> Self {
        self.0.insert(key.into(), value);
        self
    }

    /// One attribute by key.
    #[must_use]
    pub fn get(&self, key: &str) -> Option<&serde_json::Value> {
        self.0.get(key)
    }

    /// All attributes, sorted by key.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &serde_json::Value)> + '_ {
        self.0.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// Whether there are no attributes.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// One request to judge: who, what, on which resource, in which context. Borrowed, so
/// building one costs nothing.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct AccessRequest<'a> {
    /// Who is asking.
    pub principal: &'a Principal,
    /// What they want to do.
    pub action: &'a Action,
    /// To what.
    pub resource: &'a Resource,
    /// Anything else an authorizer may consult.
    pub context: &'a Context,
}

impl<'a> AccessRequest<'a> {
    /// A request with an empty context.
    #[must_use]
    pub fn new(principal: &'a Principal, action: &'a Action, resource: &'a Resource) -> Self {
        AccessRequest {
            principal,
            action,
            resource,
            context: &EMPTY_CONTEXT,
        }
    }

    /// The same request with `context`.
    #[must_use]
    pub fn with_context(self, context: &'a Context) -> Self {
        AccessRequest { context, ..self }
    }
}

impl fmt::Display for AccessRequest<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {}", self.principal, self.action, self.resource)
    }
}

impl<A: Authorizer + ?Sized> Authorizer for &A {
    fn authorize(&self, request: &AccessRequest<'_>) -> Decision {
        (**self).authorize(request)
    }

    fn name(&self) -> &str {
        (**self).name()
    }
}

impl<A: Authorizer + ?Sized> Authorizer for Box<A> {
    fn authorize(&self, request: &AccessRequest<'_>) -> Decision {
        (**self).authorize(request)
    }

    fn name(&self) -> &str {
        (**self).name()
    }
}

impl<A: Authorizer + ?Sized> Authorizer for Arc<A> {
    fn authorize(&self, request: &AccessRequest<'_>) -> Decision {
        (**self).authorize(request)
    }

    fn name(&self) -> &str {
        (**self).name()
    }
}

/// The null authorizer: denies everything. The safe default when nothing is configured.
#[derive(Debug, Clone, Copy, Default)]
pub struct DenyAll;

impl Authorizer for DenyAll {
    fn authorize(&self, _request: &AccessRequest<'_>) -> Decision {
        Decision::deny("no authorizer is configured, so every request is denied")
    }

    fn name(&self) -> &str {
        "deny-all"
    }
}

/// An authorizer made from a closure; see [`from_fn`].
pub struct FnAuthorizer<F> {
    name: String,
    f: F,
}

impl<F> fmt::Debug for FnAuthorizer<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FnAuthorizer")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// Makes an authorizer named `name` from a closure, for small rules an embedder writes inline.
///
/// ```
/// use portcullis_core::{from_fn, Authorizer, Decision};
/// let frozen = from_fn("change-freeze", |request| {
///     if request.resource.id().ends_with("/prod") {
///         Decision::deny("production is frozen until 2027-01-04")
///     } else {
///         Decision::not_applicable("not a production stage")
///     }
/// });
/// assert_eq!(frozen.name(), "change-freeze");
/// ```
pub fn from_fn<F>(name: impl Into<String>, f: F) -> FnAuthorizer<F>
where
    F: Fn(&AccessRequest<'_>) -> Decision + Send + Sync,
{
    FnAuthorizer {
        name: name.into(),
        f,
    }
}

impl<F> Authorizer for FnAuthorizer<F>
where
    F: Fn(&AccessRequest<'_>) -> Decision + Send + Sync,
{
    fn authorize(&self, request: &AccessRequest<'_>) -> Decision {
        (self.f)(request)
    }

    fn name(&self) -> &str {
        &self.name
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{AuthMethod, PrincipalKind};
    use serde_json::json;

    fn bob() -> Principal {
        Principal::builder(PrincipalKind::User, "bob", AuthMethod::PASSWORD)
            .build()
            .unwrap()
    }

    #[test]
    fn deny_all_denies_and_is_object_safe() {
        let authz: Arc<dyn Authorizer> = Arc::new(DenyAll);
        let d = authz.check(&bob(), &Action::READ, &Resource::SYSTEM);
        assert!(d.is_denied());
        assert_eq!(authz.name(), "deny-all");
        let boxed: Box<dyn Authorizer> = Box::new(DenyAll);
        fn by_value<A: Authorizer>(authz: A) -> Decision {
            authz.check(&bob(), &Action::READ, &Resource::SYSTEM)
        }
        assert!(by_value(&boxed).is_denied());
        assert!(by_value(boxed).is_denied());
    }

    #[test]
    fn default_name_is_the_type_name() {
        struct Mine;
        impl Authorizer for Mine {
            fn authorize(&self, _: &AccessRequest<'_>) -> Decision {
                Decision::allow("mine")
            }
        }
        assert!(Mine.name().ends_with("Mine"));
    }

    #[test]
    fn closures_see_the_context() {
        let office_hours = from_fn("office-hours", |r| match r.context.get("hour") {
            Some(h) if h.as_u64().is_some_and(|h| (9..17).contains(&h)) => {
                Decision::allow("inside office hours")
            }
            Some(_) => Decision::deny("outside office hours"),
            None => Decision::deny("no hour in the request context"),
        });
        let p = bob();
        let ctx = Context::new().with("hour", json!(10));
        let (deploy, system) = (Action::DEPLOY, Resource::SYSTEM);
        let request = AccessRequest::new(&p, &deploy, &system);
        assert!(
            office_hours
                .authorize(&request.with_context(&ctx))
                .is_allowed()
        );
        assert!(office_hours.authorize(&request).is_denied());
        assert_eq!(request.to_string(), "user:bob deploy system:*");
        assert!(format!("{office_hours:?}").contains("office-hours"));
    }
}
