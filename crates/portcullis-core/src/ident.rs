//! Validation shared by the vocabulary types, and the macro that defines the identifier
//! newtypes ([`ResourceKind`](crate::ResourceKind), [`Action`](crate::Action),
//! [`AuthMethod`](crate::AuthMethod)).

use crate::error::{Error, Field, echo};

/// Longest identifier (resource kind, action, authentication method), in bytes.
pub(crate) const MAX_IDENT_LEN: usize = 64;
/// Longest name (resource id, subject, group, claim name), in bytes.
pub(crate) const MAX_NAME_LEN: usize = 256;

/// Whether `b` may appear in an identifier after its first byte (canonical, lower-case form).
const fn is_ident_byte(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'-' | b'.')
}

/// Checks an identifier that is already in canonical (lower-case) form, at compile time when
/// used in a constant. Returns the reason it is invalid.
pub(crate) const fn check_canonical_ident(s: &str) -> Result<(), &'static str> {
    let bytes = s.as_bytes();
    if bytes.len() > MAX_IDENT_LEN {
        return Err("identifier is longer than 64 bytes");
    }
    let [first, rest @ ..] = bytes else {
        return Err("identifier must not be empty");
    };
    if !first.is_ascii_lowercase() {
        return Err("identifier must start with a lower-case ASCII letter");
    }
    let mut rest = rest;
    while let [byte, tail @ ..] = rest {
        if !is_ident_byte(*byte) {
            return Err("identifier may hold only `a-z 0-9 _ - .`");
        }
        rest = tail;
    }
    Ok(())
}

/// Parses an identifier: ASCII letters, digits, `_ - .`, starting with a letter, at most
/// [`MAX_IDENT_LEN`] bytes. Upper-case letters are folded to lower case, so `ENV` and `env`
/// name the same kind.
pub(crate) fn parse_ident(field: Field, input: &str) -> Result<String, Error> {
    if input.is_empty() {
        return Err(Error::Empty { field });
    }
    if input.len() > MAX_IDENT_LEN {
        return Err(Error::TooLong {
            field,
            len: input.len(),
            max: MAX_IDENT_LEN,
        });
    }
    for (position, ch) in input.char_indices() {
        let ok = if position == 0 {
            ch.is_ascii_alphabetic()
        } else {
            ch.is_ascii_alphanumeric() || matches!(ch, '_' | '-' | '.')
        };
        if !ok {
            return Err(Error::InvalidChar {
                field,
                value: echo(input),
                ch,
                position,
            });
        }
    }
    Ok(input.to_ascii_lowercase())
}

/// Whether `ch` is a character that shows nothing of itself, or shows differently on every
/// system, so that two different names can look the same or a log line can be rewritten:
///
/// - control characters (Unicode `Cc`) and format characters (`Cf`: zero-width space and
///   joiners, bidi embeddings, overrides and isolates, the byte order mark, soft hyphen, tags);
/// - the other *default-ignorable* code points (Unicode's `Default_Ignorable_Code_Point`:
///   variation selectors, the combining grapheme joiner, Hangul fillers, Mongolian free
///   variation selectors…) and the braille blank U+2800;
/// - private-use characters (`Co`) and code points Unicode has not assigned (`Cn`, which
///   includes the noncharacters such as U+FFFE).
///
/// [`validate_name`] refuses all of them.
///
/// ```
/// use portcullis_core::is_hidden_char;
/// for hidden in ['\n', '\u{200b}', '\u{202e}', '\u{fe0f}', '\u{34f}', '\u{3164}', '\u{e000}', '\u{fffe}'] {
///     assert!(is_hidden_char(hidden), "{hidden:?}");
/// }
/// assert!(!is_hidden_char('a') && !is_hidden_char('é') && !is_hidden_char(' '));
/// ```
pub fn is_hidden_char(ch: char) -> bool {
    use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};
    // Names are mostly ASCII, checked on every request: no table look-up for them.
    if ch.is_ascii() {
        return ch.is_ascii_control();
    }
    if ch.is_control() || is_default_ignorable(ch) || ch == '\u{2800}' {
        return true;
    }
    matches!(
        ch.general_category(),
        GeneralCategory::Format
            | GeneralCategory::PrivateUse
            | GeneralCategory::Unassigned
            | GeneralCategory::Surrogate
    )
}

/// Whether `ch` does not belong in a one-line label shown to people — a revision name, an
/// operator's reason, a host's report: a hidden character ([`is_hidden_char`]), or
/// whitespace other than the ASCII space (line and paragraph separators such as U+2028,
/// no-break and wide spaces), which breaks the line or looks like a space it is not.
///
/// ```
/// use portcullis_core::is_unfit_for_label;
/// for unfit in ['\n', '\t', '\u{2028}', '\u{a0}', '\u{3000}', '\u{202e}', '\u{200b}'] {
///     assert!(is_unfit_for_label(unfit), "{unfit:?}");
/// }
/// assert!(!is_unfit_for_label(' ') && !is_unfit_for_label('é') && !is_unfit_for_label('-'));
/// ```
pub fn is_unfit_for_label(ch: char) -> bool {
    is_hidden_char(ch) || (ch.is_whitespace() && ch != ' ')
}

