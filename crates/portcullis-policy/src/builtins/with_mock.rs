//! `with f as g` where `g` names a built-in (`with count as object.union_n`,
//! `with time.now_ns as opa.runtime`, `with f as count`): OPA replaces the function or
//! built-in `f` by the built-in `g`. regorus replaces by a value or by a function of the
//! policy, but its compiler reads a built-in's name after `as` as an unbound variable and
//! refuses the module. The rewrite names, instead, a wrapper function added at the end of
//! the module that calls the built-in with the same arguments (for a built-in without
//! arguments, a constant rule holding its result, which regorus then uses as the
//! replacement value), so the replacement does what OPA's does.

use std::collections::{BTreeMap, HashSet};

use regorus::unstable::{Module, Rule, WithModifier};

/// The prefix of the wrappers' names, which no policy's own name should start with.
const PREFIX: &str = "__portcullis_with_";

/// The built-in `with` names after `as`, with its arity, when it needs a wrapper: the
/// target is a function (not under `input` or `data`) and the replacement is a built-in
/// that no rule, function or import of the module shadows.
pub(super) fn builtin_replacement(
    with: &WithModifier,
    shadowed: &HashSet<String>,
) -> Option<(String, usize)> {
    let target = regorus::utils::get_path_string(&with.refr, None).ok()?;
    let target_root = target.split('.').next()?;
    if matches!(target_root, "input" | "data") {
        return None;
    }
    let name = regorus::utils::get_path_string(&with.r#as, None).ok()?;
    if shadowed.contains(name.split('.').next()?) {
        return None;
    }
    let arity = crate::check::builtin_arity(&name)?;
    Some((name, arity))
}

/// The wrapper's name for built-in `name` (`object.union_n` →
/// `__portcullis_with_object__union_n`).
pub(super) fn wrapper_name(name: &str) -> String {
    format!("{PREFIX}{}", name.replace('.', "__"))
}

/// The names a module defines or imports (first segment): a `with … as` naming one of
/// them means the policy's own, not a built-in.
pub(super) fn shadowing_names(module: &Module) -> HashSet<String> {
    let mut names = HashSet::new();
    for rule in &module.policy {
        let refr = match rule.as_ref() {
            Rule::Spec { head, .. } => match head {
                regorus::unstable::RuleHead::Compr { refr, .. }
                | regorus::unstable::RuleHead::Set { refr, .. }
                | regorus::unstable::RuleHead::Func { refr, .. } => refr,
            },
            Rule::Default { refr, .. } => refr,
        };
        if let Ok(path) = regorus::utils::get_path_string(refr, None)
            && let Some(first) = path.split('.').next()
        {
            names.insert(first.to_owned());
        }
    }
    for import in &module.imports {
        match &import.r#as {
            Some(alias) => {
                names.insert(alias.text().to_owned());
            }
            None => {
                if let Ok(path) = regorus::utils::get_path_string(&import.refr, None)
                    && let Some(last) = path.rsplit('.').next()
                {
                    names.insert(last.to_owned());
                }
            }
        }
    }
    names
}

/// The definitions of `wrappers` (built-in name → arity) that `source` lacks, each on a
/// line of its own, to append to it.
pub(super) fn definitions(source: &str, wrappers: &BTreeMap<String, usize>) -> String {
    definitions_named(source, wrappers, wrapper_name)
}

/// The prefix of the wrappers of mocked extensions.
pub(super) const MOCKABLE_PREFIX: &str = "__portcullis_mockable_";

/// The wrapper's name for the extension `name` that some module replaces with `with`
/// (`io.jwt.decode_verify` → `__portcullis_mockable_io__jwt__decode_verify`).
pub(super) fn mockable_name(name: &str) -> String {
    format!("{MOCKABLE_PREFIX}{}", name.replace('.', "__"))
}

/// The definitions of the mockable wrappers of extensions (name → arity) that `source`
/// lacks.
pub(super) fn mockable_definitions(source: &str, wrappers: &BTreeMap<String, usize>) -> String {
    definitions_named(source, wrappers, mockable_name)
}

/// The extensions this crate adds (regorus lacks them) that a source replaces with `with`
/// (`with io.jwt.decode_verify as mock`). regorus's `with` takes only its own built-ins and
/// the policy's functions: in every module of the set, calls of these are rewritten to
/// call a wrapper function of the module instead, and `with` replaces the wrapper.
pub(crate) fn mocked_extensions<'a>(sources: impl Iterator<Item = &'a str>) -> Vec<&'static str> {
    let mut mocked: Vec<&'static str> = Vec::new();
    for source in sources {
        for extension in super::EXTENSIONS {
            let name = extension.name;
            if extension.native || name.starts_with("internal.") || mocked.contains(&name) {
                continue;
            }
            let replaced = source.match_indices(name).any(|(at, _)| {
                let before = source.get(..at).unwrap_or_default().trim_end();
                let after = source.get(at + name.len()..).unwrap_or_default();
                before.ends_with("with")
                    && after.starts_with([' ', '\t', '\n', '\r'])
                    && after.trim_start().starts_with("as")
            });
            if replaced {
                mocked.push(name);
            }
        }
    }
    mocked
}

fn definitions_named(
    source: &str,
    wrappers: &BTreeMap<String, usize>,
    wrapper_name: fn(&str) -> String,
) -> String {
    let mut text = String::new();
    for (name, arity) in wrappers {
        let wrapper = wrapper_name(name);
        if source.contains(&format!("\n{wrapper}")) {
            continue;
        }
        let params: Vec<String> = (0..*arity).map(|i| format!("{PREFIX}a{i}")).collect();
        let params = params.join(", ");
        if *arity == 0 {
            text.push_str(&format!("\n{wrapper} := {name}()"));
        } else {
            text.push_str(&format!("\n{wrapper}({params}) := {name}({params})"));
        }
    }
    if !text.is_empty() {
        text.push('\n');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrappers_call_the_builtin_with_the_same_arguments() {
        let mut wrappers = BTreeMap::new();
        wrappers.insert("object.union_n".to_owned(), 1);
        wrappers.insert("opa.runtime".to_owned(), 0);
        let text = definitions("package p\n", &wrappers);
        assert_eq!(
            text,
            "\n__portcullis_with_object__union_n(__portcullis_with_a0) := object.union_n(__portcullis_with_a0)\n__portcullis_with_opa__runtime := opa.runtime()\n"
        );
        // Already there (an earlier pass): not added twice.
        assert_eq!(definitions(&format!("package p\n{text}"), &wrappers), "");
        let mut mocked = BTreeMap::new();
        mocked.insert("io.jwt.decode".to_owned(), 1);
        assert_eq!(
            mockable_definitions("package p\n", &mocked),
            "\n__portcullis_mockable_io__jwt__decode(__portcullis_with_a0) := io.jwt.decode(__portcullis_with_a0)\n"
        );
    }

    #[test]
    fn extensions_named_after_with_are_found() {
        let sources = [
            "package a\nx := io.jwt.decode(t)",
            "package b\ntest_x if a.x with io.jwt.decode\n  as m with count as f",
        ];
        assert_eq!(
            mocked_extensions(sources.into_iter()),
            vec!["io.jwt.decode"]
        );
        assert!(mocked_extensions(["package a\nx := io.jwt.decode(t)"].into_iter()).is_empty());
    }
}
