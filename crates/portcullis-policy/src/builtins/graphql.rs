//! OPA's `graphql.*` built-ins: GraphQL queries and schemas parsed and validated by
//! apollo-compiler, returned as the JSON objects OPA returns (the AST of vektah/gqlparser,
//! the library OPA uses, with Go's field names).
//!
//! - `graphql.parse_query(query)` and `graphql.parse_schema(schema)`: the AST of a string;
//!   a syntax error is a built-in error (`<message> in GraphQL string at location L:C`).
//! - `graphql.is_valid(query, schema)`: whether the query is valid against the schema;
//!   false (never an error) for anything that does not parse or validate, or that is
//!   neither a string nor an object.
//! - `graphql.schema_is_valid(schema)`: whether the schema is valid, false otherwise.
//! - `graphql.parse(query, schema)`: `[query_ast, schema_ast]` of a valid query, an error
//!   otherwise.
//! - `graphql.parse_and_verify(query, schema)`: `[true, query_ast, schema_ast]`, or
//!   `[false, {}, {}]`.
//!
//! Queries and schemas may be strings or AST objects (from the built-ins above, or written
//! by hand). An AST object is read as OPA reads it (Go's `encoding/json` into gqlparser's
//! types): keys match case-insensitively (exactly for operations, fragments and
//! selections), a missing or null key is its zero value (`""`, `false`, empty), a key of
//! the wrong type makes the document invalid, unknown keys are ignored, and every entry of
//! a `SelectionSet` is read as a field (gqlparser's decoder tries a field first, which
//! always succeeds): an inline fragment or fragment spread object is a field there too. The
//! object is then printed as GraphQL and parsed and validated as a string would be.
//!
//! ASTs are pruned as OPA prunes them: no positions, and no key whose value is null or an
//! empty array or object (empty strings and `false` stay). Values carry gqlparser's `Kind`
//! numbers (0 variable, 1 int, 2 float, 3 string, 4 block string, 5 boolean, 6 null, 7 enum,
//! 8 list, 9 object) and their `Raw` text; a field's `Alias` is its name when it has none.
//!
//! Validation follows gqlparser where apollo-compiler is stricter: a schema needs no
//! `Query` type (only a query needs one) and extensions of undefined types define them.
//! Messages are apollo-compiler's, not gqlparser's.
//!
//! A GraphQL string (or the text an AST object prints to) above [`MAX_SOURCE_BYTES`], or
//! nested deeper than [`MAX_DEPTH`], is refused: the AST of such a document would be far
//! larger still.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use apollo_compiler::ast;
use apollo_compiler::diagnostic::Diagnostic;
use apollo_compiler::parser::Parser;
use apollo_compiler::validation::{DiagnosticData, DiagnosticList, Valid};
use apollo_compiler::{Name, Node, Schema};
use regorus::Value;

use super::{Args, BuiltinError};

/// The longest GraphQL document read: 256 KiB (its AST is several times larger).
pub(crate) const MAX_SOURCE_BYTES: usize = 256 << 10;

/// The deepest nesting of selections, types or values read.
pub(crate) const MAX_DEPTH: usize = 128;

/// The most tokens the parser reads (a bound on its work beside the size cap).
const MAX_TOKENS: usize = 100_000;

// ---------------------------------------------------------------------------------------
// The model: gqlparser's AST, field for field (positions and validation links left out).
// ---------------------------------------------------------------------------------------

#[derive(Debug, Default, Clone)]
struct QueryDoc {
    operations: Vec<Operation>,
    fragments: Vec<Fragment>,
}

#[derive(Debug, Default, Clone)]
struct Operation {
    operation: String,
    name: String,
    variables: Vec<VariableDef>,
    directives: Vec<Directive>,
    selections: Vec<Selection>,
}

#[derive(Debug, Default, Clone)]
struct VariableDef {
    variable: String,
    ty: Option<Type>,
    default: Option<GqlValue>,
    directives: Vec<Directive>,
    used: bool,
}

#[derive(Debug, Default, Clone)]
struct Fragment {
    name: String,
    type_condition: String,
    directives: Vec<Directive>,
    selections: Vec<Selection>,
}

#[derive(Debug, Clone)]
enum Selection {
    Field(Field),
    Spread {
        name: String,
        directives: Vec<Directive>,
    },
    Inline {
        type_condition: String,
        directives: Vec<Directive>,
        selections: Vec<Selection>,
    },
}

#[derive(Debug, Default, Clone)]
struct Field {
    alias: String,
    name: String,
    arguments: Vec<Argument>,
    directives: Vec<Directive>,
    selections: Vec<Selection>,
}

#[derive(Debug, Default, Clone)]
struct Argument {
    name: String,
    value: Option<GqlValue>,
}

#[derive(Debug, Default, Clone)]
struct Directive {
    name: String,
    arguments: Vec<Argument>,
    location: String,
}

#[derive(Debug, Default, Clone)]
struct Type {
    named: String,
    elem: Option<Box<Type>>,
    non_null: bool,
}

/// gqlparser's value kinds.
const VARIABLE: i64 = 0;
const INT: i64 = 1;
const FLOAT: i64 = 2;
const STRING: i64 = 3;
const BLOCK: i64 = 4;
const BOOLEAN: i64 = 5;
const NULL: i64 = 6;
const ENUM: i64 = 7;
const LIST: i64 = 8;
const OBJECT: i64 = 9;

#[derive(Debug, Default, Clone)]
struct GqlValue {
    raw: String,
    children: Vec<(String, Option<GqlValue>)>,
    kind: i64,
}

#[derive(Debug, Default, Clone)]
struct SchemaDoc {
    schema: Vec<SchemaDef>,
    schema_extension: Vec<SchemaDef>,
    directives: Vec<DirectiveDef>,
    definitions: Vec<Definition>,
    extensions: Vec<Definition>,
}

#[derive(Debug, Default, Clone)]
struct SchemaDef {
    description: String,
    directives: Vec<Directive>,
    operation_types: Vec<(String, String)>,
}

#[derive(Debug, Default, Clone)]
struct DirectiveDef {
    description: String,
    name: String,
    arguments: Vec<FieldDef>,
    locations: Vec<String>,
    repeatable: bool,
}

#[derive(Debug, Default, Clone)]
struct Definition {
    kind: String,
    description: String,
    name: String,
    directives: Vec<Directive>,
    interfaces: Vec<String>,
    fields: Vec<FieldDef>,
    types: Vec<String>,
    enum_values: Vec<EnumValueDef>,
    built_in: bool,
}

/// A field definition, an argument definition (no `arguments`) or an input field
/// definition (a `default`).
#[derive(Debug, Default, Clone)]
struct FieldDef {
    description: String,
    name: String,
    arguments: Vec<FieldDef>,
    default: Option<GqlValue>,
    ty: Option<Type>,
    directives: Vec<Directive>,
}

#[derive(Debug, Default, Clone)]
struct EnumValueDef {
    description: String,
    name: String,
    directives: Vec<Directive>,
}

/// Why a document was refused: a message (OPA's errors are plain messages too).
#[derive(Debug)]
struct Bad(String);

type Res<T> = Result<T, Bad>;

fn bad<T>(message: impl Into<String>) -> Res<T> {
    Err(Bad(message.into()))
}

// ---------------------------------------------------------------------------------------
// Parsing: apollo-parser's AST into the model.
// ---------------------------------------------------------------------------------------

/// The first diagnostic of `errors` as `<message> <context> at location L:C`.
fn first_error(errors: &DiagnosticList, context: &str) -> Bad {
    errors.iter().next().map_or_else(
        || Bad(format!("invalid {context}")),
        |d| describe(&d, context),
    )
}

/// `diagnostic` as `<message> <context> at location L:C`: graphql-js's wording where
/// apollo-compiler has it (gqlparser's is graphql-js's too), without its closing period
/// (OPA trims it).
fn describe(diagnostic: &Diagnostic<'_, DiagnosticData>, context: &str) -> Bad {
    let message = diagnostic
        .error
        .unstable_compat_message()
        .unwrap_or_else(|| diagnostic.error.to_string());
    let message = message.trim_end().trim_end_matches('.');
    match diagnostic.line_column_range() {
        Some(range) => Bad(format!(
            "{message} {context} at location {}:{}",
            range.start.line, range.start.column
        )),
        None => Bad(format!("{message} {context}")),
    }
}

/// `text` parsed as a GraphQL document (syntax only), within the caps.
fn parse_document(text: &str, name: &str) -> Res<ast::Document> {
    if text.len() > MAX_SOURCE_BYTES {
        return bad(format!(
            "the GraphQL document is {} bytes, above the cap of {MAX_SOURCE_BYTES}",
            text.len()
        ));
    }
    if is_blank(text) {
        // apollo-parser reports an empty document; gqlparser reads it as no definitions.
        return Ok(ast::Document::new());
    }
    Parser::new()
        .recursion_limit(MAX_DEPTH)
        .token_limit(MAX_TOKENS)
        .parse_ast(text, name)
        .map_err(|e| first_error(&e.errors, "in GraphQL string"))
}

