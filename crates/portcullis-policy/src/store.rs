//! [`PolicyStore`]: the active policy set, replaced atomically, with the last known good
//! bundles kept on disk.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwapOption;
use serde::Serialize;
use serde_json::Value;

use crate::{
    Bundle, BundleLimits, BundleVerifier, EvalLimits, Evaluation, PolicyEngine, PolicyError,
    RegoEngine,
};

/// What a store knows about one bundle: the revision serving, and the last failure.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct BundleStatus {
    /// The bundle's name.
    pub name: String,
    /// The revision serving now (`None` if none ever activated).
    pub active_revision: Option<String>,
    /// When it was activated (ms since the epoch).
    pub activated_at_ms: Option<u64>,
    /// The revision whose activation failed last, if the last attempt failed.
    pub failed_revision: Option<String>,
    /// Why.
    pub last_error: Option<String>,
    /// When (ms since the epoch).
    pub failed_at_ms: Option<u64>,
}

/// The result of a successful activation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Activated {
    /// The bundle's name.
    pub name: String,
    /// Its revision, now serving.
    pub revision: String,
    /// Every active bundle's revision.
    pub revisions: Arc<BTreeMap<String, String>>,
}

/// The active set of bundles behind one atomic pointer.
///
/// [`activate`](PolicyStore::activate) compiles and tests the new bundle together with the
/// others and swaps the whole set at once: a decision sees the old set or the new one,
/// never a mix. A bundle that fails is never active; the previous revision keeps serving
/// and [`status`](PolicyStore::status) reports the failure. With a state folder
/// ([`open`](PolicyStore::open)), each activated bundle is written there (as a tarball,
/// synced, renamed into place) before it serves, so a restart serves the last known good
/// set. With nothing active, every decision is [`PolicyError::NoPolicy`].
///
/// ```
/// use portcullis_policy::{Bundle, PolicyEngine, PolicyStore};
/// use serde_json::json;
///
/// let store = PolicyStore::in_memory(Default::default());
/// let rbac = Bundle::from_files("rbac", [
///     (".manifest".to_owned(), br#"{"revision": "r1", "roots": ["authz"]}"#.to_vec()),
///     ("authz/policy.rego".to_owned(), br#"
///         package authz
///         default allow := false
///         allow if data.authz.grants[input.user][_] == input.action
///         test_alice_deploys if allow with input as {"user": "alice", "action": "deploy"}
///     "#.to_vec()),
///     ("authz/data.json".to_owned(), br#"{"grants": {"alice": ["deploy"]}}"#.to_vec()),
/// ])?;
/// store.activate(rbac)?;
/// let decision = store.evaluate("authz/allow", &json!({"user": "bob", "action": "deploy"}))?;
/// assert_eq!(decision.result, Some(json!(false)));
/// assert_eq!(decision.revisions["rbac"], "r1");
/// # Ok::<(), portcullis_policy::PolicyError>(())
/// ```
#[derive(Debug)]
pub struct PolicyStore {
    active: ArcSwapOption<RegoEngine>,
    /// The bundles of the active set; held while an activation runs, so they take turns.
    bundles: Mutex<BTreeMap<String, Arc<Bundle>>>,
    status: Mutex<BTreeMap<String, BundleStatus>>,
    state_dir: Option<PathBuf>,
    limits: EvalLimits,
}

