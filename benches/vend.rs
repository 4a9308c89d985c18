//! Credential vending cost.
//!
//! Targets (issue #8): a cache hit ≤ 1 µs; 1,000 concurrent requests for one cold key ⇒
//! exactly one STS call.
#![expect(
    clippy::expect_used,
    reason = "benches set up fixed, valid inputs; a failure is a broken bench"
)]

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use portcullis::directory::StaticDirectory;
use portcullis::vend::{
    AssumeRoleRequest, CredentialVendor, Credentials, Secret, StsBackend, VendConfig, VendError,
    VendRequest,
};
use portcullis::{AuthMethod, Principal, PrincipalKind};

/// An in-process STS that takes 20 ms per call, like a real one, and counts calls.
#[derive(Debug, Default)]
struct SlowSts(AtomicUsize);

#[async_trait::async_trait]
impl StsBackend for SlowSts {
    async fn assume_role(&self, r: &AssumeRoleRequest) -> Result<Credentials, VendError> {
        let n = self.0.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(20)).await;
        Ok(Credentials {
            access_key_id: format!("ASIA{n:016}"),
            secret_access_key: Secret::new("secret"),
            session_token: Secret::new("token"),
            expiration: SystemTime::now() + Duration::from_secs(r.duration_seconds.into()),
            assumed_role_arn: None,
        })
    }
}

fn vendor(sts: Arc<SlowSts>) -> CredentialVendor {
    let config = VendConfig::from_toml(
        r#"
        base_role_arn = "arn:aws:iam::123456789012:role/data-access-base"
        [groups]
        analysts = ["read-sales"]
        data-eng = ["read-sales", "write-sales"]
        [roles]
        read-sales = ["arn:aws:iam::123456789012:policy/sales-read"]
        write-sales = ["arn:aws:iam::123456789012:policy/sales-write"]
        "#,
    )
    .expect("mapping");
    let directory = StaticDirectory::from_toml(
        "[[user]]\nname = \"alice\"\ngroups = [\"analysts\", \"data-eng\", \"unmapped\"]\n",
    )
    .expect("directory");
    CredentialVendor::new(config, Arc::new(directory), sts).expect("vendor")
}

fn alice() -> Principal {
    Principal::builder(PrincipalKind::User, "alice", AuthMethod::OIDC)
        .build()
        .expect("principal")
}

fn vend(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut group = c.benchmark_group("vend");

    // The whole hit path: directory lookup, mapping, cache.
    let sts = Arc::new(SlowSts::default());
    let warm = vendor(sts.clone());
    let principal = alice();
    let request = VendRequest::default();
    rt.block_on(warm.vend(&principal, &request))
        .expect("first vend");
    let local = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    group.bench_function("cache_hit", |b| {
        b.iter(|| {
            let vended = local
                .block_on(warm.vend(black_box(&principal), black_box(&request)))
                .expect("hit");
            black_box(vended.from_cache)
        });
    });
    assert_eq!(
        sts.0.load(Ordering::SeqCst),
        1,
        "every bench iteration was a cache hit"
    );

    // A cold key under 1,000 concurrent requests: one STS call, everyone served.
    group.sample_size(10);
    group.bench_function("cold_key_1000_concurrent", |b| {
        b.iter_batched(
            || {
                let sts = Arc::new(SlowSts::default());
                (Arc::new(vendor(sts.clone())), sts)
            },
            |(vendor, sts)| {
                rt.block_on(async {
                    let mut tasks = Vec::with_capacity(1000);
                    for _ in 0..1000 {
                        let vendor = vendor.clone();
                        tasks.push(tokio::spawn(async move {
                            vendor.vend(&alice(), &VendRequest::default()).await
                        }));
                    }
                    for task in tasks {
                        task.await.expect("task").expect("vend");
                    }
                });
                assert_eq!(sts.0.load(Ordering::SeqCst), 1, "exactly one STS call");
            },
            BatchSize::PerIteration,
        );
    });
    group.finish();
}

criterion_group!(benches, vend);
criterion_main!(benches);
