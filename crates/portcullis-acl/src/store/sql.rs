//! The SQL stores. SQLite and PostgreSQL share every query (built with `QueryBuilder`, which
//! writes each backend's placeholders); one macro instantiates the store for each.
//!
//! Schema changes are versioned migrations recorded in `portcullis_acl_schema`, a table of
//! this crate's own, so they never collide with the embedder's migrations in the same
//! database.

use portcullis_core::Resource;

use crate::{AclError, RoleBinding, Subject};

const COLUMNS: &str = "resource_kind, resource_id, subject_kind, subject_name, role";
const ORDER: &str = " ORDER BY resource_kind, resource_id, subject_kind, subject_name";

/// A row as stored.
type Row = (String, String, String, String, String);

fn to_binding(
    (resource_kind, resource_id, subject_kind, subject_name, role): Row,
) -> Result<RoleBinding, AclError> {
    let corrupt = |err: AclError| {
        AclError::Corrupt(format!(
            "row ({resource_kind}, {resource_id}, {subject_kind}, {subject_name}, {role}): {err}"
        ))
    };
    let resource = resource_kind
        .parse()
        .map_err(AclError::from)
        .and_then(|kind| Ok(Resource::new(kind, resource_id.as_str())?))
        .map_err(corrupt)?;
    let subject = subject_kind
        .parse()
        .and_then(|kind| Subject::new(kind, subject_name.as_str()))
        .map_err(corrupt)?;
    let role = role.parse().map_err(corrupt)?;
    Ok(RoleBinding::new(subject, resource, role))
}

fn is_unique_violation(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db) if db.is_unique_violation())
}

fn limit_plus_one(limit: u32) -> i64 {
    i64::from(limit) + 1
}

