//! `guest-network-get-route`: the kernel's routing tables as qemu-ga reports them, IPv4 from
//! `/proc/net/route` (hex addresses in host byte order) then IPv6 from `/proc/net/ipv6_route`.

use std::net::{Ipv4Addr, Ipv6Addr};

use guestd_core::HandlerError;
use serde::Deserialize;
use serde_json::{Value, json};

use super::platform::linux_only;
use super::{QgaCommand, args};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NoArgs {}

pub const ROUTES: QgaCommand = QgaCommand {
    name: "guest-network-get-route",
    blocking: true,
    query: true,
    run: |ctx, value| {
        args::<NoArgs>(value)?;
        linux_only("guest-network-get-route")?;
        let root = &ctx.env.root;
        let mut out = Vec::new();
        let mut failed = None;
        for (path, parse) in [
            ("/proc/net/route", ipv4_routes as fn(&str) -> Vec<Value>),
            ("/proc/net/ipv6_route", ipv6_routes),
        ] {
            match root.read(path) {
                Ok(bytes) => out.extend(parse(&String::from_utf8_lossy(&bytes))),
                // A kernel without IPv6 has no ipv6_route: the IPv4 table is still the answer.
                Err(e) => failed = Some(format!("open(\"{path}\"): {e}")),
            }
        }
        match failed {
            Some(err) if out.is_empty() => Err(HandlerError::failed(err)),
            _ => Ok(Value::Array(out)),
        }
    },
};

/// An IPv4 address printed by the kernel as `%08X` of the in-memory (network order) value.
fn ipv4(hex: &str) -> Option<String> {
    let v = u32::from_str_radix(hex, 16).ok()?;
    Some(Ipv4Addr::from(v.to_le_bytes()).to_string())
}

/// An IPv6 address printed as 32 hex digits in network order.
fn ipv6(hex: &str) -> Option<String> {
    if hex.len() != 32 {
        return None;
    }
    Some(Ipv6Addr::from(u128::from_str_radix(hex, 16).ok()?).to_string())
}

/// `/proc/net/route`: a header, then `Iface Destination Gateway Flags RefCnt Use Metric Mask
/// MTU Window IRTT`.
pub(crate) fn ipv4_routes(text: &str) -> Vec<Value> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 11 {
                return None;
            }
            let int = |s: &str| s.parse::<i64>().ok();
            Some(json!({
                "iface": f[0],
                "destination": ipv4(f[1])?,
                "gateway": ipv4(f[2])?,
                "flags": u64::from_str_radix(f[3], 16).ok()?,
                "refcnt": int(f[4])?,
                "use": int(f[5])?,
                "metric": int(f[6])?,
                "mask": ipv4(f[7])?,
                "mtu": int(f[8])?,
                "window": int(f[9])?,
                "irtt": int(f[10])?,
                "version": 4,
            }))
        })
        .collect()
}

/// `/proc/net/ipv6_route` (no header): `DEST DESTLEN SRC SRCLEN NEXTHOP METRIC REFCNT USE FLAGS
/// IFACE`, numbers in hex; the prefix lengths are reported as decimal strings (qemu-ga's
/// schema).
pub(crate) fn ipv6_routes(text: &str) -> Vec<Value> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 10 {
                return None;
            }
            let hex = |s: &str| i64::from_str_radix(s, 16).ok();
            Some(json!({
                "iface": f[9],
                "destination": ipv6(f[0])?,
                "desprefixlen": hex(f[1])?.to_string(),
                "source": ipv6(f[2])?,
                "srcprefixlen": hex(f[3])?.to_string(),
                "nexthop": ipv6(f[4])?,
                "metric": hex(f[5])?,
                "refcnt": hex(f[6])?,
                "use": hex(f[7])?,
                "flags": u64::from_str_radix(f[8], 16).ok()?,
                "version": 6,
            }))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_table() {
        let text = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                    eth0\t00000000\t0102A8C0\t0003\t0\t0\t100\t00000000\t0\t0\t0\n\
                    eth0\t0002A8C0\t00000000\t0001\t0\t0\t100\t00FFFFFF\t1500\t0\t0\n\
                    short\t0\n";
        let r = ipv4_routes(text);
        assert_eq!(r.len(), 2);
        assert_eq!(
            r[0],
            json!({"iface": "eth0", "destination": "0.0.0.0", "gateway": "192.168.2.1",
                "flags": 3, "refcnt": 0, "use": 0, "metric": 100, "mask": "0.0.0.0",
                "mtu": 0, "window": 0, "irtt": 0, "version": 4})
        );
        assert_eq!(r[1]["destination"], "192.168.2.0");
        assert_eq!(r[1]["mask"], "255.255.255.0");
        assert_eq!(r[1]["mtu"], 1500);
    }

    #[test]
    fn ipv6_table() {
        let text = "fe800000000000000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001     eth0\n\
                    00000000000000000000000000000000 00 00000000000000000000000000000000 00 fe800000000000000000000000000001 00000400 00000002 0000000a 00000003     eth0\n";
        let r = ipv6_routes(text);
        assert_eq!(
            r[0],
            json!({"iface": "eth0", "destination": "fe80::", "desprefixlen": "64",
                "source": "::", "srcprefixlen": "0", "nexthop": "::", "metric": 256,
                "refcnt": 1, "use": 0, "flags": 1, "version": 6})
        );
        assert_eq!(r[1]["nexthop"], "fe80::1");
        assert_eq!(r[1]["metric"], 1024);
        assert_eq!(r[1]["use"], 10);
        assert!(ipv6_routes("zz 1 2\n").is_empty());
    }
}
