//! One behavioural suite, run against every store: memory, SQLite (file and in-memory) and a
//! real PostgreSQL (feature `postgres`; `scripts/with-services` starts one and sets
//! `PORTCULLIS_TEST_POSTGRES_URL`).
#![expect(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    reason = "tests: a failed unwrap, index or panic is a failed test"
)]

use std::sync::Arc;

use portcullis_acl::{
    Acl, AclError, AclPolicy, AclStore, BindingFilter, BindingKey, MemoryAclStore, PageRequest,
    RoleBinding, RoleName, Subject, SubjectKind,
};
use portcullis_core::{Action, AuthMethod, Authorizer, Principal, PrincipalKind, Resource};

fn b(line: &str) -> RoleBinding {
    line.parse().unwrap()
}

fn r(text: &str) -> Resource {
    text.parse().unwrap()
}

async fn insert_get_update_delete(store: &dyn AclStore) {
    let r0 = store.revision().await.unwrap();
    assert!(store.load_all().await.unwrap().bindings.is_empty());

    let alice = b("user:alice env:checkout OPERATOR");
    store.insert(&alice).await.unwrap();
    let r1 = store.revision().await.unwrap();
    assert!(r1 > r0, "insert bumps the revision");
    assert!(matches!(
        store.insert(&b("user:alice env:checkout ADMIN")).await,
        Err(AclError::DuplicateBinding { .. })
    ));
    assert_eq!(
        store.revision().await.unwrap(),
        r1,
        "a refused insert changes nothing"
    );

    assert_eq!(
        store.get(&alice.subject, &alice.resource).await.unwrap(),
        Some(alice.clone())
    );
    assert_eq!(
        store.get(&alice.subject, &r("env:other")).await.unwrap(),
        None
    );

    let previous = store
        .update(&b("user:alice env:checkout ADMIN"))
        .await
        .unwrap();
    assert_eq!(previous, alice);
    assert_eq!(
        store
            .get(&alice.subject, &alice.resource)
            .await
            .unwrap()
            .unwrap()
            .role,
        RoleName::ADMIN
    );
    let r2 = store.revision().await.unwrap();
    assert!(r2 > r1, "update bumps the revision");
    assert!(matches!(
        store.update(&b("user:bob env:checkout ADMIN")).await,
        Err(AclError::BindingNotFound { .. })
    ));

    let removed = store.delete(&alice.subject, &alice.resource).await.unwrap();
    assert_eq!(removed, b("user:alice env:checkout ADMIN"));
    assert!(
        store.revision().await.unwrap() > r2,
        "delete bumps the revision"
    );
    assert!(matches!(
        store.delete(&alice.subject, &alice.resource).await,
        Err(AclError::BindingNotFound { .. })
    ));
    assert!(store.load_all().await.unwrap().bindings.is_empty());
}

async fn names_survive_storage(store: &dyn AclStore) {
    let odd = b("group:Ünïcode/team env_stage:checkout:blue/prod READER");
    store.insert(&odd).await.unwrap();
    let all = store.load_all().await.unwrap();
    assert_eq!(all.bindings, vec![odd.clone()]);
    assert_eq!(all.revision, store.revision().await.unwrap());
    store.delete(&odd.subject, &odd.resource).await.unwrap();
}

