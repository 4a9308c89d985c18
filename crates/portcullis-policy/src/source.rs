//! Bundle sources (feature `sources`): a folder watched for changes and an HTTP URL polled
//! with `ETag` / `If-None-Match`, each feeding a [`PolicyStore`] from a background task.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use async_trait::async_trait;

use crate::{Bundle, BundleLimits, BundleVerifier, PolicyError, PolicyStore};

/// What a source found when asked.
#[derive(Debug)]
pub enum Fetched {
    /// Nothing changed since the bundle last activated from this source.
    Unchanged,
    /// A new bundle to validate and activate.
    Bundle(Bundle),
}

/// Where a bundle comes from.
#[async_trait]
pub trait BundleSource: Send + 'static {
    /// The bundle's name.
    fn name(&self) -> &str;
    /// Looks for a new bundle.
    ///
    /// # Errors
    ///
    /// A failure to reach or read the source, or a bundle that does not load.
    async fn fetch(&mut self) -> Result<Fetched, PolicyError>;
    /// The last fetched bundle is now active: later fetches may report it unchanged.
    fn activated(&mut self);
    /// Whether polls back off after failures ([`PollOptions::pause_for`]). Default `true`:
    /// a remote server is spared while it fails. A folder answers `false`: reading it
    /// costs little, and a fix written there must serve within the poll interval.
    fn backs_off(&self) -> bool {
        true
    }
}

/// A bundle in a folder, reloaded when any file in it changes (path, size or modification
/// time), as an editor or `rsync` leaves it.
///
/// A folder that is missing, is not a folder, or holds no bundle is a fetch error, refused
/// as a broken bundle is: the active revision keeps serving, and nothing is activated
/// (or kept as last known good) from it. A folder holds a bundle when it has a top-level
/// `.manifest` (a manifest alone is a deliberately empty bundle, as OPA accepts) or at
/// least one policy (`*.rego`) or data (`data.json`) file; other files (a `README`) do
/// not count. An emptied folder (`mv bundle bundle.bak; mkdir bundle`) is therefore a
/// mistake to report, not a revision that serves no policy.
#[derive(Debug)]
pub struct DirSource {
    name: String,
    dir: PathBuf,
    limits: BundleLimits,
    verifier: Option<Arc<BundleVerifier>>,
    active: Option<u64>,
    fetched: Option<u64>,
}

impl DirSource {
    /// Watches `dir` for bundle `name`.
    pub fn new(name: impl Into<String>, dir: impl Into<PathBuf>, limits: BundleLimits) -> Self {
        DirSource {
            name: name.into(),
            dir: dir.into(),
            limits,
            verifier: None,
            active: None,
            fetched: None,
        }
    }

    /// Requires every bundle read from the folder to be signed and accepted by
    /// `verifier` ([`Bundle::verified`]).
    #[must_use]
    pub fn verify_with(mut self, verifier: Arc<BundleVerifier>) -> Self {
        self.verifier = Some(verifier);
        self
    }
}

/// Reads `files` as bundle `name`, through `verifier` when there is one.
fn read(
    name: &str,
    files: Vec<(String, Vec<u8>)>,
    verifier: Option<&BundleVerifier>,
) -> Result<Bundle, PolicyError> {
    match verifier {
        Some(verifier) => Bundle::verified(name, files, verifier),
        None => Bundle::from_files(name, files),
    }
}

/// Refuses a folder's `files` that hold no bundle: no `.manifest` at the top and no policy
/// or data file anywhere (see [`DirSource`]).
fn check_holds_bundle(
    name: &str,
    dir: &Path,
    files: &[(String, Vec<u8>)],
) -> Result<(), PolicyError> {
    let holds = files.iter().any(|(path, _)| {
        let file = path.rsplit('/').next().unwrap_or(path);
        path == ".manifest"
            || file.ends_with(".rego")
            || matches!(file, "data.json" | "data.yaml" | "data.yml")
    });
    if holds {
        Ok(())
    } else {
        Err(PolicyError::bundle(
            name,
            format!(
                "{} holds no bundle (no .manifest, *.rego or data.json file); \
                 an empty folder is refused, not served as an empty revision",
                dir.display()
            ),
        ))
    }
}