/// Unicode's `Default_Ignorable_Code_Point` (DerivedCoreProperties.txt, Unicode 15/16):
/// characters a renderer shows as nothing when it does not support them.
fn is_default_ignorable(ch: char) -> bool {
    matches!(
        u32::from(ch),
        0x00AD
            | 0x034F
            | 0x061C
            | 0x115F..=0x1160
            | 0x17B4..=0x17B5
            | 0x180B..=0x180F
            | 0x200B..=0x200F
            | 0x202A..=0x202E
            | 0x2060..=0x206F
            | 0x3164
            | 0xFE00..=0xFE0F
            | 0xFEFF
            | 0xFFA0
            | 0xFFF0..=0xFFF8
            | 0x1BCA0..=0x1BCA3
            | 0x1D173..=0x1D17A
            | 0xE0000..=0xE0FFF
    )
}

/// Checks a name (a resource id, a subject, a group, a claim name). This is the one name
/// grammar of Portcullis:
///
/// - 1 to 256 bytes of UTF-8;
/// - no whitespace and no hidden characters ([`is_hidden_char`]: controls, format
///   characters such as zero-width spaces and bidi overrides, variation selectors and other
///   default-ignorable code points, private-use and unassigned code points), since each can
///   make two different names look the same;
/// - not `.` or `..`, and no `.` or `..` between slashes (`a/../b`, `a/.`), since resource ids
///   use `/` for levels (`checkout/prod`) and such a name would read as this or the parent
///   level in a URL or a path.
///
/// Names keep their case: `Prod` and `prod` are different names, and a service that wants
/// them to be the same folds case at its edge (the deploy-gate example folds env and stage
/// names to lower case).
///
/// Crates that store names of their own (a role binding's subject, a token's name) use this so
/// that every name in Portcullis follows one rule.
///
/// # Errors
///
/// [`Error::Empty`], [`Error::TooLong`], [`Error::InvalidChar`] or [`Error::DotSegment`],
/// naming `field`.
///
/// ```
/// use portcullis_core::{validate_name, Field};
/// assert!(validate_name(Field::Group, "release-managers").is_ok());
/// assert!(validate_name(Field::ResourceId, "checkout/prod").is_ok());
/// assert!(validate_name(Field::Group, "release managers").is_err());
/// assert!(validate_name(Field::ResourceId, "checkout/..").is_err());
/// assert!(validate_name(Field::Subject, "admin\u{200b}").is_err());
/// ```
pub fn validate_name(field: Field, input: &str) -> Result<(), Error> {
    if input.is_empty() {
        return Err(Error::Empty { field });
    }
    if input.len() > MAX_NAME_LEN {
        return Err(Error::TooLong {
            field,
            len: input.len(),
            max: MAX_NAME_LEN,
        });
    }
    if let Some((position, ch)) = input
        .char_indices()
        .find(|(_, ch)| ch.is_whitespace() || is_hidden_char(*ch))
    {
        return Err(Error::InvalidChar {
            field,
            value: echo(input),
            ch,
            position,
        });
    }
    for segment in input.split('/') {
        let dots = match segment {
            "." => ".",
            ".." => "..",
            _ => continue,
        };
        return Err(Error::DotSegment {
            field,
            value: echo(input),
            segment: dots,
        });
    }
    Ok(())
}

