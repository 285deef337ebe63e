//! systemd-networkd: `/etc/systemd/network/10-guestd-<if>.network` per interface (matched by
//! MAC), then `networkctl reload` and `networkctl reconfigure <if>` for the affected interfaces.
//!
//! Host text: the label is `Description=`, through [`escape::informational`] (no newline, no
//! trailing `\` that would continue the line, no `%` specifier); device names are checked
//! (`check`: no glob characters for `Name=`) and typed values print as themselves.

use std::fmt::Write as _;

use guestd_core::{FileChange, WriteOptions};

use super::{RenderContext, Rendered, escape, hash_header, ip_checks, must, wait_for_addresses};
use crate::network::model::{Interface, Network, NetworkError};

pub fn path(name: &str) -> String {
    format!("/etc/systemd/network/10-guestd-{name}.network")
}

pub fn unit(iface: &Interface) -> String {
    let mut s = hash_header();
    let _ = write!(
        s,
        "\n[Match]\nMACAddress={}\nName={}\n\n[Network]\nDHCP=no\nIPv6AcceptRA=no\n",
        iface.mac, iface.name
    );
    if let Some(label) = &iface.label {
        let _ = writeln!(s, "Description={}", escape::informational(label));
    }
    for a in &iface.addresses {
        let _ = writeln!(s, "Address={a}");
    }
    if let Some(g) = iface.gateway4 {
        let _ = writeln!(s, "Gateway={g}");
    }
    if let Some(g) = iface.gateway6 {
        let _ = writeln!(s, "Gateway={g}");
    }
    for d in &iface.dns {
        let _ = writeln!(s, "DNS={d}");
    }
    for r in &iface.routes {
        let _ = write!(s, "\n[Route]\nDestination={}\n", r.dest);
        match r.gateway {
            Some(g) => {
                let _ = writeln!(s, "Gateway={g}");
            }
            None => s.push_str("Scope=link\n"),
        }
    }
    s
}

pub fn render(net: &Network, _ctx: RenderContext<'_>) -> Result<Rendered, NetworkError> {
    let files = net
        .interfaces
        .iter()
        .map(|i| FileChange::write(path(&i.name), unit(i), WriteOptions::mode(0o644)))
        .collect();
    let mut restart = vec![must("networkctl", &["reload"])];
    for i in &net.interfaces {
        restart.push(must("networkctl", &["reconfigure", &i.name]));
    }
    let mut checks = wait_for_addresses(net);
    checks.extend(ip_checks(net));
    Ok(Rendered::restarting(files, restart, checks))
}
