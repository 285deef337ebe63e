//! RHEL initscripts: `/etc/sysconfig/network-scripts/ifcfg-<if>` (keys guestd does not manage,
//! such as `ZONE=` or `MTU=`, are kept from the previous file), `route-<if>` and `route6-<if>`
//! in `ip route` syntax (removed when there are no routes). Restart per affected interface:
//! `ifdown`, flush its global addresses, `ifup`.
//!
//! Host text: `ifcfg-*` is sourced by `sh` (initscripts) and read by NetworkManager's ifcfg-rh
//! plugin; every value guestd writes goes through [`escape::sh_value`] / [`escape::sh_quote`].
//! The label is not written. `route-*` lines are word-split by `ifup-routes`: they hold only
//! typed addresses and the checked device name.

use std::fmt::Write as _;

use guestd_core::{FileChange, WriteOptions};

use super::ifupdown::read_text;
use super::{HEADER, RenderContext, Rendered, best_effort, escape, hash_header, ip_checks, must};
use crate::network::model::{Interface, Network, NetworkError, Route};

const DIR: &str = "/etc/sysconfig/network-scripts";

fn managed(key: &str) -> bool {
    const KEYS: [&str; 19] = [
        "DEVICE",
        "NAME",
        "HWADDR",
        "MACADDR",
        "TYPE",
        "ONBOOT",
        "BOOTPROTO",
        "GATEWAY",
        "IPV6INIT",
        "IPV6_AUTOCONF",
        "IPV6ADDR",
        "IPV6ADDR_SECONDARIES",
        "IPV6_DEFAULTGW",
        "DHCPV6C",
        "PEERDNS",
        "DEFROUTE",
        "NETWORK",
        "BROADCAST",
        "DOMAIN",
    ];
    let base = key.trim_end_matches(|c: char| c.is_ascii_digit());
    KEYS.contains(&key) || matches!(base, "IPADDR" | "PREFIX" | "NETMASK" | "DNS" | "GATEWAY")
}

/// `KEY=value` lines of the previous file that guestd does not manage.
pub fn kept_lines(previous: &str, managed: impl Fn(&str) -> bool) -> Vec<String> {
    let header: Vec<String> = HEADER.lines().map(|l| format!("# {l}")).collect();
    previous
        .lines()
        .filter(|l| {
            let t = l.trim();
            if t.is_empty() || header.iter().any(|h| h == t) {
                return false;
            }
            match t.split_once('=') {
                Some((k, _)) if !t.starts_with('#') => !managed(k.trim()),
                _ => true,
            }
        })
        .map(str::to_string)
        .collect()
}

fn ifcfg(iface: &Interface, previous: &str) -> Result<String, NetworkError> {
    let field = format!("interface {}", iface.name);
    let v = |value: &str| escape::sh_value(&field, value);
    let mut s = hash_header();
    let _ = writeln!(
        s,
        "DEVICE={}\nHWADDR={}\nTYPE=Ethernet\nONBOOT=yes\nBOOTPROTO=none",
        v(&iface.name)?,
        iface.mac.upper()
    );
    for (n, a) in iface.ipv4().enumerate() {
        let _ = writeln!(s, "IPADDR{n}={}\nPREFIX{n}={}", a.addr, a.prefix);
    }
    if let Some(g) = iface.gateway4 {
        let _ = writeln!(s, "GATEWAY={g}");
    }
    let v6: Vec<String> = iface.ipv6().map(|a| a.to_string()).collect();
    if let Some((first, rest)) = v6.split_first() {
        let _ = writeln!(s, "IPV6INIT=yes\nIPV6_AUTOCONF=no\nIPV6ADDR={first}");
        if !rest.is_empty() {
            let _ = writeln!(
                s,
                "IPV6ADDR_SECONDARIES={}",
                escape::sh_quote(&field, &rest.join(" "))?
            );
        }
        if let Some(g) = iface.gateway6 {
            let _ = writeln!(s, "IPV6_DEFAULTGW={}", v(&format!("{g}%{}", iface.name))?);
        }
    } else {
        s.push_str("IPV6INIT=no\n");
    }
    for (n, d) in iface.dns.iter().enumerate() {
        let _ = writeln!(s, "DNS{}={d}", n + 1);
    }
    for line in kept_lines(previous, managed) {
        let _ = writeln!(s, "{line}");
    }
    Ok(s)
}

fn routes(iface: &Interface, v4: bool) -> Option<String> {
    let list: Vec<&Route> = iface
        .routes
        .iter()
        .filter(|r| r.dest.is_ipv4() == v4)
        .collect();
    if list.is_empty() {
        return None;
    }
    let mut s = hash_header();
    for r in list {
        let via = r.gateway.map(|g| format!(" via {g}")).unwrap_or_default();
        let _ = writeln!(s, "{}{via} dev {}", r.dest, iface.name);
    }
    Some(s)
}

pub fn render(net: &Network, ctx: RenderContext<'_>) -> Result<Rendered, NetworkError> {
    let mut files = Vec::new();
    for iface in &net.interfaces {
        let path = format!("{DIR}/ifcfg-{}", iface.name);
        let previous = read_text(ctx.root, &path)?.unwrap_or_default();
        files.push(FileChange::write(
            &path,
            ifcfg(iface, &previous)?,
            WriteOptions::mode(0o644),
        ));
        for (v4, name) in [(true, "route"), (false, "route6")] {
            let path = format!("{DIR}/{name}-{}", iface.name);
            files.push(match routes(iface, v4) {
                Some(text) => FileChange::write(path, text, WriteOptions::mode(0o644)),
                None => FileChange::Remove { path },
            });
        }
    }
    let mut restart = Vec::new();
    for i in &net.interfaces {
        restart.push(best_effort("ifdown", &[&i.name]));
        restart.push(best_effort(
            "ip",
            &["addr", "flush", "dev", &i.name, "scope", "global"],
        ));
        restart.push(must("ifup", &[&i.name]));
    }
    Ok(Rendered {
        manages_dns: true,
        ..Rendered::restarting(files, restart, ip_checks(net))
    })
}
