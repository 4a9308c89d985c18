//! The TLS client configuration of every HTTPS client in Portcullis (OIDC discovery, JWKS,
//! introspection and userinfo; Duo; bundle polling): rustls on aws-lc-rs, the workspace's one
//! crypto stack, passed explicitly, with the system's root certificates.
//!
//! Each client hands this configuration to reqwest (`tls_backend_preconfigured`), so neither
//! a second rustls provider in the final graph, nor a process-level provider the application
//! installed, nor reqwest's `native-tls` backend turned on by another dependency changes the
//! TLS stack these clients run on.
//!
//! ```
//! let config = portcullis_core::https::client_config()?;
//! assert!(config.alpn_protocols.is_empty()); // HTTP/1.1, as the clients speak
//! # Ok::<(), rustls::Error>(())
//! ```

use std::sync::Arc;

use rustls_platform_verifier::BuilderVerifierExt as _;

/// A rustls client configuration on aws-lc-rs that verifies servers against the system's
/// root certificates (as `rustls-platform-verifier` reads them: on Linux the system store,
/// or `SSL_CERT_FILE` / `SSL_CERT_DIR`), TLS 1.2 and 1.3, no client certificate.
///
/// # Errors
///
/// A [`rustls::Error`] if the platform verifier cannot be set up (no usable root store).
pub fn client_config() -> Result<rustls::ClientConfig, rustls::Error> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_platform_verifier()?
        .with_no_client_auth())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_configuration_is_on_aws_lc_rs_whatever_the_process_default() {
        let config = client_config().unwrap();
        let ours: Vec<_> = config
            .crypto_provider()
            .cipher_suites
            .iter()
            .map(|s| s.suite())
            .collect();
        let aws_lc_rs: Vec<_> = rustls::crypto::aws_lc_rs::default_provider()
            .cipher_suites
            .iter()
            .map(|s| s.suite())
            .collect();
        assert_eq!(ours, aws_lc_rs);
        assert!(rustls::crypto::CryptoProvider::get_default().is_none());
    }
}
