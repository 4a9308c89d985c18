//! RBAC check latency as the number of bindings grows (10k / 100k / 1M bindings over 10k
//! resources and 1k groups), the reverse queries a management page asks on 1M bindings
//! (a principal's permissions; who may deploy to a stage), and the cost of rebuilding a
//! snapshot of 100k bindings.
//!
//! Targets (issue #4): a check ≤ 200 ns median, flat as bindings grow 10×; a 100k-binding
//! snapshot rebuild well under a second.
#![expect(
    clippy::expect_used,
    reason = "benches set up fixed, valid inputs; a failure is a broken bench"
)]

use std::collections::HashSet;
use std::hint::black_box;
use std::sync::Arc;

use criterion::{BatchSize, BenchmarkId, Criterion, criterion_group, criterion_main};
use portcullis::acl::{
    AclPolicy, AclSnapshot, RoleAuthorizer, RoleBinding, RoleName, Roles, Subject,
};
use portcullis::{Action, AuthMethod, Authorizer, Principal, PrincipalKind, Resource};

const ENVS: usize = 2_000;
const STAGES_PER_ENV: usize = 4; // 2k envs + 8k stages = 10k resources
const GROUPS: usize = 1_000;

/// A deterministic xorshift generator, so every run measures the same data.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        usize::try_from(self.0 % n as u64).expect("fits")
    }
}

fn resource(i: usize) -> Resource {
    let env = i % ENVS;
    let text = if i < ENVS {
        format!("env:e{env}")
    } else {
        format!("env_stage:e{env}/s{}", (i / ENVS) - 1)
    };
    text.parse().expect("valid resource")
}

/// `count` unique bindings: a third to groups, the rest to users and tokens.
fn bindings(count: usize) -> Vec<RoleBinding> {
    let roles: Vec<RoleName> = Roles::teletraan()
        .iter()
        .map(|role| role.name().clone())
        .collect();
    let users = count / 4;
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(count);
    while out.len() < count {
        let subject = match rng.below(3) {
            0 => Subject::group(format!("g{}", rng.below(GROUPS))),
            1 => Subject::token(format!("t{}", rng.below(users / 10 + 1))),
            _ => Subject::user(format!("u{}", rng.below(users))),
        }
        .expect("valid subject");
        let resource = resource(rng.below(ENVS * (1 + STAGES_PER_ENV)));
        if seen.insert((subject.clone(), resource.clone())) {
            let role = roles.get(rng.below(roles.len())).expect("in range").clone();
            out.push(RoleBinding::new(subject, resource, role));
        }
    }
    out
}

fn checks(c: &mut Criterion) {
    let policy = Arc::new(AclPolicy::teletraan());
    let mut group = c.benchmark_group("acl/check");
    for (label, count) in [("10k", 10_000), ("100k", 100_000), ("1M", 1_000_000)] {
        let mut all = bindings(count);
        // The principal under test: a user in five groups; one of them is OPERATOR on env e7,
        // so deploying to a stage of e7 is allowed through the parent.
        all.retain(|b| b.subject.name() != "bench-user" && b.subject.name() != "g-bench");
        all.push(
            "group:g-bench env:e7 OPERATOR"
                .parse()
                .expect("valid binding"),
        );
        let rbac = RoleAuthorizer::fixed(
            AclSnapshot::build(policy.clone(), 1, all).expect("unique bindings"),
        );
        let user = Principal::builder(PrincipalKind::User, "bench-user", AuthMethod::OIDC)
            .groups(["g1", "g17", "g230", "g999", "g-bench"])
            .build()
            .expect("valid principal");
        let allowed: Resource = "env_stage:e7/s2".parse().expect("valid resource");
        let refused: Resource = "env_stage:e8/s2".parse().expect("valid resource");
        let deploy = Action::DEPLOY;
        assert!(rbac.check(&user, &deploy, &allowed).is_allowed());
        group.bench_with_input(BenchmarkId::new("allow", label), &(), |b, ()| {
            b.iter(|| rbac.check(black_box(&user), &deploy, black_box(&allowed)))
        });
        group.bench_with_input(BenchmarkId::new("refuse", label), &(), |b, ()| {
            b.iter(|| rbac.check(black_box(&user), &deploy, black_box(&refused)))
        });
    }
    group.finish();
}

fn rebuild(c: &mut Criterion) {
    let policy = Arc::new(AclPolicy::teletraan());
    let all = bindings(100_000);
    let mut group = c.benchmark_group("acl/snapshot_build");
    group.sample_size(10);
    group.bench_function("100k", |b| {
        b.iter_batched(
            || all.clone(),
            |bindings| AclSnapshot::build(policy.clone(), 1, bindings).expect("unique"),
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

fn reverse(c: &mut Criterion) {
    let policy = Arc::new(AclPolicy::teletraan());
    let snapshot = AclSnapshot::build(policy, 1, bindings(1_000_000)).expect("unique bindings");
    let user = Principal::builder(PrincipalKind::User, "u42", AuthMethod::OIDC)
        .groups(["g1", "g17", "g230", "g999"])
        .build()
        .expect("valid principal");
    let stage: Resource = "env_stage:e7/s2".parse().expect("valid resource");
    assert!(!snapshot.permissions_of(&user).is_empty());
    let mut group = c.benchmark_group("acl/reverse_1M");
    group.bench_function("permissions_of", |b| {
        b.iter(|| snapshot.permissions_of(black_box(&user)))
    });
    group.bench_function("holders_of", |b| {
        b.iter(|| snapshot.holders_of(&Action::DEPLOY, black_box(&stage)))
    });
    group.finish();
}

criterion_group!(benches, checks, reverse, rebuild);
criterion_main!(benches);
