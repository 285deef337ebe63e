//! Hostname and resolver files, without touching the network.
//!
//! - the family's hostname file (`/etc/hostname`; Gentoo `/etc/conf.d/hostname`), then
//!   `hostnamectl set-hostname` when systemd runs (`/run/systemd/system`), else `hostname`;
//! - `/etc/hosts`: the old name is taken out of the lines that carried it and one
//!   `127.0.1.1 <fqdn> <short>` line added; users' own lines stay as they are;
//! - `/etc/resolv.conf` only when nothing manages it: not a symlink (systemd-resolved,
//!   resolvconf, NetworkManager), no resolvconf installed, and a manager that does not write it.

use std::fmt::Write as _;
use std::net::IpAddr;

use guestd_core::{FileChange, PlannedCommand, Root, WriteOptions, plan::Expect};

use super::model::{Hostname, NetworkError};
use super::render::{hash_header, must};
use crate::OsFamily;

pub const HOSTS: &str = "/etc/hosts";
pub const RESOLV_CONF: &str = "/etc/resolv.conf";

/// Files and commands that set the hostname.
#[derive(Debug, Default)]
pub struct HostnamePlan {
    pub files: Vec<FileChange>,
    pub commands: Vec<PlannedCommand>,
    pub rollback: Vec<PlannedCommand>,
    /// Whether anything differs from the current state.
    pub changed: bool,
}

fn read(root: &Root, path: &str) -> Result<Option<String>, NetworkError> {
    root.read_optional(path)
        .map_err(|e| NetworkError::System(e.to_string()))
        .map(|b| b.map(|b| String::from_utf8_lossy(&b).into_owned()))
}

/// The hostname file of a family and how its content looks.
fn hostname_file(family: OsFamily, name: &str) -> (&'static str, String) {
    match family {
        OsFamily::Gentoo => ("/etc/conf.d/hostname", format!("hostname=\"{name}\"\n")),
        _ => ("/etc/hostname", format!("{name}\n")),
    }
}

/// The current static hostname from the family's file.
pub fn current(root: &Root, family: OsFamily) -> Result<Option<String>, NetworkError> {
    let (path, _) = hostname_file(family, "");
    Ok(read(root, path)?.and_then(|text| {
        text.lines()
            .map(|l| l.trim())
            .find(|l| !l.is_empty() && !l.starts_with('#'))
            .map(|l| {
                l.strip_prefix("hostname=")
                    .unwrap_or(l)
                    .trim_matches('"')
                    .to_string()
            })
    }))
}

/// FreeBSD: the `hostname=` of `/etc/rc.conf`.
pub fn current_rc_conf(root: &Root) -> Result<Option<String>, NetworkError> {
    Ok(read(root, "/etc/rc.conf")?.and_then(|text| {
        text.lines().rev().find_map(|l| {
            let v = l.trim().strip_prefix("hostname=")?;
            Some(v.trim().trim_matches('"').trim_matches('\'').to_string())
        })
    }))
}

/// Plan the hostname change (Linux families). `systemd`: whether systemd is PID 1.
pub fn plan(root: &Root, family: OsFamily, name: &Hostname) -> Result<HostnamePlan, NetworkError> {
    let systemd = root.is_dir("/run/systemd/system");
    let old = current(root, family)?;
    let (path, mut contents) = hostname_file(family, name.as_str());
    if family == OsFamily::Gentoo {
        // A shell-variable file: keep its comments and other settings.
        let previous = read(root, path)?.unwrap_or_default();
        let kept = super::render::strip_assignments(&previous, |n| n == "hostname");
        contents = kept + &contents;
    }
    let mut p = HostnamePlan::default();
    let hosts_before = read(root, HOSTS)?.unwrap_or_default();
    let hosts_after = patch_hosts(&hosts_before, old.as_deref(), name);
    p.changed = old.as_deref() != Some(name.as_str()) || hosts_after != hosts_before;
    if !p.changed {
        return Ok(p);
    }
    p.files
        .push(FileChange::write(path, contents, WriteOptions::mode(0o644)));
    if hosts_after != hosts_before {
        p.files.push(FileChange::write(
            HOSTS,
            hosts_after,
            WriteOptions::mode(0o644),
        ));
    }
    let set = |n: &str| {
        if systemd {
            must("hostnamectl", &["set-hostname", n])
        } else {
            must("hostname", &[n])
        }
    };
    p.commands.push(set(name.as_str()));
    if let Some(old) = old.filter(|o| Hostname::parse(o).is_ok()) {
        let mut undo = set(&old);
        undo.expect = Expect::Anything;
        p.rollback.push(undo);
    }
    Ok(p)
}

