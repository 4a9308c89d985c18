//! `not { … }`, the negated body of a module that imports `rego.v2`: true when the body
//! has no solution. regorus cannot parse it; it becomes `{true | …} == set()`, a set
//! comprehension over the same statements (which sees the enclosing body's variables as
//! the negated body does) compared with the empty set. Only text moves within lines: line
//! numbers are kept.

/// Whether `source` imports `rego.v2` (a cheap look: an import written on one line).
fn imports_rego_v2(source: &str) -> bool {
    source.lines().any(|line| {
        let mut words = line.split_whitespace();
        words.next() == Some("import") && words.next() == Some("rego.v2")
    })
}

/// Whether `b` may be part of a Rego name.
fn name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// `source` with every negated body rewritten, if it imports `rego.v2` and has one.
pub(super) fn rewrite_not_bodies(source: &str) -> Option<String> {
    if !source.contains("not") || !imports_rego_v2(source) {
        return None;
    }
    let bytes = source.as_bytes();
    let mut out = String::with_capacity(source.len() + 32);
    // For each open `{`: whether it opened a negated body.
    let mut open: Vec<bool> = Vec::new();
    let mut changed = false;
    let mut copied = 0;
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'#' => {
                i = bytes
                    .get(i..)?
                    .iter()
                    .position(|&c| c == b'\n')
                    .map_or(bytes.len(), |p| i + p);
            }
            b'"' => {
                i += 1;
                while let Some(&c) = bytes.get(i) {
                    i += if c == b'\\' { 2 } else { 1 };
                    if c == b'"' || c == b'\n' {
                        break;
                    }
                }
            }
            b'`' => {
                i += 1 + bytes
                    .get(i + 1..)?
                    .iter()
                    .position(|&c| c == b'`')
                    .map_or(bytes.len(), |p| p + 1);
            }
            b'{' => {
                open.push(false);
                i += 1;
            }
            b'}' => {
                if open.pop() == Some(true) {
                    out.push_str(source.get(copied..=i)?);
                    out.push_str(" == set()");
                    copied = i + 1;
                }
                i += 1;
            }
            b'n' if source.get(i..)?.starts_with("not")
                && (i == 0 || !bytes.get(i - 1).copied().is_some_and(name_byte))
                && !bytes.get(i + 3).copied().is_some_and(name_byte) =>
            {
                let after = i + 3;
                let gap = bytes
                    .get(after..)?
                    .iter()
                    .take_while(|c| matches!(c, b' ' | b'\t'))
                    .count();
                if bytes.get(after + gap) == Some(&b'{') {
                    out.push_str(source.get(copied..i)?);
                    out.push_str("{true |");
                    open.push(true);
                    changed = true;
                    i = after + gap + 1;
                    copied = i;
                } else {
                    i = after;
                }
            }
            _ => i += 1,
        }
    }
    out.push_str(source.get(copied..)?);
    changed.then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negated_bodies_become_empty_comprehensions() {
        let module = "package p\nimport rego.v2\np if {\n    not { input.a; input.b }\n}\n";
        assert_eq!(
            rewrite_not_bodies(module).unwrap(),
            "package p\nimport rego.v2\np if {\n    {true | input.a; input.b } == set()\n}\n"
        );
        // Nested, over lines, with braces in strings and comments left alone.
        let module = "package p\nimport rego.v2\np if {\n  not {\n    x := {\"}\": 1} # }\n    not {x.a}\n  }\n}\n";
        assert_eq!(
            rewrite_not_bodies(module).unwrap(),
            "package p\nimport rego.v2\np if {\n  {true |\n    x := {\"}\": 1} # }\n    {true |x.a} == set()\n  } == set()\n}\n"
        );
        // Without rego.v2, or without a negated body: unchanged.
        assert_eq!(rewrite_not_bodies("package p\np if not {1}\n"), None);
        assert_eq!(
            rewrite_not_bodies("package p\nimport rego.v2\np if not input.knot\n"),
            None
        );
    }
}
