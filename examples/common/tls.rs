//! `[tls]` for the reference binaries (each includes this file with `#[path]`): serve over
//! rustls with the workload's certificate — a SPIFFE X.509-SVID, rotated without restart —
//! with client certificates off, optional or required, and turn each verified client SPIFFE
//! ID into a service principal (subject = the ID, groups from patterns) for the auth chain.
//!
//! ```toml
//! [tls]
//! cert = "svid.pem"                  # chain, leaf first (relative to the config file)
//! key = "svid_key.pem"
//! client_certs = "optional"          # off | optional | required (default off)
//! reload_seconds = 5                 # how often the files are checked for rotation
//! [tls.trust_domains]                # one bundle per trust domain: PEM or SPIFFE JSON
//! "prod.example" = "bundle.pem"
//! [[tls.groups]]                     # groups for client SPIFFE IDs
//! pattern = "spiffe://prod.example/ci/*"
//! group = "ci"
//! ```
//!
//! Built without the `tls` feature, a configuration with `[tls]` is refused at start (never
//! served in plain HTTP instead).
#![allow(
    dead_code,
    reason = "shared by the examples; each uses a subset (the sidecar reads its own SVID, the \
              access broker also dials out)"
)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The seconds between checks of the identity files when `reload_seconds` is not set.
pub(crate) const DEFAULT_RELOAD_SECONDS: u64 = 5;

/// The longest `reload_seconds` accepted: an hour.
pub(crate) const MAX_RELOAD_SECONDS: u64 = 3_600;

/// `[tls]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TlsConfig {
    /// The certificate chain this service presents (PEM, leaf first): its X.509-SVID as the
    /// SPIRE agent or spiffe-helper writes it, or any server certificate.
    pub(crate) cert: PathBuf,
    /// Its private key (PEM).
    pub(crate) key: PathBuf,
    /// Whether clients are asked for a certificate.
    #[serde(default)]
    pub(crate) client_certs: ClientCerts,
    /// The trust bundle of each SPIFFE trust domain whose SVIDs are accepted (PEM, or the
    /// SPIFFE bundle JSON). A client SVID verifies to its own domain's bundle only.
    #[serde(default)]
    pub(crate) trust_domains: BTreeMap<String, PathBuf>,
    /// Groups for verified client SPIFFE IDs, so roles bind to a group of services.
    #[serde(default)]
    pub(crate) groups: Vec<SpiffeGroup>,
    /// Seconds between checks of the files for rotation (default 5, 1 to 3,600).
    pub(crate) reload_seconds: Option<u64>,
}

/// `client_certs`: `off`, `optional` or `required`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum ClientCerts {
    /// Plain server TLS; callers authenticate with tokens.
    #[default]
    Off,
    /// Asked for: a verified SVID authenticates the caller, a caller without one uses a
    /// token. A certificate that does not verify fails the handshake.
    Optional,
    /// Only callers with a verified SVID connect.
    Required,
}

/// `[[tls.groups]]`: members of `pattern` (an exact SPIFFE ID, or `spiffe://TD/prefix/*`) get
/// `group`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SpiffeGroup {
    /// The SPIFFE IDs.
    pub(crate) pattern: String,
    /// The group they get.
    pub(crate) group: String,
}

