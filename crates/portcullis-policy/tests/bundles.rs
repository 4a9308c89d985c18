//! Bundles: loading (folder, tarball), validation before activation, atomic replacement,
//! the last known good set on disk, and limits on bundles and input.
#![expect(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    reason = "tests: a failed expectation is the failure being tested for"
)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use portcullis_policy::{
    Bundle, BundleLimits, EvalLimits, PolicyEngine, PolicyError, PolicyStore, RegoEngine, rule_path,
};
use serde_json::{Value, json};

/// A bundle's files: `(path, contents)`.
type Files = Vec<(String, Vec<u8>)>;

fn file(path: &str, contents: &str) -> (String, Vec<u8>) {
    (path.to_owned(), contents.as_bytes().to_vec())
}

const RBAC: &str = r#"
package authz

default allow := false

allow if {
    some role in data.authz.bindings[input.user]
    input.action in data.authz.roles[role]
}

test_operator_deploys if allow with input as {"user": "alice", "action": "deploy"}
test_reader_cannot_deploy if not allow with input as {"user": "bob", "action": "deploy"}
"#;

const RBAC_DATA: &str = r#"{
    "bindings": {"alice": ["operator"], "bob": ["reader"]},
    "roles": {"operator": ["deploy", "read"], "reader": ["read"]}
}"#;

