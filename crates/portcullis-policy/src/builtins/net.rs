//! `net.cidr_merge` and `net.cidr_intersects` (regorus has the other `net.cidr_*`).

use std::collections::BTreeSet;
use std::net::IpAddr;

use ipnet::IpNet;
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

/// `net.cidr_merge(addrs)`: the smallest set of CIDRs covering the addresses and networks
/// of the array or set `addrs` (an address is its own /32 or /128 network); IPv4 and
/// IPv6 are merged apart.
pub(super) fn cidr_merge(args: &Args<'_>) -> Result<Value, BuiltinError> {
    let items: Box<dyn Iterator<Item = &Value>> = match args.get(0)? {
        Value::Array(items) => Box::new(items.iter()),
        Value::Set(items) => Box::new(items.iter()),
        _ => return Err(args.wrong_type(0, "one of array or set")),
    };
    let mut nets = Vec::new();
    for item in items {
        let Value::String(text) = item else {
            return Err(args.invalid(format!(
                "element must be string, got {}",
                super::type_name(item)
            )));
        };
        let net = match text.parse::<IpAddr>() {
            Ok(address) => IpNet::from(address),
            Err(_) => text
                .parse::<IpNet>()
                .map(|net| net.trunc())
                .map_err(|_| args.invalid(format!("IP address {text} invalid")))?,
        };
        nets.push(net);
    }
    let merged: BTreeSet<Value> = IpNet::aggregate(&nets)
        .iter()
        .map(|net| Value::from(net.to_string()))
        .collect();
    Ok(Value::from(merged))
}
