//! Checking the part of a request path that a broker or proxy forwards to a service.

/// The longest forwarded path accepted, in bytes.
pub const MAX_FORWARD_PATH: usize = 2048;

/// Why a forwarded path was refused. Each message quotes the path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ForwardPathError {
    /// Longer than [`MAX_FORWARD_PATH`].
    #[error("path {path:?} refused: longer than {MAX_FORWARD_PATH} bytes")]
    TooLong {
        /// The path (cut to its first 64 characters).
        path: String,
    },
    /// A character outside the path characters of RFC 3986 (`?` and `#` included: a query
    /// is not part of the path).
    #[error("path {path:?} refused: character {character:?} is not allowed")]
    Character {
        /// The path.
        path: String,
        /// The first character refused.
        character: char,
    },
    /// A `%` not followed by two hex digits.
    #[error("path {path:?} refused: a malformed percent escape")]
    MalformedEscape {
        /// The path.
        path: String,
    },
    /// `%2F` or `%5C`: a separator hidden from whoever splits the path.
    #[error("path {path:?} refused: an encoded slash or backslash")]
    EncodedSeparator {
        /// The path.
        path: String,
    },
    /// `%25`: an escape that decodes to another escape.
    #[error("path {path:?} refused: a double-encoded escape")]
    DoubleEncoded {
        /// The path.
        path: String,
    },
    /// A control character, percent-encoded (plain ones are refused as characters).
    #[error("path {path:?} refused: an encoded control character")]
    Control {
        /// The path.
        path: String,
    },
    /// A `.` or `..` segment, plain or percent-encoded.
    #[error("path {path:?} refused: a dot segment")]
    DotSegment {
        /// The path.
        path: String,
    },
    /// A leading `/` or `//`: an empty segment, which some servers collapse.
    #[error("path {path:?} refused: an empty segment")]
    EmptySegment {
        /// The path.
        path: String,
    },
}

/// Checks `path`, the part of a request path a proxy forwards below a service's base (for
/// `/proxy/eu/orders/v1/items` that is `v1/items`), exactly as it arrived, still
/// percent-encoded. Returns it unchanged when it is safe to append to the base, so the
/// service receives exactly what was checked.
///
/// Refused: anything but RFC 3986 path characters (so no `?`, `#`, `\`, space or raw
/// control character); `.` and `..` segments, plain or percent-encoded, also with path
/// parameters (`..;x`, which servers that cut parameters at `;` read as `..`); encoded `/` or
/// `\`; escapes that decode to `%`; encoded control characters; malformed escapes; empty
/// segments; more than [`MAX_FORWARD_PATH`] bytes. An empty path (the service's root) is
/// accepted.
///
/// ```
/// use portcullis_core::{ForwardPathError, check_forward_path};
///
/// assert_eq!(check_forward_path("orders/42%20a"), Ok("orders/42%20a"));
/// assert!(matches!(
///     check_forward_path("orders/%2e%2E/admin"),
///     Err(ForwardPathError::DotSegment { .. })
/// ));
/// assert!(matches!(
///     check_forward_path("orders%2F..%2Fadmin"),
///     Err(ForwardPathError::EncodedSeparator { .. })
/// ));
/// ```
///
/// # Errors
///
/// A [`ForwardPathError`] naming the first rule the path breaks.
pub fn check_forward_path(path: &str) -> Result<&str, ForwardPathError> {
    let owned = || path.to_owned();
    if path.len() > MAX_FORWARD_PATH {
        return Err(ForwardPathError::TooLong {
            path: path.chars().take(64).collect(),
        });
    }
    if let Some(character) = path.chars().find(|c| !is_path_char(*c)) {
        return Err(ForwardPathError::Character {
            path: owned(),
            character,
        });
    }
    for segment in path.split('/') {
        if !escapes_well_formed(segment) {
            return Err(ForwardPathError::MalformedEscape { path: owned() });
        }
        let decoded: Vec<u8> = percent_encoding::percent_decode_str(segment).collect();
        if decoded.contains(&b'/') || decoded.contains(&b'\\') {
            return Err(ForwardPathError::EncodedSeparator { path: owned() });
        }
        if decoded.contains(&b'%') {
            return Err(ForwardPathError::DoubleEncoded { path: owned() });
        }
        if decoded.iter().any(|b| b.is_ascii_control()) {
            return Err(ForwardPathError::Control { path: owned() });
        }
        // `..;x` is `..` to servers that cut path parameters at `;` (Tomcat, Spring).
        let before_parameters = decoded.split(|b| *b == b';').next().unwrap_or_default();
        if before_parameters == b"." || before_parameters == b".." {
            return Err(ForwardPathError::DotSegment { path: owned() });
        }
    }
    if path.starts_with('/') || path.contains("//") {
        return Err(ForwardPathError::EmptySegment { path: owned() });
    }
    Ok(path)
}

