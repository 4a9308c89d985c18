//! `crypto.x509.*` and `crypto.parse_private_keys`: certificates, certificate requests
//! and private keys parsed (with `x509-parser` and its DER parser; keys checked with
//! `aws-lc-rs`) into the values OPA 1.x returns, which are Go's JSON encodings of its
//! `x509.Certificate`, `x509.CertificateRequest`, `tls.Certificate` and private key types:
//! byte strings as standard base64, big integers as numbers, times as RFC 3339, absent
//! lists as `null`.
//!
//! `parse_and_verify_certificates` verifies a chain (root first) with rustls-webpki, from
//! the leaf to the root, where OPA uses Go's `x509.Verify`.
//!
//! Inputs are PEM, or base64 of PEM or DER, as OPA reads them; at most [`MAX_INPUT`]
//! bytes. A private key is returned only where OPA returns it (`parse_keypair`,
//! `parse_rsa_private_key`, `parse_private_keys`); the types holding key material here
//! have no `Debug` and are never logged.

use std::collections::BTreeMap;

use aws_lc_rs::signature::{self as sig, KeyPair as _};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use regorus::Value;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use x509_parser::certificate::X509Certificate;
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::cri_attributes::ParsedCriAttribute;
use x509_parser::der_parser::der::parse_der_sequence;
use x509_parser::der_parser::oid::Oid;
use x509_parser::extensions::{DistributionPointName, GeneralName, ParsedExtension, X509Extension};
use x509_parser::num_bigint::BigUint;
use x509_parser::pem::Pem;
use x509_parser::prelude::FromDer as _;
use x509_parser::public_key::PublicKey;
use x509_parser::x509::{SubjectPublicKeyInfo, X509Name};

use super::{Args, BuiltinError};

/// The longest input accepted: 1 MiB.
pub(crate) const MAX_INPUT: usize = 1 << 20;

/// The most PEM blocks or DER certificates read from one input.
const MAX_BLOCKS: usize = 1024;

const OID_RSA: &str = "1.2.840.113549.1.1.1";
const OID_DSA: &str = "1.2.840.10040.4.1";
const OID_EC: &str = "1.2.840.10045.2.1";
const OID_ED25519: &str = "1.3.101.112";
const OID_P256: &str = "1.2.840.10045.3.1.7";
const OID_P384: &str = "1.3.132.0.34";
const OID_P521: &str = "1.3.132.0.35";

/// Argument `i`, a string of at most [`MAX_INPUT`] bytes.
fn input<'a>(args: &Args<'a>, i: usize) -> Result<&'a str, BuiltinError> {
    let text = args.string(i)?;
    if text.len() > MAX_INPUT {
        return Err(args.invalid(format!(
            "operand {} is {} bytes, above the cap of {MAX_INPUT}",
            i + 1,
            text.len()
        )));
    }
    Ok(text)
}

/// Standard base64, strict as Go's `base64.StdEncoding`, with Go's error message.
fn base64_decode(args: &Args<'_>, text: &str) -> Result<Vec<u8>, BuiltinError> {
    STANDARD.decode(text).map_err(|e| {
        let at = match e {
            base64::DecodeError::InvalidByte(at, _)
            | base64::DecodeError::InvalidLastSymbol(at, _) => at,
            base64::DecodeError::InvalidLength(len) => len - len % 4,
            base64::DecodeError::InvalidPadding => text.len(),
        };
        args.invalid(format!("illegal base64 data at input byte {at}"))
    })
}

/// The PEM blocks of `bytes` (text around them ignored), as (label, contents).
fn pem_blocks(args: &Args<'_>, bytes: &[u8]) -> Result<Vec<Pem>, BuiltinError> {
    let mut blocks = Vec::new();
    for block in Pem::iter_from_buffer(bytes) {
        let block = block.map_err(|e| args.invalid(format!("invalid PEM data: {e}")))?;
        if blocks.len() >= MAX_BLOCKS {
            return Err(args.invalid(format!("more than {MAX_BLOCKS} PEM blocks")));
        }
        blocks.push(block);
    }
    Ok(blocks)
}

fn object<const N: usize>(fields: [(&str, Value); N]) -> Value {
    Value::from(
        fields
            .into_iter()
            .map(|(k, v)| (Value::from(k), v))
            .collect::<BTreeMap<_, _>>(),
    )
}

fn bytes(b: &[u8]) -> Value {
    Value::from(STANDARD.encode(b))
}

/// A big unsigned integer as a number.
fn big(n: &BigUint) -> Value {
    Value::from_numeric_string(&n.to_string()).unwrap_or(Value::Null)
}

/// Big-endian bytes as a number.
fn big_bytes(b: &[u8]) -> Value {
    big(&BigUint::from_bytes_be(b))
}

/// A list as Go encodes a slice: `null` when empty.
fn list(items: Vec<Value>) -> Value {
    if items.is_empty() {
        Value::Null
    } else {
        Value::from(items)
    }
}

fn strings(items: Vec<String>) -> Value {
    list(items.into_iter().map(Value::from).collect())
}

/// An OID as Go's `asn1.ObjectIdentifier`: an array of its arcs.
fn oid_arcs(oid: &Oid<'_>) -> Value {
    match oid.iter() {
        Some(arcs) => Value::from(arcs.map(Value::from).collect::<Vec<_>>()),
        None => Value::from(oid.to_id_string()),
    }
}

