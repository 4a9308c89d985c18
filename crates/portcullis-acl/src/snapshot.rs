//! The immutable, indexed view of all role bindings that checks read.

use std::fmt;
use std::sync::Arc;

use hashbrown::HashMap;
use portcullis_core::{Principal, Resource};

use crate::hierarchy::ResourceRef;
use crate::role::RoleRef;
use crate::{AclError, AclPolicy, Role, RoleBinding, Subject, SubjectKind};

/// The role bindings on one resource, by subject kind.
#[derive(Debug, Default)]
struct Grants {
    users: HashMap<String, RoleRef>,
    services: HashMap<String, RoleRef>,
    tokens: HashMap<String, RoleRef>,
    groups: HashMap<String, RoleRef>,
}

impl Grants {
    fn of_kind(&self, kind: SubjectKind) -> &HashMap<String, RoleRef> {
        match kind {
            SubjectKind::User => &self.users,
            SubjectKind::Service => &self.services,
            SubjectKind::Token => &self.tokens,
            SubjectKind::Group => &self.groups,
        }
    }

    fn of_kind_mut(&mut self, kind: SubjectKind) -> &mut HashMap<String, RoleRef> {
        match kind {
            SubjectKind::User => &mut self.users,
            SubjectKind::Service => &mut self.services,
            SubjectKind::Token => &mut self.tokens,
            SubjectKind::Group => &mut self.groups,
        }
    }

    /// Calls `visit` for each grant here that `principal` holds, directly or through one of
    /// its groups, until `visit` returns `Some`. Group grants are matched from whichever side
    /// is smaller: the resource's group bindings or the principal's groups.
    fn find_held<'a, T>(
        &'a self,
        principal: &'a Principal,
        mut visit: impl FnMut(Holder<'a>, RoleRef) -> Option<T>,
    ) -> Option<T> {
        if let Some(kind) = SubjectKind::of_principal(principal.kind())
            && let Some(role) = self.of_kind(kind).get(principal.subject())
            && let Some(found) = visit(Holder::Direct(kind), *role)
        {
            return Some(found);
        }
        if self.groups.is_empty() || principal.groups().len() == 0 {
            return None;
        }
        if self.groups.len() <= principal.groups().len() {
            self.groups
                .iter()
                .filter(|(group, _)| principal.in_group(group))
                .find_map(|(group, role)| visit(Holder::Group(group), *role))
        } else {
            principal.groups().find_map(|group| {
                let (group, role) = self.groups.get_key_value(group)?;
                visit(Holder::Group(group), *role)
            })
        }
    }
}

/// Through which subject a principal holds a grant.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Holder<'a> {
    /// The principal's own subject (`user:NAME`, `token:NAME`, …).
    Direct(SubjectKind),
    /// One of its groups.
    Group(&'a str),
}

/// A grant found for a principal: who holds which role where.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Found<'a> {
    pub(crate) holder: Holder<'a>,
    pub(crate) resource: ResourceRef<'a>,
    pub(crate) role: RoleRef,
}

impl Found<'_> {
    /// Appends `group:deployers holds OPERATOR on env:checkout` (or the direct form) to
    /// `out`. Written with `push_str` rather than `format!`: this runs on every allowed
    /// check, and the formatting machinery was most of its cost.
    pub(crate) fn describe_into(
        &self,
        out: &mut String,
        principal: &Principal,
        policy: &AclPolicy,
    ) {
        let role = policy.roles().name_of(self.role);
        match self.holder {
            Holder::Direct(kind) => {
                push_all(out, &[kind.as_str(), ":", principal.subject()]);
            }
            Holder::Group(group) => {
                push_all(
                    out,
                    &[
                        principal.kind().as_str(),
                        ":",
                        principal.subject(),
                        " is in group:",
                        group,
                        ", which",
                    ],
                );
            }
        }
        push_all(
            out,
            &[
                " holds ",
                role,
                " on ",
                self.resource.kind.as_str(),
                ":",
                self.resource.id,
            ],
        );
    }
}

