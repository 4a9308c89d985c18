//! The workload's own SVID and its trust bundles, from files that SPIFFE helpers rotate,
//! swapped in atomically so new handshakes use new material without a restart.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::bundle::MAX_BUNDLE_LEN;
use crate::svid::{MAX_CHAIN_LEN, inspect_serving_cert};
use crate::{BundleError, BundleSet, SpiffeId, SvidError, TrustBundle, TrustDomain};

/// Why identity material could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SourceError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A file is larger than the limit for its kind.
    #[error("{path} is larger than {max} bytes")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// The limit.
        max: usize,
    },
    /// The certificate chain file holds no certificate, or is malformed.
    #[error("the SVID certificate file {path} is malformed: {reason}")]
    Certificates {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The key file holds no private key, or is malformed.
    #[error("the SVID key file {path} holds no usable private key: {reason}")]
    Key {
        /// The file.
        path: PathBuf,
        /// What is wrong (never key material).
        reason: String,
    },
    /// The key does not belong to the leaf certificate, or the provider cannot use it.
    #[error("the SVID key does not match its certificate or cannot sign: {0}")]
    KeyMismatch(String),
    /// The leaf breaks the X.509-SVID rules.
    #[error("the SVID leaf certificate: {0}")]
    Svid(#[from] SvidError),
    /// A rotated SVID names another workload than the pinned one
    /// ([`FileSource::pin_spiffe_id`]).
    #[error("the rotated SVID is {found}, but this workload is {pinned}: refused")]
    SpiffeIdChanged {
        /// The SPIFFE ID pinned at start.
        pinned: String,
        /// The one the new SVID names (or `none`).
        found: String,
    },
    /// A trust bundle file.
    #[error("trust bundle {path}: {source}")]
    Bundle {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        #[source]
        source: BundleError,
    },
}

/// The workload's own certificate: an X.509-SVID (or, for a server, a plain DNS certificate)
/// and its key, ready for rustls.
#[derive(Clone)]
pub struct Svid {
    spiffe_id: Option<SpiffeId>,
    not_after: SystemTime,
    certified: Arc<CertifiedKey>,
}

impl Svid {
    /// An SVID from PEM: the certificate chain (leaf first) and a PKCS#8, PKCS#1 or SEC1 key.
    /// The key must belong to the leaf. A leaf with a URI SAN must follow the X.509-SVID
    /// rules; a leaf without one is accepted as a plain server certificate.
    ///
    /// # Errors
    ///
    /// A [`SourceError`]; the paths in it are `cert_name` and `key_name`.
    pub fn from_pem(
        chain_pem: &[u8],
        key_pem: &[u8],
        provider: &CryptoProvider,
    ) -> Result<Self, SourceError> {
        Svid::from_pem_named(
            chain_pem,
            key_pem,
            provider,
            Path::new("<certificate>"),
            Path::new("<key>"),
        )
    }

    fn from_pem_named(
        chain_pem: &[u8],
        key_pem: &[u8],
        provider: &CryptoProvider,
        cert_path: &Path,
        key_path: &Path,
    ) -> Result<Self, SourceError> {
        let chain = CertificateDer::pem_slice_iter(chain_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|err| SourceError::Certificates {
                path: cert_path.to_owned(),
                reason: err.to_string(),
            })?;
        let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|err| SourceError::Key {
            path: key_path.to_owned(),
            reason: redact_pem_error(&err),
        })?;
        Svid::from_der(chain, key, provider).map_err(|err| match err {
            SourceError::Certificates { reason, .. } => SourceError::Certificates {
                path: cert_path.to_owned(),
                reason,
            },
            other => other,
        })
    }

    /// An SVID from DER.
    ///
    /// # Errors
    ///
    /// A [`SourceError`].
    pub fn from_der(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
        provider: &CryptoProvider,
    ) -> Result<Self, SourceError> {
        let Some(leaf) = chain.first() else {
            return Err(SourceError::Certificates {
                path: PathBuf::from("<certificate>"),
                reason: "no CERTIFICATE block".into(),
            });
        };
        if chain.len() > MAX_CHAIN_LEN {
            return Err(SourceError::Svid(SvidError::ChainTooLong(chain.len())));
        }
        let info = inspect_serving_cert(leaf)?;
        let certified = CertifiedKey::from_der(chain, key, provider)
            .map_err(|err| SourceError::KeyMismatch(err.to_string()))?;
        Ok(Svid {
            spiffe_id: info.spiffe_id,
            not_after: info.not_after,
            certified: Arc::new(certified),
        })
    }

    /// The SPIFFE ID of the leaf, if it has one.
    pub fn spiffe_id(&self) -> Option<&SpiffeId> {
        self.spiffe_id.as_ref()
    }

    /// The end of the leaf's validity.
    pub fn not_after(&self) -> SystemTime {
        self.not_after
    }

    /// The chain and signing key for rustls.
    pub fn certified_key(&self) -> &Arc<CertifiedKey> {
        &self.certified
    }
}