/// A UTC time as Go's `time.Time` encodes it.
fn time(timestamp: i64) -> Value {
    chrono::DateTime::from_timestamp(timestamp, 0).map_or(Value::Null, |t| {
        Value::from(t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
    })
}

/// Go's `x509.SignatureAlgorithm` for an algorithm identifier.
fn signature_algorithm(oid: &Oid<'_>, parameters: Option<&[u8]>) -> u32 {
    match oid.to_id_string().as_str() {
        "1.2.840.113549.1.1.2" => 1,
        "1.2.840.113549.1.1.4" => 2,
        "1.2.840.113549.1.1.5" => 3,
        "1.2.840.113549.1.1.11" => 4,
        "1.2.840.113549.1.1.12" => 5,
        "1.2.840.113549.1.1.13" => 6,
        "1.2.840.10040.4.3" => 7,
        "2.16.840.1.101.3.4.3.2" => 8,
        "1.2.840.10045.4.1" => 9,
        "1.2.840.10045.4.3.2" => 10,
        "1.2.840.10045.4.3.3" => 11,
        "1.2.840.10045.4.3.4" => 12,
        // RSASSA-PSS: the hash named in its parameters (SHA-384 and SHA-512 end in 2, 3).
        "1.2.840.113549.1.1.10" => {
            let params = parameters.unwrap_or_default();
            let names = |last: u8| {
                params
                    .windows(9)
                    .any(|w| w == [0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, last])
            };
            if names(2) {
                14
            } else if names(3) {
                15
            } else {
                13
            }
        }
        OID_ED25519 => 16,
        _ => 0,
    }
}

/// Go's `x509.PublicKeyAlgorithm` and its encoding of the public key.
fn public_key(spki: &SubjectPublicKeyInfo<'_>) -> (u32, Value) {
    let algorithm = match spki.algorithm.algorithm.to_id_string().as_str() {
        OID_RSA => 1,
        OID_DSA => 2,
        OID_EC => 3,
        OID_ED25519 => 4,
        _ => 0,
    };
    let key = match (algorithm, spki.parsed()) {
        (1, Ok(PublicKey::RSA(rsa))) => object([
            ("N", big_bytes(rsa.modulus)),
            ("E", big_bytes(rsa.exponent)),
        ]),
        (3, Ok(PublicKey::EC(point))) => ec_point(point.data()),
        (4, _) => bytes(&spki.subject_public_key.data),
        _ => Value::Null,
    };
    (algorithm, key)
}

/// An uncompressed EC point as Go's `ecdsa.PublicKey` (its curve encodes as `{}`).
fn ec_point(point: &[u8]) -> Value {
    let coordinates = point.get(1..).unwrap_or_default();
    let (x, y) = coordinates.split_at(coordinates.len() / 2);
    object([
        ("Curve", Value::new_object()),
        ("X", big_bytes(x)),
        ("Y", big_bytes(y)),
    ])
}

/// Go's `pkix.Name`.
fn name(name: &X509Name<'_>) -> Value {
    let mut fields: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    let (mut common_name, mut serial_number) = (String::new(), String::new());
    let mut names = Vec::new();
    for attribute in name.iter_attributes() {
        let oid = attribute.attr_type();
        let value = attribute.as_str().ok();
        names.push(object([
            ("Type", oid_arcs(oid)),
            ("Value", value.map_or(Value::Null, Value::from)),
        ]));
        let Some(value) = value else { continue };
        let field = match oid.to_id_string().as_str() {
            "2.5.4.3" => {
                common_name = value.to_owned();
                continue;
            }
            "2.5.4.5" => {
                serial_number = value.to_owned();
                continue;
            }
            "2.5.4.6" => "Country",
            "2.5.4.10" => "Organization",
            "2.5.4.11" => "OrganizationalUnit",
            "2.5.4.7" => "Locality",
            "2.5.4.8" => "Province",
            "2.5.4.9" => "StreetAddress",
            "2.5.4.17" => "PostalCode",
            _ => continue,
        };
        fields.entry(field).or_default().push(value.to_owned());
    }
    let mut take = |field: &str| strings(fields.remove(field).unwrap_or_default());
    object([
        ("Country", take("Country")),
        ("Organization", take("Organization")),
        ("OrganizationalUnit", take("OrganizationalUnit")),
        ("Locality", take("Locality")),
        ("Province", take("Province")),
        ("StreetAddress", take("StreetAddress")),
        ("PostalCode", take("PostalCode")),
        ("SerialNumber", Value::from(serial_number)),
        ("CommonName", Value::from(common_name)),
        ("Names", list(names)),
        ("ExtraNames", Value::Null),
    ])
}

/// An IP address as Go's `net.IP` encodes it.
fn ip(octets: &[u8]) -> Option<String> {
    match octets.len() {
        4 => <[u8; 4]>::try_from(octets)
            .ok()
            .map(|o| std::net::Ipv4Addr::from(o).to_string()),
        16 => <[u8; 16]>::try_from(octets).ok().map(|o| {
            let v6 = std::net::Ipv6Addr::from(o);
            v6.to_ipv4_mapped()
                .map_or_else(|| v6.to_string(), |v4| v4.to_string())
        }),
        _ => None,
    }
}

/// A URI as Go's `url.URL` encodes it (its main parts).
fn url(uri: &str) -> Value {
    let (scheme, rest) = uri.split_once(':').unwrap_or(("", uri));
    let (rest, fragment) = rest.split_once('#').unwrap_or((rest, ""));
    let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
    let (opaque, host, path) = match rest.strip_prefix("//") {
        Some(authority) => {
            let (host, path) = authority
                .find('/')
                .map_or((authority, ""), |i| authority.split_at(i));
            ("", host, path)
        }
        None if !rest.starts_with('/') && !scheme.is_empty() => (rest, "", ""),
        None => ("", "", rest),
    };
    object([
        ("Scheme", Value::from(scheme)),
        ("Opaque", Value::from(opaque)),
        ("User", Value::Null),
        ("Host", Value::from(host)),
        ("Path", Value::from(path)),
        ("RawPath", Value::from("")),
        ("OmitHost", Value::from(false)),
        ("ForceQuery", Value::from(false)),
        ("RawQuery", Value::from(query)),
        ("Fragment", Value::from(fragment)),
        ("RawFragment", Value::from("")),
    ])
}

/// The names of a subject alternative name extension.
#[derive(Default)]
struct AltNames {
    dns: Vec<String>,
    email: Vec<String>,
    ip: Vec<String>,
    uri: Vec<String>,
}

impl AltNames {
    fn add(&mut self, names: &[GeneralName<'_>]) {
        for name in names {
            match name {
                GeneralName::DNSName(n) => self.dns.push((*n).to_owned()),
                GeneralName::RFC822Name(n) => self.email.push((*n).to_owned()),
                GeneralName::URI(n) => self.uri.push((*n).to_owned()),
                GeneralName::IPAddress(octets) => self.ip.extend(ip(octets)),
                _ => {}
            }
        }
    }

    fn fields(self) -> [(&'static str, Value); 5] {
        let urls = list(self.uri.iter().map(|u| url(u)).collect());
        [
            ("DNSNames", strings(self.dns)),
            ("EmailAddresses", strings(self.email)),
            ("IPAddresses", strings(self.ip)),
            ("URIs", urls),
            ("URIStrings", strings(self.uri)),
        ]
    }
}

/// Go's `x509.ExtKeyUsage` for an extended key usage OID, if it has one.
fn ext_key_usage(oid: &str) -> Option<u32> {
    Some(match oid {
        "2.5.29.37.0" => 0,
        "1.3.6.1.5.5.7.3.1" => 1,
        "1.3.6.1.5.5.7.3.2" => 2,
        "1.3.6.1.5.5.7.3.3" => 3,
        "1.3.6.1.5.5.7.3.4" => 4,
        "1.3.6.1.5.5.7.3.5" => 5,
        "1.3.6.1.5.5.7.3.6" => 6,
        "1.3.6.1.5.5.7.3.7" => 7,
        "1.3.6.1.5.5.7.3.8" => 8,
        "1.3.6.1.5.5.7.3.9" => 9,
        "1.3.6.1.4.1.311.10.3.3" => 10,
        "2.16.840.1.113730.4.1" => 11,
        "1.3.6.1.4.1.311.2.1.22" => 12,
        "1.3.6.1.4.1.311.61.1.1" => 13,
        _ => return None,
    })
}

/// A certificate as OPA returns it: Go's `x509.Certificate`, plus `URIStrings`.
fn certificate(cert: &X509Certificate<'_>) -> Value {
    let tbs = &cert.tbs_certificate;
    let (public_key_algorithm, public_key) = public_key(&tbs.subject_pki);
    let mut key_usage = 0u32;
    let (mut ext_usage, mut unknown_usage) = (Vec::new(), Vec::new());
    let (mut bc_valid, mut is_ca, mut max_path_len) = (false, false, 0i64);
    let (mut subject_key_id, mut authority_key_id) = (Value::Null, Value::Null);
    let (mut ocsp, mut issuers, mut crls) = (Vec::new(), Vec::new(), Vec::new());
    let (mut policy_ids, mut policies) = (Vec::new(), Vec::new());
    let mut inhibit_any_policy = 0u32;
    let mut alt_names = AltNames::default();
    let mut extensions = Vec::new();
    for extension in tbs.extensions() {
        extensions.push(self::extension(extension));
        match extension.parsed_extension() {
            ParsedExtension::KeyUsage(usage) => {
                // Go numbers the usages from bit 0 of the ASN.1 bit string, as x509-parser.
                key_usage = u32::from(usage.flags);
            }
            ParsedExtension::ExtendedKeyUsage(_) => {
                // In the certificate's order (x509-parser's summary has none).
                if let Ok((_, seq)) = parse_der_sequence(extension.value) {
                    for item in seq.as_sequence().map(Vec::as_slice).unwrap_or_default() {
                        let Ok(oid) = item.as_oid() else { continue };
                        match ext_key_usage(&oid.to_id_string()) {
                            Some(usage) => ext_usage.push(Value::from(usage)),
                            None => unknown_usage.push(oid_arcs(oid)),
                        }
                    }
                }
            }
            ParsedExtension::BasicConstraints(bc) => {
                bc_valid = true;
                is_ca = bc.ca;
                max_path_len = bc.path_len_constraint.map_or(-1, i64::from);
            }
            ParsedExtension::SubjectKeyIdentifier(id) => subject_key_id = bytes(id.0),
            ParsedExtension::AuthorityKeyIdentifier(aki) => {
                if let Some(id) = &aki.key_identifier {
                    authority_key_id = bytes(id.0);
                }
            }
            ParsedExtension::SubjectAlternativeName(san) => alt_names.add(&san.general_names),
            ParsedExtension::AuthorityInfoAccess(aia) => {
                for access in aia.iter() {
                    let GeneralName::URI(uri) = access.access_location else {
                        continue;
                    };
                    match access.access_method.to_id_string().as_str() {
                        "1.3.6.1.5.5.7.48.1" => ocsp.push(uri.to_owned()),
                        "1.3.6.1.5.5.7.48.2" => issuers.push(uri.to_owned()),
                        _ => {}
                    }
                }
            }
            ParsedExtension::CRLDistributionPoints(points) => {
                for point in points.iter() {
                    if let Some(DistributionPointName::FullName(names)) = &point.distribution_point
                    {
                        crls.extend(names.iter().filter_map(|n| match n {
                            GeneralName::URI(uri) => Some((*uri).to_owned()),
                            _ => None,
                        }));
                    }
                }
            }
            ParsedExtension::CertificatePolicies(list) => {
                for policy in list {
                    policy_ids.push(oid_arcs(&policy.policy_id));
                    policies.push(Value::from(policy.policy_id.to_id_string()));
                }
            }
            ParsedExtension::InhibitAnyPolicy(inhibit) => {
                inhibit_any_policy = inhibit.skip_certs;
            }
            _ => {}
        }
    }
    let validity = tbs.validity();
    let mut fields = vec![
        ("Raw", bytes(cert.as_raw())),
        ("RawTBSCertificate", bytes(tbs.as_ref())),
        ("RawSubjectPublicKeyInfo", bytes(tbs.subject_pki.raw)),
        ("RawSubject", bytes(tbs.subject.as_raw())),
        ("RawIssuer", bytes(tbs.issuer.as_raw())),
        ("Signature", bytes(&cert.signature_value.data)),
        (
            "SignatureAlgorithm",
            Value::from(signature_algorithm(
                &cert.signature_algorithm.algorithm,
                cert.signature_algorithm.parameters.as_ref().map(|p| p.data),
            )),
        ),
        ("PublicKeyAlgorithm", Value::from(public_key_algorithm)),
        ("PublicKey", public_key),
        ("Version", Value::from(tbs.version.0 + 1)),
        ("SerialNumber", big(&tbs.serial)),
        ("Issuer", name(&tbs.issuer)),
        ("Subject", name(&tbs.subject)),
        ("NotBefore", time(validity.not_before.timestamp())),
        ("NotAfter", time(validity.not_after.timestamp())),
        ("KeyUsage", Value::from(key_usage)),
        ("Extensions", list(extensions)),
        ("ExtraExtensions", Value::Null),
        ("UnhandledCriticalExtensions", Value::Null),
        ("ExtKeyUsage", list(ext_usage)),
        ("UnknownExtKeyUsage", list(unknown_usage)),
        ("BasicConstraintsValid", Value::from(bc_valid)),
        ("IsCA", Value::from(is_ca)),
        ("MaxPathLen", Value::from(max_path_len)),
        ("MaxPathLenZero", Value::from(bc_valid && max_path_len == 0)),
        ("SubjectKeyId", subject_key_id),
        ("AuthorityKeyId", authority_key_id),
        ("OCSPServer", strings(ocsp)),
        ("IssuingCertificateURL", strings(issuers)),
        ("PermittedDNSDomainsCritical", Value::from(false)),
        ("PermittedDNSDomains", Value::Null),
        ("ExcludedDNSDomains", Value::Null),
        ("PermittedIPRanges", Value::Null),
        ("ExcludedIPRanges", Value::Null),
        ("PermittedEmailAddresses", Value::Null),
        ("ExcludedEmailAddresses", Value::Null),
        ("PermittedURIDomains", Value::Null),
        ("ExcludedURIDomains", Value::Null),
        ("CRLDistributionPoints", strings(crls)),
        ("PolicyIdentifiers", list(policy_ids)),
        ("Policies", list(policies)),
        ("InhibitAnyPolicy", Value::from(inhibit_any_policy)),
        ("InhibitAnyPolicyZero", Value::from(false)),
        ("InhibitPolicyMapping", Value::from(0)),
        ("InhibitPolicyMappingZero", Value::from(false)),
        ("RequireExplicitPolicy", Value::from(0)),
        ("RequireExplicitPolicyZero", Value::from(false)),
        ("PolicyMappings", Value::Null),
    ];
    fields.extend(alt_names.fields());
    Value::from(
        fields
            .into_iter()
            .map(|(k, v)| (Value::from(k), v))
            .collect::<BTreeMap<_, _>>(),
    )
}

/// Every certificate of consecutive DER encodings, as Go's `x509.ParseCertificates`.
fn parse_der_certificates<'a>(
    args: &Args<'_>,
    mut der: &'a [u8],
) -> Result<Vec<X509Certificate<'a>>, BuiltinError> {
    let mut certs = Vec::new();
    while !der.is_empty() {
        if certs.len() >= MAX_BLOCKS {
            return Err(args.invalid(format!("more than {MAX_BLOCKS} certificates")));
        }
        let (rest, cert) = X509Certificate::from_der(der)
            .map_err(|_| args.invalid("x509: malformed certificate"))?;
        certs.push(cert);
        der = rest;
    }
    Ok(certs)
}

/// The DER of the certificates in OPA's input forms: PEM, or base64 of PEM or DER.
fn certificate_ders(args: &Args<'_>, text: &str) -> Result<Vec<u8>, BuiltinError> {
    let decoded;
    let bytes = if text.starts_with("-----BEGIN") {
        text.as_bytes()
    } else {
        decoded = base64_decode(args, text)?;
        if !decoded.starts_with(b"-----BEGIN") {
            return Ok(decoded);
        }
        &decoded
    };
    let mut der = Vec::new();
    for block in pem_blocks(args, bytes)? {
        if block.label != "CERTIFICATE" {
            return Err(args.invalid(format!(
                "PEM block type is '{}', expected CERTIFICATE",
                block.label
            )));
        }
        der.extend_from_slice(&block.contents);
    }
    Ok(der)
}

/// `crypto.x509.parse_certificates(certs)`: the certificates of a PEM string, or of
/// base64 of PEM or DER.
pub(super) fn parse_certificates(args: &Args<'_>) -> Result<Value, BuiltinError> {
    let der = certificate_ders(args, input(args, 0)?)?;
    let certs = parse_der_certificates(args, &der)?;
    Ok(Value::from(
        certs.iter().map(certificate).collect::<Vec<_>>(),
    ))
}

/// `crypto.x509.parse_certificate_request(csr)`: a certificate signing request, PEM or
/// base64 of PEM or DER, as Go's `x509.CertificateRequest`.
pub(super) fn parse_certificate_request(args: &Args<'_>) -> Result<Value, BuiltinError> {
    let text = input(args, 0)?;
    let mut der = if text.starts_with("-----BEGIN CERTIFICATE REQUEST-----") {
        text.as_bytes().to_vec()
    } else {
        base64_decode(args, text)?
    };
    if der.starts_with(b"-----BEGIN") {
        let block = pem_blocks(args, &der)?.into_iter().next();
        match block {
            Some(block) if block.label == "CERTIFICATE REQUEST" => der = block.contents,
            _ => return Err(args.invalid("invalid PEM-encoded certificate signing request")),
        }
    }
    let (_, csr) = X509CertificationRequest::from_der(&der)
        .map_err(|_| args.invalid("x509: malformed certificate request"))?;
    let info = &csr.certification_request_info;
    let (public_key_algorithm, public_key) = public_key(&info.subject_pki);
    let mut alt_names = AltNames::default();
    let mut extensions = Vec::new();
    for extension in csr.requested_extensions().into_iter().flatten() {
        if let ParsedExtension::SubjectAlternativeName(san) = extension {
            alt_names.add(&san.general_names);
        }
    }
    // The extensions requested, as Go lists them.
    for attribute in info.iter_attributes() {
        if let ParsedCriAttribute::ExtensionRequest(request) = attribute.parsed_attribute() {
            extensions.extend(request.extensions.iter().map(extension));
        }
    }
    let mut fields = vec![
        ("Raw", bytes(csr.as_raw())),
        ("RawTBSCertificateRequest", bytes(info.raw)),
        ("RawSubjectPublicKeyInfo", bytes(info.subject_pki.raw)),
        ("RawSubject", bytes(info.subject.as_raw())),
        ("Version", Value::from(info.version.0)),
        ("Signature", bytes(&csr.signature_value.data)),
        (
            "SignatureAlgorithm",
            Value::from(signature_algorithm(
                &csr.signature_algorithm.algorithm,
                csr.signature_algorithm.parameters.as_ref().map(|p| p.data),
            )),
        ),
        ("PublicKeyAlgorithm", Value::from(public_key_algorithm)),
        ("PublicKey", public_key),
        ("Subject", name(&info.subject)),
        ("Attributes", Value::Null),
        ("Extensions", list(extensions)),
        ("ExtraExtensions", Value::Null),
    ];
    let [dns, email, ips, uris, _] = alt_names.fields();
    fields.extend([dns, email, ips, uris]);
    Ok(Value::from(
        fields
            .into_iter()
            .map(|(k, v)| (Value::from(k), v))
            .collect::<BTreeMap<_, _>>(),
    ))
}

/// An extension as Go's `pkix.Extension`.
fn extension(extension: &X509Extension<'_>) -> Value {
    object([
        ("Id", oid_arcs(&extension.oid)),
        ("Critical", Value::from(extension.critical)),
        ("Value", bytes(extension.value)),
    ])
}

/// `[false, []]`: what OPA answers for a chain it cannot parse or verify.
fn unverified() -> Value {
    Value::from(vec![Value::from(false), Value::new_array()])
}

/// The DER of the extended key usages OPA's options name (`KeyUsageServerAuth`…), by
/// name; `None` for `KeyUsageAny`.
fn usage_oid(name: &str) -> Option<Option<&'static [u8]>> {
    const ID_KP: [u8; 7] = [0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03];
    const fn kp(n: u8) -> [u8; 8] {
        let [a, b, c, d, e, f, g] = ID_KP;
        [a, b, c, d, e, f, g, n]
    }
    const SERVER: [u8; 8] = kp(1);
    const CLIENT: [u8; 8] = kp(2);
    const CODE: [u8; 8] = kp(3);
    const EMAIL: [u8; 8] = kp(4);
    const IPSEC_END: [u8; 8] = kp(5);
    const IPSEC_TUNNEL: [u8; 8] = kp(6);
    const IPSEC_USER: [u8; 8] = kp(7);
    const TIME: [u8; 8] = kp(8);
    const OCSP: [u8; 8] = kp(9);
    const MS_SGC: [u8; 10] = [0x2b, 0x06, 0x01, 0x04, 0x01, 0x82, 0x37, 0x0a, 0x03, 0x03];
    const NS_SGC: [u8; 9] = [0x60, 0x86, 0x48, 0x01, 0x86, 0xf8, 0x42, 0x04, 0x01];
    const MS_CODE: [u8; 10] = [0x2b, 0x06, 0x01, 0x04, 0x01, 0x82, 0x37, 0x02, 0x01, 0x16];
    const MS_KERNEL: [u8; 10] = [0x2b, 0x06, 0x01, 0x04, 0x01, 0x82, 0x37, 0x3d, 0x01, 0x01];
    Some(match name {
        "KeyUsageAny" => None,
        "KeyUsageServerAuth" => Some(&SERVER),
        "KeyUsageClientAuth" => Some(&CLIENT),
        "KeyUsageCodeSigning" => Some(&CODE),
        "KeyUsageEmailProtection" => Some(&EMAIL),
        "KeyUsageIPSECEndSystem" => Some(&IPSEC_END),
        "KeyUsageIPSECTunnel" => Some(&IPSEC_TUNNEL),
        "KeyUsageIPSECUser" => Some(&IPSEC_USER),
        "KeyUsageTimeStamping" => Some(&TIME),
        "KeyUsageOCSPSigning" => Some(&OCSP),
        "KeyUsageMicrosoftServerGatedCrypto" => Some(&MS_SGC),
        "KeyUsageNetscapeServerGatedCrypto" => Some(&NS_SGC),
        "KeyUsageMicrosoftCommercialCodeSigning" => Some(&MS_CODE),
        "KeyUsageMicrosoftKernelCodeSigning" => Some(&MS_KERNEL),
        _ => return None,
    })
}

