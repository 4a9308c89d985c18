//! [`CachingDirectory`]: a TTL cache in front of another directory, so a burst of requests
//! costs one lookup.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use portcullis_core::{Clock, SystemClock};

use crate::{Directory, DirectoryError, DirectoryUser, Password};

/// The longest a cached answer may be used: one hour.
pub const MAX_DIRECTORY_TTL: Duration = Duration::from_secs(3600);
/// Entries kept at most; past this, expired ones are dropped, then the cache is cleared.
const MAX_ENTRIES: usize = 100_000;

type Entries<V> = Mutex<HashMap<String, (SystemTime, V)>>;

/// Caches `groups_of` and `service_account` answers of an inner directory for a fixed time,
/// so a change in the directory (a user leaving a group) takes effect within that time.
///
/// Password checks are never cached: [`authenticate`](Directory::authenticate) always asks
/// the inner directory, and refreshes the cached groups with what it returns. Errors are
/// never cached.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), portcullis_directory::DirectoryError> {
/// use std::time::Duration;
/// use portcullis_directory::{CachingDirectory, Directory, StaticDirectory};
///
/// let inner = StaticDirectory::from_toml("[[user]]\nname = \"alice\"\ngroups = [\"deployers\"]\n")?;
/// let directory = CachingDirectory::new(inner, Duration::from_secs(60))?;
/// assert_eq!(directory.groups_of("alice").await?, ["deployers"]);
/// # Ok(()) }
/// ```
pub struct CachingDirectory<D> {
    inner: D,
    ttl: Duration,
    clock: Arc<dyn Clock>,
    groups: Entries<Vec<String>>,
    services: Entries<Option<DirectoryUser>>,
}

impl<D: std::fmt::Debug> std::fmt::Debug for CachingDirectory<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachingDirectory")
            .field("inner", &self.inner)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl<D: Directory> CachingDirectory<D> {
    /// Caches `inner`'s answers for `ttl`.
    ///
    /// # Errors
    ///
    /// [`DirectoryError::Config`] for a zero TTL or one above [`MAX_DIRECTORY_TTL`].
    pub fn new(inner: D, ttl: Duration) -> Result<Self, DirectoryError> {
        if ttl.is_zero() || ttl > MAX_DIRECTORY_TTL {
            return Err(DirectoryError::Config(
                "a directory cache TTL is between 1 s and 1 h".into(),
            ));
        }
        Ok(CachingDirectory {
            inner,
            ttl,
            clock: Arc::new(SystemClock),
            groups: Mutex::new(HashMap::new()),
            services: Mutex::new(HashMap::new()),
        })
    }

    /// Uses `clock` for expiry.
    #[must_use]
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The inner directory.
    pub fn inner(&self) -> &D {
        &self.inner
    }

    /// Forgets everything cached.
    pub fn clear(&self) {
        lock(&self.groups).clear();
        lock(&self.services).clear();
    }

    fn get<V: Clone>(&self, entries: &Entries<V>, key: &str) -> Option<V> {
        let now = self.clock.now();
        lock(entries)
            .get(key)
            .filter(|(expires, _)| now < *expires)
            .map(|(_, v)| v.clone())
    }

    fn put<V>(&self, entries: &Entries<V>, key: &str, value: V) {
        let now = self.clock.now();
        let mut map = lock(entries);
        if map.len() >= MAX_ENTRIES {
            map.retain(|_, (expires, _)| now < *expires);
            if map.len() >= MAX_ENTRIES {
                map.clear();
            }
        }
        map.insert(key.to_owned(), (now + self.ttl, value));
    }
}

fn lock<V>(entries: &Entries<V>) -> std::sync::MutexGuard<'_, HashMap<String, (SystemTime, V)>> {
    entries.lock().unwrap_or_else(PoisonError::into_inner)
}

#[async_trait]
impl<D: Directory> Directory for CachingDirectory<D> {
    async fn authenticate(
        &self,
        user: &str,
        password: &Password,
    ) -> Result<DirectoryUser, DirectoryError> {
        let found = self.inner.authenticate(user, password).await?;
        self.put(&self.groups, user, found.groups.clone());
        Ok(found)
    }

    async fn groups_of(&self, user: &str) -> Result<Vec<String>, DirectoryError> {
        if let Some(groups) = self.get(&self.groups, user) {
            return Ok(groups);
        }
        let groups = self.inner.groups_of(user).await?;
        self.put(&self.groups, user, groups.clone());
        Ok(groups)
    }

    async fn service_account(&self, name: &str) -> Result<Option<DirectoryUser>, DirectoryError> {
        if let Some(found) = self.get(&self.services, name) {
            return Ok(found);
        }
        let found = self.inner.service_account(name).await?;
        self.put(&self.services, name, found.clone());
        Ok(found)
    }
}
