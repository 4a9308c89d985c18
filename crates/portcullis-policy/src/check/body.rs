//! Checks inside rules — calls, constant argument types, unsafe variables — and what each
//! rule reads (for the recursion check).
//!
//! A rule's variables are gathered in two passes over each query: first every variable
//! the query binds anywhere (`:=`, `=`, `some`, iteration `x[i]`, a call's output
//! argument), then every use is checked against those, the enclosing queries' and the
//! function's arguments. A query's order does not matter here (OPA reorders too); a
//! variable bound nowhere in reach is unsafe, as OPA reports it.

use std::collections::{HashMap, HashSet};

use regorus::unstable::{ArithOp, AssignOp, BinOp, Expr, Literal, Query, Rule, RuleHead, Span};

use super::builtins::{self, ANY, ARRAY, BOOLEAN, Builtins, NULL, NUMBER, OBJECT, SET, STRING, Ty};
use super::{
    COMPILE_ERROR, Context, Errors, Global, Step, TYPE_ERROR, UNSAFE_VAR, chain, data_path,
};

/// How deeply expressions may nest before the check gives up on a rule (regorus's parser
/// stops at 32).
const MAX_DEPTH: usize = 128;

/// A path below `data` a rule reads: `None` for a segment only known at evaluation
/// (`data.a[x].b` is `a`, any, `b`).
pub(super) type Read = Vec<Option<String>>;

/// Checks every rule of `context` and returns what each reads, by the rule's index in
/// `context.rules`.
pub(super) fn check_rules(context: &Context<'_>, errors: &mut Errors) -> Vec<Vec<Read>> {
    let mut builtins = Builtins::default();
    let mut reads = Vec::with_capacity(context.rules.len());
    for info in &context.rules {
        let mut walker = Walker {
            context,
            module: info.module,
            builtins: &mut builtins,
            errors: &mut *errors,
            reads: Vec::new(),
            reported: HashSet::new(),
            depth: 0,
            types: HashMap::new(),
        };
        walker.rule(info.rule);
        reads.push(walker.reads);
    }
    reads
}

/// The variables bound in a query, and those of the queries around it.
#[derive(Debug)]
struct Scope<'p> {
    vars: HashSet<String>,
    parent: Option<&'p Scope<'p>>,
}

impl Scope<'_> {
    fn has(&self, name: &str) -> bool {
        self.vars.contains(name) || self.parent.is_some_and(|p| p.has(name))
    }
}

/// Whether a pattern's variable is bound even when it names a rule or import.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Bind {
    /// `:=`, `some`, `every`, function arguments: always a new local variable.
    Always,
    /// `=` and iteration: a name that refers to something is compared, not bound.
    UnlessGlobal,
}

/// What a call refers to.
#[derive(Debug)]
enum Callee {
    /// A function of the policy set, at this path below `data`, taking this many arguments.
    User(Vec<String>, usize),
    /// A built-in, taking this many arguments.
    Builtin(usize),
    /// `print`, which takes any number.
    Print,
    /// A function of the set called through an import alias (`lib.f` after
    /// `import data.lib`): regorus does not resolve those.
    ThroughImport(Vec<String>),
    /// Nothing.
    Unknown,
}

/// Walks one rule.
struct Walker<'c, 'e> {
    context: &'c Context<'c>,
    module: usize,
    builtins: &'e mut Builtins,
    errors: &'e mut Errors,
    /// The paths below `data` this rule reads.
    reads: Vec<Read>,
    /// Unsafe variables already reported for this rule.
    reported: HashSet<String>,
    depth: usize,
    /// Local variables whose type is plain from the `:=` that declares them
    /// (`x := 1`), as OPA's type checker infers it.
    types: HashMap<String, Ty>,
}

impl Walker<'_, '_> {
    fn error(&mut self, span: &Span, code: &'static str, message: String) {
        self.errors
            .push(self.context, self.module, span, code, message);
    }