/// Whether `text` holds nothing but GraphQL's ignored tokens (white space, line ends,
/// commas, a byte order mark, comments).
fn is_blank(text: &str) -> bool {
    let mut comment = false;
    text.chars().all(|c| match c {
        '\n' | '\r' => {
            comment = false;
            true
        }
        '#' => {
            comment = true;
            true
        }
        ' ' | '\t' | ',' | '\u{feff}' => true,
        _ => comment,
    })
}

/// Reads apollo's AST of one source text into the model (the text tells block strings).
struct FromAst<'a> {
    text: &'a str,
}

impl FromAst<'_> {
    fn query(&self, document: &ast::Document) -> Res<QueryDoc> {
        let mut doc = QueryDoc::default();
        for definition in &document.definitions {
            match definition {
                ast::Definition::OperationDefinition(op) => doc.operations.push(Operation {
                    operation: op.operation_type.name().to_owned(),
                    name: op.name.as_ref().map(|n| n.to_string()).unwrap_or_default(),
                    variables: op
                        .variables
                        .iter()
                        .map(|v| VariableDef {
                            variable: v.name.to_string(),
                            ty: Some(self.ty(&v.ty)),
                            default: v.default_value.as_ref().map(|d| self.value(d)),
                            directives: self.directives(&v.directives),
                            used: false,
                        })
                        .collect(),
                    directives: self.directives(&op.directives),
                    selections: self.selections(&op.selection_set),
                }),
                ast::Definition::FragmentDefinition(f) => doc.fragments.push(Fragment {
                    name: f.name.to_string(),
                    type_condition: f.type_condition.to_string(),
                    directives: self.directives(&f.directives),
                    selections: self.selections(&f.selection_set),
                }),
                other => return Err(self.misplaced(other, "a type system definition")),
            }
        }
        Ok(doc)
    }

    fn misplaced(&self, definition: &ast::Definition, what: &str) -> Bad {
        let at = definition
            .location()
            .and_then(|span| line_column(self.text, span.offset()));
        match at {
            Some((line, column)) => Bad(format!(
                "unexpected {what} in GraphQL string at location {line}:{column}"
            )),
            None => Bad(format!("unexpected {what} in GraphQL string")),
        }
    }

    fn selections(&self, set: &[ast::Selection]) -> Vec<Selection> {
        set.iter()
            .map(|s| match s {
                ast::Selection::Field(f) => Selection::Field(Field {
                    alias: f.alias.as_ref().unwrap_or(&f.name).to_string(),
                    name: f.name.to_string(),
                    arguments: self.arguments(&f.arguments),
                    directives: self.directives(&f.directives),
                    selections: self.selections(&f.selection_set),
                }),
                ast::Selection::FragmentSpread(f) => Selection::Spread {
                    name: f.fragment_name.to_string(),
                    directives: self.directives(&f.directives),
                },
                ast::Selection::InlineFragment(f) => Selection::Inline {
                    type_condition: f
                        .type_condition
                        .as_ref()
                        .map(|n| n.to_string())
                        .unwrap_or_default(),
                    directives: self.directives(&f.directives),
                    selections: self.selections(&f.selection_set),
                },
            })
            .collect()
    }

    fn arguments(&self, arguments: &[Node<ast::Argument>]) -> Vec<Argument> {
        arguments
            .iter()
            .map(|a| Argument {
                name: a.name.to_string(),
                value: Some(self.value(&a.value)),
            })
            .collect()
    }

    fn directives(&self, directives: &ast::DirectiveList) -> Vec<Directive> {
        directives
            .iter()
            .map(|d| Directive {
                name: d.name.to_string(),
                arguments: self.arguments(&d.arguments),
                location: String::new(),
            })
            .collect()
    }

    fn ty(&self, ty: &ast::Type) -> Type {
        match ty {
            ast::Type::Named(n) | ast::Type::NonNullNamed(n) => Type {
                named: n.to_string(),
                elem: None,
                non_null: ty.is_non_null(),
            },
            ast::Type::List(t) | ast::Type::NonNullList(t) => Type {
                named: String::new(),
                elem: Some(Box::new(self.ty(t))),
                non_null: ty.is_non_null(),
            },
        }
    }

    fn value(&self, value: &Node<ast::Value>) -> GqlValue {
        let leaf = |kind: i64, raw: &str| GqlValue {
            raw: raw.to_owned(),
            children: Vec::new(),
            kind,
        };
        match value.as_ref() {
            ast::Value::Null => leaf(NULL, "null"),
            ast::Value::Enum(n) => leaf(ENUM, n.as_str()),
            ast::Value::Variable(n) => leaf(VARIABLE, n.as_str()),
            ast::Value::String(s) => {
                let block = value
                    .location()
                    .and_then(|span| self.text.get(span.offset()..))
                    .is_some_and(|rest| rest.starts_with("\"\"\""));
                leaf(if block { BLOCK } else { STRING }, s)
            }
            ast::Value::Float(f) => leaf(FLOAT, f.as_str()),
            ast::Value::Int(i) => leaf(INT, i.as_str()),
            ast::Value::Boolean(b) => leaf(BOOLEAN, if *b { "true" } else { "false" }),
            ast::Value::List(items) => GqlValue {
                raw: String::new(),
                children: items
                    .iter()
                    .map(|v| (String::new(), Some(self.value(v))))
                    .collect(),
                kind: LIST,
            },
            ast::Value::Object(fields) => GqlValue {
                raw: String::new(),
                children: fields
                    .iter()
                    .map(|(n, v)| (n.to_string(), Some(self.value(v))))
                    .collect(),
                kind: OBJECT,
            },
        }
    }

    fn schema(&self, document: &ast::Document) -> Res<SchemaDoc> {
        use ast::Definition as D;
        let mut doc = SchemaDoc::default();
        for definition in &document.definitions {
            match definition {
                D::OperationDefinition(_) | D::FragmentDefinition(_) => {
                    return Err(self.misplaced(definition, "an executable definition"));
                }
                D::SchemaDefinition(s) => doc.schema.push(SchemaDef {
                    description: text(s.description.as_ref()),
                    directives: self.directives(&s.directives),
                    operation_types: root_operations(&s.root_operations),
                }),
                D::SchemaExtension(s) => doc.schema_extension.push(SchemaDef {
                    description: String::new(),
                    directives: self.directives(&s.directives),
                    operation_types: root_operations(&s.root_operations),
                }),
                D::DirectiveDefinition(d) => doc.directives.push(DirectiveDef {
                    description: text(d.description.as_ref()),
                    name: d.name.to_string(),
                    arguments: self.input_values(&d.arguments),
                    locations: d.locations.iter().map(|l| l.name().to_owned()).collect(),
                    repeatable: d.repeatable,
                }),
                D::ScalarTypeDefinition(t) => doc.definitions.push(Definition {
                    description: text(t.description.as_ref()),
                    ..self.definition("SCALAR", &t.name, &t.directives)
                }),
                D::ObjectTypeDefinition(t) => doc.definitions.push(Definition {
                    description: text(t.description.as_ref()),
                    interfaces: names(&t.implements_interfaces),
                    fields: self.fields(&t.fields),
                    ..self.definition("OBJECT", &t.name, &t.directives)
                }),
                D::InterfaceTypeDefinition(t) => doc.definitions.push(Definition {
                    description: text(t.description.as_ref()),
                    interfaces: names(&t.implements_interfaces),
                    fields: self.fields(&t.fields),
                    ..self.definition("INTERFACE", &t.name, &t.directives)
                }),
                D::UnionTypeDefinition(t) => doc.definitions.push(Definition {
                    description: text(t.description.as_ref()),
                    types: names(&t.members),
                    ..self.definition("UNION", &t.name, &t.directives)
                }),
                D::EnumTypeDefinition(t) => doc.definitions.push(Definition {
                    description: text(t.description.as_ref()),
                    enum_values: self.enum_values(&t.values),
                    ..self.definition("ENUM", &t.name, &t.directives)
                }),
                D::InputObjectTypeDefinition(t) => doc.definitions.push(Definition {
                    description: text(t.description.as_ref()),
                    fields: self.input_values(&t.fields),
                    ..self.definition("INPUT_OBJECT", &t.name, &t.directives)
                }),
                D::ScalarTypeExtension(t) => {
                    doc.extensions
                        .push(self.definition("SCALAR", &t.name, &t.directives))
                }
                D::ObjectTypeExtension(t) => doc.extensions.push(Definition {
                    interfaces: names(&t.implements_interfaces),
                    fields: self.fields(&t.fields),
                    ..self.definition("OBJECT", &t.name, &t.directives)
                }),
                D::InterfaceTypeExtension(t) => doc.extensions.push(Definition {
                    interfaces: names(&t.implements_interfaces),
                    fields: self.fields(&t.fields),
                    ..self.definition("INTERFACE", &t.name, &t.directives)
                }),
                D::UnionTypeExtension(t) => doc.extensions.push(Definition {
                    types: names(&t.members),
                    ..self.definition("UNION", &t.name, &t.directives)
                }),
                D::EnumTypeExtension(t) => doc.extensions.push(Definition {
                    enum_values: self.enum_values(&t.values),
                    ..self.definition("ENUM", &t.name, &t.directives)
                }),
                D::InputObjectTypeExtension(t) => doc.extensions.push(Definition {
                    fields: self.input_values(&t.fields),
                    ..self.definition("INPUT_OBJECT", &t.name, &t.directives)
                }),
            }
        }
        Ok(doc)
    }

    fn definition(&self, kind: &str, name: &Name, directives: &ast::DirectiveList) -> Definition {
        Definition {
            kind: kind.to_owned(),
            name: name.to_string(),
            directives: self.directives(directives),
            ..Definition::default()
        }
    }

    fn fields(&self, fields: &[Node<ast::FieldDefinition>]) -> Vec<FieldDef> {
        fields
            .iter()
            .map(|f| FieldDef {
                description: text(f.description.as_ref()),
                name: f.name.to_string(),
                arguments: self.input_values(&f.arguments),
                default: None,
                ty: Some(self.ty(&f.ty)),
                directives: self.directives(&f.directives),
            })
            .collect()
    }

    fn input_values(&self, values: &[Node<ast::InputValueDefinition>]) -> Vec<FieldDef> {
        values
            .iter()
            .map(|v| FieldDef {
                description: text(v.description.as_ref()),
                name: v.name.to_string(),
                arguments: Vec::new(),
                default: v.default_value.as_ref().map(|d| self.value(d)),
                ty: Some(self.ty(&v.ty)),
                directives: self.directives(&v.directives),
            })
            .collect()
    }

    fn enum_values(&self, values: &[Node<ast::EnumValueDefinition>]) -> Vec<EnumValueDef> {
        values
            .iter()
            .map(|v| EnumValueDef {
                description: text(v.description.as_ref()),
                name: v.value.to_string(),
                directives: self.directives(&v.directives),
            })
            .collect()
    }
}

