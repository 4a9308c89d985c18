//! `strings.render_template(template, vars)`: a Go `text/template` rendered with the object
//! `vars` as its data, as OPA renders it (`missingkey=error`: a missing key is an error).
//!
//! A subset of Go's templates, with Go's semantics for what it has:
//!
//! - text and actions `{{ … }}`, with `{{- ` / ` -}}` trimming the white space around them,
//!   and comments `{{/* … */}}`;
//! - pipelines: `.`, fields `.a.b`, variables `$`, `$x`, `$x.a`, declarations `$x := …`
//!   and assignments `$x = …`, string (`"…"`, `` `…` ``), number, `true`, `false` and `nil`
//!   constants, parenthesized pipelines and `|` (the value passed as the last argument);
//! - `if` / `else if` / `else`, `range` (over arrays and objects, keys in order, with
//!   `$i, $v :=` or `$v :=`, and `else` for none), `with` / `else with` / `else`, `end`;
//! - functions `and`, `or`, `not`, `len`, `index`, `eq`, `ne`, `lt`, `le`, `gt`, `ge`,
//!   `print`, `println`.
//!
//! The data comes to the template as OPA passes it (through JSON): numbers of `vars` are
//! Go's `json.Number`, a string type (printed as written, compared as strings, always
//! true in `if`); sets are arrays. Values print as Go's `%v` (`map[a:1 b:2]`, `[x y]`,
//! `<no value>` for a missing value). `define`, `template`, `block`, `break`,
//! `continue` and the other functions are refused as errors, as are templates over
//! [`MAX_TEMPLATE`] bytes, nesting over [`MAX_DEPTH`], more than [`MAX_STEPS`] steps and
//! output over [`super::limits::MAX_BYTES`].

use std::collections::BTreeMap;

use regorus::Value;

use super::{Args, BuiltinError};

/// The longest template: 64 KiB.
pub(crate) const MAX_TEMPLATE: usize = 64 << 10;
/// The deepest nesting of blocks and parentheses.
pub(crate) const MAX_DEPTH: usize = 64;
/// The most actions and iterations one rendering takes.
pub(crate) const MAX_STEPS: usize = 1_000_000;

/// A value as the template sees it (Go's values after a JSON round trip).
#[derive(Clone, Debug, PartialEq)]
enum V {
    Nil,
    Bool(bool),
    Str(String),
    Int(i64),
    Float(f64),
    List(Vec<V>),
    Map(BTreeMap<String, V>),
}

impl V {
    fn from_value(value: &Value) -> V {
        match value {
            Value::Null | Value::Undefined => V::Nil,
            Value::Bool(b) => V::Bool(*b),
            // json.Number: a string.
            Value::Number(_) => V::Str(value.to_json_str().unwrap_or_default()),
            Value::String(s) => V::Str(s.to_string()),
            Value::Array(items) => V::List(items.iter().map(V::from_value).collect()),
            Value::Set(items) => V::List(items.iter().map(V::from_value).collect()),
            Value::Object(map) => V::Map(
                map.iter()
                    .map(|(k, v)| {
                        let key = match k {
                            Value::String(s) => s.to_string(),
                            other => other.to_json_str().unwrap_or_default(),
                        };
                        (key, V::from_value(v))
                    })
                    .collect(),
            ),
        }
    }

    /// Go's truth: false, 0, nil and empty values are false.
    fn truthy(&self) -> bool {
        match self {
            V::Nil => false,
            V::Bool(b) => *b,
            V::Str(s) => !s.is_empty(),
            V::Int(n) => *n != 0,
            V::Float(f) => *f != 0.0,
            V::List(items) => !items.is_empty(),
            V::Map(map) => !map.is_empty(),
        }
    }

    /// Go's type name, for errors.
    fn kind(&self) -> &'static str {
        match self {
            V::Nil => "nil",
            V::Bool(_) => "bool",
            V::Str(_) => "string",
            V::Int(_) => "int",
            V::Float(_) => "float64",
            V::List(_) => "[]interface {}",
            V::Map(_) => "map[string]interface {}",
        }
    }

    /// Go's `%v`.
    fn print(&self, out: &mut String) {
        match self {
            V::Nil => out.push_str("<nil>"),
            V::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            V::Str(s) => out.push_str(s),
            V::Int(n) => out.push_str(&n.to_string()),
            V::Float(f) => out.push_str(&go_float(*f)),
            V::List(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(' ');
                    }
                    item.print(out);
                }
                out.push(']');
            }
            V::Map(map) => {
                out.push_str("map[");
                for (i, (k, v)) in map.iter().enumerate() {
                    if i > 0 {
                        out.push(' ');
                    }
                    out.push_str(k);
                    out.push(':');
                    v.print(out);
                }
                out.push(']');
            }
        }
    }
}