/// A fingerprint of every file under `dir`: relative path, size, modification time.
fn fingerprint(dir: &Path) -> std::io::Result<u64> {
    fn walk(dir: &Path, hasher: &mut DefaultHasher) -> std::io::Result<()> {
        let mut entries = std::fs::read_dir(dir)?.collect::<Result<Vec<_>, _>>()?;
        entries.sort_by_key(std::fs::DirEntry::file_name);
        for entry in entries {
            let meta = entry.metadata()?;
            entry.file_name().hash(hasher);
            meta.len().hash(hasher);
            meta.modified()
                .ok()
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map(|d| d.as_nanos())
                .hash(hasher);
            if entry.file_type()?.is_dir() {
                walk(&entry.path(), hasher)?;
            }
        }
        Ok(())
    }
    let mut hasher = DefaultHasher::new();
    walk(dir, &mut hasher)?;
    Ok(hasher.finish())
}

#[async_trait]
impl BundleSource for DirSource {
    fn name(&self) -> &str {
        &self.name
    }

    async fn fetch(&mut self) -> Result<Fetched, PolicyError> {
        let dir = self.dir.clone();
        let name = self.name.clone();
        let limits = self.limits;
        let active = self.active;
        let verifier = self.verifier.clone();
        let (print, bundle) = tokio::task::spawn_blocking(move || {
            if !dir.is_dir() {
                return Err(PolicyError::bundle(
                    &name,
                    format!("{} is missing or not a folder", dir.display()),
                ));
            }
            let print = fingerprint(&dir).map_err(|e| PolicyError::io(dir.display(), e))?;
            if Some(print) == active {
                return Ok((print, None));
            }
            let files = Bundle::files_from_dir(&name, &dir, &limits)?;
            check_holds_bundle(&name, &dir, &files)?;
            read(&name, files, verifier.as_deref()).map(|b| (print, Some(b)))
        })
        .await
        .map_err(|e| PolicyError::bundle(&self.name, format!("the loader failed: {e}")))??;
        self.fetched = Some(print);
        Ok(bundle.map_or(Fetched::Unchanged, Fetched::Bundle))
    }

    fn activated(&mut self) {
        self.active = self.fetched;
    }

    fn backs_off(&self) -> bool {
        false
    }
}

/// A bundle tarball at an HTTP(S) URL, as OPA's bundle servers serve it: polled with
/// `If-None-Match`, a `304` meaning unchanged; the download is capped in size and time.
#[derive(Debug)]
pub struct HttpSource {
    name: String,
    url: String,
    client: reqwest::Client,
    /// Each request's time limit, for a client rebuilt by [`HttpSource::with_svid`].
    #[cfg(feature = "svid")]
    timeout: Duration,
    limits: BundleLimits,
    verifier: Option<Arc<BundleVerifier>>,
    bearer: Option<BearerToken>,
    active_etag: Option<String>,
    fetched_etag: Option<String>,
}

/// A bearer token, never shown by `Debug`.
struct BearerToken(String);

impl std::fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BearerToken(<redacted>)")
    }
}

impl HttpSource {
    /// Polls `url` for bundle `name`; each request (connect, headers and body) must finish
    /// within `timeout`.
    ///
    /// # Errors
    ///
    /// [`PolicyError::Bundle`] if the HTTP client cannot be built.
    pub fn new(
        name: impl Into<String>,
        url: impl Into<String>,
        timeout: Duration,
        limits: BundleLimits,
    ) -> Result<Self, PolicyError> {
        let name = name.into();
        // rustls on aws-lc-rs, whatever else the final graph enables (portcullis_core::https).
        let tls = portcullis_core::https::client_config()
            .map_err(|e| PolicyError::bundle(&name, format!("HTTP client TLS: {e}")))?;
        let client = http_client(&name, tls, timeout)?;
        Ok(HttpSource {
            name,
            url: url.into(),
            client,
            #[cfg(feature = "svid")]
            timeout,
            limits,
            verifier: None,
            bearer: None,
            active_etag: None,
            fetched_etag: None,
        })
    }

