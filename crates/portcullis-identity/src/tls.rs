//! rustls integration: certificate verifiers doing the SPIFFE checks, resolvers serving the
//! current SVID, and server and client configurations built on an explicit crypto provider.

use std::fmt;
use std::sync::Arc;

use rustls::client::ResolvesClientCert;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, DistinguishedName, OtherError,
    ServerConfig, SignatureScheme,
};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use crate::svid::{LeafInfo, SvidUsage, verify_svid};
use crate::{IdentitySource, SpiffeId, SpiffeIdPattern, SvidError};

/// Whether a server asks clients for a certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClientAuth {
    /// No client certificates: plain TLS.
    #[default]
    Off,
    /// Asked for; a client without one still connects (and authenticates otherwise, with a
    /// token). A certificate that is presented must verify, or the handshake fails.
    Optional,
    /// Required: a client without a verified SVID cannot connect.
    Required,
}

/// Which SPIFFE IDs one side accepts from the other, after the SVID verified.
#[derive(Debug, Clone, Default)]
pub enum PeerIds {
    /// Any SPIFFE ID whose SVID verifies against the bundles (authorization happens later,
    /// per request, on the principal's groups).
    #[default]
    Any,
    /// Only IDs that match one of these patterns.
    Matching(Vec<SpiffeIdPattern>),
}

impl PeerIds {
    /// Exactly `id`.
    pub fn exactly(id: SpiffeId) -> Self {
        PeerIds::Matching(vec![SpiffeIdPattern::exact(id)])
    }

    /// Whether `id` is accepted.
    pub fn accepts(&self, id: &SpiffeId) -> bool {
        match self {
            PeerIds::Any => true,
            PeerIds::Matching(patterns) => patterns.iter().any(|p| p.matches(id)),
        }
    }
}

fn to_rustls(err: SvidError) -> rustls::Error {
    rustls::Error::InvalidCertificate(match err {
        SvidError::Expired => CertificateError::Expired,
        SvidError::NotYetValid => CertificateError::NotValidYet,
        SvidError::UnknownIssuer | SvidError::UntrustedDomain(_) => CertificateError::UnknownIssuer,
        SvidError::Malformed(_) => CertificateError::BadEncoding,
        other => CertificateError::Other(OtherError(Arc::new(other))),
    })
}

fn verify(
    source: &IdentitySource,
    end_entity: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
    usage: SvidUsage,
    now: UnixTime,
    accepted: &PeerIds,
) -> Result<LeafInfo, SvidError> {
    let mut chain = Vec::with_capacity(1 + intermediates.len());
    chain.push(end_entity.clone());
    chain.extend(intermediates.iter().cloned());
    let algorithms = source.provider().signature_verification_algorithms.all;
    let info = source
        .with_current(|material| verify_svid(&chain, &material.bundles, usage, now, algorithms))?;
    match &info.spiffe_id {
        Some(id) if accepted.accepts(id) => Ok(info),
        Some(id) => Err(SvidError::NotAuthorized(id.to_string())),
        None => Err(SvidError::NoUriSan),
    }
}

/// Verifies client certificates as X.509-SVIDs against the current bundles; with
/// [`PeerIds::Matching`], only those client IDs may connect at all.
pub struct SpiffeClientVerifier {
    source: Arc<IdentitySource>,
    mandatory: bool,
    accepted: PeerIds,
}

impl SpiffeClientVerifier {
    /// A verifier reading `source`; `mandatory` refuses clients without a certificate.
    pub fn new(source: Arc<IdentitySource>, mandatory: bool, accepted: PeerIds) -> Self {
        SpiffeClientVerifier {
            source,
            mandatory,
            accepted,
        }
    }
}

impl fmt::Debug for SpiffeClientVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SpiffeClientVerifier")
            .field("mandatory", &self.mandatory)
            .field("accepted", &self.accepted)
            .finish_non_exhaustive()
    }
}

impl ClientCertVerifier for SpiffeClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // SPIFFE peers pick their SVID by trust domain, not by CA name hints.
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        verify(
            &self.source,
            end_entity,
            intermediates,
            SvidUsage::Client,
            now,
            &self.accepted,
        )
        .map_err(to_rustls)?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.source.provider().signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.source.provider().signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.source
            .provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Verifies a server's certificate as an X.509-SVID and authorizes the server's SPIFFE ID:
/// a certificate from the right CA for the wrong workload is refused. The TLS server name is
/// not compared with DNS SANs; the SPIFFE ID is the server's identity.
pub struct SpiffeServerVerifier {
    source: Arc<IdentitySource>,
    expected: PeerIds,
}

impl SpiffeServerVerifier {
    /// A verifier reading `source`, accepting servers whose ID `expected` accepts.
    pub fn new(source: Arc<IdentitySource>, expected: PeerIds) -> Self {
        SpiffeServerVerifier { source, expected }
    }
}

impl fmt::Debug for SpiffeServerVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SpiffeServerVerifier")
            .field("expected", &self.expected)
            .finish_non_exhaustive()
    }
}

impl ServerCertVerifier for SpiffeServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        verify(
            &self.source,
            end_entity,
            intermediates,
            SvidUsage::Server,
            now,
            &self.expected,
        )
        .map_err(to_rustls)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.source.provider().signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.source.provider().signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.source
            .provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Presents the workload's current SVID, on both sides of a connection: a rotated SVID is