fn text(description: Option<&Node<str>>) -> String {
    description.map(|d| d.to_string()).unwrap_or_default()
}

fn names(names: &[Name]) -> Vec<String> {
    names.iter().map(|n| n.to_string()).collect()
}

fn root_operations(roots: &[Node<(ast::OperationType, ast::NamedType)>]) -> Vec<(String, String)> {
    roots
        .iter()
        .map(|r| (r.0.name().to_owned(), r.1.to_string()))
        .collect()
}

/// The 1-based line and column (in characters) of byte `offset` of `text`.
fn line_column(text: &str, offset: usize) -> Option<(usize, usize)> {
    let before = text.get(..offset)?;
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    Some((line, column))
}

// ---------------------------------------------------------------------------------------
// The model as OPA's JSON (pruned).
// ---------------------------------------------------------------------------------------

fn object(entries: Vec<(&str, Value)>) -> Value {
    let map: BTreeMap<Value, Value> = entries
        .into_iter()
        .map(|(k, v)| (Value::from(k), v))
        .collect();
    Value::from(map)
}

fn list<T>(items: &[T], f: impl Fn(&T) -> Value) -> Value {
    Value::from(items.iter().map(f).collect::<Vec<_>>())
}

fn strings(items: &[String]) -> Value {
    list(items, |s| Value::from(s.as_str()))
}

fn opt<T>(item: Option<&T>, f: impl Fn(&T) -> Value) -> Value {
    item.map_or(Value::Null, f)
}

fn s(text: &str) -> Value {
    Value::from(text)
}

impl QueryDoc {
    fn to_value(&self) -> Value {
        prune(&object(vec![
            ("Operations", list(&self.operations, Operation::to_value)),
            ("Fragments", list(&self.fragments, Fragment::to_value)),
        ]))
    }
}

impl Operation {
    fn to_value(&self) -> Value {
        object(vec![
            ("Operation", s(&self.operation)),
            ("Name", s(&self.name)),
            (
                "VariableDefinitions",
                list(&self.variables, VariableDef::to_value),
            ),
            ("Directives", list(&self.directives, Directive::to_value)),
            ("SelectionSet", list(&self.selections, Selection::to_value)),
        ])
    }
}

impl VariableDef {
    fn to_value(&self) -> Value {
        object(vec![
            ("Variable", s(&self.variable)),
            ("Type", opt(self.ty.as_ref(), Type::to_value)),
            (
                "DefaultValue",
                opt(self.default.as_ref(), GqlValue::to_value),
            ),
            ("Directives", list(&self.directives, Directive::to_value)),
            ("Used", Value::from(self.used)),
        ])
    }
}

impl Fragment {
    fn to_value(&self) -> Value {
        object(vec![
            ("Name", s(&self.name)),
            ("TypeCondition", s(&self.type_condition)),
            ("Directives", list(&self.directives, Directive::to_value)),
            ("SelectionSet", list(&self.selections, Selection::to_value)),
        ])
    }
}

impl Selection {
    fn to_value(&self) -> Value {
        match self {
            Selection::Field(f) => object(vec![
                ("Alias", s(&f.alias)),
                ("Name", s(&f.name)),
                ("Arguments", list(&f.arguments, Argument::to_value)),
                ("Directives", list(&f.directives, Directive::to_value)),
                ("SelectionSet", list(&f.selections, Selection::to_value)),
            ]),
            Selection::Spread { name, directives } => object(vec![
                ("Name", s(name)),
                ("Directives", list(directives, Directive::to_value)),
            ]),
            Selection::Inline {
                type_condition,
                directives,
                selections,
            } => object(vec![
                ("TypeCondition", s(type_condition)),
                ("Directives", list(directives, Directive::to_value)),
                ("SelectionSet", list(selections, Selection::to_value)),
            ]),
        }
    }
}

impl Argument {
    fn to_value(&self) -> Value {
        object(vec![
            ("Name", s(&self.name)),
            ("Value", opt(self.value.as_ref(), GqlValue::to_value)),
        ])
    }
}

impl Directive {
    fn to_value(&self) -> Value {
        object(vec![
            ("Name", s(&self.name)),
            ("Arguments", list(&self.arguments, Argument::to_value)),
            ("Location", s(&self.location)),
        ])
    }
}

impl Type {
    fn to_value(&self) -> Value {
        object(vec![
            ("NamedType", s(&self.named)),
            ("Elem", opt(self.elem.as_deref(), Type::to_value)),
            ("NonNull", Value::from(self.non_null)),
        ])
    }
}

impl GqlValue {
    fn to_value(&self) -> Value {
        object(vec![
            ("Raw", s(&self.raw)),
            (
                "Children",
                list(&self.children, |(name, value)| {
                    object(vec![
                        ("Name", s(name)),
                        ("Value", opt(value.as_ref(), GqlValue::to_value)),
                    ])
                }),
            ),
            ("Kind", Value::from(self.kind)),
        ])
    }
}

impl SchemaDoc {
    fn to_value(&self) -> Value {
        prune(&object(vec![
            ("Schema", list(&self.schema, SchemaDef::to_value)),
            (
                "SchemaExtension",
                list(&self.schema_extension, SchemaDef::to_value),
            ),
            ("Directives", list(&self.directives, DirectiveDef::to_value)),
            ("Definitions", list(&self.definitions, Definition::to_value)),
            ("Extensions", list(&self.extensions, Definition::to_value)),
        ]))
    }
}

impl SchemaDef {
    fn to_value(&self) -> Value {
        object(vec![
            ("Description", s(&self.description)),
            ("Directives", list(&self.directives, Directive::to_value)),
            (
                "OperationTypes",
                list(&self.operation_types, |(op, ty)| {
                    object(vec![("Operation", s(op)), ("Type", s(ty))])
                }),
            ),
        ])
    }
}

impl DirectiveDef {
    fn to_value(&self) -> Value {
        object(vec![
            ("Description", s(&self.description)),
            ("Name", s(&self.name)),
            ("Arguments", list(&self.arguments, FieldDef::to_value)),
            ("Locations", strings(&self.locations)),
            ("IsRepeatable", Value::from(self.repeatable)),
        ])
    }
}

impl Definition {
    fn to_value(&self) -> Value {
        object(vec![
            ("Kind", s(&self.kind)),
            ("Description", s(&self.description)),
            ("Name", s(&self.name)),
            ("Directives", list(&self.directives, Directive::to_value)),
            ("Interfaces", strings(&self.interfaces)),
            ("Fields", list(&self.fields, FieldDef::to_value)),
            ("Types", strings(&self.types)),
            (
                "EnumValues",
                list(&self.enum_values, EnumValueDef::to_value),
            ),
            ("BuiltIn", Value::from(self.built_in)),
        ])
    }
}

