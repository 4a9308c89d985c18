//! X.509-SVID verification to the SPIFFE X.509-SVID specification.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls_pki_types::{CertificateDer, SignatureVerificationAlgorithm, UnixTime};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::FromDer as _;

use crate::{BundleSet, SpiffeId, SpiffeIdError};

/// The most certificates (leaf and intermediates) a presented chain may have.
pub const MAX_CHAIN_LEN: usize = 8;

/// The largest single certificate accepted, in bytes.
pub const MAX_CERT_LEN: usize = 64 * 1024;

/// Which side of a TLS connection the SVID authenticates: an extended key usage extension,
/// when the leaf has one, must allow it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SvidUsage {
    /// A client (`id-kp-clientAuth`).
    Client,
    /// A server (`id-kp-serverAuth`).
    Server,
}

/// Why an X.509-SVID was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SvidError {
    /// No certificate was presented.
    #[error("no certificate was presented")]
    EmptyChain,
    /// More than [`MAX_CHAIN_LEN`] certificates.
    #[error("a certificate chain has at most {MAX_CHAIN_LEN} certificates; this one has {0}")]
    ChainTooLong(usize),
    /// A certificate larger than [`MAX_CERT_LEN`].
    #[error("a certificate is at most {MAX_CERT_LEN} bytes; one has {0}")]
    CertTooLarge(usize),
    /// The leaf is not DER X.509, or an extension in it is malformed or duplicated.
    #[error("the leaf certificate is malformed: {0}")]
    Malformed(String),
    /// The leaf has no URI subject alternative name.
    #[error("the leaf certificate has no URI SAN, so no SPIFFE ID")]
    NoUriSan,
    /// The leaf has several URI subject alternative names.
    #[error("an X.509-SVID has exactly one URI SAN; this leaf has {0}")]
    MultipleUriSans(usize),
    /// The URI SAN is not a SPIFFE ID.
    #[error("the leaf's URI SAN is not a SPIFFE ID: {0}")]
    NotSpiffe(#[source] SpiffeIdError),
    /// The leaf is a CA certificate (basic constraints `CA:TRUE`).
    #[error("the leaf certificate is a CA certificate (CA:TRUE)")]
    LeafIsCa,
    /// The leaf's SPIFFE ID is its trust domain's own (no path): that names the trust
    /// domain, never a workload.
    #[error(
        "an X.509-SVID leaf names a workload; spiffe://DOMAIN without a path names the trust domain"
    )]
    NoPath,
    /// The leaf's key usage extension is not marked critical.
    #[error("an X.509-SVID leaf's key usage extension is critical; this one's is not")]
    KeyUsageNotCritical,
    /// The leaf has no key usage extension.
    #[error("an X.509-SVID leaf has a key usage extension; this one has none")]
    NoKeyUsage,
    /// The leaf's key usage lacks `digitalSignature`.
    #[error("the leaf's key usage lacks digitalSignature")]
    NoDigitalSignature,
    /// The leaf's key usage has `keyCertSign` or `cRLSign`.
    #[error("the leaf's key usage has keyCertSign or cRLSign, which an X.509-SVID leaf must not")]
    SigningKeyUsage,
    /// No trust bundle for the SVID's trust domain (not ours, not federated).
    #[error("no trust bundle for trust domain {0:?} (neither ours nor a configured federation)")]
    UntrustedDomain(String),
    /// The leaf or a certificate of its chain has expired.
    #[error("the certificate has expired")]
    Expired,
    /// The leaf or a certificate of its chain is not valid yet.
    #[error("the certificate is not valid yet")]
    NotYetValid,
    /// The chain does not lead to the trust domain's bundle.
    #[error("the chain does not verify to the trust bundle of the SVID's trust domain")]
    UnknownIssuer,
    /// Another chain verification failure (signature, name constraints, key usage, …).
    #[error("the certificate chain does not verify: {0}")]
    Chain(String),
    /// The SVID verified but its SPIFFE ID is not one this side accepts.
    #[error("SPIFFE ID {0} is not authorized here")]
    NotAuthorized(String),
}

/// What the structural checks learned about a leaf certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeafInfo {
    /// The SPIFFE ID of its single URI SAN, if it has a URI SAN.
    pub spiffe_id: Option<SpiffeId>,
    /// The end of its validity.
    pub not_after: SystemTime,
}

/// Checks a leaf to the X.509-SVID rules except the chain: exactly one URI SAN that is a
/// SPIFFE ID with a path, not a CA, a critical key usage with `digitalSignature` and without
/// `keyCertSign`/`cRLSign`.
///
/// # Errors
///
/// An [`SvidError`] naming the first problem.
pub fn inspect_leaf(der: &[u8]) -> Result<LeafInfo, SvidError> {
    let info = inspect(der, true)?;
    if info.spiffe_id.is_none() {
        return Err(SvidError::NoUriSan);
    }
    Ok(info)
}

