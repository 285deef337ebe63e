//! NetworkManager keyfiles: `/etc/NetworkManager/system-connections/guestd-<if>.nmconnection`
//! (mode 0600, as NetworkManager requires), then `nmcli connection reload` and `nmcli connection
//! up` of each affected profile (which waits for the activation). After a rollback the device is
//! reconnected with whatever profile is then the best (`nmcli device connect`).
//!
//! Host text: the device name (in `id=` and `interface-name=`) goes through
//! [`escape::keyfile_value`] (GKeyFile's escapes); the label is not written; typed values print as
//! themselves.

use std::fmt::Write as _;
use std::net::IpAddr;

use guestd_core::{FileChange, WriteOptions};

use super::{RenderContext, Rendered, best_effort, escape, hash_header, ip_checks, must};
use crate::network::model::{Interface, IpNet, Network, NetworkError, Route};

pub fn path(name: &str) -> String {
    format!("/etc/NetworkManager/system-connections/guestd-{name}.nmconnection")
}

/// A stable UUID (v4 layout) derived from the MAC, so re-rendering gives the same file.
fn uuid(iface: &Interface) -> String {
    let m = iface.mac.0;
    format!(
        "9e5d0a1c-6b1e-4{:01x}{:02x}-8{:01x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
        m[0] >> 4,
        m[1],
        m[0] & 0xf,
        m[2],
        m[0],
        m[1],
        m[2],
        m[3],
        m[4],
        m[5]
    )
}

fn section(
    s: &mut String,
    name: &str,
    addrs: &[&IpNet],
    gateway: Option<IpAddr>,
    routes: &[&Route],
    dns: &[IpAddr],
) {
    let _ = writeln!(s, "\n[{name}]");
    if addrs.is_empty() {
        s.push_str(if name == "ipv4" {
            "method=disabled\n"
        } else {
            "method=ignore\n"
        });
        return;
    }
    s.push_str("method=manual\n");
    for (n, a) in addrs.iter().enumerate() {
        let _ = writeln!(s, "address{}={a}", n + 1);
    }
    if let Some(g) = gateway {
        let _ = writeln!(s, "gateway={g}");
    }
    if !dns.is_empty() {
        let list: String = dns.iter().map(|d| format!("{d};")).collect();
        let _ = writeln!(s, "dns={list}");
        s.push_str("ignore-auto-dns=true\n");
    }
    for (n, r) in routes.iter().enumerate() {
        match r.gateway {
            Some(g) => {
                let _ = writeln!(s, "route{}={},{g}", n + 1, r.dest);
            }
            None => {
                let _ = writeln!(s, "route{}={}", n + 1, r.dest);
            }
        }
    }
}

pub fn keyfile(iface: &Interface) -> Result<String, NetworkError> {
    let mut s = hash_header();
    let name = escape::keyfile_value(&format!("interface {}", iface.name), &iface.name)?;
    let _ = write!(
        s,
        "\n[connection]\nid=guestd-{name}\nuuid={uuid}\ntype=ethernet\ninterface-name={name}\nautoconnect=true\nautoconnect-priority=100\n\n[ethernet]\nmac-address={mac}\n",
        uuid = uuid(iface),
        mac = iface.mac.upper()
    );
    let v4: Vec<&IpNet> = iface.ipv4().collect();
    let v6: Vec<&IpNet> = iface.ipv6().collect();
    let r4: Vec<&Route> = iface.routes.iter().filter(|r| r.dest.is_ipv4()).collect();
    let r6: Vec<&Route> = iface.routes.iter().filter(|r| !r.dest.is_ipv4()).collect();
    let d4: Vec<IpAddr> = iface.dns.iter().copied().filter(IpAddr::is_ipv4).collect();
    let d6: Vec<IpAddr> = iface.dns.iter().copied().filter(IpAddr::is_ipv6).collect();
    section(
        &mut s,
        "ipv4",
        &v4,
        iface.gateway4.map(IpAddr::V4),
        &r4,
        &d4,
    );
    section(
        &mut s,
        "ipv6",
        &v6,
        iface.gateway6.map(IpAddr::V6),
        &r6,
        &d6,
    );
    if !v6.is_empty() {
        s.push_str("addr-gen-mode=eui64\n");
    }
    Ok(s)
}

pub fn render(net: &Network, _ctx: RenderContext<'_>) -> Result<Rendered, NetworkError> {
    let files = net
        .interfaces
        .iter()
        .map(|i| {
            let text = keyfile(i)?;
            Ok(FileChange::write(
                path(&i.name),
                text,
                WriteOptions::mode(0o600).exact(),
            ))
        })
        .collect::<Result<_, NetworkError>>()?;
    let mut restart = vec![must("nmcli", &["connection", "reload"])];
    let mut rollback = vec![best_effort("nmcli", &["connection", "reload"])];
    for i in &net.interfaces {
        let id = format!("guestd-{}", i.name);
        restart.push(must("nmcli", &["connection", "up", "id", &id]));
        rollback.push(best_effort("nmcli", &["device", "connect", &i.name]));
    }
    Ok(Rendered {
        files,
        restart,
        checks: ip_checks(net),
        rollback,
        manages_dns: true,
        ..Default::default()
    })
}
