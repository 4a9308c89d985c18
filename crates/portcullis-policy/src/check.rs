//! Static checks of a policy set before it may serve, over regorus's parsed modules: the
//! compile errors OPA's compiler raises that regorus leaves to evaluation (where each
//! turns into a failed decision) or never raises (where the policy silently means
//! something else).
//!
//! - **Functions** ([`body`]): a call names a function of the policy set or a built-in
//!   regorus provides, with as many arguments as it takes (one more, the output, where
//!   the call is a whole statement); a constant argument has the type OPA declares.
//! - **Safety** ([`body`]): every variable is bound — by `:=`, `=`, `some`, `every`, a
//!   function argument or iteration (`x[i]`) — or names a rule, an import, `input` or
//!   `data`.
//! - **Rules** ([`rules`]): at most one `default` per rule and its value constant; one
//!   kind of rule per path; no rule or package under a rule's path (`a` and `a.b`); no
//!   rule where a data document is; no recursion.
//! - **Order** ([`body`]): a variable declared with `:=` is not used by an earlier
//!   statement of its body (OPA reorders `=`, never `:=`).
//! - **Types** ([`body`]): a variable declared with `:=` from a value of plain type
//!   (`x := 1`) is passed only where that type is accepted.
//!
//! Each error names its file, line and column and carries OPA's error code.

mod body;
mod builtins;
mod rules;

pub(crate) use builtins::builtin_arity;

use std::collections::{HashMap, HashSet};
use std::fmt;

use regorus::unstable::{Expr, Module, Rule, RuleHead, Span};
use serde_json::{Map, Value};

/// One problem the policy check found, located as OPA's compiler locates its errors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckError {
    /// The bundle holding the file.
    pub bundle: String,
    /// The policy file, by its path inside the bundle.
    pub file: String,
    /// The line, from 1.
    pub line: u32,
    /// The column, from 1.
    pub column: u32,
    /// OPA's error code: `rego_type_error` (unknown function, wrong arity or argument
    /// type, defaults, conflicting rules), `rego_unsafe_var_error`,
    /// `rego_recursion_error` or `rego_compile_error` (a rule where data is).
    pub code: &'static str,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for CheckError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}: {}",
            self.file, self.line, self.column, self.code, self.message
        )
    }
}

/// The error codes, as OPA names them.
const TYPE_ERROR: &str = "rego_type_error";
const UNSAFE_VAR: &str = "rego_unsafe_var_error";
const RECURSION: &str = "rego_recursion_error";
const COMPILE_ERROR: &str = "rego_compile_error";

/// The most errors reported at once (OPA's compiler stops at 10 too).
pub(crate) const MAX_ERRORS: usize = 10;

/// One parsed module to check and where it comes from.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Source<'a> {
    /// The bundle's name.
    pub(crate) bundle: &'a str,
    /// The file's path inside the bundle.
    pub(crate) file: &'a str,
    /// The module, as regorus parsed it.
    pub(crate) module: &'a Module,
}

/// Checks `modules` (every module of the set, each bundle's data in `data`) and returns
/// what is wrong, at most [`MAX_ERRORS`] problems, in file order; empty if nothing is.
pub(crate) fn check(modules: &[Source<'_>], data: &[&Map<String, Value>]) -> Vec<CheckError> {
    let context = Context::new(modules);
    let mut errors = Errors::default();
    let refs = body::check_rules(&context, &mut errors);
    rules::check_defaults(&context, &mut errors);
    rules::check_kinds(&context, &mut errors);
    rules::check_overlaps(&context, &mut errors);
    rules::check_data_conflicts(&context, data, &mut errors);
    rules::check_recursion(&context, &refs, &mut errors);
    errors.into_sorted()
}

/// The errors found so far.
#[derive(Debug, Default)]
struct Errors {
    found: Vec<(usize, CheckError)>,
}

impl Errors {
    /// Records a problem at `span` of module `module`.
    fn push(
        &mut self,
        context: &Context<'_>,
        module: usize,
        span: &Span,
        code: &'static str,
        message: String,
    ) {
        let Some(source) = context.modules.get(module) else {
            return;
        };
        self.found.push((
            module,
            CheckError {
                bundle: source.bundle.to_owned(),
                file: source.file.to_owned(),
                line: span.line,
                column: span.col,
                code,
                message,
            },
        ));
    }

    fn into_sorted(mut self) -> Vec<CheckError> {
        self.found
            .sort_by_key(|(module, e)| (*module, e.line, e.column));
        self.found.dedup_by(|a, b| a.1 == b.1);
        self.found
            .into_iter()
            .map(|(_, e)| e)
            .take(MAX_ERRORS)
            .collect()
    }
}

/// What kind of rule defines a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// `p := v`, `p if …`: one value.
    Complete,
    /// `p[k] := v`: an object built key by key.
    PartialObject,
    /// `p contains x`: a set.
    Set,
    /// `f(x) := v`.
    Function,
}