/// Take `old` out of every line that lists it, then add the guestd line for `new`.
pub fn patch_hosts(text: &str, old: Option<&str>, new: &Hostname) -> String {
    let wanted: Vec<&str> = if new.short() != new.as_str() {
        vec![new.as_str(), new.short()]
    } else {
        vec![new.as_str()]
    };
    let mut out = String::new();
    let mut present = false;
    for line in text.lines() {
        let (data, comment) = match line.find('#') {
            Some(i) => (&line[..i], &line[i..]),
            None => (line, ""),
        };
        let mut fields = data.split_whitespace();
        let Some(addr) = fields.next() else {
            out.push_str(line);
            out.push('\n');
            continue;
        };
        let names: Vec<&str> = fields.collect();
        if addr == "127.0.1.1" && names == wanted {
            if !present {
                present = true;
                out.push_str(line);
                out.push('\n');
            }
            continue;
        }
        let is_old = |n: &&str| {
            old.is_some_and(|o| {
                let short = o.split('.').next().unwrap_or(o);
                *n == o || *n == short || n.starts_with(&format!("{short}."))
            }) && !["localhost", "localhost.localdomain"].contains(n)
        };
        if !names.iter().any(is_old) {
            out.push_str(line);
            out.push('\n');
            continue;
        }
        let kept: Vec<&str> = names.iter().filter(|n| !is_old(n)).copied().collect();
        if !kept.is_empty() {
            let _ = writeln!(
                out,
                "{addr}\t{}{}",
                kept.join(" "),
                if comment.is_empty() {
                    String::new()
                } else {
                    format!(" {comment}")
                }
            );
        }
    }
    if !present {
        let _ = writeln!(out, "127.0.1.1\t{}", wanted.join(" "));
    }
    out
}

/// Whether guestd may write `/etc/resolv.conf` itself.
pub fn resolv_conf_unmanaged(root: &Root, manager_writes_it: bool) -> bool {
    if manager_writes_it || root.is_symlink(RESOLV_CONF) {
        return false;
    }
    let resolvconf = ["/sbin/resolvconf", "/usr/sbin/resolvconf"]
        .iter()
        .any(|p| root.exists(p));
    let resolved = root.is_dir("/run/systemd/resolve");
    !resolvconf && !resolved
}

/// `/etc/resolv.conf` with these servers; the user's `search`/`options` lines are kept.
pub fn resolv_conf(root: &Root, dns: &[IpAddr]) -> Result<FileChange, NetworkError> {
    let previous = read(root, RESOLV_CONF)?.unwrap_or_default();
    let mut s = hash_header();
    for line in previous.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        if matches!(first, "search" | "domain" | "options" | "sortlist") {
            let _ = writeln!(s, "{line}");
        }
    }
    // The resolver reads at most three servers.
    for d in dns.iter().take(3) {
        let _ = writeln!(s, "nameserver {d}");
    }
    Ok(FileChange::write(RESOLV_CONF, s, WriteOptions::mode(0o644)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_keeps_user_lines() {
        let before = "127.0.0.1\tlocalhost\n127.0.1.1\told.example.com old\n10.0.0.9 db old # pinned\n::1 localhost ip6-localhost\n";
        let after = patch_hosts(
            before,
            Some("old"),
            &Hostname::parse("web1.example.com").unwrap(),
        );
        assert_eq!(
            after,
            "127.0.0.1\tlocalhost\n10.0.0.9\tdb # pinned\n::1 localhost ip6-localhost\n127.0.1.1\tweb1.example.com web1\n"
        );
        // Idempotent.
        assert_eq!(
            patch_hosts(
                &after,
                Some("web1.example.com"),
                &Hostname::parse("web1.example.com").unwrap()
            ),
            after
        );
    }
}
