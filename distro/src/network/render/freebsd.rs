//! FreeBSD `/etc/rc.conf`: the `ifconfig_<if>*` lines of the affected interfaces, the default
//! routers, guestd's own static routes (`route_guestd<n>`, other names in `static_routes` are
//! kept) and `hostname=` are replaced; every other line stays. Restart per affected interface:
//! `service netif restart <if>`, then `service routing restart`; the checks read `ifconfig`.
//!
//! Host text: `rc.conf` is sourced by `sh`. Variable names spell the device as rc does
//! ([`escape::sh_var`]: `em0.100` → `ifconfig_em0_100`); every value, the hostname included,
//! goes through [`escape::sh_quote`]. The label is not written.

use std::fmt::Write as _;
use std::net::IpAddr;

use guestd_core::{FileChange, PlannedProcess, ProcessSpec, WriteOptions, plan::Expect};

use super::ifupdown::read_text;
use super::{
    HEADER, RenderContext, Rendered, escape, hash_header, must, set_hostname, strip_assignments,
};
use crate::network::model::{Network, NetworkError};

pub const PATH: &str = "/etc/rc.conf";

/// The value of `name="…"` in rc.conf text.
fn value_of(text: &str, name: &str) -> Option<String> {
    text.lines().rev().find_map(|l| {
        let v = l.trim().strip_prefix(name)?.strip_prefix('=')?;
        Some(v.trim().trim_matches('"').trim_matches('\'').to_string())
    })
}