/// Appends every piece to `out`.
pub(crate) fn push_all(out: &mut String, pieces: &[&str]) {
    for piece in pieces {
        out.push_str(piece);
    }
}

/// A principal's strongest role on a resource, and where it comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EffectiveRole {
    /// The role.
    pub role: Role,
    /// The subject the binding is for: the principal itself or one of its groups.
    pub via: Subject,
    /// The resource the binding is on: the resource asked about, an ancestor, or `system:*`.
    pub on: Resource,
}

/// An immutable, indexed copy of every role binding, built against one [`AclPolicy`].
///
/// Checks read a snapshot and never the store; a store change produces a new snapshot that
/// replaces the old one atomically (see [`Acl`](crate::Acl)).
pub struct AclSnapshot {
    policy: Arc<AclPolicy>,
    revision: u64,
    by_resource: HashMap<Resource, Grants>,
    by_subject: HashMap<Subject, Vec<(Resource, RoleRef)>>,
    len: usize,
}

impl fmt::Debug for AclSnapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AclSnapshot")
            .field("revision", &self.revision)
            .field("bindings", &self.len)
            .field("resources", &self.by_resource.len())
            .finish_non_exhaustive()
    }
}

impl AclSnapshot {
    /// Indexes `bindings` (the store's contents at `revision`) under `policy`.
    ///
    /// # Errors
    ///
    /// A binding whose role the policy does not define, or two bindings for one subject on
    /// one resource.
    pub fn build(
        policy: Arc<AclPolicy>,
        revision: u64,
        bindings: impl IntoIterator<Item = RoleBinding>,
    ) -> Result<Self, AclError> {
        let mut snapshot = AclSnapshot {
            policy,
            revision,
            by_resource: HashMap::new(),
            by_subject: HashMap::new(),
            len: 0,
        };
        for binding in bindings {
            let role = snapshot.policy.roles().resolve(&binding.role)?;
            let grants = snapshot
                .by_resource
                .entry(binding.resource.clone())
                .or_default();
            let by_kind = grants.of_kind_mut(binding.subject.kind());
            if by_kind.contains_key(binding.subject.name()) {
                return Err(AclError::DuplicateBinding {
                    subject: binding.subject,
                    resource: binding.resource,
                });
            }
            by_kind.insert(binding.subject.name().to_owned(), role);
            snapshot
                .by_subject
                .entry(binding.subject)
                .or_default()
                .push((binding.resource, role));
            snapshot.len += 1;
        }
        Ok(snapshot)
    }

    /// An empty snapshot (nothing granted) under `policy`.
    #[must_use]
    pub fn empty(policy: Arc<AclPolicy>) -> Self {
        AclSnapshot {
            policy,
            revision: 0,
            by_resource: HashMap::new(),
            by_subject: HashMap::new(),
            len: 0,
        }
    }

    /// The store revision this snapshot reflects.
    #[must_use]
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// The number of bindings.
    #[must_use]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are no bindings (nothing is granted).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The policy the snapshot was built under.
    #[must_use]
    pub fn policy(&self) -> &AclPolicy {
        &self.policy
    }

