//! What the check knows about built-in functions: whether regorus or this crate (its
//! extensions, [`crate::builtins`]) provides one and with how many arguments (asked of
//! regorus itself, or of the extension table), and the argument types OPA declares for
//! the common ones (to refuse a constant argument of the wrong type).

use std::collections::HashMap;

use regorus::unstable::{Expr, Ref, Source, Span};
use regorus::utils::{FunctionTable, get_extra_arg};

/// A set of value types, one bit each.
pub(super) type Ty = u8;
pub(super) const NUMBER: Ty = 1;
pub(super) const STRING: Ty = 1 << 1;
pub(super) const BOOLEAN: Ty = 1 << 2;
pub(super) const NULL: Ty = 1 << 3;
pub(super) const ARRAY: Ty = 1 << 4;
pub(super) const SET: Ty = 1 << 5;
pub(super) const OBJECT: Ty = 1 << 6;
pub(super) const ANY: Ty = 0x7f;

/// The name of one type (`ty` has one bit set), as OPA's type errors spell it.
pub(super) fn type_name(ty: Ty) -> &'static str {
    match ty {
        NUMBER => "number",
        STRING => "string",
        BOOLEAN => "boolean",
        NULL => "null",
        ARRAY => "array",
        SET => "set",
        OBJECT => "object",
        _ => "any",
    }
}

/// The types in `ty`, as `string or array`.
pub(super) fn describe(ty: Ty) -> String {
    let names: Vec<&str> = (0..7)
        .map(|bit| 1 << bit)
        .filter(|t| ty & t != 0)
        .map(type_name)
        .collect();
    names.join(" or ")
}

const N: Ty = NUMBER;
const S: Ty = STRING;
const A: Ty = ANY;
const ARR: Ty = ARRAY;
const OBJ: Ty = OBJECT;
const COLL: Ty = ARRAY | SET;
const TIME: Ty = NUMBER | ARRAY;