const BUNDLE_SUFFIX: &str = ".tar.gz";

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A compile error as OPA words it: regorus's parser reports `\n--> BUNDLE/PATH:L:C\n`,
/// the source line, a caret and `error: MESSAGE`; this gives
/// `PATH:L:C: rego_parse_error: MESSAGE` (`rego_compile_error` for an error found once all
/// policies are read), the path inside the bundle. Other errors are left as they are.
fn located(err: PolicyError) -> PolicyError {
    let PolicyError::Compile {
        bundle,
        file,
        message,
    } = err
    else {
        return err;
    };
    let parsed = message.split_once("--> ").and_then(|(_, rest)| {
        let (place, rest) = rest.split_once('\n')?;
        let mut parts = place.rsplitn(3, ':');
        let (column, line, path) = (parts.next()?, parts.next()?, parts.next()?);
        let text = rest.lines().rev().find_map(|l| {
            l.split_once(": ")
                .filter(|(kind, _)| !kind.contains([' ', '|']))
                .map(|(_, text)| text)
        })?;
        Some((
            path.to_owned(),
            line.to_owned(),
            column.to_owned(),
            text.to_owned(),
        ))
    });
    let Some((path, line, column, text)) = parsed else {
        return PolicyError::Compile {
            bundle,
            file,
            message,
        };
    };
    // regorus knows each module as `BUNDLE/PATH`; OPA names the path inside the bundle.
    let path = bundle
        .split(',')
        .find_map(|name| path.strip_prefix(&format!("{name}/")))
        .unwrap_or(&path)
        .to_owned();
    let kind = if file.starts_with('<') {
        "rego_compile_error"
    } else {
        "rego_parse_error"
    };
    PolicyError::Compile {
        bundle,
        file: path.clone(),
        message: format!("{path}:{line}:{column}: {kind}: {text}"),
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // The data behind these locks is replaced whole, never left half-updated.
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl PolicyStore {
    /// A store with nothing active, kept in memory only.
    pub fn in_memory(limits: EvalLimits) -> PolicyStore {
        PolicyStore {
            active: ArcSwapOption::empty(),
            bundles: Mutex::new(BTreeMap::new()),
            status: Mutex::new(BTreeMap::new()),
            state_dir: None,
            limits,
        }
    }

    /// A store that keeps its last known good bundles in `state_dir` (created if missing)
    /// and starts by serving every one found there. None may be signed: a signed copy is
    /// read only with its verifier, through [`open_with`](PolicyStore::open_with).
    ///
    /// # Errors
    ///
    /// [`PolicyError::Io`] if the folder cannot be created or read; any loading or
    /// validation error of the stored bundles (they were valid when written, so this means
    /// the folder was changed by something else: the store refuses to guess).
    pub fn open(
        state_dir: impl AsRef<Path>,
        limits: EvalLimits,
    ) -> Result<PolicyStore, PolicyError> {
        let dir = state_dir.as_ref().to_path_buf();
        std::fs::create_dir_all(&dir).map_err(|e| PolicyError::io(dir.display(), e))?;
        let mut bundles = BTreeMap::new();
        for name in stored_names(&dir)? {
            if let Some(bundle) = load_stored(&dir, &name, None)? {
                bundles.insert(name, Arc::new(bundle));
            }
        }
        let store = PolicyStore {
            state_dir: Some(dir),
            ..PolicyStore::in_memory(limits)
        };
        if !bundles.is_empty() {
            let engine = RegoEngine::compile(bundles.values().map(AsRef::as_ref), limits)
                .map_err(located)?;
            store.start_with(engine, bundles);
        }
        Ok(store)
    }

    /// A store that keeps its last known good bundles in `state_dir` (created if missing)
    /// and starts by serving the stored copies of `bundles` only: each a bundle's name and,
    /// when the bundle must be signed, the verifier its copy must pass.
    ///
    /// A stored copy of a bundle not listed is left on disk, unread: a bundle removed from
    /// the configuration does not come back with a restart. A copy that does not load —
    /// changed on disk, signed by an unknown key, unsigned where a signature is required,
    /// or signed where none is expected — is refused and its refusal shows in
    /// [`status`](PolicyStore::status); so is every copy when together they do not
    /// compile. A refused bundle is simply not active: decisions that need it fail
    /// ([`PolicyError::NoPolicy`] when nothing is active) until its source delivers a good
    /// revision, which replaces the stored copy.
    ///
    /// # Errors
    ///
    /// [`PolicyError::Io`] if the folder cannot be created or read;
    /// [`PolicyError::Bundle`] for a bundle name that is not one.
    pub fn open_with<'a>(
        state_dir: impl AsRef<Path>,
        limits: EvalLimits,
        bundles: impl IntoIterator<Item = (&'a str, Option<&'a BundleVerifier>)>,
    ) -> Result<PolicyStore, PolicyError> {
        let dir = state_dir.as_ref().to_path_buf();
        std::fs::create_dir_all(&dir).map_err(|e| PolicyError::io(dir.display(), e))?;
        let store = PolicyStore {
            state_dir: Some(dir.clone()),
            ..PolicyStore::in_memory(limits)
        };
        let mut loaded = BTreeMap::new();
        let mut wanted = std::collections::BTreeSet::new();
        for (name, verifier) in bundles {
            crate::bundle::check_name(name)?;
            wanted.insert(name.to_owned());
            match load_stored(&dir, name, verifier) {
                Ok(Some(bundle)) => {
                    loaded.insert(name.to_owned(), Arc::new(bundle));
                }
                Ok(None) => {}
                Err(err) => {
                    let err = stored_copy_refused(name, err);
                    store.record_failure(name, None, &err);
                }
            }
        }
        for name in stored_names(&dir)? {
            if !wanted.contains(&name) {
                tracing::info!(bundle = %name, "a stored bundle that is not configured is ignored");
            }
        }
        if loaded.is_empty() {
            return Ok(store);
        }
        match RegoEngine::compile(loaded.values().map(AsRef::as_ref), limits).map_err(located) {
            Ok(engine) => store.start_with(engine, loaded),
            Err(err) => {
                for (name, bundle) in &loaded {
                    let err = stored_copy_refused(name, PolicyError::bundle(name, err.to_string()));
                    store.record_failure(name, Some(bundle.revision().to_owned()), &err);
                }
            }
        }
        Ok(store)
    }

    /// Serves `engine`, compiled from `bundles`, as loaded at start.
    fn start_with(&self, engine: RegoEngine, bundles: BTreeMap<String, Arc<Bundle>>) {
        let at = now_ms();
        let mut status = lock(&self.status);
        for bundle in bundles.values() {
            status.insert(
                bundle.name().to_owned(),
                BundleStatus {
                    name: bundle.name().to_owned(),
                    active_revision: Some(bundle.revision().to_owned()),
                    activated_at_ms: Some(at),
                    ..BundleStatus::default()
                },
            );
        }
        drop(status);
        self.active.store(Some(Arc::new(engine)));
        *lock(&self.bundles) = bundles;
    }

    /// Validates `bundle` with the other active bundles (replacing the active bundle of the
    /// same name) and, if everything compiles and every test passes, persists it and makes
    /// the new set active.
    ///
    /// # Errors
    ///
    /// Any validation error, or [`PolicyError::Io`] if it cannot be persisted; in every
    /// case the previous set keeps serving and the failure shows in
    /// [`status`](PolicyStore::status).
    pub fn activate(&self, bundle: Bundle) -> Result<Activated, PolicyError> {
        let name = bundle.name().to_owned();
        let revision = bundle.revision().to_owned();
        let mut bundles = lock(&self.bundles);
        let mut candidate = bundles.clone();
        let bundle = Arc::new(bundle);
        candidate.insert(name.clone(), bundle.clone());
        let compiled = overlap_with_others(&bundle, &bundles)
            .and_then(|()| {
                RegoEngine::compile(candidate.values().map(AsRef::as_ref), self.limits)
                    .map_err(located)
            })
            .and_then(|engine| {
                self.persist(&bundle)?;
                Ok(engine)
            });
        let engine = match compiled {
            Ok(engine) => engine,
            Err(err) => {
                drop(bundles);
                self.record_failure(&name, Some(revision), &err);
                return Err(err);
            }
        };
        let revisions = engine.revisions().clone();
        self.active.store(Some(Arc::new(engine)));
        *bundles = candidate;
        drop(bundles);
        lock(&self.status).insert(
            name.clone(),
            BundleStatus {
                name: name.clone(),
                active_revision: Some(revision.clone()),
                activated_at_ms: Some(now_ms()),
                ..BundleStatus::default()
            },
        );
        tracing::info!(bundle = %name, revision = %revision, "policy bundle activated");
        Ok(Activated {
            name,
            revision,
            revisions,
        })
    }

    /// Deactivates bundle `name` (and forgets its stored copy). Removing the last bundle
    /// leaves nothing active: decisions fail with [`PolicyError::NoPolicy`].
    ///
    /// # Errors
    ///
    /// [`PolicyError::Io`] if its stored copy cannot be removed; a validation error if
    /// the remaining bundles fail without it (e.g. their tests used its data).
    pub fn remove(&self, name: &str) -> Result<bool, PolicyError> {
        let mut bundles = lock(&self.bundles);
        if !bundles.contains_key(name) {
            return Ok(false);
        }
        let mut candidate = bundles.clone();
        candidate.remove(name);
        let engine = if candidate.is_empty() {
            None
        } else {
            Some(Arc::new(
                RegoEngine::compile(candidate.values().map(AsRef::as_ref), self.limits)
                    .map_err(located)?,
            ))
        };
        if let Some(dir) = &self.state_dir {
            let path = dir.join(format!("{name}{BUNDLE_SUFFIX}"));
            match std::fs::remove_file(&path) {
                Ok(()) => sync_dir(dir)?,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(PolicyError::io(path.display(), e)),
            }
        }
        self.active.store(engine);
        *bundles = candidate;
        lock(&self.status).remove(name);
        Ok(true)
    }

    /// Records that bundle `name` could not be fetched or activated (`revision`, when
    /// known): the active revision keeps serving, and [`status`](PolicyStore::status)
    /// shows the error. Bundle sources call this for failures before activation.
    pub fn record_failure(&self, name: &str, revision: Option<String>, error: &PolicyError) {
        if self.revisions().contains_key(name) {
            tracing::warn!(bundle = %name, revision = ?revision, error = %error, "policy bundle not activated; the previous revision keeps serving");
        } else {
            tracing::warn!(bundle = %name, revision = ?revision, error = %error, "policy bundle not activated; no revision of it is active, so decisions fail closed");
        }
        let mut status = lock(&self.status);
        let entry = status
            .entry(name.to_owned())
            .or_insert_with(|| BundleStatus {
                name: name.to_owned(),
                ..BundleStatus::default()
            });
        entry.failed_revision = revision;
        entry.last_error = Some(error.to_string());
        entry.failed_at_ms = Some(now_ms());
    }

    /// Every bundle's status, by name.
    pub fn status(&self) -> Vec<BundleStatus> {
        lock(&self.status).values().cloned().collect()
    }

    /// Bundle name → active revision.
    pub fn revisions(&self) -> Arc<BTreeMap<String, String>> {
        self.active
            .load()
            .as_ref()
            .map(|engine| engine.revisions().clone())
            .unwrap_or_default()
    }

    /// The active compiled set, if any (a snapshot: it stays valid across activations).
    pub fn current(&self) -> Option<Arc<RegoEngine>> {
        self.active.load_full()
    }

    fn persist(&self, bundle: &Bundle) -> Result<(), PolicyError> {
        let Some(dir) = &self.state_dir else {
            return Ok(());
        };
        let bytes = bundle.to_tar_gz()?;
        let path = dir.join(format!("{}{BUNDLE_SUFFIX}", bundle.name()));
        let temp = dir.join(format!(".{}{BUNDLE_SUFFIX}.tmp", bundle.name()));
        let write = || -> std::io::Result<()> {
            use std::io::Write;
            let mut file = std::fs::File::create(&temp)?;
            file.write_all(&bytes)?;
            file.sync_all()?;
            std::fs::rename(&temp, &path)
        };
        write().map_err(|e| PolicyError::io(path.display(), e))?;
        sync_dir(dir)
    }
}

/// The names of the bundles stored in `dir`.
fn stored_names(dir: &Path) -> Result<Vec<String>, PolicyError> {
    let entries = std::fs::read_dir(dir).map_err(|e| PolicyError::io(dir.display(), e))?;
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| PolicyError::io(dir.display(), e))?;
        if let Some(name) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.strip_suffix(BUNDLE_SUFFIX))
            .filter(|n| !n.starts_with('.'))
        {
            names.push(name.to_owned());
        }
    }
    names.sort();
    Ok(names)
}