    /// Presents this workload's X.509-SVID — the current one of `source`, so an SVID rotated
    /// on disk (`portcullis_identity::FileSource::watch`) is presented from the next
    /// connection on — as the client certificate of every request (mutual TLS), and accepts
    /// only a server whose SVID verifies against `source`'s trust bundles and whose SPIFFE ID
    /// `server` accepts: the server's identity is authorized, not only its CA, and the
    /// system's root certificates no longer count. The URL's host name is used to connect,
    /// not to check the certificate. A policy-delivery server then knows this host by its
    /// SVID, with no bearer token. Redirects are still never followed.
    ///
    /// # Errors
    ///
    /// [`PolicyError::Bundle`] if the URL is not `https://` (a certificate is only presented
    /// over TLS), if `source` has no trust bundle, or if the HTTP client cannot be built.
    #[cfg(feature = "svid")]
    pub fn with_svid(
        mut self,
        source: &Arc<portcullis_identity::IdentitySource>,
        server: portcullis_identity::PeerIds,
    ) -> Result<Self, PolicyError> {
        let https = self
            .url
            .get(..8)
            .is_some_and(|scheme| scheme.eq_ignore_ascii_case("https://"));
        if !https {
            return Err(PolicyError::bundle(
                &self.name,
                format!(
                    "{}: an SVID is presented over TLS only; use an https:// URL",
                    self.url
                ),
            ));
        }
        let tls = portcullis_identity::client_config(source, server)
            .map_err(|e| PolicyError::bundle(&self.name, format!("HTTP client mTLS: {e}")))?;
        self.client = http_client(&self.name, tls, self.timeout)?;
        Ok(self)
    }

    /// Sends `token` as `Authorization: Bearer <token>` with every request (OPA's
    /// `credentials.bearer`), e.g. the host token a delivery service binds to this host's
    /// SPIFFE ID. It is never logged.
    #[must_use]
    pub fn bearer_token(mut self, token: impl Into<String>) -> Self {
        self.bearer = Some(BearerToken(token.into()));
        self
    }

    /// Requires every bundle downloaded to be signed and accepted by `verifier`
    /// ([`Bundle::verified`]).
    #[must_use]
    pub fn verify_with(mut self, verifier: Arc<BundleVerifier>) -> Self {
        self.verifier = Some(verifier);
        self
    }
}

/// A source's HTTP client on the rustls configuration `tls`, handed to reqwest as it is
/// (`tls_backend_preconfigured`: its aws-lc-rs provider stays, whatever else the final graph
/// enables), without redirects: a bundle URL that answers with one (to plain HTTP, to another
/// host) is an error, never followed. Each request must finish within `timeout`.
fn http_client(
    name: &str,
    tls: impl std::any::Any,
    timeout: Duration,
) -> Result<reqwest::Client, PolicyError> {
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(timeout)
        .connect_timeout(timeout)
        .build()
        .map_err(|e| PolicyError::bundle(name, format!("HTTP client: {e}")))
}

#[async_trait]
impl BundleSource for HttpSource {
    fn name(&self) -> &str {
        &self.name
    }

    async fn fetch(&mut self) -> Result<Fetched, PolicyError> {
        let failed = |message: String| PolicyError::bundle(&self.name, message);
        let mut request = self.client.get(&self.url);
        if let Some(BearerToken(token)) = &self.bearer {
            request = request.bearer_auth(token);
        }
        if let Some(etag) = &self.active_etag {
            request = request.header(reqwest::header::IF_NONE_MATCH, etag);
        }
        let mut response = request
            .send()
            .await
            .map_err(|e| failed(format!("GET {}: {e}", self.url)))?;
        let status = response.status();
        if status == reqwest::StatusCode::NOT_MODIFIED {
            return Ok(Fetched::Unchanged);
        }
        if !status.is_success() {
            return Err(failed(format!("GET {}: HTTP {status}", self.url)));
        }
        let etag = response
            .headers()
            .get(reqwest::header::ETAG)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        // A compressed bundle is at most its uncompressed cap (gzip does not grow data by
        // more than a little); refuse a larger download before and while reading it.
        let cap = self.limits.max_total_bytes.saturating_add(1 << 20);
        if response.content_length().is_some_and(|len| len > cap) {
            return Err(failed(format!("GET {}: larger than {cap} bytes", self.url)));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| failed(format!("GET {}: {e}", self.url)))?
        {
            body.extend_from_slice(&chunk);
            if u64::try_from(body.len()).unwrap_or(u64::MAX) > cap {
                return Err(failed(format!("GET {}: larger than {cap} bytes", self.url)));
            }
        }
        let name = self.name.clone();
        let limits = self.limits;
        let verifier = self.verifier.clone();
        let bundle = tokio::task::spawn_blocking(move || {
            let files = Bundle::files_from_tar_gz(&name, &body, &limits)?;
            read(&name, files, verifier.as_deref())
        })
        .await
        .map_err(|e| failed(format!("the loader failed: {e}")))??;
        self.fetched_etag = etag;
        Ok(Fetched::Bundle(bundle))
    }

