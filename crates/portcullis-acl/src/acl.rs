//! [`Acl`]: a store, a policy and the live snapshot, with the management operations an
//! embedder exposes (Teletraan's `user_roles`, `group_roles`, `token_roles`).

use std::fmt;
use std::sync::Arc;

use portcullis_core::{Action, Authorizer, Clock, Principal, Resource, SystemClock};

use crate::authorizer::SnapshotCell;
use crate::role::RoleRef;
use crate::{
    AclError, AclPolicy, AclSnapshot, AclStore, BindingFilter, Page, PageRequest, RoleAuthorizer,
    RoleBinding, RoleName, Subject, SubjectKind,
};

/// Access control over a store: it keeps an in-memory snapshot of the bindings that
/// [`RoleAuthorizer`]s read, swaps in a new one after every change made through it, and
/// (with [`spawn_refresher`](Acl::spawn_refresher)) picks up changes made by other instances
/// within a bounded time.
///
/// Changes go through [`grant`](Acl::grant), [`change`](Acl::change) and
/// [`revoke`](Acl::revoke), which enforce two rules: the actor must be allowed to manage
/// roles on the resource (`manage_roles`, or `manage_tokens` for token subjects — ADMIN by
/// default), and nobody may grant, change or revoke a role higher than one they hold there.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use std::sync::Arc;
/// use portcullis_acl::{Acl, AclPolicy, MemoryAclStore, RoleBinding};
/// use portcullis_core::{Action, AuthMethod, Authorizer, Principal, PrincipalKind};
///
/// let store = MemoryAclStore::with_bindings(["user:root system:* ADMIN".parse()?])?;
/// let acl = Acl::open(Arc::new(store), AclPolicy::teletraan()).await?;
/// let root = Principal::builder(PrincipalKind::User, "root", AuthMethod::OIDC).build()?;
/// let alice = Principal::builder(PrincipalKind::User, "alice", AuthMethod::OIDC)
///     .group("deployers")
///     .build()?;
/// let checkout = "env_stage:checkout/prod".parse()?;
///
/// let rbac = acl.authorizer();
/// assert!(!rbac.check(&alice, &Action::DEPLOY, &checkout).is_allowed());
/// acl.grant(&root, "group:deployers env:checkout OPERATOR".parse()?).await?;
/// let decision = rbac.check(&alice, &Action::DEPLOY, &checkout);
/// assert!(decision.is_allowed(), "{decision}");
/// # Ok(()) }
/// ```
pub struct Acl {
    store: Arc<dyn AclStore>,
    policy: Arc<AclPolicy>,
    cell: Arc<SnapshotCell>,
    clock: Arc<dyn Clock>,
}

impl fmt::Debug for Acl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Acl")
            .field("store", &self.store)
            .field("snapshot", &*self.cell.load())
            .finish_non_exhaustive()
    }
}

impl Acl {
    /// Loads the first snapshot from `store` under `policy`.
    ///
    /// # Errors
    ///
    /// If the store fails, or holds a binding the policy cannot read (an unknown role).
    pub async fn open(store: Arc<dyn AclStore>, policy: AclPolicy) -> Result<Self, AclError> {
        Acl::open_with_clock(store, policy, Arc::new(SystemClock)).await
    }