/// Argument types of built-ins as OPA declares them. Only ones whose every argument type
/// is certain are listed: a built-in missing here is still known (its arity comes from
/// regorus), its arguments are just not type-checked.
const SIGNATURES: &[(&str, &[Ty])] = &[
    ("abs", &[N]),
    ("array.concat", &[ARR, ARR]),
    ("array.flatten", &[ARR]),
    ("array.reverse", &[ARR]),
    ("array.slice", &[ARR, N, N]),
    ("base64.decode", &[S]),
    ("base64.encode", &[S]),
    ("base64.is_valid", &[S]),
    ("base64url.decode", &[S]),
    ("base64url.encode", &[S]),
    ("base64url.encode_no_pad", &[S]),
    ("bits.and", &[N, N]),
    ("bits.lsh", &[N, N]),
    ("bits.negate", &[N]),
    ("bits.or", &[N, N]),
    ("bits.rsh", &[N, N]),
    ("bits.xor", &[N, N]),
    ("ceil", &[N]),
    ("concat", &[S, COLL]),
    ("contains", &[S, S]),
    ("count", &[S | ARRAY | SET | OBJECT]),
    ("crypto.hmac.equal", &[S, S]),
    ("crypto.hmac.md5", &[S, S]),
    ("crypto.hmac.sha1", &[S, S]),
    ("crypto.hmac.sha256", &[S, S]),
    ("crypto.hmac.sha512", &[S, S]),
    ("crypto.md5", &[S]),
    ("crypto.parse_private_keys", &[S]),
    ("crypto.sha1", &[S]),
    ("crypto.sha256", &[S]),
    ("crypto.x509.parse_and_verify_certificates", &[S]),
    (
        "crypto.x509.parse_and_verify_certificates_with_options",
        &[S, OBJ],
    ),
    ("crypto.x509.parse_certificate_request", &[S]),
    ("crypto.x509.parse_certificates", &[S]),
    ("crypto.x509.parse_keypair", &[S, S]),
    ("crypto.x509.parse_rsa_private_key", &[S]),
    ("endswith", &[S, S]),
    ("floor", &[N]),
    ("format_int", &[N, N]),
    ("glob.match", &[S, ARRAY | NULL, S]),
    ("glob.quote_meta", &[S]),
    ("graph.reachable", &[OBJ, COLL]),
    ("graph.reachable_paths", &[OBJ, COLL]),
    #[cfg(feature = "graphql")]
    ("graphql.is_valid", &[S | OBJ, S | OBJ]),
    #[cfg(feature = "graphql")]
    ("graphql.parse", &[S | OBJ, S | OBJ]),
    #[cfg(feature = "graphql")]
    ("graphql.parse_and_verify", &[S | OBJ, S | OBJ]),
    #[cfg(feature = "graphql")]
    ("graphql.parse_query", &[S]),
    #[cfg(feature = "graphql")]
    ("graphql.parse_schema", &[S]),
    #[cfg(feature = "graphql")]
    ("graphql.schema_is_valid", &[S | OBJ]),
    ("hex.decode", &[S]),
    ("hex.encode", &[S]),
    ("http.send", &[OBJ]),
    ("indexof", &[S, S]),
    ("indexof_n", &[S, S]),
    ("internal.template_string", &[ARR]),
    ("internal.units_parse_bytes_check", &[A]),
    ("intersection", &[SET]),
    ("io.jwt.decode", &[S]),
    ("io.jwt.decode_verify", &[S, OBJ]),
    ("io.jwt.encode_sign", &[OBJ, OBJ, OBJ]),
    ("io.jwt.encode_sign_raw", &[S, S, S]),
    ("io.jwt.verify_eddsa", &[S, S]),
    ("io.jwt.verify_es256", &[S, S]),
    ("io.jwt.verify_es384", &[S, S]),
    ("io.jwt.verify_es512", &[S, S]),
    ("io.jwt.verify_hs256", &[S, S]),
    ("io.jwt.verify_hs384", &[S, S]),
    ("io.jwt.verify_hs512", &[S, S]),
    ("io.jwt.verify_ps256", &[S, S]),
    ("io.jwt.verify_ps384", &[S, S]),
    ("io.jwt.verify_ps512", &[S, S]),
    ("io.jwt.verify_rs256", &[S, S]),
    ("io.jwt.verify_rs384", &[S, S]),
    ("io.jwt.verify_rs512", &[S, S]),
    ("is_array", &[A]),
    ("is_boolean", &[A]),
    ("is_null", &[A]),
    ("is_number", &[A]),
    ("is_object", &[A]),
    ("is_set", &[A]),
    ("is_string", &[A]),
    ("json.is_valid", &[S]),
    ("json.marshal", &[A]),
    ("json.match_schema", &[S | OBJ, S | OBJ]),
    ("json.patch", &[A, ARR]),
    ("json.unmarshal", &[S]),
    ("json.verify_schema", &[S | OBJ]),
    ("lower", &[S]),
    ("max", &[COLL]),
    ("min", &[COLL]),
    ("net.cidr_contains", &[S, S]),
    (
        "net.cidr_contains_matches",
        &[S | ARRAY | SET | OBJECT, S | ARRAY | SET | OBJECT],
    ),
    ("net.cidr_expand", &[S]),
    ("net.cidr_intersects", &[S, S]),
    ("net.cidr_merge", &[COLL]),
    ("net.lookup_ip_addr", &[S]),
    ("numbers.range", &[N, N]),
    ("numbers.range_step", &[N, N, N]),
    ("object.get", &[OBJ, A, A]),
    ("object.keys", &[OBJ]),
    ("object.remove", &[OBJ, ARRAY | SET | OBJECT]),
    ("object.union", &[OBJ, OBJ]),
    ("object.union_n", &[ARR]),
    ("opa.runtime", &[]),
    ("product", &[COLL]),
    ("providers.aws.sign_req", &[OBJ, OBJ, N]),
    ("regex.find_n", &[S, S, N]),
    ("regex.globs_match", &[S, S]),
    ("regex.match", &[S, S]),
    ("regex.replace", &[S, S, S]),
    ("regex.split", &[S, S]),
    ("replace", &[S, S, S]),
    ("round", &[N]),
    ("semver.compare", &[S, S]),
    ("sort", &[COLL]),
    ("split", &[S, S]),
    ("sprintf", &[S, ARR]),
    ("startswith", &[S, S]),
    ("strings.count", &[S, S]),
    ("strings.render_template", &[S, OBJ]),
    ("strings.replace_n", &[OBJ, S]),
    ("strings.reverse", &[S]),
    ("strings.split_n", &[S, S, N]),
    ("substring", &[S, N, N]),
    ("sum", &[COLL]),
    ("time.add_date", &[N, N, N, N]),
    ("time.clock", &[TIME]),
    ("time.date", &[TIME]),
    ("time.now_ns", &[]),
    ("time.parse_duration_ns", &[S]),
    ("time.parse_ns", &[S, S]),
    ("time.parse_rfc3339_ns", &[S]),
    ("time.weekday", &[TIME]),
    ("to_number", &[N | S | BOOLEAN | NULL]),
    ("trim", &[S, S]),
    ("trim_left", &[S, S]),
    ("trim_prefix", &[S, S]),
    ("trim_right", &[S, S]),
    ("trim_space", &[S]),
    ("trim_suffix", &[S, S]),
    ("type_name", &[A]),
    ("union", &[SET]),
    ("units.parse", &[S]),
    ("units.parse_bytes", &[S]),
    ("upper", &[S]),
    ("urlquery.decode", &[S]),
    ("urlquery.decode_object", &[S]),
    ("urlquery.encode", &[S]),
    ("urlquery.encode_object", &[OBJ]),
    ("uuid.parse", &[S]),
    ("uuid.rfc4122", &[S]),
    ("walk", &[A]),
    ("yaml.is_valid", &[S]),
    ("yaml.marshal", &[A]),
    ("yaml.unmarshal", &[S]),
];

