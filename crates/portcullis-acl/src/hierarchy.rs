//! Which resources contain which: a grant on a parent applies to its children.

use std::hash::{Hash, Hasher};

use hashbrown::{Equivalent, HashMap};
use portcullis_core::{Resource, ResourceKind};
use serde::{Deserialize, Serialize};

use crate::AclError;

/// Longest chain of parents followed from a resource. Rules always shorten the id and edges
/// are checked for cycles, so this bound only matters for a mix of both.
const MAX_DEPTH: usize = 16;

/// `system:*` with a `'static` address, for borrowed lookups.
static SYSTEM: Resource = Resource::SYSTEM;

/// A borrowed resource, to look resources up without allocating.
///
/// Its `Hash` mirrors the derived `Hash` of [`Resource`] (kind, then id, each as `str`), so
/// it finds `Resource` keys in a hashbrown map; a unit test guards that equivalence.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ResourceRef<'a> {
    pub(crate) kind: &'a ResourceKind,
    pub(crate) id: &'a str,
}

impl<'a> ResourceRef<'a> {
    pub(crate) fn of(resource: &'a Resource) -> Self {
        ResourceRef {
            kind: resource.kind(),
            id: resource.id(),
        }
    }

    pub(crate) fn to_owned(self) -> Result<Resource, AclError> {
        Ok(Resource::new(self.kind.clone(), self.id)?)
    }

    pub(crate) fn is_system(self) -> bool {
        *self.kind == ResourceKind::SYSTEM
    }
}

impl Hash for ResourceRef<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.kind.hash(state);
        self.id.hash(state);
    }
}

impl Equivalent<Resource> for ResourceRef<'_> {
    fn equivalent(&self, key: &Resource) -> bool {
        self.kind == key.kind() && self.id == key.id()
    }
}

impl std::fmt::Display for ResourceRef<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.kind, self.id)
    }
}

/// A rule deriving the parent of every resource of one kind from its id: the parent of
/// `child:A<sep>B` is `parent:A` (split at the *last* separator). Teletraan's stages are the
/// example: the parent of `env_stage:checkout/prod` is `env:checkout`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParentRule {
    /// The kind whose parent this rule gives.
    pub child: ResourceKind,
    /// The kind of the parent.
    pub parent: ResourceKind,
    /// Where the parent's id ends in the child's id.
    pub separator: char,
}

/// The containment relation between resources, declared explicitly: by [`ParentRule`]s per
/// kind and by individual edges. `system:*` contains everything and needs no declaration.
///
/// ```
/// use portcullis_acl::Hierarchy;
/// use portcullis_core::Resource;
/// let mut h = Hierarchy::teletraan();
/// h.add_edge("build:checkout-1234".parse()?, "env:checkout".parse()?)?;
/// let chain: Vec<String> = h.ancestors(&"env_stage:checkout/prod".parse()?)
///     .iter().map(ToString::to_string).collect();
/// assert_eq!(chain, ["env_stage:checkout/prod", "env:checkout", "system:*"]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hierarchy {
    rules: Vec<ParentRule>,
    edges: HashMap<Resource, Resource>,
}

impl Hierarchy {
    /// No containment besides `system:*`.
    #[must_use]
    pub fn flat() -> Self {
        Hierarchy::default()
    }

    /// Teletraan's: a stage `env_stage:ENV/STAGE` is in `env:ENV`.
    #[must_use]
    pub fn teletraan() -> Self {
        Hierarchy {
            rules: vec![ParentRule {
                child: ResourceKind::ENV_STAGE,
                parent: ResourceKind::ENV,
                separator: '/',
            }],
            edges: HashMap::new(),
        }
    }

    /// Adds a rule; rules are tried in order, after explicit edges.
    #[must_use]
    pub fn with_rule(mut self, rule: ParentRule) -> Self {
        self.rules.push(rule);
        self
    }

    /// Declares that `child` is inside `parent`.
    ///
    /// # Errors
    ///
    /// If either is `system:*`, if `child` already has a parent edge, or if the edge would
    /// close a cycle.
    pub fn add_edge(&mut self, child: Resource, parent: Resource) -> Result<(), AclError> {
        let invalid = |reason: String| Err(AclError::InvalidHierarchy { reason });
        if child.is_system() || parent.is_system() {
            return invalid("system:* contains everything and takes no edges".into());
        }
        if let Some(existing) = self.edges.get(&child) {
            return invalid(format!("{child} already has the parent {existing}"));
        }
        let mut cursor = Some(ResourceRef::of(&parent));
        for _ in 0..MAX_DEPTH {
            let Some(current) = cursor else { break };
            if current.equivalent(&child) {
                return invalid(format!("{child} inside {parent} would be a cycle"));
            }
            cursor = self.parent(current);
        }
        self.edges.insert(child, parent);
        Ok(())
    }

