//! Which host is calling: the SPIFFE ID of its verified client certificate (an X.509-SVID,
//! with `[tls]` asking for client certificates), else the SPIFFE ID its bearer token is bound
//! to (`[[hosts]]`). Never an identity the request merely claims (a header, a report's
//! labels), and never a token's identity over the certificate's.

use std::convert::Infallible;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use portcullis::token::AuthError;

use crate::app::{App, error};

/// The SPIFFE ID of the client certificate the request's TLS connection verified, if any
/// (put into the request's extensions by `portcullis::tls::TlsServer`; never read from a
/// header).
#[derive(Debug, Clone, Default)]
pub(crate) struct Peer(Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for Peer {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        #[cfg(feature = "tls")]
        let id = parts
            .extensions
            .get::<portcullis::tls::PeerIdentity>()
            .map(|peer| peer.spiffe_id().as_str().to_owned());
        #[cfg(not(feature = "tls"))]
        let id = {
            let _ = parts;
            None
        };
        Ok(Peer(id))
    }
}

/// The calling host's SPIFFE ID, or the answer refusing the request:
///
/// - with a verified client certificate, its SPIFFE ID, which must be a configured host
///   (else `403 unknown_host`); an `Authorization` header beside it must hold that same
///   host's token (else `403 identity_mismatch`, or `401` for a token that is no host's);
/// - without one, the host its bearer token is bound to (`401` without a valid one).
#[expect(
    clippy::result_large_err,
    reason = "the refusal is the handler's whole answer, returned at once; boxing it would \
              only add an allocation"
)]
pub(crate) fn host_of(app: &App, peer: &Peer, headers: &HeaderMap) -> Result<String, Response> {
    let authorization = headers
        .get(header::AUTHORIZATION)
        .map(HeaderValue::as_bytes);
    let Some(certified) = peer.0.as_deref() else {
        return app
            .hosts
            .by_header(authorization)
            .cloned()
            .map_err(|err| unauthenticated(&err));
    };
    if app
        .host_ids
        .binary_search_by(|id| id.as_str().cmp(certified))
        .is_err()
    {
        return Err(error(
            StatusCode::FORBIDDEN,
            "unknown_host",
            format!("the client certificate's SPIFFE ID {certified} is not a configured host"),
        ));
    }
    if authorization.is_some() {
        match app.hosts.by_header(authorization) {
            Ok(token_host) if token_host == certified => {}
            Ok(_) => {
                return Err(error(
                    StatusCode::FORBIDDEN,
                    "identity_mismatch",
                    format!(
                        "the client certificate is {certified} but the host token is bound to \
                         another host: send the certificate alone (or with this host's own token)"
                    ),
                ));
            }
            Err(err) => return Err(unauthenticated(&err)),
        }
    }
    Ok(certified.to_owned())
}

fn unauthenticated(err: &AuthError) -> Response {
    let mut response = error(
        StatusCode::UNAUTHORIZED,
        "unauthenticated",
        format!("a host's client certificate (SVID) or host token is required: {err}"),
    );
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"policy-delivery\""),
    );
    response
}