/// A float as Go's `%v` prints it (shortest form, exponent from 1e21).
fn go_float(f: f64) -> String {
    if f.is_finite() && f.fract() == 0.0 && f.abs() < 1e21 {
        format!("{f:.0}")
    } else if f.is_finite() && (f.abs() >= 1e21 || f.abs() < 1e-4) {
        let text = format!("{f:e}");
        // Rust `1e21`, Go `1e+21`.
        match text.split_once('e') {
            Some((mantissa, exp)) if !exp.starts_with('-') => format!("{mantissa}e+{exp:0>2}"),
            Some((mantissa, exp)) => format!("{mantissa}e-{:0>2}", exp.trim_start_matches('-')),
            None => text,
        }
    } else {
        f.to_string()
    }
}

/// One operand of a command.
#[derive(Debug, Clone)]
enum Arg {
    Dot,
    Field(Vec<String>),
    Var(String, Vec<String>),
    Const(V),
    Func(String),
    Sub(Box<Pipeline>),
    /// A parenthesized pipeline's fields (`(.a).b`).
    SubField(Box<Pipeline>, Vec<String>),
}

#[derive(Debug, Clone)]
struct Pipeline {
    /// Variables declared (`:=`) or assigned (`=`).
    vars: Vec<String>,
    declare: bool,
    commands: Vec<Vec<Arg>>,
}

#[derive(Debug)]
enum Node {
    Text(String),
    Action(Pipeline),
    If(Pipeline, Vec<Node>, Vec<Node>),
    Range(Pipeline, Vec<Node>, Vec<Node>),
    With(Pipeline, Vec<Node>, Vec<Node>),
}

type Fail = String;

/// Text and actions, whitespace trimmed around `{{- ` / ` -}}`, comments dropped.
fn split(template: &str) -> Result<Vec<(bool, String)>, Fail> {
    let mut parts: Vec<(bool, String)> = Vec::new();
    let mut rest = template;
    let mut trim_next = false;
    while let Some(open) = rest.find("{{") {
        let mut text = rest.get(..open).unwrap_or_default();
        if trim_next {
            text = text.trim_start();
        }
        let mut inside = rest.get(open + 2..).unwrap_or_default();
        let trim_before = inside.starts_with("- ")
            || inside.starts_with("-\t")
            || inside.starts_with("-\n")
            || inside.starts_with("-\r");
        if trim_before {
            text = text.trim_end();
            inside = inside.get(2..).unwrap_or_default();
        }
        parts.push((false, text.to_owned()));
        let (action, after) = action_text(inside)?;
        let (action, trim_after) = match action
            .strip_suffix(" -")
            .or_else(|| action.strip_suffix("\t-"))
            .or_else(|| action.strip_suffix("\n-"))
            .or_else(|| action.strip_suffix("\r-"))
        {
            Some(stripped) => (stripped, true),
            None => (action, false),
        };
        let trimmed = action.trim();
        if !(trimmed.starts_with("/*") && trimmed.ends_with("*/")) {
            parts.push((true, action.to_owned()));
        }
        trim_next = trim_after;
        rest = after;
    }
    let text = if trim_next { rest.trim_start() } else { rest };
    parts.push((false, text.to_owned()));
    Ok(parts)
}

/// The action at the start of `s` (after `{{`) and what follows its `}}`; `}}` inside
/// quotes does not end it.
fn action_text(s: &str) -> Result<(&str, &str), Fail> {
    let bytes = s.as_bytes();
    let mut i = 0;
    let mut quote: Option<u8> = None;
    while let Some(&b) = bytes.get(i) {
        match quote {
            Some(q) if b == b'\\' && q != b'`' => i += 1,
            Some(q) if b == q => quote = None,
            Some(_) => {}
            None if matches!(b, b'"' | b'`' | b'\'') => quote = Some(b),
            None if b == b'}' && bytes.get(i + 1) == Some(&b'}') => {
                return Ok((
                    s.get(..i).unwrap_or_default(),
                    s.get(i + 2..).unwrap_or_default(),
                ));
            }
            None => {}
        }
        i += 1;
    }
    Err("unclosed action".to_owned())
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Word(String),
    Field(Vec<String>),
    Dot,
    Var(String, Vec<String>),
    Str(String),
    Num(String),
    Open,
    Close,
    Pipe,
    Declare,
    Assign,
    Comma,
}

