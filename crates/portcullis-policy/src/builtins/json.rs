//! `json.patch`: RFC 6902 patches applied to any value, as OPA does; `json.is_valid`, false
//! (not an error) for a value that is not a string, as in OPA.

use std::collections::{BTreeMap, BTreeSet};

use regorus::Value;

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
        let current = value.as_ref().ok_or(());
        value = match op.as_ref() {
            "add" => Some(add(current?, &path, attribute("value")?.clone())?),
            "remove" => remove(current?, &path)?.0,
            "replace" => {
                let (removed, _) = remove(current?, &path)?;
                Some(add_to(removed, &path, attribute("value")?.clone())?)
            }
            "move" => {
                let from = parse_path(attribute("from")?)?;
                let (removed, moved) = remove(current?, &from)?;
                Some(add_to(removed, &path, moved)?)
            }
            "copy" => {
                let from = parse_path(attribute("from")?)?;
                let copied = get(current?, &from).ok_or(())?.clone();
                Some(add(current?, &path, copied)?)
            }
            "test" => {
                if get(current?, &path) != Some(attribute("value")?) {
                    return Err(());
                }
                value
            }
            _ => return Err(()),
        };
    }
    value.ok_or(())
}

/// [`add`] to what may be the removed whole value (then only the whole path is possible).
fn add_to(value: Option<Value>, path: &[Value], new: Value) -> Result<Value, Failed> {
    match value {
        Some(value) => add(&value, path, new),
        None if path.is_empty() => Ok(new),
        None => Err(()),
    }
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

/// `value` with the member at `key` (which must exist) replaced by `f` of it.
fn update(
    value: &Value,
    key: &Value,
    f: impl FnOnce(&Value) -> Result<Value, Failed>,
) -> Result<Value, Failed> {
    match value {
        Value::Object(map) => {
            let child = f(map.get(key).ok_or(())?)?;
            let mut map: BTreeMap<Value, Value> = (**map).clone();
            map.insert(key.clone(), child);
            Ok(Value::from(map))
        }
        Value::Set(set) => {
            let child = f(set.get(key).ok_or(())?)?;
            let mut set: BTreeSet<Value> = (**set).clone();
            set.remove(key);
            set.insert(child);
            Ok(Value::from(set))
        }
        Value::Array(items) => {
            let i = index(key, items.len())?;
            let child = f(items.get(i).ok_or(())?)?;
            let mut items = (**items).clone();
            *items.get_mut(i).ok_or(())? = child;
            Ok(Value::from(items))
        }
        _ => Err(()),
    }
}

/// `value` with `new` added at `path`: an object's key set (replaced if present), a set's
/// member added (its key must be the value), an array's item inserted (at most at the end).
fn add(value: &Value, path: &[Value], new: Value) -> Result<Value, Failed> {
    match path {
        [] => Ok(new),
        [key] => match value {
            Value::Object(map) => {
                let mut map = (**map).clone();
                map.insert(key.clone(), new);
                Ok(Value::from(map))
            }
            Value::Set(set) if *key == new => {
                let mut set = (**set).clone();
                set.insert(new);
                Ok(Value::from(set))
            }
            Value::Array(items) => {
                let i = index(key, items.len())?;
                if i > items.len() {
                    return Err(());
                }
                let mut items = (**items).clone();
                items.insert(i, new);
                Ok(Value::from(items))
            }
            _ => Err(()),
        },
        [key, rest @ ..] => update(value, key, |child| add(child, rest, new)),
    }
}

/// `value` without the member at `path` (which must exist; `None` when the path is the
/// whole value), and that member.
fn remove(value: &Value, path: &[Value]) -> Result<(Option<Value>, Value), Failed> {
    let (rest, removed) = remove_below(value, path)?;
    Ok((rest, removed))
}

fn remove_below(value: &Value, path: &[Value]) -> Result<(Option<Value>, Value), Failed> {
    match path {
        [] => Ok((None, value.clone())),
        [key] => match value {
            Value::Object(map) => {
                let mut map = (**map).clone();
                let removed = map.remove(key).ok_or(())?;
                Ok((Some(Value::from(map)), removed))
            }
            Value::Set(set) => {
                let mut set = (**set).clone();
                let removed = set.take(key).ok_or(())?;
                Ok((Some(Value::from(set)), removed))
            }
            Value::Array(items) => {
                let i = index(key, items.len())?;
                if i >= items.len() {
                    return Err(());
                }
                let mut items = (**items).clone();
                let removed = items.remove(i);
                Ok((Some(Value::from(items)), removed))
            }
            _ => Err(()),
        },
        [key, rest @ ..] => {
            let mut removed = None;
            let value = update(value, key, |child| {
                let (child, gone) = remove_below(child, rest)?;
                removed = Some(gone);
                child.ok_or(())
            })?;
            Ok((Some(value), removed.ok_or(())?))
        }
    }
}