impl fmt::Debug for Svid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Svid")
            .field("spiffe_id", &self.spiffe_id)
            .field("not_after", &self.not_after)
            .field("chain_len", &self.certified.cert.len())
            .finish_non_exhaustive()
    }
}

/// A key file's parse error without any of the file's content.
fn redact_pem_error(err: &rustls_pki_types::pem::Error) -> String {
    match err {
        rustls_pki_types::pem::Error::NoItemsFound => "no PRIVATE KEY block".into(),
        _ => "the PEM is malformed".into(),
    }
}

/// The material in force: the workload's SVID (if it has one) and the bundles it trusts.
#[derive(Debug, Clone)]
pub struct Material {
    /// The workload's own certificate and key.
    pub svid: Option<Svid>,
    /// The bundles of the trust domains peers may belong to.
    pub bundles: BundleSet,
}

/// Where a [`FileSource`] reads from: the files a SPIFFE helper (spiffe-helper, the SPIRE
/// agent's `svid.pem`/`svid_key.pem`/`bundle.pem`) or cert-manager's csi-driver-spiffe writes.
#[derive(Debug, Clone, Default)]
pub struct IdentityFiles {
    /// The SVID chain (PEM, leaf first) and its key (PEM).
    pub svid: Option<(PathBuf, PathBuf)>,
    /// One bundle file per accepted trust domain (PEM or SPIFFE bundle JSON): the workload's
    /// own and each federated one. Trust domains not listed are refused.
    pub bundles: Vec<(TrustDomain, PathBuf)>,
}

impl IdentityFiles {
    /// Nothing yet.
    pub fn new() -> Self {
        IdentityFiles::default()
    }

    /// The workload's SVID chain and key files.
    #[must_use]
    pub fn svid(mut self, chain: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        self.svid = Some((chain.into(), key.into()));
        self
    }

    /// The bundle file of `trust_domain`.
    #[must_use]
    pub fn bundle(mut self, trust_domain: TrustDomain, path: impl Into<PathBuf>) -> Self {
        self.bundles.push((trust_domain, path.into()));
        self
    }

    fn paths(&self) -> impl Iterator<Item = &Path> {
        self.svid
            .iter()
            .flat_map(|(chain, key)| [chain.as_path(), key.as_path()])
            .chain(self.bundles.iter().map(|(_, path)| path.as_path()))
    }
}

/// The workload's identity material, swapped atomically: verifiers and certificate
/// resolvers read [`IdentitySource::current`] on each handshake, so a reload takes effect for
/// new connections without a restart while open connections keep theirs.
///
/// A [`FileSource`] keeps one up to date from files; [`IdentitySource::fixed`] holds material
/// given in code.
pub struct IdentitySource {
    current: ArcSwap<Material>,
    provider: Arc<CryptoProvider>,
}

impl IdentitySource {
    /// Material that never changes (unless [`IdentitySource::replace`]d).
    pub fn fixed(material: Material, provider: Arc<CryptoProvider>) -> Arc<Self> {
        Arc::new(IdentitySource {
            current: ArcSwap::from_pointee(material),
            provider,
        })
    }

    /// The material in force now.
    pub fn current(&self) -> Arc<Material> {
        self.current.load_full()
    }

    /// Runs `f` on the material in force without taking a reference count.
    pub fn with_current<T>(&self, f: impl FnOnce(&Material) -> T) -> T {
        f(&self.current.load())
    }

    /// Puts `material` in force for new handshakes.
    pub fn replace(&self, material: Material) {
        self.current.store(Arc::new(material));
    }

    /// The crypto provider the material and verifiers use.
    pub fn provider(&self) -> &Arc<CryptoProvider> {
        &self.provider
    }
}

impl fmt::Debug for IdentitySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdentitySource")
            .field("current", &self.current.load())
            .finish_non_exhaustive()
    }
}

/// Keeps an [`IdentitySource`] in step with [`IdentityFiles`]: [`FileSource::reload`] reads
/// them now; [`FileSource::watch`] checks them on an interval (modification time and size
/// first, then a SHA-256 of the content) and reloads when they changed. A reload that fails —
/// a half-written file, a key that does not match its certificate — keeps the old material
/// and logs an error; the next change is tried again.
pub struct FileSource {
    files: IdentityFiles,
    source: Arc<IdentitySource>,
    seen: Mutex<Seen>,
    pinned: Option<SpiffeId>,
}

#[derive(Default, PartialEq, Eq)]
struct Seen {
    stamps: Vec<Option<(SystemTime, u64)>>,
    digest: Vec<u8>,
}

impl FileSource {
    /// Loads `files` now.
    ///
    /// # Errors
    ///
    /// A [`SourceError`] if any file is missing or invalid: a service must not start
    /// without the identity it was configured with.
    pub fn load(files: IdentityFiles, provider: Arc<CryptoProvider>) -> Result<Self, SourceError> {
        let (material, digest) = read_material(&files, &provider)?;
        let stamps = stamps(&files);
        Ok(FileSource {
            source: IdentitySource::fixed(material, provider),
            files,
            seen: Mutex::new(Seen { stamps, digest }),
            pinned: None,
        })
    }