async fn pages_and_filters(store: &dyn AclStore) {
    let mut all = Vec::new();
    for env in ["b-env", "a-env", "c-env"] {
        for (i, kind) in ["user", "group", "token", "service"]
            .into_iter()
            .enumerate()
        {
            for n in 0..2 {
                let role = ["READER", "OPERATOR", "ADMIN"][(i + n) % 3];
                let binding = b(&format!("{kind}:{kind}{n} env:{env} {role}"));
                store.insert(&binding).await.unwrap();
                all.push(binding);
            }
        }
    }
    all.push(b("user:user0 system:* READER"));
    store.insert(all.last().unwrap()).await.unwrap();
    all.sort_by_key(BindingKey::of);

    // Every page, followed to the end, gives everything once, in key order.
    let mut seen = Vec::new();
    let mut page = PageRequest::first(7);
    loop {
        let got = store.list(&BindingFilter::default(), &page).await.unwrap();
        assert!(got.bindings.len() <= 7);
        seen.extend(got.bindings);
        match got.next {
            Some(next) => page = next,
            None => break,
        }
    }
    assert_eq!(seen, all);

    let on_b = BindingFilter {
        resource: Some(r("env:b-env")),
        ..BindingFilter::default()
    };
    let got = store.list(&on_b, &PageRequest::first(100)).await.unwrap();
    assert_eq!(got.bindings.len(), 8);
    assert!(got.next.is_none());
    assert!(got.bindings.iter().all(|x| x.resource == r("env:b-env")));

    let groups_on_b = BindingFilter {
        subject_kind: Some(SubjectKind::Group),
        ..on_b.clone()
    };
    let got = store
        .list(&groups_on_b, &PageRequest::first(100))
        .await
        .unwrap();
    let names: Vec<_> = got.bindings.iter().map(|x| x.subject.to_string()).collect();
    assert_eq!(names, ["group:group0", "group:group1"]);

    let user0 = BindingFilter {
        subject: Some(Subject::user("user0").unwrap()),
        ..BindingFilter::default()
    };
    let got = store.list(&user0, &PageRequest::first(2)).await.unwrap();
    assert_eq!(got.bindings.len(), 2);
    let rest = store.list(&user0, &got.next.unwrap()).await.unwrap();
    assert_eq!(rest.bindings.len(), 2, "three envs and system:*");
    assert!(rest.next.is_none());

    assert!(matches!(
        store
            .list(&BindingFilter::default(), &PageRequest::first(0))
            .await,
        Err(AclError::PageLimit { .. })
    ));
    assert!(matches!(
        store
            .list(&BindingFilter::default(), &PageRequest::first(1001))
            .await,
        Err(AclError::PageLimit { .. })
    ));
    for binding in &all {
        store
            .delete(&binding.subject, &binding.resource)
            .await
            .unwrap();
    }
}

/// An `Acl` over the store sees its own changes at once and other writers' after a reload.
async fn acl_over_store(store: Arc<dyn AclStore>) {
    store.insert(&b("user:root system:* ADMIN")).await.unwrap();
    let acl = Acl::open(store.clone(), AclPolicy::teletraan())
        .await
        .unwrap();
    let root = Principal::builder(PrincipalKind::User, "root", AuthMethod::OIDC)
        .build()
        .unwrap();
    let dana = Principal::builder(PrincipalKind::User, "dana", AuthMethod::OIDC)
        .build()
        .unwrap();
    let stage = r("env_stage:checkout/prod");
    let rbac = acl.authorizer();
    assert!(!rbac.check(&dana, &Action::DEPLOY, &stage).is_allowed());

    acl.grant(&root, b("user:dana env:checkout OPERATOR"))
        .await
        .unwrap();
    assert!(rbac.check(&dana, &Action::DEPLOY, &stage).is_allowed());

    // Another instance revokes it directly in the store; this one sees it on reload.
    store
        .delete(&Subject::user("dana").unwrap(), &r("env:checkout"))
        .await
        .unwrap();
    assert!(
        rbac.check(&dana, &Action::DEPLOY, &stage).is_allowed(),
        "stale until reload"
    );
    assert!(acl.reload().await.unwrap());
    assert!(!rbac.check(&dana, &Action::DEPLOY, &stage).is_allowed());
    assert!(!acl.reload().await.unwrap(), "nothing new");
}