    /// The direct parent of `resource`, if declared.
    pub(crate) fn parent<'a>(&'a self, resource: ResourceRef<'a>) -> Option<ResourceRef<'a>> {
        if let Some(parent) = self.edges.get(&resource) {
            return Some(ResourceRef::of(parent));
        }
        self.rules
            .iter()
            .filter(|rule| &rule.child == resource.kind)
            .find_map(|rule| {
                let (parent_id, _) = resource.id.rsplit_once(rule.separator)?;
                (!parent_id.is_empty()).then_some(ResourceRef {
                    kind: &rule.parent,
                    id: parent_id,
                })
            })
    }

    /// Calls `visit` on `resource`, its ancestors nearest first, then `system:*`, stopping
    /// early when `visit` returns `Some`.
    pub(crate) fn find_in_chain<'a, T>(
        &'a self,
        resource: &'a Resource,
        mut visit: impl FnMut(ResourceRef<'a>) -> Option<T>,
    ) -> Option<T> {
        let mut cursor = Some(ResourceRef::of(resource));
        for _ in 0..MAX_DEPTH {
            let Some(current) = cursor else { break };
            if current.is_system() {
                break;
            }
            if let Some(found) = visit(current) {
                return Some(found);
            }
            cursor = self.parent(current);
        }
        visit(ResourceRef::of(&SYSTEM))
    }

    /// `resource`, its ancestors nearest first, and `system:*`.
    #[must_use]
    pub fn ancestors(&self, resource: &Resource) -> Vec<Resource> {
        let mut chain = Vec::new();
        self.find_in_chain::<()>(resource, |r| {
            if let Ok(owned) = r.to_owned() {
                chain.push(owned);
            }
            None
        });
        chain
    }

    /// The rules, in order.
    #[must_use]
    pub fn rules(&self) -> &[ParentRule] {
        &self.rules
    }

    /// The explicit edges, child to parent.
    pub fn edges(&self) -> impl Iterator<Item = (&Resource, &Resource)> + '_ {
        self.edges.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::BuildHasher;

    fn r(s: &str) -> Resource {
        s.parse().unwrap()
    }

    #[test]
    fn borrowed_lookup_hashes_like_resource() {
        let state = hashbrown::DefaultHashBuilder::default();
        for text in ["env:checkout", "env_stage:a/b", "system:*", "x:ü:é"] {
            let owned = r(text);
            assert_eq!(
                state.hash_one(&owned),
                state.hash_one(ResourceRef::of(&owned)),
                "{text}"
            );
        }
        let mut map = HashMap::new();
        map.insert(r("env:checkout"), 1);
        let kind = ResourceKind::ENV;
        assert_eq!(
            map.get(&ResourceRef {
                kind: &kind,
                id: "checkout"
            }),
            Some(&1)
        );
    }

    #[test]
    fn rules_split_at_the_last_separator() {
        let h = Hierarchy::teletraan().with_rule(ParentRule {
            child: ResourceKind::ENV,
            parent: "org".parse().unwrap(),
            separator: '.',
        });
        let chain = h.ancestors(&r("env_stage:payments.checkout/blue/prod"));
        let chain: Vec<_> = chain.iter().map(ToString::to_string).collect();
        assert_eq!(
            chain,
            [
                "env_stage:payments.checkout/blue/prod",
                "env:payments.checkout/blue",
                "org:payments",
                "system:*"
            ]
        );
        assert_eq!(
            h.ancestors(&r("env:payments.checkout"))
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
            ["env:payments.checkout", "org:payments", "system:*"]
        );
        assert_eq!(h.ancestors(&r("env_stage:/prod")).len(), 2);
        assert_eq!(h.ancestors(&Resource::SYSTEM), [Resource::SYSTEM]);
    }

    #[test]
    fn edges_reject_cycles_and_system() {
        let mut h = Hierarchy::flat();
        h.add_edge(r("group:web"), r("env:checkout")).unwrap();
        h.add_edge(r("env:checkout"), r("org:payments")).unwrap();
        assert!(h.add_edge(r("org:payments"), r("group:web")).is_err());
        assert!(h.add_edge(r("group:web"), r("org:other")).is_err());
        assert!(h.add_edge(Resource::SYSTEM, r("env:x")).is_err());
        assert_eq!(h.ancestors(&r("group:web")).len(), 4);
    }
}