    /// Pins the SPIFFE ID of the SVID loaded now: a rotated SVID that names another workload
    /// (or none) is refused like a broken file ([`SourceError::SpiffeIdChanged`]) and the
    /// old material stays in force. For a service whose ID was read once at start (its
    /// rollout scope, its log labels, the ID its peers expect), where a silent change of
    /// identity would leave those out of step. Without an SVID there is nothing to pin.
    #[must_use]
    pub fn pin_spiffe_id(mut self) -> Self {
        self.pinned = self
            .source
            .with_current(|m| m.svid.as_ref().and_then(|s| s.spiffe_id().cloned()));
        self
    }

    /// The source verifiers and resolvers read.
    pub fn source(&self) -> &Arc<IdentitySource> {
        &self.source
    }

    /// Reads the files again and puts the new material in force if it differs.
    ///
    /// # Errors
    ///
    /// A [`SourceError`]; the material in force is unchanged.
    pub fn reload(&self) -> Result<bool, SourceError> {
        let stamps = stamps(&self.files);
        let (material, digest) = read_material(&self.files, self.source.provider())?;
        if let Some(pinned) = &self.pinned {
            let found = material.svid.as_ref().and_then(Svid::spiffe_id);
            if found != Some(pinned) {
                return Err(SourceError::SpiffeIdChanged {
                    pinned: pinned.to_string(),
                    found: found.map_or_else(|| "none".to_owned(), ToString::to_string),
                });
            }
        }
        let mut seen = self
            .seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        seen.stamps = stamps;
        if seen.digest == digest {
            return Ok(false);
        }
        seen.digest = digest;
        self.source.replace(material);
        Ok(true)
    }

    /// Reloads if a file's modification time or size changed since the last look; a failed
    /// reload is logged and the old material kept.
    pub fn poll(&self) -> bool {
        let stamps = stamps(&self.files);
        {
            let mut seen = self
                .seen
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if seen.stamps == stamps {
                return false;
            }
            // Record the attempt, so a broken file is reported once per change, not per tick.
            seen.stamps = stamps;
        }
        match self.reload() {
            Ok(changed) => {
                if changed {
                    tracing::info!("workload identity material reloaded");
                }
                changed
            }
            Err(err) => {
                tracing::error!(error = %err, "workload identity files changed but do not load; keeping the previous material");
                false
            }
        }
    }

    /// Polls every `interval` on the current tokio runtime until the returned handle is
    /// aborted or the source dropped.
    pub fn watch(self: &Arc<Self>, interval: Duration) -> tokio::task::JoinHandle<()> {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticks.tick().await;
            loop {
                ticks.tick().await;
                let Some(this) = weak.upgrade() else { return };
                // File reads are small; keep them off the async workers anyway.
                let polled = tokio::task::spawn_blocking(move || {
                    this.poll();
                })
                .await;
                if polled.is_err() {
                    return;
                }
            }
        })
    }
}

impl fmt::Debug for FileSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileSource")
            .field("files", &self.files)
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

fn stamps(files: &IdentityFiles) -> Vec<Option<(SystemTime, u64)>> {
    files
        .paths()
        .map(|path| {
            std::fs::metadata(path)
                .ok()
                .and_then(|meta| Some((meta.modified().ok()?, meta.len())))
        })
        .collect()
}

fn read_limited(path: &Path, max: usize) -> Result<Vec<u8>, SourceError> {
    let bytes = std::fs::read(path).map_err(|source| SourceError::Read {
        path: path.to_owned(),
        source,
    })?;
    if bytes.len() > max {
        return Err(SourceError::TooLarge {
            path: path.to_owned(),
            max,
        });
    }
    Ok(bytes)
}

const MAX_PEM_LEN: usize = 1024 * 1024;

fn read_material(
    files: &IdentityFiles,
    provider: &CryptoProvider,
) -> Result<(Material, Vec<u8>), SourceError> {
    let mut digest = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    let svid = match &files.svid {
        None => None,
        Some((chain_path, key_path)) => {
            let chain = read_limited(chain_path, MAX_PEM_LEN)?;
            let key = read_limited(key_path, MAX_PEM_LEN)?;
            for part in [&chain, &key] {
                digest.update(&(part.len() as u64).to_be_bytes());
                digest.update(part);
            }
            Some(Svid::from_pem_named(
                &chain, &key, provider, chain_path, key_path,
            )?)
        }
    };
    let mut bundles = BundleSet::new();
    for (trust_domain, path) in &files.bundles {
        let bytes = read_limited(path, MAX_BUNDLE_LEN)?;
        digest.update(trust_domain.as_str().as_bytes());
        digest.update(&(bytes.len() as u64).to_be_bytes());
        digest.update(&bytes);
        let bundle = TrustBundle::parse(trust_domain.clone(), &bytes).map_err(|source| {
            SourceError::Bundle {
                path: path.clone(),
                source,
            }
        })?;
        bundles.insert(bundle);
    }
    Ok((
        Material { svid, bundles },
        digest.finish().as_ref().to_vec(),
    ))
}