/// RFC 3986 `pchar` and `/`: unreserved, sub-delims, `:`, `@`, and `%` for escapes.
fn is_path_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "-._~!$&'()*+,;=:@/%".contains(c)
}

/// Every `%` is followed by two hex digits.
fn escapes_well_formed(segment: &str) -> bool {
    let bytes = segment.as_bytes();
    bytes.iter().enumerate().all(|(i, &b)| {
        b != b'%'
            || bytes
                .get(i + 1..i + 3)
                .is_some_and(|hex| hex.iter().all(u8::is_ascii_hexdigit))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn plain_paths_pass_unchanged() {
        for path in [
            "",
            "orders",
            "orders/42",
            "v1/items/a-b_c~d.json",
            "a/b%20c/%C3%A9",
            "search;v=2/@me/x:y",
            "...",
            ".well-known/x",
        ] {
            assert_eq!(check_forward_path(path), Ok(path), "{path}");
        }
    }

    /// The rule an error names.
    fn rule(err: &ForwardPathError) -> &'static str {
        match err {
            ForwardPathError::TooLong { .. } => "too long",
            ForwardPathError::Character { .. } => "character",
            ForwardPathError::MalformedEscape { .. } => "malformed escape",
            ForwardPathError::EncodedSeparator { .. } => "encoded separator",
            ForwardPathError::DoubleEncoded { .. } => "double encoded",
            ForwardPathError::Control { .. } => "control",
            ForwardPathError::DotSegment { .. } => "dot segment",
            ForwardPathError::EmptySegment { .. } => "empty segment",
        }
    }

    #[test]
    fn escapes_are_refused() {
        for (path, expected) in [
            ("..", "dot segment"),
            ("a/../b", "dot segment"),
            ("a/./b", "dot segment"),
            ("a/%2e%2e/b", "dot segment"),
            ("a/.%2E", "dot segment"),
            ("based/..;/..;/admin", "dot segment"),
            ("a/.;x/b", "dot segment"),
            ("a/%2e%2e;/b", "dot segment"),
            ("a%2fb", "encoded separator"),
            ("a%5Cb", "encoded separator"),
            ("a/%252e%252e", "double encoded"),
            ("a/%00", "control"),
            ("a/%0d%0aX-Injected:1", "control"),
            ("a/%zz", "malformed escape"),
            ("a/%4", "malformed escape"),
            ("a\\..\\b", "character"),
            ("a b", "character"),
            ("a?x=1", "character"),
            ("a#f", "character"),
            ("a\r\nb", "character"),
            ("é", "character"),
            ("/etc/passwd", "empty segment"),
            ("a//b", "empty segment"),
        ] {
            let err = check_forward_path(path).expect_err(path);
            assert_eq!(rule(&err), expected, "{path}: {err}");
            assert!(err.to_string().contains("refused"), "{err}");
        }
        assert!(matches!(
            check_forward_path("a\\b"),
            Err(ForwardPathError::Character {
                character: '\\',
                ..
            })
        ));
        let long = "a".repeat(MAX_FORWARD_PATH + 1);
        assert!(matches!(
            check_forward_path(&long),
            Err(ForwardPathError::TooLong { ref path }) if path.len() == 64
        ));
    }

    proptest! {
        /// Whatever is accepted stays below the base when a URL library (which resolves
        /// dot segments, encoded or not, and backslashes) joins it to one: it comes out
        /// exactly as checked.
        #[test]
        fn accepted_paths_never_leave_the_base(
            path in "([a-z0-9.%/\\\\?#:@]|%2[eEfF]|%5[cC]|%25|%00){0,24}"
        ) {
            if let Ok(ok) = check_forward_path(&path) {
                let url = url::Url::parse(&format!("http://upstream.test/svc/{ok}")).unwrap();
                prop_assert_eq!(url.path(), format!("/svc/{ok}"));
            }
        }
    }
}