    fn rule(&mut self, rule: &Rule) {
        let (head, bodies) = match rule {
            Rule::Default { value, .. } => {
                if let Some(span) = non_constant(value) {
                    self.error(
                        span,
                        TYPE_ERROR,
                        format!(
                            "a default value must be a constant (a scalar, or an array, set or object of them), not `{}`",
                            span.text()
                        ),
                    );
                }
                return;
            }
            Rule::Spec { head, bodies, .. } => (head, bodies),
        };
        let (refr, key, value, args) = match head {
            RuleHead::Compr { refr, assign, .. } => (refr, None, assign.as_ref(), &[][..]),
            RuleHead::Set { refr, key, .. } => (refr, key.as_ref(), None, &[][..]),
            RuleHead::Func {
                refr, args, assign, ..
            } => (refr, None, assign.as_ref(), args.as_slice()),
        };
        let mut arguments = HashSet::new();
        for arg in args {
            self.pattern(arg, Bind::Always, &mut arguments);
        }
        let outer = Scope {
            vars: arguments,
            parent: None,
        };
        let (_, steps) = chain(refr);
        let indexes: Vec<&Expr> = steps
            .iter()
            .filter_map(|step| match step {
                Step::Index(index) => Some(*index),
                Step::Field(_) => None,
            })
            .collect();
        let head_parts = |walker: &mut Self, value: Option<&Expr>, scope: &Scope<'_>| {
            for index in &indexes {
                walker.expr(index, scope, false);
            }
            if let Some(key) = key {
                walker.expr(key, scope, false);
            }
            if let Some(value) = value {
                walker.expr(value, scope, false);
            }
        };
        if bodies.is_empty() {
            head_parts(self, value.map(|a| a.value.as_ref()), &outer);
        }
        for (i, body) in bodies.iter().enumerate() {
            let mut vars = HashSet::new();
            self.bind_query(&body.query, &mut vars);
            let scope = Scope {
                vars,
                parent: Some(&outer),
            };
            self.query(&body.query, &scope);
            // The head's value belongs to the first body; an `else` has its own.
            let value = match (&body.assign, i) {
                (Some(assign), _) => Some(assign.value.as_ref()),
                (None, 0) => value.map(|a| a.value.as_ref()),
                (None, _) => None,
            };
            head_parts(self, value, &scope);
        }
    }

    // ---- first pass: what a query binds --------------------------------------------

    fn bind_query(&mut self, query: &Query, vars: &mut HashSet<String>) {
        for stmt in &query.stmts {
            match &stmt.literal {
                Literal::SomeVars { vars: names, .. } => {
                    vars.extend(names.iter().map(|n| n.text().to_owned()));
                }
                Literal::SomeIn {
                    key,
                    value,
                    collection,
                    ..
                } => {
                    if let Some(key) = key {
                        self.pattern(key, Bind::Always, vars);
                    }
                    self.pattern(value, Bind::Always, vars);
                    self.iterations(collection, vars);
                }
                Literal::Expr { expr, .. } => self.bind_expr(expr, vars),
                Literal::NotExpr { .. } | Literal::Every { .. } => {}
            }
        }
    }

    fn bind_expr(&mut self, expr: &Expr, vars: &mut HashSet<String>) {
        match expr {
            Expr::AssignExpr {
                op: AssignOp::ColEq,
                lhs,
                rhs,
                ..
            } => {
                self.pattern(lhs, Bind::Always, vars);
                self.iterations(rhs, vars);
            }
            Expr::AssignExpr {
                op: AssignOp::Eq,
                lhs,
                rhs,
                ..
            } => {
                for side in [lhs, rhs] {
                    self.pattern(side, Bind::UnlessGlobal, vars);
                    self.iterations(side, vars);
                }
            }
            Expr::Call { fcn, params, .. } => {
                if let Some(last) = params.last()
                    && self.output_argument(fcn, params.len())
                {
                    self.pattern(last, Bind::UnlessGlobal, vars);
                }
                for param in params {
                    self.iterations(param, vars);
                }
            }
            _ => self.iterations(expr, vars),
        }
    }

    /// The variables of a pattern: a variable, or an array or object of patterns.
    fn pattern(&self, expr: &Expr, bind: Bind, vars: &mut HashSet<String>) {
        match expr {
            Expr::Var { span, .. } => self.bind(span.text(), bind, vars),
            Expr::Array { items, .. } => {
                for item in items {
                    self.pattern(item, bind, vars);
                }
            }
            Expr::Object { fields, .. } => {
                for (_, _, value) in fields {
                    self.pattern(value, bind, vars);
                }
            }
            _ => {}
        }
    }

    fn bind(&self, name: &str, bind: Bind, vars: &mut HashSet<String>) {
        if name != "_" && (bind == Bind::Always || self.context.global(self.module, name).is_none())
        {
            vars.insert(name.to_owned());
        }
    }

    /// Variables that iterate: `i` in `x[i]`, anywhere outside comprehensions.
    fn iterations(&self, expr: &Expr, vars: &mut HashSet<String>) {
        if let Expr::RefBrack { index, .. } = expr {
            self.pattern(index, Bind::UnlessGlobal, vars);
        }
        for child in children(expr) {
            self.iterations(child, vars);
        }
    }

    /// Whether a call with `given` arguments passes its output as the last.
    fn output_argument(&mut self, fcn: &Expr, given: usize) -> bool {
        let Ok(name) = regorus::utils::get_path_string(fcn, None) else {
            return false;
        };
        match self.callee(&name) {
            Callee::User(_, arity) | Callee::Builtin(arity) => given == arity + 1,
            Callee::Print | Callee::ThroughImport(_) | Callee::Unknown => false,
        }
    }

    // ---- second pass: uses, calls, types --------------------------------------------

    fn query(&mut self, query: &Query, scope: &Scope<'_>) {
        self.referenced_above(query, scope);
        let outer = self.types.clone();
        // A name bound in this query is a new variable here, whatever it was outside.
        self.types.retain(|name, _| !scope.vars.contains(name));
        for stmt in &query.stmts {
            if let Literal::Expr { expr, .. } = &stmt.literal
                && let Expr::AssignExpr {
                    op: AssignOp::ColEq,
                    lhs,
                    rhs,
                    ..
                } = expr.as_ref()
                && let Expr::Var { span, .. } = lhs.as_ref()
                && let Some(ty) = self.type_of(rhs)
            {
                self.types.insert(span.text().to_owned(), ty);
            }
        }
        self.query_statements(query, scope);
        self.types = outer;
    }

    /// `x := …` after a statement that uses `x`: OPA refuses the body ("var x referenced
    /// above") instead of reordering it as it does for `=`, and regorus would evaluate the
    /// earlier use with `x` unbound.
    fn referenced_above(&mut self, query: &Query, scope: &Scope<'_>) {
        for (n, stmt) in query.stmts.iter().enumerate() {
            let Literal::Expr { expr, .. } = &stmt.literal else {
                continue;
            };
            let Expr::AssignExpr {
                op: AssignOp::ColEq,
                lhs,
                ..
            } = expr.as_ref()
            else {
                continue;
            };
            let mut declared = HashSet::new();
            self.pattern(lhs, Bind::Always, &mut declared);
            for name in declared {
                if scope.parent.is_some_and(|p| p.has(&name)) {
                    continue;
                }
                let used = query.stmts.iter().take(n).find_map(|earlier| {
                    statement_exprs(&earlier.literal)
                        .into_iter()
                        .find_map(|expr| var_use(expr, &name))
                });
                if let Some(span) = used {
                    self.error(span, COMPILE_ERROR, format!("var {name} referenced above"));
                }
            }
        }
    }

    /// The type of `expr` if it is plain from its form or from the `:=` that declared
    /// the variable it is.
    fn type_of(&self, expr: &Expr) -> Option<Ty> {
        match expr {
            Expr::Var { span, .. } => self.types.get(span.text()).copied(),
            other => const_type(other),
        }
    }

    fn query_statements(&mut self, query: &Query, scope: &Scope<'_>) {
        for stmt in &query.stmts {
            match &stmt.literal {
                Literal::SomeVars { .. } => {}
                Literal::SomeIn {
                    key,
                    value,
                    collection,
                    ..
                } => {
                    self.expr(collection, scope, false);
                    if let Some(key) = key {
                        self.expr(key, scope, false);
                    }
                    self.expr(value, scope, false);
                }
                Literal::Expr { expr, .. } | Literal::NotExpr { expr, .. } => {
                    self.expr(expr, scope, true);
                }
                Literal::Every {
                    key,
                    value,
                    domain,
                    query,
                    ..
                } => {
                    self.expr(domain, scope, false);
                    let mut vars = HashSet::new();
                    if let Some(key) = key {
                        vars.insert(key.text().to_owned());
                    }
                    vars.insert(value.text().to_owned());
                    self.bind_query(query, &mut vars);
                    let inner = Scope {
                        vars,
                        parent: Some(scope),
                    };
                    self.query(query, &inner);
                }
            }
            for with in &stmt.with_mods {
                // `with f as g`: g may name a built-in to mock with.
                let mock = regorus::utils::get_path_string(&with.r#as, None)
                    .is_ok_and(|name| self.builtins.arity(&name).is_some());
                if !mock {
                    self.expr(&with.r#as, scope, false);
                }
            }
        }
    }

    /// Checks an expression; `statement` when it is a whole statement of a query (where a
    /// call may pass its output as an extra argument).
    fn expr(&mut self, expr: &Expr, scope: &Scope<'_>, statement: bool) {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            self.error(
                expr.span(),
                COMPILE_ERROR,
                format!("expression nested more than {MAX_DEPTH} levels deep"),
            );
        } else {
            self.expr_inner(expr, scope, statement);
        }
        self.depth -= 1;
    }

    fn expr_inner(&mut self, expr: &Expr, scope: &Scope<'_>, statement: bool) {
        match expr {
            Expr::Var { span, .. } => self.name(span, Vec::new(), scope),
            Expr::RefDot { .. } | Expr::RefBrack { .. } => {
                let (root, steps) = chain(expr);
                for step in &steps {
                    if let Step::Index(index) = step {
                        self.expr(index, scope, false);
                    }
                }
                match root {
                    Expr::Var { span, .. } => {
                        let fields = steps
                            .iter()
                            .map(|step| match step {
                                Step::Field(field) => Some((*field).to_owned()),
                                Step::Index(_) => None,
                            })
                            .collect();
                        self.name(span, fields, scope);
                    }
                    other => self.expr(other, scope, false),
                }
            }
            Expr::ArrayCompr { term, query, .. } | Expr::SetCompr { term, query, .. } => {
                let inner = self.comprehension_scope(query, scope);
                self.query(query, &inner);
                self.expr(term, &inner, false);
            }
            Expr::ObjectCompr {
                key, value, query, ..
            } => {
                let inner = self.comprehension_scope(query, scope);
                self.query(query, &inner);
                self.expr(key, &inner, false);
                self.expr(value, &inner, false);
            }
            Expr::Call { fcn, params, .. } => self.call(fcn, params.as_slice(), scope, statement),
            Expr::ArithExpr { op, lhs, rhs, .. } => {
                let (name, allowed) = match op {
                    ArithOp::Add => ("plus", NUMBER),
                    ArithOp::Sub => ("minus", NUMBER | SET),
                    ArithOp::Mul => ("mul", NUMBER),
                    ArithOp::Div => ("div", NUMBER),
                    ArithOp::Mod => ("rem", NUMBER),
                };
                self.operands(name, allowed, lhs, rhs);
                self.expr(lhs, scope, false);
                self.expr(rhs, scope, false);
            }
            Expr::BinExpr { op, lhs, rhs, .. } => {
                let name = match op {
                    BinOp::Union => "or",
                    BinOp::Intersection => "and",
                };
                self.operands(name, SET, lhs, rhs);
                self.expr(lhs, scope, false);
                self.expr(rhs, scope, false);
            }
            Expr::UnaryExpr { expr: inner, .. } => {
                if let Some(have) = const_type(inner).filter(|t| t & NUMBER == 0) {
                    self.error(
                        inner.span(),
                        TYPE_ERROR,
                        format!(
                            "minus: operand must be a number, not {}",
                            builtins::type_name(have)
                        ),
                    );
                }
                self.expr(inner, scope, false);
            }
            other => {
                for child in children(other) {
                    self.expr(child, scope, false);
                }
            }
        }
    }

    fn comprehension_scope<'s>(&mut self, query: &Query, scope: &'s Scope<'s>) -> Scope<'s> {
        let mut vars = HashSet::new();
        self.bind_query(query, &mut vars);
        Scope {
            vars,
            parent: Some(scope),
        }
    }

    /// A name at the root of a reference (followed by `fields`): a local variable, a rule,
    /// an import, `input`, `data` — or an unsafe variable.
    fn name(&mut self, span: &Span, fields: Read, scope: &Scope<'_>) {
        let name = span.text();
        if name == "_" || scope.has(name) {
            return;
        }
        match self.context.global(self.module, name) {
            Some(Global::Data(path)) => {
                let mut read: Read = path.into_iter().map(Some).collect();
                read.extend(fields);
                self.reads.push(read);
            }
            Some(Global::Input) => {}
            None => {
                if self.reported.insert(name.to_owned()) {
                    self.error(span, UNSAFE_VAR, format!("var {name} is unsafe"));
                }
            }
        }
    }

    /// Constant operands of an operator must have one of the `allowed` types; `minus`
    /// takes two numbers or two sets.
    fn operands(&mut self, name: &str, allowed: Ty, lhs: &Expr, rhs: &Expr) {
        let types = [self.type_of(lhs), self.type_of(rhs)];
        for (n, (side, have)) in [lhs, rhs].into_iter().zip(types).enumerate() {
            if let Some(have) = have.filter(|t| t & allowed == 0) {
                self.error(
                    side.span(),
                    TYPE_ERROR,
                    format!(
                        "{name}: operand {} must be {}, not {}",
                        n + 1,
                        plural(allowed),
                        builtins::type_name(have)
                    ),
                );
                return;
            }
        }
        if let [Some(a), Some(b)] = types
            && a != b
        {
            self.error(
                rhs.span(),
                TYPE_ERROR,
                format!(
                    "{name}: operands must be both numbers or both sets, not {} and {}",
                    builtins::type_name(a),
                    builtins::type_name(b)
                ),
            );
        }
    }

    fn call(
        &mut self,
        fcn: &Expr,
        params: &[regorus::unstable::Ref<Expr>],
        scope: &Scope<'_>,
        statement: bool,
    ) {
        match regorus::utils::get_path_string(fcn, None) {
            Err(_) => self.error(
                fcn.span(),
                TYPE_ERROR,
                format!("`{}` is not a function name", fcn.span().text()),
            ),
            Ok(name) => match self.callee(&name) {
                Callee::Print => {}
                Callee::User(path, arity) => {
                    self.reads.push(path.into_iter().map(Some).collect());
                    self.arity(fcn.span(), &name, arity, params.len(), statement);
                }
                Callee::Builtin(arity) => {
                    self.arity(fcn.span(), &name, arity, params.len(), statement);
                    self.argument_types(&name, params);
                }
                Callee::ThroughImport(path) => self.error(
                    fcn.span(),
                    TYPE_ERROR,
                    format!(
                        "function {name} is called through an import, which this engine (regorus) does not resolve: call {}(…)",
                        data_path(&path)
                    ),
                ),
                Callee::Unknown => {
                    self.error(fcn.span(), TYPE_ERROR, format!("undefined function {name}"));
                }
            },
        }
        for param in params {
            self.expr(param, scope, false);
        }
    }

    /// What the function `name` (as written in the call) is, as regorus resolves it.
    fn callee(&mut self, name: &str) -> Callee {
        if name == "print" {
            return Callee::Print;
        }
        let segments: Vec<String> = name.split('.').map(str::to_owned).collect();
        let functions = &self.context.functions;
        if let Some(("data", rest)) = segments.split_first().map(|(f, r)| (f.as_str(), r)) {
            return match functions.get(rest) {
                Some(arity) => Callee::User(rest.to_vec(), *arity),
                None => Callee::Unknown,
            };
        }
        let mut local = self
            .context
            .packages
            .get(self.module)
            .cloned()
            .unwrap_or_default();
        local.extend(segments.iter().cloned());
        if let Some(arity) = functions.get(&local) {
            return Callee::User(local, *arity);
        }
        if let Some(arity) = self.builtins.arity(name) {
            return Callee::Builtin(arity);
        }
        let imported = segments.split_first().and_then(|(first, rest)| {
            let import = self.context.imports.get(self.module)?.get(first)?;
            let (root, path) = import.split_first()?;
            let mut target = path.to_vec();
            target.extend(rest.iter().cloned());
            (root == "data" && functions.contains_key(&target)).then_some(target)
        });
        match imported {
            Some(target) => Callee::ThroughImport(target),
            None => Callee::Unknown,
        }
    }

    fn arity(&mut self, span: &Span, name: &str, arity: usize, given: usize, statement: bool) {
        if given == arity || (statement && given == arity + 1) {
            return;
        }
        let how = if given > arity { "many" } else { "few" };
        self.error(
            span,
            TYPE_ERROR,
            format!("{name}: too {how} arguments ({given} given, it takes {arity})"),
        );
    }

    fn argument_types(&mut self, name: &str, params: &[regorus::unstable::Ref<Expr>]) {
        let Some(signature) = builtins::signature(name) else {
            return;
        };
        for (n, (param, want)) in params.iter().zip(signature).enumerate() {
            if let Some(have) = self.type_of(param).filter(|t| t & want == 0) {
                self.error(
                    param.span(),
                    TYPE_ERROR,
                    format!(
                        "{name}: argument {} must be {}, not {}",
                        n + 1,
                        article(*want),
                        builtins::type_name(have)
                    ),
                );
            }
        }
    }
}

