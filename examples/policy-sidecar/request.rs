//! What the sidecar reads from a request before any policy runs: the document path of
//! `/v1/data/…` (percent-decoded segments, any key or array index), a gzip body, and
//! OPA's boolean query parameters. Self-contained (std, flate2, serde_json) so the fuzz
//! target `sidecar_request` includes it as it is.

use std::fmt;
use std::io::Read;

use serde_json::Value;

/// The most segments a document path may have.
pub(crate) const MAX_SEGMENTS: usize = 64;
/// The longest document path, in bytes, before decoding.
pub(crate) const MAX_PATH_BYTES: usize = 2048;

/// Why a request's path or body was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RequestError {
    /// The path is not a document path (400).
    Path(String),
    /// The gzip body is not gzip, or is cut short (400).
    Gzip(String),
    /// The body, decompressed, is over the limit (413).
    TooLarge {
        /// The limit, in bytes.
        max: usize,
    },
}

impl fmt::Display for RequestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RequestError::Path(message) => write!(f, "the document path {message}"),
            RequestError::Gzip(message) => {
                write!(f, "the gzip body does not decompress: {message}")
            }
            RequestError::TooLarge { max } => {
                write!(f, "the decompressed body is larger than {max} bytes")
            }
        }
    }
}

impl std::error::Error for RequestError {}

/// A document path: `/v1/data/servers/0` is `["servers", "0"]`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct DataPath {
    /// The decoded segments, in order.
    pub(crate) segments: Vec<String>,
}

impl DataPath {
    /// Parses the part of a request path after `/v1/data`: `/`-separated segments, each
    /// percent-decoded on its own (so `%2F` is a `/` inside a key), empty ones skipped as
    /// OPA skips them.
    ///
    /// # Errors
    ///
    /// [`RequestError::Path`] for a malformed escape, a segment that is not UTF-8 or holds
    /// a control character, more than [`MAX_SEGMENTS`] segments or more than
    /// [`MAX_PATH_BYTES`] bytes.
    pub(crate) fn parse(raw: &str) -> Result<DataPath, RequestError> {
        if raw.len() > MAX_PATH_BYTES {
            return Err(RequestError::Path(format!(
                "is longer than {MAX_PATH_BYTES} bytes"
            )));
        }
        let mut segments = Vec::new();
        for raw in raw.split('/').filter(|s| !s.is_empty()) {
            if segments.len() == MAX_SEGMENTS {
                return Err(RequestError::Path(format!(
                    "has more than {MAX_SEGMENTS} segments"
                )));
            }
            segments.push(percent_decode(raw)?);
        }
        Ok(DataPath { segments })
    }

    /// How many leading segments are Rego identifiers: the rule or package path the
    /// policy engine evaluates; the rest are keys and indexes into its value.
    pub(crate) fn rule_len(&self) -> usize {
        self.segments
            .iter()
            .take_while(|s| is_identifier(s))
            .count()
    }

    /// The leading identifier segments as a rule path (`a/b`).
    pub(crate) fn rule_path(&self) -> String {
        self.segments
            .get(..self.rule_len())
            .unwrap_or_default()
            .join("/")
    }

    /// The path as OPA's decision logs write it (`servers/0`, `my-key/a-b`).
    pub(crate) fn opa_path(&self) -> String {
        self.segments.join("/")
    }

    /// The segments after the rule path.
    pub(crate) fn rest(&self) -> &[String] {
        self.segments.get(self.rule_len()..).unwrap_or_default()
    }
}

/// Whether `s` is a Rego identifier (letters, digits, `_`; not starting with a digit).
pub(crate) fn is_identifier(s: &str) -> bool {
    let mut bytes = s.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// The value at `rest` below `value`: an object's key, or an array's index (a decimal
/// number without sign or leading zero). `None` where there is none: undefined.
pub(crate) fn walk(mut value: Value, rest: &[String]) -> Option<Value> {
    for segment in rest {
        value = match value {
            Value::Object(mut map) => map.remove(segment)?,
            Value::Array(mut items) => {
                let index = array_index(segment)?;
                if index >= items.len() {
                    return None;
                }
                items.swap_remove(index)
            }
            _ => return None,
        };
    }
    Some(value)
}

fn array_index(segment: &str) -> Option<usize> {
    let canonical = segment == "0" || !segment.starts_with('0');
    if canonical && segment.bytes().all(|b| b.is_ascii_digit()) {
        segment.parse().ok()
    } else {
        None
    }
}

fn percent_decode(raw: &str) -> Result<String, RequestError> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while let Some(&byte) = bytes.get(at) {
        if byte == b'%' {
            let decoded = bytes
                .get(at + 1..at + 3)
                .and_then(|pair| std::str::from_utf8(pair).ok())
                .filter(|pair| pair.bytes().all(|b| b.is_ascii_hexdigit()))
                .and_then(|pair| u8::from_str_radix(pair, 16).ok())
                .ok_or_else(|| {
                    RequestError::Path(format!("has a malformed percent-escape at byte {at}"))
                })?;
            out.push(decoded);
            at += 3;
        } else {
            out.push(byte);
            at += 1;
        }
    }
    let text = String::from_utf8(out)
        .map_err(|_| RequestError::Path("does not decode to UTF-8".to_owned()))?;
    if text.chars().any(char::is_control) {
        return Err(RequestError::Path("holds a control character".to_owned()));
    }
    Ok(text)
}

