//! One renderer per network manager, all from the same [`Network`]. A renderer is a pure
//! function of the model and the guest's current files (read through `Root`): it returns the
//! files to write, the manager's own commands to restart only the affected interfaces, the checks
//! that the addresses came up, and the commands that restart again after a rollback.
//!
//! Host text: [`check`] runs before every renderer (device names, labels), and each renderer
//! writes text only through its format's function in [`escape`] (the module doc there says which
//! field is escaped how, and why labels are written reduced rather than escaped).
//!
//! Adding a manager: a module here, a variant in [`super::NetworkTool`], an arm in [`render`], and
//! its golden trees under `distro/tests/golden/network/<manager>/`.

pub mod check;
pub mod escape;
mod freebsd;
mod ifupdown;
mod netifrc;
mod netplan;
mod networkd;
mod networkmanager;
mod networkscripts;
mod wicked;
mod windows;

use guestd_core::{Effect, FileChange, PlannedProcess, ProcessSpec, Root, plan::Expect};

use super::manager::NetworkTool;
use super::model::{IpNet, Network, NetworkError};
use crate::OsFamily;

/// First lines of every file guestd writes (in the file's comment syntax).
pub const HEADER: &str = "Written by guestd (resetnetwork) from the host's network data.\nLocal changes are replaced by the next resetnetwork; previous versions are kept in /var/lib/guestd/backup.";

/// What a renderer sees of the system besides the model.
#[derive(Debug, Clone, Copy)]
pub struct RenderContext<'a> {
    pub root: &'a Root,
    pub family: OsFamily,
}

/// A renderer's output.
#[derive(Debug, Default)]
pub struct Rendered {
    /// Network configuration files (written, removed or linked).
    pub files: Vec<FileChange>,
    /// Restart the affected interfaces with the manager's own commands.
    pub restart: Vec<PlannedProcess>,
    /// Checks that the interfaces came up with their addresses.
    pub checks: Vec<PlannedProcess>,
    /// Run after the files were restored (restart again with the old configuration).
    pub rollback: Vec<PlannedProcess>,
    /// The manager writes `resolv.conf` itself (guestd then leaves it alone).
    pub manages_dns: bool,
    /// The renderer also set the hostname (FreeBSD `rc.conf`, Windows).
    pub sets_hostname: bool,
    /// Commands that set the hostname (when `sets_hostname`), run even when the network
    /// configuration is unchanged.
    pub hostname_commands: Vec<PlannedProcess>,
    /// There are no files to compare: the commands always run (Windows).
    pub always_restart: bool,
}

impl Rendered {
    /// Files plus restart commands and checks; the rollback restarts the same way (best effort).
    pub fn restarting(
        files: Vec<FileChange>,
        restart: Vec<PlannedProcess>,
        checks: Vec<PlannedProcess>,
    ) -> Self {
        Self {
            files,
            rollback: relaxed(&restart),
            restart,
            checks,
            ..Default::default()
        }
    }
}

/// Render `net` for `manager`.
pub fn render(
    manager: NetworkTool,
    net: &Network,
    ctx: RenderContext<'_>,
) -> Result<Rendered, NetworkError> {
    check::network(manager, net)?;
    match manager {
        NetworkTool::Netplan => netplan::render(net, ctx),
        NetworkTool::NetworkManager => networkmanager::render(net, ctx),
        NetworkTool::Networkd => networkd::render(net, ctx),
        NetworkTool::Ifupdown => ifupdown::render(net, ctx),
        NetworkTool::NetworkScripts => networkscripts::render(net, ctx),
        NetworkTool::Wicked => wicked::render(net, ctx),
        NetworkTool::Netifrc => netifrc::render(net, ctx),
        NetworkTool::FreeBsd => freebsd::render(net, ctx),
        NetworkTool::Windows => windows::render(net, ctx),
    }
}

/// The header as `#` comments.
pub fn hash_header() -> String {
    HEADER.lines().map(|l| format!("# {l}\n")).collect()
}

/// `ip -o addr show dev X` must list each address (Linux).
pub fn ip_checks(net: &Network) -> Vec<PlannedProcess> {
    let mut checks = Vec::new();
    for iface in &net.interfaces {
        for addr in &iface.addresses {
            checks.push(PlannedProcess {
                command: ProcessSpec::new("ip")
                    .args(["-o", "addr", "show", "dev", &iface.name])
                    .observes(),
                expect: Expect::StdoutContains(ip_line(addr)),
                undo: None,
            });
        }
    }
    checks
}

