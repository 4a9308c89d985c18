//! `net.cidr_merge` and `net.cidr_intersects` (regorus has the other `net.cidr_*`).

use std::collections::BTreeSet;
use std::net::IpAddr;

use ipnet::{IpNet, Ipv4Net};
use regorus::Value;

use super::{Args, BuiltinError};

/// A CIDR (`10.0.0.0/8`, `fd00::/8`); host bits are cleared as Go's `ParseCIDR` does.
fn cidr(args: &Args<'_>, text: &str) -> Result<IpNet, BuiltinError> {
    text.parse::<IpNet>()
        .map(|net| net.trunc())
        .map_err(|_| args.invalid(format!("invalid CIDR address: {text}")))
}

/// `net.cidr_intersects(cidr1, cidr2)`: whether the two networks share an address.
pub(super) fn cidr_intersects(args: &Args<'_>) -> Result<Value, BuiltinError> {
    let a = cidr(args, args.string(0)?)?;
    let b = cidr(args, args.string(1)?)?;
    Ok(Value::from(
        a.contains(&b.network()) || b.contains(&a.network()),
    ))
}

/// The network an element of `net.cidr_merge` stands for, as OPA reads it: a CIDR (host
/// bits cleared), or an IPv4 address with its classful default mask and its host bits
/// kept (`10.0.0.1` is `10.0.0.1/8`, as Go's `IP.DefaultMask` gives); an IPv6 address
/// needs a prefix length.
fn merge_element(args: &Args<'_>, item: &Value) -> Result<IpNet, BuiltinError> {
    let Value::String(text) = item else {
        return Err(args.invalid(format!(
            "element must be string, got {}",
            super::type_name(item)
        )));
    };
    match text.parse::<IpAddr>() {
        Ok(IpAddr::V4(address)) => {
            let prefix = match address.octets()[0] {
                0..=127 => 8,
                128..=191 => 16,
                192..=223 => 24,
                _ => {
                    return Err(args.invalid(format!(
                        "IP address {text} has no default mask (class D or E)"
                    )));
                }
            };
            Ipv4Net::new(address, prefix)
                .map(IpNet::V4)
                .map_err(|_| args.invalid(format!("IP address {text} invalid")))
        }
        Ok(IpAddr::V6(_)) => Err(args.invalid("IPv6 invalid: needs prefix length")),
        Err(_) => text
            .parse::<IpNet>()
            .map(|net| net.trunc())
            .map_err(|_| args.invalid(format!("invalid CIDR address: {text}"))),
    }
}

/// An address range of one family, and the network it came from while it is not merged
/// with another.
struct Range {
    first: u128,
    last: u128,
    network: Option<IpNet>,
}

fn bounds(net: &IpNet) -> (u128, u128) {
    match net {
        IpNet::V4(n) => (
            u128::from(u32::from(n.network())),
            u128::from(u32::from(n.broadcast())),
        ),
        IpNet::V6(n) => (u128::from(n.network()), u128::from(n.broadcast())),
    }
}

/// The last address of the block of `2^size` addresses starting at `first` (aligned).
fn block_last(first: u128, size: u32) -> u128 {
    if size >= 128 {
        u128::MAX
    } else {
        first | ((1u128 << size) - 1)
    }
}

/// The fewest CIDRs covering `first..=last` of a family with `bits`-bit addresses.
fn range_to_cidrs(mut first: u128, last: u128, bits: u32, v4: bool) -> Vec<String> {
    let mut out = Vec::new();
    loop {
        // The largest block aligned at `first` that ends at or before `last`.
        let mut size = first.trailing_zeros().min(bits);
        while size > 0 && block_last(first, size) > last {
            size -= 1;
        }
        let prefix = bits - size;
        out.push(if v4 {
            let address = std::net::Ipv4Addr::from(u32::try_from(first).unwrap_or(0));
            format!("{address}/{prefix}")
        } else {
            format!("{}/{prefix}", std::net::Ipv6Addr::from(first))
        });
        let end = block_last(first, size);
        if end >= last {
            return out;
        }
        first = end + 1;
    }
}

