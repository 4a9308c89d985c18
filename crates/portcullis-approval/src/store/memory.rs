//! [`MemoryApprovalStore`]: both stores behind one mutex each.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;

use super::{ApprovalStore, StoredTotpSecret, TotpEnrollmentState, TotpStore};
use crate::{ApprovalError, ApprovalRecord, RequestState, SealedTotpSecret, TotpError, Vote};

/// An [`ApprovalStore`] and [`TotpStore`] in memory: for tests, examples and single
/// processes that accept losing pending approvals — and TOTP replay protection — on restart.
#[derive(Debug, Default)]
pub struct MemoryApprovalStore {
    records: Mutex<BTreeMap<String, ApprovalRecord>>,
    totp: Mutex<TotpState>,
}

/// Per user: the newest used step, and the enrolled secret.
#[derive(Debug, Default)]
struct TotpState {
    steps: HashMap<String, u64>,
    secrets: HashMap<String, StoredTotpSecret>,
}

impl MemoryApprovalStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, ApprovalRecord>> {
        self.records.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn totp(&self) -> MutexGuard<'_, TotpState> {
        // Every change is one insert or removal under the lock: a poisoned lock is consistent.
        self.totp.lock().unwrap_or_else(PoisonError::into_inner)
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

#[async_trait]
impl TotpStore for MemoryApprovalStore {
    async fn claim_step(&self, user: &str, step: u64) -> Result<bool, ApprovalError> {
        let mut totp = self.totp();
        match totp.steps.get_mut(user) {
            Some(used) if *used >= step => Ok(false),
            Some(used) => {
                *used = step;
                Ok(true)
            }
            None => {
                totp.steps.insert(user.to_owned(), step);
                Ok(true)
            }
        }
    }

    async fn put_pending_secret(
        &self,
        user: &str,
        sealed: &SealedTotpSecret,
    ) -> Result<(), ApprovalError> {
        let mut totp = self.totp();
        if totp
            .secrets
            .get(user)
            .is_some_and(|s| s.state == TotpEnrollmentState::Confirmed)
        {
            return Err(TotpError::AlreadyEnrolled(user.to_owned()).into());
        }
        totp.secrets.insert(
            user.to_owned(),
            StoredTotpSecret::new(sealed.clone(), TotpEnrollmentState::Pending),
        );
        Ok(())
    }

    async fn confirm_secret(
        &self,
        user: &str,
        sealed: &SealedTotpSecret,
    ) -> Result<bool, ApprovalError> {
        Ok(match self.totp().secrets.get_mut(user) {
            Some(stored)
                if stored.state == TotpEnrollmentState::Pending && stored.sealed == *sealed =>
            {
                stored.state = TotpEnrollmentState::Confirmed;
                true
            }
            _ => false,
        })
    }

    async fn secret(&self, user: &str) -> Result<Option<StoredTotpSecret>, ApprovalError> {
        Ok(self.totp().secrets.get(user).cloned())
    }

    async fn remove_secret(&self, user: &str) -> Result<bool, ApprovalError> {
        Ok(self.totp().secrets.remove(user).is_some())
    }
}
