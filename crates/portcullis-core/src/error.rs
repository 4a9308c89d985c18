//! The one error type of this crate: a vocabulary value that failed to parse or validate.

use std::fmt;

/// Longest piece of rejected input echoed back in an error message.
///
/// Input reaching these parsers is often untrusted (a header, a JSON body), so errors quote
/// only a bounded prefix of it.
const ECHO_LIMIT: usize = 64;

/// Which part of the vocabulary a rejected value was meant to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Field {
    /// The `kind` of a [`Resource`](crate::Resource), e.g. `env`.
    ResourceKind,
    /// The `id` of a [`Resource`](crate::Resource), e.g. `checkout`.
    ResourceId,
    /// An [`Action`](crate::Action), e.g. `deploy`.
    Action,
    /// An [`AuthMethod`](crate::AuthMethod), e.g. `oidc`.
    AuthMethod,
    /// The subject id of a [`Principal`](crate::Principal), e.g. `alice`.
    Subject,
    /// A group (team) name of a [`Principal`](crate::Principal).
    Group,
    /// The name of an extra claim of a [`Principal`](crate::Principal).
    ClaimName,
    /// A name defined by another crate (a role binding's subject, a token's name, …).
    Other(&'static str),
}

impl Field {
    /// What characters this field accepts, in words, for error messages.
    fn allowed(self) -> &'static str {
        match self {
            Field::ResourceKind | Field::Action | Field::AuthMethod => {
                "ASCII letters (folded to lower case), digits and `_ - .`, starting with a letter"
            }
            Field::ResourceId
            | Field::Subject
            | Field::Group
            | Field::ClaimName
            | Field::Other(_) => {
                "any visible character except whitespace (no control, zero-width, bidi, \
                 variation-selector, private-use or unassigned characters)"
            }
        }
    }
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Field::ResourceKind => "resource kind",
            Field::ResourceId => "resource id",
            Field::Action => "action",
            Field::AuthMethod => "authentication method",
            Field::Subject => "principal subject",
            Field::Group => "group name",
            Field::ClaimName => "claim name",
            Field::Other(name) => name,
        })
    }
}

/// A vocabulary value was rejected. Each message says what was wrong and how to write it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The value was empty.
    #[error("{field} must not be empty")]
    Empty {
        /// What the value was meant to be.
        field: Field,
    },
    /// The value was longer than the field allows.
    #[error("{field} is {len} bytes long; at most {max} bytes are allowed")]
    TooLong {
        /// What the value was meant to be.
        field: Field,
        /// Its length in bytes.
        len: usize,
        /// The most the field accepts.
        max: usize,
    },
    /// The value held a character the field does not accept.
    #[error(
        "{field} `{value}` has the character {} at byte {position}; allowed: {}",
        shown(*ch),
        field.allowed()
    )]
    InvalidChar {
        /// What the value was meant to be.
        field: Field,
        /// The rejected value (a bounded prefix of it).
        value: String,
        /// The first offending character.
        ch: char,
        /// Its byte offset in the value.
        position: usize,
    },
    /// The value was `.` or `..`, or held one as a `/`-separated segment.
    #[error(
        "{field} `{value}` has `{segment}` as a path segment; `.` and `..` are not names \
         (they would read as this or the parent level)"
    )]
    DotSegment {
        /// What the value was meant to be.
        field: Field,
        /// The rejected value (a bounded prefix of it).
        value: String,
        /// The offending segment: `.` or `..`.
        segment: &'static str,
    },
    /// A resource was written without the `kind:id` separator.
    #[error(
        "resource `{input}` has no `:`; write it as `kind:id`, e.g. `env:checkout` or `system:*`"
    )]
    MissingSeparator {
        /// The rejected input (a bounded prefix of it).
        input: String,
    },
    /// The system resource was given an id other than the wildcard.
    #[error("the system resource always has the id `*`, not `{id}`; write `system:*`")]
    SystemIdNotWildcard {
        /// The rejected id (a bounded prefix of it).
        id: String,
    },
    /// The wildcard id was used on a resource kind other than `system`.
    #[error(
        "`{kind}:*` is not a wildcard: only the system resource (`system:*`) covers every \
         resource; name one {kind} by its id, or bind on `system:*`"
    )]
    WildcardOutsideSystem {
        /// The resource kind that was given `*`.
        kind: String,
    },
    /// A principal kind other than the known ones.
    #[error("unknown principal kind `{value}`; expected one of `user`, `service`, `script_token`")]
    UnknownPrincipalKind {
        /// The rejected value (a bounded prefix of it).
        value: String,
    },
    /// JSON that is not a valid form of the value.
    #[error("invalid {what} JSON: {message}")]
    Json {
        /// What the JSON was meant to describe (`principal`, `resource`, …).
        what: &'static str,
        /// The JSON parser's or validator's message.
        message: String,
    },
}

impl Error {
    pub(crate) fn json(what: &'static str, err: &serde_json::Error) -> Self {
        Error::Json {
            what,
            message: err.to_string(),
        }
    }
}

/// A character for an error message: quoted when it shows, as `U+XXXX` when it is hidden.
fn shown(ch: char) -> String {
    if crate::ident::is_hidden_char(ch) || ch.is_whitespace() {
        format!("U+{:04X}", u32::from(ch))
    } else {
        format!("'{ch}' (U+{:04X})", u32::from(ch))
    }
}

/// A bounded, owned prefix of `input` for error messages (never splits a character), with
/// control and invisible characters escaped so a message cannot rewrite a log line or hide
/// what was rejected.
pub(crate) fn echo(input: &str) -> String {
    let (shown, cut) = match input.char_indices().nth(ECHO_LIMIT) {
        Some((cut, _)) => (input.get(..cut).unwrap_or_default(), true),
        None => (input, false),
    };
    let mut out = String::with_capacity(shown.len() + 4);
    for ch in shown.chars() {
        if crate::ident::is_hidden_char(ch) || ch.is_whitespace() && ch != ' ' {
            out.extend(ch.escape_unicode());
        } else {
            out.push(ch);
        }
    }
    if cut {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echo_bounds_long_input_on_a_char_boundary() {
        let long = "é".repeat(200);
        let shown = echo(&long);
        assert_eq!(shown.chars().count(), ECHO_LIMIT + 1);
        assert!(shown.ends_with('…'));
        assert_eq!(echo("short"), "short");
        assert_eq!(echo("a\u{202e}b\n"), "a\\u{202e}b\\u{a}");
    }

    #[test]
    fn messages_say_how_to_fix() {
        let err = Error::MissingSeparator {
            input: "checkout".into(),
        };
        assert!(err.to_string().contains("env:checkout"));
        let err = Error::WildcardOutsideSystem { kind: "env".into() };
        assert!(err.to_string().contains("system:*"));
    }
}
