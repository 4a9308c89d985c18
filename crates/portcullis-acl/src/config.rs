//! The ACL configuration file: roles, requirements, hierarchy and seed bindings, in TOML or
//! JSON. Every section may be left out; what is left out takes Teletraan's defaults, and
//! nothing is granted that the file does not bind.

use std::collections::{BTreeMap, HashSet};

use portcullis_core::{Action, Resource, ResourceKind};
use serde::{Deserialize, Serialize};

use crate::{AclError, AclPolicy, Hierarchy, ParentRule, Role, RoleBinding, RoleName, Roles};

/// An ACL configuration, as written in a file.
///
/// ```toml
/// # Optional: the role set (default: Teletraan's READER..ADMIN).
/// roles = [
///   { name = "READER", tier = 0 },
///   { name = "OPERATOR", tier = 10 },
///   { name = "ADMIN", tier = 20 },
/// ]
///
/// # Required with custom roles; default: Teletraan's table.
/// [requirements.any]
/// read = "READER"
/// deploy = "OPERATOR"
/// manage_roles = "ADMIN"
/// [requirements.kinds.env_stage]
/// deploy = "ADMIN"          # stages are stricter than their environments
///
/// # Optional: default is Teletraan's (env_stage:ENV/STAGE is inside env:ENV).
/// [hierarchy]
/// rules = [{ child = "env_stage", parent = "env", separator = "/" }]
/// edges = [{ child = "group:web", parent = "env:checkout" }]
///
/// # Seed bindings: `SUBJECT RESOURCE ROLE` lines, or tables.
/// [bindings]
/// lines = ["group:platform system:* ADMIN", "group:deployers env:checkout OPERATOR"]
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AclConfig {
    /// The role set; Teletraan's when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub roles: Option<Vec<Role>>,
    /// The action → role table; Teletraan's when absent (only allowed with Teletraan's roles).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requirements: Option<RequirementsConfig>,
    /// The resource hierarchy; Teletraan's when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hierarchy: Option<HierarchyConfig>,
    /// Bindings to seed a store with.
    #[serde(default)]
    pub bindings: BindingsConfig,
}

/// The `[requirements]` section.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequirementsConfig {
    /// Action → role on every kind of resource.
    #[serde(default)]
    pub any: BTreeMap<Action, RoleName>,
    /// Kind → action → role, overriding `any` for that kind.
    #[serde(default)]
    pub kinds: BTreeMap<ResourceKind, BTreeMap<Action, RoleName>>,
}

/// The `[hierarchy]` section.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HierarchyConfig {
    /// Parent rules per kind.
    #[serde(default)]
    pub rules: Vec<ParentRule>,
    /// Explicit child → parent edges.
    #[serde(default)]
    pub edges: Vec<EdgeConfig>,
}

/// One explicit hierarchy edge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EdgeConfig {
    /// The contained resource.
    pub child: Resource,
    /// The containing resource.
    pub parent: Resource,
}

/// The `[bindings]` section: lines, tables, or both.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BindingsConfig {
    /// `SUBJECT RESOURCE ROLE` lines.
    #[serde(default)]
    pub lines: Vec<String>,
    /// Bindings as tables.
    #[serde(default)]
    pub tables: Vec<RoleBinding>,
}

/// A validated configuration: the policy, and bindings whose roles exist and that bind no
/// subject twice on one resource.
#[derive(Debug, Clone)]
pub struct LoadedConfig {
    /// The policy.
    pub policy: AclPolicy,
    /// The seed bindings.
    pub bindings: Vec<RoleBinding>,
}

impl AclConfig {
    /// Parses TOML.
    ///
    /// Needs the `toml` feature (on by default).
    /// # Errors
    ///
    /// [`AclError::Config`] with the parser's message and location.
    #[cfg(feature = "toml")]
    pub fn from_toml(text: &str) -> Result<Self, AclError> {
        toml::from_str(text).map_err(|err| AclError::Config {
            message: err.to_string(),
        })
    }

    /// Validates the configuration into a policy and seed bindings.
    ///
    /// # Errors
    ///
    /// Unknown roles, custom roles without requirements, an invalid hierarchy edge, an
    /// invalid binding line, or a subject bound twice on one resource.
    pub fn load(self) -> Result<LoadedConfig, AclError> {
        let custom_roles = self.roles.is_some();
        let roles = match self.roles {
            Some(roles) => Roles::new(roles.iter().map(|r| (r.name().as_str(), r.tier())))?,
            None => Roles::teletraan(),
        };
        let mut policy = match (self.requirements, custom_roles) {
            (Some(requirements), _) => {
                let mut builder = AclPolicy::builder(roles.clone());
                for (action, role) in requirements.any {
                    builder = builder.require(action, role.as_str())?;
                }
                for (kind, actions) in requirements.kinds {
                    for (action, role) in actions {
                        builder = builder.require_on(kind.clone(), action, role.as_str())?;
                    }
                }
                builder.build()
            }
            (None, false) => AclPolicy::teletraan(),
            (None, true) => {
                return Err(AclError::Config {
                    message: "custom roles need a [requirements] section saying which role each action needs".into(),
                });
            }
        };
        let hierarchy = match self.hierarchy {
            Some(config) => {
                let mut hierarchy = config
                    .rules
                    .into_iter()
                    .fold(Hierarchy::flat(), Hierarchy::with_rule);
                for edge in config.edges {
                    hierarchy.add_edge(edge.child, edge.parent)?;
                }
                hierarchy
            }
            None => Hierarchy::teletraan(),
        };
        policy = policy.with_hierarchy(hierarchy);
        let mut bindings = Vec::new();
        for line in &self.bindings.lines {
            bindings.push(line.parse::<RoleBinding>()?);
        }
        bindings.extend(self.bindings.tables);
        let mut seen = HashSet::new();
        for binding in &bindings {
            policy.roles().resolve(&binding.role)?;
            if !seen.insert((&binding.subject, &binding.resource)) {
                return Err(AclError::DuplicateBinding {
                    subject: binding.subject.clone(),
                    resource: binding.resource.clone(),
                });
            }
        }
        Ok(LoadedConfig { policy, bindings })
    }
}