/// used from the next handshake on.
pub struct SvidResolver {
    source: Arc<IdentitySource>,
}

impl SvidResolver {
    /// A resolver reading `source`.
    pub fn new(source: Arc<IdentitySource>) -> Self {
        SvidResolver { source }
    }

    fn current(&self) -> Option<Arc<CertifiedKey>> {
        self.source
            .with_current(|m| m.svid.as_ref().map(|svid| svid.certified_key().clone()))
    }
}

impl fmt::Debug for SvidResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SvidResolver").finish_non_exhaustive()
    }
}

impl ResolvesServerCert for SvidResolver {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current()
    }
}

impl ResolvesClientCert for SvidResolver {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        self.current()
    }

    fn has_certs(&self) -> bool {
        self.source.with_current(|m| m.svid.is_some())
    }
}

/// Why a TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsConfigError {
    /// The server has no certificate to present.
    #[error("a TLS server needs a certificate and key (the SVID files)")]
    NoServerCertificate,
    /// Client certificates are asked for but no trust bundle is configured.
    #[error("client certificates are enabled but no trust bundle is configured")]
    NoBundles,
    /// rustls refused the configuration (e.g. the provider lacks the protocol versions).
    #[error("rustls: {0}")]
    Rustls(#[from] rustls::Error),
}

/// A rustls server configuration presenting the current SVID and checking client SVIDs per
/// `client_auth`, on `source`'s provider (never the process default). ALPN is `http/1.1`.
/// When clients are verified, sessions are never resumed (no session cache, no tickets):
/// a resumption skips the client certificate, so a client would outlive the rotation of
/// the bundle that admitted it.
///
/// # Errors
///
/// [`TlsConfigError::NoServerCertificate`] without an SVID, [`TlsConfigError::NoBundles`]
/// when clients are verified against nothing.
pub fn server_config(
    source: &Arc<IdentitySource>,
    client_auth: ClientAuth,
    accepted_clients: PeerIds,
) -> Result<ServerConfig, TlsConfigError> {
    let material = source.current();
    if material.svid.is_none() {
        return Err(TlsConfigError::NoServerCertificate);
    }
    let builder = ServerConfig::builder_with_provider(source.provider().clone())
        .with_safe_default_protocol_versions()?;
    let builder = match client_auth {
        ClientAuth::Off => builder.with_no_client_auth(),
        ClientAuth::Optional | ClientAuth::Required => {
            if material.bundles.is_empty() {
                return Err(TlsConfigError::NoBundles);
            }
            builder.with_client_cert_verifier(Arc::new(SpiffeClientVerifier::new(
                source.clone(),
                client_auth == ClientAuth::Required,
                accepted_clients,
            )))
        }
    };
    let mut config = builder.with_cert_resolver(Arc::new(SvidResolver::new(source.clone())));
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    if client_auth != ClientAuth::Off {
        // A resumed session skips the client certificate: a client admitted once would stay
        // admitted after its CA left the bundle or its ID left `accepted_clients`, for as
        // long as its ticket lives. Every connection shows (and has verified) its SVID.
        config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        config.send_tls13_tickets = 0;
    }
    Ok(config)
}

/// A rustls client configuration that presents the current SVID (if any) and accepts only
/// servers whose SVID verifies and whose SPIFFE ID `expected_server` accepts.
///
/// # Errors
///
/// [`TlsConfigError::NoBundles`] without a trust bundle.
pub fn client_config(
    source: &Arc<IdentitySource>,
    expected_server: PeerIds,
) -> Result<ClientConfig, TlsConfigError> {
    if source.with_current(|m| m.bundles.is_empty()) {
        return Err(TlsConfigError::NoBundles);
    }
    let mut config = ClientConfig::builder_with_provider(source.provider().clone())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(SpiffeServerVerifier::new(
            source.clone(),
            expected_server,
        )))
        .with_client_cert_resolver(Arc::new(SvidResolver::new(source.clone())));
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// The SPIFFE ID of a peer whose chain a verifier of this crate already accepted: reads the
/// leaf's URI SAN. Call it once per connection after the handshake.
///
/// # Errors
///
/// An [`SvidError`] if there is no certificate or its leaf has no single SPIFFE ID.
pub fn peer_spiffe_id(
    peer_certificates: Option<&[CertificateDer<'_>]>,
) -> Result<SpiffeId, SvidError> {
    peer_svid(peer_certificates)?
        .spiffe_id
        .ok_or(SvidError::NoUriSan)
}

/// Like [`peer_spiffe_id`], with the leaf's end of validity too (a long-lived connection
/// should not outlive the certificate it was opened with). `spiffe_id` is always `Some`.
///
/// # Errors
///
/// An [`SvidError`] if there is no certificate or its leaf has no single SPIFFE ID.
pub fn peer_svid(peer_certificates: Option<&[CertificateDer<'_>]>) -> Result<LeafInfo, SvidError> {
    let leaf = peer_certificates
        .and_then(<[_]>::first)
        .ok_or(SvidError::EmptyChain)?;
    crate::svid::inspect_leaf(leaf)
}
