//! What is protected: a [`Resource`] is a typed id, such as environment `checkout`, or the
//! whole system.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Field, echo};
use crate::ident::{ident_newtype, validate_name};

ident_newtype!(
    /// The type of a [`Resource`], an open set of lower-case identifiers.
    ///
    /// Common kinds are constants; any other is parsed from a string. Parsing folds ASCII
    /// case, so `ENV` (as Teletraan writes it) and `env` are the same kind.
    ///
    /// ```
    /// use portcullis_core::ResourceKind;
    /// let kind: ResourceKind = "ENV".parse()?;
    /// assert_eq!(kind, ResourceKind::ENV);
    /// const DATASET: ResourceKind = ResourceKind::from_static("dataset");
    /// assert_eq!(DATASET.as_str(), "dataset");
    /// # Ok::<(), portcullis_core::Error>(())
    /// ```
    ResourceKind, Field::ResourceKind, "resource kind"
);

impl ResourceKind {
    /// The whole system. Its only resource is [`Resource::SYSTEM`] (`system:*`), which
    /// covers every other resource.
    pub const SYSTEM: ResourceKind = ResourceKind::from_static("system");
    /// A deploy environment, e.g. `env:checkout`.
    pub const ENV: ResourceKind = ResourceKind::from_static("env");
    /// A stage of an environment, e.g. `env_stage:checkout/prod`.
    pub const ENV_STAGE: ResourceKind = ResourceKind::from_static("env_stage");
    /// A group of hosts or a team-owned group of resources.
    pub const GROUP: ResourceKind = ResourceKind::from_static("group");
    /// A build artifact, e.g. `build:checkout-1234`.
    pub const BUILD: ResourceKind = ResourceKind::from_static("build");
}

/// The id of the system resource: the wildcard.
const WILDCARD: &str = "*";

/// A protected thing: a [`ResourceKind`] and an id within that kind.
///
/// The string form is `kind:id` (`env:checkout`, `env_stage:checkout/prod`, `system:*`). Ids
/// are case-sensitive, 1–256 bytes, with no whitespace or control characters; they may hold
/// `:` and `/`, since only the first `:` separates the kind.
///
/// The system resource `system:*` is the one wildcard: [`Resource::covers`] is true for it and
/// every resource. `*` is rejected as the id of any other kind, so `env:*` can never be
/// mistaken for "all environments".
///
/// The JSON form is `{"kind":"env","id":"checkout"}`; the string form is accepted too, so a
/// config file may write `resource = "env:checkout"`.
///
/// ```
/// use portcullis_core::{Resource, ResourceKind};
/// let stage: Resource = "env_stage:checkout/prod".parse()?;
/// assert_eq!(stage.kind(), &ResourceKind::ENV_STAGE);
/// assert_eq!(stage.id(), "checkout/prod");
/// assert!(Resource::SYSTEM.covers(&stage));
/// assert!("env:*".parse::<Resource>().is_err());
/// # Ok::<(), portcullis_core::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Resource {
    kind: ResourceKind,
    id: Cow<'static, str>,
}

impl Resource {
    /// The whole system, `system:*`: a grant on it applies to every resource.
    pub const SYSTEM: Resource = Resource {
        kind: ResourceKind::SYSTEM,
        id: Cow::Borrowed(WILDCARD),
    };

    /// Makes a resource of `kind` with `id`, validating the id.
    ///
    /// # Errors
    ///
    /// If the id is empty, too long or has whitespace or control characters; if `kind` is
    /// `system` and the id is not `*`; if the id is `*` and `kind` is not `system`.
    pub fn new(kind: ResourceKind, id: impl Into<String>) -> Result<Self, Error> {
        let id = id.into();
        validate_name(Field::ResourceId, &id)?;
        match (kind == ResourceKind::SYSTEM, id == WILDCARD) {
            (true, true) => Ok(Resource::SYSTEM),
            (true, false) => Err(Error::SystemIdNotWildcard { id: echo(&id) }),
            (false, true) => Err(Error::WildcardOutsideSystem {
                kind: kind.to_string(),
            }),
            (false, false) => Ok(Resource {
                kind,
                id: Cow::Owned(id),
            }),
        }
    }

    /// The kind of this resource.
    #[must_use]
    pub fn kind(&self) -> &ResourceKind {
        &self.kind
    }

    /// The id of this resource within its kind (`*` for the system resource).
    #[must_use]
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Whether this is the system resource `system:*`.
    #[must_use]
    pub fn is_system(&self) -> bool {
        self.kind == ResourceKind::SYSTEM
    }

    /// Whether a grant on `self` applies to `other`: true when they are equal or `self` is
    /// the system resource. Parent/child relations (an environment and its stages) are a
    /// policy choice and belong to the authorizer, not to this method.
    #[must_use]
    pub fn covers(&self, other: &Resource) -> bool {
        self.is_system() || self == other
    }
}