impl FieldDef {
    fn to_value(&self) -> Value {
        object(vec![
            ("Description", s(&self.description)),
            ("Name", s(&self.name)),
            ("Arguments", list(&self.arguments, FieldDef::to_value)),
            (
                "DefaultValue",
                opt(self.default.as_ref(), GqlValue::to_value),
            ),
            ("Type", opt(self.ty.as_ref(), Type::to_value)),
            ("Directives", list(&self.directives, Directive::to_value)),
        ])
    }
}

impl EnumValueDef {
    fn to_value(&self) -> Value {
        object(vec![
            ("Description", s(&self.description)),
            ("Name", s(&self.name)),
            ("Directives", list(&self.directives, Directive::to_value)),
        ])
    }
}

/// `value` without null entries, `Position` keys, or arrays and objects that are empty
/// (once pruned themselves), as OPA prunes gqlparser's ASTs.
fn prune(value: &Value) -> Value {
    let keep = |v: &Value| -> Option<Value> {
        match v {
            Value::Null => None,
            Value::Array(_) | Value::Object(_) => {
                let pruned = prune(v);
                let empty = match &pruned {
                    Value::Array(a) => a.is_empty(),
                    Value::Object(o) => o.is_empty(),
                    _ => false,
                };
                (!empty).then_some(pruned)
            }
            other => Some(other.clone()),
        }
    };
    match value {
        Value::Array(items) => Value::from(items.iter().filter_map(keep).collect::<Vec<_>>()),
        Value::Object(map) => Value::from(
            map.iter()
                .filter(|(k, _)| k.as_string().map_or(true, |k| k.as_ref() != "Position"))
                .filter_map(|(k, v)| keep(v).map(|v| (k.clone(), v)))
                .collect::<BTreeMap<_, _>>(),
        ),
        other => other.clone(),
    }
}

// ---------------------------------------------------------------------------------------
// Reading AST objects as Go's encoding/json reads them into gqlparser's types.
// ---------------------------------------------------------------------------------------

/// One JSON object of an AST: `exact` for gqlparser's own decoders (operations,
/// fragments, selections), which match keys exactly; Go's matches them case-insensitively.
#[derive(Clone, Copy)]
struct Obj<'a> {
    map: &'a BTreeMap<Value, Value>,
    exact: bool,
}

fn obj<'a>(value: &'a Value, exact: bool, what: &str) -> Res<Obj<'a>> {
    match value {
        Value::Object(map) => Ok(Obj { map, exact }),
        _ => bad(format!("{what} must be an object")),
    }
}

impl<'a> Obj<'a> {
    /// The value at `key` (exactly, else case-insensitively unless `exact`); null is absent.
    fn get(&self, key: &str) -> Option<&'a Value> {
        let found = self.map.get(&Value::from(key)).or_else(|| {
            if self.exact {
                return None;
            }
            self.map
                .iter()
                .find(|(k, _)| match k {
                    Value::String(k) => k.eq_ignore_ascii_case(key),
                    _ => false,
                })
                .map(|(_, v)| v)
        });
        found.filter(|v| !matches!(v, Value::Null))
    }

    fn string(&self, key: &str) -> Res<String> {
        match self.get(key) {
            None => Ok(String::new()),
            Some(Value::String(s)) => Ok(s.to_string()),
            Some(_) => bad(format!("{key} must be a string")),
        }
    }

    fn boolean(&self, key: &str) -> Res<bool> {
        match self.get(key) {
            None => Ok(false),
            Some(Value::Bool(b)) => Ok(*b),
            Some(_) => bad(format!("{key} must be a boolean")),
        }
    }

    fn items(&self, key: &str) -> Res<Vec<&'a Value>> {
        match self.get(key) {
            None => Ok(Vec::new()),
            Some(Value::Array(items)) => Ok(items.iter().collect()),
            Some(Value::Set(items)) => Ok(items.iter().collect()),
            Some(_) => bad(format!("{key} must be an array")),
        }
    }

    /// The entries of array `key`, each an object read by `f`.
    fn each<T>(&self, key: &str, f: impl Fn(Obj<'a>) -> Res<T>) -> Res<Vec<T>> {
        self.items(key)?
            .into_iter()
            .map(|item| f(obj(item, false, key)?))
            .collect()
    }

    fn strings(&self, key: &str) -> Res<Vec<String>> {
        self.items(key)?
            .into_iter()
            .map(|item| match item {
                Value::String(s) => Ok(s.to_string()),
                _ => bad(format!("{key} must hold strings")),
            })
            .collect()
    }

    fn child(&self, key: &str) -> Res<Option<Obj<'a>>> {
        self.get(key).map(|v| obj(v, false, key)).transpose()
    }

    fn directives(&self) -> Res<Vec<Directive>> {
        self.each("Directives", |d| {
            Ok(Directive {
                name: d.string("Name")?,
                arguments: d.arguments(0)?,
                location: d.string("Location")?,
            })
        })
    }

    fn arguments(&self, depth: usize) -> Res<Vec<Argument>> {
        self.each("Arguments", |a| {
            Ok(Argument {
                name: a.string("Name")?,
                value: a.value("Value", depth)?,
            })
        })
    }

    fn value(&self, key: &str, depth: usize) -> Res<Option<GqlValue>> {
        let Some(v) = self.child(key)? else {
            return Ok(None);
        };
        if depth > MAX_DEPTH {
            return bad(format!("values nested deeper than {MAX_DEPTH}"));
        }
        let kind = match v.get("Kind") {
            None => 0,
            Some(k @ Value::Number(_)) => match k.as_i64() {
                Ok(kind @ VARIABLE..=OBJECT) => kind,
                _ => return bad("Kind must be a value kind from 0 to 9"),
            },
            Some(_) => return bad("Kind must be a number"),
        };
        Ok(Some(GqlValue {
            raw: v.string("Raw")?,
            children: v.each("Children", |c| {
                Ok((c.string("Name")?, c.value("Value", depth + 1)?))
            })?,
            kind,
        }))
    }

    fn ty(&self, key: &str, depth: usize) -> Res<Option<Type>> {
        let Some(t) = self.child(key)? else {
            return Ok(None);
        };
        if depth > MAX_DEPTH {
            return bad(format!("types nested deeper than {MAX_DEPTH}"));
        }
        Ok(Some(Type {
            named: t.string("NamedType")?,
            elem: t.ty("Elem", depth + 1)?.map(Box::new),
            non_null: t.boolean("NonNull")?,
        }))
    }

    fn selections(&self, depth: usize) -> Res<Vec<Selection>> {
        if depth > MAX_DEPTH {
            return bad(format!("selections nested deeper than {MAX_DEPTH}"));
        }
        let mut selections = Vec::new();
        for item in self.items("SelectionSet")? {
            let exact = obj(item, true, "a selection")?;
            // gqlparser's order: a field, else a fragment spread, else an inline fragment,
            // else the entry is dropped. Reading a field fails only on a wrong type.
            let field = || -> Res<Selection> {
                Ok(Selection::Field(Field {
                    alias: exact.string("Alias")?,
                    name: exact.string("Name")?,
                    arguments: exact.arguments(0)?,
                    directives: exact.directives()?,
                    selections: exact.selections(depth + 1)?,
                }))
            };
            let spread = || -> Res<Selection> {
                let loose = Obj {
                    exact: false,
                    ..exact
                };
                Ok(Selection::Spread {
                    name: loose.string("Name")?,
                    directives: loose.directives()?,
                })
            };
            let inline = || -> Res<Selection> {
                Ok(Selection::Inline {
                    type_condition: exact.string("TypeCondition")?,
                    directives: exact.directives()?,
                    selections: exact.selections(depth + 1)?,
                })
            };
            if let Ok(selection) = field().or_else(|_| spread()).or_else(|_| inline()) {
                selections.push(selection);
            }
        }
        Ok(selections)
    }

    fn query(&self) -> Res<QueryDoc> {
        let operations = self.items("Operations")?;
        let fragments = self.items("Fragments")?;
        Ok(QueryDoc {
            operations: operations
                .into_iter()
                .map(|item| {
                    let o = obj(item, true, "an operation")?;
                    Ok(Operation {
                        operation: o.string("Operation")?,
                        name: o.string("Name")?,
                        variables: o.each("VariableDefinitions", |v| {
                            Ok(VariableDef {
                                variable: v.string("Variable")?,
                                ty: v.ty("Type", 0)?,
                                default: v.value("DefaultValue", 0)?,
                                directives: v.directives()?,
                                used: v.boolean("Used")?,
                            })
                        })?,
                        directives: o.directives()?,
                        selections: o.selections(0)?,
                    })
                })
                .collect::<Res<_>>()?,
            fragments: fragments
                .into_iter()
                .map(|item| {
                    let f = obj(item, true, "a fragment")?;
                    Ok(Fragment {
                        name: f.string("Name")?,
                        type_condition: f.string("TypeCondition")?,
                        directives: f.directives()?,
                        selections: f.selections(0)?,
                    })
                })
                .collect::<Res<_>>()?,
        })
    }

    fn field_def(&self) -> Res<FieldDef> {
        Ok(FieldDef {
            description: self.string("Description")?,
            name: self.string("Name")?,
            arguments: self.each("Arguments", |a| a.field_def())?,
            default: self.value("DefaultValue", 0)?,
            ty: self.ty("Type", 0)?,
            directives: self.directives()?,
        })
    }

    fn definition(&self) -> Res<Definition> {
        Ok(Definition {
            kind: self.string("Kind")?,
            description: self.string("Description")?,
            name: self.string("Name")?,
            directives: self.directives()?,
            interfaces: self.strings("Interfaces")?,
            fields: self.each("Fields", |f| f.field_def())?,
            types: self.strings("Types")?,
            enum_values: self.each("EnumValues", |v| {
                Ok(EnumValueDef {
                    description: v.string("Description")?,
                    name: v.string("Name")?,
                    directives: v.directives()?,
                })
            })?,
            built_in: self.boolean("BuiltIn")?,
        })
    }

    fn schema_def(&self) -> Res<SchemaDef> {
        Ok(SchemaDef {
            description: self.string("Description")?,
            directives: self.directives()?,
            operation_types: self.each("OperationTypes", |t| {
                Ok((t.string("Operation")?, t.string("Type")?))
            })?,
        })
    }

    fn schema(&self) -> Res<SchemaDoc> {
        Ok(SchemaDoc {
            schema: self.each("Schema", |s| s.schema_def())?,
            schema_extension: self.each("SchemaExtension", |s| s.schema_def())?,
            directives: self.each("Directives", |d| {
                Ok(DirectiveDef {
                    description: d.string("Description")?,
                    name: d.string("Name")?,
                    arguments: d.each("Arguments", |a| a.field_def())?,
                    locations: d.strings("Locations")?,
                    repeatable: d.boolean("IsRepeatable")?,
                })
            })?,
            definitions: self.each("Definitions", |d| d.definition())?,
            extensions: self.each("Extensions", |d| d.definition())?,
        })
    }
}

