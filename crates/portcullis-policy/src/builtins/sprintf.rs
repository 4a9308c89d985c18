//! `sprintf`, formatted as OPA formats it: each argument is converted as OPA converts it
//! (an integer to Go's `int`, or `*big.Int` past 64 bits; another number to `float64`; a
//! string to a Go string; anything else to its Rego text), then formatted by the rules of
//! Go's `fmt.Sprintf`: flags `+ - # 0` and space, widths and precisions (also `*`),
//! argument indexes (`%[2]d`), and Go's `%!verb(type=value)` text for a verb that does not
//! fit its argument, `%!d(MISSING)`, `%!(EXTRA …)` and `%!(NOVERB)` — never an error.

use std::fmt::Write as _;

use regorus::Value;

use super::{Args, BuiltinError};

/// One argument as OPA hands it to Go's `fmt`.
enum Arg {
    /// An integer: Go `int` within 64 bits, `*big.Int` past them.
    Int(i128),
    /// Any other number.
    Float(f64),
    /// A string, or the Rego text of a value that is not a number or a string.
    Str(String),
}

impl Arg {
    fn from_value(value: &Value) -> Arg {
        match value {
            Value::Number(n) => match integer(value, n.is_integer()) {
                Some(n) => Arg::Int(n),
                None => Arg::Float(value.as_f64().unwrap_or(f64::NAN)),
            },
            Value::String(s) => Arg::Str(s.to_string()),
            other => Arg::Str(rego_text(other)),
        }
    }

    /// Go's name of the type, as in `%!d(string=x)`.
    fn type_name(&self) -> &'static str {
        match self {
            Arg::Int(n) if i64::try_from(*n).is_ok() => "int",
            Arg::Int(_) => "*big.Int",
            Arg::Float(_) => "float64",
            Arg::Str(_) => "string",
        }
    }

    /// `%v` of the argument, with no flags.
    fn plain(&self) -> String {
        match self {
            Arg::Int(n) => n.to_string(),
            Arg::Float(f) => format_float(*f, 'g', None, false),
            Arg::Str(s) => s.clone(),
        }
    }
}

/// An integral number's value, if it fits 128 bits.
fn integer(value: &Value, is_integer: bool) -> Option<i128> {
    if !is_integer {
        return None;
    }
    value.as_i128().ok()
}

/// A value's Rego text, as OPA prints a term: strings quoted, `set()` for the empty set.
fn rego_text(value: &Value) -> String {
    let mut out = String::new();
    write_rego(&mut out, value);
    out
}

fn write_rego(out: &mut String, value: &Value) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(_) => out.push_str(&Arg::from_value(value).plain()),
        Value::String(s) => out.push_str(&go_quote(s, false)),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_rego(out, item);
            }
            out.push(']');
        }
        Value::Set(items) if items.is_empty() => out.push_str("set()"),
        Value::Set(items) => {
            out.push('{');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_rego(out, item);
            }
            out.push('}');
        }
        Value::Object(map) => {
            out.push('{');
            for (i, (key, item)) in map.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_rego(out, key);
                out.push_str(": ");
                write_rego(out, item);
            }
            out.push('}');
        }
        Value::Undefined => out.push_str("undefined"),
    }
}

/// Go's `strconv.Quote` (or `QuoteToASCII` when `ascii`).
fn go_quote(s: &str, ascii: bool) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        push_escaped(&mut out, c, '"', ascii);
    }
    out.push('"');
    out
}

fn push_escaped(out: &mut String, c: char, quote: char, ascii: bool) {
    match c {
        '\x07' => out.push_str("\\a"),
        '\x08' => out.push_str("\\b"),
        '\x0c' => out.push_str("\\f"),
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        '\x0b' => out.push_str("\\v"),
        '\\' => out.push_str("\\\\"),
        c if c == quote => {
            out.push('\\');
            out.push(c);
        }
        c if (c as u32) < 0x20 || c == '\x7f' => {
            let _ = write!(out, "\\x{:02x}", c as u32);
        }
        c if ascii && !c.is_ascii() || !ascii && c.is_control() => {
            if (c as u32) < 0x10000 {
                let _ = write!(out, "\\u{:04x}", c as u32);
            } else {
                let _ = write!(out, "\\U{:08x}", c as u32);
            }
        }
        c => out.push(c),
    }
}

/// The flags, width and precision of one verb.
#[derive(Default)]
struct Spec {
    plus: bool,
    minus: bool,
    sharp: bool,
    zero: bool,
    space: bool,
    width: Option<usize>,
    precision: Option<usize>,
}