fn field_chain(s: &str) -> Vec<String> {
    s.split('.')
        .filter(|p| !p.is_empty())
        .map(str::to_owned)
        .collect()
}

fn tokens(action: &str) -> Result<Vec<Tok>, Fail> {
    let chars: Vec<char> = action.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let word_char = |c: char| c.is_alphanumeric() || c == '_' || c == '.';
    while let Some(&c) = chars.get(i) {
        match c {
            ' ' | '\t' | '\n' | '\r' => i += 1,
            '(' => {
                out.push(Tok::Open);
                i += 1;
            }
            ')' => {
                out.push(Tok::Close);
                i += 1;
                // `(…).field`
                if chars.get(i) == Some(&'.') {
                    let start = i;
                    while chars.get(i).is_some_and(|c| word_char(*c)) {
                        i += 1;
                    }
                    let text: String = chars.get(start..i).unwrap_or_default().iter().collect();
                    out.push(Tok::Field(field_chain(&text)));
                }
            }
            '|' => {
                out.push(Tok::Pipe);
                i += 1;
            }
            ',' => {
                out.push(Tok::Comma);
                i += 1;
            }
            ':' if chars.get(i + 1) == Some(&'=') => {
                out.push(Tok::Declare);
                i += 2;
            }
            '=' => {
                out.push(Tok::Assign);
                i += 1;
            }
            '"' => {
                let mut text = String::new();
                i += 1;
                loop {
                    match chars.get(i) {
                        None | Some('\n') => return Err("unterminated quoted string".to_owned()),
                        Some('"') => break,
                        Some('\\') => {
                            let escaped = match chars.get(i + 1) {
                                Some('n') => '\n',
                                Some('t') => '\t',
                                Some('r') => '\r',
                                Some('\\') => '\\',
                                Some('"') => '"',
                                Some('\'') => '\'',
                                _ => return Err("unsupported escape in string".to_owned()),
                            };
                            text.push(escaped);
                            i += 2;
                        }
                        Some(other) => {
                            text.push(*other);
                            i += 1;
                        }
                    }
                }
                out.push(Tok::Str(text));
                i += 1;
            }
            '`' => {
                let start = i + 1;
                let end = chars
                    .get(start..)
                    .and_then(|rest| rest.iter().position(|c| *c == '`'))
                    .ok_or("unterminated raw quoted string")?;
                out.push(Tok::Str(
                    chars
                        .get(start..start + end)
                        .unwrap_or_default()
                        .iter()
                        .collect(),
                ));
                i = start + end + 1;
            }
            '$' => {
                let start = i;
                i += 1;
                while chars.get(i).is_some_and(|c| word_char(*c)) {
                    i += 1;
                }
                let text: String = chars.get(start..i).unwrap_or_default().iter().collect();
                let (name, fields) = match text.split_once('.') {
                    Some((name, fields)) => (name.to_owned(), field_chain(fields)),
                    None => (text, Vec::new()),
                };
                out.push(Tok::Var(name, fields));
            }
            '.' if !chars.get(i + 1).is_some_and(char::is_ascii_digit) => {
                let start = i;
                i += 1;
                while chars.get(i).is_some_and(|c| word_char(*c)) {
                    i += 1;
                }
                let text: String = chars.get(start..i).unwrap_or_default().iter().collect();
                if text == "." {
                    out.push(Tok::Dot);
                } else {
                    out.push(Tok::Field(field_chain(&text)));
                }
            }
            c if c.is_ascii_digit() || c == '-' || c == '+' || c == '.' => {
                let start = i;
                i += 1;
                while chars.get(i).is_some_and(|c| {
                    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '+' | '-')
                }) {
                    i += 1;
                }
                out.push(Tok::Num(
                    chars.get(start..i).unwrap_or_default().iter().collect(),
                ));
            }
            c if c.is_alphabetic() || c == '_' => {
                let start = i;
                while chars
                    .get(i)
                    .is_some_and(|c| c.is_alphanumeric() || *c == '_')
                {
                    i += 1;
                }
                out.push(Tok::Word(
                    chars.get(start..i).unwrap_or_default().iter().collect(),
                ));
            }
            other => return Err(format!("unexpected {other:?} in action")),
        }
    }
    Ok(out)
}

/// The functions this subset has.
const FUNCTIONS: &[&str] = &[
    "and", "eq", "ge", "gt", "index", "le", "len", "lt", "ne", "not", "or", "print", "println",
];

struct PipelineParser<'t> {
    toks: &'t [Tok],
    pos: usize,
    depth: usize,
}