impl Kind {
    fn describe(self) -> &'static str {
        match self {
            Kind::Complete => "a complete rule",
            Kind::PartialObject => "a partial object rule",
            Kind::Set => "a partial set rule",
            Kind::Function => "a function",
        }
    }
}

/// One rule definition.
#[derive(Debug)]
struct RuleInfo<'a> {
    module: usize,
    rule: &'a Rule,
    /// Its path below `data`: the package, then the static part of its head.
    path: Vec<String>,
    kind: Kind,
    /// A `default` rule.
    default: bool,
    /// Its head names one path, known before evaluation (`a.b`, not `a[x]`): the rule
    /// owns everything under `path`.
    exact: bool,
}

/// What every check needs to know about the set: packages, imports, rules, functions.
#[derive(Debug)]
struct Context<'a> {
    modules: &'a [Source<'a>],
    /// Each module's package, below `data`.
    packages: Vec<Vec<String>>,
    /// Each module's imports: alias → the imported path, from its root (`data`, `input`).
    imports: Vec<HashMap<String, Vec<String>>>,
    /// Package → the first segment of every rule defined in it (what a bare name in the
    /// package may refer to).
    rule_names: HashMap<Vec<String>, HashSet<String>>,
    /// Function path below `data` → its number of arguments.
    functions: HashMap<Vec<String>, usize>,
    /// Every rule definition, in module order.
    rules: Vec<RuleInfo<'a>>,
}

impl<'a> Context<'a> {
    fn new(modules: &'a [Source<'a>]) -> Context<'a> {
        let mut context = Context {
            modules,
            packages: Vec::with_capacity(modules.len()),
            imports: Vec::with_capacity(modules.len()),
            rule_names: HashMap::new(),
            functions: HashMap::new(),
            rules: Vec::new(),
        };
        for (index, source) in modules.iter().enumerate() {
            let (root, steps) = chain(&source.module.package.refr);
            let mut package = Vec::new();
            if let Some(name) = var_name(root).filter(|name| *name != "data") {
                package.push(name.to_owned());
            }
            package.extend(static_prefix(&steps));
            context.imports.push(imports(source.module));
            for rule in &source.module.policy {
                let (refr, kind, default) = match rule.as_ref() {
                    Rule::Spec { head, .. } => match head {
                        RuleHead::Compr { refr, .. } => {
                            let (_, steps) = chain(refr);
                            let dynamic = steps.iter().any(|s| matches!(s, Step::Index(_)));
                            let kind = if dynamic {
                                Kind::PartialObject
                            } else {
                                Kind::Complete
                            };
                            (refr, kind, false)
                        }
                        RuleHead::Set { refr, .. } => (refr, Kind::Set, false),
                        RuleHead::Func { refr, .. } => (refr, Kind::Function, false),
                    },
                    Rule::Default { refr, args, .. } => {
                        let kind = if args.is_empty() {
                            Kind::Complete
                        } else {
                            Kind::Function
                        };
                        (refr, kind, true)
                    }
                };
                let (root, steps) = chain(refr);
                let Some(name) = var_name(root) else {
                    continue;
                };
                let exact = steps.iter().all(|step| matches!(step, Step::Field(_)));
                context
                    .rule_names
                    .entry(package.clone())
                    .or_default()
                    .insert(name.to_owned());
                let mut path = package.clone();
                path.push(name.to_owned());
                path.extend(static_prefix(&steps));
                let arguments = match rule.as_ref() {
                    Rule::Spec {
                        head: RuleHead::Func { args, .. },
                        ..
                    } => Some(args.len()),
                    Rule::Default { args, .. } if !args.is_empty() => Some(args.len()),
                    Rule::Spec { .. } | Rule::Default { .. } => None,
                };
                if let Some(arguments) = arguments {
                    context.functions.entry(path.clone()).or_insert(arguments);
                }
                context.rules.push(RuleInfo {
                    module: index,
                    rule: rule.as_ref(),
                    path,
                    kind,
                    default,
                    exact,
                });
            }
            context.packages.push(package);
        }
        context
    }

    /// Whether `name` is a rule of module `module`'s package.
    fn is_rule_name(&self, module: usize, name: &str) -> bool {
        self.packages
            .get(module)
            .and_then(|package| self.rule_names.get(package))
            .is_some_and(|names| names.contains(name))
    }

    /// What a name not bound locally means in module `module`, or `None` if nothing (an
    /// unsafe variable).
    fn global(&self, module: usize, name: &str) -> Option<Global> {
        match name {
            "data" => return Some(Global::Data(Vec::new())),
            "input" => return Some(Global::Input),
            _ => {}
        }
        if self.is_rule_name(module, name) {
            let mut path = self.packages.get(module).cloned().unwrap_or_default();
            path.push(name.to_owned());
            return Some(Global::Data(path));
        }
        let import = self.imports.get(module)?.get(name)?;
        match import.split_first() {
            Some((root, rest)) if root == "data" => Some(Global::Data(rest.to_vec())),
            _ => Some(Global::Input),
        }
    }
}