impl FromStr for Resource {
    type Err = Error;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let (kind, id) = input
            .split_once(':')
            .ok_or_else(|| Error::MissingSeparator { input: echo(input) })?;
        Resource::new(kind.parse()?, id)
    }
}

impl TryFrom<&str> for Resource {
    type Error = Error;

    fn try_from(input: &str) -> Result<Self, Self::Error> {
        input.parse()
    }
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.kind, self.id)
    }
}

impl fmt::Debug for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Resource({self})")
    }
}

/// The JSON object form.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ResourceObject<'a> {
    // Both fields are plain strings here and validated after the form is chosen, so that a
    // bad kind is reported as such rather than as "matched no form".
    #[serde(borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow)]
    id: Cow<'a, str>,
}

/// Either accepted form, for deserializing.
#[derive(Deserialize)]
#[serde(
    untagged,
    expecting = "a resource as \"kind:id\" or {\"kind\": …, \"id\": …}"
)]
enum ResourceForm<'a> {
    #[serde(borrow)]
    Text(Cow<'a, str>),
    #[serde(borrow)]
    Object(ResourceObject<'a>),
}

impl Serialize for Resource {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        ResourceObject {
            kind: Cow::Borrowed(self.kind.as_str()),
            id: Cow::Borrowed(&self.id),
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Resource {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let parsed = match ResourceForm::deserialize(deserializer)? {
            ResourceForm::Text(text) => text.parse(),
            ResourceForm::Object(object) => object
                .kind
                .parse()
                .and_then(|kind| Resource::new(kind, object.id.into_owned())),
        };
        parsed.map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kind_and_id_at_the_first_colon() {
        let r: Resource = "ENV_STAGE:checkout:blue/prod".parse().unwrap();
        assert_eq!(r.kind(), &ResourceKind::ENV_STAGE);
        assert_eq!(r.id(), "checkout:blue/prod");
        assert_eq!(r.to_string(), "env_stage:checkout:blue/prod");
    }

    #[test]
    fn system_is_the_only_wildcard() {
        let system: Resource = "SYSTEM:*".parse().unwrap();
        assert_eq!(system, Resource::SYSTEM);
        assert!(system.is_system());
        assert!(matches!(
            "system:checkout".parse::<Resource>(),
            Err(Error::SystemIdNotWildcard { .. })
        ));
        assert!(matches!(
            "env:*".parse::<Resource>(),
            Err(Error::WildcardOutsideSystem { .. })
        ));
    }

    #[test]
    fn covers_is_equality_or_system() {
        let a: Resource = "env:a".parse().unwrap();
        let b: Resource = "env:b".parse().unwrap();
        assert!(a.covers(&a));
        assert!(!a.covers(&b));
        assert!(!a.covers(&Resource::SYSTEM));
        assert!(Resource::SYSTEM.covers(&a));
    }

    #[test]
    fn bad_input_gets_a_typed_error() {
        assert!(matches!(
            "checkout".parse::<Resource>(),
            Err(Error::MissingSeparator { .. })
        ));
        assert!(matches!(
            "env:".parse::<Resource>(),
            Err(Error::Empty {
                field: Field::ResourceId
            })
        ));
        assert!(matches!(
            ":checkout".parse::<Resource>(),
            Err(Error::Empty {
                field: Field::ResourceKind
            })
        ));
        assert!(matches!(
            "env:check out".parse::<Resource>(),
            Err(Error::InvalidChar { .. })
        ));
    }

    #[test]
    fn json_accepts_object_and_string_and_rejects_unknown_fields() {
        let r: Resource = "env:checkout".parse().unwrap();
        let json = serde_json::to_string(&r).unwrap();
        assert_eq!(json, r#"{"kind":"env","id":"checkout"}"#);
        assert_eq!(serde_json::from_str::<Resource>(&json).unwrap(), r);
        assert_eq!(
            serde_json::from_str::<Resource>(r#""env:checkout""#).unwrap(),
            r
        );
        assert!(serde_json::from_str::<Resource>(r#"{"kind":"env","id":"x","extra":1}"#).is_err());
        let err = serde_json::from_str::<Resource>(r#""env:*""#).unwrap_err();
        assert!(err.to_string().contains("not a wildcard"), "{err}");
        let err = serde_json::from_str::<Resource>(r#"{"kind":"system","id":"x"}"#).unwrap_err();
        assert!(err.to_string().contains("system:*"), "{err}");
        let err = serde_json::from_str::<Resource>(r#"{"kind":"e nv","id":"x"}"#).unwrap_err();
        assert!(err.to_string().contains("resource kind"), "{err}");
    }
}