/// The extended key usages a chain must allow, as Go's `VerifyOptions.KeyUsages`: a
/// certificate without the extension, or with `anyExtendedKeyUsage`, allows all; an empty
/// list means server authentication.
struct Usages {
    any: bool,
    oids: Vec<&'static [u8]>,
}

impl webpki::ExtendedKeyUsageValidator for Usages {
    fn validate(&self, iter: webpki::KeyPurposeIdIter<'_, '_>) -> Result<(), webpki::Error> {
        const ANY: [u8; 4] = [0x55, 0x1d, 0x25, 0x00];
        let mut present = Vec::new();
        for id in iter {
            let id = id?;
            if self.any
                || id == webpki::KeyPurposeId::new(&ANY)
                || self
                    .oids
                    .iter()
                    .any(|oid| id == webpki::KeyPurposeId::new(oid))
            {
                return Ok(());
            }
            present.push(id.to_decoded_oid());
        }
        if present.is_empty() {
            return Ok(());
        }
        let required = self.oids.first().copied().unwrap_or_default();
        Err(webpki::Error::RequiredEkuNotFoundContext(
            webpki::RequiredEkuNotFoundContext {
                required: webpki::KeyUsage::required(required),
                present,
            },
        ))
    }
}

/// OPA's verification options (`DNSName`, `CurrentTime` in nanoseconds,
/// `MaxConstraintComparisons`, `KeyUsages`).
struct VerifyOptions {
    dns_name: Option<String>,
    time: Option<UnixTime>,
    usages: Usages,
}

