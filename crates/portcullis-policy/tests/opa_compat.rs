//! Where the engine must answer as OPA 1.x does (issue 29): a request without input, the
//! compile errors OPA refuses a bundle for, Rego v0 bundles, and built-in errors.
#![expect(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "tests: a failed expectation is the failure being tested for"
)]

use portcullis_policy::{Bundle, EvalLimits, PolicyEngine, PolicyError, PolicyStore};
use serde_json::{Value, json};

fn file(path: &str, contents: &str) -> (String, Vec<u8>) {
    (path.to_owned(), contents.as_bytes().to_vec())
}

/// A bundle `b` rooted at `authz` with one policy file and a manifest with `extra` fields.
fn bundle(manifest_extra: &str, rego: &str, data: &str) -> Result<Bundle, PolicyError> {
    Bundle::from_files(
        "b",
        [
            file(
                ".manifest",
                &format!(r#"{{"revision": "r1", "roots": ["authz"]{manifest_extra}}}"#),
            ),
            file("authz/policy.rego", rego),
            file("authz/data.json", data),
        ],
    )
}

fn store_with(limits: EvalLimits, rego: &str) -> PolicyStore {
    let store = PolicyStore::in_memory(limits);
    store.activate(bundle("", rego, "{}").unwrap()).unwrap();
    store
}

#[test]
fn a_request_without_input_leaves_input_undefined() {
    let store = store_with(
        EvalLimits::default(),
        "package authz\ndeny_missing contains \"input missing\" if not input\nuser := input.user",
    );
    // No input: `not input` holds, as in OPA; a guard on missing input does not fail open.
    let none = store.evaluate_input("authz/deny_missing", None).unwrap();
    assert_eq!(none.result, Some(json!(["input missing"])));
    assert_eq!(
        store.evaluate_input("authz/user", None).unwrap().result,
        None
    );
    // An input that is `{}` or `null` is defined.
    for input in [json!({}), Value::Null] {
        let defined = store.evaluate("authz/deny_missing", &input).unwrap();
        assert_eq!(defined.result, Some(json!([])), "{input}");
    }
}

/// The error refusing `rego` (beside `data` as `authz/data.json`), as `line: code: message`.
fn refusal(rego: &str, data: &str) -> Vec<String> {
    let store = PolicyStore::in_memory(EvalLimits::default());
    match store.activate(bundle("", rego, data).unwrap()) {
        Err(PolicyError::Check { bundle, errors }) => {
            assert_eq!(bundle, "b");
            // Nothing activated; the status says why, naming the file.
            assert!(matches!(
                store.evaluate("authz/allow", &json!({})),
                Err(PolicyError::NoPolicy)
            ));
            let status = store.status()[0].last_error.clone().unwrap();
            assert!(status.contains("authz/policy.rego:"), "{status}");
            errors
                .iter()
                .map(|e| {
                    assert_eq!(e.file, "authz/policy.rego");
                    format!("{}: {}: {}", e.line, e.code, e.message)
                })
                .collect()
        }
        other => panic!("{rego}: expected a refusal, got {other:?}"),
    }
}

#[test]
fn what_opa_refuses_to_compile_is_refused_with_file_line_and_cause() {
    let p = "package authz\n";
    // Each used to activate, then fail every decision with a 500…
    assert_eq!(
        refusal(&format!("{p}allow if startwith(input.x, \"a\")"), "{}"),
        ["2: rego_type_error: undefined function startwith"]
    );
    assert_eq!(
        refusal(&format!("{p}allow if helper(input.x)"), "{}"),
        ["2: rego_type_error: undefined function helper"]
    );
    assert_eq!(
        refusal(&format!("{p}allow if startswith(1, 2)"), "{}"),
        [
            "2: rego_type_error: startswith: argument 1 must be a string, not number",
            "2: rego_type_error: startswith: argument 2 must be a string, not number",
        ]
    );
    assert_eq!(
        refusal(&format!("{p}x := 1\ndefault allow := x"), "{}"),
        [
            "3: rego_type_error: a default value must be a constant (a scalar, or an array, set or object of them), not `x`"
        ]
    );
    // …or to answer undefined, silently.
    assert_eq!(
        refusal(&format!("{p}x := 1 + \"a\""), "{}"),
        ["2: rego_type_error: plus: operand 2 must be numbers, not string"]
    );
    assert_eq!(
        refusal(&format!("{p}x := count(input, 2, 3)"), "{}"),
        ["2: rego_type_error: count: too many arguments (3 given, it takes 1)"]
    );
    assert_eq!(
        refusal(&format!("{p}a if b\nb if a"), "{}"),
        [
            "2: rego_recursion_error: rule data.authz.a is recursive: data.authz.a -> data.authz.b -> data.authz.a"
        ]
    );
    assert_eq!(
        refusal(&format!("{p}x := y"), "{}"),
        ["2: rego_unsafe_var_error: var y is unsafe"]
    );
    // Two defaults answered `false`; a rule beside data at its path was ignored.
    assert_eq!(
        refusal(
            &format!("{p}default allow := true\ndefault allow := false"),
            "{}"
        ),
        ["3: rego_type_error: multiple default rules data.authz.allow found"]
    );
    assert_eq!(
        refusal(
            &format!("{p}admins := [\"mallory\"]\nallow if input.user in admins"),
            r#"{"admins": ["alice"]}"#
        ),
        [
            "2: rego_compile_error: rule data.authz.admins conflicts with the data document at data.authz.admins: a path is either a rule or data"
        ]
    );
}

#[test]
fn rego_v0_bundles_load_when_the_manifest_says_so() {
    let v0 = "package authz\ndefault allow = false\nallow { input.user == \"alice\" }\ndeny[msg] { not allow; msg := \"no\" }\ntest_alice { allow with input as {\"user\": \"alice\"} }";
    // Without `rego_version: 0` the v0 syntax does not parse as Rego v1.
    assert!(matches!(
        PolicyStore::in_memory(EvalLimits::default()).activate(bundle("", v0, "{}").unwrap()),
        Err(PolicyError::Compile { .. })
    ));
    let store = PolicyStore::in_memory(EvalLimits::default());
    let v0_bundle = bundle(r#", "rego_version": 0"#, v0, "{}").unwrap();
    assert_eq!(v0_bundle.rego_version("authz/policy.rego"), 0);
    // Written and read back, the bundle keeps its version.
    let again = Bundle::from_tar_gz("b", &v0_bundle.to_tar_gz().unwrap(), &Default::default());
    assert_eq!(again.unwrap(), v0_bundle);
    store.activate(v0_bundle).unwrap();
    let deny = store
        .evaluate("authz/deny", &json!({"user": "bob"}))
        .unwrap();
    assert_eq!(deny.result, Some(json!(["no"])));

    // Per file: one v0 file in a v1 bundle.
    let mixed = Bundle::from_files(
        "b",
        [
            file(
                ".manifest",
                r#"{"roots": ["authz"], "file_rego_versions": {"/authz/old.rego": 0}}"#,
            ),
            file("authz/old.rego", "package authz\nold { true }"),
            file("authz/new.rego", "package authz\nnew if old"),
        ],
    )
    .unwrap();
    assert_eq!(mixed.rego_version("authz/new.rego"), 1);
    let store = PolicyStore::in_memory(EvalLimits::default());
    store.activate(mixed).unwrap();
    assert_eq!(
        store.evaluate("authz/new", &json!({})).unwrap().result,
        Some(json!(true))
    );

    // Only 0 and 1 exist; patterns are not taken for paths.
    for manifest in [
        r#", "rego_version": 2"#,
        r#", "file_rego_versions": {"authz/*.rego": 0}"#,
    ] {
        assert!(
            matches!(bundle(manifest, v0, "{}"), Err(PolicyError::Bundle { .. })),
            "{manifest}"
        );
    }
}

#[test]
fn a_builtin_error_leaves_its_rule_undefined_unless_strict() {
    let rego = "package authz\nbad_regex if regex.match(\"$^[[[\", \"x\")\ndivided := 1 / input.zero\nallow := true";
    let store = store_with(EvalLimits::default(), rego);
    let input = json!({"zero": 0});
    for rule in ["authz/bad_regex", "authz/divided"] {
        assert_eq!(store.evaluate(rule, &input).unwrap().result, None, "{rule}");
    }
    // The package and the whole data document still answer.
    let package = store.evaluate("authz", &input).unwrap().result.unwrap();
    assert_eq!(package, json!({"allow": true}));
    assert!(store.evaluate("", &input).unwrap().result.is_some());

    let strict = store_with(EvalLimits::default().with_strict_builtin_errors(true), rego);
    for rule in ["authz/bad_regex", "authz/divided", "authz"] {
        assert!(
            matches!(strict.evaluate(rule, &input), Err(PolicyError::Eval { .. })),
            "{rule}"
        );
    }
    assert_eq!(
        strict.evaluate("authz/allow", &input).unwrap().result,
        Some(json!(true))
    );
}

#[test]
fn inferred_types_declaration_order_and_overlapping_rules_are_refused_as_opa_does() {
    let p = "package authz\n";
    // A variable declared from a number, passed where a string is declared: regorus made
    // the call undefined, so the rule silently never held.
    assert_eq!(
        refusal(
            &format!("{p}allow if {{\n  x := 1\n  startswith(x, \"a\")\n}}"),
            "{}"
        ),
        ["4: rego_type_error: startswith: argument 1 must be a string, not number"]
    );
    assert_eq!(
        refusal(
            &format!("{p}n := y if {{\n  x := \"1\"\n  y := x + 1\n}}"),
            "{}"
        ),
        ["4: rego_type_error: plus: operand 1 must be numbers, not string"]
    );
    // A variable used before the `:=` that declares it: OPA reorders `=`, never `:=`.
    assert_eq!(
        refusal(&format!("{p}allow if {{\n  x > 1\n  x := 2\n}}"), "{}"),
        ["3: rego_compile_error: var x referenced above"]
    );
    // A rule beside a rule below its path, or a package below it: one hid the other.
    assert_eq!(
        refusal(&format!("{p}a := 1\na.b := 2"), "{}"),
        [
            "3: rego_type_error: rule data.authz.a conflicts with [data.authz.a.b]: data.authz.a owns the whole document"
        ]
    );
    assert_eq!(
        refusal(&format!("{p}s contains 1\ns.t := 2"), "{}"),
        [
            "3: rego_type_error: rule data.authz.s conflicts with [data.authz.s.t]: data.authz.s owns the whole document"
        ]
    );

    // What OPA accepts is still accepted.
    let store = store_with(
        EvalLimits::default(),
        concat!(
            "package authz\n",
            // `=` binds wherever it stands; a name re-declared in another body has
            // that body's type; a partial object beside a field rule of the same object.
            "ordered if {\n  y > 1\n  y = 2\n}\n",
            "typed if {\n  x := 1\n  x > 0\n}\n",
            "typed if {\n  x := \"a\"\n  startswith(x, \"a\")\n}\n",
            "obj[k] := 1 if some k in [\"a\"]\n",
            "obj.b := 2\n",
            "r.s := 1\nr.t := 2\n",
        ),
    );
    for (rule, want) in [
        ("authz/ordered", json!(true)),
        ("authz/typed", json!(true)),
        ("authz/obj", json!({"a": 1, "b": 2})),
        ("authz/r", json!({"s": 1, "t": 2})),
    ] {
        let got = store.evaluate(rule, &json!({})).unwrap().result;
        assert_eq!(got, Some(want), "{rule}");
    }
}

#[test]
fn bundles_with_wasm_modules_are_refused() {
    // A stock OPA would evaluate the wasm, not the Rego portcullis checked and tested.
    let err = bundle(
        r#", "wasm": [{"entrypoint": "authz/allow", "module": "/policy.wasm"}]"#,
        "package authz\nallow := true",
        "{}",
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("wasm modules are not supported"),
        "{err}"
    );
    for empty in [r#", "wasm": []"#, r#", "wasm": null"#] {
        bundle(empty, "package authz\nallow := true", "{}").unwrap();
    }
    let err = Bundle::from_files(
        "b",
        [
            file(".manifest", r#"{"roots": ["authz"]}"#),
            file("authz/policy.rego", "package authz\nallow := true"),
            (String::from("policy.wasm"), b"\0asm\x01\0\0\0".to_vec()),
        ],
    )
    .unwrap_err();
    assert!(err.to_string().contains("policy.wasm"), "{err}");
}

#[test]
fn a_manifest_revision_with_control_or_bidi_characters_is_refused() {
    for revision in [
        "r1\u{202E}gnp",
        "r1\nr2",
        "r1\u{200B}",
        "\u{2066}r1",
        "r1\u{2028}",
        "r\u{a0}1",
    ] {
        let manifest = serde_json::json!({"revision": revision, "roots": ["authz"]});
        let err = Bundle::from_files(
            "b",
            [
                file(".manifest", &manifest.to_string()),
                file("authz/policy.rego", "package authz\nallow := true"),
            ],
        )
        .unwrap_err();
        assert!(err.to_string().contains("U+"), "{revision:?}: {err}");
    }
    bundle("", "package authz\nallow := true", "{}").unwrap();
}

#[test]
fn manifest_keys_differing_only_in_case_are_refused() {
    // Stock OPA matches JSON keys case-insensitively (last one wins): `Roots` would be
    // its roots, while a reader that matches exactly takes `roots`.
    for extra in [
        r#", "Roots": ["other"]"#,
        r#", "Revision": "x-1""#,
        r#", "WASM": [{"entrypoint": "authz/allow", "module": "/p.wasm"}]"#,
        ", \"revi\u{017F}ion\": \"x-2\"",
    ] {
        let err = bundle(extra, "package authz\nallow := true", "{}").unwrap_err();
        assert!(err.to_string().contains("only in case"), "{extra}: {err}");
    }
    // Keys OPA does not read are still ignored, as OPA ignores them.
    bundle(
        r#", "x-build": "ci-7""#,
        "package authz\nallow := true",
        "{}",
    )
    .unwrap();
}