/// Decompresses a gzip body (one or more members), refusing more than `max` bytes of
/// output before it is all read: a small body cannot expand without bound.
///
/// # Errors
///
/// [`RequestError::TooLarge`] past `max` bytes; [`RequestError::Gzip`] if the body is not
/// gzip or is truncated.
pub(crate) fn gunzip(body: &[u8], max: usize) -> Result<Vec<u8>, RequestError> {
    let mut out = Vec::new();
    let limit = u64::try_from(max).unwrap_or(u64::MAX).saturating_add(1);
    flate2::read::MultiGzDecoder::new(body)
        .take(limit)
        .read_to_end(&mut out)
        .map_err(|e| RequestError::Gzip(e.to_string()))?;
    if out.len() > max {
        return Err(RequestError::TooLarge { max });
    }
    Ok(out)
}

/// How deeply brackets (`(`, `[`, `{`) nest in Rego text, outside string literals: the
/// Rego parser's time grows quickly with nesting, so deep text is refused before parsing.
pub(crate) fn nesting_depth(text: &str) -> usize {
    let (mut depth, mut deepest) = (0_usize, 0_usize);
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            '(' | '[' | '{' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            ')' | ']' | '}' => depth = depth.saturating_sub(1),
            '"' => {
                // A string: skip to its closing quote, escapes included.
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => {
                            chars.next();
                        }
                        '"' => break,
                        _ => {}
                    }
                }
            }
            '`' => {
                for c in chars.by_ref() {
                    if c == '`' {
                        break;
                    }
                }
            }
            _ => {}
        }
    }
    deepest
}

/// An OPA boolean query parameter: absent is false, present without a value is true,
/// otherwise true only if one of its values is `true` (any case), as OPA reads them.
pub(crate) fn bool_param<'a>(
    pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
    name: &str,
) -> bool {
    let values: Vec<&str> = pairs
        .into_iter()
        .filter(|(key, _)| *key == name)
        .map(|(_, value)| value)
        .collect();
    match values.as_slice() {
        [] => false,
        [""] => true,
        values => values.iter().any(|v| v.eq_ignore_ascii_case("true")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn paths_split_decode_and_find_the_rule() {
        let path = DataPath::parse("/opa/examples/servers/0").unwrap_or_default();
        assert_eq!(path.rule_path(), "opa/examples/servers");
        assert_eq!(path.rest(), ["0"]);
        let path = DataPath::parse("/my-key/a%2Fb/").unwrap_or_default();
        assert_eq!(path.segments, ["my-key", "a/b"]);
        assert_eq!(path.rule_len(), 0);
        assert_eq!(path.opa_path(), "my-key/a/b");
        assert!(DataPath::parse("/a/%zz").is_err());
        assert!(DataPath::parse("/a/%C3%28").is_err());
        assert!(DataPath::parse("/a/%0A").is_err());
        assert!(DataPath::parse(&"/a".repeat(65)).is_err());
        assert!(DataPath::parse(&"a".repeat(MAX_PATH_BYTES + 1)).is_err());
        assert_eq!(DataPath::parse("").unwrap_or_default().segments.len(), 0);
    }

    #[test]
    fn walks_keys_and_array_indexes() {
        let doc = json!({"servers": [{"id": "s0"}, {"id": "s1"}], "a-b": {"0": 1}});
        let at = |path: &[&str]| {
            let rest: Vec<String> = path.iter().map(|s| (*s).to_owned()).collect();
            walk(doc.clone(), &rest)
        };
        assert_eq!(at(&["servers", "1", "id"]), Some(json!("s1")));
        assert_eq!(at(&["a-b", "0"]), Some(json!(1)));
        assert_eq!(at(&["servers", "2"]), None);
        assert_eq!(at(&["servers", "01"]), None);
        assert_eq!(at(&["servers", "-1"]), None);
        assert_eq!(at(&["servers", "0", "id", "x"]), None);
    }

    #[test]
    fn gzip_bodies_decompress_within_the_cap() {
        use std::io::Write;
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        let _ = encoder.write_all(&[b' '; 10_000]);
        let gz = encoder.finish().unwrap_or_default();
        assert_eq!(gunzip(&gz, 10_000).map(|b| b.len()), Ok(10_000));
        assert_eq!(
            gunzip(&gz, 9_999),
            Err(RequestError::TooLarge { max: 9_999 })
        );
        assert!(matches!(gunzip(b"{}", 100), Err(RequestError::Gzip(_))));
        let cut = gz.get(..gz.len() / 2).unwrap_or_default();
        assert!(matches!(gunzip(cut, 100_000), Err(RequestError::Gzip(_))));
    }

    #[test]
    fn nesting_is_counted_outside_strings() {
        assert_eq!(nesting_depth("x := [1, {\"a\": (2)}]"), 3);
        assert_eq!(nesting_depth("x := \"[[[\\\"[[\""), 0);
        assert_eq!(nesting_depth("x := `((`"), 0);
        assert_eq!(nesting_depth("))(("), 2);
    }

    #[test]
    fn boolean_parameters_read_as_opa_reads_them() {
        assert!(!bool_param([], "pretty"));
        assert!(bool_param([("pretty", "")], "pretty"));
        assert!(bool_param([("pretty", "TRUE")], "pretty"));
        assert!(!bool_param([("pretty", "1")], "pretty"));
        assert!(!bool_param([("pretty", "false")], "pretty"));
        assert!(!bool_param([("metrics", "true")], "pretty"));
    }
}