fn rbac(revision: &str) -> Files {
    vec![
        file(
            ".manifest",
            &format!(r#"{{"revision": "{revision}", "roots": ["authz"]}}"#),
        ),
        file("authz/rbac.rego", RBAC),
        file("authz/data.json", RBAC_DATA),
    ]
}

fn scratch(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "portcullis-policy-{tag}-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn allow(store: &impl PolicyEngine, user: &str, action: &str) -> Option<Value> {
    store
        .evaluate("authz/allow", &json!({"user": user, "action": action}))
        .unwrap()
        .result
}

#[test]
fn a_bundle_answers_by_rule_path_in_either_spelling_and_by_package() {
    let store = PolicyStore::in_memory(EvalLimits::default());
    store
        .activate(Bundle::from_files("rbac", rbac("r1")).unwrap())
        .unwrap();
    assert_eq!(allow(&store, "alice", "deploy"), Some(json!(true)));
    assert_eq!(allow(&store, "bob", "deploy"), Some(json!(false)));
    for path in ["data.authz.allow", "/authz/allow", "authz/allow/"] {
        let d = store
            .evaluate(path, &json!({"user": "bob", "action": "read"}))
            .unwrap();
        assert_eq!(d.result, Some(json!(true)), "{path}");
        assert_eq!(d.revisions["rbac"], "r1");
    }
    // A package is its document of rule values; data paths read the bundle's data.
    let package = store
        .evaluate("authz", &json!({"user": "alice", "action": "read"}))
        .unwrap();
    assert_eq!(package.result.unwrap()["allow"], json!(true));
    let data = store
        .evaluate("data.authz.roles.reader", &Value::Null)
        .unwrap();
    assert_eq!(data.result, Some(json!(["read"])));
    // An undefined document is `None`, not an error and not `false`.
    let missing = store.evaluate("authz/nothing_here", &Value::Null).unwrap();
    assert_eq!(missing.result, None);
}

#[test]
fn rule_paths_are_identifiers_only() {
    assert_eq!(rule_path("a/b").unwrap(), "data.a.b");
    assert_eq!(rule_path("").unwrap(), "data");
    assert_eq!(rule_path("data").unwrap(), "data");
    for bad in [
        "a/../b",
        "data.a-b",
        "a/b c",
        "1a",
        "data.a[0]",
        &"a/".repeat(70),
    ] {
        assert!(
            matches!(rule_path(bad), Err(PolicyError::InvalidPath { .. })),
            "{bad:?} was accepted"
        );
    }
    let store = PolicyStore::in_memory(EvalLimits::default());
    store
        .activate(Bundle::from_files("rbac", rbac("r1")).unwrap())
        .unwrap();
    assert!(matches!(
        store.evaluate("authz/../secrets", &Value::Null),
        Err(PolicyError::InvalidPath { .. })
    ));
}

#[test]
fn nothing_active_means_no_decision() {
    let store = PolicyStore::in_memory(EvalLimits::default());
    assert!(matches!(
        store.evaluate("authz/allow", &json!({})),
        Err(PolicyError::NoPolicy)
    ));
    store
        .activate(Bundle::from_files("rbac", rbac("r1")).unwrap())
        .unwrap();
    assert!(store.remove("rbac").unwrap());
    assert!(!store.remove("rbac").unwrap());
    assert!(matches!(
        store.evaluate("authz/allow", &json!({})),
        Err(PolicyError::NoPolicy)
    ));
}

#[test]
fn a_bad_revision_is_refused_and_the_last_good_one_keeps_answering() {
    let store = PolicyStore::in_memory(EvalLimits::default());
    store
        .activate(Bundle::from_files("rbac", rbac("good")).unwrap())
        .unwrap();

    let mut broken = rbac("syntax");
    broken[1] = file("authz/rbac.rego", "package authz\nallow if {");
    let err = store
        .activate(Bundle::from_files("rbac", broken).unwrap())
        .unwrap_err();
    assert!(
        matches!(err, PolicyError::Compile { ref file, .. } if file == "authz/rbac.rego"),
        "{err}"
    );

    // Parses, but a variable is never bound: the check refuses it, naming file and line.
    let mut unsafe_var = rbac("compile");
    unsafe_var[1] = file("authz/rbac.rego", "package authz\nallow if unbound_name");
    let err = store
        .activate(Bundle::from_files("rbac", unsafe_var).unwrap())
        .unwrap_err();
    let PolicyError::Check { ref errors, .. } = err else {
        panic!("{err}");
    };
    assert_eq!(
        errors[0].to_string(),
        "authz/rbac.rego:2:10: rego_unsafe_var_error: var unbound_name is unsafe"
    );

    // regorus resolves functions only when it evaluates; the check refuses a call to one
    // that does not exist before any test runs.
    let mut undefined_call = rbac("call");
    undefined_call[1] = file(
        "authz/rbac.rego",
        &RBAC.replace(
            "input.action in",
            "no_such_function(input.user)\n    input.action in",
        ),
    );
    let err = store
        .activate(Bundle::from_files("rbac", undefined_call).unwrap())
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("rego_type_error: undefined function no_such_function"),
        "{err}"
    );

    // Compiles, but lets bob deploy: its own tests catch it.
    let mut permissive = rbac("permissive");
    permissive[1] = file(
        "authz/rbac.rego",
        &RBAC.replace("default allow := false", "allow if input.user == \"bob\""),
    );
    let err = store
        .activate(Bundle::from_files("rbac", permissive).unwrap())
        .unwrap_err();
    assert!(
        matches!(err, PolicyError::TestFailed { ref test, .. } if test == "data.authz.test_reader_cannot_deploy"),
        "{err}"
    );

    // A test that is undefined fails too.
    let mut vacuous = rbac("vacuous");
    vacuous[1] = file(
        "authz/rbac.rego",
        &format!("{RBAC}\ntest_missing if data.authz.nope"),
    );
    assert!(matches!(
        store.activate(Bundle::from_files("rbac", vacuous).unwrap()),
        Err(PolicyError::TestFailed { ref detail, .. }) if detail == "undefined"
    ));

    assert_eq!(allow(&store, "bob", "deploy"), Some(json!(false)));
    assert_eq!(store.revisions()["rbac"], "good");
    let status = &store.status()[0];
    assert_eq!(status.active_revision.as_deref(), Some("good"));
    assert_eq!(status.failed_revision.as_deref(), Some("vacuous"));
    assert!(
        status
            .last_error
            .as_deref()
            .unwrap()
            .contains("test_missing")
    );

    // A later good revision clears the failure.
    store
        .activate(Bundle::from_files("rbac", rbac("better")).unwrap())
        .unwrap();
    let status = &store.status()[0];
    assert_eq!(status.active_revision.as_deref(), Some("better"));
    assert_eq!(status.last_error, None);
}

