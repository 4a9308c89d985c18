//! The OPA built-ins this crate adds to regorus (`src/builtins/`), the ones it enables in
//! regorus (`graph`, `yaml`), and the value semantics that still differ from OPA (pinned,
//! with the reason, so a regorus upgrade that changes them shows up here).
#![expect(
    clippy::unwrap_used,
    clippy::panic,
    reason = "tests: helpers outside #[test] functions fail the test they serve"
)]

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self, EcdsaKeyPair, KeyPair};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::EncodingKey;
use portcullis_policy::{Bundle, EvalLimits, PolicyEngine, PolicyError, RegoEngine};
use serde_json::{Value, json};

fn compile(rego: &str, strict: bool) -> Result<RegoEngine, PolicyError> {
    let bundle = Bundle::from_files("t", vec![("t/t.rego".to_owned(), rego.as_bytes().to_vec())])?;
    RegoEngine::compile(
        [&bundle],
        EvalLimits::default().with_strict_builtin_errors(strict),
    )
}

/// `x := <expr>` evaluated with `input`.
fn eval_in(expr: &str, input: &Value, strict: bool) -> Result<Option<Value>, PolicyError> {
    let engine = compile(&format!("package t\nx := {expr}\n"), strict)?;
    engine.evaluate("data.t.x", input).map(|e| e.result)
}

/// The value of `expr` (non-strict), which must be defined.
fn eval(expr: &str) -> Value {
    match eval_in(expr, &json!({}), false) {
        Ok(Some(value)) => value,
        other => panic!("{expr}: {other:?}"),
    }
}

/// `expr` with `input` fails as OPA's built-in errors do: undefined by default, an
/// evaluation error (naming the built-in) with strict built-in errors.
fn fails(expr: &str, input: Value, name: &str) {
    assert_eq!(eval_in(expr, &input, false).unwrap(), None, "{expr}");
    match eval_in(expr, &input, true) {
        Err(PolicyError::Eval { message, .. }) => assert!(message.contains(name), "{message}"),
        other => panic!("{expr}: strict should fail, got {other:?}"),
    }
}