impl VerifyOptions {
    fn new() -> Self {
        Self {
            dns_name: None,
            time: None,
            usages: Usages {
                any: false,
                oids: Vec::new(),
            },
        }
    }
}

/// The options object of `parse_and_verify_certificates_with_options`, refused as OPA
/// refuses it.
fn verify_options(
    args: &Args<'_>,
    options: &BTreeMap<Value, Value>,
) -> Result<VerifyOptions, BuiltinError> {
    let mut parsed = VerifyOptions::new();
    for (key, value) in options {
        let Value::String(key) = key else { continue };
        match key.as_ref() {
            "DNSName" => match value {
                Value::String(name) => parsed.dns_name = Some(name.trim_matches('"').to_owned()),
                _ => return Err(args.invalid("'DNSName' should be a string")),
            },
            "CurrentTime" => match value {
                Value::Number(_) => {
                    let nanos = value.as_i64().map_err(|_| {
                        args.invalid("'CurrentTime' should be a valid int64 number")
                    })?;
                    let seconds = u64::try_from(nanos.div_euclid(1_000_000_000)).unwrap_or(0);
                    parsed.time = Some(UnixTime::since_unix_epoch(std::time::Duration::from_secs(
                        seconds,
                    )));
                }
                _ => return Err(args.invalid("'CurrentTime' should be a number")),
            },
            "MaxConstraintComparisons" => match value {
                Value::Number(_) if value.as_i64().is_ok() => {}
                Value::Number(_) => {
                    return Err(args.invalid("'MaxConstraintComparisons' should be a valid number"));
                }
                _ => return Err(args.invalid("'MaxConstraintComparisons' should be a number")),
            },
            "KeyUsages" => {
                let items: Vec<&Value> = match value {
                    Value::Array(items) => items.iter().collect(),
                    Value::Set(items) => items.iter().collect(),
                    _ => return Err(args.invalid("'KeyUsages' should be an Array or Set")),
                };
                let mut invalid = Vec::new();
                for item in items {
                    let Value::String(name) = item else { continue };
                    let name = name.trim_matches('"');
                    match usage_oid(name) {
                        Some(None) => parsed.usages.any = true,
                        Some(Some(oid)) => parsed.usages.oids.push(oid),
                        None => invalid.push(name.to_owned()),
                    }
                }
                if !invalid.is_empty() {
                    return Err(args.invalid(format!(
                        "invalid entries for 'KeyUsages' found: [{}]",
                        invalid.join(" ")
                    )));
                }
            }
            _ => return Err(args.invalid("invalid key option")),
        }
    }
    Ok(parsed)
}

