//! The reverse questions a management page asks of a snapshot: what may this principal do
//! ([`AclSnapshot::permissions_of`]), and who may do this action here
//! ([`AclSnapshot::holders_of`]) — as casbin's `get_implicit_permissions_for_user` and
//! `get_implicit_users_for_permission` do.

use std::collections::HashMap;

use portcullis_core::{Action, Principal, Resource, ResourceKind};

use crate::role::RoleRef;
use crate::snapshot::AclSnapshot;
use crate::{RoleBinding, Subject};

/// One binding a principal holds (itself or through one of its groups) and the actions its
/// role allows on the binding's resource. The grant also reaches the resources below that
/// one in the hierarchy, where the actions allowed follow each resource's kind.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Permission {
    /// The granting binding: its subject is the principal or one of its groups.
    pub binding: RoleBinding,
    /// The actions the role allows on a resource of the binding's kind, sorted.
    pub actions: Vec<Action>,
}

/// A binding that lets its subject perform an action on a resource: on the resource itself,
/// an ancestor, or `system:*`. A group's members are not listed (the ACL does not know
/// them): the group is.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Holding {
    /// The binding: who, which role, where.
    pub binding: RoleBinding,
}

impl AclSnapshot {
    /// Everything `principal` may do: each binding it holds, directly or through its
    /// groups, with the actions the role allows there. Sorted by resource, then subject.
    /// Reads only the principal's own bindings and those of its groups (an index by
    /// subject), so it costs the same on a million bindings as on ten.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use portcullis_acl::{AclPolicy, AclSnapshot, RoleBinding};
    /// use portcullis_core::{Action, AuthMethod, Principal, PrincipalKind};
    /// let snapshot = AclSnapshot::build(Arc::new(AclPolicy::teletraan()), 1, [
    ///     "user:alice env:checkout OPERATOR".parse::<RoleBinding>()?,
    ///     "group:sre system:* READER".parse()?,
    /// ])?;
    /// let alice = Principal::builder(PrincipalKind::User, "alice", AuthMethod::OIDC)
    ///     .group("sre")
    ///     .build()?;
    /// let permissions = snapshot.permissions_of(&alice);
    /// assert_eq!(permissions.len(), 2);
    /// assert!(permissions[0].actions.contains(&Action::DEPLOY));
    /// assert_eq!(permissions[1].binding.subject.to_string(), "group:sre");
    /// assert_eq!(permissions[1].actions, [Action::READ]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn permissions_of(&self, principal: &Principal) -> Vec<Permission> {
        let mut subjects: Vec<Subject> = Subject::of_principal(principal).into_iter().collect();
        subjects.extend(principal.groups().filter_map(|g| Subject::group(g).ok()));
        // The actions a role allows depend only on (resource kind, role): worked out once.
        let mut allowed: HashMap<(&ResourceKind, RoleRef), Vec<Action>> = HashMap::new();
        let mut found: Vec<Permission> = subjects
            .iter()
            .flat_map(|subject| self.grants_of(subject))
            .filter_map(|(subject, resource, role)| {
                let name = self.policy().roles().role(role)?.name().clone();
                let actions = allowed
                    .entry((resource.kind(), role))
                    .or_insert_with(|| self.actions_allowed(resource, role))
                    .clone();
                Some(Permission {
                    actions,
                    binding: RoleBinding::new(subject.clone(), resource.clone(), name),
                })
            })
            .collect();
        found.sort_unstable_by(|a, b| {
            (&a.binding.resource, &a.binding.subject)
                .cmp(&(&b.binding.resource, &b.binding.subject))
        });
        found
    }

    /// Who may perform `action` on `resource`: every binding on the resource, its ancestors
    /// or `system:*` whose role satisfies the role the action needs there, nearest resource
    /// first, then by subject. Empty when the policy requires no role for it (nobody may).
    /// Reads only the bindings on the resource's chain.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use portcullis_acl::{AclPolicy, AclSnapshot, RoleBinding};
    /// use portcullis_core::{Action, Resource};
    /// let snapshot = AclSnapshot::build(Arc::new(AclPolicy::teletraan()), 1, [
    ///     "user:alice env:checkout OPERATOR".parse::<RoleBinding>()?,
    ///     "user:bob env:checkout READER".parse()?,
    ///     "group:sre system:* ADMIN".parse()?,
    /// ])?;
    /// let stage: Resource = "env_stage:checkout/prod".parse()?;
    /// let who: Vec<String> = snapshot
    ///     .holders_of(&Action::DEPLOY, &stage)
    ///     .iter()
    ///     .map(|h| h.binding.subject.to_string())
    ///     .collect();
    /// assert_eq!(who, ["user:alice", "group:sre"]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn holders_of(&self, action: &Action, resource: &Resource) -> Vec<Holding> {
        let Some(required) = self.policy().required(resource.kind(), action) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        self.policy()
            .hierarchy()
            .find_in_chain::<()>(resource, |at| {
                let Ok(on) = at.to_owned() else { return None };
                let mut here: Vec<Holding> = self
                    .grants_on(&on)
                    .filter(|(_, role)| role.satisfies(required))
                    .filter_map(|(subject, role)| {
                        let name = self.policy().roles().role(role)?.name().clone();
                        Some(Holding {
                            binding: RoleBinding::new(subject, on.clone(), name),
                        })
                    })
                    .collect();
                here.sort_unstable_by(|a, b| a.binding.subject.cmp(&b.binding.subject));
                out.extend(here);
                None
            });
        out
    }

    /// The actions `role` allows on a resource of `resource`'s kind, sorted.
    fn actions_allowed(&self, resource: &Resource, role: RoleRef) -> Vec<Action> {
        let mut actions: Vec<Action> = self
            .policy()
            .actions_for(resource.kind())
            .filter(|(_, required)| role.satisfies(*required))
            .map(|(action, _)| action.clone())
            .collect();
        actions.sort();
        actions.dedup();
        actions
    }
}