macro_rules! sql_acl_store {
    (
        $(#[$meta:meta])*
        $store:ident, $db:ty, $pool:ty,
        migrations: [$(($version:literal, $sql:expr)),* $(,)?],
        sql: $sqlmod:ident,
        lock: $lock:expr
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone)]
        pub struct $store {
            pool: $pool,
        }

        impl $store {
            /// Uses `pool`, bringing the schema up to date first.
            ///
            /// # Errors
            ///
            /// [`AclError::Store`] if a migration fails.
            pub async fn from_pool(pool: $pool) -> Result<Self, AclError> {
                let store = $store { pool };
                store.migrate().await?;
                Ok(store)
            }

            /// The connection pool.
            #[must_use]
            pub fn pool(&self) -> &$pool {
                &self.pool
            }

            async fn migrate(&self) -> Result<(), AclError> {
                const MIGRATIONS: &[(i64, &str)] = &[$(($version, $sql)),*];
                portcullis_sql::$sqlmod::migrate(&self.pool, "portcullis_acl_schema", $lock, MIGRATIONS).await?;
                Ok(())
            }

            fn key_query<'a>(
                prefix: &str,
                subject: &'a Subject,
                resource: &'a Resource,
            ) -> sqlx::QueryBuilder<'a, $db> {
                let mut q = sqlx::QueryBuilder::<$db>::new(prefix);
                q.push(" WHERE resource_kind = ")
                    .push_bind(resource.kind().as_str())
                    .push(" AND resource_id = ")
                    .push_bind(resource.id())
                    .push(" AND subject_kind = ")
                    .push_bind(subject.kind().as_str())
                    .push(" AND subject_name = ")
                    .push_bind(subject.name());
                q
            }

            async fn bump<'c>(tx: &mut sqlx::Transaction<'c, $db>) -> Result<(), AclError> {
                sqlx::query("UPDATE portcullis_acl_revision SET revision = revision + 1 WHERE id = 1")
                    .execute(&mut **tx)
                    .await?;
                Ok(())
            }
        }

        #[async_trait::async_trait]
        impl crate::store::AclStore for $store {
            async fn insert(&self, binding: &RoleBinding) -> Result<(), AclError> {
                let mut tx = self.pool.begin_with(portcullis_sql::$sqlmod::BEGIN_WRITE).await?;
                let mut q = sqlx::QueryBuilder::<$db>::new(format!(
                    "INSERT INTO portcullis_acl_bindings ({COLUMNS}) VALUES ("
                ));
                let mut values = q.separated(", ");
                values
                    .push_bind(binding.resource.kind().as_str())
                    .push_bind(binding.resource.id())
                    .push_bind(binding.subject.kind().as_str())
                    .push_bind(binding.subject.name())
                    .push_bind(binding.role.as_str());
                q.push(")");
                match q.build().execute(&mut *tx).await {
                    Ok(_) => {}
                    Err(err) if is_unique_violation(&err) => {
                        return Err(AclError::DuplicateBinding {
                            subject: binding.subject.clone(),
                            resource: binding.resource.clone(),
                        });
                    }
                    Err(err) => return Err(err.into()),
                }
                Self::bump(&mut tx).await?;
                tx.commit().await?;
                Ok(())
            }

            async fn update(&self, binding: &RoleBinding) -> Result<RoleBinding, AclError> {
                let mut tx = self.pool.begin_with(portcullis_sql::$sqlmod::BEGIN_WRITE).await?;
                let old: Option<String> =
                    Self::key_query("SELECT role FROM portcullis_acl_bindings", &binding.subject, &binding.resource)
                        .build_query_scalar()
                        .fetch_optional(&mut *tx)
                        .await?;
                let Some(old) = old else {
                    return Err(AclError::BindingNotFound {
                        subject: binding.subject.clone(),
                        resource: binding.resource.clone(),
                    });
                };
                let mut q = sqlx::QueryBuilder::<$db>::new("UPDATE portcullis_acl_bindings SET role = ");
                q.push_bind(binding.role.as_str())
                    .push(" WHERE resource_kind = ")
                    .push_bind(binding.resource.kind().as_str())
                    .push(" AND resource_id = ")
                    .push_bind(binding.resource.id())
                    .push(" AND subject_kind = ")
                    .push_bind(binding.subject.kind().as_str())
                    .push(" AND subject_name = ")
                    .push_bind(binding.subject.name());
                q.build().execute(&mut *tx).await?;
                Self::bump(&mut tx).await?;
                tx.commit().await?;
                let role = old
                    .parse()
                    .map_err(|err| AclError::Corrupt(format!("stored role `{old}`: {err}")))?;
                Ok(RoleBinding::new(binding.subject.clone(), binding.resource.clone(), role))
            }

            async fn delete(
                &self,
                subject: &Subject,
                resource: &Resource,
            ) -> Result<RoleBinding, AclError> {
                let mut tx = self.pool.begin_with(portcullis_sql::$sqlmod::BEGIN_WRITE).await?;
                let mut q = Self::key_query("DELETE FROM portcullis_acl_bindings", subject, resource);
                q.push(" RETURNING role");
                let old: Option<String> = q.build_query_scalar().fetch_optional(&mut *tx).await?;
                let Some(old) = old else {
                    return Err(AclError::BindingNotFound {
                        subject: subject.clone(),
                        resource: resource.clone(),
                    });
                };
                Self::bump(&mut tx).await?;
                tx.commit().await?;
                let role = old
                    .parse()
                    .map_err(|err| AclError::Corrupt(format!("stored role `{old}`: {err}")))?;
                Ok(RoleBinding::new(subject.clone(), resource.clone(), role))
            }

            async fn get(
                &self,
                subject: &Subject,
                resource: &Resource,
            ) -> Result<Option<RoleBinding>, AclError> {
                let row: Option<Row> = Self::key_query(
                    &format!("SELECT {COLUMNS} FROM portcullis_acl_bindings"),
                    subject,
                    resource,
                )
                .build_query_as()
                .fetch_optional(&self.pool)
                .await?;
                row.map(to_binding).transpose()
            }

            async fn list(
                &self,
                filter: &crate::store::BindingFilter,
                page: &crate::store::PageRequest,
            ) -> Result<crate::store::Page, AclError> {
                page.validate()?;
                let mut q = sqlx::QueryBuilder::<$db>::new(format!(
                    "SELECT {COLUMNS} FROM portcullis_acl_bindings WHERE 1 = 1"
                ));
                if let Some(resource) = &filter.resource {
                    q.push(" AND resource_kind = ")
                        .push_bind(resource.kind().as_str())
                        .push(" AND resource_id = ")
                        .push_bind(resource.id());
                }
                if let Some(subject) = &filter.subject {
                    q.push(" AND subject_kind = ")
                        .push_bind(subject.kind().as_str())
                        .push(" AND subject_name = ")
                        .push_bind(subject.name());
                }
                if let Some(kind) = filter.subject_kind {
                    q.push(" AND subject_kind = ").push_bind(kind.as_str());
                }
                if let Some(after) = &page.after {
                    q.push(" AND (resource_kind, resource_id, subject_kind, subject_name) > (");
                    let mut key = q.separated(", ");
                    key.push_bind(after.resource.kind().as_str())
                        .push_bind(after.resource.id())
                        .push_bind(after.subject.kind().as_str())
                        .push_bind(after.subject.name());
                    q.push(")");
                }
                q.push(ORDER).push(" LIMIT ").push_bind(limit_plus_one(page.limit));
                let rows: Vec<Row> = q.build_query_as().fetch_all(&self.pool).await?;
                let fetched = rows.into_iter().map(to_binding).collect::<Result<_, _>>()?;
                Ok(crate::store::Page::from_fetched(fetched, page.limit))
            }

            async fn revision(&self) -> Result<u64, AclError> {
                let revision: i64 =
                    sqlx::query_scalar("SELECT revision FROM portcullis_acl_revision WHERE id = 1")
                        .fetch_one(&self.pool)
                        .await?;
                u64::try_from(revision)
                    .map_err(|_| AclError::Corrupt(format!("negative revision {revision}")))
            }

            async fn load_all(&self) -> Result<crate::store::StoreContents, AclError> {
                let revision = crate::store::AclStore::revision(self).await?;
                let rows: Vec<Row> =
                    sqlx::query_as(&format!("SELECT {COLUMNS} FROM portcullis_acl_bindings{ORDER}"))
                        .fetch_all(&self.pool)
                        .await?;
                let bindings = rows.into_iter().map(to_binding).collect::<Result<_, _>>()?;
                Ok(crate::store::StoreContents { revision, bindings })
            }
        }
    };
}