    fn activated(&mut self) {
        self.active_etag = self.fetched_etag.take();
    }
}

/// How a [`spawn_poller`] task polls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct PollOptions {
    /// Between two polls that went well. Default 10 s.
    pub interval: Duration,
    /// The longest pause after failures (the pause doubles from `interval` with each
    /// failure in a row). Default 5 min.
    pub max_backoff: Duration,
    /// Each pause is shortened or lengthened at random by up to this percentage (capped
    /// at 50), so hosts started together do not poll a bundle server in step. Default 10.
    pub jitter_percent: u8,
}

impl Default for PollOptions {
    fn default() -> Self {
        PollOptions {
            interval: Duration::from_secs(10),
            max_backoff: Duration::from_secs(300),
            jitter_percent: 10,
        }
    }
}

/// Builders: the struct is `#[non_exhaustive]`, so it can gain limits without breaking
/// callers; start from `PollOptions::default()`.
impl PollOptions {
    /// Sets [`interval`](Self::interval).
    #[must_use]
    pub fn with_interval(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }

    /// Sets [`max_backoff`](Self::max_backoff).
    #[must_use]
    pub fn with_max_backoff(mut self, max_backoff: Duration) -> Self {
        self.max_backoff = max_backoff;
        self
    }

    /// Sets [`jitter_percent`](Self::jitter_percent).
    #[must_use]
    pub fn with_jitter_percent(mut self, jitter_percent: u8) -> Self {
        self.jitter_percent = jitter_percent;
        self
    }
}

impl PollOptions {
    /// The pause after `failures` failures in a row.
    #[must_use]
    pub fn pause(&self, failures: u32) -> Duration {
        let factor = 1_u32.checked_shl(failures.min(16)).unwrap_or(u32::MAX);
        self.interval
            .checked_mul(factor)
            .unwrap_or(self.max_backoff)
            .min(self.max_backoff.max(self.interval))
    }

    /// [`pause`](PollOptions::pause) with the jitter applied: somewhere in
    /// `pause × (1 ± jitter_percent / 100)`.
    #[must_use]
    pub fn jittered_pause(&self, failures: u32) -> Duration {
        use aws_lc_rs::rand::SecureRandom as _;
        let pause = self.pause(failures);
        let percent = u32::from(self.jitter_percent.min(50));
        let mut bytes = [0_u8; 4];
        if percent == 0
            || aws_lc_rs::rand::SystemRandom::new()
                .fill(&mut bytes)
                .is_err()
        {
            return pause;
        }
        // A uniform draw in [-percent, +percent] hundredths of the pause, in 1/100 steps
        // of a percent.
        let span = percent * 200 + 1;
        let draw = i64::from(u32::from_le_bytes(bytes) % span) - i64::from(percent * 100);
        let nanos = i128::try_from(pause.as_nanos()).unwrap_or(i128::MAX);
        let shifted = nanos + nanos * i128::from(draw) / 10_000;
        Duration::from_nanos(u64::try_from(shifted.max(0)).unwrap_or(u64::MAX))
    }
}

impl PollOptions {
    /// The (jittered) pause before polling `source` again after `failures` failures in a
    /// row: [`jittered_pause`](PollOptions::jittered_pause), except that a source that
    /// does not [back off](BundleSource::backs_off) (a folder) is polled every `interval`
    /// however often it failed.
    #[must_use]
    pub fn pause_for(&self, source: &dyn BundleSource, failures: u32) -> Duration {
        self.jittered_pause(if source.backs_off() { failures } else { 0 })
    }
}

/// Polls `source` once: fetch, and if there is a new bundle, validate and activate it.
/// Failures are recorded in the store's status; the active revision keeps serving.
///
/// # Errors
///
/// The fetch or activation error.
pub async fn poll_once(
    store: &Arc<PolicyStore>,
    source: &mut dyn BundleSource,
) -> Result<bool, PolicyError> {
    let fetched = match source.fetch().await {
        Ok(fetched) => fetched,
        Err(err) => {
            store.record_failure(source.name(), None, &err);
            return Err(err);
        }
    };
    let Fetched::Bundle(bundle) = fetched else {
        return Ok(false);
    };
    let store = store.clone();
    // Compiling and running a bundle's tests is CPU work: off the async threads.
    tokio::task::spawn_blocking(move || store.activate(bundle))
        .await
        .map_err(|e| PolicyError::bundle(source.name(), format!("activation failed: {e}")))??;
    source.activated();
    Ok(true)
}

