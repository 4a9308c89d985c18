//! Trust bundles: the CA certificates of one trust domain, from PEM or the SPIFFE bundle
//! (JWKS) JSON format, and the per-trust-domain set a verifier consults.

use std::collections::HashMap;
use std::sync::Arc;

use base64::Engine as _;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, TrustAnchor};

use crate::TrustDomain;

/// The largest bundle file accepted, in bytes.
pub const MAX_BUNDLE_LEN: usize = 1024 * 1024;

/// The most CA certificates one bundle may hold.
pub const MAX_BUNDLE_CERTS: usize = 256;

/// Why a trust bundle was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BundleError {
    /// Larger than [`MAX_BUNDLE_LEN`].
    #[error("a trust bundle is at most {MAX_BUNDLE_LEN} bytes; this one has {0}")]
    TooLarge(usize),
    /// No CA certificate in it.
    #[error("the trust bundle holds no X.509 CA certificate")]
    Empty,
    /// More than [`MAX_BUNDLE_CERTS`] certificates.
    #[error("a trust bundle holds at most {MAX_BUNDLE_CERTS} certificates")]
    TooManyCerts,
    /// Not PEM certificates.
    #[error("the PEM trust bundle is malformed: {0}")]
    Pem(String),
    /// Not a SPIFFE bundle (JWKS) document.
    #[error("the SPIFFE bundle JSON is malformed: {0}")]
    Json(String),
    /// A certificate the verifier cannot use as a trust anchor.
    #[error("certificate {index} of the trust bundle is not a usable CA certificate: {reason}")]
    BadCert {
        /// Its position in the bundle, from 0.
        index: usize,
        /// What is wrong.
        reason: String,
    },
}

/// The X.509 CA certificates of one trust domain.
#[derive(Debug, Clone)]
pub struct TrustBundle {
    trust_domain: TrustDomain,
    certs: Vec<CertificateDer<'static>>,
    anchors: Vec<TrustAnchor<'static>>,
    sequence: Option<u64>,
}

