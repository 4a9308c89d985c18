//! Where requests and votes live, so an approval survives a restart and can be audited.

use std::collections::BTreeMap;
use std::sync::Mutex;

use async_trait::async_trait;

use crate::{ApprovalError, ApprovalRecord, RequestState, Vote};

/// A durable home for approval requests and their votes. Async, object safe.
#[async_trait]
pub trait ApprovalStore: Send + Sync + std::fmt::Debug {
    /// Stores a new request (state pending, no votes).
    ///
    /// # Errors
    ///
    /// [`ApprovalError::Store`], also when the id exists.
    async fn create(&self, record: &ApprovalRecord) -> Result<(), ApprovalError>;

    /// A request with its votes.
    ///
    /// # Errors
    ///
    /// [`ApprovalError::Store`].
    async fn get(&self, id: &str) -> Result<Option<ApprovalRecord>, ApprovalError>;

    /// Records a vote and the state it leads to, atomically; an approver votes once.
    ///
    /// # Errors
    ///
    /// [`ApprovalError::AlreadyVoted`] if this approver voted; [`ApprovalError::Store`].
    async fn add_vote(
        &self,
        id: &str,
        vote: &Vote,
        state: RequestState,
    ) -> Result<(), ApprovalError>;

    /// Sets the state (expiry).
    ///
    /// # Errors
    ///
    /// [`ApprovalError::Store`].
    async fn set_state(&self, id: &str, state: RequestState) -> Result<(), ApprovalError>;

    /// Marks the receipt of an approved request used; `false` if it was used already or the
    /// request is not approved. Atomic: of two concurrent calls, one wins.
    ///
    /// # Errors
    ///
    /// [`ApprovalError::Store`].
    async fn consume_receipt(&self, id: &str) -> Result<bool, ApprovalError>;

    /// Requests in `state`, oldest first.
    ///
    /// # Errors
    ///
    /// [`ApprovalError::Store`].
    async fn list(&self, state: RequestState) -> Result<Vec<ApprovalRecord>, ApprovalError>;
}

/// An [`ApprovalStore`] in memory.
#[derive(Debug, Default)]
pub struct MemoryApprovalStore {
    records: Mutex<BTreeMap<String, ApprovalRecord>>,
}

impl MemoryApprovalStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, ApprovalRecord>> {
        self.records
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[async_trait]
impl ApprovalStore for MemoryApprovalStore {
    async fn create(&self, record: &ApprovalRecord) -> Result<(), ApprovalError> {
        let mut records = self.lock();
        if records.contains_key(&record.request.id) {
            return Err(ApprovalError::Store(format!(
                "request {} exists",
                record.request.id
            )));
        }
        records.insert(record.request.id.clone(), record.clone());
        Ok(())
    }

    async fn get(&self, id: &str) -> Result<Option<ApprovalRecord>, ApprovalError> {
        Ok(self.lock().get(id).cloned())
    }

    async fn add_vote(
        &self,
        id: &str,
        vote: &Vote,
        state: RequestState,
    ) -> Result<(), ApprovalError> {
        let mut records = self.lock();
        let record = records
            .get_mut(id)
            .ok_or_else(|| ApprovalError::UnknownRequest(id.to_owned()))?;
        if record.votes.iter().any(|v| v.approver == vote.approver) {
            return Err(ApprovalError::AlreadyVoted(vote.approver.clone()));
        }
        record.votes.push(vote.clone());
        record.state = state;
        Ok(())
    }

    async fn set_state(&self, id: &str, state: RequestState) -> Result<(), ApprovalError> {
        if let Some(record) = self.lock().get_mut(id) {
            record.state = state;
        }
        Ok(())
    }

    async fn consume_receipt(&self, id: &str) -> Result<bool, ApprovalError> {
        Ok(match self.lock().get_mut(id) {
            Some(r) if r.state == RequestState::Approved && !r.receipt_used => {
                r.receipt_used = true;
                true
            }
            _ => false,
        })
    }

    async fn list(&self, state: RequestState) -> Result<Vec<ApprovalRecord>, ApprovalError> {
        let mut found: Vec<_> = self
            .lock()
            .values()
            .filter(|r| r.state == state)
            .cloned()
            .collect();
        found.sort_by_key(|r| r.request.created_at);
        Ok(found)
    }
}

#[cfg(feature = "sqlite")]
pub use sqlite::SqliteApprovalStore;

#[cfg(feature = "sqlite")]
mod sqlite {
    use async_trait::async_trait;

    use super::ApprovalStore;
    use crate::{ApprovalError, ApprovalRecord, ApprovalRequest, RequestState, Vote};

    fn state_of(text: &str) -> Result<RequestState, ApprovalError> {
        serde_json::from_value(serde_json::Value::String(text.to_owned()))
            .map_err(|_| ApprovalError::Store(format!("unknown stored state `{text}`")))
    }

    fn corrupt(e: serde_json::Error) -> ApprovalError {
        ApprovalError::Store(format!("stored approval is not valid JSON: {e}"))
    }

