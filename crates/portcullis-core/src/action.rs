//! What a principal wants to do to a resource.

use crate::error::Field;
use crate::ident::ident_newtype;

ident_newtype!(
    /// An operation on a [`Resource`](crate::Resource): an open set of lower-case identifiers.
    ///
    /// Common actions are constants; an embedder names its own with [`Action::from_static`]
    /// or parses them. Parsing folds ASCII case.
    ///
    /// ```
    /// use portcullis_core::Action;
    /// const ROLLBACK: Action = Action::from_static("rollback");
    /// assert_eq!("Deploy".parse::<Action>()?, Action::DEPLOY);
    /// assert_eq!(ROLLBACK.to_string(), "rollback");
    /// # Ok::<(), portcullis_core::Error>(())
    /// ```
    Action, Field::Action, "action"
);

impl Action {
    /// Read a resource and its state.
    pub const READ: Action = Action::from_static("read");
    /// Deploy a build to an environment or stage.
    pub const DEPLOY: Action = Action::from_static("deploy");
    /// Ping (report) deploy status, as a host agent does.
    pub const PING: Action = Action::from_static("ping");
    /// Publish a build so that it may be deployed.
    pub const PUBLISH_BUILD: Action = Action::from_static("publish_build");
    /// Grant or revoke roles on a resource.
    pub const MANAGE_ROLES: Action = Action::from_static("manage_roles");
    /// Create or revoke script tokens on a resource.
    pub const MANAGE_TOKENS: Action = Action::from_static("manage_tokens");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_displays_canonically() {
        let action: Action = "MANAGE_ROLES".parse().unwrap();
        assert_eq!(action, Action::MANAGE_ROLES);
        assert_eq!(action.to_string(), "manage_roles");
        assert_eq!(format!("{action:?}"), r#"Action("manage_roles")"#);
        assert!("manage roles".parse::<Action>().is_err());
        assert_eq!(
            serde_json::to_string(&Action::DEPLOY).unwrap(),
            r#""deploy""#
        );
        let err = serde_json::from_str::<Action>(r#""9lives""#).unwrap_err();
        assert!(err.to_string().contains("action"), "{err}");
    }
}
