//! netplan: `/etc/netplan/90-guestd.yaml` (mode 0600, as netplan requires), then
//! `netplan generate` and `netplan apply` (netplan has no per-interface apply).
//!
//! Host text: every scalar, the device name used as a key included, is written through
//! [`escape::yaml_quote`] (double-quoted, so a name such as `1` or `on` stays a string and no
//! value can end its scalar); the label is not written.

use std::fmt::Write as _;

use guestd_core::{FileChange, WriteOptions};

use super::{
    RenderContext, Rendered, escape::yaml_quote, hash_header, ip_checks, must, relaxed,
    wait_for_addresses,
};
use crate::network::model::{Network, NetworkError};

pub const PATH: &str = "/etc/netplan/90-guestd.yaml";

pub fn render(net: &Network, _ctx: RenderContext<'_>) -> Result<Rendered, NetworkError> {
    let mut y = hash_header();
    y.push_str("network:\n  version: 2\n  ethernets:\n");
    for iface in &net.interfaces {
        let q = |v: &str| yaml_quote(&format!("interface {}", iface.name), v);
        let name = q(&iface.name)?;
        let _ = writeln!(y, "    {name}:");
        let _ = writeln!(
            y,
            "      match:\n        macaddress: {}",
            q(&iface.mac.to_string())?
        );
        let _ = writeln!(y, "      set-name: {name}");
        y.push_str("      dhcp4: false\n      dhcp6: false\n      accept-ra: false\n");
        y.push_str("      addresses:\n");
        for a in &iface.addresses {
            let _ = writeln!(y, "        - {}", q(&a.to_string())?);
        }
        let mut routes = Vec::new();
        if let Some(g) = iface.gateway4 {
            routes.push(("0.0.0.0/0".to_string(), Some(g.to_string())));
        }
        if let Some(g) = iface.gateway6 {
            routes.push(("::/0".to_string(), Some(g.to_string())));
        }
        for r in &iface.routes {
            routes.push((r.dest.to_string(), r.gateway.map(|g| g.to_string())));
        }
        if !routes.is_empty() {
            y.push_str("      routes:\n");
            for (to, via) in routes {
                let _ = writeln!(y, "        - to: {}", q(&to)?);
                match via {
                    Some(via) => {
                        let _ = writeln!(y, "          via: {}", q(&via)?);
                    }
                    None => y.push_str("          scope: link\n"),
                }
            }
        }
        if !iface.dns.is_empty() {
            let list = iface
                .dns
                .iter()
                .map(|d| q(&d.to_string()))
                .collect::<Result<Vec<_>, _>>()?;
            let _ = writeln!(
                y,
                "      nameservers:\n        addresses: [{}]",
                list.join(", ")
            );
        }
    }
    let restart = vec![must("netplan", &["generate"]), must("netplan", &["apply"])];
    let mut checks = wait_for_addresses(net);
    checks.extend(ip_checks(net));
    Ok(Rendered {
        files: vec![FileChange::write(
            PATH,
            y,
            WriteOptions::mode(0o600).exact(),
        )],
        rollback: relaxed(&[must("netplan", &["apply"])]),
        restart,
        checks,
        manages_dns: false,
        ..Default::default()
    })
}