    /// An [`ApprovalStore`] in SQLite (WAL). Requests and votes are stored as versionless
    /// JSON documents next to indexed columns.
    #[derive(Debug, Clone)]
    pub struct SqliteApprovalStore {
        pool: sqlx::SqlitePool,
    }

    impl SqliteApprovalStore {
        /// Opens (creating if needed) the database at `url` and migrates it.
        ///
        /// # Errors
        ///
        /// [`ApprovalError::Store`].
        pub async fn connect(url: &str) -> Result<Self, ApprovalError> {
            let pool = portcullis_sql::sqlite::pool(url, |options| options).await?;
            portcullis_sql::sqlite::migrate(
                &pool,
                "portcullis_approval_schema",
                None,
                &[(1, include_str!("../migrations/0001_approvals.sql"))],
            )
            .await?;
            Ok(SqliteApprovalStore { pool })
        }

        async fn votes(&self, id: &str) -> Result<Vec<Vote>, ApprovalError> {
            let rows: Vec<String> = sqlx::query_scalar(
                "SELECT body FROM portcullis_approval_votes WHERE request_id = ? ORDER BY seq",
            )
            .bind(id)
            .fetch_all(&self.pool)
            .await?;
            rows.iter()
                .map(|b| serde_json::from_str(b).map_err(corrupt))
                .collect()
        }

        async fn record(
            &self,
            row: (String, String, bool),
        ) -> Result<ApprovalRecord, ApprovalError> {
            let (body, state, used) = row;
            let request: ApprovalRequest = serde_json::from_str(&body).map_err(corrupt)?;
            let votes = self.votes(&request.id).await?;
            Ok(ApprovalRecord {
                request,
                votes,
                state: state_of(&state)?,
                receipt_used: used,
            })
        }
    }

    #[async_trait]
    impl ApprovalStore for SqliteApprovalStore {
        async fn create(&self, record: &ApprovalRecord) -> Result<(), ApprovalError> {
            let body = serde_json::to_string(&record.request).map_err(corrupt)?;
            sqlx::query(
                "INSERT INTO portcullis_approval_requests (id, body, state, receipt_used, created_at) VALUES (?, ?, ?, 0, ?)",
            )
            .bind(&record.request.id)
            .bind(body)
            .bind(record.state.as_str())
            .bind(crate::model::unix(record.request.created_at))
            .execute(&self.pool)
            .await?;
            Ok(())
        }

        async fn get(&self, id: &str) -> Result<Option<ApprovalRecord>, ApprovalError> {
            let row: Option<(String, String, bool)> = sqlx::query_as(
                "SELECT body, state, receipt_used FROM portcullis_approval_requests WHERE id = ?",
            )
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
            match row {
                Some(row) => Ok(Some(self.record(row).await?)),
                None => Ok(None),
            }
        }

        async fn add_vote(
            &self,
            id: &str,
            vote: &Vote,
            state: RequestState,
        ) -> Result<(), ApprovalError> {
            let body = serde_json::to_string(vote).map_err(corrupt)?;
            let mut tx = self
                .pool
                .begin_with(portcullis_sql::sqlite::BEGIN_WRITE)
                .await?;
            let inserted = sqlx::query(
                "INSERT INTO portcullis_approval_votes (request_id, approver, body) VALUES (?, ?, ?)",
            )
            .bind(id)
            .bind(&vote.approver)
            .bind(body)
            .execute(&mut *tx)
            .await;
            if let Err(sqlx::Error::Database(db)) = &inserted
                && db.is_unique_violation()
            {
                return Err(ApprovalError::AlreadyVoted(vote.approver.clone()));
            }
            inserted?;
            sqlx::query("UPDATE portcullis_approval_requests SET state = ? WHERE id = ?")
                .bind(state.as_str())
                .bind(id)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(())
        }

        async fn set_state(&self, id: &str, state: RequestState) -> Result<(), ApprovalError> {
            sqlx::query("UPDATE portcullis_approval_requests SET state = ? WHERE id = ?")
                .bind(state.as_str())
                .bind(id)
                .execute(&self.pool)
                .await?;
            Ok(())
        }

        async fn consume_receipt(&self, id: &str) -> Result<bool, ApprovalError> {
            let done = sqlx::query(
                "UPDATE portcullis_approval_requests SET receipt_used = 1 WHERE id = ? AND receipt_used = 0 AND state = 'approved'",
            )
            .bind(id)
            .execute(&self.pool)
            .await?;
            Ok(done.rows_affected() == 1)
        }

        async fn list(&self, state: RequestState) -> Result<Vec<ApprovalRecord>, ApprovalError> {
            let rows: Vec<(String, String, bool)> = sqlx::query_as(
                "SELECT body, state, receipt_used FROM portcullis_approval_requests WHERE state = ? ORDER BY created_at, id",
            )
            .bind(state.as_str())
            .fetch_all(&self.pool)
            .await?;
            let mut out = Vec::with_capacity(rows.len());
            for row in rows {
                out.push(self.record(row).await?);
            }
            Ok(out)
        }
    }
}
