//! The [`Authenticator`] trait and the ordered [`AuthChain`].

use std::sync::Arc;

use async_trait::async_trait;
use portcullis_core::{AuthMethod, Principal, PrincipalKind};

use crate::{AuthError, Credential, VerifiedPeer};

/// Turns a credential into a [`Principal`], or says why not.
///
/// Async, `Send + Sync` and object safe, so chains hold `Arc<dyn Authenticator>`. An
/// authenticator that does not handle a credential's kind (a JWT given to the script-token
/// check, a JWT from another issuer) returns [`AuthError::Unrecognized`] or
/// [`AuthError::UnknownIssuer`] so the chain goes on; any other error ends the attempt.
#[async_trait]
pub trait Authenticator: Send + Sync + std::fmt::Debug {
    /// A short name for logs and errors (`script_token`, `oidc`, …).
    fn name(&self) -> &str;

    /// Authenticates `credential`.
    ///
    /// # Errors
    ///
    /// An [`AuthError`] that says why the credential was refused.
    async fn authenticate(&self, credential: &Credential) -> Result<Principal, AuthError>;

    /// Who a request without any credential is. By default nobody:
    /// [`AuthError::MissingCredential`]. [`AuthChain`] answers with its anonymous principal
    /// when built with [`AuthChain::allow_anonymous`].
    ///
    /// # Errors
    ///
    /// [`AuthError::MissingCredential`] unless the authenticator admits anonymous requests.
    async fn without_credential(&self) -> Result<Principal, AuthError> {
        Err(AuthError::MissingCredential)
    }

    /// Who a peer is whose identity the transport already verified (a client certificate a
    /// mutual-TLS verifier accepted). By default not this authenticator's kind:
    /// [`AuthError::Unrecognized`], so token authenticators need not know about peers and a
    /// chain goes on to its other methods.
    ///
    /// # Errors
    ///
    /// [`AuthError::Unrecognized`] by default; an authenticator of peers says why it refused.
    async fn authenticate_peer(&self, peer: &VerifiedPeer) -> Result<Principal, AuthError> {
        let _ = peer;
        Err(AuthError::Unrecognized)
    }
}

/// A chain is itself an [`Authenticator`], so it can stand wherever one is taken (a gate, a
/// chain of chains).
#[async_trait]
impl Authenticator for AuthChain {
    fn name(&self) -> &str {
        "chain"
    }

    async fn authenticate(&self, credential: &Credential) -> Result<Principal, AuthError> {
        AuthChain::authenticate(self, Some(credential)).await
    }

    async fn without_credential(&self) -> Result<Principal, AuthError> {
        AuthChain::authenticate(self, None).await
    }

    async fn authenticate_peer(&self, peer: &VerifiedPeer) -> Result<Principal, AuthError> {
        AuthChain::authenticate_peer(self, peer).await
    }
}

/// The authentication methods a service enabled, tried in order.
///
/// No method ⇒ every request is refused ([`AuthError::NoMethods`]); a request without a
/// credential is refused ([`AuthError::MissingCredential`]) unless the chain was explicitly
/// built with [`AuthChain::allow_anonymous`]. A credential that is presented but invalid is
/// never downgraded to anonymous.
///
/// ```
/// use std::sync::Arc;
/// use portcullis_token::{AuthChain, AuthError};
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let closed = AuthChain::new(Vec::new());
/// assert!(matches!(closed.authenticate_header(Some(b"token x")).await, Err(AuthError::NoMethods)));
/// assert!(matches!(closed.authenticate_header(None).await, Err(AuthError::MissingCredential)));
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct AuthChain {
    methods: Vec<Arc<dyn Authenticator>>,
    anonymous: bool,
}

/// The subject of the principal a chain returns for a request without a credential, when
/// anonymous access is switched on.
pub const ANONYMOUS_SUBJECT: &str = "anonymous";

/// The auth method of the anonymous principal.
pub const ANONYMOUS_METHOD: AuthMethod = AuthMethod::from_static("anonymous");

