//! `net.lookup_ip_addr(name)`: the IP addresses of a host name, from the system resolver
//! (`/etc/hosts`, then DNS, as `getaddrinfo` does), as a set of strings; an IP address is
//! its own answer, without a lookup.
//!
//! regorus checks an evaluation's time limit between steps, never inside a built-in, and a
//! resolver can take seconds: each lookup runs on a thread of its own and is given up after
//! [`LOOKUP_TIMEOUT`] (a built-in error; the thread ends when the resolver answers), and at
//! most [`MAX_IN_FLIGHT`] lookups run at once (more are refused, not queued).

use std::collections::BTreeSet;
use std::net::{IpAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use regorus::Value;

use super::{Args, BuiltinError};

/// How long a lookup may take: 1 s, the default evaluation time limit.
pub(crate) const LOOKUP_TIMEOUT: Duration = Duration::from_secs(1);

/// The most lookups running at once (in every engine of the process).
pub(crate) const MAX_IN_FLIGHT: usize = 8;

/// The longest host name (RFC 1035).
const MAX_NAME: usize = 253;

static IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);

/// Releases a place among the lookups in flight when dropped.
struct Place;

impl Place {
    fn take() -> Option<Self> {
        IN_FLIGHT
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < MAX_IN_FLIGHT).then_some(n + 1)
            })
            .ok()
            .map(|_| Self)
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        IN_FLIGHT.fetch_sub(1, Ordering::AcqRel);
    }
}

/// An address as Go prints it (an IPv4-mapped IPv6 address as IPv4).
fn address_text(ip: IpAddr) -> String {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map_or_else(|| v6.to_string(), |v4| v4.to_string()),
        IpAddr::V4(v4) => v4.to_string(),
    }
}

/// Whether `name` can be a host name: letters, digits, `-`, `_` and `.`, at most
/// [`MAX_NAME`] bytes.
fn plausible_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// `net.lookup_ip_addr(name)`.
pub(super) fn lookup_ip_addr(args: &Args<'_>) -> Result<Value, BuiltinError> {
    let name = args.string(0)?;
    if let Ok(ip) = name.parse::<IpAddr>() {
        return Ok(Value::from(BTreeSet::from([Value::from(address_text(ip))])));
    }
    if !plausible_name(name) {
        return Err(args.invalid(format!("lookup {name}: no such host")));
    }
    let place = Place::take().ok_or_else(|| {
        args.invalid(format!(
            "lookup {name}: {MAX_IN_FLIGHT} lookups are in progress already"
        ))
    })?;
    let (sender, receiver) = mpsc::channel();
    let host = name.to_owned();
    std::thread::Builder::new()
        .name("net.lookup_ip_addr".to_owned())
        .spawn(move || {
            let _place = place;
            let answer = (host.as_str(), 0)
                .to_socket_addrs()
                .map(|addresses| addresses.map(|a| a.ip()).collect::<Vec<_>>());
            // The caller may have given up: nobody to tell then.
            let _ = sender.send(answer);
        })
        .map_err(|e| args.invalid(format!("lookup {name}: {e}")))?;
    match receiver.recv_timeout(LOOKUP_TIMEOUT) {
        Ok(Ok(addresses)) if !addresses.is_empty() => Ok(Value::from(
            addresses
                .into_iter()
                .map(|ip| Value::from(address_text(ip)))
                .collect::<BTreeSet<_>>(),
        )),
        Ok(Ok(_)) => Err(args.invalid(format!("lookup {name}: no such host"))),
        Ok(Err(e)) => Err(args.invalid(format!("lookup {name}: {e}"))),
        Err(_) => Err(args.invalid(format!(
            "lookup {name}: no answer within {} ms",
            LOOKUP_TIMEOUT.as_millis()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(name: &str) -> Result<Value, BuiltinError> {
        let values = [Value::from(name)];
        lookup_ip_addr(&Args {
            name: "net.lookup_ip_addr",
            values: &values,
        })
    }

    fn set(items: &[&str]) -> Value {
        Value::from(
            items
                .iter()
                .map(|s| Value::from(*s))
                .collect::<BTreeSet<_>>(),
        )
    }

    #[test]
    fn addresses_answer_themselves() {
        assert_eq!(lookup("10.0.0.0").unwrap(), set(&["10.0.0.0"]));
        assert_eq!(lookup("::").unwrap(), set(&["::"]));
        assert_eq!(lookup("::ffff:1.2.3.4").unwrap(), set(&["1.2.3.4"]));
    }

    #[test]
    fn localhost_resolves_and_junk_is_refused() {
        let Value::Set(found) = lookup("localhost").unwrap() else {
            panic!("a set")
        };
        assert!(!found.is_empty());
        for bad in ["", "a b", "x/y", &"a".repeat(300)] {
            assert!(lookup(bad).is_err(), "{bad:?}");
        }
        assert!(
            lookup_ip_addr(&Args {
                name: "net.lookup_ip_addr",
                values: &[Value::from(1)],
            })
            .is_err()
        );
    }
}
