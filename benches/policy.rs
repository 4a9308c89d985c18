//! An RBAC-style Rego decision (the shape of OPA's RBAC example: user → roles → grants of
//! an action on a resource type, 1,000 users and 20 roles in `data`) through `portcullis::policy` against calling regorus
//! directly with the same policy, data and input; and decisions/s on one and two threads.
//!
//! Targets (issue #9): ≤ 20 µs median per decision; the engine's overhead ≤ 10% over bare
//! regorus; two threads ≈ 2× one thread.
#![expect(
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "benches set up fixed, valid inputs; a failure is a broken bench"
)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion, Throughput, criterion_group, criterion_main};
use portcullis::policy::{Bundle, EvalLimits, PolicyEngine, PolicyStore};
use serde_json::{Value, json};

const POLICY: &str = r#"
package authz

default allow := false

allow if {
    some role in data.authz.bindings[input.user]
    some grant in data.authz.roles[role]
    grant.action == input.action
    grant.type == input.type
}

test_operator_deploys if allow with input as {"user": "user-1", "action": "deploy", "type": "env_stage"}
"#;

/// 1,000 users, 20 roles, each role six grants; users hold two roles each.
fn data() -> Value {
    let roles: serde_json::Map<String, Value> = (0..20)
        .map(|r| {
            let grants: Vec<Value> = (0..5)
                .map(|g| json!({"action": if g == 0 { "deploy" } else { "read" }, "type": format!("type-{r}-{g}")}))
                .chain(std::iter::once(json!({"action": "deploy", "type": "env_stage"})))
                .collect();
            (format!("role-{r}"), Value::Array(grants))
        })
        .collect();
    let bindings: serde_json::Map<String, Value> = (0..1000)
        .map(|u| {
            (
                format!("user-{u}"),
                json!([format!("role-{}", u % 20), format!("role-{}", (u + 7) % 20)]),
            )
        })
        .collect();
    json!({"roles": roles, "bindings": bindings})
}

fn input(n: usize) -> Value {
    json!({"user": format!("user-{}", n % 1000), "action": "deploy", "type": "env_stage"})
}

fn store(limits: EvalLimits) -> PolicyStore {
    store_with_unused(limits, 0, Unused::SameBundle)
}

/// Where the unused packages are loaded.
#[derive(Clone, Copy, PartialEq)]
enum Unused {
    /// In the decision's own bundle.
    SameBundle,
    /// In a bundle of their own.
    OtherBundle,
    /// In the same bundle, with one module that reads `data` dynamically, so nothing can
    /// be compiled apart: the cost when packages cannot be grouped.
    Unsplittable,
}

/// The RBAC bundle plus `unused` other packages that the decision never touches.
fn store_with_unused(limits: EvalLimits, unused: usize, place: Unused) -> PolicyStore {
    let separate = place == Unused::OtherBundle;
    let store = PolicyStore::in_memory(limits);
    let mut files = vec![
        (
            ".manifest".to_owned(),
            if separate {
                br#"{"revision": "bench", "roots": ["authz"]}"#.to_vec()
            } else {
                br#"{"revision": "bench", "roots": ["authz", "other"]}"#.to_vec()
            },
        ),
        ("authz/rbac.rego".to_owned(), POLICY.as_bytes().to_vec()),
        (
            "authz/data.json".to_owned(),
            data().to_string().into_bytes(),
        ),
    ];
    let mut others = vec![(
        ".manifest".to_owned(),
        br#"{"revision": "other", "roots": ["other"]}"#.to_vec(),
    )];
    for n in 0..unused {
        let rego = format!(
            "package other.p{n}\n\ndefault allow := false\n\nallow if {{\n    input.team == \"team-{n}\"\n    input.action in {{\"read\", \"write\"}}\n}}\n\nowners contains o if some o in input.owners\n"
        );
        let file = (format!("other/p{n}.rego"), rego.into_bytes());
        if separate {
            others.push(file);
        } else {
            files.push(file);
        }
    }
    if place == Unused::Unsplittable {
        files.push((
            "other/dynamic.rego".to_owned(),
            b"package other.dynamic\n\nanswer := data[input.pkg].allow\n".to_vec(),
        ));
    }
    if separate && unused > 0 {
        store
            .activate(Bundle::from_files("other", others).expect("bundle"))
            .expect("valid bundle");
    }
    let bundle = Bundle::from_files("rbac", files).expect("bundle");
    store.activate(bundle).expect("valid bundle");
    store
}