pub fn render(net: &Network, ctx: RenderContext<'_>) -> Result<Rendered, NetworkError> {
    let previous = read_text(ctx.root, PATH)?.unwrap_or_default();
    let vars: Vec<String> = net
        .interfaces
        .iter()
        .map(|i| escape::sh_var(&i.name))
        .collect();
    let q = escape::sh_quote;
    let user_routes = |var: &str| -> Vec<String> {
        value_of(&previous, var)
            .unwrap_or_default()
            .split_whitespace()
            .filter(|r| !r.starts_with("guestd"))
            .map(str::to_string)
            .collect()
    };
    let (mut routes4, mut routes6) = (
        user_routes("static_routes"),
        user_routes("ipv6_static_routes"),
    );
    let network = !net.interfaces.is_empty();
    let drop = |n: &str| {
        let iface_var = vars.iter().any(|i| {
            n == format!("ifconfig_{i}")
                || n.starts_with(&format!("ifconfig_{i}_"))
                || n.starts_with(&format!("ipv6_ifconfig_{i}"))
        });
        iface_var
            || (network
                && (matches!(
                    n,
                    "defaultrouter" | "ipv6_defaultrouter" | "static_routes" | "ipv6_static_routes"
                ) || n.starts_with("route_guestd")
                    || n.starts_with("ipv6_route_guestd")))
    };
    let header: Vec<String> = HEADER.lines().map(|l| format!("# {l}")).collect();
    // The hostname keeps its place; a second `hostname=` would be dead weight.
    let mut hostname_done = false;
    let mut kept = String::new();
    for line in strip_assignments(&previous, drop).lines() {
        if network && header.iter().any(|h| h == line.trim_end()) {
            continue;
        }
        match (&net.hostname, line.trim_start().starts_with("hostname=")) {
            (Some(_), true) if hostname_done => continue,
            (Some(h), true) => {
                let _ = writeln!(kept, "hostname={}", q("hostname", h.as_str())?);
                hostname_done = true;
            }
            _ => {
                kept.push_str(line);
                kept.push('\n');
            }
        }
    }
    let mut s = kept.trim_end().to_string();
    if let (Some(h), false) = (&net.hostname, hostname_done) {
        if !s.is_empty() {
            s.push('\n');
        }
        let _ = write!(s, "hostname={}", q("hostname", h.as_str())?);
    }
    if network {
        if !s.is_empty() {
            s.push_str("\n\n");
        }
        s.push_str(&hash_header());
    } else if !s.is_empty() {
        s.push('\n');
    }
    let (mut defaultrouter, mut defaultrouter6) = (None, None);
    let mut route_lines = Vec::new();
    for iface in &net.interfaces {
        let field = format!("interface {}", iface.name);
        let var = escape::sh_var(&iface.name);
        let mut alias = 0;
        let mut v6_first = true;
        for (n, a) in iface.ipv4().enumerate() {
            let value = q(&field, &format!("inet {a}"))?;
            if n == 0 {
                let _ = writeln!(s, "ifconfig_{var}={value}");
            } else {
                let _ = writeln!(s, "ifconfig_{var}_alias{alias}={value}");
                alias += 1;
            }
        }
        for a in iface.ipv6() {
            let value = q(&field, &format!("inet6 {} prefixlen {}", a.addr, a.prefix))?;
            if v6_first {
                let _ = writeln!(s, "ifconfig_{var}_ipv6={value}");
                v6_first = false;
            } else {
                let _ = writeln!(s, "ifconfig_{var}_alias{alias}={value}");
                alias += 1;
            }
        }
        if defaultrouter.is_none() {
            defaultrouter = iface.gateway4.map(|g| g.to_string());
        }
        if defaultrouter6.is_none() {
            defaultrouter6 = iface.gateway6.map(|g| {
                if g.segments()[0] & 0xffc0 == 0xfe80 {
                    format!("{g}%{}", iface.name)
                } else {
                    g.to_string()
                }
            });
        }
        for r in &iface.routes {
            let target = match r.gateway {
                Some(g) => g.to_string(),
                None => format!("-interface {}", iface.name),
            };
            let (list, prefix) = if r.dest.is_ipv4() {
                (&mut routes4, "route")
            } else {
                (&mut routes6, "ipv6_route")
            };
            let name = format!(
                "guestd{}",
                list.iter().filter(|n| n.starts_with("guestd")).count()
            );
            route_lines.push(format!(
                "{prefix}_{name}={}",
                q(&field, &format!("-net {} {target}", r.dest))?
            ));
            list.push(name);
        }
    }
    if let Some(g) = defaultrouter {
        let _ = writeln!(s, "defaultrouter={}", q("default router", &g)?);
    }
    if let Some(g) = defaultrouter6 {
        let _ = writeln!(s, "ipv6_defaultrouter={}", q("IPv6 default router", &g)?);
    }
    if !net.interfaces.is_empty() {
        if !routes4.is_empty() {
            let _ = writeln!(
                s,
                "static_routes={}",
                q("static_routes", &routes4.join(" "))?
            );
        }
        if !routes6.is_empty() {
            let _ = writeln!(
                s,
                "ipv6_static_routes={}",
                q("ipv6_static_routes", &routes6.join(" "))?
            );
        }
    }
    for l in route_lines {
        let _ = writeln!(s, "{l}");
    }
    let mut restart: Vec<PlannedProcess> = net
        .interfaces
        .iter()
        .map(|i| must("service", &["netif", "restart", &i.name]))
        .collect();
    if !net.interfaces.is_empty() {
        restart.push(must("service", &["routing", "restart"]));
    }
    let hostname_commands = net
        .hostname
        .iter()
        .map(|h| set_hostname("hostname", &[h.as_str()]))
        .collect();
    let mut checks = Vec::new();
    for iface in &net.interfaces {
        for a in &iface.addresses {
            let text = match a.addr {
                IpAddr::V4(ip) => format!("inet {ip} netmask 0x{:08x} ", u32::from(a.netmask_v4())),
                IpAddr::V6(ip) => format!("inet6 {ip} prefixlen {} ", a.prefix),
            };
            checks.push(PlannedProcess {
                command: ProcessSpec::new("ifconfig").arg(&iface.name).observes(),
                expect: Expect::StdoutContains(text),
                undo: None,
            });
        }
    }
    Ok(Rendered {
        manages_dns: false,
        sets_hostname: true,
        hostname_commands,
        ..Rendered::restarting(
            vec![FileChange::write(PATH, s, WriteOptions::mode(0o644))],
            restart,
            checks,
        )
    })
}
