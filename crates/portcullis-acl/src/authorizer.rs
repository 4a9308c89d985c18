//! [`RoleAuthorizer`]: core's `Authorizer` over an ACL snapshot.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use portcullis_core::{AccessRequest, Action, Authorizer, Clock, Decision, Resource, SystemClock};

use crate::AclSnapshot;
use crate::snapshot::push_all;

/// The current snapshot, and when it was last confirmed to match the store.
#[derive(Debug)]
pub(crate) struct SnapshotCell {
    current: ArcSwap<AclSnapshot>,
    /// Milliseconds since the epoch of the last successful check against the store.
    confirmed_at_ms: AtomicU64,
    /// Checks refuse when the last confirmation is older than this (0: no limit).
    max_staleness_ms: AtomicU64,
}

fn millis(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl SnapshotCell {
    pub(crate) fn new(snapshot: AclSnapshot, now: SystemTime) -> Self {
        SnapshotCell {
            current: ArcSwap::from_pointee(snapshot),
            confirmed_at_ms: AtomicU64::new(millis(now)),
            max_staleness_ms: AtomicU64::new(0),
        }
    }

    pub(crate) fn load(&self) -> Arc<AclSnapshot> {
        self.current.load_full()
    }

    /// Swaps in `snapshot` unless the current one is at least as new, so two reloads that
    /// race (no lock serializes them) never put an older revision back.
    pub(crate) fn store(&self, snapshot: AclSnapshot) {
        let snapshot = Arc::new(snapshot);
        self.current.rcu(|current| {
            if current.revision() < snapshot.revision() {
                Arc::clone(&snapshot)
            } else {
                Arc::clone(current)
            }
        });
    }

    pub(crate) fn confirm(&self, now: SystemTime) {
        self.confirmed_at_ms
            .fetch_max(millis(now), Ordering::AcqRel);
    }

    pub(crate) fn set_max_staleness(&self, max: Duration) {
        let ms = u64::try_from(max.as_millis()).unwrap_or(u64::MAX).max(1);
        self.max_staleness_ms.store(ms, Ordering::Release);
    }

    /// How long past its allowed staleness the snapshot is, if it is.
    fn overdue(&self, now: SystemTime) -> Option<Duration> {
        let max = self.max_staleness_ms.load(Ordering::Acquire);
        if max == 0 {
            return None;
        }
        let age = millis(now).saturating_sub(self.confirmed_at_ms.load(Ordering::Acquire));
        (age > max).then(|| Duration::from_millis(age))
    }
}

/// Allows a request when the principal — directly, through one of its groups, or as a
/// script token — holds a role on the resource, one of its ancestors or `system:*` that
/// satisfies the role the action needs there.
///
/// It never grants out of nothing: with no satisfying binding, or an action the policy has
/// no requirement for, it answers *not applicable* (a refusal) with a reason naming the
/// strongest role the principal does hold. It answers an explicit *deny* when the principal
/// has expired, or when the snapshot is older than the staleness bound set by
/// [`Acl::spawn_refresher`](crate::Acl::spawn_refresher).
///
/// Checks read an in-memory snapshot (no I/O, no locks): a few hash lookups per resource in
/// the chain.
#[derive(Clone)]
pub struct RoleAuthorizer {
    cell: Arc<SnapshotCell>,
    clock: Arc<dyn Clock>,
}

impl fmt::Debug for RoleAuthorizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RoleAuthorizer")
            .field("snapshot", &*self.cell.load())
            .finish_non_exhaustive()
    }
}

impl RoleAuthorizer {
    /// An authorizer over a fixed snapshot (no store, never refreshed): for tests, tools, and
    /// embedders that manage snapshots themselves.
    #[must_use]
    pub fn fixed(snapshot: AclSnapshot) -> Self {
        RoleAuthorizer::over(Arc::new(SnapshotCell::new(snapshot, SystemTime::now())))
    }

    pub(crate) fn over(cell: Arc<SnapshotCell>) -> Self {
        RoleAuthorizer {
            cell,
            clock: Arc::new(SystemClock),
        }
    }

    /// Uses `clock` for expiry and staleness checks.
    #[must_use]
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The snapshot checks currently read.
    #[must_use]
    pub fn snapshot(&self) -> Arc<AclSnapshot> {
        self.cell.load()
    }
}

impl Authorizer for RoleAuthorizer {
    fn authorize(&self, request: &AccessRequest<'_>) -> Decision {
        let AccessRequest {
            principal,
            action,
            resource,
            ..
        } = *request;
        if principal.expires_at().is_some()
            || self.cell.max_staleness_ms.load(Ordering::Relaxed) != 0
        {
            let now = self.clock.now();
            if principal.is_expired_at(now) {
                return Decision::deny(format!("{principal} has expired"));
            }
            if let Some(age) = self.cell.overdue(now) {
                return Decision::deny(format!(
                    "the role bindings were last confirmed {}s ago, beyond the allowed staleness; refusing until the store is reachable",
                    age.as_secs()
                ));
            }
        }
        let snapshot = self.cell.current.load();
        let policy = snapshot.policy();
        let Some(required) = policy.required(resource.kind(), action) else {
            return Decision::not_applicable(format!(
                "no role requirement is defined for `{action}` on {} resources, so it is refused; add one to the requirements table",
                resource.kind()
            ));
        };
        let needed = policy.roles().name_of(required);
        let mut reason = String::with_capacity(160);
        match snapshot.judge(principal, resource, required) {
            Ok(found) => {
                found.describe_into(&mut reason, principal, policy);
                push_all(&mut reason, &["; "]);
                push_requirement(&mut reason, action, resource, needed);
                Decision::allow(reason)
            }
            Err(strongest) => {
                push_requirement(&mut reason, action, resource, needed);
                match strongest {
                    Some(best) => {
                        reason.push_str("; the strongest grant: ");
                        best.describe_into(&mut reason, principal, policy);
                    }
                    None => push_all(
                        &mut reason,
                        &[
                            "; ",
                            principal.kind().as_str(),
                            ":",
                            principal.subject(),
                            " holds no role on it, its parents or system:*",
                        ],
                    ),
                }
                Decision::not_applicable(reason)
            }
        }
    }

    fn name(&self) -> &str {
        "rbac"
    }
}

/// Appends `deploy on env_stage:checkout/prod needs OPERATOR`.
fn push_requirement(reason: &mut String, action: &Action, resource: &Resource, needed: &str) {
    push_all(
        reason,
        &[
            action.as_str(),
            " on ",
            resource.kind().as_str(),
            ":",
            resource.id(),
            " needs ",
            needed,
        ],
    );
}
