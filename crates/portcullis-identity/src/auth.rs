//! The [`Authenticator`] for verified peer SPIFFE IDs.

use portcullis_core::{AuthMethod, Principal, PrincipalKind};
use portcullis_token::{AuthError, Authenticator, Credential, VerifiedPeer};

use crate::{SpiffeId, SpiffeIdPattern, TrustDomain};

/// The auth method of principals authenticated by an X.509-SVID.
pub const X509_SVID: AuthMethod = AuthMethod::from_static("x509_svid");

/// The claim holding a SPIFFE principal's trust domain.
pub const TRUST_DOMAIN_CLAIM: &str = "spiffe_trust_domain";

/// Turns a TLS-verified peer SPIFFE ID into a [`Principal`] of kind service: subject = the
/// SPIFFE ID, groups from the configured patterns, claim `spiffe_trust_domain`. Put it in the
/// same [`AuthChain`](portcullis_token::AuthChain) as the token methods: it says "not mine" to
/// bearer tokens, and the token methods say "not mine" to peers.
///
/// ```
/// use portcullis_identity::SpiffeAuthenticator;
/// use portcullis_token::{AuthChain, Authenticator, VerifiedPeer};
/// use std::sync::Arc;
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let spiffe = SpiffeAuthenticator::new().group("spiffe://prod.example/ns/payments/*", "payments")?;
/// let chain = AuthChain::new(vec![Arc::new(spiffe)]);
/// let who = chain
///     .authenticate_peer(&VerifiedPeer::new("spiffe://prod.example/ns/payments/sa/api"))
///     .await?;
/// assert!(who.in_group("payments"));
/// assert_eq!(who.subject(), "spiffe://prod.example/ns/payments/sa/api");
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Default)]
pub struct SpiffeAuthenticator {
    trust_domains: Option<Vec<TrustDomain>>,
    groups: Vec<(SpiffeIdPattern, String)>,
}

impl SpiffeAuthenticator {
    /// Every verified SPIFFE ID authenticates, without groups.
    pub fn new() -> Self {
        SpiffeAuthenticator::default()
    }

    /// Members of `pattern` get `group`.
    ///
    /// # Errors
    ///
    /// [`AuthError::Config`] for a bad pattern or group name.
    pub fn group(mut self, pattern: &str, group: impl Into<String>) -> Result<Self, AuthError> {
        let pattern = SpiffeIdPattern::parse(pattern)
            .map_err(|err| AuthError::Config(format!("SPIFFE ID pattern {pattern:?}: {err}")))?;
        let group = group.into();
        portcullis_core::validate_name(portcullis_core::Field::Group, &group)?;
        self.groups.push((pattern, group));
        Ok(self)
    }

    /// Only peers of these trust domains authenticate here; others are refused
    /// ([`AuthError::InvalidToken`]). Without it, every domain the TLS bundles accept.
    #[must_use]
    pub fn trust_domains(mut self, domains: impl IntoIterator<Item = TrustDomain>) -> Self {
        self.trust_domains = Some(domains.into_iter().collect());
        self
    }

    /// The principal of `id`.
    ///
    /// # Errors
    ///
    /// [`AuthError::InvalidToken`] for a trust domain not accepted here;
    /// [`AuthError::Vocabulary`] if the ID is too long for a subject (256 bytes).
    pub fn principal(&self, id: &SpiffeId) -> Result<Principal, AuthError> {
        if let Some(domains) = &self.trust_domains
            && !domains.iter().any(|d| d.as_str() == id.trust_domain_name())
        {
            tracing::debug!(spiffe_id = %id, "trust domain not accepted by this authenticator");
            return Err(AuthError::InvalidToken);
        }
        let groups = self
            .groups
            .iter()
            .filter(|(pattern, _)| pattern.matches(id))
            .map(|(_, group)| group.clone());
        Ok(
            Principal::builder(PrincipalKind::Service, id.as_str(), X509_SVID)
                .groups(groups)
                .claim(
                    TRUST_DOMAIN_CLAIM,
                    serde_json::Value::String(id.trust_domain_name().to_owned()),
                )
                .build()?,
        )
    }
}

#[portcullis_token::async_trait]
impl Authenticator for SpiffeAuthenticator {
    fn name(&self) -> &str {
        "x509_svid"
    }

    async fn authenticate(&self, _credential: &Credential) -> Result<Principal, AuthError> {
        Err(AuthError::Unrecognized)
    }

    async fn authenticate_peer(&self, peer: &VerifiedPeer) -> Result<Principal, AuthError> {
        // A verified URI that is not a SPIFFE ID belongs to some other peer method.
        let Ok(id) = SpiffeId::parse(peer.uri()) else {
            return Err(AuthError::Unrecognized);
        };
        self.principal(&id)
    }
}