#[cfg(feature = "sqlite")]
mod sqlite {
    use super::*;

    sql_acl_store!(
        /// Role bindings in SQLite (WAL journal, full sync): the embedded default.
        ///
        /// ```no_run
        /// # async fn run() -> Result<(), portcullis_acl::AclError> {
        /// let store = portcullis_acl::SqliteAclStore::connect("sqlite://acl.db").await?;
        /// # Ok(()) }
        /// ```
        SqliteAclStore, sqlx::Sqlite, sqlx::SqlitePool,
        migrations: [(1, include_str!("../../migrations/sqlite_0001_bindings.sql"))],
        sql: sqlite,
        lock: None::<i64>
    );

    impl SqliteAclStore {
        /// Opens (creating if missing) the database at `url` (`sqlite://path.db`, or
        /// `sqlite::memory:` for a private in-memory database) and migrates it.
        ///
        /// # Errors
        ///
        /// [`AclError::Store`] if the URL is invalid, the file cannot be opened, or a
        /// migration fails.
        pub async fn connect(url: &str) -> Result<Self, AclError> {
            let pool = portcullis_sql::sqlite::pool(url, |options| options).await?;
            Self::from_pool(pool).await
        }
    }
}

#[cfg(feature = "postgres")]
mod postgres {
    use sqlx::postgres::PgPoolOptions;

    use super::*;

    sql_acl_store!(
        /// Role bindings in PostgreSQL, for any number of instances sharing one database.
        PostgresAclStore, sqlx::Postgres, sqlx::PgPool,
        migrations: [
            (1, include_str!("../../migrations/postgres_0001_bindings.sql")),
            (2, include_str!("../../migrations/postgres_0002_notify.sql")),
        ],
        // Instances starting together take turns migrating.
        sql: postgres,
        lock: Some(7283901234567001_i64)
    );

    impl PostgresAclStore {
        /// Connects to `url` (`postgres://user@host:port/db`) with a pool of up to
        /// `max_connections` and migrates the schema.
        ///
        /// # Errors
        ///
        /// [`AclError::Store`] if the database is unreachable or a migration fails.
        pub async fn connect(url: &str, max_connections: u32) -> Result<Self, AclError> {
            let pool = PgPoolOptions::new()
                .max_connections(max_connections.max(1))
                .connect(url)
                .await?;
            Self::from_pool(pool).await
        }

        /// Listens for changes committed by any instance sharing the database (each change
        /// bumps the revision, and a trigger `NOTIFY`s channel [`CHANGE_CHANNEL`]). Hand
        /// its [`wakeup`](portcullis_sql::postgres::ChangeListener::wakeup) to
        /// [`Acl::spawn_notified_refresher`](crate::Acl::spawn_notified_refresher), which
        /// then reloads within milliseconds of a change instead of at its next tick.
        ///
        /// # Errors
        ///
        /// [`AclError::Store`] if the listening connection cannot be opened.
        pub async fn listen(&self) -> Result<crate::ChangeListener, AclError> {
            Ok(crate::ChangeListener::start(&self.pool, CHANGE_CHANNEL).await?)
        }
    }

    /// The `NOTIFY` channel a committed change to the bindings is announced on.
    pub const CHANGE_CHANNEL: &str = "portcullis_acl";
}

#[cfg(feature = "postgres")]
pub use postgres::{CHANGE_CHANNEL, PostgresAclStore};
#[cfg(feature = "sqlite")]
pub use sqlite::SqliteAclStore;
