//! Certificates for tests and benches, made with rcgen on aws-lc-rs: a CA per trust domain, an
//! intermediate, and leaves that follow or break the X.509-SVID rules.
#![allow(
    dead_code,
    unreachable_pub,
    reason = "each test binary uses a different part"
)]
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test helpers")]

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType, date_time_ymd,
};

/// A CA (root or intermediate) that signs leaves.
pub struct Ca {
    pub issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Ca {
    /// A self-signed root for `trust_domain` (its URI SAN is the trust domain's ID).
    pub fn root(trust_domain: &str) -> Ca {
        let mut params = ca_params(trust_domain);
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{trust_domain} root"));
        Ca {
            issuer: CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap(),
        }
    }

    /// An intermediate signed by `self`.
    pub fn intermediate(&self, trust_domain: &str) -> Ca {
        let mut params = ca_params(trust_domain);
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{trust_domain} intermediate"));
        Ca {
            issuer: CertifiedIssuer::signed_by(params, KeyPair::generate().unwrap(), &self.issuer)
                .unwrap(),
        }
    }

    /// The CA certificate, PEM.
    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// The CA certificate, DER.
    pub fn der(&self) -> Vec<u8> {
        self.issuer.der().to_vec()
    }

    /// A leaf signed by this CA.
    pub fn leaf(&self, spec: Leaf) -> Issued {
        let key = KeyPair::generate().unwrap();
        let cert = spec.params().signed_by(&key, &self.issuer).unwrap();
        Issued {
            cert_pem: cert.pem(),
            cert_der: cert.der().to_vec(),
            key_pem: key.serialize_pem(),
            key_der: key.serialize_der(),
        }
    }
}

fn ca_params(trust_domain: &str) -> CertificateParams {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.subject_alt_names = vec![SanType::URI(
        format!("spiffe://{trust_domain}").try_into().unwrap(),
    )];
    params.use_authority_key_identifier_extension = true;
    params
}

/// A leaf certificate and its key.
pub struct Issued {
    pub cert_pem: String,
    pub cert_der: Vec<u8>,
    pub key_pem: String,
    pub key_der: Vec<u8>,
}

/// What a leaf looks like.
#[derive(Clone)]
pub struct Leaf {
    pub uris: Vec<String>,
    pub dns: Vec<String>,
    pub ca: bool,
    pub key_usages: Vec<KeyUsagePurpose>,
    /// Whether the key usage extension is marked critical (the X.509-SVID spec says MUST);
    /// `false` writes `digitalSignature` alone, not critical.
    pub key_usage_critical: bool,
    pub expired: bool,
}

impl Leaf {
    /// A valid X.509-SVID for `id`, usable by clients and servers (with DNS and IP SANs for
    /// `localhost`, so curl can check the host name too).
    pub fn svid(id: &str) -> Leaf {
        Leaf {
            uris: vec![id.to_owned()],
            dns: vec!["localhost".into()],
            ca: false,
            key_usages: vec![
                KeyUsagePurpose::DigitalSignature,
                KeyUsagePurpose::KeyEncipherment,
            ],
            key_usage_critical: true,
            expired: false,
        }
    }

    fn params(&self) -> CertificateParams {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "workload");
        for uri in &self.uris {
            params
                .subject_alt_names
                .push(SanType::URI(uri.clone().try_into().unwrap()));
        }
        for dns in &self.dns {
            params
                .subject_alt_names
                .push(SanType::DnsName(dns.clone().try_into().unwrap()));
        }
        if !self.dns.is_empty() {
            params
                .subject_alt_names
                .push(SanType::IpAddress(std::net::IpAddr::from([127, 0, 0, 1])));
        }
        params.is_ca = if self.ca {
            IsCa::Ca(BasicConstraints::Unconstrained)
        } else {
            IsCa::ExplicitNoCa
        };
        if self.key_usage_critical {
            params.key_usages = self.key_usages.clone();
        } else {
            // id-ce-keyUsage, BIT STRING with digitalSignature only; rcgen's own is critical.
            params
                .custom_extensions
                .push(rcgen::CustomExtension::from_oid_content(
                    &[2, 5, 29, 15],
                    vec![0x03, 0x02, 0x07, 0x80],
                ));
        }
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        if self.expired {
            params.not_before = date_time_ymd(2020, 1, 1);
            params.not_after = date_time_ymd(2021, 1, 1);
        } else {
            params.not_before = date_time_ymd(2024, 1, 1);
            params.not_after = date_time_ymd(2099, 1, 1);
        }
        params
    }
}
