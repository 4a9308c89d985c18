//! `json.verify_schema` and `json.match_schema`: JSON Schema (drafts 4, 6 and 7, draft 7
//! when the schema names none) checked by the `jsonschema` crate, answered in the shape
//! and words of OPA, whose validator is gojsonschema.
//!
//! - `json.verify_schema(schema)`: `[true, null]` for a usable schema, else
//!   `[false, "jsonschema: <why>"]`.
//! - `json.match_schema(document, schema)`: `[true, []]` when the document matches, else
//!   `[false, errors]`, each error an object of `error` (`"<field>: <desc>"`), `type`
//!   (gojsonschema's name of the failed keyword, `invalid_type`, `required`, …), `field`
//!   (the path of the value in error, dot-separated, `(root)` for the whole document) and
//!   `desc` (gojsonschema's description). A schema that is not usable, or an argument that
//!   is not a string or an object, is a built-in error.
//!
//! Either argument may be a JSON string or a value (an object; an array too). References
//! (`$ref`) are resolved within the schema only: a remote or file reference is an error,
//! never fetched. Arguments are capped at [`MAX_BYTES`] of JSON.
//!
//! Differences from OPA: the errors come from a different validator, so for `anyOf`,
//! `oneOf`, `allOf` and `if`/`then`/`else` the sub-schemas' own errors OPA adds after the
//! keyword's error are not listed, and errors may come in another order; a schema's own
//! mistakes are described in gojsonschema's words for a type name that is not one
//! (`has a primitive type that is NOT VALID …`), in the `jsonschema` crate's otherwise.

use std::fmt::Write as _;

use regorus::Value;
use serde_json::Value as Json;

use super::{Args, BuiltinError};

/// The longest JSON text of a document or a schema: 4 MiB.
pub(crate) const MAX_BYTES: usize = 4 << 20;

/// gojsonschema's list of type names, as its error about an invalid one prints it.
const VALID_TYPES: &str = "[array boolean integer number null object string]";

/// Argument `i` as JSON: a string is parsed, an object or an array converted.
fn json_argument(args: &Args<'_>, i: usize) -> Result<Json, String> {
    match args.get(i).map_err(|e| e.to_string())? {
        Value::String(text) => {
            if text.len() > MAX_BYTES {
                return Err(too_large(text.len()));
            }
            serde_json::from_str(text).map_err(|_| "invalid JSON string".to_owned())
        }
        value @ (Value::Object(_) | Value::Array(_)) => {
            let text = value.to_json_str().map_err(|e| e.to_string())?;
            if text.len() > MAX_BYTES {
                return Err(too_large(text.len()));
            }
            serde_json::from_str(&text).map_err(|e| e.to_string())
        }
        _ => Err("wrong type, expected string or object".to_owned()),
    }
}

fn too_large(size: usize) -> String {
    format!("{size} bytes of JSON, above the cap of {MAX_BYTES}")
}

/// `schema` compiled, or why it cannot be.
fn compile(schema: &Json) -> Result<jsonschema::Validator, String> {
    if let Some(message) = invalid_type_name(schema) {
        return Err(message);
    }
    jsonschema::options()
        .with_draft(jsonschema::Draft::Draft7)
        .should_validate_formats(true)
        .with_retriever(NoRetrieval)
        .build(schema)
        .map_err(|e| e.to_string())
}

/// Refuses every reference outside the schema itself (the crate's own default would too,
/// without its network and file features; this says so whatever the features).
struct NoRetrieval;

impl jsonschema::Retrieve for NoRetrieval {
    fn retrieve(
        &self,
        uri: &jsonschema::Uri<String>,
    ) -> Result<Json, Box<dyn std::error::Error + Send + Sync>> {
        Err(format!(
            "reference {} is outside the schema and is not fetched",
            uri.as_str()
        )
        .into())
    }
}

/// gojsonschema's error for a `type` keyword naming no JSON Schema type, if the schema has
/// one (looked for in every sub-schema the validator would read).
fn invalid_type_name(schema: &Json) -> Option<String> {
    let Json::Object(map) = schema else {
        return None;
    };
    if let Some(kind) = map.get("type") {
        let names: Vec<&Json> = match kind {
            Json::Array(items) => items.iter().collect(),
            other => vec![other],
        };
        for name in names {
            if let Json::String(name) = name
                && !matches!(
                    name.as_str(),
                    "array" | "boolean" | "integer" | "number" | "null" | "object" | "string"
                )
            {
                return Some(format!(
                    "has a primitive type that is NOT VALID -- given: /{name}/ Expected valid values are:{VALID_TYPES}"
                ));
            }
        }
    }
    for (keyword, value) in map {
        let found = match keyword.as_str() {
            "properties" | "patternProperties" | "definitions" | "$defs" | "dependencies" => {
                match value {
                    Json::Object(children) => children.values().find_map(invalid_type_name),
                    _ => None,
                }
            }
            "items" | "allOf" | "anyOf" | "oneOf" => match value {
                Json::Array(children) => children.iter().find_map(invalid_type_name),
                other => invalid_type_name(other),
            },
            "additionalProperties"
            | "additionalItems"
            | "not"
            | "if"
            | "then"
            | "else"
            | "contains"
            | "propertyNames" => invalid_type_name(value),
            _ => None,
        };
        if found.is_some() {
            return found;
        }
    }
    None
}

