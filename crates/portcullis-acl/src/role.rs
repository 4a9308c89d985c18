//! Tiered roles: an ordered, extensible set defined by the embedder.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use hashbrown::HashMap;
use serde::{Deserialize, Serialize};

use crate::AclError;

/// Longest role name, in bytes.
const MAX_ROLE_NAME: usize = 32;
/// Most roles in one [`Roles`] set (role references are 16-bit indices).
const MAX_ROLES: usize = 1024;

/// The name of a role: ASCII letters, digits and `_`, starting with a letter, at most 32
/// bytes, in upper case (`operator` parses as `OPERATOR`).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RoleName(Cow<'static, str>);

impl RoleName {
    /// Teletraan's READER: read access.
    pub const READER: RoleName = RoleName(Cow::Borrowed("READER"));
    /// Teletraan's PINGER: host agents reporting deploy status.
    pub const PINGER: RoleName = RoleName(Cow::Borrowed("PINGER"));
    /// Teletraan's PUBLISHER: publishing builds.
    pub const PUBLISHER: RoleName = RoleName(Cow::Borrowed("PUBLISHER"));
    /// Teletraan's OPERATOR: deploying.
    pub const OPERATOR: RoleName = RoleName(Cow::Borrowed("OPERATOR"));
    /// Teletraan's ADMIN: managing roles and script tokens.
    pub const ADMIN: RoleName = RoleName(Cow::Borrowed("ADMIN"));

    /// The name, upper case.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for RoleName {
    type Err = AclError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let valid = !input.is_empty()
            && input.len() <= MAX_ROLE_NAME
            && input.starts_with(|c: char| c.is_ascii_alphabetic())
            && input.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if valid {
            Ok(RoleName(Cow::Owned(input.to_ascii_uppercase())))
        } else {
            Err(AclError::InvalidRoleName {
                name: input.chars().take(64).collect(),
            })
        }
    }
}

impl fmt::Display for RoleName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for RoleName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RoleName({})", self.0)
    }
}

impl Serialize for RoleName {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for RoleName {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = Cow::<'de, str>::deserialize(deserializer)?;
        raw.parse().map_err(serde::de::Error::custom)
    }
}

/// A role of a [`Roles`] set: a name and a tier.
///
/// A role satisfies a requirement when it *is* the required role or its tier is strictly
/// higher. Two different roles of the same tier (Teletraan's PINGER and PUBLISHER) do not
/// satisfy each other.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Role {
    name: RoleName,
    tier: u32,
}

impl Role {
    /// The role's name.
    #[must_use]
    pub fn name(&self) -> &RoleName {
        &self.name
    }

    /// The role's tier: higher tiers satisfy lower requirements.
    #[must_use]
    pub fn tier(&self) -> u32 {
        self.tier
    }

    /// Whether holding `self` meets a requirement of `required`.
    #[must_use]
    pub fn satisfies(&self, required: &Role) -> bool {
        self.name == required.name || self.tier > required.tier
    }
}

/// A role resolved against a [`Roles`] set: its index and tier, so checks compare integers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct RoleRef {
    index: u16,
    tier: u32,
}

impl RoleRef {
    /// Same role, or a strictly higher tier.
    pub(crate) fn satisfies(self, required: RoleRef) -> bool {
        self.index == required.index || self.tier > required.tier
    }

    /// Whether `self` is a better grant to report than `other`.
    pub(crate) fn outranks(self, other: RoleRef) -> bool {
        self.tier > other.tier
    }
}

/// The ordered set of roles an embedder defines; [`Roles::teletraan`] is the ready default.
///
/// ```
/// use portcullis_acl::Roles;
/// let roles = Roles::teletraan();
/// let operator = roles.get("operator")?;
/// assert!(operator.satisfies(&roles.get("READER")?));
/// assert!(!roles.get("PINGER")?.satisfies(&roles.get("PUBLISHER")?));
///
/// let custom = Roles::new([("VIEWER", 0), ("EDITOR", 5), ("OWNER", 9)])?;
/// assert!(custom.get("ADMIN").is_err());
/// # Ok::<(), portcullis_acl::AclError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Roles {
    roles: Vec<Role>,
    by_name: HashMap<RoleName, u16>,
}

