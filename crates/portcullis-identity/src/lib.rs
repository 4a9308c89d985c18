#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

mod auth;
mod bundle;
mod id;
mod source;
mod svid;
mod tls;
mod xfcc;

use std::sync::Arc;

pub use auth::{SpiffeAuthenticator, TRUST_DOMAIN_CLAIM, X509_SVID};
pub use bundle::{BundleError, BundleSet, MAX_BUNDLE_CERTS, MAX_BUNDLE_LEN, TrustBundle};
pub use id::{
    MAX_SPIFFE_ID_LEN, MAX_TRUST_DOMAIN_LEN, SpiffeId, SpiffeIdError, SpiffeIdPattern, TrustDomain,
};
pub use source::{FileSource, IdentityFiles, IdentitySource, Material, SourceError, Svid};
pub use svid::{
    LeafInfo, MAX_CERT_LEN, MAX_CHAIN_LEN, SvidError, SvidUsage, inspect_leaf,
    inspect_serving_cert, verify_svid,
};
pub use tls::{
    ClientAuth, PeerIds, SpiffeClientVerifier, SpiffeServerVerifier, SvidResolver, TlsConfigError,
    client_config, peer_spiffe_id, peer_svid, server_config,
};
pub use xfcc::{
    Forwarded, MAX_XFCC_ELEMENTS, MAX_XFCC_LEN, XFCC_HEADER, XfccElement, XfccError, XfccPolicy,
    parse_xfcc,
};

/// The re-exported rustls, so callers build on the same version.
pub use rustls;

/// The crypto provider every TLS configuration of this workspace runs on (aws-lc-rs, the
/// stack its JWTs, digests and HMACs use too), as a value to pass explicitly. Nothing here
/// installs or reads a process-level default provider, so a second provider in the final
/// graph (ring, from an embedder's other dependencies) changes nothing.
pub fn crypto_provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}
