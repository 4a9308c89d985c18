//! Authorizers that switch protection off. Named loudly on purpose: nothing here belongs in
//! a production configuration.

use crate::{AccessRequest, Authorizer, Decision};

/// Allows every request. For tests and local experiments only; a service configured with it
/// is open to anyone who can authenticate.
#[derive(Debug, Clone, Copy, Default)]
pub struct AllowAll;

impl Authorizer for AllowAll {
    fn authorize(&self, _request: &AccessRequest<'_>) -> Decision {
        Decision::allow("allow-all is configured: every request is allowed (danger)")
    }

    fn name(&self) -> &str {
        "danger-allow-all"
    }
}