#[test]
fn array_flatten_unpacks_one_level() {
    assert_eq!(
        eval(r#"array.flatten([1, [2, [3]], [], "a", {"b": [4]}])"#),
        json!([1, 2, [3], "a", {"b": [4]}])
    );
    assert_eq!(eval("array.flatten([])"), json!([]));
    fails(
        "array.flatten(input.v)",
        json!({"v": "abc"}),
        "array.flatten",
    );
}

#[test]
fn extensions_compile_like_native_builtins() {
    // A constant argument of the wrong type is refused before anything runs …
    let refused = compile("package t\nx := array.flatten(\"a\")", false).unwrap_err();
    assert!(refused.to_string().contains("array.flatten"), "{refused}");
    // … as is a wrong argument count, or a name that is no built-in.
    let refused = compile("package t\nx := crypto.sha256(\"a\", \"b\")", false).unwrap_err();
    assert!(
        refused.to_string().contains("too many arguments"),
        "{refused}"
    );
    let refused = compile("package t\nx := crypto.sha257(\"a\")", false).unwrap_err();
    assert!(
        refused.to_string().contains("undefined function"),
        "{refused}"
    );
    // An io.jwt name OPA does not have either.
    let refused = compile(
        "package t\nx := io.jwt.verify_es999(\"a.b.c\", \"k\")",
        false,
    );
    assert!(refused.is_err());
    // `with` replaces `count` (a native built-in this crate overrides) as any native one.
    let engine = compile(
        "package t\nx := y if y := count(\"abc\") with count as 7",
        false,
    )
    .unwrap();
    assert_eq!(
        engine.evaluate("data.t.x", &json!({})).unwrap().result,
        Some(json!(7))
    );
}

/// The output-argument form (`f(x, out)`) works for the added built-ins as for native
/// ones (the call is rewritten to `out = f(x)` before regorus parses it).
#[test]
fn extensions_take_output_arguments() {
    let engine = compile(
        "package t\nx := h if io.jwt.decode(input.t, [h, _, _])\n\
         y if not net.cidr_intersects(\"10.0.0.0/8\", input.c, true)\n\
         z := [m | some s in [\"a\"]; crypto.md5(s, m)]",
        false,
    )
    .unwrap();
    let input = json!({"t": "eyJhbGciOiJIUzI1NiJ9.e30.", "c": "192.168.0.0/16"});
    let result = |rule: &str| engine.evaluate(rule, &input).unwrap().result;
    assert_eq!(result("data.t.x"), Some(json!({"alg": "HS256"})));
    assert_eq!(result("data.t.y"), Some(json!(true)));
    assert_eq!(
        result("data.t.z"),
        Some(json!(["0cc175b9c0f1b6a831c399e269772661"]))
    );
    // Errors after the call keep their line.
    let refused = compile(
        "package t\nx if crypto.md5(\"a\", _)\ny if startwith(\"a\", \"b\")",
        false,
    )
    .unwrap_err();
    assert!(refused.to_string().contains("t/t.rego:3:6"), "{refused}");
}

/// An added built-in replaced with `with`, by a value or a function, also where another
/// module calls it: its calls in every module of the set go through a wrapper function
/// that regorus's `with` can replace (it knows only its own built-ins and functions).
#[test]
fn extensions_can_be_replaced_with_with() {
    let engine = compile(
        "package t\nx := y if y := crypto.md5(\"a\") with crypto.md5 as \"mocked\"",
        false,
    )
    .unwrap();
    let result = engine.evaluate("data.t.x", &json!({})).unwrap().result;
    assert_eq!(result, Some(json!("mocked")));
    let files = vec![
        (
            "a/a.rego".to_owned(),
            b"package a\nimport rego.v1\nh := crypto.sha256(input.s)\nplain := crypto.sha256(\"x\")".to_vec(),
        ),
        (
            "b/b.rego".to_owned(),
            b"package b\nimport rego.v1\nfake(s) := concat(\"-\", [s, s])\nmocked := y if y := data.a.h with crypto.sha256 as fake with input.s as \"q\"".to_vec(),
        ),
    ];
    let bundle = Bundle::from_files("t", files).unwrap();
    let engine = RegoEngine::compile([&bundle], EvalLimits::default()).unwrap();
    let eval = |path: &str| engine.evaluate(path, &json!({})).unwrap().result;
    assert_eq!(eval("data.b.mocked"), Some(json!("q-q")));
    assert_eq!(
        eval("data.a.plain"),
        Some(json!(
            "2d711642b726b04401627ca9fbac32f5c8530fb1903cc4db02258717921a4881"
        ))
    );
}

/// `with f as some.builtin`: rewritten to name a wrapper of the built-in (regorus's
/// compiler would read the built-in's name as an unbound variable).
#[test]
fn builtins_replace_functions_and_builtins_with_with() {
    let value = |module: &str| {
        let engine = compile(&format!("package t\n{module}\n"), true).unwrap();
        engine.evaluate("data.t.x", &json!({})).unwrap().result
    };
    assert_eq!(
        value(r#"x := y if y = count([{}, {"a": 3}]) with count as object.union_n"#),
        Some(json!({"a": 3}))
    );
    assert_eq!(
        value(r#"x := y if y = object.union_n([{}, {"a": 3}]) with object.union_n as count"#),
        Some(json!(2))
    );
    // A function replaced, also in its output-argument form.
    assert_eq!(
        value("f(_) := 7\nx := y if y = f([1]) with f as count"),
        Some(json!(1))
    );
    assert_eq!(
        value("f(_) := 7\nx if f([1], 1) with f as count"),
        Some(json!(true))
    );
    // Arity 0: the built-in's value replaces.
    assert_eq!(
        value("x := y if y = time.now_ns() with time.now_ns as count([1, 2])"),
        Some(json!(2))
    );
    // The policy's own `count` wins over the built-in's name.
    assert_eq!(
        value("import rego.v1\nx := y if y = g(1) with g as h\ng(_) := 1\nh(_) := 2"),
        Some(json!(2))
    );
}

/// `http.send` makes no request: mocked with `with` in tests, an evaluation error when
/// reached (even without strict built-in errors, as a failed request halts OPA).
#[test]
fn http_send_is_mockable_and_never_sends() {
    let module = "package t\nmock(req) := {\"status_code\": 200, \"body\": req.body}\n\
                  get := http.send({\"method\": \"GET\", \"url\": \"http://127.0.0.1:9/\", \"body\": 1})\n\
                  mocked := y if y := get with http.send as mock";
    let engine = compile(module, false).unwrap();
    assert_eq!(
        engine.evaluate("data.t.mocked", &json!({})).unwrap().result,
        Some(json!({"status_code": 200, "body": 1}))
    );
    let failed = engine.evaluate("data.t.get", &json!({})).unwrap_err();
    assert!(
        failed.to_string().contains("no network requests"),
        "{failed}"
    );
    fails_always(
        r#"http.send({"method": "get"})"#,
        "missing required request parameters(s)",
    );
}

/// `expr` fails evaluation with `message` with and without strict built-in errors.
fn fails_always(expr: &str, message: &str) {
    for strict in [false, true] {
        match eval_in(expr, &json!({}), strict) {
            Err(PolicyError::Eval { message: got, .. }) => assert!(got.contains(message), "{got}"),
            other => panic!("{expr}: should fail, got {other:?}"),
        }
    }
}

#[test]
fn count_counts_code_points_as_opa() {
    assert_eq!(eval(r#"count("😀")"#), json!(1));
    assert_eq!(eval(r#"count("héllo")"#), json!(5));
    assert_eq!(
        eval(r#"[count([1, 2]), count({1}), count({"a": 1}), count("")]"#),
        json!([2, 1, 1, 0])
    );
    fails("count(input.v)", json!({"v": 12}), "count");
}

#[test]
fn sprintf_formats_as_go_after_opa_conversion() {
    assert_eq!(
        eval(r#"sprintf("%o %f %e %v %x", [8, 1.5, 123.456, 1000000.5, 255])"#),
        json!("10 1.500000 1.234560e+02 1.0000005e+06 ff")
    );
    assert_eq!(
        eval(r#"sprintf("%-6s|%05d|%+.2f|%q", ["ab", -42, 3.14159, "x\"y"])"#),
        json!(r#"ab    |-0042|+3.14|"x\"y""#)
    );
    // Values other than numbers and strings are their Rego text; a verb that does not
    // fit, a missing or an extra argument are Go's `%!` texts, not errors.
    assert_eq!(
        eval(r#"sprintf("%v %s %d", [{"b": [1, true], "a": set()}, null, "x"])"#),
        json!(r#"{"a": set(), "b": [1, true]} null %!d(string=x)"#)
    );
    assert_eq!(eval(r#"sprintf("%d %d", [1])"#), json!("1 %!d(MISSING)"));
    assert_eq!(
        eval(r#"sprintf("%d", [1, "a"])"#),
        json!("1%!(EXTRA string=a)")
    );
    fails("sprintf(input.v, [])", json!({"v": 1}), "sprintf");
    fails("sprintf(\"%d\", input.v)", json!({"v": 1}), "sprintf");
    // A result past 16 MiB (widths of a million each) is refused, not built.
    fails(
        "sprintf(input.f, numbers.range(1, 40))",
        json!({"f": "%999999d".repeat(40)}),
        "longer than",
    );
}

#[test]
fn regex_globs_match_intersects_two_globs() {
    assert_eq!(
        eval(
            r#"[regex.globs_match("a.a.[0-9]+z", ".b.b2359825792*594823z"), regex.globs_match("[a-z]+", "[0-9]*"), regex.globs_match("b.*", "bar"), regex.globs_match("a*", "b*")]"#
        ),
        json!([true, false, true, false])
    );
    fails(
        "regex.globs_match(input.v, \"a\")",
        json!({"v": "[a"}),
        "regex.globs_match",
    );
    fails(
        "regex.globs_match(\"a\", input.v)",
        json!({"v": "*a"}),
        "regex.globs_match",
    );
    fails(
        "regex.globs_match(input.v, input.v)",
        json!({"v": "a".repeat(2000)}),
        "too long",
    );
}

#[test]
fn strings_replace_n_as_go_replacer_and_split_n() {
    // One scan from the left; the first key in sorted order wins at each position;
    // replaced text is not scanned again (regorus alone chains the replacements).
    assert_eq!(
        eval(
            r#"[strings.replace_n({"a": "b", "b": "a"}, "abba"), strings.replace_n({"ab": "b", "b": "Y"}, "baaabbbba"), strings.replace_n({"a": "YY", "bba": "bX"}, "bbab")]"#
        ),
        json!(["baab", "YaabYYYa", "bXb"])
    );
    assert_eq!(
        eval(
            r#"[strings.replace_n({"": "X", "a": "Y"}, "ab"), strings.replace_n({"": "-", "é": "e"}, "aéb"), strings.replace_n({"": "X"}, "")]"#
        ),
        json!(["XYXbX", "-a-e-b-", "X"])
    );
    fails(
        "strings.replace_n(input.v, \"a\")",
        json!({"v": {"a": 1}}),
        "strings.replace_n",
    );
    // An empty key's value at each of 5,001 positions of a 5,000-character text: past 16 MiB.
    fails(
        "strings.replace_n({\"\": input.v}, input.v)",
        json!({"v": "x".repeat(5000)}),
        "longer than",
    );

    assert_eq!(
        eval(
            r#"[strings.split_n("a.b.c.d", ".", 2), strings.split_n("a;b;c;d", ";", -2), strings.split_n("a.b", ".", -5), strings.split_n("a.b.c", ".", 0), strings.split_n("abc", "", 2), strings.split_n("", ".", 2)]"#
        ),
        json!([
            ["a", "b.c.d"],
            ["c", "d"],
            ["a", "b"],
            [],
            ["a", "bc"],
            [""]
        ])
    );
    fails(
        "strings.split_n(\"a\", \".\", input.v)",
        json!({"v": 1.5}),
        "strings.split_n",
    );
}

#[test]
fn is_valid_is_false_for_non_strings() {
    assert_eq!(
        eval_in("[json.is_valid(input.n), yaml.is_valid(input.n), json.is_valid(input.s), json.is_valid(\"1e400\"), yaml.is_valid(\"a: [1\")]", &json!({"n": 1, "s": "{\"a\": [1]}"}), true).unwrap(),
        Some(json!([false, false, true, true, false]))
    );
}

#[test]
fn crypto_hashes_and_hmacs() {
    assert_eq!(
        eval(r#"crypto.md5("abc")"#),
        json!("900150983cd24fb0d6963f7d28e17f72")
    );
    assert_eq!(
        eval(r#"crypto.md5("😀")"#),
        json!("2a02eac39d716a70ecf37579185927b6")
    );
    assert_eq!(
        eval(r#"crypto.sha1("abc")"#),
        json!("a9993e364706816aba3e25717850c26c9cd0d89d")
    );
    assert_eq!(
        eval(r#"crypto.sha256("abc")"#),
        json!("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
    );
    // RFC 2202 and RFC 4231 test case 2 ("Jefe").
    let data = r#""what do ya want for nothing?", "Jefe""#;
    assert_eq!(
        eval(&format!("crypto.hmac.md5({data})")),
        json!("750c783e6ab0b503eaa86e310a5db738")
    );
    assert_eq!(
        eval(&format!("crypto.hmac.sha1({data})")),
        json!("effcdf6ae5eb2fa2d27416d5f184df9c259a7c79")
    );
    assert_eq!(
        eval(&format!("crypto.hmac.sha256({data})")),
        json!("5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")
    );
    assert_eq!(
        eval(&format!("crypto.hmac.sha512({data})")),
        json!(
            "164b7a7bfcf819e2e395fbe73b56e0a387bd64222e831fd610270cd7ea2505549758bf75c05a994a\
             6d034f65f8f0e6fdcaeab1a34d4a6b4b636e070a38bce737"
        )
    );
    // A key longer than MD5's block is hashed first (value from Python's hmac module).
    assert_eq!(
        eval(&format!(
            r#"crypto.hmac.md5("message", "{}")"#,
            "a".repeat(100)
        )),
        json!("f202dbe9e82129c70ca76e421f882aec")
    );
    assert_eq!(
        eval(
            r#"[crypto.hmac.equal("abc", "abc"), crypto.hmac.equal("abc", "abd"), crypto.hmac.equal("abc", "ab")]"#
        ),
        json!([true, false, false])
    );
    fails("crypto.sha256(input.v)", json!({"v": 1}), "crypto.sha256");
    fails(
        "crypto.hmac.sha256(\"x\", input.v)",
        json!({"v": null}),
        "crypto.hmac.sha256",
    );
}

#[test]
fn cidr_merge_and_intersects() {
    assert_eq!(
        eval(r#"net.cidr_merge(["192.0.128.0/24", "192.0.129.0/24"])"#),
        json!(["192.0.128.0/23"])
    );
    // Addresses are /32 (/128) networks; contained networks vanish; families apart; sets too.
    assert_eq!(
        eval(
            r#"net.cidr_merge({"10.0.0.1", "10.0.0.0", "10.0.0.0/8", "10.1.2.3/16", "2001:db8::/33", "2001:db8:8000::/33"})"#
        ),
        json!(["10.0.0.0/8", "2001:db8::/32"])
    );
    assert_eq!(eval("net.cidr_merge([])"), json!([]));
    // Ranges that merge into no single CIDR; the whole IPv6 space.
    assert_eq!(
        eval(
            r#"net.cidr_merge(["10.0.0.0/24", "10.0.1.0/24", "10.0.2.0/24", "::/1", "8000::/1"])"#
        ),
        json!(["10.0.0.0/23", "10.0.2.0/24", "::/0"])
    );
    // As OPA (Go's IP.DefaultMask): an IPv4 address is its classful network, printed with
    // its host bits when nothing merges with it; an IPv6 address needs a prefix length.
    assert_eq!(
        eval(r#"net.cidr_merge(["192.168.1.5", "172.16.0.1"])"#),
        json!(["172.16.0.1/16", "192.168.1.5/24"])
    );
    fails(
        "net.cidr_merge(input.v)",
        json!({"v": ["2001:db8::1"]}),
        "IPv6 invalid",
    );
    fails(
        "net.cidr_merge(input.v)",
        json!({"v": ["10.0.0.0/33"]}),
        "net.cidr_merge",
    );
    fails(
        "net.cidr_merge(input.v)",
        json!({"v": [1]}),
        "net.cidr_merge",
    );
    fails(
        "net.cidr_merge(input.v)",
        json!({"v": "10.0.0.0/8"}),
        "net.cidr_merge",
    );

    assert_eq!(
        eval(
            r#"[net.cidr_intersects("192.168.0.0/16", "192.168.1.0/24"), net.cidr_intersects("10.0.0.0/8", "192.168.0.0/16"), net.cidr_intersects("fd1e:5bfe:8af3:9ddc::/64", "fd1e:5bfe:8af3:9ddc:1111::/72"), net.cidr_intersects("10.0.0.0/8", "::/0")]"#
        ),
        json!([true, false, true, false])
    );
    assert_eq!(
        eval(
            r#"net.cidr_contains_matches({"a": "10.0.0.0/8", "b": ["192.168.0.0/16", "tag"]}, ["10.1.2.3", "192.168.7.0/24", "172.16.0.1"])"#
        ),
        json!([["a", 0], ["b", 1]])
    );
    assert_eq!(
        eval(r#"net.cidr_contains_matches("10.0.0.0/8", {"10.0.0.1"})"#),
        json!([["10.0.0.0/8", "10.0.0.1"]])
    );
    fails(
        "net.cidr_contains_matches(input.v, \"10.0.0.1\")",
        json!({"v": [[]]}),
        "net.cidr_contains_matches",
    );
    fails(
        "net.cidr_contains_matches(\"10.0.0.0/8\", input.v)",
        json!({"v": "nope"}),
        "net.cidr_contains_matches",
    );
    // Host bits are ignored, as Go's ParseCIDR masks them.
    assert_eq!(
        eval(r#"net.cidr_intersects("10.1.2.3/8", "10.200.0.0/16")"#),
        json!(true)
    );
    fails(
        "net.cidr_intersects(input.v, \"10.0.0.0/8\")",
        json!({"v": "10.0.0.1"}),
        "net.cidr_intersects",
    );
}

#[test]
fn json_patch_follows_rfc_6902_and_opa() {
    assert_eq!(
        eval(r#"json.patch({"a": {"foo": 1}}, [{"op": "add", "path": "/a/bar", "value": 2}])"#),
        json!({"a": {"foo": 1, "bar": 2}})
    );
    assert_eq!(
        eval(
            r#"json.patch({"a": [1, 2], "b": {"c": 3}, "d~/": 0}, [
                {"op": "add", "path": "/a/-", "value": 9},
                {"op": "add", "path": "/a/0", "value": 0},
                {"op": "remove", "path": "/a/1"},
                {"op": "replace", "path": "/b/c", "value": 4},
                {"op": "move", "from": "/b", "path": "/e"},
                {"op": "copy", "from": "/e", "path": ["f", ]},
                {"op": "test", "path": "/d~0~1", "value": 0},
            ])"#
        ),
        json!({"a": [0, 2, 9], "e": {"c": 4}, "f": {"c": 4}, "d~/": 0})
    );
    // The whole value, scalars, and sets (a member is its own key).
    assert_eq!(
        eval(r#"json.patch(1, [{"op": "replace", "path": "", "value": 2}])"#),
        json!(2)
    );
    assert_eq!(
        eval(
            r#"json.patch({"s": {1, 2}}, [{"op": "add", "path": ["s", 3], "value": 3}, {"op": "remove", "path": ["s", 1]}])"#
        ),
        json!({"s": [2, 3]})
    );
    // A failing or malformed operation makes the result undefined, even in strict mode.
    for bad in [
        r#"[{"op": "test", "path": "/a", "value": 2}]"#,
        r#"[{"op": "remove", "path": "/missing"}]"#,
        r#"[{"op": "add", "path": "/a/b", "value": 1}]"#,
        r#"[{"op": "frobnicate", "path": "/a"}]"#,
        r#"[{"op": "add", "path": "/a"}]"#,
        r#"["add"]"#,
    ] {
        let expr = format!(r#"json.patch({{"a": 1}}, {bad})"#);
        assert_eq!(eval_in(&expr, &json!({}), false).unwrap(), None, "{bad}");
        assert_eq!(eval_in(&expr, &json!({}), true).unwrap(), None, "{bad}");
    }
    // An array index past the end, out of bounds.
    assert_eq!(
        eval_in(
            r#"json.patch([1], [{"op": "add", "path": "/2", "value": 1}])"#,
            &json!({}),
            false
        )
        .unwrap(),
        None
    );
    // Patches that are not an array: a type error.
    fails(
        "json.patch({}, input.v)",
        json!({"v": {"op": "add"}}),
        "json.patch",
    );
}

#[test]
fn graph_and_walk_from_regorus() {
    assert_eq!(
        eval(r#"graph.reachable({"a": ["b"], "b": {"c"}, "c": [], "d": ["a"]}, ["a"])"#),
        json!(["a", "b", "c"])
    );
    assert_eq!(
        eval(r#"[[p, v] | walk({"a": [1]}, [p, v])]"#),
        json!([[[], {"a": [1]}], [["a"], [1]], [["a", 0], 1]])
    );
}

#[test]
fn yaml_from_regorus() {
    assert_eq!(
        eval(r#"yaml.marshal({"a": [1, 2], "b": {"c": "x"}})"#),
        json!("a:\n- 1\n- 2\nb:\n  c: x\n")
    );
    assert_eq!(
        eval(r#"yaml.unmarshal("a: 1\nb: [x, true]\n")"#),
        json!({"a": 1, "b": ["x", true]})
    );
    assert_eq!(
        eval(r#"[yaml.is_valid("a: [1"), yaml.is_valid("a: 1")]"#),
        json!([false, true])
    );
    fails(
        "yaml.unmarshal(input.v)",
        json!({"v": "a: [1"}),
        "yaml.unmarshal",
    );
}

fn b64(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A compact JWS over `header` and `claims`, signed by `sign`.
fn jws(header: &Value, claims: &Value, sign: impl FnOnce(&[u8]) -> Vec<u8>) -> String {
    let message = format!("{}.{}", b64(header.to_string()), b64(claims.to_string()));
    let signature = sign(message.as_bytes());
    format!("{message}.{}", b64(signature))
}

fn hs256(secret: &str) -> impl FnOnce(&[u8]) -> Vec<u8> {
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret.as_bytes());
    move |message| aws_lc_rs::hmac::sign(&key, message).as_ref().to_vec()
}

/// Signs with jsonwebtoken's aws-lc-rs provider, named explicitly.
fn with_key(alg: jsonwebtoken::Algorithm, key: EncodingKey) -> impl FnOnce(&[u8]) -> Vec<u8> {
    move |message| {
        let signer =
            (jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER.signer_factory)(&alg, &key).unwrap();
        signer.try_sign(message).unwrap()
    }
}

fn fixture(name: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/tests/fixtures/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

#[test]
fn jwt_decode() {
    let token = jws(
        &json!({"alg": "HS256", "typ": "JWT"}),
        &json!({"sub": "alice", "n": 1}),
        hs256("s"),
    );
    let decoded = eval_in("io.jwt.decode(input.t)", &json!({"t": token}), false)
        .unwrap()
        .unwrap();
    assert_eq!(decoded[0], json!({"alg": "HS256", "typ": "JWT"}));
    assert_eq!(decoded[1], json!({"sub": "alice", "n": 1}));
    let signature = URL_SAFE_NO_PAD
        .decode(token.rsplit('.').next().unwrap())
        .unwrap();
    assert_eq!(decoded[2], json!(hex::encode(signature)));
    // A nested JWT (content type JWT) is decoded in turn.
    let outer = format!(
        "{}.{}.",
        b64(json!({"alg": "HS256", "cty": "JWT"}).to_string()),
        b64(&token)
    );
    let nested = eval_in("io.jwt.decode(input.t)", &json!({"t": outer}), false)
        .unwrap()
        .unwrap();
    assert_eq!(nested[1], json!({"sub": "alice", "n": 1}));
    for bad in [
        "no-dots".to_owned(),
        "a.b".to_owned(),
        "a.b.c.d".to_owned(),
        format!("{}.{}.", b64("[1]"), b64("{}")),
        format!("{}.{}.", b64("{\"alg\":\"HS256\"}"), b64("[1]")),
        format!("{}.{}.", b64("{\"enc\":\"A128GCM\"}"), b64("{}")),
        format!("{}.{}.!!", b64("{}"), b64("{}")),
    ] {
        fails("io.jwt.decode(input.t)", json!({"t": bad}), "io.jwt.decode");
    }
}

#[test]
fn jwt_verify_hmac_rsa_eddsa_ecdsa() {
    let hs = jws(&json!({"alg": "HS256"}), &json!({"a": 1}), hs256("secret"));
    assert_eq!(
        eval_in("[io.jwt.verify_hs256(input.t, \"secret\"), io.jwt.verify_hs256(input.t, \"other\"), io.jwt.verify_hs512(input.t, \"secret\")]", &json!({"t": hs}), false).unwrap(),
        Some(json!([true, false, false]))
    );

    let rsa_key =
        EncodingKey::from_rsa_pem(fixture("bundle-signing-rsa-test-only.key.pem").as_bytes())
            .unwrap();
    let rsa_pub = fixture("bundle-signing-rsa-test-only.pub.pem");
    let rs = jws(
        &json!({"alg": "RS256"}),
        &json!({"a": 1}),
        with_key(jsonwebtoken::Algorithm::RS256, rsa_key.clone()),
    );
    let ps = jws(
        &json!({"alg": "PS384"}),
        &json!({"a": 1}),
        with_key(jsonwebtoken::Algorithm::PS384, rsa_key),
    );
    let ed_key =
        EncodingKey::from_ed_pem(fixture("bundle-signing-ed25519-test-only.key.pem").as_bytes())
            .unwrap();
    let ed_pub = fixture("bundle-signing-ed25519-test-only.pub.pem");
    let ed = jws(
        &json!({"alg": "EdDSA"}),
        &json!({"a": 1}),
        with_key(jsonwebtoken::Algorithm::EdDSA, ed_key),
    );
    let input = json!({"rs": rs, "ps": ps, "ed": ed, "rsa": rsa_pub, "edk": ed_pub});
    assert_eq!(
        eval_in(
            "[io.jwt.verify_rs256(input.rs, input.rsa), io.jwt.verify_rs384(input.rs, input.rsa), \
             io.jwt.verify_ps384(input.ps, input.rsa), io.jwt.verify_ps256(input.ps, input.rsa), \
             io.jwt.verify_eddsa(input.ed, input.edk), io.jwt.verify_eddsa(input.ed, input.rsa), \
             io.jwt.verify_rs256(input.rs, input.edk)]",
            &input,
            false
        )
        .unwrap(),
        Some(json!([true, false, true, false, true, false, false]))
    );

    // ES256 with a key made here, given as a PEM public key and as a JWK (set).
    let rng = SystemRandom::new();
    let pkcs8 =
        EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
    let pair =
        EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref())
            .unwrap();
    let point = pair.public_key().as_ref().to_vec();
    let mut spki = hex::decode("3059301306072a8648ce3d020106082a8648ce3d030107034200").unwrap();
    spki.extend_from_slice(&point);
    let pem = format!(
        "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
        STANDARD.encode(&spki)
    );
    let jwk = json!({"kty": "EC", "crv": "P-256", "alg": "ES256", "kid": "k1", "x": b64(&point[1..33]), "y": b64(&point[33..])});
    let es = jws(
        &json!({"alg": "ES256", "kid": "k1"}),
        &json!({"a": 1}),
        |m| pair.sign(&rng, m).unwrap().as_ref().to_vec(),
    );
    let input = json!({"t": es, "pem": pem, "jwk": jwk.to_string(), "jwks": json!({"keys": [jwk]}).to_string()});
    assert_eq!(
        eval_in(
            "[io.jwt.verify_es256(input.t, input.pem), io.jwt.verify_es256(input.t, input.jwk), \
             io.jwt.verify_es256(input.t, input.jwks), io.jwt.verify_es384(input.t, input.pem)]",
            &input,
            false
        )
        .unwrap(),
        Some(json!([true, true, true, false]))
    );

    // Malformed tokens and keys are errors, not `false`.
    fails(
        "io.jwt.verify_rs256(input.t, input.k)",
        json!({"t": "a.b", "k": rsa_pub_text()}),
        "io.jwt.verify_rs256",
    );
    fails(
        "io.jwt.verify_rs256(input.t, input.k)",
        json!({"t": "e30.e30.", "k": "not a key"}),
        "io.jwt.verify_rs256",
    );
    fails(
        "io.jwt.verify_rs256(input.t, input.k)",
        json!({"t": "e30.e30.", "k": "-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----"}),
        "io.jwt.verify_rs256",
    );
    fails(
        "io.jwt.verify_hs256(input.t, \"s\")",
        json!({"t": "e30.e30.%%%"}),
        "io.jwt.verify_hs256",
    );
}

fn rsa_pub_text() -> String {
    fixture("bundle-signing-rsa-test-only.pub.pem")
}

#[test]
fn jwt_decode_verify_checks_signature_and_claims() {
    let claims =
        json!({"iss": "issuer", "aud": ["api", "other"], "exp": 2000, "nbf": 1000, "sub": "alice"});
    let token = jws(
        &json!({"alg": "HS256", "typ": "JWT"}),
        &claims,
        hs256("secret"),
    );
    let at = |seconds: u64| seconds * 1_000_000_000;
    let check = |constraints: Value| {
        eval_in(
            "io.jwt.decode_verify(input.t, input.c)",
            &json!({"t": token, "c": constraints}),
            false,
        )
        .unwrap()
        .unwrap()
    };
    let valid = json!([true, {"alg": "HS256", "typ": "JWT"}, claims]);
    let invalid = json!([false, {}, {}]);
    assert_eq!(
        check(json!({"secret": "secret", "aud": "api", "time": at(1500)})),
        valid
    );
    assert_eq!(
        check(
            json!({"secret": "secret", "aud": "api", "iss": "issuer", "alg": "HS256", "time": at(1000)})
        ),
        valid
    );
    // Wrong secret or algorithm, issuer, audience (a token with `aud` needs one), expiry,
    // not yet valid.
    for constraints in [
        json!({"secret": "wrong", "aud": "api", "time": at(1500)}),
        json!({"secret": "secret", "aud": "api", "alg": "RS256", "time": at(1500)}),
        json!({"secret": "secret", "aud": "api", "iss": "other", "time": at(1500)}),
        json!({"secret": "secret", "aud": "nope", "time": at(1500)}),
        json!({"secret": "secret", "time": at(1500)}),
        json!({"secret": "secret", "aud": "api", "time": at(2000)}),
        json!({"secret": "secret", "aud": "api", "time": at(999)}),
    ] {
        assert_eq!(check(constraints.clone()), invalid, "{constraints}");
    }
    // With a certificate or public key.
    let rsa_key =
        EncodingKey::from_rsa_pem(fixture("bundle-signing-rsa-test-only.key.pem").as_bytes())
            .unwrap();
    let rs = jws(
        &json!({"alg": "RS256"}),
        &json!({"sub": "bob"}),
        with_key(jsonwebtoken::Algorithm::RS256, rsa_key),
    );
    let input = json!({"t": rs, "c": {"cert": rsa_pub_text()}});
    assert_eq!(
        eval_in("io.jwt.decode_verify(input.t, input.c)", &input, false).unwrap(),
        Some(json!([true, {"alg": "RS256"}, {"sub": "bob"}]))
    );
    // Constraints OPA refuses: unknown, none or two keys, a negative time.
    for constraints in [
        json!({"secret": "s", "colour": "red"}),
        json!({"aud": "api"}),
        json!({"secret": "s", "cert": rsa_pub_text()}),
        json!({"secret": "s", "time": -1}),
    ] {
        fails(
            "io.jwt.decode_verify(input.t, input.c)",
            json!({"t": token, "c": constraints}),
            "io.jwt.decode_verify",
        );
    }
    // A non-numeric `exp` in a token that verifies is an error too.
    let odd = jws(
        &json!({"alg": "HS256"}),
        &json!({"exp": "soon"}),
        hs256("s"),
    );
    fails(
        "io.jwt.decode_verify(input.t, {\"secret\": \"s\"})",
        json!({"t": odd}),
        "io.jwt.decode_verify",
    );
}

/// `import rego.v1` beside `import future.keywords…` compiles as in OPA 1.x (regorus alone
/// refuses them as shadowing imports), with positions in later messages unchanged.
#[test]
fn rego_v1_with_future_keywords_imports() {
    let engine = compile(
        "package t\nimport rego.v1\nimport future.keywords.in\nimport future.keywords\n\
         x := 1 in [1]",
        false,
    )
    .unwrap();
    assert_eq!(
        engine.evaluate("data.t.x", &json!({})).unwrap().result,
        Some(json!(true))
    );
    let refused = compile(
        "package t\nimport rego.v1\nimport future.keywords.if\nx if startwith(\"a\", \"b\")",
        false,
    )
    .unwrap_err();
    assert!(refused.to_string().contains("t/t.rego:4:6"), "{refused}");
}

/// Unary minus on any expression, as OPA (regorus alone negates only number literals; the
/// source is rewritten to `(0 - x)`), with OPA's precedence.
#[test]
fn unary_minus_on_expressions() {
    assert_eq!(
        eval_in(
            "[-input.y, 2 * -input.y, -input.y + 1, 10 / -input.y, -input.y * 2, - -input.y, -(input.y - 1), -count([1, 2])]",
            &json!({"y": 4}),
            false
        )
        .unwrap(),
        Some(json!([-4, -8, -3, -2.5, -8, 4, -3, -2]))
    );
    // Of a non-number, exactly what `0 - x` gives in regorus (an evaluation error).
    let failed = eval_in("-input.s", &json!({"s": "a"}), false).unwrap_err();
    assert!(
        failed
            .to_string()
            .contains("`sub` expects numeric argument"),
        "{failed}"
    );
}

/// Value semantics where regorus still differs from OPA and no extension or setting of
/// this crate can fix it (README, "Differences from OPA"). Each assertion pins regorus's
/// answer, so an upgrade that changes it fails here and the README is updated with it.
#[test]
fn value_semantics_that_differ_from_opa_are_pinned() {
    // OPA computes with arbitrary-precision decimals (0.1 + 0.2 == 0.3); regorus with
    // f64 for non-integers.
    assert_eq!(eval("0.1 + 0.2 == 0.3"), json!(false));
    assert_eq!(eval("0.1 + 0.2"), json!(0.30000000000000004));
    // Integers beyond 64 bits written as literals become floats (OPA keeps them exact);
    // arithmetic on 64-bit integers stays exact.
    assert_eq!(
        eval("12345678901234567890123"),
        json!(1.2345678901234568e22)
    );
    assert_eq!(eval("9007199254740993 + 0"), json!(9007199254740993_u64));
    // Literals beyond f64 (`1e400`, a valid OPA number) do not parse.
    assert!(compile("package t\nx := 1e400", false).is_err());
    // Sets sort before objects in regorus, after them in OPA (`sort`, comparisons, the
    // order of a set's members).
    assert_eq!(eval(r#"sort([{"a": 1}, {1}])"#), json!([[1], {"a": 1}]));
    assert_eq!(eval(r#"{"a": 1} < {1}"#), json!(false));
}

/// RFC 7515 appendix A.1: the HMAC key of the example.
const RFC7515_A1_KEY: &str = r#"{"kty":"oct","k":"AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow"}"#;

#[test]
fn jwt_encode_sign() {
    // RFC 7515 A.1, byte for byte.
    let input = json!({
        "h": "{\"typ\":\"JWT\",\r\n \"alg\":\"HS256\"}",
        "p": "{\"iss\":\"joe\",\r\n \"exp\":1300819380,\r\n \"http://example.com/is_root\":true}",
        "k": RFC7515_A1_KEY,
    });
    assert_eq!(
        eval_in(
            "io.jwt.encode_sign_raw(input.h, input.p, input.k)",
            &input,
            false
        )
        .unwrap(),
        Some(json!(
            "eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9.\
             eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ.\
             dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
        ))
    );
    // Objects are serialized as Go's JSON (compact, sorted keys, HTML characters escaped).
    let token = eval_in(
        "io.jwt.encode_sign({\"alg\": \"HS256\", \"typ\": \"JWT\"}, {\"b\": \"<&>\", \"a\": 1}, json.unmarshal(input.k))",
        &input,
        false,
    )
    .unwrap()
    .unwrap();
    let token = token.as_str().unwrap();
    let payload = URL_SAFE_NO_PAD
        .decode(token.split('.').nth(1).unwrap())
        .unwrap();
    assert_eq!(payload, br#"{"a":1,"b":"\u003c\u0026\u003e"}"#);
    let secret = URL_SAFE_NO_PAD
        .decode("AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow")
        .unwrap();
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &secret);
    let (message, signature) = token.rsplit_once('.').unwrap();
    aws_lc_rs::hmac::verify(
        &key,
        message.as_bytes(),
        &URL_SAFE_NO_PAD.decode(signature).unwrap(),
    )
    .unwrap();

    // EdDSA and ES256 with keys made here, checked by the verify built-ins.
    let rng = SystemRandom::new();
    let ed = signature::Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
    let ed_pair = signature::Ed25519KeyPair::from_pkcs8(ed.as_ref()).unwrap();
    let ed_jwk = json!({"kty": "OKP", "crv": "Ed25519", "d": b64(&ed.as_ref()[16..48]), "x": b64(ed_pair.public_key())});
    let ec =
        EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
    let ec_pair =
        EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, ec.as_ref()).unwrap();
    let point = ec_pair.public_key().as_ref().to_vec();
    let ec_jwk = json!({"kty": "EC", "crv": "P-256", "d": b64(&ec.as_ref()[36..68]), "x": b64(&point[1..33]), "y": b64(&point[33..])});
    let public = |jwk: &Value| {
        let mut jwk = jwk.clone();
        jwk.as_object_mut().unwrap().remove("d");
        jwk.to_string()
    };
    let input = json!({"ed": ed_jwk, "ec": ec_jwk, "edp": public(&ed_jwk), "ecp": public(&ec_jwk)});
    assert_eq!(
        eval_in(
            "[io.jwt.verify_eddsa(io.jwt.encode_sign({\"alg\": \"EdDSA\"}, {\"a\": 1}, input.ed), input.edp), \
              io.jwt.verify_es256(io.jwt.encode_sign({\"alg\": \"ES256\"}, {\"a\": 1}, input.ec), input.ecp)]",
            &input,
            false
        )
        .unwrap(),
        Some(json!([true, true]))
    );
    // Unknown algorithm, no alg, a payload that is not JSON for a JWT, a key of another kind.
    for (header, payload) in [
        (r#"{"alg":"dummy"}"#, "{}"),
        ("{}", "{}"),
        (r#"{"alg":"HS256"}"#, "not json"),
        (r#"{"alg":"RS256"}"#, "{}"),
    ] {
        fails(
            "io.jwt.encode_sign_raw(input.h, input.p, input.k)",
            json!({"h": header, "p": payload, "k": RFC7515_A1_KEY}),
            "io.jwt.encode_sign_raw",
        );
    }
    // A plain-text payload may be anything.
    assert!(
        eval_in(
            "io.jwt.encode_sign_raw(\"{\\\"alg\\\":\\\"HS256\\\",\\\"typ\\\":\\\"text/plain\\\"}\", \"e\", input.k)",
            &json!({"k": RFC7515_A1_KEY}),
            false
        )
        .unwrap()
        .is_some()
    );
}

/// RS256 signing with the RSA key of RFC 7515 appendix A.2 as a JWK; the expected token is
/// the one of OPA's test case `jwtencodesign/test-jwtencodesign-0494.yaml` (Copyright The
/// OPA Authors, Apache License 2.0; see `tests/opa-cases/NOTICE`), which regorus cannot
/// compile itself (a source line longer than 1024 columns).
#[test]
fn jwt_encode_sign_rs256_as_opa() {
    let jwk = json!({
        "d": concat!("Eq5xpGnNCivDflJsRQBXHx1hdR1k6Ulwe2JZD50LpXyWPEAeP88vLNO97IjlA7_G", "Q5sLKMgvfTeXZx9SE-7YwVol2NXOoAJe46sui395IW_GO-pWJ1O0BkTGoVEn2bKV", "RUCgu-GjBVaYLU6f3l9kJfFNS3E0QbVdxzubSu3Mkqzjkn439X0M_V51gfpRLI9J", "YanrC4D4qAdGcopV_0ZHHzQlBjudU2QvXt4ehNYTCBr6XCLQUShb1juUO1ZdiYoF", "aFQT5Tw8bGUl_x_jTj3ccPDVZFD9pIuhLhBOneufuBiB4cS98l2SR_RQyGWSeWjn", "czT0QU91p1DhOVRuOopznQ"),
        "dp": concat!("BwKfV3Akq5_MFZDFZCnW-wzl-CCo83WoZvnLQwCTeDv8uzluRSnm71I3QCLdhrqE", "2e9YkxvuxdBfpT_PI7Yz-FOKnu1R6HsJeDCjn12Sk3vmAktV2zb34MCdy7cpdTh_", "YVr7tss2u6vneTwrA86rZtu5Mbr1C1XsmvkxHQAdYo0"),
        "dq": concat!("h_96-mK1R_7glhsum81dZxjTnYynPbZpHziZjeeHcXYsXaaMwkOlODsWa7I9xXDo", "RwbKgB719rrmI2oKr6N3Do9U0ajaHF-NKJnwgjMd2w9cjz3_-kyNlxAr2v4IKhGN", "pmM5iIgOS1VZnOZ68m6_pbLBSp3nssTdlqvd0tIiTHU"),
        "e": "AQAB",
        "kty": "RSA",
        "n": concat!("ofgWCuLjybRlzo0tZWJjNiuSfb4p4fAkd_wWJcyQoTbji9k0l8W26mPddxHmfHQp", "-Vaw-4qPCJrcS2mJPMEzP1Pt0Bm4d4QlL-yRT-SFd2lZS-pCgNMsD1W_YpRPEwOW", "vG6b32690r2jZ47soMZo9wGzjb_7OMg0LOL-bSf63kpaSHSXndS5z5rexMdbBYUs", "LA9e-KXBdQOS-UTo7WTBEMa2R2CapHg665xsmtdVMTBQY4uDZlxvb3qCo5ZwKh9k", "G4LT6_I5IhlJH7aGhyxXFvUK-DWNmoudF8NAco9_h9iaGNj8q2ethFkMLs91kzk2", "PAcDTW9gb54h4FRWyuXpoQ"),
        "p": concat!("4BzEEOtIpmVdVEZNCqS7baC4crd0pqnRH_5IB3jw3bcxGn6QLvnEtfdUdiYrqBds", "s1l58BQ3KhooKeQTa9AB0Hw_Py5PJdTJNPY8cQn7ouZ2KKDcmnPGBY5t7yLc1QlQ", "5xHdwW1VhvKn-nXqhJTBgIPgtldC-KDV5z-y2XDwGUc"),
        "q": concat!("uQPEfgmVtjL0Uyyx88GZFF1fOunH3-7cepKmtH4pxhtCoHqpWmT8YAmZxaewHgHA", "jLYsp1ZSe7zFYHj7C6ul7TjeLQeZD_YwD66t62wDmpe_HlB-TnBA-njbglfIsRLt", "XlnDzQkv5dTltRJ11BKBBypeeF6689rjcJIDEz9RWdc"),
        "qi": concat!("IYd7DHOhrWvxkwPQsRM2tOgrjbcrfvtQJipd-DlcxyVuuM9sQLdgjVk2oy26F0Em", "pScGLq2MowX7fhd_QJQ3ydy5cY7YIBi87w93IKLEdfnbJtoOPLUW0ITrJReOgo1c", "q9SbsxYawBgfp_gh6A5603k2-ZQwVK0JKSHuLFkuQ3U"),
    });
    let claims = json!({"aud": ["bob", "saul"], "exp": 1300819380, "http://example.com/is_root": true, "iss": "joe", "privateParams": {"private_one": "one", "private_two": "two"}});
    let public = json!({"kty": "RSA", "n": jwk["n"], "e": jwk["e"]}).to_string();
    let input = json!({"k": jwk, "c": claims, "pub": public});
    let token = eval_in(
        "io.jwt.encode_sign({\"alg\": \"RS256\"}, input.c, input.k)",
        &input,
        false,
    )
    .unwrap()
    .unwrap();
    assert_eq!(
        token,
        json!(concat!(
            "eyJhbGciOiJSUzI1NiJ9.eyJhdWQiOlsiYm9iIiwic2F1bCJdLCJleHAiOjEzMDA4MTkzODAsImh0dHA",
            "6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlLCJpc3MiOiJqb2UiLCJwcml2YXRlUGFyYW1zIjp7InB",
            "yaXZhdGVfb25lIjoib25lIiwicHJpdmF0ZV90d28iOiJ0d28ifX0.kvCjo2z80h4YO3umCn3iayUXEnB",
            "Ggw-Nk4-cYNPWagW4SAg34nZSonUt9Kpnc5h0s6LpJAnam1xuEezk-2VRPnu05foQdWTDKJAze-9vZ0w",
            "r0L_KyXLZaW0vVfehdGpPgJj_FqVfgnc-hXdL0RADfrKjApsrO7oHpv-Ii3u7oKwauzq5oQ2AXt4cp6a",
            "hu8VhOBGQiPXtV98Yw3U3NBetMX-I_qR6-UGsN6Z0pRO0bsdk1ANvMiHT6Y04x8nh4kzk5pfv71ACgnx",
            "rs1zxwg7YfYzm2tQXGceu7fwI9sqO_jz2c8RvMsg4u8q0js58F-gR1SVjmTyipnXv0tAGzpZnhg"
        ))
    );
    let input = json!({"t": token, "pub": public});
    assert_eq!(
        eval_in("io.jwt.verify_rs256(input.t, input.pub)", &input, false).unwrap(),
        Some(json!(true))
    );
}

/// ES512 (jsonwebtoken lacks it; aws-lc-rs signs and verifies it): a P-521 key made here,
/// as a private JWK to sign with and as a PEM public key and a JWK to verify with.
#[test]
fn jwt_es512() {
    use aws_lc_rs::encoding::{AsBigEndian, AsDer, EcPrivateKeyBin, PublicKeyX509Der};
    use aws_lc_rs::signature::{ECDSA_P521_SHA512_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};
    let pair = EcdsaKeyPair::generate(&ECDSA_P521_SHA512_FIXED_SIGNING).unwrap();
    let d: EcPrivateKeyBin<'_> = pair.private_key().as_be_bytes().unwrap();
    let point = pair.public_key().as_ref().to_vec();
    let spki: PublicKeyX509Der<'_> = pair.public_key().as_der().unwrap();
    let pem = format!(
        "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
        STANDARD.encode(spki.as_ref())
    );
    let public =
        json!({"kty": "EC", "crv": "P-521", "x": b64(&point[1..67]), "y": b64(&point[67..])});
    let mut private = public.clone();
    private["d"] = json!(b64(d.as_ref()));
    let input = json!({"k": private, "pem": pem, "jwk": public.to_string(), "other": fixture("bundle-signing-rsa-test-only.pub.pem")});
    assert_eq!(
        eval_in(
            "[io.jwt.verify_es512(t, input.pem), io.jwt.verify_es512(t, input.jwk), \
              io.jwt.verify_es512(t, input.other), io.jwt.verify_es384(t, input.pem), \
              io.jwt.decode_verify(t, {\"cert\": input.pem, \"time\": 0})[0]] \
             if t := io.jwt.encode_sign({\"alg\": \"ES512\"}, {\"a\": 1}, input.k)",
            &input,
            false
        )
        .unwrap(),
        Some(json!([true, true, false, false, true]))
    );
    fails(
        "io.jwt.encode_sign({\"alg\": \"ES512\"}, {}, input.k)",
        json!({"k": {"kty": "oct", "k": "AA"}}),
        "P-521",
    );
}

fn compile_files(files: &[(&str, &str)]) -> Result<RegoEngine, PolicyError> {
    let bundle = Bundle::from_files(
        "t",
        files
            .iter()
            .map(|(path, rego)| ((*path).to_owned(), rego.as_bytes().to_vec()))
            .collect::<Vec<_>>(),
    )?;
    RegoEngine::compile([&bundle], EvalLimits::default())
}

/// `rego.metadata.rule()` and `rego.metadata.chain()` from `# METADATA` blocks, across
/// modules and scopes, as OPA answers them.
#[test]
fn rego_metadata_rule_and_chain() {
    let engine = compile_files(&[
        (
            "t/a.rego",
            "# METADATA\n# description: The suite\n# scope: package\npackage t\n\n\
             # METADATA\n# scope: document\n# title: Doc\n# authors:\n# - Ann <ann@example.com>\n# - Bob\n\
             p := \"foo\" if false\n\n\
             # METADATA\n# title: Another\n# related_resources:\n# - https://example.com\n\
             p := x if {\n\tx := rego.metadata.chain()\n}\n\n\
             r := rego.metadata.rule()\n\n\
             # METADATA\n# title: S\n# custom:\n#   level: 3\n\
             s := rego.metadata.rule()\n",
        ),
        ("t/b.rego", "package t\n\nq := rego.metadata.chain()\n"),
        (
            "u.rego",
            "# METADATA\n# scope: subpackages\n# title: All of t\npackage t.sub\n\nz := rego.metadata.chain()\n",
        ),
    ])
    .unwrap();
    let get = |path: &str| engine.evaluate(path, &json!({})).unwrap().result;
    assert_eq!(
        get("data.t.p"),
        Some(json!([
            {"path": ["t", "p"], "annotations": {"scope": "rule", "title": "Another", "related_resources": [{"ref": "https://example.com"}]}},
            {"path": ["t", "p"], "annotations": {"scope": "document", "title": "Doc", "authors": [{"name": "Ann", "email": "ann@example.com"}, {"name": "Bob"}]}},
            {"path": ["t"], "annotations": {"scope": "package", "description": "The suite"}},
        ]))
    );
    assert_eq!(
        get("data.t.q"),
        Some(json!([
            {"path": ["t", "q"]},
            {"path": ["t"], "annotations": {"scope": "package", "description": "The suite"}},
        ]))
    );
    assert_eq!(get("data.t.r"), Some(json!({})));
    assert_eq!(
        get("data.t.s"),
        Some(json!({"scope": "rule", "title": "S", "custom": {"level": 3}}))
    );
    assert_eq!(
        get("data.t.sub.z"),
        Some(json!([
            {"path": ["t", "sub", "z"]},
            {"path": ["t", "sub"], "annotations": {"scope": "subpackages", "title": "All of t"}},
        ]))
    );
}