/// For managers that configure in the background (networkd, netplan): wait up to 30 s per
/// interface for its addresses (best effort; the checks that follow decide).
pub fn wait_for_addresses(net: &Network) -> Vec<PlannedProcess> {
    const SCRIPT: &str = "dev=$1; shift; for a in \"$@\"; do n=0; \
until ip -o addr show dev \"$dev\" | grep -qF -- \"$a\"; do \
n=$((n+1)); [ $n -ge 30 ] && exit 1; sleep 1; done; done";
    net.interfaces
        .iter()
        .map(|iface| {
            let mut args = vec![
                "-c".to_string(),
                SCRIPT.to_string(),
                "wait".into(),
                iface.name.clone(),
            ];
            args.extend(iface.addresses.iter().map(ip_line));
            PlannedProcess {
                command: ProcessSpec::new("sh").args(args).observes(),
                expect: Expect::Anything,
                undo: None,
            }
        })
        .collect()
}

/// How `ip -o addr` shows an address: `inet 10.0.0.2/24 ` / `inet6 2001:db8::2/64 `.
pub fn ip_line(addr: &IpNet) -> String {
    let family = if addr.is_ipv4() { "inet" } else { "inet6" };
    format!("{family} {addr} ")
}

/// A network command (restart, reload, `netsh`) that must succeed.
pub fn must(program: &str, args: &[&str]) -> PlannedProcess {
    ProcessSpec::new(program)
        .args(args.iter().copied())
        .effect(Effect::Network)
        .into()
}

/// A best-effort network command (its result is ignored).
pub fn best_effort(program: &str, args: &[&str]) -> PlannedProcess {
    PlannedProcess {
        command: ProcessSpec::new(program)
            .args(args.iter().copied())
            .effect(Effect::Network),
        expect: Expect::Anything,
        undo: None,
    }
}

/// A command that sets the kernel's host name (`hostname NAME`, `hostnamectl set-hostname`);
/// it must succeed.
pub fn set_hostname(program: &str, args: &[&str]) -> PlannedProcess {
    ProcessSpec::new(program)
        .args(args.iter().copied())
        .effect(Effect::Hostname)
        .into()
}

/// The same commands, all best effort (for rollback).
pub fn relaxed(commands: &[PlannedProcess]) -> Vec<PlannedProcess> {
    commands
        .iter()
        .map(|c| PlannedProcess {
            command: c.command.clone(),
            expect: Expect::Anything,
            undo: None,
        })
        .collect()
}

/// Remove from a shell-variable file every assignment of a name `drop` selects (values may be
/// quoted over several lines), keeping everything else byte for byte.
pub fn strip_assignments(text: &str, drop: impl Fn(&str) -> bool) -> String {
    let mut out = String::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        let trimmed = line.trim_start();
        let name = trimmed
            .split_once('=')
            .map(|(n, _)| n.trim())
            .filter(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
        match name {
            Some(n) if drop(n) => {
                // Skip continuation lines while a quote is open.
                let mut open = open_quote(trimmed.split_once('=').map_or("", |(_, v)| v), None);
                while let Some(q) = open {
                    match lines.next() {
                        Some(next) => open = open_quote(next, Some(q)),
                        None => break,
                    }
                }
            }
            _ => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out
}

/// The quote still open after `text`, starting inside `open`.
fn open_quote(text: &str, mut open: Option<char>) -> Option<char> {
    let mut escaped = false;
    for c in text.chars() {
        match open {
            Some(q) => {
                if escaped {
                    escaped = false;
                } else if c == '\\' && q == '"' {
                    escaped = true;
                } else if c == q {
                    open = None;
                }
            }
            None => match c {
                '"' | '\'' => open = Some(c),
                '#' => break,
                _ => {}
            },
        }
    }
    open
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_multiline_assignments() {
        let text = "# keep\nconfig_eth0=\"10.0.0.2/24\n2001:db8::2/64\"\nconfig_eth1=\"dhcp\"\nroutes_eth0='a\nb'\nmodules=\"iproute2\"\n";
        let out = strip_assignments(text, |n| n.ends_with("_eth0"));
        assert_eq!(out, "# keep\nconfig_eth1=\"dhcp\"\nmodules=\"iproute2\"\n");
    }
}