/// `net.cidr_merge(addrs)`: the smallest set of CIDRs covering the addresses and networks
/// of the array or set `addrs` (see [`merge_element`]); overlapping and adjacent ranges
/// are merged, a range merged with none is returned as it was given. IPv4 and IPv6 are
/// merged apart.
pub(super) fn cidr_merge(args: &Args<'_>) -> Result<Value, BuiltinError> {
    let items: Box<dyn Iterator<Item = &Value>> = match args.get(0)? {
        Value::Array(items) => Box::new(items.iter()),
        Value::Set(items) => Box::new(items.iter()),
        _ => return Err(args.wrong_type(0, "one of array or set")),
    };
    let mut families: [Vec<Range>; 2] = [Vec::new(), Vec::new()];
    for item in items {
        let net = merge_element(args, item)?;
        let (first, last) = bounds(&net);
        let family = usize::from(matches!(net, IpNet::V6(_)));
        if let Some(ranges) = families.get_mut(family) {
            ranges.push(Range {
                first,
                last,
                network: Some(net),
            });
        }
    }
    let mut merged = BTreeSet::new();
    for (family, mut ranges) in families.into_iter().enumerate() {
        let (bits, v4) = if family == 0 {
            (32, true)
        } else {
            (128, false)
        };
        ranges.sort_by_key(|r| (r.last, r.first));
        // From the end, fold each range into the one before it when they touch or overlap.
        let mut i = ranges.len();
        while i > 1 {
            i -= 1;
            let (Some(current), Some(previous)) = (ranges.get(i), ranges.get(i - 1)) else {
                break;
            };
            let touches = current
                .first
                .checked_sub(1)
                .is_some_and(|before| before <= previous.last);
            if touches {
                let range = Range {
                    first: previous.first.min(current.first),
                    last: current.last,
                    network: None,
                };
                ranges.remove(i);
                if let Some(slot) = ranges.get_mut(i - 1) {
                    *slot = range;
                }
            }
        }
        for range in ranges {
            match range.network {
                Some(net) => {
                    merged.insert(Value::from(net.to_string()));
                }
                None => {
                    for cidr in range_to_cidrs(range.first, range.last, bits, v4) {
                        merged.insert(Value::from(cidr));
                    }
                }
            }
        }
    }
    Ok(Value::from(merged))
}

/// Whether CIDR `outer` holds the address or every address of the CIDR `inner`.
fn cidr_contains(args: &Args<'_>, outer: &Value, inner: &Value) -> Result<bool, BuiltinError> {
    let (Value::String(outer), Value::String(inner)) = (outer, inner) else {
        return Err(args.invalid("CIDRs and addresses must be strings"));
    };
    let outer = cidr(args, outer)?;
    if let Ok(address) = inner.parse::<IpAddr>() {
        return Ok(outer.contains(&address));
    }
    let inner = inner.parse::<IpNet>().map_err(|_| {
        args.invalid(format!(
            "not a valid textual representation of an IP address or CIDR: {inner}"
        ))
    })?;
    Ok(outer.contains(&inner.network()) && outer.contains(&inner.broadcast()))
}

/// The (CIDR, key) pairs of an operand of `net.cidr_contains_matches`: a string is its own
/// key; an array's items are keyed by index, a set's by themselves, an object's values by
/// their keys; an item is a string or a non-empty array whose first element is the CIDR.
/// Another type gives no pairs, as in OPA.
fn match_pairs<'v>(
    args: &Args<'_>,
    operand: &'v Value,
) -> Result<Vec<(&'v Value, Value)>, BuiltinError> {
    let cidr_of = |item: &'v Value| match item {
        Value::String(_) => Ok(item),
        Value::Array(items) => items
            .first()
            .ok_or_else(|| args.invalid("element must be string or non-empty array")),
        _ => Err(args.invalid("element must be string or non-empty array")),
    };
    Ok(match operand {
        Value::String(_) => vec![(operand, operand.clone())],
        Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, item)| Ok((cidr_of(item)?, Value::from(i))))
            .collect::<Result<_, BuiltinError>>()?,
        Value::Set(items) => items
            .iter()
            .map(|item| Ok((cidr_of(item)?, item.clone())))
            .collect::<Result<_, BuiltinError>>()?,
        Value::Object(map) => map
            .iter()
            .map(|(key, item)| Ok((cidr_of(item)?, key.clone())))
            .collect::<Result<_, BuiltinError>>()?,
        _ => Vec::new(),
    })
}

/// The most comparisons one `net.cidr_contains_matches` makes (each operand may hold
/// every value an input may: their product is the cost).
const MAX_PAIRS: usize = 1 << 22;

/// `net.cidr_contains_matches(cidrs, cidrs_or_ips)`: the `[key1, key2]` pairs where the
/// CIDR at `key1` of the first operand contains the address or CIDR at `key2` of the second.
pub(super) fn cidr_contains_matches(args: &Args<'_>) -> Result<Value, BuiltinError> {
    let outers = match_pairs(args, args.get(0)?)?;
    let inners = match_pairs(args, args.get(1)?)?;
    if outers.len().saturating_mul(inners.len()) > MAX_PAIRS {
        return Err(args.invalid(format!(
            "more than {MAX_PAIRS} pairs of CIDRs and addresses to compare"
        )));
    }
    let mut matches = BTreeSet::new();
    for (outer, key1) in &outers {
        for (inner, key2) in &inners {
            if cidr_contains(args, outer, inner)? {
                matches.insert(Value::from(vec![key1.clone(), key2.clone()]));
            }
        }
    }
    Ok(Value::from(matches))
}