#[test]
fn bad_data_and_layouts_are_typed_errors() {
    let cases: Vec<(&str, Files)> = vec![
        ("data not JSON", vec![file("data.json", "{not json")]),
        (
            "top-level data not an object",
            vec![file("data.json", "[1]")],
        ),
        (
            "two documents for one path",
            vec![
                file("data.json", r#"{"a": {"b": 1}}"#),
                file("a/data.json", r#"{"b": 2}"#),
            ],
        ),
        ("manifest not JSON", vec![file(".manifest", "revision: 1")]),
        (
            "empty root segment",
            vec![file(".manifest", r#"{"roots": ["a//b"]}"#)],
        ),
        (
            "path leaving the bundle",
            vec![file("../x.rego", "package x")],
        ),
        ("signature", vec![file(".signatures.json", "{}")]),
        ("yaml", vec![file("data.yaml", "a: 1")]),
        (
            "duplicate",
            vec![
                file("a/p.rego", "package a"),
                file("./a/p.rego", "package a"),
            ],
        ),
        (
            "rego not UTF-8",
            vec![("p.rego".to_owned(), vec![0xff, 0xfe])],
        ),
    ];
    for (what, files) in cases {
        assert!(
            matches!(
                Bundle::from_files("b", files),
                Err(PolicyError::Bundle { .. })
            ),
            "{what} was accepted"
        );
    }
    assert!(matches!(
        Bundle::from_files("../etc", rbac("r")),
        Err(PolicyError::Bundle { .. })
    ));
}

#[test]
fn roots_bound_what_a_bundle_may_define_and_may_not_overlap() {
    let outside_data = vec![
        file(".manifest", r#"{"roots": ["authz"]}"#),
        file("billing/data.json", r#"{"x": 1}"#),
    ];
    assert!(matches!(
        Bundle::from_files("b", outside_data),
        Err(PolicyError::OutsideRoots { what: "data", .. })
    ));
    // Nested data under a deeper root is fine, beside it is not.
    let deep_root = vec![
        file(".manifest", r#"{"roots": ["authz/rbac"]}"#),
        file("data.json", r#"{"authz": {"rbac": {"x": 1}}}"#),
    ];
    assert!(Bundle::from_files("b", deep_root).is_ok());
    let beside_root = vec![
        file(".manifest", r#"{"roots": ["authz/rbac"]}"#),
        file("data.json", r#"{"authz": {"abac": 1}}"#),
    ];
    assert!(Bundle::from_files("b", beside_root).is_err());

    let outside_package = vec![
        file(".manifest", r#"{"roots": ["authz"]}"#),
        file("p.rego", "package billing\nx := 1"),
    ];
    let bundle = Bundle::from_files("b", outside_package).unwrap();
    assert!(matches!(
        RegoEngine::compile([&bundle], EvalLimits::default()),
        Err(PolicyError::OutsideRoots {
            what: "package",
            ..
        })
    ));

    let store = PolicyStore::in_memory(EvalLimits::default());
    store
        .activate(Bundle::from_files("rbac", rbac("r1")).unwrap())
        .unwrap();
    let overlapping = vec![
        file(".manifest", r#"{"roots": ["authz/extra"]}"#),
        file("authz/extra/data.json", r#"{"y": 2}"#),
    ];
    let err = store
        .activate(Bundle::from_files("other", overlapping).unwrap())
        .unwrap_err();
    assert!(
        matches!(err, PolicyError::RootsOverlap { ref other, .. } if other == "rbac"),
        "{err}"
    );
    // A bundle without a manifest owns everything, so it overlaps any other.
    let everything = vec![file("x.rego", "package x\ny := 1")];
    assert!(matches!(
        store.activate(Bundle::from_files("all", everything).unwrap()),
        Err(PolicyError::RootsOverlap { .. })
    ));
    // Disjoint roots live side by side.
    let billing = vec![
        file(".manifest", r#"{"revision": "b1", "roots": ["billing"]}"#),
        file(
            "billing/p.rego",
            "package billing\nlimit := data.billing.settings.max",
        ),
        file("billing/data.json", r#"{"settings": {"max": 10}}"#),
    ];
    store
        .activate(Bundle::from_files("billing", billing).unwrap())
        .unwrap();
    assert_eq!(
        store
            .evaluate("billing/limit", &Value::Null)
            .unwrap()
            .result,
        Some(json!(10))
    );
    assert_eq!(store.revisions().len(), 2);
}

#[test]
fn tarballs_round_trip_and_folders_load() {
    let bundle = Bundle::from_files("rbac", rbac("r7")).unwrap();
    let bytes = bundle.to_tar_gz().unwrap();
    let back = Bundle::from_tar_gz("rbac", &bytes, &BundleLimits::default()).unwrap();
    assert_eq!(back, bundle);

    let dir = scratch("dir");
    std::fs::create_dir_all(dir.join("authz")).unwrap();
    std::fs::write(
        dir.join(".manifest"),
        r#"{"revision": "d1", "roots": ["authz"]}"#,
    )
    .unwrap();
    std::fs::write(dir.join("authz/rbac.rego"), RBAC).unwrap();
    std::fs::write(dir.join("authz/data.json"), RBAC_DATA).unwrap();
    std::fs::write(dir.join("README.txt"), "ignored").unwrap();
    let loaded = Bundle::from_dir("rbac", &dir, &BundleLimits::default()).unwrap();
    assert_eq!(loaded.revision(), "d1");
    assert_eq!(loaded.data(), bundle.data());
    std::os::unix::fs::symlink("/etc/passwd", dir.join("authz/link.rego")).unwrap();
    assert!(matches!(
        Bundle::from_dir("rbac", &dir, &BundleLimits::default()),
        Err(PolicyError::Bundle { .. })
    ));
    let _ = std::fs::remove_dir_all(&dir);
}

/// A tarball written by hand, so it can hold what `to_tar_gz` never writes.
fn tarball(entries: &[(&str, tar::EntryType, &[u8])]) -> Vec<u8> {
    let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::fast(),
    ));
    for (path, kind, bytes) in entries {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(*kind);
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        if *kind == tar::EntryType::Symlink {
            header.set_link_name("/etc/passwd").unwrap();
        }
        // Written raw: `append_data` would refuse the `..` this test needs.
        let name = header.as_old_mut();
        name.name[..path.len()].copy_from_slice(path.as_bytes());
        header.set_cksum();
        builder.append(&header, *bytes).unwrap();
    }
    builder.into_inner().unwrap().finish().unwrap()
}

#[test]
fn hostile_tarballs_are_refused() {
    let limits = BundleLimits::default()
        .with_max_files(3)
        .with_max_file_bytes(1024)
        .with_max_total_bytes(2048);
    let regular = tar::EntryType::Regular;
    let ok = tarball(&[("p.rego", regular, b"package p\nx := 1")]);
    assert!(Bundle::from_tar_gz("b", &ok, &limits).is_ok());
    let big = vec![b' '; 1500];
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("not gzip", b"plain bytes".to_vec()),
        ("escape", tarball(&[("../p.rego", regular, b"package p")])),
        (
            "symlink",
            tarball(&[("p.rego", tar::EntryType::Symlink, b"")]),
        ),
        ("file too big", tarball(&[("p.rego", regular, &big)])),
        (
            "too much in all",
            tarball(&[
                ("a.rego", regular, &big[..1000]),
                ("b.rego", regular, &big[..1000]),
                ("c.rego", regular, &big[..1000]),
            ]),
        ),
        (
            "too many files",
            tarball(&[
                ("a", regular, b""),
                ("b", regular, b""),
                ("c", regular, b""),
                ("d", regular, b""),
            ]),
        ),
    ];
    for (what, bytes) in cases {
        assert!(
            matches!(
                Bundle::from_tar_gz("b", &bytes, &limits),
                Err(PolicyError::Bundle { .. })
            ),
            "{what} was accepted"
        );
    }
    // Truncated gzip.
    assert!(Bundle::from_tar_gz("b", &ok[..ok.len() / 2], &limits).is_err());
}

#[test]
fn the_last_good_set_survives_a_restart() {
    let dir = scratch("state");
    {
        let store = PolicyStore::open(&dir, EvalLimits::default()).unwrap();
        assert!(matches!(
            store.evaluate("authz/allow", &json!({})),
            Err(PolicyError::NoPolicy)
        ));
        store
            .activate(Bundle::from_files("rbac", rbac("kept")).unwrap())
            .unwrap();
        let mut broken = rbac("broken");
        broken[1] = file("authz/rbac.rego", "package authz\nallow if {");
        assert!(
            store
                .activate(Bundle::from_files("rbac", broken).unwrap())
                .is_err()
        );
    }
    let store = PolicyStore::open(&dir, EvalLimits::default()).unwrap();
    assert_eq!(store.revisions()["rbac"], "kept");
    assert_eq!(allow(&store, "alice", "deploy"), Some(json!(true)));
    assert_eq!(store.status()[0].active_revision.as_deref(), Some("kept"));

    // Removing forgets the stored copy too.
    store.remove("rbac").unwrap();
    drop(store);
    let store = PolicyStore::open(&dir, EvalLimits::default()).unwrap();
    assert!(store.revisions().is_empty());

    // A stored bundle changed behind the store's back is refused, not half-trusted.
    std::fs::File::create(dir.join("rbac.tar.gz"))
        .unwrap()
        .write_all(b"garbage")
        .unwrap();
    assert!(PolicyStore::open(&dir, EvalLimits::default()).is_err());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn input_and_evaluation_time_are_capped() {
    let limits = EvalLimits::default()
        .with_max_input_depth(8)
        .with_max_input_values(100)
        .with_time_limit(Some(Duration::from_millis(50)));
    let store = PolicyStore::in_memory(limits);
    let mut files = rbac("r1");
    files.push(file(
        "authz/slow.rego",
        "package authz\nslow := count([1 | some x in numbers.range(1, 5000); some y in numbers.range(1, 5000); x != y])",
    ));
    store
        .activate(Bundle::from_files("rbac", files).unwrap())
        .unwrap();

    let mut deep = json!(1);
    for _ in 0..20 {
        deep = json!({ "a": deep });
    }
    assert!(matches!(
        store.evaluate("authz/allow", &deep),
        Err(PolicyError::Input(_))
    ));
    let wide = json!({ "items": vec![0; 500] });
    assert!(matches!(
        store.evaluate("authz/allow", &wide),
        Err(PolicyError::Input(_))
    ));
    assert!(matches!(
        store.evaluate("authz/slow", &json!({})),
        Err(PolicyError::Eval { .. })
    ));
    // The engine still answers afterwards.
    assert_eq!(allow(&store, "alice", "deploy"), Some(json!(true)));
}

/// Every revision `rN` has a rule and data that both say `rN`; any answer that mixes two
/// revisions (or disagrees with the revisions it reports) is a torn activation.
#[test]
fn concurrent_decisions_during_reloads_never_see_a_mix() {
    fn revision(n: usize) -> Bundle {
        Bundle::from_files(
            "mix",
            vec![
                file(".manifest", &format!(r#"{{"revision": "r{n}", "roots": ["mix"]}}"#)),
                file(
                    "mix/p.rego",
                    &format!(
                        "package mix\nanswer := {{\"rule\": \"r{n}\", \"data\": data.mix.revision, \"input\": input.n}}\ntest_consistent if {{\n  a := answer with input as {{\"n\": 0}}\n  a.rule == a.data\n}}"
                    ),
                ),
                file("mix/data.json", &format!(r#"{{"revision": "r{n}"}}"#)),
            ],
        )
        .unwrap()
    }
    let store = Arc::new(PolicyStore::in_memory(EvalLimits::default()));
    store.activate(revision(0)).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..3)
        .map(|t| {
            let store = store.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut seen = std::collections::BTreeSet::new();
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let d = store.evaluate("mix/answer", &json!({"n": n})).unwrap();
                    let answer = d.result.unwrap();
                    assert_eq!(answer["rule"], answer["data"], "thread {t}: {answer}");
                    assert_eq!(answer["rule"], json!(d.revisions["mix"]), "thread {t}");
                    assert_eq!(answer["input"], json!(n), "thread {t}: another input");
                    seen.insert(d.revisions["mix"].clone());
                }
                seen.len()
            })
        })
        .collect();
    for n in 1..=40 {
        store.activate(revision(n)).unwrap();
        std::thread::sleep(Duration::from_millis(2));
    }
    stop.store(true, Ordering::Relaxed);
    for reader in readers {
        assert!(reader.join().unwrap() > 1, "a reader never saw a reload");
    }
    assert_eq!(store.revisions()["mix"], "r40");
}

#[test]
fn a_folder_bundle_is_what_it_says() {
    // The loader walks nested folders, maps data.json to its folder's path, and orders
    // policies by path.
    let dir = scratch("nested");
    let deep = dir.join("authz/teams/payments");
    std::fs::create_dir_all(&deep).unwrap();
    std::fs::write(deep.join("data.json"), r#"{"owners": ["carol"]}"#).unwrap();
    std::fs::write(dir.join("authz/z.rego"), "package authz\nz := 1").unwrap();
    std::fs::write(dir.join("authz/a.rego"), "package authz.a\na := 1").unwrap();
    let bundle = Bundle::from_dir("nested", &dir, &BundleLimits::default()).unwrap();
    assert_eq!(
        Value::Object(bundle.data().clone()),
        json!({"authz": {"teams": {"payments": {"owners": ["carol"]}}}})
    );
    let paths: Vec<&str> = bundle.policies().iter().map(|p| p.path.as_str()).collect();
    assert_eq!(paths, ["authz/a.rego", "authz/z.rego"]);
    let _ = std::fs::remove_dir_all(Path::new(&dir));
}

#[test]
fn packages_that_read_each_other_still_answer_when_others_run_apart() {
    let store = PolicyStore::in_memory(EvalLimits::default());
    // rbac's packages run apart from the unused ones; billing reads rbac's data and
    // rules and must see them.
    store
        .activate(Bundle::from_files("rbac", rbac("r1")).unwrap())
        .unwrap();
    let billing = vec![
        file(".manifest", r#"{"revision": "b1", "roots": ["billing"]}"#),
        file(
            "billing/p.rego",
            "package billing\nimport data.authz.bindings\nbillable contains user if some user, _ in bindings\noperators if data.authz.allow with input as {\"user\": \"alice\", \"action\": \"deploy\"}",
        ),
    ];
    store
        .activate(Bundle::from_files("billing", billing).unwrap())
        .unwrap();
    let mut unused = vec![file(
        ".manifest",
        r#"{"revision": "u1", "roots": ["other"]}"#,
    )];
    for n in 0..50 {
        unused.push(file(
            &format!("other/p{n}.rego"),
            &format!("package other.p{n}\nallow if input.team == \"t{n}\""),
        ));
    }
    store
        .activate(Bundle::from_files("unused", unused).unwrap())
        .unwrap();

    assert_eq!(allow(&store, "alice", "deploy"), Some(json!(true)));
    assert_eq!(allow(&store, "bob", "deploy"), Some(json!(false)));
    let billable = store.evaluate("billing/billable", &Value::Null).unwrap();
    assert_eq!(billable.result, Some(json!(["alice", "bob"])));
    let operators = store.evaluate("billing/operators", &Value::Null).unwrap();
    assert_eq!(operators.result, Some(json!(true)));
    let other = store
        .evaluate("other/p7/allow", &json!({"team": "t7"}))
        .unwrap();
    assert_eq!(other.result, Some(json!(true)));
    // The whole data document still spans every bundle.
    let all = store
        .evaluate("data", &Value::Null)
        .unwrap()
        .result
        .unwrap();
    assert!(
        all.get("authz").is_some() && all.get("billing").is_some() && all.get("other").is_some()
    );
    assert_eq!(store.revisions().len(), 3);
    // authz and billing read each other (one group); the 50 unused packages don't.
    let engine = format!("{:?}", store.current().unwrap());
    assert!(engine.contains("package_groups: 51"), "{engine}");
}

/// Packages compiled apart answer exactly as the whole set does: the same queries against
/// a set that splits into groups and against the same set plus one module that reads
/// `data` dynamically (which keeps everything on one engine).
#[test]
fn grouped_packages_answer_as_the_whole_set_does() {
    let policies = [
        (
            "app/authz.rego",
            "package app.authz\nimport data.app.roles as roles\nallow if roles.admin[input.user]\nallow if data.app.authz.extra.open\nowners contains u if some u in data.app.owners",
        ),
        (
            "app/roles.rego",
            "package app.roles\nadmin contains u if some u in data.app.people.admins",
        ),
        (
            "app/authz_extra.rego",
            "package app.authz.extra\nopen if input.user == \"visitor\"",
        ),
        (
            "audit/report.rego",
            "package audit.report\n# reads data.app only through a with-override below\nsummary := {\"allowed\": allowed}\nallowed if data.app.authz.allow with input as {\"user\": \"ann\"}",
        ),
        (
            "lone/a.rego",
            "package lone.a\nx := count(data.lone.b.items)",
        ),
        ("lone/b.rego", "package lone.b\nitems := [1, 2, 3]"),
        (
            "solo/s.rego",
            "package solo.s\nanswer := input.n * 2\nnested := {\"data\": \"data[x]\"}",
        ),
    ];
    let data = r#"{"app": {"people": {"admins": ["ann"]}, "owners": ["ann", "bo"]}}"#;
    let files = |dynamic: bool| {
        let mut files = vec![
            file(
                ".manifest",
                r#"{"revision": "r", "roots": ["app", "audit", "lone", "solo", "any"]}"#,
            ),
            file("data.json", data),
        ];
        for (path, rego) in policies {
            files.push(file(path, rego));
        }
        if dynamic {
            // `data[x]` alone would read this rule too: recursive, refused.
            files.push(file(
                "any/d.rego",
                "package any\nlook := data[input.pkg].allow",
            ));
        }
        files
    };
    let store = |dynamic| {
        let store = PolicyStore::in_memory(EvalLimits::default());
        store
            .activate(Bundle::from_files("b", files(dynamic)).unwrap())
            .unwrap();
        store
    };
    let (split, whole) = (store(false), store(true));
    let groups = |s: &PolicyStore| format!("{:?}", s.current().unwrap());
    // app (+audit, which reads it), lone, solo; `any` joins them all.
    assert!(
        groups(&split).contains("package_groups: 3"),
        "{}",
        groups(&split)
    );
    assert!(
        groups(&whole).contains("package_groups: 0"),
        "{}",
        groups(&whole)
    );
    let queries = [
        ("app/authz/allow", json!({"user": "ann"})),
        ("app/authz/allow", json!({"user": "visitor"})),
        ("app/authz/allow", json!({"user": "eve"})),
        ("app/authz", json!({"user": "ann"})),
        ("app/authz/owners", Value::Null),
        ("app/authz/extra", json!({"user": "visitor"})),
        ("app", json!({"user": "ann"})),
        ("app/people", Value::Null),
        ("audit/report/summary", Value::Null),
        ("lone/a/x", Value::Null),
        ("lone", Value::Null),
        ("solo/s/answer", json!({"n": 21})),
        ("solo/s/nested", Value::Null),
        ("solo/s/missing", Value::Null),
        ("nowhere/at/all", Value::Null),
    ];
    for (path, input) in queries {
        let a = split.evaluate(path, &input).unwrap().result;
        let b = whole.evaluate(path, &input).unwrap().result;
        assert_eq!(a, b, "{path} {input}");
    }
    assert_eq!(
        split
            .evaluate("audit/report/summary", &Value::Null)
            .unwrap()
            .result,
        Some(json!({"allowed": true}))
    );
    assert_eq!(
        split.evaluate("lone/a/x", &Value::Null).unwrap().result,
        Some(json!(3))
    );
    // The whole data document spans every group.
    let all = split
        .evaluate("data", &Value::Null)
        .unwrap()
        .result
        .unwrap();
    for key in ["app", "audit", "lone", "solo"] {
        assert!(all.get(key).is_some(), "{key} in {all}");
    }
}