impl TrustBundle {
    /// A bundle of DER certificates.
    ///
    /// # Errors
    ///
    /// [`BundleError::Empty`], [`BundleError::TooManyCerts`] or [`BundleError::BadCert`].
    pub fn from_der(
        trust_domain: TrustDomain,
        certs: Vec<CertificateDer<'static>>,
    ) -> Result<Self, BundleError> {
        if certs.is_empty() {
            return Err(BundleError::Empty);
        }
        if certs.len() > MAX_BUNDLE_CERTS {
            return Err(BundleError::TooManyCerts);
        }
        let anchors = certs
            .iter()
            .enumerate()
            .map(|(index, cert)| {
                webpki::anchor_from_trusted_cert(cert)
                    .map(|anchor| anchor.to_owned())
                    .map_err(|err| BundleError::BadCert {
                        index,
                        reason: err.to_string(),
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(TrustBundle {
            trust_domain,
            certs,
            anchors,
            sequence: None,
        })
    }

    /// Parses PEM `CERTIFICATE` blocks (other blocks are ignored), as SPIFFE helpers write
    /// `bundle.pem`.
    ///
    /// # Errors
    ///
    /// A [`BundleError`].
    pub fn from_pem(trust_domain: TrustDomain, pem: &[u8]) -> Result<Self, BundleError> {
        if pem.len() > MAX_BUNDLE_LEN {
            return Err(BundleError::TooLarge(pem.len()));
        }
        let mut certs = Vec::new();
        for cert in CertificateDer::pem_slice_iter(pem) {
            if certs.len() == MAX_BUNDLE_CERTS {
                return Err(BundleError::TooManyCerts);
            }
            certs.push(cert.map_err(|err| BundleError::Pem(err.to_string()))?);
        }
        TrustBundle::from_der(trust_domain, certs)
    }

    /// Parses the SPIFFE bundle format (a JWK set): every key with `"use": "x509-svid"`
    /// contributes its single `x5c` certificate; `jwt-svid` keys and keys of unknown use are
    /// skipped, as the SPIFFE Trust Domain and Bundle specification says.
    ///
    /// # Errors
    ///
    /// A [`BundleError`]; an `x509-svid` key without exactly one `x5c` entry is
    /// [`BundleError::Json`].
    pub fn from_spiffe_json(trust_domain: TrustDomain, json: &[u8]) -> Result<Self, BundleError> {
        #[derive(serde::Deserialize)]
        struct Doc {
            keys: Vec<Key>,
            spiffe_sequence: Option<u64>,
        }
        #[derive(serde::Deserialize)]
        struct Key {
            #[serde(rename = "use")]
            usage: Option<String>,
            x5c: Option<Vec<String>>,
        }
        if json.len() > MAX_BUNDLE_LEN {
            return Err(BundleError::TooLarge(json.len()));
        }
        let doc: Doc =
            serde_json::from_slice(json).map_err(|err| BundleError::Json(err.to_string()))?;
        let mut certs = Vec::new();
        for (index, key) in doc.keys.into_iter().enumerate() {
            if key.usage.as_deref() != Some("x509-svid") {
                continue;
            }
            let der = match key.x5c.as_deref() {
                Some([one]) => base64::engine::general_purpose::STANDARD
                    .decode(one)
                    .map_err(|err| {
                        BundleError::Json(format!("key {index}: x5c is not base64: {err}"))
                    })?,
                _ => {
                    return Err(BundleError::Json(format!(
                        "key {index}: an x509-svid key has exactly one x5c certificate"
                    )));
                }
            };
            if certs.len() == MAX_BUNDLE_CERTS {
                return Err(BundleError::TooManyCerts);
            }
            certs.push(CertificateDer::from(der));
        }
        let mut bundle = TrustBundle::from_der(trust_domain, certs)?;
        bundle.sequence = doc.spiffe_sequence;
        Ok(bundle)
    }

    /// Parses either format: JSON when the first non-blank byte is `{`, else PEM.
    ///
    /// # Errors
    ///
    /// As [`TrustBundle::from_pem`] or [`TrustBundle::from_spiffe_json`].
    pub fn parse(trust_domain: TrustDomain, bytes: &[u8]) -> Result<Self, BundleError> {
        if bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{') {
            TrustBundle::from_spiffe_json(trust_domain, bytes)
        } else {
            TrustBundle::from_pem(trust_domain, bytes)
        }
    }

    /// The trust domain it belongs to.
    pub fn trust_domain(&self) -> &TrustDomain {
        &self.trust_domain
    }

    /// The CA certificates.
    pub fn certs(&self) -> &[CertificateDer<'static>] {
        &self.certs
    }

    /// The certificates as trust anchors.
    pub fn anchors(&self) -> &[TrustAnchor<'static>] {
        &self.anchors
    }

    /// The `spiffe_sequence` of a JSON bundle.
    pub fn sequence(&self) -> Option<u64> {
        self.sequence
    }
}

/// The trust bundles a verifier accepts, one per trust domain: the workload's own and the
/// federated domains it was configured for. An SVID is checked against the bundle of its
/// own trust domain only; an SVID of a domain without a bundle here is refused.
#[derive(Debug, Clone, Default)]
pub struct BundleSet {
    bundles: HashMap<TrustDomain, Arc<TrustBundle>>,
}

impl BundleSet {
    /// No bundles: every SVID is refused.
    pub fn new() -> Self {
        BundleSet::default()
    }

    /// Adds (or replaces) the bundle of its trust domain.
    #[must_use]
    pub fn with(mut self, bundle: TrustBundle) -> Self {
        self.insert(bundle);
        self
    }

    /// Adds (or replaces) the bundle of its trust domain.
    pub fn insert(&mut self, bundle: TrustBundle) {
        self.bundles
            .insert(bundle.trust_domain.clone(), Arc::new(bundle));
    }

    /// The bundle of the trust domain named `name`.
    pub fn get(&self, name: &str) -> Option<&TrustBundle> {
        self.bundles.get(name).map(Arc::as_ref)
    }

    /// The trust domains with a bundle.
    pub fn trust_domains(&self) -> impl Iterator<Item = &TrustDomain> {
        self.bundles.keys()
    }

    /// Whether there is no bundle.
    pub fn is_empty(&self) -> bool {
        self.bundles.is_empty()
    }
}
