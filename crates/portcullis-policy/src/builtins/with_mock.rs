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
    }
}