/// Like [`inspect_leaf`], but a certificate without any URI SAN (a plain DNS server
/// certificate) passes with `spiffe_id: None` and without the key usage rules; several URI
/// SANs or a URI SAN that is not a SPIFFE ID is still an error.
///
/// # Errors
///
/// An [`SvidError`].
pub fn inspect_serving_cert(der: &[u8]) -> Result<LeafInfo, SvidError> {
    inspect(der, false)
}

fn inspect(der: &[u8], svid: bool) -> Result<LeafInfo, SvidError> {
    if der.len() > MAX_CERT_LEN {
        return Err(SvidError::CertTooLarge(der.len()));
    }
    let (_, cert) =
        X509Certificate::from_der(der).map_err(|err| SvidError::Malformed(err.to_string()))?;
    let malformed = |err: x509_parser::error::X509Error| SvidError::Malformed(err.to_string());
    let mut uris = Vec::new();
    if let Some(san) = cert.subject_alternative_name().map_err(malformed)? {
        for name in &san.value.general_names {
            if let GeneralName::URI(uri) = name {
                uris.push(*uri);
            }
        }
    }
    let spiffe_id = match uris.as_slice() {
        [] => None,
        [one] => Some(SpiffeId::parse(one).map_err(SvidError::NotSpiffe)?),
        many => return Err(SvidError::MultipleUriSans(many.len())),
    };
    if spiffe_id.as_ref().is_some_and(|id| id.path().is_empty()) {
        return Err(SvidError::NoPath);
    }
    if let Some(constraints) = cert.basic_constraints().map_err(malformed)?
        && constraints.value.ca
    {
        return Err(SvidError::LeafIsCa);
    }
    if svid || spiffe_id.is_some() {
        let usage = cert.key_usage().map_err(malformed)?;
        let Some(usage) = usage else {
            return Err(SvidError::NoKeyUsage);
        };
        if !usage.critical {
            return Err(SvidError::KeyUsageNotCritical);
        }
        if !usage.value.digital_signature() {
            return Err(SvidError::NoDigitalSignature);
        }
        if usage.value.key_cert_sign() || usage.value.crl_sign() {
            return Err(SvidError::SigningKeyUsage);
        }
    }
    let not_after = cert.validity().not_after.timestamp();
    let not_after =
        u64::try_from(not_after).map_or(UNIX_EPOCH, |secs| UNIX_EPOCH + Duration::from_secs(secs));
    Ok(LeafInfo {
        spiffe_id,
        not_after,
    })
}

/// Verifies an X.509-SVID chain (`chain[0]` the leaf, then intermediates as presented):
/// the leaf rules of [`inspect_leaf`], then the chain to the bundle of the leaf's own trust
/// domain in `bundles`, with every certificate valid at `now` and an extended key usage, if
/// present, allowing `usage`. Returns the SPIFFE ID.
///
/// `algorithms` are the signature algorithms the crypto provider supports
/// (`provider.signature_verification_algorithms.all`).
///
/// # Errors
///
/// An [`SvidError`] naming the first problem.
pub fn verify_svid(
    chain: &[CertificateDer<'_>],
    bundles: &BundleSet,
    usage: SvidUsage,
    now: UnixTime,
    algorithms: &[&dyn SignatureVerificationAlgorithm],
) -> Result<LeafInfo, SvidError> {
    let Some((leaf, intermediates)) = chain.split_first() else {
        return Err(SvidError::EmptyChain);
    };
    if chain.len() > MAX_CHAIN_LEN {
        return Err(SvidError::ChainTooLong(chain.len()));
    }
    if let Some(big) = chain.iter().find(|c| c.len() > MAX_CERT_LEN) {
        return Err(SvidError::CertTooLarge(big.len()));
    }
    let info = inspect_leaf(leaf)?;
    let Some(id) = &info.spiffe_id else {
        return Err(SvidError::NoUriSan);
    };
    let domain = id.trust_domain_name();
    let bundle = bundles
        .get(domain)
        .ok_or_else(|| SvidError::UntrustedDomain(domain.to_owned()))?;
    let end_entity = webpki::EndEntityCert::try_from(leaf)
        .map_err(|err| SvidError::Malformed(err.to_string()))?;
    let eku = match usage {
        SvidUsage::Client => webpki::KeyUsage::client_auth(),
        SvidUsage::Server => webpki::KeyUsage::server_auth(),
    };
    end_entity
        .verify_for_usage(
            algorithms,
            bundle.anchors(),
            intermediates,
            now,
            eku,
            None,
            None,
        )
        .map_err(chain_error)?;
    Ok(info)
}

fn chain_error(err: webpki::Error) -> SvidError {
    match err {
        webpki::Error::CertExpired { .. } => SvidError::Expired,
        webpki::Error::CertNotValidYet { .. } => SvidError::NotYetValid,
        webpki::Error::UnknownIssuer => SvidError::UnknownIssuer,
        webpki::Error::CaUsedAsEndEntity => SvidError::LeafIsCa,
        other => SvidError::Chain(other.to_string()),
    }
}
