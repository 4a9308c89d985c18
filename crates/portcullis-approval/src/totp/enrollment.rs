//! What a user is shown once when enrolling: the `otpauth://` URI (as a QR code) and the
//! secret in base32 (to type in).

use std::fmt;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

use super::{TotpConfig, TotpSecret};
use crate::{ApprovalError, TotpError};

/// Everything but RFC 3986's unreserved characters is percent-encoded, so a label or issuer
/// with spaces, `&`, `?`, `#` or `/` cannot change the URI's structure.
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

fn check_label(what: &str, text: &str) -> Result<(), ApprovalError> {
    if text.trim().is_empty() {
        return Err(TotpError::InvalidLabel(format!("the {what} is empty")).into());
    }
    // The label is `issuer:account`; the Key URI format forbids a colon in either part.
    if text.contains(':') {
        return Err(TotpError::InvalidLabel(format!("the {what} `{text}` contains `:`")).into());
    }
    if text.chars().any(char::is_control) {
        return Err(
            TotpError::InvalidLabel(format!("the {what} contains control characters")).into(),
        );
    }
    Ok(())
}

/// The `otpauth://totp/ISSUER:USER?secret=…&issuer=…&algorithm=…&digits=…&period=…` URI an
/// authenticator app reads (Key URI format): issuer and user percent-encoded, the secret in
/// RFC 4648 base32 without padding. It contains the secret: show it once, never log it.
///
/// # Errors
///
/// [`TotpError::InvalidLabel`] if `issuer` or `user` is empty, contains `:` or control
/// characters.
pub fn otpauth_uri(
    issuer: &str,
    user: &str,
    secret: &TotpSecret,
    config: &TotpConfig,
) -> Result<String, ApprovalError> {
    check_label("issuer", issuer)?;
    check_label("user name", user)?;
    let issuer = utf8_percent_encode(issuer, COMPONENT);
    Ok(format!(
        "otpauth://totp/{issuer}:{user}?secret={secret}&issuer={issuer}&algorithm={algorithm}&digits={digits}&period={period}",
        user = utf8_percent_encode(user, COMPONENT),
        secret = data_encoding::BASE32_NOPAD.encode(secret.expose()),
        algorithm = config.algorithm.otpauth_name(),
        digits = config.digits,
        period = config.step.as_secs(),
    ))
}

/// A started enrollment, returned once by
/// [`TotpFactor::begin_enrollment`](super::TotpFactor::begin_enrollment): show the URI as a
/// QR code (or the base32 secret to type in), then have the user confirm a code. Nothing here
/// is stored in the clear; `Debug` never shows the secret.
pub struct TotpEnrollment {
    pub(super) uri: String,
    pub(super) secret: TotpSecret,
}

impl TotpEnrollment {
    /// The `otpauth://totp/…` URI (see [`otpauth_uri`]). Contains the secret.
    pub fn uri(&self) -> &str {
        &self.uri
    }

    /// The secret in RFC 4648 base32 without padding, for typing into an app.
    pub fn secret_base32(&self) -> String {
        data_encoding::BASE32_NOPAD.encode(self.secret.expose())
    }

    /// The secret itself.
    pub fn secret(&self) -> &TotpSecret {
        &self.secret
    }
}

impl fmt::Debug for TotpEnrollment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TotpEnrollment(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TotpAlgorithm;

    #[test]
    fn uri_encodes_labels_and_secret() {
        // RFC 4648 section 10: "foobar" is MZXW6YTBOI====== (padding dropped here).
        let secret = TotpSecret::new(b"foobarfoobarfoobar".to_vec()).unwrap();
        let uri = otpauth_uri(
            "ACME Co",
            "bob@example.com",
            &secret,
            &TotpConfig::default(),
        )
        .unwrap();
        assert_eq!(
            uri,
            "otpauth://totp/ACME%20Co:bob%40example.com?secret=MZXW6YTBOJTG633CMFZGM33PMJQXE&issuer=ACME%20Co&algorithm=SHA1&digits=6&period=30"
        );
        let config = TotpConfig {
            algorithm: TotpAlgorithm::Sha256,
            digits: 8,
            step: std::time::Duration::from_secs(60),
            skew: 1,
        };
        let uri = otpauth_uri("a&b=c?#/", "é", &secret, &config).unwrap();
        assert!(
            uri.starts_with("otpauth://totp/a%26b%3Dc%3F%23%2F:%C3%A9?secret="),
            "{uri}"
        );
        assert!(uri.ends_with("&issuer=a%26b%3Dc%3F%23%2F&algorithm=SHA256&digits=8&period=60"));
        for (issuer, user) in [("", "bob"), ("acme", " "), ("a:b", "bob"), ("acme", "b:ob")] {
            assert!(otpauth_uri(issuer, user, &secret, &TotpConfig::default()).is_err());
        }
        assert!(otpauth_uri("acme", "bo\nb", &secret, &TotpConfig::default()).is_err());
    }
}