/// The chain of `text` (root first, leaf last) verified from the leaf to the root as
/// OPA verifies it: `[true, chain]` (leaf first) or `[false, []]`.
fn verify_chain(args: &Args<'_>, text: &str, options: &VerifyOptions, extended: bool) -> Value {
    let Ok(der) = certificate_ders(args, text) else {
        return unverified();
    };
    let Ok(certs) = parse_der_certificates(args, &der) else {
        return unverified();
    };
    let ders: Vec<CertificateDer<'_>> = certs
        .iter()
        .map(|c| CertificateDer::from(c.as_raw()))
        .collect();
    let (Some((leaf, rest)), true) = (ders.split_last(), ders.len() >= 2) else {
        return unverified();
    };
    let Some((root, intermediates)) = rest.split_first() else {
        return unverified();
    };
    let (Ok(anchor), Ok(end_entity)) = (
        webpki::anchor_from_trusted_cert(root),
        webpki::EndEntityCert::try_from(leaf),
    ) else {
        return unverified();
    };
    let default_usages;
    let usages = if options.usages.any || !options.usages.oids.is_empty() {
        &options.usages
    } else {
        default_usages = Usages {
            any: false,
            oids: usage_oid("KeyUsageServerAuth")
                .flatten()
                .into_iter()
                .collect(),
        };
        &default_usages
    };
    let anchors = [anchor];
    let Ok(path) = end_entity.verify_for_usage(
        webpki::ALL_VERIFICATION_ALGS,
        &anchors,
        intermediates,
        options.time.unwrap_or_else(UnixTime::now),
        usages,
        None,
        None,
    ) else {
        return unverified();
    };
    if let Some(name) = &options.dns_name {
        let valid = ServerName::try_from(name.as_str())
            .is_ok_and(|name| end_entity.verify_is_valid_for_subject_name(&name).is_ok());
        if !valid {
            return unverified();
        }
    }
    // Leaf, the intermediates the path went through, root.
    let mut chain = vec![leaf.clone()];
    chain.extend(path.intermediate_certificates().map(webpki::Cert::der));
    chain.push(root.clone());
    let value = |der: CertificateDer<'_>| {
        let cert = certs.iter().find(|c| c.as_raw() == der.as_ref())?;
        let mut value = certificate(cert);
        if !extended && let Ok(map) = value.as_object_mut() {
            map.remove(&Value::from("URIStrings"));
        }
        Some(value)
    };
    match chain.into_iter().map(value).collect::<Option<Vec<_>>>() {
        Some(chain) => Value::from(vec![Value::from(true), Value::from(chain)]),
        None => unverified(),
    }
}

/// `crypto.x509.parse_and_verify_certificates(certs)`: `[true, chain]` when the
/// certificates (root first, leaf last) verify, at the current time, for server
/// authentication; `[false, []]` otherwise.
pub(super) fn parse_and_verify_certificates(args: &Args<'_>) -> Result<Value, BuiltinError> {
    let text = input(args, 0)?;
    Ok(verify_chain(args, text, &VerifyOptions::new(), true))
}

/// `crypto.x509.parse_and_verify_certificates_with_options(certs, options)`: as
/// `parse_and_verify_certificates`, with OPA's options.
pub(super) fn parse_and_verify_certificates_with_options(
    args: &Args<'_>,
) -> Result<Value, BuiltinError> {
    let text = input(args, 0)?;
    let options = args.object(1)?;
    // Certificates that do not parse are `[false, []]` before the options are read.
    let parses =
        certificate_ders(args, text).is_ok_and(|der| parse_der_certificates(args, &der).is_ok());
    if !parses {
        return Ok(unverified());
    }
    let options = verify_options(args, options)?;
    Ok(verify_chain(args, text, &options, false))
}

/// The components of an RSA private key (PKCS #1), as big-endian bytes.
struct RsaKey {
    n: BigUint,
    e: BigUint,
    d: BigUint,
    p: BigUint,
    q: BigUint,
    dp: BigUint,
    dq: BigUint,
    qi: BigUint,
}

/// A private key OPA parses: RSA, ECDSA on a NIST curve, or Ed25519.
enum PrivateKey {
    Rsa(Box<RsaKey>),
    Ec {
        /// The JWK name of the curve (`P-256`).
        curve: &'static str,
        d: Vec<u8>,
        /// The uncompressed public point.
        point: Vec<u8>,
    },
    Ed25519 {
        seed: Vec<u8>,
        public: Vec<u8>,
    },
}

/// `RSAPrivateKey ::= SEQUENCE { version, n, e, d, p, q, dp, dq, qi, ... }`, checked by
/// aws-lc-rs.
fn parse_pkcs1(args: &Args<'_>, der: &[u8]) -> Result<PrivateKey, BuiltinError> {
    let malformed = || args.invalid("x509: failed to parse private key (use ParsePKCS1PrivateKey)");
    sig::RsaKeyPair::from_der(der).map_err(|_| malformed())?;
    let (_, seq) = parse_der_sequence(der).map_err(|_| malformed())?;
    let items = seq.as_sequence().map_err(|_| malformed())?;
    let int = |i: usize| {
        items
            .get(i)
            .and_then(|o| o.as_biguint().ok())
            .ok_or_else(malformed)
    };
    Ok(PrivateKey::Rsa(Box::new(RsaKey {
        n: int(1)?,
        e: int(2)?,
        d: int(3)?,
        p: int(4)?,
        q: int(5)?,
        dp: int(6)?,
        dq: int(7)?,
        qi: int(8)?,
    })))
}

/// The curve of a named-curve OID: its aws-lc-rs algorithms and JWK name.
fn curve(oid: &str) -> Option<(&'static sig::EcdsaSigningAlgorithm, &'static str)> {
    match oid {
        OID_P256 => Some((&sig::ECDSA_P256_SHA256_ASN1_SIGNING, "P-256")),
        OID_P384 => Some((&sig::ECDSA_P384_SHA384_ASN1_SIGNING, "P-384")),
        OID_P521 => Some((&sig::ECDSA_P521_SHA512_ASN1_SIGNING, "P-521")),
        _ => None,
    }
}

/// An EC key (SEC 1 `ECPrivateKey`, or inside PKCS #8 with the curve named there).
fn parse_ec(args: &Args<'_>, der: &[u8], named: Option<&str>) -> Result<PrivateKey, BuiltinError> {
    let malformed = || args.invalid("x509: failed to parse EC private key");
    let (_, seq) = parse_der_sequence(der).map_err(|_| malformed())?;
    let items = seq.as_sequence().map_err(|_| malformed())?;
    let d = items
        .get(1)
        .and_then(|o| o.as_slice().ok())
        .ok_or_else(malformed)?;
    // The curve: the PKCS #8 algorithm's, or the one aws-lc-rs reads the key on (it
    // checks the key's own `parameters`).
    let (name, pair) = [OID_P256, OID_P384, OID_P521]
        .into_iter()
        .filter(|oid| named.is_none_or(|n| n == *oid))
        .filter_map(curve)
        .find_map(|(algorithm, name)| {
            sig::EcdsaKeyPair::from_private_key_der(algorithm, der)
                .ok()
                .map(|pair| (name, pair))
        })
        .ok_or_else(malformed)?;
    Ok(PrivateKey::Ec {
        curve: name,
        d: d.to_vec(),
        point: pair.public_key().as_ref().to_vec(),
    })
}

/// A PKCS #8 `PrivateKeyInfo` of an RSA, EC or Ed25519 key.
fn parse_pkcs8(args: &Args<'_>, der: &[u8]) -> Result<PrivateKey, BuiltinError> {
    let malformed = || args.invalid("x509: failed to parse private key (use ParsePKCS8PrivateKey)");
    let (_, seq) = parse_der_sequence(der).map_err(|_| malformed())?;
    let items = seq.as_sequence().map_err(|_| malformed())?;
    let algorithm = items
        .get(1)
        .and_then(|o| o.as_sequence().ok())
        .ok_or_else(malformed)?;
    let oid = algorithm
        .first()
        .and_then(|o| o.as_oid().ok())
        .map(Oid::to_id_string)
        .ok_or_else(malformed)?;
    let key = items
        .get(2)
        .and_then(|o| o.as_slice().ok())
        .ok_or_else(malformed)?;
    match oid.as_str() {
        OID_RSA => parse_pkcs1(args, key),
        OID_EC => {
            let named = algorithm
                .get(1)
                .and_then(|o| o.as_oid().ok())
                .map(Oid::to_id_string);
            let (alg, _) = named.as_deref().and_then(curve).ok_or_else(malformed)?;
            sig::EcdsaKeyPair::from_pkcs8(alg, der).map_err(|_| malformed())?;
            parse_ec(args, key, named.as_deref())
        }
        OID_ED25519 => {
            let pair =
                sig::Ed25519KeyPair::from_pkcs8_maybe_unchecked(der).map_err(|_| malformed())?;
            let (_, seed) =
                x509_parser::der_parser::der::parse_der(key).map_err(|_| malformed())?;
            Ok(PrivateKey::Ed25519 {
                seed: seed.as_slice().map_err(|_| malformed())?.to_vec(),
                public: pair.public_key().as_ref().to_vec(),
            })
        }
        other => Err(args.invalid(format!(
            "x509: PKCS#8 wrapping contained private key with unknown algorithm: {other}"
        ))),
    }
}

