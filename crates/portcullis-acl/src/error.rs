//! The one error type of this crate.

use portcullis_core::Resource;

use crate::{RoleName, Subject};

/// Everything that can go wrong in access control, with a message that says what to fix.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AclError {
    /// A vocabulary value (resource, action, name) was invalid.
    #[error(transparent)]
    Vocabulary(#[from] portcullis_core::Error),
    /// A role name that is not written as roles are (upper-case letters, digits, `_`).
    #[error(
        "role name `{name}` is invalid: use 1-32 ASCII letters, digits or `_`, starting with a letter (e.g. OPERATOR)"
    )]
    InvalidRoleName {
        /// The rejected name.
        name: String,
    },
    /// A role name that the configured role set does not define.
    #[error("unknown role `{name}`; the defined roles are: {known}")]
    UnknownRole {
        /// The unknown name.
        name: String,
        /// The defined role names, comma-separated.
        known: String,
    },
    /// The same role defined twice.
    #[error("role `{name}` is defined twice")]
    DuplicateRole {
        /// The repeated name.
        name: RoleName,
    },
    /// A role set with no roles, or more than this crate supports.
    #[error("a role set needs between 1 and {max} roles, not {count}")]
    RoleCount {
        /// How many were given.
        count: usize,
        /// The most supported.
        max: usize,
    },
    /// A subject written without its `kind:` prefix or with an unknown kind.
    #[error(
        "subject `{input}` is invalid: write it as user:NAME, group:NAME, token:NAME or service:NAME"
    )]
    InvalidSubject {
        /// The rejected input (bounded).
        input: String,
    },
    /// A binding line that is not `SUBJECT RESOURCE ROLE`.
    #[error(
        "binding `{input}` is invalid: write it as `SUBJECT RESOURCE ROLE`, e.g. `group:deployers env:checkout OPERATOR`"
    )]
    InvalidBinding {
        /// The rejected input (bounded).
        input: String,
    },
    /// A second binding for the same subject and resource.
    #[error("{subject} already has a role on {resource}; change it instead of granting another")]
    DuplicateBinding {
        /// The subject.
        subject: Subject,
        /// The resource.
        resource: Resource,
    },
    /// No binding for this subject and resource.
    #[error("{subject} has no role on {resource}")]
    BindingNotFound {
        /// The subject.
        subject: Subject,
        /// The resource.
        resource: Resource,
    },
    /// A hierarchy edge that is not allowed (a cycle, or the system resource as a child).
    #[error("invalid resource hierarchy: {reason}")]
    InvalidHierarchy {
        /// What is wrong.
        reason: String,
    },
    /// Configuration that could not be parsed.
    #[error("invalid ACL configuration: {message}")]
    Config {
        /// The parser's message, with the location of the problem.
        message: String,
    },
    /// The acting principal may not make this change.
    #[error("forbidden: {reason}")]
    Forbidden {
        /// Why, for the caller.
        reason: String,
    },
    /// A page size of zero or above the maximum.
    #[error("page limit {limit} is out of range 1..={max}")]
    PageLimit {
        /// The requested limit.
        limit: u32,
        /// The most allowed.
        max: u32,
    },
    /// The store failed (I/O, database error).
    #[error("ACL store error: {0}")]
    Store(String),
    /// The store holds data this version cannot read (an unknown role, a corrupt row).
    #[error("ACL store holds invalid data: {0}")]
    Corrupt(String),
}

#[cfg(any(feature = "sqlite", feature = "postgres"))]
impl From<sqlx::Error> for AclError {
    fn from(err: sqlx::Error) -> Self {
        AclError::Store(err.to_string())
    }
}