// ---------------------------------------------------------------------------------------
// The model printed as GraphQL (for validation of AST objects).
// ---------------------------------------------------------------------------------------

#[derive(Default)]
struct Printer {
    out: String,
}

fn is_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c == '_' || c.is_ascii_alphabetic())
        && chars.all(|c| c == '_' || c.is_ascii_alphanumeric())
}

/// Whether `raw` is a GraphQL int (`float` false) or float (`float` true) literal.
fn is_number(raw: &str, float: bool) -> bool {
    let digits = raw.strip_prefix('-').unwrap_or(raw);
    let int_end = digits
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(digits.len());
    let (int, mut rest) = digits.split_at(int_end);
    if int.is_empty() || (int.len() > 1 && int.starts_with('0')) {
        return false;
    }
    let mut fractional = false;
    if let Some(after) = rest.strip_prefix('.') {
        let end = after
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(after.len());
        if end == 0 {
            return false;
        }
        fractional = true;
        rest = after.get(end..).unwrap_or_default();
    }
    if let Some(after) = rest.strip_prefix(['e', 'E']) {
        let after = after.strip_prefix(['+', '-']).unwrap_or(after);
        if after.is_empty() || !after.chars().all(|c| c.is_ascii_digit()) {
            return false;
        }
        fractional = true;
        rest = "";
    }
    rest.is_empty() && fractional == float
}

impl Printer {
    fn push(&mut self, text: &str) {
        self.out.push_str(text);
    }

    fn name(&mut self, name: &str, what: &str) -> Res<()> {
        if !is_name(name) {
            return bad(format!("{what} {name:?} is not a GraphQL name"));
        }
        self.push(name);
        Ok(())
    }

    fn string(&mut self, text: &str) {
        self.out.push('"');
        for c in text.chars() {
            match c {
                '"' => self.push("\\\""),
                '\\' => self.push("\\\\"),
                '\n' => self.push("\\n"),
                '\r' => self.push("\\r"),
                '\t' => self.push("\\t"),
                c if u32::from(c) < 0x20 => {
                    let _ = write!(self.out, "\\u{:04x}", u32::from(c));
                }
                c => self.out.push(c),
            }
        }
        self.out.push('"');
    }

    fn description(&mut self, text: &str) {
        if !text.is_empty() {
            self.string(text);
            self.push(" ");
        }
    }

    fn value(&mut self, value: Option<&GqlValue>) -> Res<()> {
        let Some(value) = value else {
            return bad("a value is missing");
        };
        match value.kind {
            VARIABLE => {
                self.push("$");
                self.name(&value.raw, "variable")?;
            }
            INT | FLOAT => {
                if !is_number(&value.raw, value.kind == FLOAT) {
                    return bad(format!("{:?} is not a GraphQL number", value.raw));
                }
                self.push(&value.raw);
            }
            STRING | BLOCK => self.string(&value.raw),
            BOOLEAN if value.raw == "true" || value.raw == "false" => self.push(&value.raw),
            BOOLEAN => return bad(format!("{:?} is not a boolean", value.raw)),
            NULL => self.push("null"),
            ENUM if !matches!(value.raw.as_str(), "true" | "false" | "null") => {
                self.name(&value.raw, "enum value")?;
            }
            LIST => {
                self.push("[");
                for (_, item) in &value.children {
                    self.value(item.as_ref())?;
                    self.push(" ");
                }
                self.push("]");
            }
            OBJECT => {
                self.push("{");
                for (name, item) in &value.children {
                    self.name(name, "object field")?;
                    self.push(": ");
                    self.value(item.as_ref())?;
                    self.push(" ");
                }
                self.push("}");
            }
            _ => return bad(format!("{:?} is not an enum value", value.raw)),
        }
        Ok(())
    }

    fn arguments(&mut self, arguments: &[Argument]) -> Res<()> {
        if arguments.is_empty() {
            return Ok(());
        }
        self.push("(");
        for argument in arguments {
            self.name(&argument.name, "argument")?;
            self.push(": ");
            self.value(argument.value.as_ref())?;
            self.push(" ");
        }
        self.push(")");
        Ok(())
    }

    fn directives(&mut self, directives: &[Directive]) -> Res<()> {
        for directive in directives {
            self.push(" @");
            self.name(&directive.name, "directive")?;
            self.arguments(&directive.arguments)?;
        }
        Ok(())
    }

    fn ty(&mut self, ty: Option<&Type>) -> Res<()> {
        let Some(ty) = ty else {
            return bad("a type is missing");
        };
        match (&ty.elem, ty.named.is_empty()) {
            (Some(elem), true) => {
                self.push("[");
                self.ty(Some(elem))?;
                self.push("]");
            }
            (None, false) => self.name(&ty.named, "type")?,
            _ => return bad("a type needs a name or an element type, not both"),
        }
        if ty.non_null {
            self.push("!");
        }
        Ok(())
    }

    fn selections(&mut self, selections: &[Selection]) -> Res<()> {
        if selections.is_empty() {
            return bad("a selection set is empty");
        }
        self.push(" {");
        for selection in selections {
            self.push(" ");
            match selection {
                Selection::Field(f) => {
                    if !f.alias.is_empty() && f.alias != f.name {
                        self.name(&f.alias, "alias")?;
                        self.push(": ");
                    }
                    self.name(&f.name, "field")?;
                    self.arguments(&f.arguments)?;
                    self.directives(&f.directives)?;
                    if !f.selections.is_empty() {
                        self.selections(&f.selections)?;
                    }
                }
                Selection::Spread { name, directives } => {
                    self.push("...");
                    self.name(name, "fragment")?;
                    self.directives(directives)?;
                }
                Selection::Inline {
                    type_condition,
                    directives,
                    selections,
                } => {
                    self.push("...");
                    if !type_condition.is_empty() {
                        self.push(" on ");
                        self.name(type_condition, "type")?;
                    }
                    self.directives(directives)?;
                    self.selections(selections)?;
                }
            }
        }
        self.push(" }");
        Ok(())
    }