/// Why `[tls]` cannot be served.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TlsSetupError {
    /// The binary was built without the `tls` feature.
    #[error("[tls] is configured but this binary was built without the `tls` feature")]
    NotBuilt,
    /// A setting is wrong.
    #[error("[tls] {0}")]
    Invalid(String),
    /// The certificate, key or a bundle did not load.
    #[cfg(feature = "tls")]
    #[error("[tls] {0}")]
    Files(#[from] portcullis::tls::identity::SourceError),
    /// rustls refused the configuration.
    #[cfg(feature = "tls")]
    #[error("[tls] {0}")]
    Config(#[from] portcullis::tls::identity::TlsConfigError),
}

impl TlsConfig {
    /// Resolves the file names against `base`, the configuration file's folder.
    pub(crate) fn resolve_paths(&mut self, base: &Path) {
        for path in [&mut self.cert, &mut self.key]
            .into_iter()
            .chain(self.trust_domains.values_mut())
        {
            *path = base.join(&*path);
        }
    }

    /// Loads the files and checks the settings.
    ///
    /// # Errors
    ///
    /// [`TlsSetupError`]: an unreadable or malformed file, a bad trust domain or pattern,
    /// client certificates without a bundle, or a binary built without `tls`.
    #[cfg(not(feature = "tls"))]
    pub(crate) fn open(&self) -> Result<Tls, TlsSetupError> {
        Err(TlsSetupError::NotBuilt)
    }

    /// Loads the files and checks the settings.
    ///
    /// # Errors
    ///
    /// [`TlsSetupError`]: an unreadable or malformed file, a bad trust domain or pattern,
    /// client certificates without a bundle, or a binary built without `tls`.
    #[cfg(feature = "tls")]
    pub(crate) fn open(&self) -> Result<Tls, TlsSetupError> {
        use portcullis::tls::identity::{
            FileSource, IdentityFiles, SpiffeAuthenticator, TrustDomain, crypto_provider,
        };
        let reload = self.reload_seconds.unwrap_or(DEFAULT_RELOAD_SECONDS);
        if !(1..=MAX_RELOAD_SECONDS).contains(&reload) {
            return Err(TlsSetupError::Invalid(format!(
                "reload_seconds must be 1 to {MAX_RELOAD_SECONDS}, not {reload}"
            )));
        }
        if self.client_certs != ClientCerts::Off && self.trust_domains.is_empty() {
            return Err(TlsSetupError::Invalid(
                "client_certs needs [tls.trust_domains]: the bundles client SVIDs verify to".into(),
            ));
        }
        if self.client_certs == ClientCerts::Off && !self.groups.is_empty() {
            return Err(TlsSetupError::Invalid(
                "[[tls.groups]] needs client_certs = \"optional\" or \"required\"".into(),
            ));
        }
        let mut files = IdentityFiles::new().svid(&self.cert, &self.key);
        let mut domains = Vec::new();
        for (name, path) in &self.trust_domains {
            let domain: TrustDomain = name
                .parse()
                .map_err(|e| TlsSetupError::Invalid(format!("trust domain {name:?}: {e}")))?;
            domains.push(domain.clone());
            files = files.bundle(domain, path);
        }
        let mut spiffe = SpiffeAuthenticator::new().trust_domains(domains);
        for SpiffeGroup { pattern, group } in &self.groups {
            spiffe = spiffe
                .group(pattern, group.clone())
                .map_err(|e| TlsSetupError::Invalid(format!("groups: {e}")))?;
        }
        // The binaries read their SPIFFE ID once (rollout scope, log labels, the ID peers
        // expect): a rotated SVID naming another workload is refused, the old one kept.
        let files =
            std::sync::Arc::new(FileSource::load(files, crypto_provider())?.pin_spiffe_id());
        // An expired SVID still loads (a SPIFFE helper may be about to rotate it), but every
        // peer will refuse it: say so at start rather than at the first failed handshake.
        if let Some(svid) = files.source().current().svid.as_ref()
            && svid.not_after() < std::time::SystemTime::now()
        {
            tracing::warn!(
                spiffe_id = ?svid.spiffe_id().map(ToString::to_string),
                "the SVID in [tls] cert has expired; peers will refuse it until it is rotated"
            );
        }
        let tls = Tls {
            files,
            client_certs: self.client_certs,
            spiffe: std::sync::Arc::new(portcullis::token::AuthChain::new(vec![
                std::sync::Arc::new(spiffe.clone()),
            ])),
            authenticator: spiffe,
            reload: std::time::Duration::from_secs(reload),
        };
        // Fail at start, not at the first handshake.
        tls.server()?;
        Ok(tls)
    }
}

/// `[tls]` loaded: the identity files (watched for rotation once [`Tls::watch`] runs) and the
/// chain that makes principals of verified client SVIDs.
#[cfg(feature = "tls")]
pub(crate) struct Tls {
    files: std::sync::Arc<portcullis::tls::identity::FileSource>,
    client_certs: ClientCerts,
    spiffe: std::sync::Arc<portcullis::token::AuthChain>,
    authenticator: portcullis::tls::identity::SpiffeAuthenticator,
    reload: std::time::Duration,
}

/// `[tls]` cannot be loaded without the `tls` feature; [`TlsConfig::open`] says so.
#[cfg(not(feature = "tls"))]
#[derive(Debug)]
pub(crate) enum Tls {}

#[cfg(not(feature = "tls"))]
impl Tls {
    /// See the `tls` build.
    pub(crate) fn groups_of(&self, _subject: &str) -> Option<Vec<String>> {
        match *self {}
    }
}

/// Whether `subject` is written as a SPIFFE ID (`spiffe:` in any case): the subject of a
/// service that authenticated with its SVID, never a name to look up elsewhere.
pub(crate) fn is_spiffe_subject(subject: &str) -> bool {
    subject
        .get(..7)
        .is_some_and(|scheme| scheme.eq_ignore_ascii_case("spiffe:"))
}

#[cfg(feature = "tls")]
impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("files", &self.files)
            .field("client_certs", &self.client_certs)
            .field("authenticator", &self.authenticator)
            .field("reload", &self.reload)
            .finish_non_exhaustive()
    }
}

#[cfg(feature = "tls")]
impl Tls {
    /// Checks the files every `reload_seconds` on the current runtime: a rotated SVID or
    /// bundle is used for new handshakes without a restart; a broken file keeps the old one.
    pub(crate) fn watch(&self) -> tokio::task::JoinHandle<()> {
        self.files.watch(self.reload)
    }

