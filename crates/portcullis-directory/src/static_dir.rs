//! A directory held in memory, loaded from TOML: for tests, examples and small installations.

use std::collections::{BTreeMap, BTreeSet};

use async_trait::async_trait;
use portcullis_core::{Field, validate_name};
use serde::Deserialize;

use crate::{Directory, DirectoryError, DirectoryUser, Password, PasswordHash};

/// One user of a [`StaticDirectory`].
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticUser {
    /// The login name.
    pub name: String,
    /// The PBKDF2 hash of the password (see [`PasswordHash`]); a user without one cannot
    /// log in with a password (a service account).
    #[serde(default)]
    pub password_hash: Option<PasswordHash>,
    /// A human-readable name.
    #[serde(default)]
    pub display_name: Option<String>,
    /// Group names.
    #[serde(default)]
    pub groups: Vec<String>,
}

/// The TOML form of a [`StaticDirectory`]:
///
/// ```toml
/// [[user]]
/// name = "alice"
/// password_hash = "pbkdf2-sha256$600000$<salt hex>$<hash hex>"
/// groups = ["deployers"]
///
/// [[service_account]]
/// name = "ci-bot"
/// groups = ["ci"]
/// ```
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticDirectoryConfig {
    /// People.
    #[serde(default, rename = "user")]
    pub users: Vec<StaticUser>,
    /// Service accounts (no password login).
    #[serde(default, rename = "service_account")]
    pub service_accounts: Vec<StaticUser>,
}

#[derive(Debug)]
struct Entry {
    user: DirectoryUser,
    password_hash: Option<PasswordHash>,
}

/// A [`Directory`] held in memory.
///
/// An unknown user costs the same PBKDF2 work as a wrong password, so response time does not
/// tell which user names exist.
///
/// ```
/// use portcullis_directory::{Directory, DirectoryError, Password, PasswordHash, StaticDirectory};
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), DirectoryError> {
/// let hash = PasswordHash::create_with_iterations(&Password::new("hunter2")?, 10_000)?;
/// let directory = StaticDirectory::from_toml(&format!(r#"
///     [[user]]
///     name = "alice"
///     password_hash = "{hash}"
///     groups = ["deployers", "platform"]
/// "#))?;
/// let alice = directory.authenticate("alice", &Password::new("hunter2")?).await?;
/// assert_eq!(alice.groups, ["deployers", "platform"]);
/// assert!(matches!(
///     directory.authenticate("alice", &Password::new("wrong")?).await,
///     Err(DirectoryError::InvalidCredentials)
/// ));
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct StaticDirectory {
    users: BTreeMap<String, Entry>,
    services: BTreeMap<String, DirectoryUser>,
    /// Verified against when the user is unknown: as many iterations as the costliest real
    /// hash, a salt and hash that no password matches in practice.
    decoy: PasswordHash,
    /// How many password checks may run at once (one per core): each costs hundreds of
    /// milliseconds of CPU, so more at once only starve everything else.
    hashing: std::sync::Arc<tokio::sync::Semaphore>,
}

/// Verifies `password` against `hash` off the async workers — on a blocking thread, at most
/// `permits` at once — so a burst of logins (wrong ones included) cannot stall every other
/// request of the service sharing those workers. Outside a tokio runtime it verifies inline.
async fn verify_off_the_workers(
    hash: &PasswordHash,
    password: &Password,
    permits: &tokio::sync::Semaphore,
) -> bool {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return hash.verify(password);
    };
    // Closed never: the semaphore lives as long as the directory.
    let Ok(_permit) = permits.acquire().await else {
        return false;
    };
    let (hash, password) = (hash.clone(), password.clone());
    runtime
        .spawn_blocking(move || hash.verify(&password))
        .await
        .unwrap_or(false)
}

impl StaticDirectory {
    /// Parses and validates the TOML form ([`StaticDirectoryConfig`]).
    ///
    /// # Errors
    ///
    /// [`DirectoryError::Config`] for TOML errors, invalid names and duplicate users.
    pub fn from_toml(text: &str) -> Result<Self, DirectoryError> {
        let config: StaticDirectoryConfig =
            toml::from_str(text).map_err(|e| DirectoryError::Config(e.to_string()))?;
        Self::new(config)
    }

    /// Builds the directory from its configuration.
    ///
    /// # Errors
    ///
    /// As [`StaticDirectory::from_toml`].
    pub fn new(config: StaticDirectoryConfig) -> Result<Self, DirectoryError> {
        let mut users = BTreeMap::new();
        for user in config.users {
            let name = user.name.clone();
            let password_hash = user.password_hash.clone();
            if users
                .insert(
                    name.clone(),
                    Entry {
                        user: to_user(user)?,
                        password_hash,
                    },
                )
                .is_some()
            {
                return Err(DirectoryError::Config(format!(
                    "user `{name}` appears twice"
                )));
            }
        }
        let mut services = BTreeMap::new();
        for account in config.service_accounts {
            let name = account.name.clone();
            if account.password_hash.is_some() {
                return Err(DirectoryError::Config(format!(
                    "service account `{name}` has a password_hash; service accounts do not log in with passwords"
                )));
            }
            if users.contains_key(&name)
                || services.insert(name.clone(), to_user(account)?).is_some()
            {
                return Err(DirectoryError::Config(format!(
                    "`{name}` appears twice among users and service accounts"
                )));
            }
        }
        let iterations = users
            .values()
            .filter_map(|e| e.password_hash.as_ref())
            .map(PasswordHash::iterations)
            .max()
            .unwrap_or(10_000);
        let decoy = format!(
            "pbkdf2-sha256${iterations}${}${}",
            "00".repeat(16),
            "00".repeat(32)
        )
        .parse()?;
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
        Ok(StaticDirectory {
            users,
            services,
            decoy,
            hashing: std::sync::Arc::new(tokio::sync::Semaphore::new(cores)),
        })
    }
}