impl PipelineParser<'_> {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }

    fn pipeline(&mut self) -> Result<Pipeline, Fail> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err("parentheses nest too deep".to_owned());
        }
        let mut vars = Vec::new();
        let mut declare = false;
        // `$a, $b :=` or `$a :=` / `$a =`.
        let save = self.pos;
        while let Some(Tok::Var(name, fields)) = self.peek() {
            if !fields.is_empty() {
                break;
            }
            vars.push(name.clone());
            self.pos += 1;
            match self.peek() {
                Some(Tok::Comma) => self.pos += 1,
                Some(Tok::Declare) => {
                    declare = true;
                    self.pos += 1;
                    break;
                }
                Some(Tok::Assign) => {
                    self.pos += 1;
                    break;
                }
                _ => {
                    vars.clear();
                    self.pos = save;
                    break;
                }
            }
        }
        if !vars.is_empty() && self.pos == save {
            vars.clear();
        }
        let mut commands = Vec::new();
        let mut command = Vec::new();
        loop {
            match self.peek().cloned() {
                None | Some(Tok::Close) => break,
                Some(Tok::Pipe) => {
                    self.pos += 1;
                    if command.is_empty() {
                        return Err("missing command before |".to_owned());
                    }
                    commands.push(std::mem::take(&mut command));
                }
                Some(Tok::Open) => {
                    self.pos += 1;
                    let inner = self.pipeline()?;
                    if self.peek() != Some(&Tok::Close) {
                        return Err("unclosed left paren".to_owned());
                    }
                    self.pos += 1;
                    if let Some(Tok::Field(fields)) = self.peek().cloned() {
                        self.pos += 1;
                        command.push(Arg::SubField(Box::new(inner), fields));
                    } else {
                        command.push(Arg::Sub(Box::new(inner)));
                    }
                }
                Some(Tok::Dot) => {
                    self.pos += 1;
                    command.push(Arg::Dot);
                }
                Some(Tok::Field(fields)) => {
                    self.pos += 1;
                    command.push(Arg::Field(fields));
                }
                Some(Tok::Var(name, fields)) => {
                    self.pos += 1;
                    command.push(Arg::Var(name, fields));
                }
                Some(Tok::Str(s)) => {
                    self.pos += 1;
                    command.push(Arg::Const(V::Str(s)));
                }
                Some(Tok::Num(text)) => {
                    self.pos += 1;
                    command.push(Arg::Const(number(&text)?));
                }
                Some(Tok::Word(word)) => {
                    self.pos += 1;
                    command.push(match word.as_str() {
                        "true" => Arg::Const(V::Bool(true)),
                        "false" => Arg::Const(V::Bool(false)),
                        "nil" => Arg::Const(V::Nil),
                        name if FUNCTIONS.contains(&name) => Arg::Func(name.to_owned()),
                        name => return Err(format!("function {name:?} not defined")),
                    });
                }
                Some(other) => return Err(format!("unexpected {other:?} in command")),
            }
        }
        if !command.is_empty() {
            commands.push(command);
        }
        if commands.is_empty() {
            return Err("missing value for command".to_owned());
        }
        self.depth -= 1;
        Ok(Pipeline {
            vars,
            declare,
            commands,
        })
    }
}

/// A number constant: an int, else a float.
fn number(text: &str) -> Result<V, Fail> {
    let plain = text.replace('_', "");
    if let Ok(n) = plain.parse::<i64>() {
        return Ok(V::Int(n));
    }
    if let Some(hex) = plain
        .strip_prefix("0x")
        .or_else(|| plain.strip_prefix("0X"))
        && let Ok(n) = i64::from_str_radix(hex, 16)
    {
        return Ok(V::Int(n));
    }
    plain
        .parse::<f64>()
        .map(V::Float)
        .map_err(|_| format!("bad number syntax: {text:?}"))
}

fn parse_pipeline(toks: &[Tok]) -> Result<Pipeline, Fail> {
    let mut parser = PipelineParser {
        toks,
        pos: 0,
        depth: 0,
    };
    let pipeline = parser.pipeline()?;
    if parser.pos != toks.len() {
        return Err("unexpected right paren".to_owned());
    }
    Ok(pipeline)
}

/// How a list of nodes ended.
enum Closing {
    Eof,
    End,
    /// `else`, with what follows it (`if …`, `with …`) if anything.
    Else(Vec<Tok>),
}

struct TreeParser {
    parts: std::vec::IntoIter<(bool, String)>,
    depth: usize,
}