/// Writers on several connections at once: each change waits its turn instead of failing
/// with "database is locked", and none is lost. Updates read the old role before writing,
/// the case a deferred SQLite transaction cannot upgrade while another writer holds the lock.
async fn concurrent_writers(store: Arc<dyn AclStore>) {
    const USERS: usize = 24;
    for n in 0..USERS {
        store
            .insert(&b(&format!("user:u{n} env:checkout OPERATOR")))
            .await
            .unwrap();
    }
    let r0 = store.revision().await.unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..USERS {
        let store = Arc::clone(&store);
        tasks.spawn(async move {
            store
                .update(&b(&format!("user:u{n} env:checkout ADMIN")))
                .await?;
            store
                .insert(&b(&format!("user:u{n} env:billing READER")))
                .await?;
            store
                .delete(&Subject::user(format!("u{n}")).unwrap(), &r("env:billing"))
                .await
                .map(|_| ())
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap().unwrap();
    }
    let all = store.load_all().await.unwrap().bindings;
    assert_eq!(all.len(), USERS);
    assert!(all.iter().all(|binding| binding.role == RoleName::ADMIN));
    assert_eq!(
        store.revision().await.unwrap(),
        r0 + 3 * USERS as u64,
        "every change bumped the revision once"
    );
}

async fn suite(make: impl AsyncFn() -> Arc<dyn AclStore>) {
    insert_get_update_delete(&*make().await).await;
    names_survive_storage(&*make().await).await;
    pages_and_filters(&*make().await).await;
    acl_over_store(make().await).await;
    concurrent_writers(make().await).await;
}

#[tokio::test]
async fn memory_store() {
    suite(async || Arc::new(MemoryAclStore::new()) as Arc<dyn AclStore>).await;
}

#[cfg(feature = "sqlite")]
mod sqlite {
    use super::*;
    use portcullis_acl::SqliteAclStore;

    #[tokio::test]
    async fn sqlite_store_in_memory() {
        suite(async || {
            Arc::new(SqliteAclStore::connect("sqlite::memory:").await.unwrap()) as Arc<dyn AclStore>
        })
        .await;
    }

    #[tokio::test]
    async fn sqlite_store_on_disk_survives_reopening() {
        let dir = std::env::temp_dir().join(format!(
            "portcullis-acl-test-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let counter = std::sync::atomic::AtomicUsize::new(0);
        suite(async || {
            let n = counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let url = format!("sqlite://{}", dir.join(format!("acl-{n}.db")).display());
            Arc::new(SqliteAclStore::connect(&url).await.unwrap()) as Arc<dyn AclStore>
        })
        .await;

        let url = format!("sqlite://{}", dir.join("reopen.db").display());
        let first = SqliteAclStore::connect(&url).await.unwrap();
        first.insert(&b("group:sre system:* ADMIN")).await.unwrap();
        let revision = first.revision().await.unwrap();
        drop(first);
        let again = SqliteAclStore::connect(&url).await.unwrap();
        assert_eq!(again.revision().await.unwrap(), revision);
        assert_eq!(
            again.load_all().await.unwrap().bindings,
            vec![b("group:sre system:* ADMIN")]
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

#[cfg(feature = "postgres")]
mod postgres {
    use super::*;
    use portcullis_acl::PostgresAclStore;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A fresh database on the test server at `admin`, so tests never see each other's rows.
    async fn fresh_database(admin: &str) -> String {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "acl_{}_{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        let pool = sqlx::PgPool::connect(admin).await.unwrap();
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&pool)
            .await
            .unwrap();
        pool.close().await;
        let (base, _) = admin.rsplit_once('/').unwrap();
        format!("{base}/{name}")
    }

    #[tokio::test]
    async fn postgres_store() {
        let admin = portcullis_test_support::service_or_skip!("PORTCULLIS_TEST_POSTGRES_URL");
        suite(async || {
            let url = fresh_database(&admin).await;
            Arc::new(PostgresAclStore::connect(&url, 4).await.unwrap()) as Arc<dyn AclStore>
        })
        .await;
    }

    #[tokio::test]
    async fn postgres_migrations_are_idempotent_and_concurrent() {
        let admin = portcullis_test_support::service_or_skip!("PORTCULLIS_TEST_POSTGRES_URL");
        let url = fresh_database(&admin).await;
        let (a, b) = tokio::join!(
            PostgresAclStore::connect(&url, 2),
            PostgresAclStore::connect(&url, 2)
        );
        let (a, b) = (a.unwrap(), b.unwrap());
        a.insert(&super::b("user:x env:y READER")).await.unwrap();
        assert_eq!(b.load_all().await.unwrap().bindings.len(), 1);
        assert_eq!(a.revision().await.unwrap(), b.revision().await.unwrap());
    }
}