    /// As [`open`](Acl::open), with a clock for expiry and staleness.
    ///
    /// # Errors
    ///
    /// As [`open`](Acl::open).
    pub async fn open_with_clock(
        store: Arc<dyn AclStore>,
        policy: AclPolicy,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, AclError> {
        let policy = Arc::new(policy);
        let contents = store.load_all().await?;
        let snapshot = AclSnapshot::build(policy.clone(), contents.revision, contents.bindings)?;
        Ok(Acl {
            cell: Arc::new(SnapshotCell::new(snapshot, clock.now())),
            store,
            policy,
            clock,
        })
    }

    /// An authorizer reading this ACL's live snapshot.
    #[must_use]
    pub fn authorizer(&self) -> RoleAuthorizer {
        RoleAuthorizer::over(self.cell.clone()).with_clock(self.clock.clone())
    }

    /// The current snapshot.
    #[must_use]
    pub fn snapshot(&self) -> Arc<AclSnapshot> {
        self.cell.load()
    }

    /// The policy.
    #[must_use]
    pub fn policy(&self) -> &AclPolicy {
        &self.policy
    }

    /// The store.
    #[must_use]
    pub fn store(&self) -> &Arc<dyn AclStore> {
        &self.store
    }

    /// Rebuilds the snapshot if the store's revision moved; returns whether it did. Either
    /// way a successful call confirms the snapshot as fresh. On failure the current snapshot
    /// stays in place. Concurrent reloads need no lock: a snapshot replaces the current one
    /// only if its revision is newer.
    ///
    /// # Errors
    ///
    /// If the store fails or holds data the policy cannot read.
    pub async fn reload(&self) -> Result<bool, AclError> {
        let started = self.clock.now();
        let current = self.cell.load().revision();
        if self.store.revision().await? == current {
            self.cell.confirm(started);
            return Ok(false);
        }
        let contents = self.store.load_all().await?;
        let snapshot =
            AclSnapshot::build(self.policy.clone(), contents.revision, contents.bindings)?;
        self.cell.store(snapshot);
        self.cell.confirm(started);
        Ok(true)
    }

    /// From now on, checks *deny* once the snapshot has gone `max` without a successful
    /// [`reload`](Acl::reload), instead of trusting old grants forever. For embedders that
    /// drive reloads themselves; [`spawn_refresher`](Acl::spawn_refresher) sets it too.
    pub fn set_max_staleness(&self, max: std::time::Duration) {
        self.cell.set_max_staleness(max);
    }

    /// Reloads every `every` in the background, so changes made by other instances show up
    /// within about that long; and from now on checks *deny* once the snapshot has gone
    /// `max_staleness` without a successful reload (the store is unreachable), instead of
    /// trusting old grants forever. Stops when the handle or the `Acl` is dropped.
    #[cfg(feature = "refresh")]
    #[must_use = "the refresher stops when its handle is dropped"]
    pub fn spawn_refresher(
        self: &Arc<Self>,
        every: std::time::Duration,
        max_staleness: std::time::Duration,
    ) -> AclRefresher {
        self.refresher(every, max_staleness, None)
    }

    /// As [`spawn_refresher`](Acl::spawn_refresher), and also reloads as soon as `wakeup`
    /// is notified: hand it a store's change listener (`PostgresAclStore::listen`, feature
    /// `postgres`) and a change made by any instance applies here within milliseconds. The
    /// periodic reload stays as the fallback, and the staleness bound applies as before: a
    /// snapshot not confirmed for `max_staleness` denies everything.
    #[cfg(feature = "refresh")]
    #[must_use = "the refresher stops when its handle is dropped"]
    pub fn spawn_notified_refresher(
        self: &Arc<Self>,
        every: std::time::Duration,
        max_staleness: std::time::Duration,
        wakeup: Arc<tokio::sync::Notify>,
    ) -> AclRefresher {
        self.refresher(every, max_staleness, Some(wakeup))
    }

    #[cfg(feature = "refresh")]
    fn refresher(
        self: &Arc<Self>,
        every: std::time::Duration,
        max_staleness: std::time::Duration,
        wakeup: Option<Arc<tokio::sync::Notify>>,
    ) -> AclRefresher {
        self.cell.set_max_staleness(max_staleness);
        let acl: std::sync::Weak<Acl> = Arc::downgrade(self);
        let task = tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                match &wakeup {
                    Some(wakeup) => {
                        tokio::select! {
                            _ = ticks.tick() => {}
                            () = wakeup.notified() => {}
                        }
                    }
                    None => {
                        ticks.tick().await;
                    }
                }
                let Some(acl) = acl.upgrade() else { break };
                if let Err(err) = acl.reload().await {
                    tracing::warn!(error = %err, "ACL refresh failed; keeping the last snapshot");
                }
            }
        });
        AclRefresher { task }
    }

    /// Inserts every binding not already present (whatever role the present one has) and
    /// returns how many were added. For bootstrapping from configuration: it bypasses the
    /// management rules, so call it only with bindings an operator wrote.
    ///
    /// # Errors
    ///
    /// An unknown role, or a store failure.
    pub async fn seed(&self, bindings: &[RoleBinding]) -> Result<usize, AclError> {
        let mut added = 0;
        for binding in bindings {
            self.policy.roles().resolve(&binding.role)?;
            match self.store.insert(binding).await {
                Ok(()) => added += 1,
                Err(AclError::DuplicateBinding { .. }) => {}
                Err(err) => return Err(err),
            }
        }
        self.reload().await?;
        Ok(added)
    }

    /// Grants `binding`: `actor` must manage roles on its resource and hold a role there
    /// at least as high as the one granted.
    ///
    /// # Errors
    ///
    /// [`AclError::Forbidden`], [`AclError::UnknownRole`], [`AclError::DuplicateBinding`]
    /// (use [`change`](Acl::change)), or a store failure.
    pub async fn grant(&self, actor: &Principal, binding: RoleBinding) -> Result<(), AclError> {
        let role = self.policy.roles().resolve(&binding.role)?;
        self.may_manage(actor, &binding.subject, &binding.resource, &[role])?;
        self.store.insert(&binding).await?;
        self.reload().await?;
        Ok(())
    }

    /// Changes the role of `subject` on `resource` to `role`, returning the old binding.
    /// `actor` must manage roles there and hold a role at least as high as both the old and
    /// the new one.
    ///
    /// # Errors
    ///
    /// [`AclError::Forbidden`], [`AclError::UnknownRole`], [`AclError::BindingNotFound`],
    /// or a store failure.
    pub async fn change(
        &self,
        actor: &Principal,
        subject: &Subject,
        resource: &Resource,
        role: RoleName,
    ) -> Result<RoleBinding, AclError> {
        let new = self.policy.roles().resolve(&role)?;
        let old = self.existing_role(subject, resource).await?;
        self.may_manage(actor, subject, resource, &[old, new])?;
        let previous = self
            .store
            .update(&RoleBinding::new(subject.clone(), resource.clone(), role))
            .await?;
        self.reload().await?;
        Ok(previous)
    }

    /// Removes the role of `subject` on `resource`, returning the removed binding. `actor`
    /// must manage roles there and hold a role at least as high as the one removed.
    ///
    /// # Errors
    ///
    /// [`AclError::Forbidden`], [`AclError::BindingNotFound`], or a store failure.
    pub async fn revoke(
        &self,
        actor: &Principal,
        subject: &Subject,
        resource: &Resource,
    ) -> Result<RoleBinding, AclError> {
        let old = self.existing_role(subject, resource).await?;
        self.may_manage(actor, subject, resource, &[old])?;
        let removed = self.store.delete(subject, resource).await?;
        self.reload().await?;
        Ok(removed)
    }

    /// Lists the bindings on `resource` (of one subject kind, or all), for anyone who may
    /// `read` it.
    ///
    /// # Errors
    ///
    /// [`AclError::Forbidden`], [`AclError::PageLimit`], or a store failure.
    pub async fn list(
        &self,
        actor: &Principal,
        resource: &Resource,
        subject_kind: Option<SubjectKind>,
        page: &PageRequest,
    ) -> Result<Page, AclError> {
        let decision = self.authorizer().check(actor, &Action::READ, resource);
        if !decision.is_allowed() {
            return Err(AclError::Forbidden {
                reason: decision.reason().to_owned(),
            });
        }
        let filter = BindingFilter {
            resource: Some(resource.clone()),
            subject: None,
            subject_kind,
        };
        self.store.list(&filter, page).await
    }

    async fn existing_role(
        &self,
        subject: &Subject,
        resource: &Resource,
    ) -> Result<RoleRef, AclError> {
        let existing =
            self.store
                .get(subject, resource)
                .await?
                .ok_or_else(|| AclError::BindingNotFound {
                    subject: subject.clone(),
                    resource: resource.clone(),
                })?;
        self.policy.roles().resolve(&existing.role)
    }

    /// The two management rules, checked against the current snapshot.
    fn may_manage(
        &self,
        actor: &Principal,
        subject: &Subject,
        resource: &Resource,
        roles: &[RoleRef],
    ) -> Result<(), AclError> {
        let action = if subject.kind() == SubjectKind::Token {
            Action::MANAGE_TOKENS
        } else {
            Action::MANAGE_ROLES
        };
        let decision = self.authorizer().check(actor, &action, resource);
        if !decision.is_allowed() {
            return Err(AclError::Forbidden {
                reason: decision.reason().to_owned(),
            });
        }
        let snapshot = self.cell.load();
        for role in roles {
            if snapshot.find_satisfying(actor, resource, *role).is_none() {
                return Err(AclError::Forbidden {
                    reason: format!(
                        "{actor} holds no role on {resource} at or above {}; nobody may grant, change or revoke a role higher than their own",
                        self.policy.roles().name_of(*role)
                    ),
                });
            }
        }
        Ok(())
    }
}

/// Stops the background refresher when dropped.
#[cfg(feature = "refresh")]
#[derive(Debug)]
pub struct AclRefresher {
    task: tokio::task::JoinHandle<()>,
}

#[cfg(feature = "refresh")]
impl Drop for AclRefresher {
    fn drop(&mut self) {
        self.task.abort();
    }
}
