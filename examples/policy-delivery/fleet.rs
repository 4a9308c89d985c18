//! `[store] url = "postgres://…"`: several policy-delivery instances on one PostgreSQL
//! database. Shared: pipeline state and history, hosts' downloads and status reports (and
//! the revisions' tarballs: `artifacts_dir` on a shared volume, or `[artifacts]` S3). Every change applies to
//! the latest stored state; reads follow other instances' changes at their notification
//! (a periodic read every `refresh_seconds` if notifications are lost); one instance leads
//! and runs the scheduler. See the README's "Running several instances".

#[cfg(not(feature = "postgres"))]
use std::path::Path;

use crate::StoreConfig;

#[cfg(feature = "postgres")]
pub(crate) use pg::Shared;

#[cfg(feature = "postgres")]
mod pg {
    use std::path::{Path, PathBuf};
    use std::sync::Arc;
    use std::time::Duration;

    use portcullis::delivery::{
        ChangeListener, Pipeline, PipelineStore, PostgresPipelineStore, Refresher,
    };

    use crate::{StoreConfig, resolve};

    /// The shared store, and how often reads are refreshed behind the notifications.
    #[derive(Debug)]
    pub(crate) struct Shared {
        store: Arc<PostgresPipelineStore>,
        refresh: Duration,
        artifacts_dir: Option<PathBuf>,
    }

    /// Keeps a pipeline's reads up to date until dropped.
    #[derive(Debug)]
    pub(crate) struct Following {
        _refresher: Refresher,
        _listener: ChangeListener,
    }

    impl Shared {
        /// Connects to `[store] url` (migrating it). The audit log must be shared too: one
        /// kept on each instance would split the record of operators' changes.
        pub(crate) async fn connect(
            config: &StoreConfig,
            base: &Path,
            audit_url: &str,
        ) -> Result<Shared, String> {
            super::check(config, audit_url)?;
            let store = PostgresPipelineStore::connect(&config.url, config.max_connections)
                .await
                .map_err(|e| format!("[store] {e}"))?;
            Ok(Shared {
                store: Arc::new(store),
                refresh: Duration::from_secs(config.refresh_seconds),
                artifacts_dir: config
                    .artifacts_dir
                    .as_deref()
                    .map(|dir| resolve(base, dir)),
            })
        }

        /// The pipeline store.
        pub(crate) fn store(&self) -> Arc<dyn PipelineStore> {
            self.store.clone()
        }

        /// The shared folder of the revisions' tarballs, if `[store]` names one.
        pub(crate) fn artifacts_dir(&self) -> Option<PathBuf> {
            self.artifacts_dir.clone()
        }

        /// Follows the other instances' changes: at their notification, and every
        /// `refresh_seconds` in case notifications are lost.
        pub(crate) async fn follow(&self, pipeline: &Arc<Pipeline>) -> Result<Following, String> {
            let listener = self
                .store
                .listen()
                .await
                .map_err(|e| format!("[store] {e}"))?;
            let refresher = pipeline.spawn_refresher(self.refresh, Some(listener.wakeup()));
            Ok(Following {
                _refresher: refresher,
                _listener: listener,
            })
        }
    }
}

/// Without PostgreSQL support there is nothing to share: `[store]` is refused.
#[cfg(not(feature = "postgres"))]
#[derive(Debug)]
pub(crate) enum Shared {}

#[cfg(not(feature = "postgres"))]
#[derive(Debug)]
pub(crate) enum Following {}

#[cfg(not(feature = "postgres"))]
impl Shared {
    pub(crate) async fn connect(
        _config: &StoreConfig,
        _base: &Path,
        _audit_url: &str,
    ) -> Result<Shared, String> {
        Err("[store] needs PostgreSQL support: build with `--features postgres`".into())
    }

    pub(crate) fn store(&self) -> std::sync::Arc<dyn portcullis::delivery::PipelineStore> {
        match *self {}
    }

    pub(crate) fn artifacts_dir(&self) -> Option<std::path::PathBuf> {
        match *self {}
    }

    pub(crate) async fn follow(
        &self,
        _pipeline: &std::sync::Arc<portcullis::delivery::Pipeline>,
    ) -> Result<Following, String> {
        match *self {}
    }
}

/// Whether `url` is PostgreSQL's.
#[cfg(feature = "postgres")]
fn is_postgres(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

#[cfg(feature = "postgres")]
fn check(config: &StoreConfig, audit_url: &str) -> Result<(), String> {
    if !is_postgres(&config.url) {
        return Err(
            "[store] url must be postgres://… (leave [store] out for one instance on \
             data_dir/pipeline.db)"
                .into(),
        );
    }
    if !(2..=100).contains(&config.max_connections) {
        return Err("[store] max_connections is 2 to 100".into());
    }
    if !(1..=3600).contains(&config.refresh_seconds) {
        return Err("[store] refresh_seconds is 1 to 3600".into());
    }
    if !is_postgres(audit_url) {
        return Err(format!(
            "[audit] url = {audit_url:?} keeps the audit log on this instance while [store] \
             shares the pipelines: it would split the record of operators' changes into one \
             per instance. Name a postgres:// URL (the store's database will do)"
        ));
    }
    Ok(())
}