/// A key of a PEM block, by its label.
fn parse_key_block(args: &Args<'_>, block: &Pem) -> Result<Option<PrivateKey>, BuiltinError> {
    match block.label.as_str() {
        "RSA PRIVATE KEY" => parse_pkcs1(args, &block.contents).map(Some),
        "PRIVATE KEY" => parse_pkcs8(args, &block.contents).map(Some),
        "EC PRIVATE KEY" => parse_ec(args, &block.contents, None).map(Some),
        _ => Ok(None),
    }
}

/// The private keys of PEM data (or base64 of it), as OPA's `getPrivateKeysFromPEMData`.
fn private_keys(args: &Args<'_>, text: &str) -> Result<Vec<PrivateKey>, BuiltinError> {
    let decoded = STANDARD.decode(text).ok();
    let bytes = decoded.as_deref().unwrap_or(text.as_bytes());
    let mut keys = Vec::new();
    for block in Pem::iter_from_buffer(bytes).take(MAX_BLOCKS) {
        // An unreadable block ends the input, as in OPA.
        let Ok(block) = block else { break };
        keys.extend(parse_key_block(args, &block)?);
    }
    Ok(keys)
}

/// A private key as Go's JSON encodes it (`rsa.PrivateKey`, `ecdsa.PrivateKey`, or an
/// Ed25519 key's 64 bytes).
fn go_private_key(key: &PrivateKey) -> Value {
    match key {
        PrivateKey::Rsa(rsa) => object([
            ("N", big(&rsa.n)),
            ("E", big(&rsa.e)),
            ("D", big(&rsa.d)),
            ("Primes", Value::from(vec![big(&rsa.p), big(&rsa.q)])),
            (
                "Precomputed",
                object([
                    ("Dp", big(&rsa.dp)),
                    ("Dq", big(&rsa.dq)),
                    ("Qinv", big(&rsa.qi)),
                    ("CRTValues", Value::new_array()),
                ]),
            ),
        ]),
        PrivateKey::Ec { d, point, .. } => {
            let mut value = ec_point(point);
            if let Ok(map) = value.as_object_mut() {
                map.insert(Value::from("D"), big_bytes(d));
            }
            value
        }
        PrivateKey::Ed25519 { seed, public } => bytes(&[seed.as_slice(), public].concat()),
    }
}

fn b64url(n: &BigUint) -> Value {
    Value::from(URL_SAFE_NO_PAD.encode(n.to_bytes_be()))
}

/// A private key as a JWK.
fn jwk(key: &PrivateKey) -> Value {
    match key {
        PrivateKey::Rsa(rsa) => object([
            ("kty", Value::from("RSA")),
            ("n", b64url(&rsa.n)),
            ("e", b64url(&rsa.e)),
            ("d", b64url(&rsa.d)),
            ("p", b64url(&rsa.p)),
            ("q", b64url(&rsa.q)),
            ("dp", b64url(&rsa.dp)),
            ("dq", b64url(&rsa.dq)),
            ("qi", b64url(&rsa.qi)),
        ]),
        PrivateKey::Ec { curve, d, point } => {
            let coordinates = point.get(1..).unwrap_or_default();
            let (x, y) = coordinates.split_at(coordinates.len() / 2);
            object([
                ("kty", Value::from("EC")),
                ("crv", Value::from(*curve)),
                ("x", Value::from(URL_SAFE_NO_PAD.encode(x))),
                ("y", Value::from(URL_SAFE_NO_PAD.encode(y))),
                ("d", Value::from(URL_SAFE_NO_PAD.encode(d))),
            ])
        }
        PrivateKey::Ed25519 { seed, public } => object([
            ("kty", Value::from("OKP")),
            ("crv", Value::from("Ed25519")),
            ("x", Value::from(URL_SAFE_NO_PAD.encode(public))),
            ("d", Value::from(URL_SAFE_NO_PAD.encode(seed))),
        ]),
    }
}

/// `crypto.x509.parse_rsa_private_key(pem)`: the first private key of PEM data (or of
/// base64 of it) as a JWK; `null` when it has none.
pub(super) fn parse_rsa_private_key(args: &Args<'_>) -> Result<Value, BuiltinError> {
    let text = input(args, 0)?;
    if text.is_empty() {
        return Err(args.invalid("input PEM data was empty"));
    }
    let decoded;
    let pem = if text.starts_with("-----BEGIN") {
        text
    } else {
        decoded = String::from_utf8(base64_decode(args, text)?)
            .map_err(|_| args.invalid("input is not PEM data"))?;
        &decoded
    };
    Ok(private_keys(args, pem)?.first().map_or(Value::Null, jwk))
}

/// `crypto.parse_private_keys(keys)`: every private key of PEM data (or of base64 of it),
/// as Go encodes them; `null` for an empty string.
pub(super) fn parse_private_keys(args: &Args<'_>) -> Result<Value, BuiltinError> {
    let text = input(args, 0)?;
    if text.is_empty() {
        return Ok(Value::Null);
    }
    let keys = private_keys(args, text)?;
    Ok(Value::from(
        keys.iter().map(go_private_key).collect::<Vec<_>>(),
    ))
}

/// PEM text of `input` as OPA reads a key pair's halves: base64 is decoded, and DER is
/// taken as one block labelled `label`.
fn pem_or_der(args: &Args<'_>, text: &str, label: &str) -> Result<Vec<Pem>, BuiltinError> {
    let decoded;
    let bytes = if text.starts_with("-----BEGIN ") {
        text.as_bytes()
    } else {
        decoded = base64_decode(args, text)?;
        if !decoded.starts_with(b"-----BEGIN") {
            return Ok(vec![Pem {
                label: label.to_owned(),
                contents: decoded,
            }]);
        }
        &decoded
    };
    pem_blocks(args, bytes)
}

/// Whether `key` is the private half of the certificate's public key.
fn matches(key: &PrivateKey, spki: &SubjectPublicKeyInfo<'_>) -> bool {
    match (key, spki.parsed()) {
        (PrivateKey::Rsa(rsa), Ok(PublicKey::RSA(public))) => {
            BigUint::from_bytes_be(public.modulus) == rsa.n
                && BigUint::from_bytes_be(public.exponent) == rsa.e
        }
        (PrivateKey::Ec { point, .. }, Ok(PublicKey::EC(public))) => {
            public.data() == point.as_slice()
        }
        (PrivateKey::Ed25519 { public, .. }, _) => {
            spki.algorithm.algorithm.to_id_string() == OID_ED25519
                && spki.subject_public_key.data.as_ref() == public.as_slice()
        }
        _ => false,
    }
}

/// `crypto.x509.parse_keypair(cert, key)`: a certificate chain and its private key (PEM,
/// or base64 of PEM or DER) as Go's `tls.Certificate`.
pub(super) fn parse_keypair(args: &Args<'_>) -> Result<Value, BuiltinError> {
    let cert_blocks = pem_or_der(args, input(args, 0)?, "CERTIFICATE")?;
    let key_blocks = pem_or_der(args, input(args, 1)?, "PRIVATE KEY")?;
    let chain: Vec<&[u8]> = cert_blocks
        .iter()
        .filter(|b| b.label == "CERTIFICATE")
        .map(|b| b.contents.as_slice())
        .collect();
    let Some(leaf_der) = chain.first() else {
        return Err(args.invalid("tls: failed to find any PEM data in certificate input"));
    };
    let key_block = key_blocks
        .iter()
        .find(|b| b.label == "PRIVATE KEY" || b.label.ends_with(" PRIVATE KEY"))
        .ok_or_else(|| args.invalid("tls: failed to find any PEM data in key input"))?;
    let (_, leaf) = X509Certificate::from_der(leaf_der)
        .map_err(|_| args.invalid("x509: malformed certificate"))?;
    // tls.X509KeyPair tries PKCS #1, then PKCS #8, then SEC 1, whatever the label says.
    let key = parse_pkcs1(args, &key_block.contents)
        .or_else(|_| parse_pkcs8(args, &key_block.contents))
        .or_else(|_| parse_ec(args, &key_block.contents, None))
        .map_err(|_| args.invalid("tls: failed to parse private key"))?;
    if !matches(&key, &leaf.tbs_certificate.subject_pki) {
        return Err(args.invalid("tls: private key does not match public key"));
    }
    Ok(object([
        (
            "Certificate",
            Value::from(chain.iter().map(|der| bytes(der)).collect::<Vec<_>>()),
        ),
        ("PrivateKey", go_private_key(&key)),
        ("SupportedSignatureAlgorithms", Value::Null),
        ("OCSPStaple", Value::Null),
        ("SignedCertificateTimestamps", Value::Null),
        ("Leaf", certificate(&leaf)),
    ]))
}