    /// The server: this service's certificate, client SVIDs per `client_certs` (any ID
    /// whose SVID verifies; what it may do is the roles' business), each one made a
    /// principal once per connection.
    ///
    /// # Errors
    ///
    /// [`TlsSetupError::Config`] if rustls refuses the configuration.
    pub(crate) fn server(&self) -> Result<portcullis::tls::TlsServer, TlsSetupError> {
        self.server_for(portcullis::tls::identity::PeerIds::Any)
    }

    /// As [`Tls::server`], admitting only the client IDs `clients` accepts (at the
    /// handshake).
    ///
    /// # Errors
    ///
    /// [`TlsSetupError::Config`] if rustls refuses the configuration.
    pub(crate) fn server_for(
        &self,
        clients: portcullis::tls::identity::PeerIds,
    ) -> Result<portcullis::tls::TlsServer, TlsSetupError> {
        use portcullis::tls::identity::ClientAuth;
        let client_auth = match self.client_certs {
            ClientCerts::Off => ClientAuth::Off,
            ClientCerts::Optional => ClientAuth::Optional,
            ClientCerts::Required => ClientAuth::Required,
        };
        let server =
            portcullis::tls::TlsServer::from_source(self.files.source(), client_auth, clients)?;
        Ok(if client_auth == ClientAuth::Off {
            server
        } else {
            server.authenticate_peers(self.spiffe.clone())
        })
    }

    /// As [`Tls::server`], but a verified client SVID is not made a principal: its SPIFFE ID
    /// only goes into each request's extensions ([`portcullis::tls::PeerIdentity`]) and an
    /// `Authorization` header beside it reaches the handler, for a service that decides
    /// itself what a client certificate stands for (policy-delivery's hosts).
    ///
    /// # Errors
    ///
    /// [`TlsSetupError::Config`] if rustls refuses the configuration.
    pub(crate) fn server_with_peer_ids(&self) -> Result<portcullis::tls::TlsServer, TlsSetupError> {
        use portcullis::tls::identity::{ClientAuth, PeerIds};
        let client_auth = match self.client_certs {
            ClientCerts::Off => ClientAuth::Off,
            ClientCerts::Optional => ClientAuth::Optional,
            ClientCerts::Required => ClientAuth::Required,
        };
        Ok(portcullis::tls::TlsServer::from_source(
            self.files.source(),
            client_auth,
            PeerIds::Any,
        )?)
    }

    /// The identity material (for a client that presents this service's SVID).
    pub(crate) fn source(&self) -> &std::sync::Arc<portcullis::tls::identity::IdentitySource> {
        self.files.source()
    }

    /// The groups `[[tls.groups]]` give the SPIFFE ID `subject` (the same as the principal
    /// its SVID authenticates as); `None` if it is not a valid SPIFFE ID of an accepted trust
    /// domain.
    pub(crate) fn groups_of(&self, subject: &str) -> Option<Vec<String>> {
        let id: portcullis::tls::identity::SpiffeId = subject.parse().ok()?;
        let principal = self.authenticator.principal(&id).ok()?;
        Some(principal.groups().map(str::to_owned).collect())
    }

    /// The SPIFFE ID of this service's current SVID, if its certificate has one.
    pub(crate) fn spiffe_id(&self) -> Option<portcullis::tls::identity::SpiffeId> {
        self.files
            .source()
            .current()
            .svid
            .as_ref()
            .and_then(|svid| svid.spiffe_id().cloned())
    }
}

/// Logs a warning when plain HTTP is served on an address other than loopback: passwords,
/// tokens and (for the brokers) credentials would cross the network in clear. Starting is
/// still allowed (a TLS-terminating proxy on the same host may front it), but never silently.
pub(crate) fn warn_if_plain_and_exposed(address: &std::net::SocketAddr, what: &str) {
    if exposed(address) {
        tracing::warn!(
            %address,
            "{what} serves plain HTTP on a non-loopback address: passwords, tokens and \
             answers cross the network in clear; configure [tls] or listen on 127.0.0.1"
        );
    }
}

fn exposed(address: &std::net::SocketAddr) -> bool {
    !address.ip().is_loopback()
}

#[cfg(test)]
mod exposure_tests {
    #[test]
    fn only_loopback_is_quiet() {
        for (address, exposed) in [
            ("127.0.0.1:8080", false),
            ("[::1]:8080", false),
            ("127.0.0.2:1", false),
            ("0.0.0.0:8080", true),
            ("[::]:8080", true),
            ("10.1.2.3:443", true),
        ] {
            let address: std::net::SocketAddr = address.parse().unwrap();
            assert_eq!(super::exposed(&address), exposed, "{address}");
        }
    }
}