/// `a string or an array`, for a message.
fn article(ty: Ty) -> String {
    if ty == ANY {
        return "anything".to_owned();
    }
    builtins::describe(ty)
        .split(" or ")
        .map(|name| match name.as_bytes().first() {
            Some(b'a' | b'o') => format!("an {name}"),
            _ => format!("a {name}"),
        })
        .collect::<Vec<_>>()
        .join(" or ")
}

/// `numbers or sets`, for a message.
fn plural(ty: Ty) -> String {
    builtins::describe(ty)
        .split(" or ")
        .map(|name| format!("{name}s"))
        .collect::<Vec<_>>()
        .join(" or ")
}

/// The type of an expression whose type is plain from its form (a literal, arithmetic on
/// numbers), if it is.
fn const_type(expr: &Expr) -> Option<Ty> {
    match expr {
        Expr::Number { .. } => Some(NUMBER),
        Expr::String { .. } | Expr::RawString { .. } => Some(STRING),
        Expr::Bool { .. } => Some(BOOLEAN),
        Expr::Null { .. } => Some(NULL),
        Expr::Array { .. } | Expr::ArrayCompr { .. } => Some(ARRAY),
        Expr::Set { .. } | Expr::SetCompr { .. } => Some(SET),
        Expr::Object { .. } | Expr::ObjectCompr { .. } => Some(OBJECT),
        Expr::UnaryExpr { expr, .. } => const_type(expr).filter(|t| *t == NUMBER),
        // A string literal too long for regorus's lexer, hoisted by the source rewrite.
        Expr::Call { fcn, .. }
            if regorus::utils::get_path_string(fcn, None)
                .is_ok_and(|name| crate::builtins::is_hoisted_long_string(&name)) =>
        {
            Some(STRING)
        }
        Expr::ArithExpr { op, lhs, rhs, .. } => match (const_type(lhs), const_type(rhs)) {
            (Some(NUMBER), Some(NUMBER)) => Some(NUMBER),
            (Some(SET), Some(SET)) if *op == ArithOp::Sub => Some(SET),
            _ => None,
        },
        _ => None,
    }
}