/// `json.verify_schema(schema)`.
pub(super) fn verify_schema(args: &Args<'_>) -> Result<Value, BuiltinError> {
    let verdict = json_argument(args, 0).and_then(|schema| compile(&schema).map(|_| ()));
    Ok(Value::from(match verdict {
        Ok(()) => vec![Value::from(true), Value::Null],
        Err(why) => vec![
            Value::from(false),
            Value::from(format!("jsonschema: {why}")),
        ],
    }))
}

/// `json.match_schema(document, schema)`.
pub(super) fn match_schema(args: &Args<'_>) -> Result<Value, BuiltinError> {
    let document = json_argument(args, 0).map_err(|why| args.invalid(why))?;
    let schema = json_argument(args, 1).map_err(|why| args.invalid(why))?;
    let validator = compile(&schema).map_err(|why| args.invalid(why))?;
    let mut errors = Vec::new();
    for error in validator.iter_errors(&document) {
        describe(&error, &schema, &mut errors);
    }
    Ok(Value::from(vec![
        Value::from(errors.is_empty()),
        Value::from(errors),
    ]))
}

/// gojsonschema's field of a value: the path from the document's root, dot-separated,
/// `(root)` for the root itself.
fn field(pointer: &str) -> String {
    if pointer.is_empty() {
        return "(root)".to_owned();
    }
    pointer
        .trim_start_matches('/')
        .split('/')
        .map(|segment| segment.replace("~1", "/").replace("~0", "~"))
        .collect::<Vec<_>>()
        .join(".")
}

/// gojsonschema's name of the type of `value` (an integral number is `integer`).
fn given_type(value: &Json) -> &'static str {
    match value {
        Json::Null => "null",
        Json::Bool(_) => "boolean",
        Json::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Json::Number(n) if n.as_f64().is_some_and(|f| f.fract() == 0.0) => "integer",
        Json::Number(_) => "number",
        Json::String(_) => "string",
        Json::Array(_) => "array",
        Json::Object(_) => "object",
    }
}

/// The `type` keyword's value as gojsonschema prints it: one name, or `[a,b]` in the
/// schema's order.
fn expected_types(
    error: &jsonschema::ValidationError<'_>,
    schema: &Json,
    kind: &jsonschema::error::TypeKind,
) -> String {
    if let Some(declared) = schema.pointer(error.schema_path.as_str()) {
        match declared {
            Json::String(name) => return name.clone(),
            Json::Array(names) => {
                let names: Vec<&str> = names.iter().filter_map(Json::as_str).collect();
                return format!("[{}]", names.join(","));
            }
            _ => {}
        }
    }
    match kind {
        jsonschema::error::TypeKind::Single(one) => one.to_string(),
        jsonschema::error::TypeKind::Multiple(set) => {
            let names: Vec<String> = set.iter().map(|t| t.to_string()).collect();
            format!("[{}]", names.join(","))
        }
    }
}

/// A number as Go's `%v` prints a JSON number (integers without a fraction).
fn number(value: &Json) -> String {
    match value {
        Json::Number(n) => n.to_string(),
        other => other.to_string(),
    }
}

