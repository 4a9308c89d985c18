//! Broker ↔ region proxies over mutual TLS with SPIFFE SVIDs, in addition to the broker
//! token: the broker presents its SVID (`[broker.tls]`) and accepts each region proxy only
//! with the SPIFFE ID its `[broker.regions.NAME] spiffe_id` names; a region proxy with
//! `[region.tls]` requires a client SVID and accepts only `broker_spiffe_id`.

use std::collections::BTreeMap;

use crate::broker::RegionTarget;
use crate::tls::Tls;

/// The client for each region whose proxy has a `spiffe_id`: it presents the broker's SVID
/// and accepts only that ID. A region without one is called with the plain client.
///
/// # Errors
///
/// A region with a `spiffe_id` but no `[broker.tls]`, or not on `https://`; an ID that does
/// not parse.
pub(crate) fn region_clients(
    tls: Option<&Tls>,
    regions: &BTreeMap<String, RegionTarget>,
    timeout_seconds: u64,
) -> Result<BTreeMap<String, reqwest::Client>, String> {
    let mut clients = BTreeMap::new();
    for (name, target) in regions {
        let Some(id) = &target.spiffe_id else {
            continue;
        };
        if !target.url.starts_with("https://") {
            return Err(format!(
                "region {name}: a spiffe_id needs an https:// proxy URL"
            ));
        }
        let Some(tls) = tls else {
            return Err(format!(
                "region {name}: a spiffe_id needs [broker.tls], the broker's SVID to present"
            ));
        };
        clients.insert(name.clone(), client(tls, id, timeout_seconds)?);
    }
    Ok(clients)
}

/// The region proxy's client for the broker's keys: with `[region.tls]` it presents the
/// proxy's SVID and accepts only the broker's SPIFFE ID (the broker may serve only mTLS).
///
/// # Errors
///
/// `broker_spiffe_id` without `[region.tls]` or the other way round; an ID that does not
/// parse.
pub(crate) fn broker_keys_client(
    tls: Option<&Tls>,
    broker_id: Option<&str>,
    timeout_seconds: u64,
) -> Result<Option<reqwest::Client>, String> {
    match (tls, broker_id) {
        (None, None) => Ok(None),
        (Some(tls), Some(id)) => client(tls, id, timeout_seconds).map(Some),
        (Some(_), None) => {
            Err("[region.tls] needs broker_spiffe_id: the only client the proxy accepts".into())
        }
        (None, Some(_)) => Err("broker_spiffe_id needs [region.tls]".into()),
    }
}

/// The broker's SPIFFE ID, the only client a region proxy with `[region.tls]` admits.
///
/// # Errors
///
/// An ID that does not parse.
#[cfg(feature = "tls")]
pub(crate) fn peer(id: &str) -> Result<portcullis::tls::identity::PeerIds, String> {
    let id: portcullis::tls::identity::SpiffeId =
        id.parse().map_err(|e| format!("SPIFFE ID {id:?}: {e}"))?;
    Ok(portcullis::tls::identity::PeerIds::exactly(id))
}

#[cfg(feature = "tls")]
fn client(tls: &Tls, id: &str, timeout_seconds: u64) -> Result<reqwest::Client, String> {
    portcullis::tls::reqwest_client(tls.source(), peer(id)?)
        .map_err(|e| e.to_string())?
        .timeout(std::time::Duration::from_secs(timeout_seconds))
        .redirect(reqwest::redirect::Policy::none())
        .tcp_nodelay(true)
        .build()
        .map_err(|e| e.to_string())
}

#[cfg(not(feature = "tls"))]
fn client(tls: &Tls, _id: &str, _timeout_seconds: u64) -> Result<reqwest::Client, String> {
    match *tls {}
}