/// The first part of a default value that is not constant, as regorus judges it when the
/// rule is evaluated (scalars, comprehensions, and arrays, sets and objects of them).
fn non_constant(expr: &Expr) -> Option<&Span> {
    match expr {
        Expr::String { .. }
        | Expr::RawString { .. }
        | Expr::Number { .. }
        | Expr::Bool { .. }
        | Expr::Null { .. }
        | Expr::ArrayCompr { .. }
        | Expr::SetCompr { .. }
        | Expr::ObjectCompr { .. } => None,
        Expr::UnaryExpr { expr, .. } if matches!(expr.as_ref(), Expr::Number { .. }) => None,
        Expr::Array { items, .. } | Expr::Set { items, .. } => {
            items.iter().find_map(|item| non_constant(item))
        }
        Expr::Object { fields, .. } => fields
            .iter()
            .find_map(|(_, key, value)| non_constant(key).or_else(|| non_constant(value))),
        other => Some(other.span()),
    }
}

/// The expressions of a statement (an `every`'s body left out).
fn statement_exprs(literal: &Literal) -> Vec<&Expr> {
    match literal {
        Literal::SomeVars { .. } => Vec::new(),
        Literal::SomeIn {
            key,
            value,
            collection,
            ..
        } => key
            .iter()
            .map(AsRef::as_ref)
            .chain([value.as_ref(), collection.as_ref()])
            .collect(),
        Literal::Expr { expr, .. } | Literal::NotExpr { expr, .. } => vec![expr],
        Literal::Every { domain, .. } => vec![domain],
    }
}