impl AuthChain {
    /// A chain of `methods`, tried in order; anonymous access off.
    pub fn new(methods: Vec<Arc<dyn Authenticator>>) -> Self {
        AuthChain {
            methods,
            anonymous: false,
        }
    }

    /// Requests *without any credential* get the principal `user:anonymous` (auth method
    /// `anonymous`), which authorizers can grant as little as they like. Requests with an
    /// invalid credential are still refused.
    #[must_use]
    pub fn allow_anonymous(mut self) -> Self {
        self.anonymous = true;
        self
    }

    /// The enabled methods' names, in order.
    pub fn method_names(&self) -> Vec<&str> {
        self.methods.iter().map(|m| m.name()).collect()
    }

    /// Authenticates an optional `Authorization` header value.
    ///
    /// # Errors
    ///
    /// As [`AuthChain::authenticate`], plus header parsing errors.
    pub async fn authenticate_header(&self, header: Option<&[u8]>) -> Result<Principal, AuthError> {
        match header {
            None => self.authenticate(None).await,
            Some(value) => {
                let credential = Credential::from_authorization(value)?;
                self.authenticate(Some(&credential)).await
            }
        }
    }

    /// Tries each method in order.
    ///
    /// # Errors
    ///
    /// [`AuthError::NoMethods`] when nothing is enabled, [`AuthError::MissingCredential`]
    /// without a credential (and without anonymous access), the first method's final error,
    /// or — when no method recognised the credential — [`AuthError::UnknownIssuer`] if a JWT
    /// verifier saw a foreign issuer, else [`AuthError::Unrecognized`].
    pub async fn authenticate(
        &self,
        credential: Option<&Credential>,
    ) -> Result<Principal, AuthError> {
        let Some(credential) = credential else {
            return if self.anonymous {
                Ok(
                    Principal::builder(PrincipalKind::User, ANONYMOUS_SUBJECT, ANONYMOUS_METHOD)
                        .build()?,
                )
            } else {
                Err(AuthError::MissingCredential)
            };
        };
        if self.methods.is_empty() {
            return Err(AuthError::NoMethods);
        }
        let mut not_mine = AuthError::Unrecognized;
        for method in &self.methods {
            match method.authenticate(credential).await {
                Ok(principal) => return Ok(principal),
                Err(e) if e.is_not_mine() => {
                    if matches!(e, AuthError::UnknownIssuer(_)) {
                        not_mine = e;
                    }
                }
                Err(e) => {
                    tracing::debug!(method = method.name(), error = %e, "credential refused");
                    return Err(e);
                }
            }
        }
        Err(not_mine)
    }

