//! A role binding: a subject holds a role on a resource.

use std::fmt;
use std::str::FromStr;

use portcullis_core::Resource;
use serde::{Deserialize, Serialize};

use crate::{AclError, RoleName, Subject};

/// `subject` holds `role` on `resource` (and, through the hierarchy, on its children; on
/// everything if `resource` is `system:*`). A subject has at most one role per resource.
///
/// The line form is `SUBJECT RESOURCE ROLE`, e.g. `group:deployers env:checkout OPERATOR`;
/// the JSON form is `{"subject": "group:deployers", "resource": "env:checkout", "role":
/// "OPERATOR"}`.
///
/// ```
/// use portcullis_acl::RoleBinding;
/// let b: RoleBinding = "group:deployers env:checkout operator".parse()?;
/// assert_eq!(b.to_string(), "group:deployers env:checkout OPERATOR");
/// # Ok::<(), portcullis_acl::AclError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleBinding {
    /// Who holds the role.
    pub subject: Subject,
    /// Where.
    pub resource: Resource,
    /// Which role (validated against a [`Roles`](crate::Roles) set when it is used).
    pub role: RoleName,
}

impl RoleBinding {
    /// A binding.
    #[must_use]
    pub fn new(subject: Subject, resource: Resource, role: RoleName) -> Self {
        RoleBinding {
            subject,
            resource,
            role,
        }
    }
}

impl FromStr for RoleBinding {
    type Err = AclError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let mut parts = input.split_whitespace();
        match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some(subject), Some(resource), Some(role), None) => Ok(RoleBinding {
                subject: subject.parse()?,
                resource: resource.parse()?,
                role: role.parse()?,
            }),
            _ => Err(AclError::InvalidBinding {
                input: input.chars().take(64).collect(),
            }),
        }
    }
}

impl fmt::Display for RoleBinding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {}", self.subject, self.resource, self.role)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_form() {
        let b: RoleBinding = "  user:alice\tenv_stage:checkout/prod ADMIN "
            .parse()
            .unwrap();
        assert_eq!(b.to_string(), "user:alice env_stage:checkout/prod ADMIN");
        for bad in [
            "",
            "user:alice env:x",
            "user:alice env:x ADMIN extra",
            "alice env:x ADMIN",
            "user:alice env:* ADMIN",
            "user:alice env:x AD-MIN",
        ] {
            assert!(bad.parse::<RoleBinding>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn json_form() {
        let b: RoleBinding = serde_json::from_str(
            r#"{"subject":"token:ci","resource":{"kind":"env","id":"x"},"role":"operator"}"#,
        )
        .unwrap();
        assert_eq!(b.to_string(), "token:ci env:x OPERATOR");
        assert!(
            serde_json::from_str::<RoleBinding>(
                r#"{"subject":"token:ci","resource":"env:x","role":"OPERATOR","x":1}"#
            )
            .is_err()
        );
    }
}
