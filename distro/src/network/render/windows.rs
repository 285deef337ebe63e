//! Windows: `netsh` commands (no files). Per affected adapter: static IPv4 addresses (the first
//! with the gateway), IPv6 addresses and default route after removing the manual ones, static
//! routes, DNS servers. Checks: `Get-NetIPAddress` finds each address. Rollback can only
//! return the adapter to DHCP: netsh has no file to restore. The hostname is no command here:
//! `reset_network` sets it with `SetComputerNameExW` once the adapters are configured
//! (`network::computer_name`).
//!
//! Host text: no shell is involved (each netsh argument is its own argv element); the adapter
//! name is checked first (`check`: no control character and none of `"\/:*?<>|`, which Windows
//! refuses in a connection name anyway, so it cannot close netsh's quoting), and inside a
//! PowerShell script it is a literal through [`escape::ps_quote`] (every kind of single quote
//! PowerShell accepts is doubled). Addresses are typed; the label is not written.

use guestd_core::{Effect, PlannedProcess, ProcessSpec, plan::Expect};

use super::{RenderContext, Rendered, best_effort, escape, must};
use crate::network::model::{Network, NetworkError};

/// `powershell -Command …` (a quoted PowerShell string uses doubled single quotes); `reach`
/// marks it as changing the network or only checking it.
fn powershell(
    script: String,
    expect: Expect,
    reach: fn(ProcessSpec) -> ProcessSpec,
) -> PlannedProcess {
    PlannedProcess {
        command: reach(ProcessSpec::new("powershell").args([
            "-NoProfile",
            "-NonInteractive",
            "-Command",
            &script,
        ])),
        expect,
        undo: None,
    }
}

fn changes_network(c: ProcessSpec) -> ProcessSpec {
    c.effect(Effect::Network)
}

pub fn render(net: &Network, _ctx: RenderContext<'_>) -> Result<Rendered, NetworkError> {
    let mut restart = Vec::new();
    let mut rollback = Vec::new();
    let mut checks = Vec::new();
    for iface in &net.interfaces {
        let alias = escape::ps_quote(&format!("interface {}", iface.name), &iface.name)?;
        let name = format!("name={}", iface.name);
        restart.push(best_effort(
            "netsh",
            &["interface", "set", "interface", &name, "admin=enabled"],
        ));
        for (n, a) in iface.ipv4().enumerate() {
            let address = format!("address={}", a.addr);
            let mask = format!("mask={}", a.netmask_v4());
            if n == 0 {
                let mut args = vec![
                    "interface",
                    "ipv4",
                    "set",
                    "address",
                    &name,
                    "source=static",
                    &address,
                    &mask,
                ];
                let gw = iface.gateway4.map(|g| format!("gateway={g}"));
                if let Some(gw) = &gw {
                    args.extend([gw.as_str(), "gwmetric=1"]);
                }
                restart.push(must("netsh", &args));
            } else {
                restart.push(must(
                    "netsh",
                    &[
                        "interface",
                        "ipv4",
                        "add",
                        "address",
                        &name,
                        &address,
                        &mask,
                    ],
                ));
            }
        }
        if iface.ipv6().next().is_some() {
            restart.push(powershell(
                format!(
                    "Get-NetIPAddress -InterfaceAlias {alias} -AddressFamily IPv6 -PrefixOrigin Manual -ErrorAction SilentlyContinue | Remove-NetIPAddress -Confirm:$false"
                ),
                Expect::Anything,
                changes_network,
            ));
            let interface = format!("interface={}", iface.name);
            for a in iface.ipv6() {
                let address = format!("address={a}");
                restart.push(must(
                    "netsh",
                    &[
                        "interface",
                        "ipv6",
                        "add",
                        "address",
                        &interface,
                        &address,
                        "store=persistent",
                    ],
                ));
            }
            if let Some(g) = iface.gateway6 {
                let hop = format!("nexthop={g}");
                restart.push(best_effort(
                    "netsh",
                    &[
                        "interface",
                        "ipv6",
                        "delete",
                        "route",
                        "prefix=::/0",
                        &interface,
                    ],
                ));
                restart.push(must(
                    "netsh",
                    &[
                        "interface",
                        "ipv6",
                        "add",
                        "route",
                        "prefix=::/0",
                        &interface,
                        &hop,
                        "store=persistent",
                    ],
                ));
            }
        }
        for r in &iface.routes {
            let family = if r.dest.is_ipv4() { "ipv4" } else { "ipv6" };
            let prefix = format!("prefix={}", r.dest);
            let interface = format!("interface={}", iface.name);
            let mut args = vec!["interface", family, "add", "route", &prefix, &interface];
            let hop = r.gateway.map(|g| format!("nexthop={g}"));
            if let Some(hop) = &hop {
                args.push(hop);
            }
            args.push("store=persistent");
            restart.push(must("netsh", &args));
        }
        for (family, v4) in [("ipv4", true), ("ipv6", false)] {
            let servers: Vec<_> = iface.dns.iter().filter(|d| d.is_ipv4() == v4).collect();
            for (n, d) in servers.iter().enumerate() {
                let address = format!("address={d}");
                if n == 0 {
                    restart.push(must(
                        "netsh",
                        &[
                            "interface",
                            family,
                            "set",
                            "dnsservers",
                            &name,
                            "source=static",
                            &address,
                            "register=primary",
                            "validate=no",
                        ],
                    ));
                } else {
                    let index = format!("index={}", n + 1);
                    restart.push(must(
                        "netsh",
                        &[
                            "interface",
                            family,
                            "add",
                            "dnsservers",
                            &name,
                            &address,
                            &index,
                            "validate=no",
                        ],
                    ));
                }
            }
        }
        for a in &iface.addresses {
            checks.push(powershell(
                format!(
                    "Get-NetIPAddress -InterfaceAlias {alias} -IPAddress {} -ErrorAction Stop",
                    escape::ps_quote("address", &a.addr.to_string())?
                ),
                Expect::Success,
                ProcessSpec::observes,
            ));
        }
        rollback.push(best_effort(
            "netsh",
            &["interface", "ipv4", "set", "address", &name, "source=dhcp"],
        ));
        rollback.push(best_effort(
            "netsh",
            &[
                "interface",
                "ipv4",
                "set",
                "dnsservers",
                &name,
                "source=dhcp",
            ],
        ));
    }
    // The hostname is set after the network, with SetComputerNameExW (see
    // `network::computer_name`); its name is checked here so a bad one changes nothing.
    if let Some(h) = &net.hostname {
        crate::network::computer_name::host_label(h)?;
    }
    Ok(Rendered {
        files: Vec::new(),
        restart,
        checks,
        rollback,
        manages_dns: true,
        sets_hostname: true,
        hostname_commands: Vec::new(),
        always_restart: true,
    })
}