#[cfg(test)]
mod tests {
    use super::*;

    const EC_CERT: &str = include_str!("../../tests/fixtures/x509/ec-test-only.crt.pem");
    const EC_KEY: &str = include_str!("../../tests/fixtures/x509/ec-test-only.key.pem");
    const EC_SEC1: &str = include_str!("../../tests/fixtures/x509/ec-sec1-test-only.key.pem");
    const EC_CSR: &str = include_str!("../../tests/fixtures/x509/ec-test-only.csr.pem");
    const ED_CERT: &str = include_str!("../../tests/fixtures/x509/ed-test-only.crt.pem");
    const ED_KEY: &str = include_str!("../../tests/fixtures/x509/ed-test-only.key.pem");
    const RSA_CERT: &str = include_str!("../../tests/fixtures/x509/rsa-test-only.crt.pem");
    const RSA_KEY: &str = include_str!("../../tests/fixtures/x509/rsa-test-only.key.pem");
    /// Signed by `RSA_CERT` (a CA), for `leaf.example`, server authentication only.
    const LEAF: &str = include_str!("../../tests/fixtures/x509/leaf-test-only.crt.pem");

    fn call(
        name: &'static str,
        f: fn(&Args<'_>) -> Result<Value, BuiltinError>,
        values: &[Value],
    ) -> Result<Value, BuiltinError> {
        f(&Args { name, values })
    }

    fn field<'v>(value: &'v Value, path: &[&str]) -> &'v Value {
        path.iter().fold(value, |v, key| &v[*key])
    }

    fn b64(text: &str) -> Value {
        Value::from(STANDARD.encode(text))
    }

    #[test]
    fn certificates_read_as_go_encodes_them() {
        let certs = call(
            "crypto.x509.parse_certificates",
            parse_certificates,
            &[Value::from(format!("{EC_CERT}{RSA_CERT}"))],
        )
        .unwrap();
        let certs = certs.as_array().unwrap();
        assert_eq!(certs.len(), 2);
        let ec = &certs[0];
        assert_eq!(
            field(ec, &["Subject", "CommonName"]),
            &Value::from("ec.example")
        );
        assert_eq!(
            field(ec, &["Subject", "Organization"]),
            &Value::from(vec![Value::from("Portcullis")])
        );
        assert_eq!(field(ec, &["Subject", "Locality"]), &Value::Null);
        assert_eq!(field(ec, &["Version"]), &Value::from(3));
        assert_eq!(field(ec, &["PublicKeyAlgorithm"]), &Value::from(3));
        assert_eq!(field(ec, &["SignatureAlgorithm"]), &Value::from(10));
        assert_eq!(
            field(ec, &["DNSNames"]),
            &Value::from(vec![Value::from("ec.example")])
        );
        assert_eq!(
            field(ec, &["IPAddresses"]),
            &Value::from(vec![Value::from("10.0.0.1")])
        );
        assert_eq!(
            field(ec, &["URIStrings"]),
            &Value::from(vec![Value::from("spiffe://example.org/ns/a")])
        );
        assert_eq!(field(ec, &["URIs"])[0]["Host"], Value::from("example.org"));
        assert_eq!(field(ec, &["URIs"])[0]["Path"], Value::from("/ns/a"));
        assert_eq!(
            field(ec, &["ExtKeyUsage"]),
            &Value::from(vec![Value::from(1), Value::from(2)])
        );
        assert!(matches!(field(ec, &["NotBefore"]), Value::String(s) if s.ends_with('Z')));
        assert!(matches!(field(ec, &["SerialNumber"]), Value::Number(_)));
        let rsa = &certs[1];
        assert_eq!(field(rsa, &["PublicKey", "E"]), &Value::from(65537));
        assert_eq!(field(rsa, &["IsCA"]), &Value::from(true));
        assert_eq!(field(rsa, &["MaxPathLen"]), &Value::from(0));
        assert_eq!(field(rsa, &["MaxPathLenZero"]), &Value::from(true));
        // keyCertSign (bit 5) and digitalSignature (bit 0).
        assert_eq!(field(rsa, &["KeyUsage"]), &Value::from(33));
        // Base64 of the PEM, and of the DER, read the same.
        let from_b64 = call(
            "crypto.x509.parse_certificates",
            parse_certificates,
            &[b64(EC_CERT)],
        )
        .unwrap();
        assert_eq!(&from_b64[0], ec);
        let der = field(ec, &["Raw"]).clone();
        let from_der = call("crypto.x509.parse_certificates", parse_certificates, &[der]).unwrap();
        assert_eq!(&from_der[0], ec);
        let ed = call(
            "crypto.x509.parse_certificates",
            parse_certificates,
            &[Value::from(ED_CERT)],
        )
        .unwrap();
        assert_eq!(field(&ed[0], &["PublicKeyAlgorithm"]), &Value::from(4));
        assert_eq!(field(&ed[0], &["SignatureAlgorithm"]), &Value::from(16));
    }

    #[test]
    fn bad_certificates_are_errors() {
        let parse = |v: Value| call("crypto.x509.parse_certificates", parse_certificates, &[v]);
        let err = parse(Value::from("foobar!")).unwrap_err().to_string();
        assert!(err.contains("illegal base64 data at input byte 6"), "{err}");
        let err = parse(b64("badstring")).unwrap_err().to_string();
        assert!(err.contains("x509: malformed certificate"), "{err}");
        let err = parse(Value::from(EC_KEY)).unwrap_err().to_string();
        assert!(err.contains("PEM block type is 'PRIVATE KEY'"), "{err}");
        assert!(parse(Value::from(1)).is_err());
        assert!(parse(Value::from("A".repeat(MAX_INPUT + 4))).is_err());
        // Truncated DER and PEM.
        let truncated = STANDARD.encode(
            &STANDARD
                .decode(
                    EC_CERT
                        .lines()
                        .filter(|l| !l.starts_with("-----"))
                        .collect::<String>(),
                )
                .unwrap()[..100],
        );
        assert!(parse(Value::from(truncated)).is_err());
        assert!(parse(Value::from(&EC_CERT[..200])).is_err());
        assert_eq!(parse(Value::from("")).unwrap(), Value::new_array());
    }

    #[test]
    fn certificate_requests_read_as_go_encodes_them() {
        let parse = |v: Value| {
            call(
                "crypto.x509.parse_certificate_request",
                parse_certificate_request,
                &[v],
            )
        };
        let csr = parse(Value::from(EC_CSR)).unwrap();
        assert_eq!(
            field(&csr, &["Subject", "CommonName"]),
            &Value::from("csr.example")
        );
        assert_eq!(
            field(&csr, &["DNSNames"]),
            &Value::from(vec![Value::from("csr.example")])
        );
        assert_eq!(field(&csr, &["PublicKeyAlgorithm"]), &Value::from(3));
        assert_eq!(field(&csr, &["Version"]), &Value::from(0));
        assert!(matches!(field(&csr, &["Extensions"]), Value::Array(e) if e.len() == 1));
        assert_eq!(parse(b64(EC_CSR)).unwrap(), csr);
        let err = parse(Value::from("foobar")).unwrap_err().to_string();
        assert!(err.contains("illegal base64"), "{err}");
        let err = parse(b64(EC_CERT)).unwrap_err().to_string();
        assert!(
            err.contains("invalid PEM-encoded certificate signing request"),
            "{err}"
        );
        assert!(parse(b64("not a request")).is_err());
    }

    #[test]
    fn key_pairs_match_and_read_as_go_encodes_them() {
        let parse = |cert: &str, key: &str| {
            call(
                "crypto.x509.parse_keypair",
                parse_keypair,
                &[Value::from(cert), Value::from(key)],
            )
        };
        for (cert, key) in [
            (EC_CERT, EC_KEY),
            (EC_CERT, EC_SEC1),
            (RSA_CERT, RSA_KEY),
            (ED_CERT, ED_KEY),
        ] {
            let pair = parse(cert, key).unwrap();
            let leaf = call(
                "crypto.x509.parse_certificates",
                parse_certificates,
                &[Value::from(cert)],
            )
            .unwrap();
            assert_eq!(field(&pair, &["Leaf"]), &leaf[0]);
            assert_eq!(field(&pair, &["Certificate"])[0], leaf[0]["Raw"]);
        }
        let rsa = parse(RSA_CERT, RSA_KEY).unwrap();
        assert_eq!(field(&rsa, &["PrivateKey", "E"]), &Value::from(65537));
        assert!(matches!(field(&rsa, &["PrivateKey", "Primes"]), Value::Array(p) if p.len() == 2));
        let ec = parse(EC_CERT, EC_KEY).unwrap();
        assert_eq!(
            field(&ec, &["PrivateKey", "X"]),
            field(&ec, &["Leaf", "PublicKey", "X"])
        );
        // Base64 of PEM and of DER.
        let der_key = STANDARD.encode(
            STANDARD
                .decode(
                    EC_KEY
                        .lines()
                        .filter(|l| !l.starts_with("-----"))
                        .collect::<String>(),
                )
                .unwrap(),
        );
        assert_eq!(
            call(
                "crypto.x509.parse_keypair",
                parse_keypair,
                &[b64(EC_CERT), Value::from(der_key)]
            )
            .unwrap(),
            ec
        );
        for (cert, key, error) in [
            (EC_CERT, RSA_KEY, "does not match"),
            (RSA_CERT, EC_KEY, "does not match"),
            (
                EC_KEY,
                EC_KEY,
                "failed to find any PEM data in certificate input",
            ),
            (EC_CERT, EC_CERT, "failed to find any PEM data in key input"),
            (EC_CERT, "%%%", "illegal base64"),
        ] {
            let err = parse(cert, key).unwrap_err().to_string();
            assert!(err.contains(error), "{err}");
        }
    }

    #[test]
    fn private_keys_read_as_jwks_and_as_go_encodes_them() {
        let jwk_of = |v: Value| {
            call(
                "crypto.x509.parse_rsa_private_key",
                parse_rsa_private_key,
                &[v],
            )
        };
        let rsa = jwk_of(Value::from(RSA_KEY)).unwrap();
        assert_eq!(rsa["kty"], Value::from("RSA"));
        assert_eq!(rsa["e"], Value::from("AQAB"));
        for part in ["n", "d", "p", "q", "dp", "dq", "qi"] {
            assert!(
                matches!(&rsa[part], Value::String(s) if !s.contains('=')),
                "{part}"
            );
        }
        assert_eq!(jwk_of(b64(RSA_KEY)).unwrap(), rsa);
        let ec = jwk_of(Value::from(EC_SEC1)).unwrap();
        assert_eq!(ec["crv"], Value::from("P-256"));
        assert_eq!(jwk_of(Value::from(EC_KEY)).unwrap(), ec);
        assert_eq!(
            jwk_of(Value::from(ED_KEY)).unwrap()["kty"],
            Value::from("OKP")
        );
        assert_eq!(jwk_of(Value::from(EC_CERT)).unwrap(), Value::Null);
        let err = jwk_of(Value::from("invalid")).unwrap_err().to_string();
        assert!(err.contains("illegal base64"), "{err}");
        assert!(jwk_of(Value::from("")).is_err());
        let corrupt = RSA_KEY.replacen("MII", "MIA", 1);
        assert!(jwk_of(Value::from(corrupt)).is_err());

        let keys_of = |v: Value| call("crypto.parse_private_keys", parse_private_keys, &[v]);
        let keys = keys_of(Value::from(format!("{RSA_KEY}{EC_KEY}{EC_CERT}{ED_KEY}"))).unwrap();
        let keys = keys.as_array().unwrap();
        assert_eq!(keys.len(), 3);
        assert_eq!(keys[0]["E"], Value::from(65537));
        assert!(matches!(&keys[1]["D"], Value::Number(_)));
        assert!(
            matches!(&keys[2], Value::String(s) if STANDARD.decode(s.as_ref()).unwrap().len() == 64)
        );
        assert_eq!(keys_of(Value::from("")).unwrap(), Value::Null);
        assert_eq!(keys_of(Value::from("no keys")).unwrap(), Value::new_array());
        assert_eq!(keys_of(b64(EC_KEY)).unwrap()[0], keys[1]);
    }

    #[test]
    fn chains_verify_root_first_as_opa_verifies_them() {
        let verify = |certs: String| {
            call(
                "crypto.x509.parse_and_verify_certificates",
                parse_and_verify_certificates,
                &[Value::from(certs)],
            )
            .unwrap()
        };
        let verified = verify(format!("{RSA_CERT}{LEAF}"));
        assert_eq!(verified[0], Value::from(true));
        let chain = verified[1].as_array().unwrap();
        assert_eq!(chain.len(), 2);
        assert_eq!(
            chain[0]["Subject"]["CommonName"],
            Value::from("leaf.example")
        );
        assert_eq!(
            chain[1]["Subject"]["CommonName"],
            Value::from("rsa.example")
        );
        assert!(
            chain[0]
                .as_object()
                .unwrap()
                .contains_key(&Value::from("URIStrings"))
        );
        assert_eq!(
            verify(STANDARD.encode(format!("{RSA_CERT}{LEAF}")))[0],
            Value::from(true)
        );
        let no = unverified();
        // Leaf first, one certificate, a leaf its root did not sign, garbage.
        assert_eq!(verify(format!("{LEAF}{RSA_CERT}")), no);
        assert_eq!(verify(LEAF.to_owned()), no);
        assert_eq!(verify(format!("{EC_CERT}{LEAF}")), no);
        assert_eq!(verify("garbage!".to_owned()), no);
        assert!(
            call(
                "crypto.x509.parse_and_verify_certificates",
                parse_and_verify_certificates,
                &[Value::from(1)]
            )
            .is_err()
        );

        let with = |options: Value| {
            call(
                "crypto.x509.parse_and_verify_certificates_with_options",
                parse_and_verify_certificates_with_options,
                &[Value::from(format!("{RSA_CERT}{LEAF}")), options],
            )
        };
        let options = |json: &str| Value::from_json_str(json).unwrap();
        let ok = with(options(r#"{"DNSName": "leaf.example", "KeyUsages": ["KeyUsageServerAuth"], "MaxConstraintComparisons": 10}"#)).unwrap();
        assert_eq!(ok[0], Value::from(true));
        assert!(
            !ok[1][0]
                .as_object()
                .unwrap()
                .contains_key(&Value::from("URIStrings"))
        );
        for refused in [
            r#"{"DNSName": "other.example"}"#,
            r#"{"KeyUsages": ["KeyUsageClientAuth"]}"#,
            // 2100-01-01, after the certificates expire; 2000-01-01, before.
            r#"{"CurrentTime": 4102444800000000000}"#,
            r#"{"CurrentTime": 946684800000000000}"#,
        ] {
            assert_eq!(with(options(refused)).unwrap(), no, "{refused}");
        }
        assert_eq!(
            with(options(r#"{"KeyUsages": ["KeyUsageAny"]}"#)).unwrap()[0],
            Value::from(true)
        );
        for (bad, error) in [
            (r#"{"DNSName": 1}"#, "'DNSName' should be a string"),
            (
                r#"{"CurrentTime": "now"}"#,
                "'CurrentTime' should be a number",
            ),
            (
                r#"{"KeyUsages": "any"}"#,
                "'KeyUsages' should be an Array or Set",
            ),
            (
                r#"{"KeyUsages": ["KeyUsageNope"]}"#,
                "invalid entries for 'KeyUsages' found: [KeyUsageNope]",
            ),
            (r#"{"Nope": 1}"#, "invalid key option"),
        ] {
            let err = with(options(bad)).unwrap_err().to_string();
            assert!(err.contains(error), "{err}");
        }
        // Certificates that do not parse: no verification, whatever the options.
        assert_eq!(
            call(
                "crypto.x509.parse_and_verify_certificates_with_options",
                parse_and_verify_certificates_with_options,
                &[Value::from("garbage!"), options(r#"{"Nope": 1}"#)],
            )
            .unwrap(),
            no
        );
    }
}
