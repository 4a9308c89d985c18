//! `[client_tls]`: this host's X.509-SVID, presented as the client certificate to bundle
//! servers (`https://` bundle URLs) and to the `[delivery]` server, so that a policy-delivery
//! server knows this host by its SVID, with no token. The files are checked for rotation
//! every `reload_seconds`; a rotated SVID is presented from the next connection on.
//!
//! ```toml
//! [client_tls]
//! cert = "/run/spiffe/svid.pem"          # chain, leaf first
//! key = "/run/spiffe/svid_key.pem"
//! server_id = "spiffe://example.org/policy-delivery"   # the SPIFFE ID servers must present
//! reload_seconds = 5
//! [client_tls.trust_domains]             # the bundles servers' SVIDs verify to
//! "example.org" = "/run/spiffe/bundle.pem"
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// `[client_tls]`.
#[cfg_attr(
    not(feature = "tls"),
    expect(
        dead_code,
        reason = "read by the tls build; without it a [client_tls] section stops the start"
    )
)]
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ClientTlsConfig {
    /// This host's certificate chain (PEM, leaf first): its X.509-SVID.
    pub(crate) cert: PathBuf,
    /// Its private key (PEM).
    pub(crate) key: PathBuf,
    /// The trust bundle of each trust domain whose servers are accepted (PEM or SPIFFE
    /// bundle JSON).
    pub(crate) trust_domains: BTreeMap<String, PathBuf>,
    /// The SPIFFE ID servers must present, e.g. the delivery server's (`spiffe://TD/path`,
    /// or `spiffe://TD/path/*` for the IDs below it). Absent: any SVID of the trust domains.
    pub(crate) server_id: Option<String>,
    /// Seconds between checks of the files for rotation (default 5, 1 to 3,600).
    pub(crate) reload_seconds: Option<u64>,
}

/// `[client_tls]` loaded: the identity files (watched once [`ClientIdentity::watch`] runs)
/// and the servers accepted.
#[cfg(feature = "tls")]
#[derive(Debug)]
pub(crate) struct ClientIdentity {
    files: std::sync::Arc<portcullis::tls::identity::FileSource>,
    servers: portcullis::tls::identity::PeerIds,
    reload: std::time::Duration,
}

/// `[client_tls]` needs the `tls` feature; [`ClientTlsConfig::open`] says so.
#[cfg(not(feature = "tls"))]
#[derive(Debug)]
pub(crate) enum ClientIdentity {}

impl ClientTlsConfig {
    /// Loads the files (named relative to `base`, the configuration file's folder).
    #[cfg(not(feature = "tls"))]
    pub(crate) fn open(&self, _base: &Path) -> Result<ClientIdentity, String> {
        Err("[client_tls] is configured but this binary was built without the `tls` feature".into())
    }

    /// Loads the files (named relative to `base`, the configuration file's folder).
    #[cfg(feature = "tls")]
    pub(crate) fn open(&self, base: &Path) -> Result<ClientIdentity, String> {
        use portcullis::tls::identity::{
            FileSource, IdentityFiles, PeerIds, SpiffeIdPattern, TrustDomain, crypto_provider,
        };
        let reload = self
            .reload_seconds
            .unwrap_or(crate::tls::DEFAULT_RELOAD_SECONDS);
        if !(1..=crate::tls::MAX_RELOAD_SECONDS).contains(&reload) {
            return Err(format!(
                "[client_tls] reload_seconds must be 1 to {}, not {reload}",
                crate::tls::MAX_RELOAD_SECONDS
            ));
        }
        if self.trust_domains.is_empty() {
            return Err(
                "[client_tls] needs [client_tls.trust_domains]: the bundles servers' SVIDs \
                 verify to"
                    .into(),
            );
        }
        let mut files = IdentityFiles::new().svid(base.join(&self.cert), base.join(&self.key));
        for (name, path) in &self.trust_domains {
            let domain: TrustDomain = name
                .parse()
                .map_err(|e| format!("[client_tls] trust domain {name:?}: {e}"))?;
            files = files.bundle(domain, base.join(path));
        }
        let servers = match &self.server_id {
            Some(id) => PeerIds::Matching(vec![
                id.parse::<SpiffeIdPattern>()
                    .map_err(|e| format!("[client_tls] server_id {id:?}: {e}"))?,
            ]),
            None => PeerIds::Any,
        };
        // This host's SPIFFE ID is read once (its rollout scope, the identity the server
        // knows it by): a rotated SVID naming another workload is refused, the old one kept.
        let files = FileSource::load(files, crypto_provider())
            .map_err(|e| format!("[client_tls] {e}"))?
            .pin_spiffe_id();
        let identity = ClientIdentity {
            files: std::sync::Arc::new(files),
            servers,
            reload: std::time::Duration::from_secs(reload),
        };
        if identity.spiffe_id().is_none() {
            return Err("[client_tls] cert has no SPIFFE ID (URI SAN): it is no X.509-SVID".into());
        }
        Ok(identity)
    }
}

#[cfg(feature = "tls")]
impl ClientIdentity {
    /// Checks the files every `reload_seconds` on the current runtime.
    pub(crate) fn watch(&self) -> tokio::task::JoinHandle<()> {
        self.files.watch(self.reload)
    }

    /// The SPIFFE ID of this host's SVID.
    pub(crate) fn spiffe_id(&self) -> Option<String> {
        self.files
            .source()
            .current()
            .svid
            .as_ref()
            .and_then(|svid| svid.spiffe_id().map(ToString::to_string))
    }

    /// `source` presenting this host's SVID, for an `https://` URL.
    pub(crate) fn bundle_source(
        &self,
        source: portcullis::policy::HttpSource,
    ) -> Result<portcullis::policy::HttpSource, portcullis::policy::PolicyError> {
        source.with_svid(self.files.source(), self.servers.clone())
    }

    /// An HTTP client presenting this host's SVID and accepting only the configured servers,
    /// following no redirect.
    pub(crate) fn http_client(
        &self,
        timeout: std::time::Duration,
    ) -> Result<reqwest::Client, String> {
        portcullis::tls::reqwest_client(self.files.source(), self.servers.clone())
            .map_err(|e| format!("[client_tls] {e}"))?
            .redirect(reqwest::redirect::Policy::none())
            .timeout(timeout)
            .build()
            .map_err(|e| format!("[client_tls] HTTP client: {e}"))
    }
}

#[cfg(not(feature = "tls"))]
impl ClientIdentity {
    /// See the `tls` build.
    pub(crate) fn watch(&self) -> tokio::task::JoinHandle<()> {
        match *self {}
    }

    /// See the `tls` build.
    pub(crate) fn spiffe_id(&self) -> Option<String> {
        match *self {}
    }

    /// See the `tls` build.
    pub(crate) fn bundle_source(
        &self,
        _source: portcullis::policy::HttpSource,
    ) -> Result<portcullis::policy::HttpSource, portcullis::policy::PolicyError> {
        match *self {}
    }

    /// See the `tls` build.
    pub(crate) fn http_client(
        &self,
        _timeout: std::time::Duration,
    ) -> Result<reqwest::Client, String> {
        match *self {}
    }
}