impl TreeParser {
    fn list(&mut self) -> Result<(Vec<Node>, Closing), Fail> {
        let mut nodes = Vec::new();
        while let Some((is_action, text)) = self.parts.next() {
            if !is_action {
                if !text.is_empty() {
                    nodes.push(Node::Text(text));
                }
                continue;
            }
            let toks = tokens(&text)?;
            match toks.split_first() {
                Some((Tok::Word(w), rest)) if w == "end" => {
                    if !rest.is_empty() {
                        return Err("unexpected tokens after end".to_owned());
                    }
                    return Ok((nodes, Closing::End));
                }
                Some((Tok::Word(w), rest)) if w == "else" => {
                    return Ok((nodes, Closing::Else(rest.to_vec())));
                }
                Some((Tok::Word(w), rest)) if matches!(w.as_str(), "if" | "range" | "with") => {
                    nodes.push(self.block(w, rest)?);
                }
                Some((Tok::Word(w), _))
                    if matches!(
                        w.as_str(),
                        "define" | "template" | "block" | "break" | "continue"
                    ) =>
                {
                    return Err(format!("{w} is not supported"));
                }
                _ => nodes.push(Node::Action(parse_pipeline(&toks)?)),
            }
        }
        Ok((nodes, Closing::Eof))
    }

    /// A block opened by `keyword` with the pipeline `rest`, up to its `end`.
    fn block(&mut self, keyword: &str, rest: &[Tok]) -> Result<Node, Fail> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err("blocks nest too deep".to_owned());
        }
        let pipeline = parse_pipeline(rest)?;
        let (body, end) = self.list()?;
        let otherwise = match end {
            Closing::Eof => return Err(format!("unexpected EOF: {keyword} without end")),
            Closing::End => Vec::new(),
            Closing::Else(after) => match after.split_first() {
                None => match self.list()? {
                    (nodes, Closing::End) => nodes,
                    _ => return Err(format!("expected end after else of {keyword}")),
                },
                // `else if …` / `else with …`: a nested block sharing the `end`.
                Some((Tok::Word(w), chained)) if w == keyword && keyword != "range" => {
                    vec![self.block(keyword, chained)?]
                }
                _ => return Err("unexpected tokens after else".to_owned()),
            },
        };
        self.depth -= 1;
        Ok(match keyword {
            "if" => Node::If(pipeline, body, otherwise),
            "range" => Node::Range(pipeline, body, otherwise),
            _ => Node::With(pipeline, body, otherwise),
        })
    }
}

fn parse(template: &str) -> Result<Vec<Node>, Fail> {
    let mut parser = TreeParser {
        parts: split(template)?.into_iter(),
        depth: 0,
    };
    match parser.list()? {
        (nodes, Closing::Eof) => Ok(nodes),
        (_, Closing::End) => Err("unexpected {{end}}".to_owned()),
        (_, Closing::Else(_)) => Err("unexpected {{else}}".to_owned()),
    }
}

struct Exec<'d> {
    root: &'d V,
    vars: Vec<(String, V)>,
    out: String,
    steps: usize,
}