impl Spec {
    /// `body` padded to the width: spaces on the left, or on the right with `-`; zeros
    /// after the sign (`sign_len` bytes of `body`) with `0` when `zeros_allowed`.
    fn pad(&self, body: &str, sign_len: usize, zeros_allowed: bool) -> String {
        let len = body.chars().count();
        let Some(width) = self.width.filter(|w| *w > len) else {
            return body.to_owned();
        };
        let fill = width - len;
        if self.minus {
            format!("{body}{}", " ".repeat(fill))
        } else if self.zero && zeros_allowed {
            let (sign, rest) = body.split_at(sign_len.min(body.len()));
            format!("{sign}{}{rest}", "0".repeat(fill))
        } else {
            format!("{}{body}", " ".repeat(fill))
        }
    }

    fn sign(&self, negative: bool) -> &'static str {
        if negative {
            "-"
        } else if self.plus {
            "+"
        } else if self.space {
            " "
        } else {
            ""
        }
    }
}

/// `sprintf(format, values)`.
pub(super) fn sprintf(args: &Args<'_>) -> Result<Value, BuiltinError> {
    let format = args.string(0)?;
    let values: Vec<Arg> = args.array(1)?.iter().map(Arg::from_value).collect();
    let text = go_sprintf(format, &values);
    if text.len() > MAX_OUTPUT {
        return Err(args.invalid(format!(
            "the result would be longer than {MAX_OUTPUT} bytes"
        )));
    }
    Ok(Value::from(text))
}

/// The longest result (widths and precisions can each ask for up to a million characters;
/// the loop stops adding verbs' text past this).
const MAX_OUTPUT: usize = 16 << 20;

/// Go's `fmt.Sprintf(format, values...)`.
fn go_sprintf(format: &str, values: &[Arg]) -> String {
    let mut out = String::with_capacity(format.len() + 16);
    let mut chars = format.chars().peekable();
    let mut next = 0usize;
    // An argument index (`[n]`) was used: extra arguments are then not reported.
    let mut reordered = false;
    while let Some(c) = chars.next() {
        if out.len() > MAX_OUTPUT {
            break;
        }
        if c != '%' {
            out.push(c);
            continue;
        }
        let mut spec = Spec::default();
        while let Some(&flag) = chars.peek() {
            match flag {
                '+' => spec.plus = true,
                '-' => spec.minus = true,
                '#' => spec.sharp = true,
                '0' => spec.zero = true,
                ' ' => spec.space = true,
                _ => break,
            }
            chars.next();
        }
        let mut bad_index = false;
        let mut take_index = |chars: &mut std::iter::Peekable<std::str::Chars<'_>>,
                              next: &mut usize,
                              bad: &mut bool| {
            if chars.peek() != Some(&'[') {
                return;
            }
            chars.next();
            reordered = true;
            let mut digits = String::new();
            let mut closed = false;
            for c in chars.by_ref() {
                if c == ']' {
                    closed = true;
                    break;
                }
                digits.push(c);
            }
            match digits.parse::<usize>() {
                Ok(n) if closed && n >= 1 && n <= values.len() => *next = n - 1,
                _ => *bad = true,
            }
        };
        take_index(&mut chars, &mut next, &mut bad_index);
        // Width: digits or `*` (an int argument; negative means `-`).
        if chars.peek() == Some(&'*') {
            chars.next();
            match values.get(next) {
                Some(Arg::Int(w)) if i64::try_from(*w).is_ok_and(|w| w.abs() < 1_000_000) => {
                    spec.minus |= *w < 0;
                    spec.width = usize::try_from(w.unsigned_abs()).ok();
                }
                _ => out.push_str("%!(BADWIDTH)"),
            }
            next += 1;
        } else {
            spec.width = digits(&mut chars);
        }
        if chars.peek() == Some(&'.') {
            chars.next();
            take_index(&mut chars, &mut next, &mut bad_index);
            if chars.peek() == Some(&'*') {
                chars.next();
                match values.get(next) {
                    Some(Arg::Int(p)) if (0..1_000_000).contains(p) => {
                        spec.precision = usize::try_from(*p).ok();
                    }
                    _ => out.push_str("%!(BADPREC)"),
                }
                next += 1;
            } else {
                spec.precision = Some(digits(&mut chars).unwrap_or(0));
            }
        }
        take_index(&mut chars, &mut next, &mut bad_index);
        let Some(verb) = chars.next() else {
            out.push_str("%!(NOVERB)");
            break;
        };
        if verb == '%' {
            out.push('%');
            continue;
        }
        if bad_index {
            let _ = write!(out, "%!{verb}(BADINDEX)");
            continue;
        }
        match values.get(next) {
            None => {
                let _ = write!(out, "%!{verb}(MISSING)");
            }
            Some(arg) => {
                out.push_str(&format_arg(arg, verb, &spec));
                next += 1;
            }
        }
    }
    if !reordered && next < values.len() {
        out.push_str("%!(EXTRA ");
        for (i, arg) in values.iter().enumerate().skip(next) {
            if i > next {
                out.push_str(", ");
            }
            let _ = write!(out, "{}={}", arg.type_name(), arg.plain());
        }
        out.push(')');
    }
    out
}