/// The declared argument types of built-in `name`, if listed.
pub(super) fn signature(name: &str) -> Option<&'static [Ty]> {
    SIGNATURES
        .binary_search_by(|(n, _)| (*n).cmp(name))
        .ok()
        .and_then(|i| SIGNATURES.get(i))
        .map(|(_, sig)| *sig)
}

/// The most arguments a regorus built-in takes (its largest is 4).
const MAX_ARITY: usize = 8;

/// Built-ins regorus or this crate provides, by name, asked once per name.
#[derive(Debug, Default)]
pub(super) struct Builtins {
    arity: HashMap<String, Option<usize>>,
}

impl Builtins {
    /// How many arguments built-in `name` takes, or `None` if neither regorus nor this
    /// crate has such a built-in. `print` takes any number and is handled by the caller.
    pub(super) fn arity(&mut self, name: &str) -> Option<usize> {
        if let Some(known) = self.arity.get(name) {
            return *known;
        }
        let found = crate::builtins::arity(name).or_else(|| probe_arity(name));
        self.arity.insert(name.to_owned(), found);
        found
    }
}

/// Asks regorus: its `get_extra_arg` answers for a call with one argument more than the
/// built-in takes (the output-argument form), so the call whose extra argument it finds
/// gives the arity.
/// How many arguments built-in `name` takes, whether regorus or this crate provides it.
pub(crate) fn builtin_arity(name: &str) -> Option<usize> {
    crate::builtins::arity(name).or_else(|| probe_arity(name))
}

fn probe_arity(name: &str) -> Option<usize> {
    let source = Source::from_contents("<builtin>".to_owned(), name.to_owned()).ok()?;
    let span = Span {
        source,
        line: 1,
        col: 1,
        start: 0,
        end: u32::try_from(name.len()).ok()?,
    };
    let fcn = Ref::new(Expr::Var {
        span: span.clone(),
        value: regorus::Value::from(name),
        eidx: 0,
    });
    let param = Ref::new(Expr::Null {
        span: span.clone(),
        value: regorus::Value::Null,
        eidx: 0,
    });
    let table = FunctionTable::new();
    (0..=MAX_ARITY).find(|arity| {
        let call = Expr::Call {
            span: span.clone(),
            fcn: fcn.clone(),
            params: vec![param.clone(); arity + 1],
            eidx: 0,
        };
        get_extra_arg(&call, None, &table).is_some()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regorus_tells_the_arity_of_its_builtins() {
        let mut builtins = Builtins::default();
        assert_eq!(builtins.arity("count"), Some(1));
        assert_eq!(builtins.arity("startswith"), Some(2));
        assert_eq!(builtins.arity("regex.replace"), Some(3));
        assert_eq!(builtins.arity("time.now_ns"), Some(0));
        assert_eq!(builtins.arity("startwith"), None);
        assert_eq!(builtins.arity("data.x.f"), None);
        // Extensions of this crate, and built-ins of regorus features enabled here.
        assert_eq!(builtins.arity("array.flatten"), Some(1));
        assert_eq!(builtins.arity("io.jwt.decode_verify"), Some(2));
        assert_eq!(builtins.arity("walk"), Some(1));
        assert_eq!(builtins.arity("yaml.unmarshal"), Some(1));
    }

    #[test]
    fn every_extension_has_a_signature_of_its_arity() {
        for extension in crate::builtins::EXTENSIONS {
            assert_eq!(
                probe_arity(extension.name).is_some(),
                extension.native,
                "{}: whether regorus has it too",
                extension.name
            );
            let sig = signature(extension.name);
            assert_eq!(
                sig.map(<[Ty]>::len),
                Some(usize::from(extension.arity)),
                "{}",
                extension.name
            );
        }
    }

    #[test]
    fn every_signature_is_a_regorus_builtin_of_that_arity() {
        let mut builtins = Builtins::default();
        let mut previous = "";
        for (name, sig) in SIGNATURES {
            assert!(previous < *name, "SIGNATURES must be sorted: {name}");
            previous = name;
            assert_eq!(builtins.arity(name), Some(sig.len()), "{name}");
        }
        assert_eq!(signature("startswith"), Some(&[STRING, STRING][..]));
        assert_eq!(signature("nope"), None);
        assert_eq!(describe(STRING | ARRAY), "string or array");
    }
}