impl Exec<'_> {
    fn step(&mut self) -> Result<(), Fail> {
        self.steps += 1;
        if self.steps > MAX_STEPS {
            return Err(format!("more than {MAX_STEPS} steps"));
        }
        if self.out.len() > super::limits::MAX_BYTES {
            return Err(format!(
                "the result is above the cap of {} bytes",
                super::limits::MAX_BYTES
            ));
        }
        Ok(())
    }

    fn nodes(&mut self, nodes: &[Node], dot: &V) -> Result<(), Fail> {
        let mark = self.vars.len();
        for node in nodes {
            self.step()?;
            match node {
                Node::Text(text) => self.out.push_str(text),
                Node::Action(pipeline) => {
                    let value = self.pipeline(pipeline, dot)?;
                    if pipeline.vars.is_empty() {
                        match value {
                            V::Nil => self.out.push_str("<no value>"),
                            other => other.print(&mut self.out),
                        }
                    }
                }
                Node::If(pipeline, then, otherwise) => {
                    let inner = self.vars.len();
                    let branch = if self.pipeline(pipeline, dot)?.truthy() {
                        then
                    } else {
                        otherwise
                    };
                    self.nodes(branch, dot)?;
                    self.vars.truncate(inner);
                }
                Node::With(pipeline, body, otherwise) => {
                    let inner = self.vars.len();
                    let value = self.pipeline(pipeline, dot)?;
                    if value.truthy() {
                        self.nodes(body, &value)?;
                    } else {
                        self.nodes(otherwise, dot)?;
                    }
                    self.vars.truncate(inner);
                }
                Node::Range(pipeline, body, otherwise) => {
                    let inner = self.vars.len();
                    let value = self.commands(&pipeline.commands, dot)?;
                    let items: Vec<(V, V)> = match value {
                        V::List(items) => items
                            .into_iter()
                            .enumerate()
                            .map(|(i, v)| (V::Int(i64::try_from(i).unwrap_or(i64::MAX)), v))
                            .collect(),
                        V::Map(map) => map.into_iter().map(|(k, v)| (V::Str(k), v)).collect(),
                        V::Nil => Vec::new(),
                        // Go 1.22: a range over an integer counts from 0.
                        V::Int(n) => (0..n.max(0)).map(|i| (V::Int(i), V::Int(i))).collect(),
                        other => return Err(format!("range can't iterate over {}", other.kind())),
                    };
                    if items.is_empty() {
                        self.nodes(otherwise, dot)?;
                    }
                    for (key, item) in items {
                        self.step()?;
                        match pipeline.vars.as_slice() {
                            [] => {}
                            [value] => self.vars.push((value.clone(), item.clone())),
                            [index, value] => {
                                self.vars.push((index.clone(), key));
                                self.vars.push((value.clone(), item.clone()));
                            }
                            _ => return Err("too many declarations in range".to_owned()),
                        }
                        self.nodes(body, &item)?;
                        self.vars.truncate(inner);
                    }
                }
            }
        }
        self.vars.truncate(mark);
        Ok(())
    }

    /// A pipeline's value, its variables declared or assigned.
    fn pipeline(&mut self, pipeline: &Pipeline, dot: &V) -> Result<V, Fail> {
        let value = self.commands(&pipeline.commands, dot)?;
        for name in &pipeline.vars {
            if pipeline.declare {
                self.vars.push((name.clone(), value.clone()));
            } else {
                let slot = self
                    .vars
                    .iter_mut()
                    .rev()
                    .find(|(n, _)| n == name)
                    .ok_or_else(|| format!("undefined variable: {name}"))?;
                slot.1 = value.clone();
            }
        }
        Ok(value)
    }

    fn commands(&mut self, commands: &[Vec<Arg>], dot: &V) -> Result<V, Fail> {
        let mut piped: Option<V> = None;
        for command in commands {
            piped = Some(self.command(command, dot, piped)?);
        }
        Ok(piped.unwrap_or(V::Nil))
    }

    fn command(&mut self, command: &[Arg], dot: &V, piped: Option<V>) -> Result<V, Fail> {
        let Some((first, rest)) = command.split_first() else {
            return Err("empty command".to_owned());
        };
        if let Arg::Func(name) = first {
            let mut args = Vec::with_capacity(rest.len() + 1);
            for arg in rest {
                args.push(self.arg(arg, dot)?);
            }
            args.extend(piped);
            return call(name, args);
        }
        if !rest.is_empty() || piped.is_some() {
            return Err("can't give argument to non-function".to_owned());
        }
        self.arg(first, dot)
    }

    fn arg(&mut self, arg: &Arg, dot: &V) -> Result<V, Fail> {
        match arg {
            Arg::Dot => Ok(dot.clone()),
            Arg::Field(fields) => fields_of(dot, fields),
            Arg::Var(name, fields) => {
                let value = if name == "$" {
                    self.root.clone()
                } else {
                    self.vars
                        .iter()
                        .rev()
                        .find(|(n, _)| n == name)
                        .map(|(_, v)| v.clone())
                        .ok_or_else(|| format!("undefined variable: {name}"))?
                };
                fields_of(&value, fields)
            }
            Arg::Const(value) => Ok(value.clone()),
            Arg::Func(name) => call(name, Vec::new()),
            Arg::Sub(pipeline) => self.pipeline(pipeline, dot),
            Arg::SubField(pipeline, fields) => {
                let value = self.pipeline(pipeline, dot)?;
                fields_of(&value, fields)
            }
        }
    }
}

/// `value.a.b`: a missing key is an error (`missingkey=error`).
fn fields_of(value: &V, fields: &[String]) -> Result<V, Fail> {
    let mut current = value.clone();
    for field in fields {
        current = match current {
            V::Map(mut map) => map
                .remove(field)
                .ok_or_else(|| format!("map has no entry for key {field:?}"))?,
            V::Nil => return Err(format!("nil pointer evaluating interface {{}}.{field}")),
            other => {
                return Err(format!(
                    "can't evaluate field {field} in type {}",
                    other.kind()
                ));
            }
        };
    }
    Ok(current)
}