impl Roles {
    /// A role set from `(name, tier)` pairs, in any order.
    ///
    /// # Errors
    ///
    /// An invalid or repeated name, or no roles at all.
    pub fn new<I, S>(roles: I) -> Result<Self, AclError>
    where
        I: IntoIterator<Item = (S, u32)>,
        S: AsRef<str>,
    {
        let mut set = Roles {
            roles: Vec::new(),
            by_name: HashMap::new(),
        };
        for (name, tier) in roles {
            let name: RoleName = name.as_ref().parse()?;
            let index = u16::try_from(set.roles.len())
                .ok()
                .filter(|_| set.roles.len() < MAX_ROLES)
                .ok_or(AclError::RoleCount {
                    count: set.roles.len() + 1,
                    max: MAX_ROLES,
                })?;
            if set.by_name.insert(name.clone(), index).is_some() {
                return Err(AclError::DuplicateRole { name });
            }
            set.roles.push(Role { name, tier });
        }
        if set.roles.is_empty() {
            return Err(AclError::RoleCount {
                count: 0,
                max: MAX_ROLES,
            });
        }
        Ok(set)
    }

    /// Teletraan's roles: READER 0, PINGER 1, PUBLISHER 1, OPERATOR 10, ADMIN 20.
    #[must_use]
    pub fn teletraan() -> Self {
        let roles = [
            RoleName::READER,
            RoleName::PINGER,
            RoleName::PUBLISHER,
            RoleName::OPERATOR,
            RoleName::ADMIN,
        ];
        let tiers = [0, 1, 1, 10, 20];
        let roles: Vec<Role> = roles
            .into_iter()
            .zip(tiers)
            .map(|(name, tier)| Role { name, tier })
            .collect();
        let by_name = roles
            .iter()
            .zip(0u16..)
            .map(|(role, index)| (role.name.clone(), index))
            .collect();
        Roles { roles, by_name }
    }

    /// The role called `name` (any case).
    ///
    /// # Errors
    ///
    /// [`AclError::UnknownRole`] listing the defined roles.
    pub fn get(&self, name: &str) -> Result<Role, AclError> {
        let name: RoleName = name.parse()?;
        let role = self.resolve(&name)?;
        self.role(role).cloned().ok_or_else(|| self.unknown(&name))
    }

    /// The roles, in definition order.
    pub fn iter(&self) -> impl Iterator<Item = &Role> + '_ {
        self.roles.iter()
    }

    /// Resolves a name to a reference for fast comparisons.
    pub(crate) fn resolve(&self, name: &RoleName) -> Result<RoleRef, AclError> {
        let index = *self.by_name.get(name).ok_or_else(|| self.unknown(name))?;
        let tier = self
            .roles
            .get(usize::from(index))
            .map(Role::tier)
            .ok_or_else(|| self.unknown(name))?;
        Ok(RoleRef { index, tier })
    }

    /// The role a reference stands for.
    pub(crate) fn role(&self, role: RoleRef) -> Option<&Role> {
        self.roles.get(usize::from(role.index))
    }

    /// The name a reference stands for, for reasons (`?` if it is not of this set).
    pub(crate) fn name_of(&self, role: RoleRef) -> &str {
        self.role(role).map_or("?", |r| r.name.as_str())
    }

    fn unknown(&self, name: &RoleName) -> AclError {
        AclError::UnknownRole {
            name: name.to_string(),
            known: self
                .roles
                .iter()
                .map(|r| r.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        }
    }
}

impl Default for Roles {
    fn default() -> Self {
        Roles::teletraan()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn teletraan_tiers() {
        let roles = Roles::teletraan();
        let get = |n: &str| roles.resolve(&n.parse().unwrap()).unwrap();
        let (reader, pinger, publisher, operator, admin) = (
            get("READER"),
            get("PINGER"),
            get("PUBLISHER"),
            get("OPERATOR"),
            get("ADMIN"),
        );
        assert!(admin.satisfies(operator) && operator.satisfies(publisher));
        assert!(publisher.satisfies(reader) && pinger.satisfies(reader));
        assert!(!pinger.satisfies(publisher) && !publisher.satisfies(pinger));
        assert!(!reader.satisfies(pinger) && !operator.satisfies(admin));
        assert!(admin.satisfies(admin));
    }

    #[test]
    fn bad_role_names_and_sets() {
        assert!(matches!(
            "".parse::<RoleName>(),
            Err(AclError::InvalidRoleName { .. })
        ));
        assert!("9LIVES".parse::<RoleName>().is_err());
        assert!("RE ADER".parse::<RoleName>().is_err());
        assert_eq!("reader".parse::<RoleName>().unwrap(), RoleName::READER);
        assert!(matches!(
            Roles::new([("A", 0), ("a", 1)]),
            Err(AclError::DuplicateRole { .. })
        ));
        assert!(matches!(
            Roles::new(Vec::<(&str, u32)>::new()),
            Err(AclError::RoleCount { count: 0, .. })
        ));
        let err = Roles::teletraan().get("ROOT").unwrap_err();
        assert!(err.to_string().contains("READER, PINGER"), "{err}");
    }
}