/// A run of decimal digits, if any (capped, as Go refuses absurd widths).
fn digits(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) -> Option<usize> {
    let mut n: Option<usize> = None;
    while let Some(d) = chars.peek().and_then(|c| c.to_digit(10)) {
        chars.next();
        n = Some(
            n.unwrap_or(0)
                .saturating_mul(10)
                .saturating_add(d as usize)
                .min(1_000_000),
        );
    }
    n
}

/// Go's text for a verb that does not apply to `arg`.
fn bad_verb(arg: &Arg, verb: char) -> String {
    match arg {
        Arg::Int(n) if i64::try_from(*n).is_err() => format!("%!{verb}(big.Int={n})"),
        _ => format!("%!{verb}({}={})", arg.type_name(), arg.plain()),
    }
}

fn format_arg(arg: &Arg, verb: char, spec: &Spec) -> String {
    match arg {
        Arg::Int(n) => format_int(*n, verb, spec).unwrap_or_else(|| bad_verb(arg, verb)),
        Arg::Float(f) => format_float_verb(*f, verb, spec).unwrap_or_else(|| bad_verb(arg, verb)),
        Arg::Str(s) => format_str(s, verb, spec).unwrap_or_else(|| bad_verb(arg, verb)),
    }
}

fn format_int(n: i128, verb: char, spec: &Spec) -> Option<String> {
    // Past 64 bits the value is a `*big.Int`, whose own formatting takes `s` as `d` and
    // has no `c`, `q` or `U`.
    let big = i64::try_from(n).is_err();
    let verb = match verb {
        's' if big => 'd',
        'c' | 'q' | 'U' if big => return None,
        verb => verb,
    };
    let magnitude = n.unsigned_abs();
    let (digits, prefix) = match verb {
        'd' | 'v' => (magnitude.to_string(), ""),
        'b' => (format!("{magnitude:b}"), if spec.sharp { "0b" } else { "" }),
        'o' => (format!("{magnitude:o}"), if spec.sharp { "0" } else { "" }),
        'O' => (format!("{magnitude:o}"), "0o"),
        'x' => (format!("{magnitude:x}"), if spec.sharp { "0x" } else { "" }),
        'X' => (format!("{magnitude:X}"), if spec.sharp { "0X" } else { "" }),
        'c' => {
            let c = u32::try_from(n)
                .ok()
                .and_then(char::from_u32)
                .unwrap_or('\u{fffd}');
            return Some(spec.pad(&c.to_string(), 0, true));
        }
        'q' => {
            let c = u32::try_from(n)
                .ok()
                .and_then(char::from_u32)
                .unwrap_or('\u{fffd}');
            let mut quoted = String::from('\'');
            push_escaped(&mut quoted, c, '\'', spec.plus);
            quoted.push('\'');
            return Some(spec.pad(&quoted, 0, true));
        }
        'U' => {
            let mut text = format!("U+{magnitude:04X}");
            if spec.sharp
                && let Some(c) = u32::try_from(n).ok().and_then(char::from_u32)
                && !c.is_control()
            {
                let _ = write!(text, " '{c}'");
            }
            return Some(spec.pad(&text, 0, true));
        }
        _ => return None,
    };
    // Precision: at least that many digits (`%.0d` of 0 is empty).
    let digits = match spec.precision {
        Some(0) if n == 0 => String::new(),
        Some(p) if p > digits.len() => format!("{}{digits}", "0".repeat(p - digits.len())),
        _ => digits,
    };
    // `%#o` does not add a 0 before a leading 0.
    let prefix = if verb == 'o' && digits.starts_with('0') {
        ""
    } else {
        prefix
    };
    let sign = spec.sign(n < 0);
    let body = format!("{sign}{prefix}{digits}");
    Some(spec.pad(&body, sign.len() + prefix.len(), spec.precision.is_none()))
}

