//! Gentoo netifrc: `config_<if>`, `routes_<if>` and `dns_servers_<if>` in `/etc/conf.d/net`
//! (every other variable kept), the `/etc/init.d/net.<if>` → `net.lo` link, then per affected
//! interface: flush its global addresses and `/etc/init.d/net.<if> restart`.
//!
//! Host text: `conf.d/net` is sourced by `sh`. Variable names spell the device as netifrc does
//! ([`escape::sh_var`]: `eth0.100` → `config_eth0_100`); values go through [`escape::sh_lines`]
//! (one typed item per line) / [`escape::sh_quote`]. The label is not written.

use std::fmt::Write as _;

use guestd_core::{FileChange, WriteOptions};

use super::ifupdown::read_text;
use super::{
    HEADER, RenderContext, Rendered, best_effort, escape, hash_header, ip_checks, must,
    strip_assignments,
};
use crate::network::model::{Network, NetworkError};

pub const PATH: &str = "/etc/conf.d/net";

pub fn render(net: &Network, ctx: RenderContext<'_>) -> Result<Rendered, NetworkError> {
    let previous = read_text(ctx.root, PATH)?.unwrap_or_default();
    let ours: Vec<String> = net
        .interfaces
        .iter()
        .flat_map(|i| {
            let var = escape::sh_var(&i.name);
            ["config_", "routes_", "dns_servers_"].map(|p| format!("{p}{var}"))
        })
        .collect();
    let header: Vec<String> = HEADER.lines().map(|l| format!("# {l}")).collect();
    let kept: String = strip_assignments(&previous, |n| ours.iter().any(|o| o == n))
        .lines()
        .filter(|l| !header.iter().any(|h| h == l.trim_end()))
        .map(|l| format!("{l}\n"))
        .collect();
    let mut s = kept.trim_end().to_string();
    if !s.is_empty() {
        s.push_str("\n\n");
    }
    s.push_str(&hash_header());
    for iface in &net.interfaces {
        let field = format!("interface {}", iface.name);
        let var = escape::sh_var(&iface.name);
        let addrs: Vec<String> = iface.addresses.iter().map(|a| a.to_string()).collect();
        let _ = writeln!(s, "config_{var}={}", escape::sh_lines(&field, &addrs)?);
        let mut routes = Vec::new();
        if let Some(g) = iface.gateway4 {
            routes.push(format!("default via {g}"));
        }
        if let Some(g) = iface.gateway6 {
            routes.push(format!("default via {g}"));
        }
        for r in &iface.routes {
            match r.gateway {
                Some(g) => routes.push(format!("{} via {g}", r.dest)),
                None => routes.push(format!("{} scope link", r.dest)),
            }
        }
        if !routes.is_empty() {
            let _ = writeln!(s, "routes_{var}={}", escape::sh_lines(&field, &routes)?);
        }
        if !iface.dns.is_empty() {
            let dns: Vec<String> = iface.dns.iter().map(|d| d.to_string()).collect();
            let _ = writeln!(
                s,
                "dns_servers_{var}={}",
                escape::sh_quote(&field, &dns.join(" "))?
            );
        }
    }
    let mut files = vec![FileChange::write(PATH, s, WriteOptions::mode(0o644))];
    let mut restart = Vec::new();
    for i in &net.interfaces {
        let script = format!("/etc/init.d/net.{}", i.name);
        if !ctx.root.exists(&script) && !ctx.root.is_symlink(&script) {
            files.push(FileChange::Symlink {
                path: script.clone(),
                target: "net.lo".into(),
            });
        }
        restart.push(best_effort(
            "ip",
            &["addr", "flush", "dev", &i.name, "scope", "global"],
        ));
        restart.push(must(&script, &["restart"]));
    }
    Ok(Rendered {
        manages_dns: true,
        ..Rendered::restarting(files, restart, ip_checks(net))
    })
}