/// Appends the OPA error objects `error` stands for (one per unexpected property for
/// `additionalProperties`).
fn describe(error: &jsonschema::ValidationError<'_>, schema: &Json, out: &mut Vec<Value>) {
    use jsonschema::error::ValidationErrorKind as K;
    let at = field(error.instance_path.as_str());
    let mut push = |kind: &str, field: &str, desc: String| {
        out.push(error_object(kind, field, desc));
    };
    match &error.kind {
        K::Type { kind } => push(
            "invalid_type",
            &at,
            format!(
                "Invalid type. Expected: {}, given: {}",
                expected_types(error, schema, kind),
                given_type(&error.instance)
            ),
        ),
        K::Required { property } => {
            let name = property
                .as_str()
                .map_or_else(|| property.to_string(), str::to_owned);
            push("required", &at, format!("{name} is required"));
        }
        K::AdditionalProperties { unexpected } => {
            for property in unexpected {
                push(
                    "additional_property_not_allowed",
                    &at,
                    format!("Additional property {property} is not allowed"),
                );
            }
        }
        K::Enum { options } => {
            let allowed = match options {
                Json::Array(items) if items.is_empty() => "(none)".to_owned(),
                Json::Array(items) => items
                    .iter()
                    .map(Json::to_string)
                    .collect::<Vec<_>>()
                    .join(", "),
                other => other.to_string(),
            };
            push(
                "enum",
                &at,
                format!("{at} must be one of the following: {allowed}"),
            );
        }
        K::Constant { expected_value } => push(
            "const",
            &at,
            format!("{at} does not match: {expected_value}"),
        ),
        K::AnyOf => push(
            "number_any_of",
            &at,
            "Must validate at least one schema (anyOf)".to_owned(),
        ),
        K::OneOfMultipleValid | K::OneOfNotValid => push(
            "number_one_of",
            &at,
            "Must validate one and only one schema (oneOf)".to_owned(),
        ),
        K::Not { .. } => push(
            "number_not",
            &at,
            "Must not validate the schema (not)".to_owned(),
        ),
        K::FalseSchema => push("false", &at, "False always fails validation".to_owned()),
        K::Contains => push(
            "contains",
            &at,
            "At least one of the items must match".to_owned(),
        ),
        K::AdditionalItems { .. } => push(
            "array_no_additional_items",
            &at,
            "No additional items allowed on array".to_owned(),
        ),
        K::MinItems { limit } => push(
            "array_min_items",
            &at,
            format!("Array must have at least {limit} items"),
        ),
        K::MaxItems { limit } => push(
            "array_max_items",
            &at,
            format!("Array must have at most {limit} items"),
        ),
        K::UniqueItems => push("unique", &at, unique_description(&error.instance)),
        K::MinProperties { limit } => push(
            "array_min_properties",
            &at,
            format!("Must have at least {limit} properties"),
        ),
        K::MaxProperties { limit } => push(
            "array_max_properties",
            &at,
            format!("Must have at most {limit} properties"),
        ),
        K::MinLength { limit } => push(
            "string_gte",
            &at,
            format!("String length must be greater than or equal to {limit}"),
        ),
        K::MaxLength { limit } => push(
            "string_lte",
            &at,
            format!("String length must be less than or equal to {limit}"),
        ),
        K::Pattern { pattern } => push(
            "pattern",
            &at,
            format!("Does not match pattern '{pattern}'"),
        ),
        K::Format { format } => push("format", &at, format!("Does not match format '{format}'")),
        K::MultipleOf { multiple_of } => push(
            "multiple_of",
            &at,
            format!("Must be a multiple of {multiple_of}"),
        ),
        K::Minimum { limit } => push(
            "number_gte",
            &at,
            format!("Must be greater than or equal to {}", number(limit)),
        ),
        K::ExclusiveMinimum { limit } => push(
            "number_gt",
            &at,
            format!("Must be greater than {}", number(limit)),
        ),
        K::Maximum { limit } => push(
            "number_lte",
            &at,
            format!("Must be less than or equal to {}", number(limit)),
        ),
        K::ExclusiveMaximum { limit } => push(
            "number_lt",
            &at,
            format!("Must be less than {}", number(limit)),
        ),
        K::PropertyNames { error: inner } => {
            let name = inner.instance.as_str().unwrap_or_default().to_owned();
            push(
                "invalid_property_name",
                &at,
                format!("Property name of \"{name}\" does not match"),
            );
        }
        _ => push("internal", &at, format!("Internal Error {error}")),
    }
}

/// gojsonschema's description of repeated array items: the first two equal positions.
fn unique_description(instance: &Json) -> String {
    let mut description = String::from("array items");
    if let Json::Array(items) = instance {
        'outer: for (j, b) in items.iter().enumerate() {
            for (i, a) in items.iter().take(j).enumerate() {
                if a == b {
                    let _ = write!(description, "[{i},{j}]");
                    break 'outer;
                }
            }
        }
    }
    description.push_str(" must be unique");
    description
}