fn format_float_verb(f: f64, verb: char, spec: &Spec) -> Option<String> {
    let text = match verb {
        'v' => format_float(f.abs(), 'g', spec.precision, spec.sharp),
        'e' | 'E' | 'f' | 'F' => {
            format_float(f.abs(), verb, spec.precision.or(Some(6)), spec.sharp)
        }
        'g' | 'G' => format_float(f.abs(), verb, spec.precision, spec.sharp),
        'x' | 'X' => hex_float(f.abs(), verb == 'X', spec.precision),
        'b' => binary_float(f.abs()),
        _ => return None,
    };
    let sign = spec.sign(f.is_sign_negative());
    let body = format!("{sign}{text}");
    Some(spec.pad(&body, sign.len(), true))
}

/// The decimal digits (without trailing zeros) and the exponent of `f` (≥ 0, finite), in
/// scientific notation with `significant` digits (`None`: the shortest that reads back).
fn decimal_digits(f: f64, significant: Option<usize>) -> (String, i32) {
    let text = match significant {
        Some(p) => format!("{:.*e}", p.max(1) - 1, f),
        None => format!("{f:e}"),
    };
    let (mantissa, exponent) = text.split_once('e').unwrap_or((&text, "0"));
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let digits = digits.trim_end_matches('0');
    let digits = if digits.is_empty() { "0" } else { digits };
    (digits.to_owned(), exponent.parse().unwrap_or(0))
}

/// Go's exponent: a sign and at least two digits.
fn go_exponent(e: char, exp: i32) -> String {
    format!(
        "{e}{}{:02}",
        if exp < 0 { '-' } else { '+' },
        exp.unsigned_abs()
    )
}

/// Go's `strconv.FormatFloat(f, verb, precision)` of a finite `f` ≥ 0 (`None`: shortest),
/// with the `#` flag's decimal point kept when `sharp`.
fn format_float(f: f64, verb: char, precision: Option<usize>, sharp: bool) -> String {
    let upper = verb.is_ascii_uppercase();
    let e = if upper { 'E' } else { 'e' };
    match verb.to_ascii_lowercase() {
        'e' => {
            let p = precision.unwrap_or(6);
            let text = format!("{:.*e}", p, f);
            let (mantissa, exponent) = text.split_once('e').unwrap_or((&text, "0"));
            let mut mantissa = mantissa.to_owned();
            if sharp && !mantissa.contains('.') {
                mantissa.push('.');
            }
            format!(
                "{mantissa}{}",
                go_exponent(e, exponent.parse().unwrap_or(0))
            )
        }
        'f' => {
            let mut text = format!("{:.*}", precision.unwrap_or(6), f);
            if sharp && !text.contains('.') {
                text.push('.');
            }
            text
        }
        _ => {
            // %g: shortest digits, or `precision` significant ones (0 counts as 1).
            let shortest = precision.is_none();
            let significant = precision.map(|p| p.max(1));
            let (digits, exp) = decimal_digits(f, significant);
            let nd = i32::try_from(digits.len()).unwrap_or(i32::MAX);
            let dp = exp + 1;
            let mut eprec = significant.map_or(nd, |p| i32::try_from(p).unwrap_or(i32::MAX));
            if eprec > nd && nd >= dp {
                eprec = nd;
            }
            if shortest {
                eprec = 6;
            }
            // `#` keeps trailing zeros up to the precision (6 by default).
            let wanted = if sharp {
                significant.unwrap_or(6).max(digits.len())
            } else {
                digits.len()
            };
            let padded = format!("{digits}{}", "0".repeat(wanted - digits.len()));
            if exp < -4 || exp >= eprec {
                let (first, rest) = padded.split_at(1);
                let point = if rest.is_empty() && !sharp { "" } else { "." };
                format!("{first}{point}{rest}{}", go_exponent(e, exp))
            } else if dp <= 0 {
                let zeros = "0".repeat(usize::try_from(-dp).unwrap_or(0));
                format!("0.{zeros}{padded}")
            } else {
                let dp = usize::try_from(dp).unwrap_or(0);
                if padded.len() <= dp {
                    let int = format!("{padded}{}", "0".repeat(dp - padded.len()));
                    if sharp { format!("{int}.") } else { int }
                } else {
                    let (int, frac) = padded.split_at(dp);
                    format!("{int}.{frac}")
                }
            }
        }
    }
}

