//! What each action needs: the role set, the action → required-role table per resource kind,
//! and the resource hierarchy, bundled so they always agree.

use hashbrown::HashMap;
use portcullis_core::{Action, ResourceKind};

use crate::role::RoleRef;
use crate::{AclError, Hierarchy, Role, RoleName, Roles};

/// The rules a [`RoleAuthorizer`](crate::RoleAuthorizer) applies: which [`Roles`] exist,
/// which role each action needs on each kind of resource, and which resources contain which.
///
/// ```
/// use portcullis_acl::{AclPolicy, Hierarchy, Roles};
/// use portcullis_core::{Action, ResourceKind};
///
/// let teletraan = AclPolicy::teletraan();
/// assert_eq!(
///     teletraan.required_role(&ResourceKind::ENV, &Action::DEPLOY).unwrap().name().as_str(),
///     "OPERATOR"
/// );
///
/// let custom = AclPolicy::builder(Roles::new([("VIEWER", 0), ("EDITOR", 5)])?)
///     .require(Action::READ, "VIEWER")?
///     .require_on("dataset".parse()?, "write".parse()?, "EDITOR")?
///     .hierarchy(Hierarchy::flat())
///     .build();
/// assert!(custom.required_role(&ResourceKind::ENV, &"write".parse()?).is_none());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct AclPolicy {
    roles: Roles,
    any_kind: HashMap<Action, RoleRef>,
    by_kind: HashMap<ResourceKind, HashMap<Action, RoleRef>>,
    hierarchy: Hierarchy,
}

impl AclPolicy {
    /// Teletraan's rules: its roles and hierarchy, and read = READER, ping = PINGER,
    /// publish_build = PUBLISHER, deploy = OPERATOR, manage_roles and manage_tokens = ADMIN,
    /// on every kind of resource.
    #[must_use]
    pub fn teletraan() -> Self {
        let roles = Roles::teletraan();
        let table = [
            (Action::READ, RoleName::READER),
            (Action::PING, RoleName::PINGER),
            (Action::PUBLISH_BUILD, RoleName::PUBLISHER),
            (Action::DEPLOY, RoleName::OPERATOR),
            (Action::MANAGE_ROLES, RoleName::ADMIN),
            (Action::MANAGE_TOKENS, RoleName::ADMIN),
        ];
        let any_kind = table
            .into_iter()
            .filter_map(|(action, role)| Some((action, roles.resolve(&role).ok()?)))
            .collect();
        AclPolicy {
            roles,
            any_kind,
            by_kind: HashMap::new(),
            hierarchy: Hierarchy::teletraan(),
        }
    }

    /// Starts a policy over `roles` with no requirements (so every action is refused until
    /// one is added) and a flat hierarchy.
    pub fn builder(roles: Roles) -> AclPolicyBuilder {
        AclPolicyBuilder {
            policy: AclPolicy {
                roles,
                any_kind: HashMap::new(),
                by_kind: HashMap::new(),
                hierarchy: Hierarchy::flat(),
            },
        }
    }

    /// The same policy with another resource hierarchy.
    #[must_use]
    pub fn with_hierarchy(mut self, hierarchy: Hierarchy) -> Self {
        self.hierarchy = hierarchy;
        self
    }

    /// The role set.
    #[must_use]
    pub fn roles(&self) -> &Roles {
        &self.roles
    }

    /// The resource hierarchy.
    #[must_use]
    pub fn hierarchy(&self) -> &Hierarchy {
        &self.hierarchy
    }

    /// The role `action` needs on a resource of `kind`: the kind's own entry, else the
    /// entry for every kind, else `None` (the action is refused).
    #[must_use]
    pub fn required_role(&self, kind: &ResourceKind, action: &Action) -> Option<&Role> {
        self.required(kind, action)
            .and_then(|role| self.roles.role(role))
    }

