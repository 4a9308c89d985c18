//! A guard in front of the Rego parser: regorus's parser takes time exponential in how
//! deeply brackets nest (`[[[[…]]]]` 20 deep took half a minute; 16 unclosed ones three
//! seconds), so a policy file could stall activation — found by the `check_policy` fuzz
//! target. Sources nesting deeper than [`MAX_NESTING`] are refused before parsing.

/// How deeply `(`, `[` and `{` may nest in a policy file. Real policies stay far below it.
pub const MAX_NESTING: usize = 12;

/// Where `source` first nests deeper than [`MAX_NESTING`], as (line, column), from 1.
/// Brackets inside strings (`"…"`, with escapes), raw strings (`` `…` ``) and comments
/// (`#` to the end of the line) do not count.
pub(crate) fn too_deep(source: &str) -> Option<(usize, usize)> {
    let (mut depth, mut line, mut column) = (0usize, 1usize, 0usize);
    let mut chars = source.chars();
    while let Some(ch) = chars.next() {
        column += 1;
        match ch {
            '\n' => {
                line += 1;
                column = 0;
            }
            '#' => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        line += 1;
                        column = 0;
                        break;
                    }
                }
            }
            '"' => {
                let mut escaped = false;
                for c in chars.by_ref() {
                    column += 1;
                    match c {
                        '\n' => {
                            line += 1;
                            column = 0;
                        }
                        '\\' if !escaped => {
                            escaped = true;
                            continue;
                        }
                        '"' if !escaped => break,
                        _ => {}
                    }
                    escaped = false;
                }
            }
            '`' => {
                for c in chars.by_ref() {
                    column += 1;
                    if c == '\n' {
                        line += 1;
                        column = 0;
                    } else if c == '`' {
                        break;
                    }
                }
            }
            '(' | '[' | '{' => {
                depth += 1;
                if depth > MAX_NESTING {
                    return Some((line, column));
                }
            }
            ')' | ']' | '}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deep_nesting_is_found_where_it_starts() {
        let deep = format!("package p\nx := {}1{}\n", "[".repeat(13), "]".repeat(13));
        assert_eq!(too_deep(&deep), Some((2, 18)));
        let fine = format!("package p\nx := {}1{}\n", "[".repeat(12), "]".repeat(12));
        assert_eq!(too_deep(&fine), None);
        let unclosed = format!(
            "package p\nallow if {{ input.use{}r == 1 }}",
            "[".repeat(19)
        );
        assert!(too_deep(&unclosed).is_some());
    }

    #[test]
    fn brackets_in_strings_and_comments_do_not_count() {
        let text = format!(
            "package p\n# {0}\nx := \"{0}\\\"{0}\"\ny := `{0}`\n",
            "[".repeat(40)
        );
        assert_eq!(too_deep(&text), None);
    }
}