/// Go's `%x` of a finite float ≥ 0: `0x1.8p+00`, shortest unless a precision is given.
fn hex_float(f: f64, upper: bool, precision: Option<usize>) -> String {
    let text = if f == 0.0 {
        match precision {
            Some(p) if p > 0 => format!("0x0.{}p+00", "0".repeat(p)),
            _ => "0x0p+00".to_owned(),
        }
    } else {
        let bits = f.to_bits();
        let raw_exp = i32::try_from((bits >> 52) & 0x7ff).unwrap_or(0);
        let mut mantissa = bits & ((1u64 << 52) - 1);
        let mut exp = raw_exp - 1023;
        if raw_exp == 0 {
            // Subnormal: shift until the leading bit is the implicit one.
            exp = -1022;
            while mantissa & (1u64 << 52) == 0 {
                mantissa <<= 1;
                exp -= 1;
            }
            mantissa &= (1u64 << 52) - 1;
        }
        let mut lead = 1u64;
        let mut hex = format!("{mantissa:013x}");
        if let Some(p) = precision.filter(|p| *p < 13) {
            // Round the 52-bit fraction to `p` hex digits, half to even.
            let shift = 4 * (13 - u32::try_from(p).unwrap_or(13));
            let full = (1u64 << 52) | mantissa;
            let half = 1u64 << (shift - 1);
            let rem = full & ((1u64 << shift) - 1);
            let mut kept = full >> shift;
            if rem > half || rem == half && kept & 1 == 1 {
                kept += 1;
            }
            let frac_bits = 52 - shift;
            if kept >> frac_bits >= 2 {
                kept >>= 1;
                exp += 1;
            }
            lead = kept >> frac_bits;
            let frac = kept & ((1u64 << frac_bits) - 1);
            hex = if p == 0 {
                String::new()
            } else {
                // `frac_bits` is 4 × p: exactly p hex digits.
                format!("{frac:0p$x}")
            };
        } else {
            hex = match precision {
                Some(p) => format!("{hex}{}", "0".repeat(p - 13)),
                None => hex.trim_end_matches('0').to_owned(),
            };
        }
        let point = if hex.is_empty() { "" } else { "." };
        format!("0x{lead}{point}{hex}{}", go_exponent('p', exp))
    };
    if upper { text.to_uppercase() } else { text }
}

/// Go's `%b` of a finite float ≥ 0: decimal mantissa and binary exponent, `4503599627370496p-52`.
fn binary_float(f: f64) -> String {
    let bits = f.to_bits();
    let raw_exp = i64::try_from((bits >> 52) & 0x7ff).unwrap_or(0);
    let mut mantissa = bits & ((1u64 << 52) - 1);
    let exp = if raw_exp == 0 {
        -1074
    } else {
        mantissa |= 1u64 << 52;
        raw_exp - 1075
    };
    format!(
        "{mantissa}p{}{}",
        if exp < 0 { '-' } else { '+' },
        exp.unsigned_abs()
    )
}

