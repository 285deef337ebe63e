//! SUSE wicked: `/etc/sysconfig/network/ifcfg-<if>` (`IPADDR`, `IPADDR_<n>`; unmanaged keys
//! kept), `ifroute-<if>` (removed when empty), DNS through netconfig
//! (`NETCONFIG_DNS_STATIC_SERVERS` in `/etc/sysconfig/network/config`). Restart:
//! `wicked ifreload <if>` per affected interface, then `netconfig update -f`.
//!
//! Host text: values are single-quoted through [`escape::wicked_quote`] (wicked's parser reads a
//! quoted value to the next quote and knows no escape; control characters and `'` are refused
//! there); the label is `NAME=`, reduced by [`escape::informational`] first, which leaves no
//! quote in it. `ifroute-*` holds only typed addresses and the checked device name.

use std::fmt::Write as _;

use guestd_core::{FileChange, WriteOptions};

use super::ifupdown::read_text;
use super::networkscripts::kept_lines;
use super::{RenderContext, Rendered, best_effort, escape, hash_header, ip_checks, must};
use crate::network::model::{Interface, Network, NetworkError};

const DIR: &str = "/etc/sysconfig/network";
const CONFIG: &str = "/etc/sysconfig/network/config";

fn managed(key: &str) -> bool {
    let base = key.split('_').next().unwrap_or(key);
    matches!(key, "STARTMODE" | "BOOTPROTO" | "LLADDR" | "NAME")
        || matches!(base, "IPADDR" | "PREFIXLEN" | "NETMASK" | "LABEL")
}

fn ifcfg(iface: &Interface, previous: &str) -> Result<String, NetworkError> {
    let field = format!("interface {}", iface.name);
    let mut s = hash_header();
    s.push_str("STARTMODE='auto'\nBOOTPROTO='static'\n");
    if let Some(label) = &iface.label {
        let name = escape::wicked_quote(
            &format!("{field}: network label"),
            &escape::informational(label),
        )?;
        let _ = writeln!(s, "NAME={name}");
    }
    for (n, a) in iface.addresses.iter().enumerate() {
        let suffix = if n == 0 {
            String::new()
        } else {
            format!("_{n}")
        };
        let _ = writeln!(
            s,
            "IPADDR{suffix}={}",
            escape::wicked_quote(&field, &a.to_string())?
        );
    }
    for line in kept_lines(previous, managed) {
        let _ = writeln!(s, "{line}");
    }
    Ok(s)
}

fn ifroute(iface: &Interface) -> Option<String> {
    let mut lines = Vec::new();
    if let Some(g) = iface.gateway4 {
        lines.push(format!("default {g} - {}", iface.name));
    }
    if let Some(g) = iface.gateway6 {
        lines.push(format!("default {g} - {}", iface.name));
    }
    for r in &iface.routes {
        let via = r.gateway.map_or("-".to_string(), |g| g.to_string());
        lines.push(format!("{} {via} - {}", r.dest, iface.name));
    }
    (!lines.is_empty()).then(|| hash_header() + &lines.join("\n") + "\n")
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
        let path = format!("{DIR}/ifroute-{}", iface.name);
        files.push(match ifroute(iface) {
            Some(text) => FileChange::write(path, text, WriteOptions::mode(0o644)),
            None => FileChange::Remove { path },
        });
    }
    let dns = net.dns();
    if !dns.is_empty() {
        let list: Vec<String> = dns.iter().map(|d| d.to_string()).collect();
        let line = format!(
            "NETCONFIG_DNS_STATIC_SERVERS={}",
            escape::sh_quote("DNS servers", &list.join(" "))?
        );
        let previous = read_text(ctx.root, CONFIG)?.unwrap_or_default();
        let mut replaced = false;
        let mut text: String = previous
            .lines()
            .map(|l| {
                if l.trim_start().starts_with("NETCONFIG_DNS_STATIC_SERVERS=") {
                    replaced = true;
                    format!("{line}\n")
                } else {
                    format!("{l}\n")
                }
            })
            .collect();
        if !replaced {
            text.push_str(&line);
            text.push('\n');
        }
        files.push(FileChange::write(CONFIG, text, WriteOptions::mode(0o644)));
    }
    let mut restart: Vec<_> = net
        .interfaces
        .iter()
        .map(|i| must("wicked", &["ifreload", &i.name]))
        .collect();
    if !dns.is_empty() {
        restart.push(best_effort("netconfig", &["update", "-f"]));
    }
    Ok(Rendered {
        manages_dns: true,
        ..Rendered::restarting(files, restart, ip_checks(net))
    })
}