    fn query(&mut self, doc: &QueryDoc) -> Res<()> {
        for op in &doc.operations {
            let keyword = match op.operation.as_str() {
                // gqlparser's validator takes a missing operation type for a query.
                "" | "query" => "query",
                "mutation" => "mutation",
                "subscription" => "subscription",
                other => return bad(format!("unknown operation type {other:?}")),
            };
            self.push(keyword);
            if !op.name.is_empty() {
                self.push(" ");
                self.name(&op.name, "operation")?;
            }
            if !op.variables.is_empty() {
                self.push("(");
                for v in &op.variables {
                    self.push("$");
                    self.name(&v.variable, "variable")?;
                    self.push(": ");
                    self.ty(v.ty.as_ref())?;
                    if v.default.is_some() {
                        self.push(" = ");
                        self.value(v.default.as_ref())?;
                    }
                    self.directives(&v.directives)?;
                    self.push(" ");
                }
                self.push(")");
            }
            self.directives(&op.directives)?;
            self.selections(&op.selections)?;
            self.push("\n");
        }
        for f in &doc.fragments {
            self.push("fragment ");
            self.name(&f.name, "fragment")?;
            self.push(" on ");
            self.name(&f.type_condition, "type")?;
            self.directives(&f.directives)?;
            self.selections(&f.selections)?;
            self.push("\n");
        }
        Ok(())
    }

    fn input_values(&mut self, values: &[FieldDef]) -> Res<()> {
        if values.is_empty() {
            return Ok(());
        }
        self.push("(");
        for v in values {
            self.input_value(v)?;
            self.push(" ");
        }
        self.push(")");
        Ok(())
    }

    fn input_value(&mut self, v: &FieldDef) -> Res<()> {
        self.description(&v.description);
        self.name(&v.name, "argument")?;
        self.push(": ");
        self.ty(v.ty.as_ref())?;
        if v.default.is_some() {
            self.push(" = ");
            self.value(v.default.as_ref())?;
        }
        self.directives(&v.directives)
    }

    fn root_operations(&mut self, operations: &[(String, String)]) -> Res<()> {
        if operations.is_empty() {
            return Ok(());
        }
        self.push(" {");
        for (op, ty) in operations {
            if !matches!(op.as_str(), "query" | "mutation" | "subscription") {
                return bad(format!("unknown operation type {op:?}"));
            }
            self.push(" ");
            self.push(op);
            self.push(": ");
            self.name(ty, "type")?;
        }
        self.push(" }");
        Ok(())
    }

    fn definition(&mut self, d: &Definition, extension: bool) -> Res<()> {
        if extension {
            self.push("extend ");
        } else {
            self.description(&d.description);
        }
        let keyword = match d.kind.as_str() {
            "SCALAR" => "scalar",
            "OBJECT" => "type",
            "INTERFACE" => "interface",
            "UNION" => "union",
            "ENUM" => "enum",
            "INPUT_OBJECT" => "input",
            other => return bad(format!("unknown definition kind {other:?}")),
        };
        self.push(keyword);
        self.push(" ");
        self.name(&d.name, "type")?;
        if !d.interfaces.is_empty() {
            self.push(" implements");
            for (i, interface) in d.interfaces.iter().enumerate() {
                self.push(if i == 0 { " " } else { " & " });
                self.name(interface, "interface")?;
            }
        }
        self.directives(&d.directives)?;
        if !d.types.is_empty() {
            self.push(" =");
            for (i, member) in d.types.iter().enumerate() {
                self.push(if i == 0 { " " } else { " | " });
                self.name(member, "type")?;
            }
        }
        if !d.fields.is_empty() {
            self.push(" {");
            for f in &d.fields {
                self.push(" ");
                if d.kind == "INPUT_OBJECT" {
                    self.input_value(f)?;
                } else {
                    self.description(&f.description);
                    self.name(&f.name, "field")?;
                    self.input_values(&f.arguments)?;
                    self.push(": ");
                    self.ty(f.ty.as_ref())?;
                    self.directives(&f.directives)?;
                }
            }
            self.push(" }");
        }
        if !d.enum_values.is_empty() {
            self.push(" {");
            for v in &d.enum_values {
                self.push(" ");
                self.description(&v.description);
                self.name(&v.name, "enum value")?;
                self.directives(&v.directives)?;
            }
            self.push(" }");
        }
        self.push("\n");
        Ok(())
    }

