//! Where revisions live: [`ArtifactStore`], immutable and content-addressed, with a local
//! folder ([`FolderStore`]), memory ([`MemoryStore`]) and, with feature `s3`, an S3 bucket
//! (`S3Store`) implementation.

#[cfg(feature = "s3")]
mod s3;
#[cfg(feature = "s3")]
pub use s3::{DEFAULT_MAX_OBJECT_BYTES, S3Options, S3Store};

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;

use crate::revision::check_artifact_name;
use crate::{DeliveryError, RevisionId};

/// Stores bundle tarballs by artifact and [`RevisionId`]. A revision, once stored, is never
/// replaced: [`put`](ArtifactStore::put) of an existing one is refused, and
/// [`get`](ArtifactStore::get) checks that the content still hashes to its id.
#[async_trait]
pub trait ArtifactStore: Send + Sync + std::fmt::Debug {
    /// Stores `tarball` as revision `RevisionId::of(tarball)` of `artifact`, durably before
    /// it returns, and returns that id.
    ///
    /// # Errors
    ///
    /// [`DeliveryError::Exists`] if the revision is already stored;
    /// [`DeliveryError::Invalid`] for a bad artifact name; [`DeliveryError::Io`] (or, for a
    /// remote store, [`DeliveryError::Remote`]) if it cannot be written.
    async fn put(&self, artifact: &str, tarball: &[u8]) -> Result<RevisionId, DeliveryError>;

    /// The tarball of `revision` of `artifact`.
    ///
    /// # Errors
    ///
    /// [`DeliveryError::NotFound`]; [`DeliveryError::Corrupt`] if its content no longer
    /// hashes to `revision`; [`DeliveryError::Io`] (or, for a remote store,
    /// [`DeliveryError::Remote`] and [`DeliveryError::TooLarge`]).
    async fn get(&self, artifact: &str, revision: &RevisionId) -> Result<Vec<u8>, DeliveryError>;

    /// Whether `revision` of `artifact` is stored.
    ///
    /// # Errors
    ///
    /// [`DeliveryError::Io`] (or [`DeliveryError::Remote`]) if the store cannot be read.
    async fn contains(&self, artifact: &str, revision: &RevisionId) -> Result<bool, DeliveryError>;
}

fn verified(
    artifact: &str,
    revision: &RevisionId,
    bytes: Vec<u8>,
) -> Result<Vec<u8>, DeliveryError> {
    let actual = RevisionId::of(&bytes);
    if &actual == revision {
        Ok(bytes)
    } else {
        Err(DeliveryError::Corrupt {
            artifact: artifact.to_owned(),
            revision: revision.to_string(),
            actual: actual.to_string(),
        })
    }
}

/// Revisions as files `ROOT/ARTIFACT/REVISION.tar.gz`, each written to a temporary file,
/// synced, then linked into place (a link never replaces an existing file), so a revision
/// is either whole or absent and never overwritten.
#[derive(Debug)]
pub struct FolderStore {
    root: PathBuf,
}

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

impl FolderStore {
    /// A store in `root`, created if missing.
    ///
    /// # Errors
    ///
    /// [`DeliveryError::Io`] if the folder cannot be created.
    pub fn open(root: impl Into<PathBuf>) -> Result<FolderStore, DeliveryError> {
        let root = root.into();
        std::fs::create_dir_all(&root).map_err(|e| DeliveryError::io(root.display(), e))?;
        Ok(FolderStore { root })
    }

    fn path(&self, artifact: &str, revision: &RevisionId) -> Result<PathBuf, DeliveryError> {
        check_artifact_name(artifact)?;
        Ok(self.root.join(artifact).join(format!("{revision}.tar.gz")))
    }
}

fn sync_dir(dir: &Path) -> Result<(), DeliveryError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| DeliveryError::io(dir.display(), e))
}

fn write_new(
    dir: &Path,
    path: &Path,
    artifact: &str,
    revision: &RevisionId,
    tarball: &[u8],
) -> Result<(), DeliveryError> {
    use std::io::Write;
    std::fs::create_dir_all(dir).map_err(|e| DeliveryError::io(dir.display(), e))?;
    let temp = dir.join(format!(
        ".tmp-{revision}-{}-{}",
        std::process::id(),
        TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let written = std::fs::File::create_new(&temp).and_then(|mut file| {
        file.write_all(tarball)?;
        file.sync_all()
    });
    if let Err(e) = written {
        let _ = std::fs::remove_file(&temp);
        return Err(DeliveryError::io(temp.display(), e));
    }
    let linked = std::fs::hard_link(&temp, path);
    let _ = std::fs::remove_file(&temp);
    match linked {
        Ok(()) => sync_dir(dir),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err(DeliveryError::Exists {
            artifact: artifact.to_owned(),
            revision: revision.to_string(),
        }),
        Err(e) => Err(DeliveryError::io(path.display(), e)),
    }
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, DeliveryError> + Send + 'static,
) -> Result<T, DeliveryError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| DeliveryError::io("artifact store", std::io::Error::other(e.to_string())))?
}

