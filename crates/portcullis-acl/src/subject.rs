//! Who a role is bound to: a user, a group (team), a script token or a service.

use std::fmt;
use std::str::FromStr;

use portcullis_core::{Field, Principal, PrincipalKind, validate_name};
use serde::{Deserialize, Serialize};

use crate::AclError;

/// The kind of a [`Subject`]. Declared in alphabetical order, so that sorting by kind sorts
/// by its name, as the SQL stores do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum SubjectKind {
    /// A group (team) of principals.
    Group,
    /// A service principal.
    Service,
    /// A script token, by name.
    Token,
    /// A user.
    User,
}

impl SubjectKind {
    /// `group`, `service`, `token` or `user`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            SubjectKind::Group => "group",
            SubjectKind::Service => "service",
            SubjectKind::Token => "token",
            SubjectKind::User => "user",
        }
    }

    /// The subject kind whose bindings a principal of `kind` holds directly (its groups'
    /// bindings apply as well).
    #[must_use]
    pub fn of_principal(kind: PrincipalKind) -> Option<SubjectKind> {
        match kind {
            PrincipalKind::User => Some(SubjectKind::User),
            PrincipalKind::Service => Some(SubjectKind::Service),
            PrincipalKind::ScriptToken => Some(SubjectKind::Token),
            _ => None,
        }
    }
}

impl fmt::Display for SubjectKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SubjectKind {
    type Err = AclError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        [
            SubjectKind::Group,
            SubjectKind::Service,
            SubjectKind::Token,
            SubjectKind::User,
        ]
        .into_iter()
        .find(|kind| kind.as_str().eq_ignore_ascii_case(input))
        .ok_or_else(|| AclError::InvalidSubject {
            input: input.chars().take(64).collect(),
        })
    }
}

/// Whom a role is bound to, written `kind:name`: `user:alice`, `group:deployers`,
/// `token:ci-deployer`, `service:billing`.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Subject {
    kind: SubjectKind,
    name: String,
}

impl Subject {
    /// A subject of `kind` called `name`.
    ///
    /// # Errors
    ///
    /// If the name is empty, longer than 256 bytes, or has whitespace or control characters.
    pub fn new(kind: SubjectKind, name: impl Into<String>) -> Result<Self, AclError> {
        let name = name.into();
        validate_name(Field::Other("subject name"), &name)?;
        Ok(Subject { kind, name })
    }

    /// A subject from a name that was validated when it was indexed.
    pub(crate) fn indexed(kind: SubjectKind, name: &str) -> Self {
        Subject {
            kind,
            name: name.to_owned(),
        }
    }

    /// `user:NAME`.
    ///
    /// # Errors
    ///
    /// As [`Subject::new`].
    pub fn user(name: impl Into<String>) -> Result<Self, AclError> {
        Subject::new(SubjectKind::User, name)
    }

    /// `group:NAME`.
    ///
    /// # Errors
    ///
    /// As [`Subject::new`].
    pub fn group(name: impl Into<String>) -> Result<Self, AclError> {
        Subject::new(SubjectKind::Group, name)
    }

    /// `token:NAME`.
    ///
    /// # Errors
    ///
    /// As [`Subject::new`].
    pub fn token(name: impl Into<String>) -> Result<Self, AclError> {
        Subject::new(SubjectKind::Token, name)
    }

    /// The subject a principal acts as directly, if its kind has one.
    #[must_use]
    pub fn of_principal(principal: &Principal) -> Option<Subject> {
        SubjectKind::of_principal(principal.kind()).map(|kind| Subject {
            kind,
            name: principal.subject().to_owned(),
        })
    }

    /// The kind.
    #[must_use]
    pub fn kind(&self) -> SubjectKind {
        self.kind
    }

    /// The name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl FromStr for Subject {
    type Err = AclError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let (kind, name) = input
            .split_once(':')
            .ok_or_else(|| AclError::InvalidSubject {
                input: input.chars().take(64).collect(),
            })?;
        Subject::new(kind.parse()?, name)
    }
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.kind, self.name)
    }
}

impl fmt::Debug for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Subject({self})")
    }
}

impl Serialize for Subject {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Subject {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = std::borrow::Cow::<'de, str>::deserialize(deserializer)?;
        raw.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use portcullis_core::AuthMethod;

    #[test]
    fn parses_and_displays() {
        let s: Subject = "GROUP:release-managers".parse().unwrap();
        assert_eq!(s.kind(), SubjectKind::Group);
        assert_eq!(s.to_string(), "group:release-managers");
        assert!("alice".parse::<Subject>().is_err());
        assert!("robot:x".parse::<Subject>().is_err());
        assert!("user:".parse::<Subject>().is_err());
        assert!("user:a\u{1}b".parse::<Subject>().is_err());
    }

    #[test]
    fn principals_map_to_their_direct_subject() {
        let token = Principal::builder(
            PrincipalKind::ScriptToken,
            "ci-deployer",
            AuthMethod::SCRIPT_TOKEN,
        )
        .build()
        .unwrap();
        assert_eq!(
            Subject::of_principal(&token).unwrap(),
            Subject::token("ci-deployer").unwrap()
        );
    }

    #[test]
    fn kind_order_is_name_order() {
        let mut kinds = [
            SubjectKind::User,
            SubjectKind::Token,
            SubjectKind::Group,
            SubjectKind::Service,
        ];
        kinds.sort();
        let names: Vec<_> = kinds.iter().map(|k| k.as_str()).collect();
        let mut sorted = names.clone();
        sorted.sort_unstable();
        assert_eq!(names, sorted);
    }
}
