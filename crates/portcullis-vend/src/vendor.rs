//! [`CredentialVendor`]: a principal in, short-lived credentials out — through the directory,
//! the mapping and STS, with a per-key single-flight cache.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, SystemTime};

use portcullis_core::{Clock, Principal, PrincipalKind, SystemClock};
use portcullis_directory::Directory;

use crate::{
    AssumeRoleRequest, Credentials, Plan, StsBackend, VendConfig, VendError, is_valid_session_name,
    session_name,
};

/// Slots kept at most before idle ones are dropped.
const MAX_SLOTS: usize = 10_000;

/// What the caller asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VendRequest {
    /// Only these roles (each must be granted by the user's groups); `None`: all granted.
    pub roles: Option<Vec<String>>,
    /// The session length; `None`: the mapping's default.
    pub duration: Option<Duration>,
}

/// Credentials vended, with what they were vended for.
#[derive(Debug, Clone)]
pub struct Vended {
    /// The credentials.
    pub credentials: Arc<Credentials>,
    /// The roles and the exact policy set attached.
    pub plan: Plan,
    /// The `RoleSessionName` (and `SourceIdentity`) used.
    pub session_name: String,
    /// Whether they came from the cache.
    pub from_cache: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct CacheKey {
    user: String,
    policies: Vec<String>,
    duration: u64,
}

#[derive(Debug)]
struct Cached {
    credentials: Arc<Credentials>,
    /// min(vended + cache TTL, expiry − refresh margin).
    use_until: SystemTime,
}

#[derive(Debug, Default)]
struct Slot {
    current: RwLock<Option<Cached>>,
    /// Held while one request refreshes this key; the others wait for its result.
    refresh: tokio::sync::Mutex<()>,
}

impl Slot {
    fn fresh(&self, now: SystemTime) -> Option<Arc<Credentials>> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .filter(|c| now < c.use_until)
            .map(|c| c.credentials.clone())
    }

    fn is_idle(&self, now: SystemTime) -> bool {
        self.fresh(now).is_none() && self.refresh.try_lock().is_ok()
    }
}

/// Turns a [`Principal`] into short-lived AWS credentials: the user's groups from the
/// [`Directory`] → roles → managed policies ([`VendConfig`]) → one AssumeRole on the base
/// role with exactly those policies, so the session can do only what the base role *and*
/// the policies allow.
///
/// Refuses, rather than guesses: no mapped group, a role not granted, more than ten
/// policies, a duration outside the limits, a session name STS would reject, a directory or
/// STS failure — every one an error and no credentials.
///
/// Credentials are cached per (user, policy set, duration) for at most `cache_seconds` and
/// never past `refresh_before_seconds` before they expire, so a group change takes effect
/// within `cache_seconds` (plus the directory cache's TTL). Concurrent requests for a key
/// that needs credentials cause exactly one STS call.
pub struct CredentialVendor {
    config: VendConfig,
    directory: Arc<dyn Directory>,
    sts: Arc<dyn StsBackend>,
    clock: Arc<dyn Clock>,
    slots: Mutex<HashMap<CacheKey, Arc<Slot>>>,
}

impl std::fmt::Debug for CredentialVendor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CredentialVendor")
            .field("base_role_arn", &self.config.base_role_arn)
            .field("directory", &self.directory)
            .field("sts", &self.sts)
            .finish_non_exhaustive()
    }
}

impl CredentialVendor {
    /// A vendor over `config` (validated again here), `directory` and `sts`.
    ///
    /// # Errors
    ///
    /// [`VendError::Config`] for an invalid mapping.
    pub fn new(
        config: VendConfig,
        directory: Arc<dyn Directory>,
        sts: Arc<dyn StsBackend>,
    ) -> Result<Self, VendError> {
        config.validate()?;
        Ok(CredentialVendor {
            config,
            directory,
            sts,
            clock: Arc::new(SystemClock),
            slots: Mutex::new(HashMap::new()),
        })
    }

    /// Uses `clock` for cache expiry.
    #[must_use]
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The mapping.
    pub fn config(&self) -> &VendConfig {
        &self.config
    }

    fn slot(&self, key: CacheKey) -> Arc<Slot> {
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        if slots.len() >= MAX_SLOTS && !slots.contains_key(&key) {
            let now = self.clock.now();
            slots.retain(|_, slot| !slot.is_idle(now));
        }
        slots.entry(key).or_default().clone()
    }

    /// Vends credentials for `principal`.
    ///
    /// # Errors
    ///
    /// Any [`VendError`]; see the type's documentation.
    pub async fn vend(
        &self,
        principal: &Principal,
        request: &VendRequest,
    ) -> Result<Vended, VendError> {
        if !matches!(
            principal.kind(),
            PrincipalKind::User | PrincipalKind::Service
        ) {
            return Err(VendError::UnsupportedPrincipal(principal.to_string()));
        }
        let user = principal.subject();
        let groups = self.directory.groups_of(user).await?;
        let plan = self.config.plan(user, &groups, request.roles.as_deref())?;
        let duration = self.config.duration(request.duration)?;
        let session_name = session_name(user)?;
        if !is_valid_session_name(&session_name) {
            return Err(VendError::InvalidSessionName(session_name));
        }
        let key = CacheKey {
            user: user.to_owned(),
            policies: plan.policies.iter().cloned().collect(),
            duration: duration.as_secs(),
        };
        let slot = self.slot(key);
        let vended = |credentials, from_cache| Vended {
            credentials,
            plan: plan.clone(),
            session_name: session_name.clone(),
            from_cache,
        };
        if let Some(hit) = slot.fresh(self.clock.now()) {
            return Ok(vended(hit, true));
        }
        let _one_at_a_time = slot.refresh.lock().await;
        if let Some(hit) = slot.fresh(self.clock.now()) {
            return Ok(vended(hit, true));
        }
        let request = AssumeRoleRequest {
            role_arn: self.config.base_role_arn.clone(),
            session_name: session_name.clone(),
            source_identity: session_name.clone(),
            policy_arns: plan.policies.iter().cloned().collect(),
            duration_seconds: u32::try_from(duration.as_secs()).unwrap_or(u32::MAX),
        };
        let credentials = Arc::new(self.sts.assume_role(&request).await?);
        let now = self.clock.now();
        let margin = Duration::from_secs(self.config.refresh_before_seconds);
        let Some(renew_at) = credentials.expiration.checked_sub(margin) else {
            return Err(VendError::Unavailable(
                "STS returned an impossible expiry".into(),
            ));
        };
        if credentials.expiration <= now {
            return Err(VendError::Unavailable(
                "STS returned credentials that have already expired".into(),
            ));
        }
        let use_until = renew_at.min(now + Duration::from_secs(self.config.cache_seconds));
        *slot.current.write().unwrap_or_else(PoisonError::into_inner) = Some(Cached {
            credentials: credentials.clone(),
            use_until,
        });
        tracing::info!(
            user,
            session = %session_name,
            policies = plan.policies.len(),
            duration = duration.as_secs(),
            "vended credentials"
        );
        Ok(vended(credentials, false))
    }
}