/// Defines a validated, lower-case identifier newtype over `Cow<'static, str>`, so that
/// well-known values are free constants and parsed ones are owned strings.
macro_rules! ident_newtype {
    (
        $(#[$meta:meta])*
        $name:ident, $field:expr, $what:literal
    ) => {
        $(#[$meta])*
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(::std::borrow::Cow<'static, str>);

        impl $name {
            #[doc = concat!("Makes a ", $what, " from a string known at compile time, for constants.")]
            ///
            /// # Panics
            ///
            /// If `value` is not a canonical identifier (lower-case ASCII letter first, then
            /// `a-z 0-9 _ - .`, at most 64 bytes). In a `const` item that is a compile error,
            /// which is the intended use; parse runtime input with `str::parse` instead.
            #[must_use]
            pub const fn from_static(value: &'static str) -> Self {
                match $crate::ident::check_canonical_ident(value) {
                    Ok(()) => Self(::std::borrow::Cow::Borrowed(value)),
                    Err(reason) => panic!("{}", reason),
                }
            }

            #[doc = concat!("The ", $what, " as a string, in canonical (lower-case) form.")]
            #[must_use]
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl ::std::str::FromStr for $name {
            type Err = $crate::Error;

            fn from_str(input: &str) -> Result<Self, Self::Err> {
                $crate::ident::parse_ident($field, input)
                    .map(|s| Self(::std::borrow::Cow::Owned(s)))
            }
        }

        impl TryFrom<&str> for $name {
            type Error = $crate::Error;

            fn try_from(input: &str) -> Result<Self, Self::Error> {
                input.parse()
            }
        }

        impl TryFrom<String> for $name {
            type Error = $crate::Error;

            fn try_from(input: String) -> Result<Self, Self::Error> {
                input.parse()
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl ::std::fmt::Debug for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                write!(f, "{}({:?})", stringify!($name), &*self.0)
            }
        }

        impl ::serde::Serialize for $name {
            fn serialize<S: ::serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(&self.0)
            }
        }

        impl<'de> ::serde::Deserialize<'de> for $name {
            fn deserialize<D: ::serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let raw = <::std::borrow::Cow<'de, str> as ::serde::Deserialize>::deserialize(deserializer)?;
                raw.parse().map_err(::serde::de::Error::custom)
            }
        }
    };
}

pub(crate) use ident_newtype;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_refuse_dot_segments() {
        for bad in [
            ".",
            "..",
            "a/..",
            "../a",
            "a/./b",
            "checkout/.",
            "a/../../b",
        ] {
            assert!(
                matches!(
                    validate_name(Field::ResourceId, bad),
                    Err(Error::DotSegment { .. })
                ),
                "{bad:?} was accepted"
            );
        }
        for good in [
            "a.b",
            "...",
            ".hidden",
            "a..b",
            "v1.2/prod",
            "spiffe://td/ns/a",
        ] {
            assert!(validate_name(Field::ResourceId, good).is_ok(), "{good:?}");
        }
    }

    #[test]
    fn names_refuse_invisible_and_control_characters() {
        for bad in [
            "admin\u{200b}", // zero-width space
            "ad\u{200d}min", // zero-width joiner
            "\u{202e}nimda", // right-to-left override
            "prod\u{2066}",  // left-to-right isolate
            "\u{feff}prod",  // byte order mark
            "pro\u{ad}d",    // soft hyphen
            "a\nb",
            "a\u{7f}b",
            "a\u{85}b",
            "tag\u{e0041}",   // a Unicode tag character
            "prod\u{fe0f}",   // variation selector 16
            "prod\u{34f}",    // combining grapheme joiner
            "prod\u{3164}",   // Hangul filler
            "prod\u{180b}",   // Mongolian free variation selector
            "prod\u{e0100}",  // variation selector 17
            "prod\u{fffe}",   // a noncharacter
            "prod\u{10ffff}", // a noncharacter
            "prod\u{e000}",   // private use
            "prod\u{2800}",   // braille blank
        ] {
            let err = validate_name(Field::Subject, bad).expect_err(bad);
            assert!(matches!(err, Error::InvalidChar { .. }), "{bad:?}: {err}");
            // The message shows the hidden character escaped, never raw.
            let message = err.to_string();
            assert!(!message.chars().any(is_hidden_char), "{message:?}");
        }
        // Visible non-ASCII stays allowed.
        assert!(validate_name(Field::Subject, "zoë@example.com").is_ok());
        assert!(validate_name(Field::Group, "運用").is_ok());
    }

    #[test]
    fn identifiers_fold_case_and_reject_bad_characters() {
        assert_eq!(parse_ident(Field::Action, "Deploy").unwrap(), "deploy");
        assert_eq!(
            parse_ident(Field::Action, "build.publish").unwrap(),
            "build.publish"
        );
        assert!(matches!(
            parse_ident(Field::Action, "1deploy"),
            Err(Error::InvalidChar { position: 0, .. })
        ));
        assert!(matches!(
            parse_ident(Field::Action, "de ploy"),
            Err(Error::InvalidChar {
                ch: ' ',
                position: 2,
                ..
            })
        ));
        assert!(matches!(
            parse_ident(Field::Action, ""),
            Err(Error::Empty { .. })
        ));
        assert!(matches!(
            parse_ident(Field::Action, &"a".repeat(65)),
            Err(Error::TooLong { max: 64, .. })
        ));
    }

    #[test]
    fn canonical_check_agrees_with_the_parser_on_canonical_input() {
        for ok in ["env", "env_stage", "a.b-c_1"] {
            assert!(check_canonical_ident(ok).is_ok(), "{ok}");
            assert_eq!(parse_ident(Field::ResourceKind, ok).unwrap(), ok);
        }
        for bad in ["", "Env", "_env", "env stage", "é"] {
            assert!(check_canonical_ident(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn names_keep_case_and_reject_whitespace_and_controls() {
        assert!(validate_name(Field::Subject, "Alice@Example.org").is_ok());
        assert!(validate_name(Field::Subject, "checkout/prod").is_ok());
        assert!(validate_name(Field::Subject, "a\tb").is_err());
        assert!(validate_name(Field::Subject, "a\u{7f}").is_err());
        assert!(validate_name(Field::Subject, "a\u{2003}b").is_err());
        assert!(validate_name(Field::Subject, &"x".repeat(257)).is_err());
    }
}
