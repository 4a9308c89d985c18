//! The background refresher: it follows the store, and checks fail closed once the
//! snapshot is older than its staleness bound.
#![cfg(feature = "refresh")]
#![expect(
    clippy::unwrap_used,
    reason = "tests: a failed unwrap, index or panic is a failed test"
)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use portcullis_acl::{
    Acl, AclError, AclPolicy, AclStore, BindingFilter, MemoryAclStore, Page, PageRequest,
    RoleBinding, StoreContents, Subject,
};
use portcullis_core::{
    Action, AuthMethod, Authorizer, ManualClock, Principal, PrincipalKind, Resource,
};

fn user(name: &str, groups: &[&str]) -> Principal {
    Principal::builder(PrincipalKind::User, name, AuthMethod::OIDC)
        .groups(groups.iter().copied())
        .build()
        .unwrap()
}

fn r(text: &str) -> Resource {
    text.parse().unwrap()
}
/// A real memory store whose reads can be made to fail, as an unreachable database does.
#[derive(Debug, Default)]
struct FlakyStore {
    inner: MemoryAclStore,
    down: AtomicBool,
}

impl FlakyStore {
    fn check(&self) -> Result<(), AclError> {
        if self.down.load(Ordering::SeqCst) {
            Err(AclError::Store("connection refused".into()))
        } else {
            Ok(())
        }
    }
}

#[async_trait]
impl AclStore for FlakyStore {
    async fn insert(&self, b: &RoleBinding) -> Result<(), AclError> {
        self.check()?;
        self.inner.insert(b).await
    }
    async fn update(&self, b: &RoleBinding) -> Result<RoleBinding, AclError> {
        self.check()?;
        self.inner.update(b).await
    }
    async fn delete(&self, s: &Subject, r: &Resource) -> Result<RoleBinding, AclError> {
        self.check()?;
        self.inner.delete(s, r).await
    }
    async fn get(&self, s: &Subject, r: &Resource) -> Result<Option<RoleBinding>, AclError> {
        self.check()?;
        self.inner.get(s, r).await
    }
    async fn list(&self, f: &BindingFilter, p: &PageRequest) -> Result<Page, AclError> {
        self.check()?;
        self.inner.list(f, p).await
    }
    async fn revision(&self) -> Result<u64, AclError> {
        self.check()?;
        self.inner.revision().await
    }
    async fn load_all(&self) -> Result<StoreContents, AclError> {
        self.check()?;
        self.inner.load_all().await
    }
}

#[tokio::test(start_paused = true)]
async fn the_refresher_follows_the_store_and_fails_closed_when_it_cannot() {
    let store = Arc::new(FlakyStore::default());
    store
        .inner
        .insert(&"user:ann system:* READER".parse().unwrap())
        .await
        .unwrap();
    let start = SystemTime::now();
    let clock = Arc::new(ManualClock::new(start));
    let acl = Arc::new(
        Acl::open_with_clock(store.clone(), AclPolicy::teletraan(), clock.clone())
            .await
            .unwrap(),
    );
    let _refresher = acl.spawn_refresher(Duration::from_secs(5), Duration::from_secs(30));
    let rbac = acl.authorizer();
    let ann = user("ann", &[]);

    // Another instance grants OPERATOR; within one interval this one follows.
    store
        .inner
        .update(&"user:ann system:* OPERATOR".parse().unwrap())
        .await
        .unwrap();
    assert!(!rbac.check(&ann, &Action::DEPLOY, &r("env:x")).is_allowed());
    for _ in 0..2 {
        clock.advance(Duration::from_secs(5));
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    assert!(rbac.check(&ann, &Action::DEPLOY, &r("env:x")).is_allowed());

    // The store goes away: old grants hold for the staleness bound, then everything denies.
    store.down.store(true, Ordering::SeqCst);
    clock.advance(Duration::from_secs(20));
    tokio::time::sleep(Duration::from_secs(20)).await;
    assert!(rbac.check(&ann, &Action::DEPLOY, &r("env:x")).is_allowed());
    clock.advance(Duration::from_secs(20));
    tokio::time::sleep(Duration::from_secs(20)).await;
    let d = rbac.check(&ann, &Action::READ, &r("env:x"));
    assert!(d.is_denied(), "{d}");
    assert!(d.reason().contains("staleness"), "{d}");

    // It comes back: the next refresh restores service.
    store.down.store(false, Ordering::SeqCst);
    clock.advance(Duration::from_secs(5));
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(rbac.check(&ann, &Action::READ, &r("env:x")).is_allowed());
}