    /// Every action with a requirement on a resource of `kind`, with the role it needs there
    /// (the kind's own entry wins over the entry for every kind).
    pub(crate) fn actions_for<'a>(
        &'a self,
        kind: &'a ResourceKind,
    ) -> impl Iterator<Item = (&'a Action, RoleRef)> + 'a {
        let own = self.by_kind.get(kind);
        let general = self
            .any_kind
            .iter()
            .filter(move |(action, _)| own.is_none_or(|own| !own.contains_key(*action)));
        own.into_iter()
            .flatten()
            .chain(general)
            .map(|(action, role)| (action, *role))
    }

    pub(crate) fn required(&self, kind: &ResourceKind, action: &Action) -> Option<RoleRef> {
        self.by_kind
            .get(kind)
            .and_then(|actions| actions.get(action))
            .or_else(|| self.any_kind.get(action))
            .copied()
    }
}

impl Default for AclPolicy {
    fn default() -> Self {
        AclPolicy::teletraan()
    }
}

/// Builds an [`AclPolicy`]; see [`AclPolicy::builder`].
#[derive(Debug, Clone)]
#[must_use]
pub struct AclPolicyBuilder {
    policy: AclPolicy,
}

impl AclPolicyBuilder {
    /// `action` needs `role` on every kind of resource (unless a kind says otherwise).
    ///
    /// # Errors
    ///
    /// If `role` is not in the role set.
    pub fn require(mut self, action: Action, role: &str) -> Result<Self, AclError> {
        let role = self.policy.roles.resolve(&role.parse()?)?;
        self.policy.any_kind.insert(action, role);
        Ok(self)
    }

    /// `action` needs `role` on resources of `kind`.
    ///
    /// # Errors
    ///
    /// If `role` is not in the role set.
    pub fn require_on(
        mut self,
        kind: ResourceKind,
        action: Action,
        role: &str,
    ) -> Result<Self, AclError> {
        let role = self.policy.roles.resolve(&role.parse()?)?;
        self.policy
            .by_kind
            .entry(kind)
            .or_default()
            .insert(action, role);
        Ok(self)
    }

    /// Sets the resource hierarchy.
    pub fn hierarchy(mut self, hierarchy: Hierarchy) -> Self {
        self.policy.hierarchy = hierarchy;
        self
    }

    /// The policy.
    #[must_use]
    pub fn build(self) -> AclPolicy {
        self.policy
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_entries_override_the_default() {
        let policy = AclPolicy::builder(Roles::teletraan())
            .require(Action::DEPLOY, "OPERATOR")
            .unwrap()
            .require_on(ResourceKind::ENV_STAGE, Action::DEPLOY, "ADMIN")
            .unwrap()
            .build();
        let name = |kind: &ResourceKind| {
            policy
                .required_role(kind, &Action::DEPLOY)
                .map(|r| r.name().to_string())
        };
        assert_eq!(name(&ResourceKind::ENV).as_deref(), Some("OPERATOR"));
        assert_eq!(name(&ResourceKind::ENV_STAGE).as_deref(), Some("ADMIN"));
        assert!(
            policy
                .required_role(&ResourceKind::ENV, &Action::READ)
                .is_none()
        );
        assert!(matches!(
            AclPolicy::builder(Roles::teletraan()).require(Action::READ, "ROOT"),
            Err(AclError::UnknownRole { .. })
        ));
    }

    #[test]
    fn teletraan_table() {
        let p = AclPolicy::teletraan();
        for (action, role) in [
            (Action::READ, "READER"),
            (Action::PING, "PINGER"),
            (Action::PUBLISH_BUILD, "PUBLISHER"),
            (Action::DEPLOY, "OPERATOR"),
            (Action::MANAGE_ROLES, "ADMIN"),
            (Action::MANAGE_TOKENS, "ADMIN"),
        ] {
            let got = p.required_role(&ResourceKind::BUILD, &action).unwrap();
            assert_eq!(got.name().as_str(), role);
        }
    }
}