fn to_user(user: StaticUser) -> Result<DirectoryUser, DirectoryError> {
    let config = |e: portcullis_core::Error| DirectoryError::Config(e.to_string());
    validate_name(Field::Subject, &user.name).map_err(config)?;
    let mut groups = BTreeSet::new();
    for group in user.groups {
        validate_name(Field::Group, &group).map_err(config)?;
        groups.insert(group);
    }
    Ok(DirectoryUser {
        name: user.name,
        display_name: user.display_name,
        groups: groups.into_iter().collect(),
    })
}

fn check_user_name(user: &str) -> Result<(), DirectoryError> {
    validate_name(Field::Subject, user).map_err(|e| DirectoryError::InvalidInput {
        what: "user name",
        reason: e.to_string(),
    })
}

#[async_trait]
impl Directory for StaticDirectory {
    async fn authenticate(
        &self,
        user: &str,
        password: &Password,
    ) -> Result<DirectoryUser, DirectoryError> {
        check_user_name(user)?;
        match self.users.get(user) {
            Some(Entry {
                user,
                password_hash: Some(hash),
            }) => {
                if verify_off_the_workers(hash, password, &self.hashing).await {
                    Ok(user.clone())
                } else {
                    Err(DirectoryError::InvalidCredentials)
                }
            }
            _ => {
                // Same work as a real check, whatever the outcome.
                let _ = verify_off_the_workers(&self.decoy, password, &self.hashing).await;
                Err(DirectoryError::InvalidCredentials)
            }
        }
    }

    async fn groups_of(&self, user: &str) -> Result<Vec<String>, DirectoryError> {
        check_user_name(user)?;
        self.users
            .get(user)
            .map(|e| &e.user)
            .or_else(|| self.services.get(user))
            .map(|u| u.groups.clone())
            .ok_or_else(|| DirectoryError::UnknownUser(user.to_owned()))
    }

    async fn service_account(&self, name: &str) -> Result<Option<DirectoryUser>, DirectoryError> {
        check_user_name(name)?;
        Ok(self.services.get(name).cloned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn directory() -> StaticDirectory {
        let hash =
            PasswordHash::create_with_iterations(&Password::new("pw").unwrap(), 10_000).unwrap();
        StaticDirectory::from_toml(&format!(
            r#"
            [[user]]
            name = "alice"
            password_hash = "{hash}"
            groups = ["b", "a", "a"]
            [[user]]
            name = "nopass"
            [[service_account]]
            name = "ci"
            groups = ["ci"]
            "#
        ))
        .unwrap()
    }

    /// The outside finding: eight wrong logins at once froze a service for 20 s, because
    /// PBKDF2 ran on the async workers. On a one-thread runtime another task must get to run
    /// while a password is being checked.
    #[tokio::test(flavor = "current_thread")]
    async fn password_checks_do_not_hold_the_async_worker() {
        let d = std::sync::Arc::new(directory());
        let finished = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let login = tokio::spawn({
            let (d, finished) = (d.clone(), finished.clone());
            async move {
                let wrong = Password::new("wrong").unwrap();
                for user in ["alice", "nobody"] {
                    let _ = d.authenticate(user, &wrong).await;
                }
                finished.store(true, std::sync::atomic::Ordering::SeqCst);
            }
        });
        tokio::task::yield_now().await;
        assert!(
            !finished.load(std::sync::atomic::Ordering::SeqCst),
            "the checks ran on this task's thread, blocking it"
        );
        login.await.unwrap();
        assert!(finished.load(std::sync::atomic::Ordering::SeqCst));
    }

    #[tokio::test]
    async fn login_groups_and_service_accounts() {
        let d = directory();
        let pw = Password::new("pw").unwrap();
        assert_eq!(
            d.authenticate("alice", &pw).await.unwrap().groups,
            ["a", "b"]
        );
        for user in ["bob", "nopass", "ci"] {
            assert!(matches!(
                d.authenticate(user, &pw).await,
                Err(DirectoryError::InvalidCredentials)
            ));
        }
        assert!(matches!(
            d.authenticate("has space", &pw).await,
            Err(DirectoryError::InvalidInput { .. })
        ));
        assert_eq!(d.groups_of("ci").await.unwrap(), ["ci"]);
        assert!(matches!(
            d.groups_of("bob").await,
            Err(DirectoryError::UnknownUser(_))
        ));
        assert!(d.service_account("ci").await.unwrap().is_some());
        assert!(d.service_account("alice").await.unwrap().is_none());
    }

    #[test]
    fn config_errors() {
        for bad in [
            "[[user]]\nname = \"a\"\n[[user]]\nname = \"a\"",
            "[[user]]\nname = \"a b\"",
            "[[user]]\nname = \"a\"\n[[service_account]]\nname = \"a\"",
            "[[service_account]]\nname = \"s\"\npassword_hash = \"pbkdf2-sha256$10000$00000000000000000000000000000000$0000000000000000000000000000000000000000000000000000000000000000\"",
            "[[user]]\nname = \"a\"\nextra = 1",
            "[[user]]\nname = \"a\"\npassword_hash = \"plain\"",
        ] {
            assert!(
                matches!(
                    StaticDirectory::from_toml(bad),
                    Err(DirectoryError::Config(_))
                ),
                "{bad}"
            );
        }
    }
}
