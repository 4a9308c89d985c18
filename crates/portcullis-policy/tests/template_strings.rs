//! OPA 1.x template strings (`$"…{expr}…"`, raw `` $`…{expr}…` ``): rewritten into calls of
//! `internal.template_string` before regorus parses a module (`src/builtins/template.rs`).
#![expect(
    clippy::panic,
    reason = "tests: helpers outside #[test] functions fail the test they serve"
)]

use portcullis_policy::{Bundle, EvalLimits, PolicyEngine, PolicyError, RegoEngine};
use serde_json::{Value, json};

fn compile(rego: &str, strict: bool) -> Result<RegoEngine, PolicyError> {
    let bundle = Bundle::from_files("t", vec![("t/t.rego".to_owned(), rego.as_bytes().to_vec())])?;
    RegoEngine::compile(
        [&bundle],
        EvalLimits::default().with_strict_builtin_errors(strict),
    )
}

/// `data.t.x` of `module` (after `package t`) with `input`.
fn eval_with(module: &str, input: &Value, strict: bool) -> Result<Option<Value>, PolicyError> {
    let engine = compile(&format!("package t\n{module}\n"), strict)?;
    engine.evaluate("data.t.x", input).map(|e| e.result)
}

/// `data.t.x` of `module`, which must be defined.
fn eval(module: &str) -> Value {
    match eval_with(module, &json!({}), false) {
        Ok(Some(value)) => value,
        other => panic!("{module}: {other:?}"),
    }
}

#[test]
fn values_render_as_opa_prints_them() {
    assert_eq!(
        eval(r#"x := $"{42}, {13.37}, {true}, {"foo"}, {null}""#),
        json!("42, 13.37, true, foo, null")
    );
}

#[test]
fn escapes_collections_and_undefined() {
    assert_eq!(
        eval(r#"x := $"\{42\} {42}\} \t\"""#),
        json!("{42} 42} \t\"")
    );
    // A lone `}` is text; a raw template keeps `\}` and has no escapes but `\{`.
    assert_eq!(eval(r#"x := $"a}{1}""#), json!("a}1"));
    assert_eq!(eval(r"x := $`\}\{\n{1}`"), json!(r"\}{\n1"));
    // A raw template drops the line break right after its opening quote, and only that.
    assert_eq!(eval("x := $`\nfoo\n`"), json!("foo\n"));
    assert_eq!(eval("x := $`\n\n{1}`"), json!("\n1"));
    assert_eq!(eval("x := $` \nfoo`"), json!(" \nfoo"));
    // Inside `every`.
    assert_eq!(
        eval_with(
            "x if {\n every i, v in input.l1 {\n input.l2[i] == $\"<{v}>\"\n }\n}",
            &json!({"l1": ["a", "b"], "l2": ["<a>", "<b>"]}),
            false
        )
        .unwrap(),
        Some(json!(true))
    );
    // Sets in Rego's order (null, booleans, numbers, strings); strings quoted inside.
    assert_eq!(
        eval(r#"x := $"{[42, "a"]} {{"b", 13.37, true, null}} {set()} {{"k": {"v"}}}""#),
        json!(r#"[42, "a"] {null, true, 13.37, "b"} set() {"k": {"v"}}"#)
    );
    assert_eq!(
        eval_with(r#"x := $"{input.a} {input.b}""#, &json!({"b": 1}), false).unwrap(),
        Some(json!("<undefined> 1"))
    );
    // Raw and multi-line, nested, inside a comprehension.
    assert_eq!(
        eval("a := [\"p\", \"q\"]\nx := [s | some v in a; s := $`<{v}\n{$\"{v}{v}\"}>`]"),
        json!(["<p\npp>", "<q\nqq>"])
    );
}

#[test]
fn several_values_are_an_error_even_without_strict_errors() {
    for strict in [false, true] {
        match eval_with(r#"x := $"{input.a[_]}""#, &json!({"a": [1, 2]}), strict) {
            Err(PolicyError::Eval { message, .. }) => assert!(
                message.contains("template-strings must not produce multiple outputs"),
                "{message}"
            ),
            other => panic!("strict {strict}: {other:?}"),
        }
    }
    // One value met twice is one value.
    assert_eq!(
        eval_with(r#"x := $"{input.a[_]}""#, &json!({"a": [1, 1]}), false).unwrap(),
        Some(json!("1"))
    );
}

#[test]
fn malformed_templates_refuse_the_module_with_their_position() {
    for (module, expected) in [
        ("x := $\"{1}", "2:6: unterminated template string"),
        (
            "y := 1\nx := $\"a {} b\"",
            "3:10: empty template expression",
        ),
    ] {
        match compile(&format!("package t\n{module}\n"), false) {
            Err(PolicyError::Compile { message, .. }) => {
                assert!(message.contains(expected), "{module}: {message}");
            }
            other => panic!("{module}: {:?}", other.err()),
        }
    }
}

#[test]
fn lines_keep_their_numbers() {
    // A multi-line template before an error: the error's line is the source's.
    let err = compile("package t\nx := $`a\n{1}\nb`\ny := z\n", false)
        .err()
        .unwrap();
    let text = err.to_string();
    assert!(text.contains(":5:"), "{text}");
}

#[test]
fn templates_in_an_object_comprehension_head_read_its_body() {
    // Moved into the comprehension's body by the rewrite (regorus cannot schedule them in
    // the head).
    assert_eq!(
        eval("a := [\"foo\", \"bar\"]\nx := {$\"<{k}>\": $`<{v}>` | some k, v in a}"),
        json!({"<0>": "<foo>", "<1>": "<bar>"})
    );
    assert_eq!(
        eval("x := {k: $\"{v}!\" |\n  some k, v in {\"a\": 1}\n}\ny := 2"),
        json!({"a": "1!"})
    );
}

#[test]
fn templates_among_function_arguments_read_the_body() {
    // Compared at the end of each body by the rewrite, once the body has bound `x`.
    let module = "x := [f(\"foo bar\"), f(\"no bar\"), count([1 | f(\"x\")])]\nf($\"{y} {input.y}\") := 42 if {\n  y = \"foo\"\n} else := 7 if {\n  y := \"no\"\n}";
    assert_eq!(
        eval_with(module, &json!({"y": "bar"}), false).unwrap(),
        Some(json!([42, 7, 0]))
    );
}