/// What a name that is not a local variable refers to.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Global {
    /// The document at this path below `data` (a rule, an imported document, `data`).
    Data(Vec<String>),
    /// `input`, or a part of it.
    Input,
}

/// A module's imports: alias → imported path from its root. `future.keywords` and
/// `rego.v1` imports name no document and are left out.
fn imports(module: &Module) -> HashMap<String, Vec<String>> {
    let mut aliases = HashMap::new();
    for import in &module.imports {
        let (root, steps) = chain(&import.refr);
        let Some(root) = var_name(root) else {
            continue;
        };
        if root != "data" && root != "input" {
            continue;
        }
        let mut path = vec![root.to_owned()];
        path.extend(static_prefix(&steps));
        let alias = match &import.r#as {
            Some(alias) => alias.text().to_owned(),
            None => match path.last() {
                Some(last) => last.clone(),
                None => continue,
            },
        };
        aliases.insert(alias, path);
    }
    aliases
}

/// One step of a reference: `.field` or `["field"]`, or `[expr]`.
#[derive(Debug)]
enum Step<'e> {
    Field(&'e str),
    Index(&'e Expr),
}

/// A reference split into its root expression (a variable, or a call, a literal …) and
/// its steps, in order.
fn chain(expr: &Expr) -> (&Expr, Vec<Step<'_>>) {
    let mut steps = Vec::new();
    let mut at = expr;
    loop {
        match at {
            Expr::RefDot { refr, field, .. } => {
                steps.push(Step::Field(field.0.text()));
                at = refr;
            }
            Expr::RefBrack { refr, index, .. } => {
                match index.as_ref() {
                    Expr::String {
                        value: regorus::Value::String(s),
                        ..
                    }
                    | Expr::RawString {
                        value: regorus::Value::String(s),
                        ..
                    } => steps.push(Step::Field(s)),
                    index => steps.push(Step::Index(index)),
                }
                at = refr;
            }
            _ => break,
        }
    }
    steps.reverse();
    (at, steps)
}

/// The fields before the first dynamic index.
fn static_prefix(steps: &[Step<'_>]) -> Vec<String> {
    steps
        .iter()
        .map_while(|step| match step {
            Step::Field(field) => Some((*field).to_owned()),
            Step::Index(_) => None,
        })
        .collect()
}

/// The name of a variable expression.
fn var_name(expr: &Expr) -> Option<&str> {
    match expr {
        Expr::Var { span, .. } => Some(span.text()),
        _ => None,
    }
}

/// `data.a.b` for a path below `data`.
fn data_path(path: &[String]) -> String {
    let mut text = String::from("data");
    for segment in path {
        text.push('.');
        text.push_str(segment);
    }
    text
}

#[cfg(test)]
mod tests;