/// One error object as OPA builds it.
fn error_object(kind: &str, field: &str, desc: String) -> Value {
    let mut object = Value::new_object();
    if let Ok(map) = object.as_object_mut() {
        map.insert(
            Value::from("error"),
            Value::from(format!("{field}: {desc}")),
        );
        map.insert(Value::from("type"), Value::from(kind));
        map.insert(Value::from("field"), Value::from(field));
        map.insert(Value::from("desc"), Value::from(desc));
    }
    object
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

    #[test]
    fn documents_match_or_list_their_errors() {
        let schema = json(r#"{"properties": {"id": {"type": "integer"}}, "required": ["id"]}"#);
        let ok = call(
            "json.match_schema",
            match_schema,
            &[json(r#"{"id": 5}"#), schema.clone()],
        )
        .unwrap();
        assert_eq!(ok, json("[true, []]"));
        // Either may be a JSON string.
        let ok = call(
            "json.match_schema",
            match_schema,
            &[
                Value::from(r#"{"id": 5}"#),
                Value::from(r#"{"type": "object"}"#),
            ],
        )
        .unwrap();
        assert_eq!(ok, json("[true, []]"));
        let bad = call(
            "json.match_schema",
            match_schema,
            &[json(r#"{"id": "x"}"#), schema.clone()],
        )
        .unwrap();
        assert_eq!(
            bad,
            json(
                r#"[false, [{"desc": "Invalid type. Expected: integer, given: string", "error": "id: Invalid type. Expected: integer, given: string", "field": "id", "type": "invalid_type"}]]"#
            )
        );
        let missing = call("json.match_schema", match_schema, &[json("{}"), schema]).unwrap();
        assert_eq!(
            missing,
            json(
                r#"[false, [{"desc": "id is required", "error": "(root): id is required", "field": "(root)", "type": "required"}]]"#
            )
        );
        let nested = call(
            "json.match_schema",
            match_schema,
            &[
                json(r#"{"a": [1, "two"]}"#),
                json(r#"{"properties": {"a": {"items": {"type": ["integer", "null"]}}}}"#),
            ],
        )
        .unwrap();
        assert_eq!(
            nested,
            json(
                r#"[false, [{"desc": "Invalid type. Expected: [integer,null], given: string", "error": "a.1: Invalid type. Expected: [integer,null], given: string", "field": "a.1", "type": "invalid_type"}]]"#
            )
        );
        let empty_enum = call(
            "json.match_schema",
            match_schema,
            &[json("{}"), json(r#"{"enum": []}"#)],
        )
        .unwrap();
        assert_eq!(
            empty_enum,
            json(
                r#"[false, [{"desc": "(root) must be one of the following: (none)", "error": "(root): (root) must be one of the following: (none)", "field": "(root)", "type": "enum"}]]"#
            )
        );
    }

    #[test]
    fn unusable_schemas_and_arguments_are_errors() {
        let err = call(
            "json.match_schema",
            match_schema,
            &[
                json("{}"),
                json(r#"{"properties": {"id": {"type": "unknown"}}}"#),
            ],
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "json.match_schema: has a primitive type that is NOT VALID -- given: /unknown/ Expected valid values are:[array boolean integer number null object string]"
        );
        assert!(
            call(
                "json.match_schema",
                match_schema,
                &[Value::from(1), json("{}")]
            )
            .is_err()
        );
        assert!(
            call(
                "json.match_schema",
                match_schema,
                &[Value::from("{"), json("{}")]
            )
            .is_err()
        );
        assert!(
            call(
                "json.match_schema",
                match_schema,
                &[json("{}"), json(r#"{"minimum": "a"}"#)]
            )
            .is_err()
        );
        // A remote reference is refused, not fetched.
        assert!(
            call(
                "json.match_schema",
                match_schema,
                &[json("{}"), json(r#"{"$ref": "http://127.0.0.1:9/s.json"}"#)]
            )
            .is_err()
        );
        let big = Value::from(format!("\"{}\"", "x".repeat(MAX_BYTES)));
        assert!(call("json.match_schema", match_schema, &[big, json("{}")]).is_err());
    }

    #[test]
    fn schemas_are_verified() {
        assert_eq!(
            call(
                "json.verify_schema",
                verify_schema,
                &[json(r#"{"type": "string"}"#)]
            )
            .unwrap(),
            json("[true, null]")
        );
        let bad = call(
            "json.verify_schema",
            verify_schema,
            &[json(r#"{"type": "nope"}"#)],
        )
        .unwrap();
        let Value::Array(items) = bad else { panic!() };
        assert_eq!(items[0], Value::from(false));
        assert!(
            items[1]
                .as_string()
                .unwrap()
                .starts_with("jsonschema: has a primitive type")
        );
        let bad = call("json.verify_schema", verify_schema, &[Value::from(3)]).unwrap();
        assert_eq!(
            bad,
            json(r#"[false, "jsonschema: wrong type, expected string or object"]"#)
        );
    }
}