/// The stored copy of bundle `name` in `dir`, if there is one, verified with `verifier`
/// when given (a copy kept signed is read only that way).
fn load_stored(
    dir: &Path,
    name: &str,
    verifier: Option<&BundleVerifier>,
) -> Result<Option<Bundle>, PolicyError> {
    let path = dir.join(format!("{name}{BUNDLE_SUFFIX}"));
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(PolicyError::io(path.display(), e)),
    };
    let limits = BundleLimits::default();
    let bundle = match verifier {
        Some(verifier) => Bundle::verified(
            name,
            Bundle::files_from_tar_gz(name, &bytes, &limits)?,
            verifier,
        )?,
        None => Bundle::from_tar_gz(name, &bytes, &limits)?,
    };
    Ok(Some(bundle))
}

/// Says that the error is about the stored copy, not a fetched revision.
fn stored_copy_refused(name: &str, err: PolicyError) -> PolicyError {
    tracing::error!(bundle = %name, error = %err, "the stored last known good copy is refused; the bundle stays inactive until its source delivers");
    match err {
        PolicyError::Signature { bundle, message } => PolicyError::Signature {
            bundle,
            message: format!("stored copy: {message}"),
        },
        other => PolicyError::bundle(name, format!("stored copy refused: {other}")),
    }
}

/// Names `bundle` (the one arriving) in an overlap with an active bundle.
fn overlap_with_others(
    bundle: &Bundle,
    active: &BTreeMap<String, Arc<Bundle>>,
) -> Result<(), PolicyError> {
    for other in active.values().filter(|b| b.name() != bundle.name()) {
        if let Some((root, other_root)) =
            crate::bundle::overlapping_roots(bundle.manifest(), other.manifest())
        {
            return Err(PolicyError::RootsOverlap {
                bundle: bundle.name().to_owned(),
                root: root.to_owned(),
                other: other.name().to_owned(),
                other_root: other_root.to_owned(),
            });
        }
    }
    Ok(())
}

fn sync_dir(dir: &Path) -> Result<(), PolicyError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| PolicyError::io(dir.display(), e))
}

impl PolicyEngine for PolicyStore {
    fn evaluate_input(&self, path: &str, input: Option<&Value>) -> Result<Evaluation, PolicyError> {
        let active = self.active.load();
        match active.as_ref() {
            Some(engine) => engine.evaluate_input(path, input),
            None => Err(PolicyError::NoPolicy),
        }
    }
}
