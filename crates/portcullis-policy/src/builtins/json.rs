//! `json.patch`: RFC 6902 patches applied to any value, as OPA does; `json.is_valid`, false
//! (not an error) for a value that is not a string, as in OPA.

use regorus::{Rc, Value};

use super::{Args, BuiltinError};

/// `json.patch(object, patches)`: `object` with the JSON Patch operations of the array
/// `patches` applied in order (`add`, `remove`, `replace`, `move`, `copy`, `test`). A
/// path is a JSON pointer (`/a/0/~1b`, `~1` for `/` and `~0` for `~`; `""` is the whole
/// value) or an array of segments. A set's members are their own keys. Atomic, as in
/// OPA: if any operation fails or is malformed the result is undefined (not an error).
pub(super) fn patch(args: &Args<'_>) -> Result<Value, BuiltinError> {
    let target = args.get(0)?;
    let operations = args.array(1)?;
    Ok(apply(target, operations).unwrap_or(Value::Undefined))
}

/// `json.is_valid(x)`: whether `x` is a string holding one JSON value (numbers of any
/// size, as Go's `json.Valid`).
pub(super) fn is_valid(args: &Args<'_>) -> Result<Value, BuiltinError> {
    Ok(Value::from(match args.get(0)? {
        Value::String(s) => serde_json::from_str::<serde::de::IgnoredAny>(s).is_ok(),
        _ => false,
    }))
}

/// Why one operation failed (the call is then undefined, so this is not shown).
type Failed = ();

fn apply(target: &Value, operations: &[Value]) -> Result<Value, Failed> {
    // Changed in place: members are shared with `target` until first written
    // (copy-on-write), so each operation costs the length of its path, not the value's size.
    // `None`: the whole value was removed (only an `add` or `replace` of `""` brings it back).
    let mut value = Some(target.clone());
    for operation in operations {
        let Value::Object(operation) = operation else {
            return Err(());
        };
        let attribute = |name: &str| operation.get(&Value::from(name)).ok_or(());
        let Value::String(op) = attribute("op")? else {
            return Err(());
        };
        let path = parse_path(attribute("path")?)?;
        match op.as_ref() {
            "add" => put(&mut value, &path, attribute("value")?.clone())?,
            "remove" => {
                take(&mut value, &path)?;
            }
            "replace" => {
                take(&mut value, &path)?;
                put(&mut value, &path, attribute("value")?.clone())?;
            }
            "move" => {
                let from = parse_path(attribute("from")?)?;
                let moved = take(&mut value, &from)?;
                put(&mut value, &path, moved)?;
            }
            "copy" => {
                let from = parse_path(attribute("from")?)?;
                let copied = get(value.as_ref().ok_or(())?, &from).ok_or(())?.clone();
                put(&mut value, &path, copied)?;
            }
            "test" => {
                if get(value.as_ref().ok_or(())?, &path) != Some(attribute("value")?) {
                    return Err(());
                }
            }
            _ => return Err(()),
        }
    }
    value.ok_or(())
}

/// Adds `new` at `path` of what may be the removed whole value (then only the whole path is
/// possible).
fn put(value: &mut Option<Value>, path: &[Value], new: Value) -> Result<(), Failed> {
    match (value.as_mut(), path.is_empty()) {
        (_, true) => {
            *value = Some(new);
            Ok(())
        }
        (Some(value), false) => add(value, path, new),
        (None, false) => Err(()),
    }
}

/// Removes and returns the member at `path` (the whole value when it is empty).
fn take(value: &mut Option<Value>, path: &[Value]) -> Result<Value, Failed> {
    if path.is_empty() {
        return value.take().ok_or(());
    }
    remove(value.as_mut().ok_or(())?, path)
}

/// A path: a JSON pointer (leading slashes dropped, then split on `/`, `~1` → `/`,
/// `~0` → `~`) or an array of segments.
fn parse_path(path: &Value) -> Result<Vec<Value>, Failed> {
    match path {
        Value::String(s) if s.is_empty() => Ok(Vec::new()),
        Value::String(s) => Ok(s
            .trim_start_matches('/')
            .split('/')
            .map(|part| Value::from(part.replace("~1", "/").replace("~0", "~")))
            .collect()),
        Value::Array(segments) => Ok(segments.to_vec()),
        _ => Err(()),
    }
}

/// An array index: a number or a decimal string; `-` is the end (for insertion).
fn index(key: &Value, len: usize) -> Result<usize, Failed> {
    match key {
        Value::String(s) if s.as_ref() == "-" => Ok(len),
        Value::String(s) => s.parse::<usize>().map_err(|_| ()),
        Value::Number(_) => key
            .as_u64()
            .ok()
            .and_then(|n| usize::try_from(n).ok())
            .ok_or(()),
        _ => Err(()),
    }
}

/// The value at `path`, if there is one.
fn get<'v>(value: &'v Value, path: &[Value]) -> Option<&'v Value> {
    let Some((key, rest)) = path.split_first() else {
        return Some(value);
    };
    let child = match value {
        Value::Object(map) => map.get(key)?,
        Value::Set(set) => set.get(key)?,
        Value::Array(items) => items.get(index(key, items.len()).ok()?)?,
        _ => return None,
    };
    get(child, rest)
}

/// `f` of the member at `key` (which must exist) of `value`, changed in place.
fn with_child<R>(
    value: &mut Value,
    key: &Value,
    f: impl FnOnce(&mut Value) -> Result<R, Failed>,
) -> Result<R, Failed> {
    match value {
        Value::Object(map) => f(Rc::make_mut(map).get_mut(key).ok_or(())?),
        Value::Array(items) => {
            let items = Rc::make_mut(items);
            let i = index(key, items.len())?;
            f(items.get_mut(i).ok_or(())?)
        }
        Value::Set(set) => {
            // A set's member is its own key: taken out, changed, put back.
            let set = Rc::make_mut(set);
            let mut member = set.take(key).ok_or(())?;
            let result = f(&mut member);
            set.insert(member);
            result
        }
        _ => Err(()),
    }
}

/// Adds `new` at `path` (not empty) of `value`: an object's key set (replaced if present),
/// a set's member added (its key must be the value), an array's item inserted (at most at
/// the end).
fn add(value: &mut Value, path: &[Value], new: Value) -> Result<(), Failed> {
    match path {
        [] => Err(()),
        [key] => match value {
            Value::Object(map) => {
                Rc::make_mut(map).insert(key.clone(), new);
                Ok(())
            }
            Value::Set(set) if *key == new => {
                Rc::make_mut(set).insert(new);
                Ok(())
            }
            Value::Array(items) => {
                let items = Rc::make_mut(items);
                let i = index(key, items.len())?;
                if i > items.len() {
                    return Err(());
                }
                items.insert(i, new);
                Ok(())
            }
            _ => Err(()),
        },
        [key, rest @ ..] => with_child(value, key, |child| add(child, rest, new)),
    }
}

/// Removes and returns the member at `path` (not empty, and the member must exist).
fn remove(value: &mut Value, path: &[Value]) -> Result<Value, Failed> {
    match path {
        [] => Err(()),
        [key] => match value {
            Value::Object(map) => Rc::make_mut(map).remove(key).ok_or(()),
            Value::Set(set) => Rc::make_mut(set).take(key).ok_or(()),
            Value::Array(items) => {
                let items = Rc::make_mut(items);
                let i = index(key, items.len())?;
                if i >= items.len() {
                    return Err(());
                }
                Ok(items.remove(i))
            }
            _ => Err(()),
        },
        [key, rest @ ..] => with_child(value, key, |child| remove(child, rest)),
    }
}