    fn schema(&mut self, doc: &SchemaDoc) -> Res<()> {
        for s in &doc.schema {
            self.description(&s.description);
            self.push("schema");
            self.directives(&s.directives)?;
            self.root_operations(&s.operation_types)?;
            self.push("\n");
        }
        for s in &doc.schema_extension {
            self.push("extend schema");
            self.directives(&s.directives)?;
            self.root_operations(&s.operation_types)?;
            self.push("\n");
        }
        for d in &doc.directives {
            self.description(&d.description);
            self.push("directive @");
            self.name(&d.name, "directive")?;
            self.input_values(&d.arguments)?;
            if d.repeatable {
                self.push(" repeatable");
            }
            self.push(" on");
            for (i, location) in d.locations.iter().enumerate() {
                self.push(if i == 0 { " " } else { " | " });
                self.name(location, "directive location")?;
            }
            self.push("\n");
        }
        for d in &doc.definitions {
            self.definition(d, false)?;
        }
        for d in &doc.extensions {
            self.definition(d, true)?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// Reading arguments, validating, and the built-ins.
// ---------------------------------------------------------------------------------------

/// A query or schema: its model (what the built-ins return) and its parsed document.
struct Read<D> {
    model: D,
    document: ast::Document,
}

const QUERY_PATH: &str = "query.graphql";
const SCHEMA_PATH: &str = "schema.graphql";

fn query_from_text(text: &str) -> Res<Read<QueryDoc>> {
    let document = parse_document(text, QUERY_PATH)?;
    let model = FromAst { text }.query(&document)?;
    Ok(Read { model, document })
}

fn schema_from_text(text: &str) -> Res<Read<SchemaDoc>> {
    let document = parse_document(text, SCHEMA_PATH)?;
    let model = FromAst { text }.schema(&document)?;
    Ok(Read { model, document })
}

/// Argument `value` as a query: a string, or an AST object (read, then printed and parsed).
fn read_query(value: &Value) -> Res<Option<Read<QueryDoc>>> {
    match value {
        Value::String(text) => query_from_text(text).map(Some),
        Value::Object(_) => {
            let model = obj(value, false, "the query")?.query()?;
            let mut printer = Printer::default();
            printer.query(&model)?;
            let document = parse_document(&printer.out, QUERY_PATH)?;
            Ok(Some(Read { model, document }))
        }
        _ => Ok(None),
    }
}

/// Argument `value` as a schema, as [`read_query`] reads a query.
fn read_schema(value: &Value) -> Res<Option<Read<SchemaDoc>>> {
    match value {
        Value::String(text) => schema_from_text(text).map(Some),
        Value::Object(_) => {
            let model = obj(value, false, "the schema")?.schema()?;
            let mut printer = Printer::default();
            printer.schema(&model)?;
            let document = parse_document(&printer.out, SCHEMA_PATH)?;
            Ok(Some(Read { model, document }))
        }
        _ => Ok(None),
    }
}

/// Whether a diagnostic is one gqlparser does not raise: a schema without a query type.
fn is_missing_query_type(name: Option<&str>) -> bool {
    name == Some("QueryRootOperationType")
}

/// The schema of `document`, built and validated as gqlparser would (orphan extensions
/// adopted, no query type required).
fn build_schema(document: &ast::Document) -> Res<Valid<Schema>> {
    let schema = Schema::builder()
        .adopt_orphan_extensions()
        .add_ast(document)
        .build()
        .map_err(|e| first_error(&e.errors, "in GraphQL schema"))?;
    match schema.validate() {
        Ok(valid) => Ok(valid),
        Err(e) => {
            let other = e
                .errors
                .iter()
                .find(|d| !is_missing_query_type(d.error.unstable_error_name()));
            match other {
                None => Ok(Valid::assume_valid(e.partial)),
                Some(d) => Err(describe(&d, "in GraphQL schema")),
            }
        }
    }
}

/// Validates `query` against `schema`.
fn validate(query: &ast::Document, schema: &Valid<Schema>) -> Res<()> {
    if query.definitions.is_empty() {
        // gqlparser's rules find nothing wrong in an empty document.
        return Ok(());
    }
    query
        .to_executable_validate(schema)
        .map(|_| ())
        .map_err(|e| first_error(&e.errors, "in GraphQL query string"))
}

/// Both ASTs of a query valid against a schema; `None` for an argument of the wrong type.
fn parse_both(query: &Value, schema: &Value) -> Res<Option<(Value, Value)>> {
    let Some(query) = read_query(query)? else {
        return Ok(None);
    };
    let Some(schema) = read_schema(schema)? else {
        return Ok(None);
    };
    validate(&query.document, &build_schema(&schema.document)?)?;
    Ok(Some((query.model.to_value(), schema.model.to_value())))
}

/// `graphql.parse_query(query)`: the AST of a query string.
pub(super) fn parse_query(args: &Args<'_>) -> Result<Value, BuiltinError> {
    let text = args.string(0)?;
    query_from_text(text)
        .map(|read| read.model.to_value())
        .map_err(|Bad(message)| args.invalid(message))
}

/// `graphql.parse_schema(schema)`: the AST of a schema string.
pub(super) fn parse_schema(args: &Args<'_>) -> Result<Value, BuiltinError> {
    let text = args.string(0)?;
    schema_from_text(text)
        .map(|read| read.model.to_value())
        .map_err(|Bad(message)| args.invalid(message))
}

/// `graphql.parse(query, schema)`: `[query_ast, schema_ast]` of a valid query.
pub(super) fn parse(args: &Args<'_>) -> Result<Value, BuiltinError> {
    let (query, schema) = (args.get(0)?, args.get(1)?);
    match parse_both(query, schema) {
        Ok(Some((q, s))) => Ok(Value::from(vec![q, s])),
        Ok(None) if !matches!(query, Value::String(_) | Value::Object(_)) => {
            Err(args.wrong_type(0, "one of {string, object}"))
        }
        Ok(None) => Err(args.wrong_type(1, "one of {string, object}")),
        Err(Bad(message)) => Err(args.invalid(message)),
    }
}

/// `graphql.parse_and_verify(query, schema)`: `[true, query_ast, schema_ast]` of a valid
/// query, `[false, {}, {}]` otherwise.
pub(super) fn parse_and_verify(args: &Args<'_>) -> Result<Value, BuiltinError> {
    Ok(match parse_both(args.get(0)?, args.get(1)?) {
        Ok(Some((q, s))) => Value::from(vec![Value::from(true), q, s]),
        _ => Value::from(vec![
            Value::from(false),
            Value::new_object(),
            Value::new_object(),
        ]),
    })
}

/// `graphql.is_valid(query, schema)`: whether the query is valid against the schema.
pub(super) fn is_valid(args: &Args<'_>) -> Result<Value, BuiltinError> {
    let valid = matches!(parse_both(args.get(0)?, args.get(1)?), Ok(Some(_)));
    Ok(Value::from(valid))
}

/// `graphql.schema_is_valid(schema)`: whether the schema is valid.
pub(super) fn schema_is_valid(args: &Args<'_>) -> Result<Value, BuiltinError> {
    let valid = match read_schema(args.get(0)?) {
        Ok(Some(schema)) => build_schema(&schema.document).is_ok(),
        _ => false,
    };
    Ok(Value::from(valid))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(
        name: &'static str,
        f: fn(&Args<'_>) -> Result<Value, BuiltinError>,
        values: &[Value],
    ) -> Result<Value, BuiltinError> {
        f(&Args { name, values })
    }

    fn json(text: &str) -> Value {
        Value::from_json_str(text).unwrap()
    }

    fn query(text: &str) -> Value {
        call("graphql.parse_query", parse_query, &[text.into()]).unwrap()
    }

    fn schema(text: &str) -> Value {
        call("graphql.parse_schema", parse_schema, &[text.into()]).unwrap()
    }

    fn valid(q: Value, s: Value) -> bool {
        call("graphql.is_valid", is_valid, &[q, s]).unwrap() == Value::from(true)
    }

    const SCHEMA: &str = r#"
        "The root" type Query {
          hero(episode: Episode = NEWHOPE, first: Int): Character
          search(text: String!, filter: Filter): [SearchResult!]
        }
        type Mutation { rate(stars: Int!): Boolean @deprecated(reason: "no") }
        interface Character { name: String! }
        type Human implements Character { name: String! height: Float }
        type Droid implements Character { name: String! primaryFunction: String }
        union SearchResult = Human | Droid
        enum Episode { NEWHOPE EMPIRE @deprecated JEDI }
        input Filter { tags: [String!] = ["a"], limit: Int = 3 }
        scalar Time @specifiedBy(url: "https://example.com")
        directive @auth(role: String) repeatable on FIELD_DEFINITION | OBJECT
        schema { query: Query mutation: Mutation }
        extend type Human { born: Time }
    "#;

    #[test]
    fn a_query_is_returned_as_gqlparser_ast() {
        let ast = query(
            r#"query Q($ep: Episode = JEDI, $on: Boolean!) @live {
                 h: hero(episode: $ep) { name ...F @include(if: $on) ... on Human { height } }
                 search(text: """ block """, filter: {tags: ["x", "y"], limit: -2}) { __typename }
                 n: hero(first: 1) { name }
               }
               fragment F on Character { name }"#,
        );
        let expected = json(
            r#"{
              "Operations": [{
                "Name": "Q", "Operation": "query",
                "VariableDefinitions": [
                  {"Variable": "ep", "Type": {"NamedType": "Episode", "NonNull": false},
                   "DefaultValue": {"Kind": 7, "Raw": "JEDI"}, "Used": false},
                  {"Variable": "on", "Type": {"NamedType": "Boolean", "NonNull": true},
                   "Used": false}
                ],
                "Directives": [{"Name": "live", "Location": ""}],
                "SelectionSet": [
                  {"Alias": "h", "Name": "hero",
                   "Arguments": [{"Name": "episode", "Value": {"Kind": 0, "Raw": "ep"}}],
                   "SelectionSet": [
                     {"Alias": "name", "Name": "name"},
                     {"Name": "F", "Directives": [{"Name": "include", "Location": "",
                       "Arguments": [{"Name": "if", "Value": {"Kind": 0, "Raw": "on"}}]}]},
                     {"TypeCondition": "Human",
                      "SelectionSet": [{"Alias": "height", "Name": "height"}]}
                   ]},
                  {"Alias": "search", "Name": "search",
                   "Arguments": [
                     {"Name": "text", "Value": {"Kind": 4, "Raw": " block "}},
                     {"Name": "filter", "Value": {"Kind": 9, "Raw": "", "Children": [
                       {"Name": "tags", "Value": {"Kind": 8, "Raw": "", "Children": [
                         {"Name": "", "Value": {"Kind": 3, "Raw": "x"}},
                         {"Name": "", "Value": {"Kind": 3, "Raw": "y"}}]}},
                       {"Name": "limit", "Value": {"Kind": 1, "Raw": "-2"}}]}}
                   ],
                   "SelectionSet": [{"Alias": "__typename", "Name": "__typename"}]},
                  {"Alias": "n", "Name": "hero",
                   "Arguments": [{"Name": "first", "Value": {"Kind": 1, "Raw": "1"}}],
                   "SelectionSet": [{"Alias": "name", "Name": "name"}]}
                ]
              }],
              "Fragments": [{"Name": "F", "TypeCondition": "Character",
                "SelectionSet": [{"Alias": "name", "Name": "name"}]}]
            }"#,
        );
        assert_eq!(ast, expected);
        assert_eq!(query(""), Value::new_object());
        assert_eq!(query("  # nothing\n"), Value::new_object());
        assert_eq!(query("# a\r\n, # b"), Value::new_object());
        assert!(call("graphql.parse_query", parse_query, &["# a\n}".into()]).is_err());
    }

    #[test]
    fn a_schema_is_returned_as_gqlparser_ast() {
        let ast = schema(SCHEMA);
        let definitions = ast["Definitions"].as_array().unwrap();
        assert_eq!(definitions.len(), 9);
        assert_eq!(
            definitions[0],
            json(
                r#"{"Kind": "OBJECT", "Description": "The root", "Name": "Query", "BuiltIn": false,
                   "Fields": [
                     {"Description": "", "Name": "hero",
                      "Arguments": [
                        {"Description": "", "Name": "episode",
                         "Type": {"NamedType": "Episode", "NonNull": false},
                         "DefaultValue": {"Kind": 7, "Raw": "NEWHOPE"}},
                        {"Description": "", "Name": "first",
                         "Type": {"NamedType": "Int", "NonNull": false}}],
                      "Type": {"NamedType": "Character", "NonNull": false}},
                     {"Description": "", "Name": "search",
                      "Arguments": [
                        {"Description": "", "Name": "text",
                         "Type": {"NamedType": "String", "NonNull": true}},
                        {"Description": "", "Name": "filter",
                         "Type": {"NamedType": "Filter", "NonNull": false}}],
                      "Type": {"NamedType": "", "NonNull": false,
                               "Elem": {"NamedType": "SearchResult", "NonNull": true}}}
                   ]}"#
            )
        );
        assert_eq!(definitions[3]["Interfaces"], json(r#"["Character"]"#));
        assert_eq!(definitions[5]["Types"], json(r#"["Human", "Droid"]"#));
        assert_eq!(
            definitions[6]["EnumValues"][1],
            json(
                r#"{"Description": "", "Name": "EMPIRE", "Directives": [{"Name": "deprecated", "Location": ""}]}"#
            )
        );
        assert_eq!(definitions[7]["Kind"], Value::from("INPUT_OBJECT"));
        assert_eq!(
            ast["Directives"],
            json(
                r#"[{"Description": "", "Name": "auth", "IsRepeatable": true,
                     "Arguments": [{"Description": "", "Name": "role",
                                    "Type": {"NamedType": "String", "NonNull": false}}],
                     "Locations": ["FIELD_DEFINITION", "OBJECT"]}]"#
            )
        );
        assert_eq!(
            ast["Schema"],
            json(
                r#"[{"Description": "", "OperationTypes": [
                     {"Operation": "query", "Type": "Query"},
                     {"Operation": "mutation", "Type": "Mutation"}]}]"#
            )
        );
        assert_eq!(ast["Extensions"][0]["Name"], Value::from("Human"));
        assert_eq!(schema(""), Value::new_object());
    }