/// Go's comparison of two basic values (`eq`, `lt`, …): numbers with numbers, strings
/// with strings, booleans with booleans (for equality).
fn compare(a: &V, b: &V) -> Result<std::cmp::Ordering, Fail> {
    use std::cmp::Ordering;
    match (a, b) {
        (V::Int(x), V::Int(y)) => Ok(x.cmp(y)),
        (V::Int(_) | V::Float(_), V::Int(_) | V::Float(_)) => {
            let (x, y) = (as_f64(a), as_f64(b));
            x.partial_cmp(&y)
                .ok_or_else(|| "NaN in comparison".to_owned())
        }
        (V::Str(x), V::Str(y)) => Ok(x.cmp(y)),
        (V::Bool(x), V::Bool(y)) if x == y => Ok(Ordering::Equal),
        (V::Bool(_), V::Bool(_)) => Ok(Ordering::Less),
        _ => Err("incompatible types for comparison".to_owned()),
    }
}

fn as_f64(v: &V) -> f64 {
    match v {
        V::Int(n) => *n as f64,
        V::Float(f) => *f,
        _ => 0.0,
    }
}

fn arity(name: &str, args: &[V], n: usize) -> Result<(), Fail> {
    if args.len() == n {
        Ok(())
    } else {
        Err(format!(
            "wrong number of args for {name}: want {n} got {}",
            args.len()
        ))
    }
}

fn call(name: &str, args: Vec<V>) -> Result<V, Fail> {
    use std::cmp::Ordering;
    match name {
        "and" | "or" => {
            if args.is_empty() {
                return Err(format!(
                    "wrong number of args for {name}: want at least 1 got 0"
                ));
            }
            let want = name == "or";
            let mut last = V::Nil;
            for arg in args {
                if arg.truthy() == want {
                    return Ok(arg);
                }
                last = arg;
            }
            Ok(last)
        }
        "not" => {
            arity(name, &args, 1)?;
            Ok(V::Bool(!args.first().is_some_and(V::truthy)))
        }
        "len" => {
            arity(name, &args, 1)?;
            let n = match args.first() {
                Some(V::Str(s)) => s.len(),
                Some(V::List(items)) => items.len(),
                Some(V::Map(map)) => map.len(),
                Some(other) => return Err(format!("len of type {}", other.kind())),
                None => 0,
            };
            Ok(V::Int(i64::try_from(n).unwrap_or(i64::MAX)))
        }
        "index" => {
            let mut args = args.into_iter();
            let mut current = args.next().ok_or("wrong number of args for index")?;
            for key in args {
                current = match (current, key) {
                    (V::Map(mut map), V::Str(k)) => map.remove(&k).unwrap_or(V::Nil),
                    (V::List(items), V::Int(i)) => usize::try_from(i)
                        .ok()
                        .and_then(|i| items.into_iter().nth(i))
                        .ok_or_else(|| format!("error calling index: index out of range: {i}"))?,
                    (V::Nil, _) => return Err("index of untyped nil".to_owned()),
                    (target, key) => {
                        return Err(format!(
                            "can't index item of type {} with {}",
                            target.kind(),
                            key.kind()
                        ));
                    }
                };
            }
            Ok(current)
        }
        "eq" => {
            let (first, others) = args
                .split_first()
                .ok_or("missing argument for comparison")?;
            if others.is_empty() {
                return Err("missing argument for comparison".to_owned());
            }
            for other in others {
                if compare(first, other)? == Ordering::Equal {
                    return Ok(V::Bool(true));
                }
            }
            Ok(V::Bool(false))
        }
        "ne" | "lt" | "le" | "gt" | "ge" => {
            arity(name, &args, 2)?;
            let (Some(a), Some(b)) = (args.first(), args.get(1)) else {
                return Err("missing argument for comparison".to_owned());
            };
            if name != "ne" && matches!(a, V::Bool(_)) {
                return Err("invalid type for comparison".to_owned());
            }
            let order = compare(a, b)?;
            Ok(V::Bool(match name {
                "ne" => order != Ordering::Equal,
                "lt" => order == Ordering::Less,
                "le" => order != Ordering::Greater,
                "gt" => order == Ordering::Greater,
                _ => order != Ordering::Less,
            }))
        }
        "print" | "println" => {
            // fmt.Sprint: a space between operands when neither is a string; Sprintln:
            // always, and a line break at the end.
            let mut out = String::new();
            for (i, arg) in args.iter().enumerate() {
                let spaced = name == "println"
                    || (i > 0
                        && !matches!(arg, V::Str(_))
                        && !args.get(i - 1).is_some_and(|p| matches!(p, V::Str(_))));
                if i > 0 && spaced {
                    out.push(' ');
                }
                arg.print(&mut out);
            }
            if name == "println" {
                out.push('\n');
            }
            Ok(V::Str(out))
        }
        other => Err(format!("function {other:?} not defined")),
    }
}