#[async_trait]
impl ArtifactStore for FolderStore {
    async fn put(&self, artifact: &str, tarball: &[u8]) -> Result<RevisionId, DeliveryError> {
        let revision = RevisionId::of(tarball);
        let path = self.path(artifact, &revision)?;
        let dir = self.root.join(artifact);
        let artifact = artifact.to_owned();
        let tarball = tarball.to_vec();
        let id = revision.clone();
        blocking(move || write_new(&dir, &path, &artifact, &id, &tarball)).await?;
        Ok(revision)
    }

    async fn get(&self, artifact: &str, revision: &RevisionId) -> Result<Vec<u8>, DeliveryError> {
        let path = self.path(artifact, revision)?;
        let (name, id) = (artifact.to_owned(), revision.clone());
        blocking(move || match std::fs::read(&path) {
            Ok(bytes) => verified(&name, &id, bytes),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(DeliveryError::NotFound {
                artifact: name,
                revision: id.to_string(),
            }),
            Err(e) => Err(DeliveryError::io(path.display(), e)),
        })
        .await
    }

    async fn contains(&self, artifact: &str, revision: &RevisionId) -> Result<bool, DeliveryError> {
        let path = self.path(artifact, revision)?;
        blocking(move || {
            path.try_exists()
                .map_err(|e| DeliveryError::io(path.display(), e))
        })
        .await
    }
}

/// Revisions in memory, for tests and examples: gone when the process ends.
#[derive(Debug, Default)]
pub struct MemoryStore {
    revisions: Mutex<BTreeMap<(String, RevisionId), Vec<u8>>>,
}

impl MemoryStore {
    /// An empty store.
    #[must_use]
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<(String, RevisionId), Vec<u8>>> {
        // Entries are inserted whole; a panic elsewhere cannot leave one half-written.
        self.revisions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[async_trait]
impl ArtifactStore for MemoryStore {
    async fn put(&self, artifact: &str, tarball: &[u8]) -> Result<RevisionId, DeliveryError> {
        check_artifact_name(artifact)?;
        let revision = RevisionId::of(tarball);
        let mut revisions = self.lock();
        let key = (artifact.to_owned(), revision.clone());
        if revisions.contains_key(&key) {
            return Err(DeliveryError::Exists {
                artifact: artifact.to_owned(),
                revision: revision.to_string(),
            });
        }
        revisions.insert(key, tarball.to_vec());
        Ok(revision)
    }

    async fn get(&self, artifact: &str, revision: &RevisionId) -> Result<Vec<u8>, DeliveryError> {
        let bytes = self
            .lock()
            .get(&(artifact.to_owned(), revision.clone()))
            .cloned();
        match bytes {
            Some(bytes) => verified(artifact, revision, bytes),
            None => Err(DeliveryError::NotFound {
                artifact: artifact.to_owned(),
                revision: revision.to_string(),
            }),
        }
    }

    async fn contains(&self, artifact: &str, revision: &RevisionId) -> Result<bool, DeliveryError> {
        Ok(self
            .lock()
            .contains_key(&(artifact.to_owned(), revision.clone())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn immutable(store: &dyn ArtifactStore) {
        let id = store.put("authz", b"one").await.unwrap();
        assert_eq!(id, RevisionId::of(b"one"));
        assert!(store.contains("authz", &id).await.unwrap());
        assert_eq!(store.get("authz", &id).await.unwrap(), b"one");
        assert!(matches!(
            store.put("authz", b"one").await,
            Err(DeliveryError::Exists { .. })
        ));
        // The same content under another artifact is that artifact's own revision.
        assert_eq!(store.put("other", b"one").await.unwrap(), id);
        let missing = RevisionId::of(b"two");
        assert!(!store.contains("authz", &missing).await.unwrap());
        assert!(matches!(
            store.get("authz", &missing).await,
            Err(DeliveryError::NotFound { .. })
        ));
        assert!(matches!(
            store.put("../etc", b"x").await,
            Err(DeliveryError::Invalid(_))
        ));
    }

    #[tokio::test]
    async fn memory_revisions_are_immutable() {
        immutable(&MemoryStore::new()).await;
    }

    #[tokio::test]
    async fn folder_revisions_are_immutable_and_checked_on_read() {
        let dir = std::env::temp_dir().join(format!("portcullis-delivery-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = FolderStore::open(&dir).unwrap();
        immutable(&store).await;
        // No temporary files are left behind.
        let names: Vec<String> = std::fs::read_dir(dir.join("authz"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, [format!("{}.tar.gz", RevisionId::of(b"one"))]);
        // A file changed behind the store's back is refused, not served.
        let id = RevisionId::of(b"one");
        std::fs::write(dir.join("authz").join(format!("{id}.tar.gz")), b"evil").unwrap();
        assert!(matches!(
            store.get("authz", &id).await,
            Err(DeliveryError::Corrupt { .. })
        ));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