    #[test]
    fn queries_are_validated_against_schemas() {
        let s = || Value::from(SCHEMA);
        assert!(valid(
            "{ hero { name ... on Droid { primaryFunction } } }".into(),
            s()
        ));
        assert!(valid("mutation { rate(stars: 5) }".into(), s()));
        assert!(valid(
            r#"query($t: String!) { search(text: $t, filter: {limit: 1}) { ... on Human { born } } }"#.into(),
            s()
        ));
        // Unknown fields, missing required arguments, unused variables, bad values.
        assert!(!valid("{ villain }".into(), s()));
        assert!(!valid("{ search { __typename } }".into(), s()));
        assert!(!valid("query($x: Int) { hero { name } }".into(), s()));
        assert!(!valid("{ hero(episode: PHANTOM) { name } }".into(), s()));
        assert!(!valid("{ hero }".into(), s()));
        // Syntax errors, wrong argument types, invalid schemas: false, never an error.
        assert!(!valid("{ hero {".into(), s()));
        assert!(!valid(Value::from(1), s()));
        assert!(!valid("{ hero { name } }".into(), Value::Null));
        assert!(!valid("{ a }".into(), "type Query { a: Nope }".into()));
        // As gqlparser: a schema needs no query type, but a query does.
        assert!(valid("".into(), "type A { b: Int }".into()));
        assert!(!valid("{ b }".into(), "type A { b: Int }".into()));
    }

    #[test]
    fn ast_objects_are_read_back() {
        let s = schema(SCHEMA);
        let q = query(
            r#"query Q($ep: Episode = JEDI) { hero(episode: $ep, first: 2) { name } search(text: "x\n\"y\"", filter: {tags: ["t"]}) { __typename } }"#,
        );
        assert!(valid(q.clone(), s.clone()));
        let both = call(
            "graphql.parse_and_verify",
            parse_and_verify,
            &[q.clone(), s.clone()],
        )
        .unwrap();
        assert_eq!(
            both,
            Value::from(vec![Value::from(true), q.clone(), s.clone()])
        );
        let pair = call("graphql.parse", parse, &[q.clone(), s.clone()]).unwrap();
        assert_eq!(pair, Value::from(vec![q, s.clone()]));
        assert_eq!(
            call(
                "graphql.schema_is_valid",
                schema_is_valid,
                std::slice::from_ref(&s)
            )
            .unwrap(),
            Value::from(true)
        );
        // Keys of Go's structs match case-insensitively; a selection is always a field.
        let hand = json(
            r#"{"operations": [{"Operation": "query", "SelectionSet": [
                 {"Alias": "hero", "Name": "hero", "arguments": [{"name": "first", "value": {"kind": 1, "raw": "2"}}],
                  "SelectionSet": [{"Name": "name"}]}]}]}"#,
        );
        assert!(valid(hand, s.clone()));
        let inline = json(
            r#"{"Operations": [{"Operation": "query", "SelectionSet": [
                 {"Name": "hero", "SelectionSet": [{"TypeCondition": "Droid", "SelectionSet": [{"Name": "name"}]}]}]}]}"#,
        );
        assert!(!valid(inline, s.clone()));
        // Wrong types, bad names and bad literals make an object invalid.
        for bad in [
            r#"{"Operations": [{"Operation": "query", "SelectionSet": [{"Name": "hero name"}]}]}"#,
            r#"{"Operations": [{"Operation": "query", "SelectionSet": [{"Name": "hero", "Arguments": [{"Name": "first", "Value": {"Kind": 1, "Raw": "2) { x"}}]}]}]}"#,
            r#"{"Operations": [{"Operation": "query", "SelectionSet": [{"Name": "hero", "Arguments": [{"Name": "first", "Value": {"Kind": "1", "Raw": "2"}}]}]}]}"#,
            r#"{"Operations": [{"Operation": "delete", "SelectionSet": [{"Name": "hero"}]}]}"#,
            r#"{"Operations": [{"Operation": "query"}]}"#,
            r#"{"Operations": 3}"#,
        ] {
            assert!(!valid(json(bad), s.clone()), "{bad}");
        }
        let bad_schema = json(r#"{"Definitions": [{"Kind": "TABLE", "Name": "Query"}]}"#);
        assert!(!valid("{ a }".into(), bad_schema));
    }

    #[test]
    fn errors_are_builtin_errors() {
        let err = call("graphql.parse_query", parse_query, &["{ a ".into()]).unwrap_err();
        assert!(
            err.to_string().contains("in GraphQL string at location 1:"),
            "{err}"
        );
        let err = call(
            "graphql.parse_query",
            parse_query,
            &["type A { b: Int }".into()],
        )
        .unwrap_err();
        assert!(err.to_string().contains("type system definition"), "{err}");
        let err = call("graphql.parse_schema", parse_schema, &["{ a }".into()]).unwrap_err();
        assert!(err.to_string().contains("executable definition"), "{err}");
        assert!(matches!(
            call("graphql.parse_query", parse_query, &[Value::from(1)]),
            Err(BuiltinError::Type { .. })
        ));
        assert!(matches!(
            call("graphql.parse", parse, &[Value::from(1), SCHEMA.into()]),
            Err(BuiltinError::Type { position: 1, .. })
        ));
        assert!(matches!(
            call("graphql.parse", parse, &["{ a }".into(), Value::from(1)]),
            Err(BuiltinError::Type { position: 2, .. })
        ));
        let err = call(
            "graphql.parse",
            parse,
            &["{ villain }".into(), SCHEMA.into()],
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "graphql.parse: Cannot query field \"villain\" on type \"Query\" in GraphQL query string at location 1:3"
        );
        let err = call(
            "graphql.parse",
            parse,
            &["{ a }".into(), "type Query { a: B }".into()],
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("in GraphQL schema at location 1:17"),
            "{err}"
        );
        let unverified = call(
            "graphql.parse_and_verify",
            parse_and_verify,
            &["{ villain }".into(), SCHEMA.into()],
        )
        .unwrap();
        assert_eq!(
            unverified,
            Value::from(vec![
                Value::from(false),
                Value::new_object(),
                Value::new_object()
            ])
        );
        let is = |s: Value| call("graphql.schema_is_valid", schema_is_valid, &[s]).unwrap();
        assert_eq!(is("type Query { a: Nope }".into()), Value::from(false));
        assert_eq!(
            is("type A { a: Int } type A { b: Int }".into()),
            Value::from(false)
        );
        assert_eq!(is("extend type Query { a: Int }".into()), Value::from(true));
        assert_eq!(is(Value::from(true)), Value::from(false));
    }

    #[test]
    fn huge_and_deep_documents_are_refused_without_panicking() {
        let huge = format!("{{ {} }}", "a ".repeat(MAX_SOURCE_BYTES));
        let err = call("graphql.parse_query", parse_query, &[huge.into()]).unwrap_err();
        assert!(err.to_string().contains("above the cap"), "{err}");
        let deep = format!("{}a{}", "{ a ".repeat(10_000), " }".repeat(10_000));
        assert!(call("graphql.parse_query", parse_query, &[deep.into()]).is_err());
        let deep_value = format!("{{ a(b: {}1{}) }}", "[".repeat(10_000), "]".repeat(10_000));
        assert!(call("graphql.parse_query", parse_query, &[deep_value.into()]).is_err());
        let mut nested = json(r#"{"Name": "a"}"#);
        for _ in 0..(MAX_DEPTH + 5) {
            nested = object(vec![
                ("Name", s("a")),
                ("SelectionSet", Value::from(vec![nested])),
            ]);
        }
        let doc = object(vec![(
            "Operations",
            Value::from(vec![object(vec![(
                "SelectionSet",
                Value::from(vec![nested]),
            )])]),
        )]);
        assert!(!valid(doc, "type Query { a: Int }".into()));
    }

    #[test]
    fn number_literals() {
        for (raw, int, float) in [
            ("0", true, false),
            ("-12", true, false),
            ("012", false, false),
            ("1.5", false, true),
            ("-1e10", false, true),
            ("1.5E-3", false, true),
            ("1.", false, false),
            ("1e", false, false),
            ("", false, false),
            ("-", false, false),
            ("1x", false, false),
        ] {
            assert_eq!(is_number(raw, false), int, "{raw}");
            assert_eq!(is_number(raw, true), float, "{raw}");
        }
    }
}