fn format_str(s: &str, verb: char, spec: &Spec) -> Option<String> {
    let text = match verb {
        's' | 'v' => match spec.precision {
            Some(p) => s.chars().take(p).collect(),
            None => s.to_owned(),
        },
        'q' => {
            let s: String = match spec.precision {
                Some(p) => s.chars().take(p).collect(),
                None => s.to_owned(),
            };
            if spec.sharp && !s.contains('`') && s.chars().all(|c| c == '\t' || !c.is_control()) {
                format!("`{s}`")
            } else {
                go_quote(&s, spec.plus)
            }
        }
        'x' | 'X' => {
            let bytes = s.as_bytes();
            let bytes = match spec.precision {
                Some(p) => bytes.get(..p.min(bytes.len())).unwrap_or(bytes),
                None => bytes,
            };
            let mut out = String::new();
            for (i, b) in bytes.iter().enumerate() {
                if spec.space && i > 0 {
                    out.push(' ');
                }
                if spec.sharp && (spec.space || i == 0) {
                    out.push_str(if verb == 'x' { "0x" } else { "0X" });
                }
                if verb == 'x' {
                    let _ = write!(out, "{b:02x}");
                } else {
                    let _ = write!(out, "{b:02X}");
                }
            }
            out
        }
        _ => return None,
    };
    Some(spec.pad(&text, 0, true))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn go(format: &str, values: Vec<Arg>) -> String {
        go_sprintf(format, &values)
    }

    #[test]
    fn formats_as_go_does() {
        use Arg::{Float as F, Int as I, Str as S};
        assert_eq!(
            go("%o %O %x %X %b", vec![I(8), I(8), I(255), I(255), I(5)]),
            "10 0o10 ff FF 101"
        );
        assert_eq!(
            go("%#o %#x %#b", vec![I(8), I(255), I(5)]),
            "010 0xff 0b101"
        );
        assert_eq!(
            go(
                "%5d|%-5d|%05d|%+d|% d",
                vec![I(42), I(42), I(-42), I(42), I(42)]
            ),
            "   42|42   |-0042|+42| 42"
        );
        assert_eq!(
            go("%.3d %.0d %8.3d", vec![I(7), I(0), I(-7)]),
            "007      -007"
        );
        assert_eq!(
            go("%c %q %U %#U", vec![I(65), I(65), I(0x1F600), I(65)]),
            "A 'A' U+1F600 U+0041 'A'"
        );
        assert_eq!(
            go(
                "%f %e %E %g",
                vec![F(1.5), F(123.456), F(123.456), F(123.456)]
            ),
            "1.500000 1.234560e+02 1.234560E+02 123.456"
        );
        assert_eq!(
            go(
                "%.2f %8.3f %-8.1f| %+.1e",
                vec![F(3.14259), F(2.5), F(2.25), F(0.000123)]
            ),
            "3.14    2.500 2.2     | +1.2e-04"
        );
        assert_eq!(
            go(
                "%v %v %v %v %v",
                vec![F(1.5), F(1e6), F(123456.0), F(0.0001), F(0.00001)]
            ),
            "1.5 1e+06 123456 0.0001 1e-05"
        );
        assert_eq!(
            go(
                "%g %.3g %.3g %.10g",
                vec![F(1e21), F(1234.5678), F(0.00012345), F(0.1)]
            ),
            "1e+21 1.23e+03 0.000123 0.1"
        );
        assert_eq!(
            go("%x %.2x %b", vec![F(1.5), F(1.0), F(1.0)]),
            "0x1.8p+00 0x1.00p+00 4503599627370496p-52"
        );
        assert_eq!(
            go(
                "%s|%5s|%-5s|%.2s|%q|%x|% X",
                vec![
                    S("go".into()),
                    S("go".into()),
                    S("go".into()),
                    S("golang".into()),
                    S("a\"b\n".into()),
                    S("hi".into()),
                    S("hi".into())
                ]
            ),
            "go|   go|go   |go|\"a\\\"b\\n\"|6869|68 69"
        );
        assert_eq!(
            go("%d %s", vec![S("x".into()), I(1)]),
            "%!d(string=x) %!s(int=1)"
        );
        assert_eq!(go("%d %d", vec![I(1)]), "1 %!d(MISSING)");
        assert_eq!(
            go("%d", vec![I(1), S("a".into()), F(0.5)]),
            "1%!(EXTRA string=a, float64=0.5)"
        );
        assert_eq!(go("100%% %", vec![]), "100% %!(NOVERB)");
        assert_eq!(go("%[2]d %[1]d", vec![I(1), I(2)]), "2 1");
        assert_eq!(go("%[3]d", vec![I(1)]), "%!d(BADINDEX)");
        assert_eq!(
            go("%*d|%-*d|%.*f", vec![I(4), I(7), I(3), I(7), I(1), F(2.25)]),
            "   7|7  |2.2"
        );
        assert_eq!(go("%d", vec![I(1 << 70)]), "1180591620717411303424");
        assert_eq!(
            go("%c", vec![I(1 << 70)]),
            "%!c(big.Int=1180591620717411303424)"
        );
    }

    #[test]
    fn values_are_converted_as_opa_does() {
        let value = Value::from_json_str(r#"{"b": [1, "x", true, null], "a": 2.5}"#).unwrap();
        assert_eq!(
            rego_text(&value),
            r#"{"a": 2.5, "b": [1, "x", true, null]}"#
        );
        assert_eq!(rego_text(&Value::new_set()), "set()");
        assert!(matches!(Arg::from_value(&Value::from(3)), Arg::Int(3)));
        assert!(matches!(Arg::from_value(&Value::from(0.5)), Arg::Float(f) if f == 0.5));
    }
}