/// `strings.render_template(template, vars)`.
pub(super) fn render_template(args: &Args<'_>) -> Result<Value, BuiltinError> {
    let template = args.string(0)?;
    args.object(1)?;
    if template.len() > MAX_TEMPLATE {
        return Err(args.invalid(format!(
            "the template is {} bytes, above the cap of {MAX_TEMPLATE}",
            template.len()
        )));
    }
    let nodes = parse(template).map_err(|e| args.invalid(format!("template: template: {e}")))?;
    let root = V::from_value(args.get(1)?);
    let mut exec = Exec {
        root: &root,
        vars: vec![("$".to_owned(), root.clone())],
        out: String::new(),
        steps: 0,
    };
    exec.nodes(&nodes, &root)
        .map_err(|e| args.invalid(format!("template: template: executing \"template\": {e}")))?;
    exec.step()
        .map_err(|e| args.invalid(format!("template: template: {e}")))?;
    Ok(Value::from(exec.out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(template: &str, vars: &str) -> Result<String, String> {
        let values = [Value::from(template), Value::from_json_str(vars).unwrap()];
        render_template(&Args {
            name: "strings.render_template",
            values: &values,
        })
        .map(|v| v.as_string().unwrap().to_string())
        .map_err(|e| e.to_string())
    }

    #[test]
    fn fields_ranges_and_conditions_as_go() {
        assert_eq!(
            render("{{.test}}", r#"{"test": "hello world"}"#).unwrap(),
            "hello world"
        );
        assert_eq!(render("{{.test}}", r#"{"test": 2023}"#).unwrap(), "2023");
        assert_eq!(
            render(
                "{{range $i, $name := .names}}{{if $i}},{{end}}hello {{$name}}{{end}}",
                r#"{"names": ["rohan", "john doe"]}"#
            )
            .unwrap(),
            "hello rohan,hello john doe"
        );
        assert_eq!(
            render(
                "{{- range $k, $v := .m }}\n{{ $k }}={{ $v }};{{ end -}}\n{{ with .x }}{{ .y }}{{ else }}none{{ end }}",
                r#"{"m": {"b": 2, "a": [1, "z"]}, "x": {"y": {"k": null}}}"#
            )
            .unwrap(),
            "\na=[1 z];\nb=2;map[k:<nil>]"
        );
        assert_eq!(
            render(
                r#"{{if eq .a "x"}}A{{else if not .b}}B{{else}}C{{end}} {{len .l | print "n="}} {{index .l 1}} {{/* c */}}{{$}}"#,
                r#"{"a": "y", "b": false, "l": [3, 4]}"#
            )
            .unwrap(),
            "B n=2 4 map[a:y b:false l:[3 4]]"
        );
        assert!(
            render("{{.missing}}", "{}")
                .unwrap_err()
                .contains("map has no entry for key")
        );
        assert_eq!(render("{{.n}}", r#"{"n": null}"#).unwrap(), "<no value>");
        assert_eq!(render("{{range 3}}{{.}}{{end}}", "{}").unwrap(), "012");
        assert_eq!(
            render("{{ $x := 1 }}{{ $x = 2 }}{{ $x }}", "{}").unwrap(),
            "2"
        );
        assert_eq!(
            render("{{ lt 1 2.5 }} {{ and 1 0 }} {{ or 0 \"\" }}", "{}").unwrap(),
            "true 0 "
        );
    }

    #[test]
    fn malformed_and_unsupported_templates_are_errors() {
        for bad in [
            "{{.a",
            "{{if .a}}x",
            "{{end}}",
            "{{template \"x\"}}",
            "{{nosuch 1}}",
            "{{range 1.5}}{{end}}",
            "{{\"a}}",
            "{{1 2}}",
            "{{(.a}}",
            "{{ lt true false }}",
            "{{ $y }}",
            "{{ eq 1 \"a\" }}",
        ] {
            assert!(render(bad, r#"{"a": 1}"#).is_err(), "{bad}");
        }
        let deep = "{{if 1}}".repeat(MAX_DEPTH + 1);
        assert!(render(&deep, "{}").is_err());
        let slow = "{{range .l}}{{range $.l}}{{range $.l}}{{end}}{{end}}{{end}}";
        let list = format!("{{\"l\": [{}]}}", vec!["1"; 200].join(","));
        assert!(render(slow, &list).unwrap_err().contains("steps"));
    }
}