fn single(c: &mut Criterion) {
    let inputs: Vec<Value> = (0..1000).map(input).collect();
    let mut group = c.benchmark_group("policy/rbac_decision");
    group.throughput(Throughput::Elements(1));
    // Each pair runs the same limits: the default 1 s time limit (regorus's timer), and none.
    for (label, time_limit) in [
        ("time_limit", Some(Duration::from_secs(1))),
        ("no_limit", None),
    ] {
        let store = store(EvalLimits::default().with_time_limit(time_limit));
        let mut bare = regorus::Engine::new();
        if let Some(limit) = time_limit {
            bare.set_execution_timer_config(regorus::utils::limits::ExecutionTimerConfig {
                limit,
                check_interval: std::num::NonZeroU32::new(256).expect("nonzero"),
            });
        }
        bare.add_policy("rbac.rego".to_owned(), POLICY.to_owned())
            .expect("policy");
        bare.add_data(regorus::Value::from(json!({"authz": data()})))
            .expect("data");
        bench_store(&mut group, format!("{label}/portcullis"), &store, &inputs);
        let mut n = 0;
        group.bench_function(format!("{label}/bare_regorus"), |b| {
            b.iter(|| {
                n += 1;
                // The same work the engine does: convert the JSON input, evaluate, convert back.
                bare.set_input(regorus::Value::from(black_box(&inputs[n % 1000]).clone()));
                let v = bare
                    .eval_rule("data.authz.allow".to_owned())
                    .expect("decision");
                assert_eq!(serde_json::to_value(&v).expect("json"), Value::Bool(true));
            })
        });
    }
    group.finish();
}

/// One allowed decision after another through `store`, cycling through `inputs`.
fn bench_store(
    group: &mut BenchmarkGroup<'_, WallTime>,
    name: String,
    store: &PolicyStore,
    inputs: &[Value],
) {
    let mut n = 0;
    group.bench_function(name, |b| {
        b.iter(|| {
            n += 1;
            let d = store
                .evaluate("authz/allow", black_box(&inputs[n % inputs.len()]))
                .expect("decision");
            assert_eq!(d.result, Some(Value::Bool(true)));
        })
    });
}

/// Decisions per second with `threads` threads sharing one store.
fn run_threads(store: &Arc<PolicyStore>, threads: usize, per_thread: usize) -> Duration {
    let start = Instant::now();
    std::thread::scope(|scope| {
        for t in 0..threads {
            let store = store.clone();
            scope.spawn(move || {
                for n in 0..per_thread {
                    let d = store
                        .evaluate("authz/allow", &input(t * per_thread + n))
                        .expect("decision");
                    black_box(d);
                }
            });
        }
    });
    start.elapsed()
}

fn scaling(c: &mut Criterion) {
    let store = Arc::new(store(EvalLimits::default()));
    let mut group = c.benchmark_group("policy/threads");
    group.sample_size(10);
    const PER_THREAD: usize = 20_000;
    for threads in [1, 2] {
        group.throughput(Throughput::Elements((threads * PER_THREAD) as u64));
        group.bench_function(format!("{threads}"), |b| {
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| run_threads(&store, threads, PER_THREAD))
                    .sum()
            })
        });
    }
    group.finish();
}

/// The same decision with 0 and 500 unused packages loaded beside it. regorus looks over
/// every module of an engine (building its package path) each time a rule reads `data`;
/// packages that cannot reach each other are compiled apart, which keeps the unused ones
/// out of the decision's engine unless some module reads `data` dynamically.
fn unused_policies(c: &mut Criterion) {
    let inputs: Vec<Value> = (0..1000).map(input).collect();
    let mut group = c.benchmark_group("policy/unused_packages");
    for (name, unused, place) in [
        ("none", 0, Unused::SameBundle),
        ("500_in_another_bundle", 500, Unused::OtherBundle),
        ("500_in_the_same_bundle", 500, Unused::SameBundle),
        ("500_not_separable", 500, Unused::Unsplittable),
    ] {
        let store = store_with_unused(EvalLimits::default(), unused, place);
        bench_store(&mut group, name.to_owned(), &store, &inputs);
    }
    group.finish();
}

/// What the grouping costs when a bundle is activated: reading, compiling, validating and
/// activating the RBAC bundle with 500 other packages, split into groups or not.
fn activation(c: &mut Criterion) {
    let mut group = c.benchmark_group("policy/activate_with_500_packages");
    group.sample_size(10);
    for (name, place) in [
        ("grouped", Unused::SameBundle),
        ("not_separable", Unused::Unsplittable),
    ] {
        group.bench_function(name, |b| {
            b.iter(|| store_with_unused(EvalLimits::default(), 500, place))
        });
    }
    group.finish();
}

criterion_group!(benches, single, scaling, unused_policies, activation);
criterion_main!(benches);