/// Polls `source` in a background task until the handle is aborted (or the runtime stops),
/// activating each new bundle it yields; after failures it waits as
/// [`PollOptions::pause_for`] says.
pub fn spawn_poller(
    store: Arc<PolicyStore>,
    mut source: impl BundleSource,
    options: PollOptions,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut failures = 0_u32;
        loop {
            match poll_once(&store, &mut source).await {
                Ok(_) => failures = 0,
                Err(_) => failures = failures.saturating_add(1),
            }
            tokio::time::sleep(options.pause_for(&source, failures)).await;
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::EvalLimits;

    fn scratch(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "portcullis-source-unit-{tag}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn write_bundle(dir: &Path, revision: &str) {
        std::fs::create_dir_all(dir.join("app")).unwrap();
        std::fs::write(
            dir.join(".manifest"),
            format!(r#"{{"revision": "{revision}", "roots": ["app"]}}"#),
        )
        .unwrap();
        std::fs::write(dir.join("app/policy.rego"), "package app\nallow := true\n").unwrap();
    }

    fn revision(store: &PolicyStore) -> Option<String> {
        store.revisions().get("app").cloned()
    }

    #[tokio::test]
    async fn a_missing_or_emptied_folder_is_refused_and_the_good_revision_keeps_serving() {
        let root = scratch("empty");
        let dir = root.join("bundle");
        let store = Arc::new(PolicyStore::in_memory(EvalLimits::default()));

        // Missing at start: an error, nothing active (every decision fails closed).
        let mut source = DirSource::new("app", &dir, BundleLimits::default());
        assert!(matches!(
            poll_once(&store, &mut source).await,
            Err(PolicyError::Bundle { .. })
        ));
        assert_eq!(revision(&store), None);
        // Empty, or holding only files that are not a bundle's: refused the same way.
        std::fs::create_dir_all(&dir).unwrap();
        assert!(matches!(
            poll_once(&store, &mut source).await,
            Err(PolicyError::Bundle { .. })
        ));
        std::fs::write(dir.join("README"), "notes").unwrap();
        let err = poll_once(&store, &mut source).await.unwrap_err();
        assert!(err.to_string().contains("holds no bundle"), "{err}");
        assert_eq!(revision(&store), None);

        write_bundle(&dir, "r1");
        assert!(poll_once(&store, &mut source).await.unwrap());
        assert_eq!(revision(&store).as_deref(), Some("r1"));

        // `mv bundle bundle.bak; mkdir bundle`: refused, r1 keeps serving.
        std::fs::rename(&dir, root.join("bundle.bak")).unwrap();
        assert!(poll_once(&store, &mut source).await.is_err());
        std::fs::create_dir_all(&dir).unwrap();
        assert!(poll_once(&store, &mut source).await.is_err());
        assert_eq!(revision(&store).as_deref(), Some("r1"));
        assert!(
            store.status()[0].last_error.is_some(),
            "the refusal is in the status"
        );

        // A manifest alone is a deliberately empty bundle: accepted.
        std::fs::write(
            dir.join(".manifest"),
            r#"{"revision": "r2", "roots": ["app"]}"#,
        )
        .unwrap();
        assert!(poll_once(&store, &mut source).await.unwrap());
        assert_eq!(revision(&store).as_deref(), Some("r2"));
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn a_folder_is_polled_every_interval_however_often_it_failed() {
        let options = PollOptions {
            interval: Duration::from_secs(1),
            max_backoff: Duration::from_secs(300),
            jitter_percent: 0,
        };
        let folder = DirSource::new("app", "/nonexistent", BundleLimits::default());
        let server = HttpSource::new(
            "app",
            "http://127.0.0.1:9/bundle.tar.gz",
            Duration::from_secs(1),
            BundleLimits::default(),
        )
        .unwrap();
        for failures in [0, 1, 8, 30] {
            assert_eq!(options.pause_for(&folder, failures), Duration::from_secs(1));
        }
        assert_eq!(options.pause_for(&server, 2), Duration::from_secs(4));
        assert_eq!(options.pause_for(&server, 8), Duration::from_secs(256));
        assert_eq!(options.pause_for(&server, 30), Duration::from_secs(300));
    }
}
