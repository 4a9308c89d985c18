//! Services that authenticate with their SVID (`[tls]`, client certificates) get credentials
//! by their SPIFFE ID's groups, as Pinterest's CVS does for service accounts: the groups
//! `[[tls.groups]]` give the ID stand where a person's directory groups do, and go through
//! the same `[vend.groups]` mapping.

use std::sync::Arc;

use portcullis::directory::{Directory, DirectoryError, DirectoryUser, Password, async_trait};

use crate::tls::{Tls, is_spiffe_subject};

/// The vendor's directory: people's groups from the configured directory, a SPIFFE ID's
/// from `[[tls.groups]]`. A SPIFFE ID is never looked up in the directory, and without
/// `[tls]` it has no groups (so no credentials).
#[derive(Debug)]
pub(crate) struct ServiceGroups {
    directory: Arc<dyn Directory>,
    tls: Option<Arc<Tls>>,
}

impl ServiceGroups {
    /// `directory` for people, `tls` (when configured) for services.
    pub(crate) fn new(directory: Arc<dyn Directory>, tls: Option<Arc<Tls>>) -> Self {
        ServiceGroups { directory, tls }
    }
}

#[async_trait]
impl Directory for ServiceGroups {
    async fn authenticate(
        &self,
        user: &str,
        password: &Password,
    ) -> Result<DirectoryUser, DirectoryError> {
        self.directory.authenticate(user, password).await
    }

    async fn groups_of(&self, user: &str) -> Result<Vec<String>, DirectoryError> {
        if is_spiffe_subject(user) {
            return self
                .tls
                .as_ref()
                .and_then(|tls| tls.groups_of(user))
                .ok_or_else(|| DirectoryError::UnknownUser(user.to_owned()));
        }
        self.directory.groups_of(user).await
    }

    async fn service_account(&self, name: &str) -> Result<Option<DirectoryUser>, DirectoryError> {
        self.directory.service_account(name).await
    }
}