    /// The bindings of `subject` as (subject, resource, role), from the index by subject.
    pub(crate) fn grants_of<'a>(
        &'a self,
        subject: &'a Subject,
    ) -> impl Iterator<Item = (&'a Subject, &'a Resource, RoleRef)> + 'a {
        self.by_subject
            .get_key_value(subject)
            .into_iter()
            .flat_map(|(subject, grants)| grants.iter().map(move |(r, role)| (subject, r, *role)))
    }

    /// Every binding on `resource` itself, as (subject, role).
    pub(crate) fn grants_on<'a>(
        &'a self,
        resource: &Resource,
    ) -> impl Iterator<Item = (Subject, RoleRef)> + 'a {
        self.by_resource
            .get(resource)
            .into_iter()
            .flat_map(|grants| {
                [
                    SubjectKind::User,
                    SubjectKind::Service,
                    SubjectKind::Token,
                    SubjectKind::Group,
                ]
                .into_iter()
                .flat_map(move |kind| {
                    grants
                        .of_kind(kind)
                        .iter()
                        .map(move |(name, role)| (Subject::indexed(kind, name), *role))
                })
            })
    }

    /// The bindings of one subject, in no particular order.
    pub fn bindings_of<'a>(
        &'a self,
        subject: &'a Subject,
    ) -> impl Iterator<Item = RoleBinding> + 'a {
        self.by_subject
            .get(subject)
            .into_iter()
            .flatten()
            .filter_map(move |(resource, role)| {
                let role = self.policy.roles().role(*role)?;
                Some(RoleBinding::new(
                    subject.clone(),
                    resource.clone(),
                    role.name().clone(),
                ))
            })
    }

    /// The strongest role `principal` holds on `resource` (directly, through a group, on an
    /// ancestor or on `system:*`), if any.
    #[must_use]
    pub fn effective_role(
        &self,
        principal: &Principal,
        resource: &Resource,
    ) -> Option<EffectiveRole> {
        let best = self.strongest(principal, resource)?;
        let via = match best.holder {
            Holder::Direct(_) => Subject::of_principal(principal)?,
            Holder::Group(group) => Subject::group(group).ok()?,
        };
        Some(EffectiveRole {
            role: self.policy.roles().role(best.role)?.clone(),
            via,
            on: best.resource.to_owned().ok()?,
        })
    }

    /// The first grant, nearest resource first, that satisfies `required`.
    pub(crate) fn find_satisfying<'a>(
        &'a self,
        principal: &'a Principal,
        resource: &'a Resource,
        required: RoleRef,
    ) -> Option<Found<'a>> {
        self.policy.hierarchy().find_in_chain(resource, |at| {
            let grants = self.by_resource.get(&at)?;
            grants.find_held(principal, |holder, role| {
                role.satisfies(required).then_some(Found {
                    holder,
                    resource: at,
                    role,
                })
            })
        })
    }

    /// One walk of the chain for a check: the first grant that satisfies `required`, or else
    /// the highest-tier grant held (for the refusal's reason), or nothing.
    pub(crate) fn judge<'a>(
        &'a self,
        principal: &'a Principal,
        resource: &'a Resource,
        required: RoleRef,
    ) -> Result<Found<'a>, Option<Found<'a>>> {
        let mut best: Option<Found<'a>> = None;
        let satisfying = self.policy.hierarchy().find_in_chain(resource, |at| {
            let grants = self.by_resource.get(&at)?;
            grants.find_held(principal, |holder, role| {
                let found = Found {
                    holder,
                    resource: at,
                    role,
                };
                if role.satisfies(required) {
                    return Some(found);
                }
                if best.is_none_or(|b| role.outranks(b.role)) {
                    best = Some(found);
                }
                None
            })
        });
        satisfying.ok_or(best)
    }

    /// The highest-tier grant `principal` holds anywhere in `resource`'s chain.
    pub(crate) fn strongest<'a>(
        &'a self,
        principal: &'a Principal,
        resource: &'a Resource,
    ) -> Option<Found<'a>> {
        let mut best: Option<Found<'a>> = None;
        self.policy.hierarchy().find_in_chain::<()>(resource, |at| {
            if let Some(grants) = self.by_resource.get(&at) {
                grants.find_held::<()>(principal, |holder, role| {
                    if best.is_none_or(|b| role.outranks(b.role)) {
                        best = Some(Found {
                            holder,
                            resource: at,
                            role,
                        });
                    }
                    None
                });
            }
            None
        });
        best
    }
}