/// Where `expr` uses the variable `name` (outside comprehensions, which have scopes of
/// their own), if it does.
fn var_use<'e>(expr: &'e Expr, name: &str) -> Option<&'e Span> {
    if let Expr::Var { span, .. } = expr
        && span.text() == name
    {
        return Some(span);
    }
    if let Expr::RefDot { refr, .. } = expr {
        return var_use(refr, name);
    }
    children(expr)
        .into_iter()
        .find_map(|child| var_use(child, name))
}

/// The sub-expressions of `expr`, comprehensions' insides and a call's function name
/// left out.
fn children(expr: &Expr) -> Vec<&Expr> {
    match expr {
        Expr::Array { items, .. } | Expr::Set { items, .. } => {
            items.iter().map(AsRef::as_ref).collect()
        }
        Expr::Object { fields, .. } => fields
            .iter()
            .flat_map(|(_, key, value)| [key.as_ref(), value.as_ref()])
            .collect(),
        Expr::Call { params, .. } => params.iter().map(AsRef::as_ref).collect(),
        Expr::UnaryExpr { expr, .. } => vec![expr],
        Expr::RefDot { refr, .. } => vec![refr],
        Expr::RefBrack { refr, index, .. } => vec![refr, index],
        Expr::BinExpr { lhs, rhs, .. }
        | Expr::BoolExpr { lhs, rhs, .. }
        | Expr::ArithExpr { lhs, rhs, .. }
        | Expr::AssignExpr { lhs, rhs, .. } => vec![lhs, rhs],
        Expr::Membership {
            key,
            value,
            collection,
            ..
        } => key
            .iter()
            .map(AsRef::as_ref)
            .chain([value.as_ref(), collection.as_ref()])
            .collect(),
        _ => Vec::new(),
    }
}