    /// Tries each method's [`Authenticator::authenticate_peer`] in order, the way
    /// [`AuthChain::authenticate`] tries credentials.
    ///
    /// # Errors
    ///
    /// [`AuthError::NoMethods`] when nothing is enabled, the first method's final error, or
    /// [`AuthError::Unrecognized`] when no method authenticates peers (the caller then goes
    /// on as if no peer certificate had been presented).
    pub async fn authenticate_peer(&self, peer: &VerifiedPeer) -> Result<Principal, AuthError> {
        if self.methods.is_empty() {
            return Err(AuthError::NoMethods);
        }
        for method in &self.methods {
            match method.authenticate_peer(peer).await {
                Ok(principal) => return Ok(principal),
                Err(e) if e.is_not_mine() => {}
                Err(e) => {
                    tracing::debug!(method = method.name(), error = %e, "peer refused");
                    return Err(e);
                }
            }
        }
        Err(AuthError::Unrecognized)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Fixed(&'static str, fn() -> Result<Principal, AuthError>);

    #[async_trait]
    impl Authenticator for Fixed {
        fn name(&self) -> &str {
            self.0
        }
        async fn authenticate(&self, _: &Credential) -> Result<Principal, AuthError> {
            (self.1)()
        }
    }

    fn alice() -> Result<Principal, AuthError> {
        Ok(Principal::builder(PrincipalKind::User, "alice", AuthMethod::OIDC).build()?)
    }

    #[tokio::test]
    async fn order_and_fallthrough() {
        let chain = AuthChain::new(vec![
            Arc::new(Fixed("a", || Err(AuthError::Unrecognized))),
            Arc::new(Fixed("b", || Err(AuthError::UnknownIssuer("x".into())))),
            Arc::new(Fixed("c", alice)),
        ]);
        assert_eq!(chain.method_names(), ["a", "b", "c"]);
        let p = chain.authenticate_header(Some(b"Bearer t")).await.unwrap();
        assert_eq!(p.subject(), "alice");

        let stops = AuthChain::new(vec![
            Arc::new(Fixed("a", || Err(AuthError::Revoked))),
            Arc::new(Fixed("c", alice)),
        ]);
        assert!(matches!(
            stops.authenticate_header(Some(b"Bearer t")).await,
            Err(AuthError::Revoked)
        ));

        let nobody = AuthChain::new(vec![
            Arc::new(Fixed("a", || Err(AuthError::UnknownIssuer("evil".into())))),
            Arc::new(Fixed("b", || Err(AuthError::Unrecognized))),
        ]);
        assert!(matches!(
            nobody.authenticate_header(Some(b"Bearer t")).await,
            Err(AuthError::UnknownIssuer(i)) if i == "evil"
        ));
    }

    #[derive(Debug)]
    struct PeerNamed;

    #[async_trait]
    impl Authenticator for PeerNamed {
        fn name(&self) -> &str {
            "peer"
        }
        async fn authenticate(&self, _: &Credential) -> Result<Principal, AuthError> {
            Err(AuthError::Unrecognized)
        }
        async fn authenticate_peer(&self, peer: &VerifiedPeer) -> Result<Principal, AuthError> {
            if peer.uri().starts_with("spiffe://good/") {
                Ok(
                    Principal::builder(PrincipalKind::Service, peer.uri(), AuthMethod::OIDC)
                        .build()?,
                )
            } else {
                Err(AuthError::InvalidToken)
            }
        }
    }

    #[tokio::test]
    async fn peers_skip_token_methods_and_reach_peer_methods() {
        let tokens_only = AuthChain::new(vec![Arc::new(Fixed("t", alice))]);
        assert!(matches!(
            tokens_only
                .authenticate_peer(&VerifiedPeer::new("spiffe://good/a"))
                .await,
            Err(AuthError::Unrecognized)
        ));
        let chain = AuthChain::new(vec![Arc::new(Fixed("t", alice)), Arc::new(PeerNamed)]);
        let p = chain
            .authenticate_peer(&VerifiedPeer::new("spiffe://good/a"))
            .await
            .unwrap();
        assert_eq!(
            (p.kind(), p.subject()),
            (PrincipalKind::Service, "spiffe://good/a")
        );
        assert!(matches!(
            chain
                .authenticate_peer(&VerifiedPeer::new("spiffe://bad/a"))
                .await,
            Err(AuthError::InvalidToken)
        ));
        let as_dyn: &dyn Authenticator = &chain;
        assert!(
            as_dyn
                .authenticate_peer(&VerifiedPeer::new("spiffe://good/b"))
                .await
                .is_ok()
        );
        assert!(matches!(
            AuthChain::new(Vec::new())
                .authenticate_peer(&VerifiedPeer::new("spiffe://good/a"))
                .await,
            Err(AuthError::NoMethods)
        ));
    }

    #[tokio::test]
    async fn anonymous_only_when_asked_and_only_without_credential() {
        let chain = AuthChain::new(vec![Arc::new(Fixed("a", || Err(AuthError::Expired)))]);
        assert!(matches!(
            chain.authenticate(None).await,
            Err(AuthError::MissingCredential)
        ));
        let open = chain.allow_anonymous();
        assert_eq!(
            open.authenticate(None).await.unwrap().subject(),
            ANONYMOUS_SUBJECT
        );
        assert!(matches!(
            open.authenticate_header(Some(b"token bad")).await,
            Err(AuthError::Expired)
        ));
        assert!(open.authenticate_header(Some(b"Basic x")).await.is_err());
    }
}
