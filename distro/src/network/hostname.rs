//! Hostname and resolver files, without touching the network.
//!
//! - the family's hostname file (`/etc/hostname`; Gentoo `/etc/conf.d/hostname`), then
//!   `hostnamectl set-hostname` when systemd runs (`/run/systemd/system`), else `hostname`;
//! - `/etc/hosts` ([`patch_hosts`]): where a line lists the old name (the old FQDN or short name
//!   as a whole name, any case), the new `<fqdn> <short>` take its place; when no line names the
//!   new host, `127.0.1.1 <fqdn> <short>` is added. Everything else, comments, blanks and other
//!   names included, stays byte for byte; the loopback names (`localhost`, …) are never renamed;
//! - `/etc/resolv.conf` only when nothing manages it: not a symlink (systemd-resolved,
//!   resolvconf, NetworkManager), no resolvconf installed, and a manager that does not write it.

use std::fmt::Write as _;
use std::net::IpAddr;

use guestd_core::{FileChange, PlannedProcess, Root, WriteOptions, plan::Expect};

use super::model::{Hostname, NetworkError};
use super::render::{hash_header, set_hostname};
use crate::OsFamily;

pub const HOSTS: &str = "/etc/hosts";
pub const RESOLV_CONF: &str = "/etc/resolv.conf";

/// Files and commands that set the hostname.
#[derive(Debug, Default)]
pub struct HostnamePlan {
    pub files: Vec<FileChange>,
    pub commands: Vec<PlannedProcess>,
    pub rollback: Vec<PlannedProcess>,
    /// Whether anything differs from the current state.
    pub changed: bool,
}

fn read(root: &Root, path: &str) -> Result<Option<String>, NetworkError> {
    root.read_optional(path)
        .map_err(|e| NetworkError::System(e.to_string()))
        .map(|b| b.map(|b| String::from_utf8_lossy(&b).into_owned()))
}

/// The hostname file of a family.
fn hostname_path(family: OsFamily) -> &'static str {
    match family {
        OsFamily::Gentoo => "/etc/conf.d/hostname",
        _ => "/etc/hostname",
    }
}

/// The hostname file's content for `name` (Gentoo's file is sourced by `sh`; a `Hostname` is
/// plain text there, quoted all the same through the one shell quoting function).
fn hostname_contents(family: OsFamily, name: &Hostname) -> Result<String, NetworkError> {
    Ok(match family {
        OsFamily::Gentoo => format!(
            "hostname={}\n",
            super::render::escape::sh_quote("hostname", name.as_str())?
        ),
        _ => format!("{name}\n"),
    })
}

/// The current static hostname from the family's file.
pub fn current(root: &Root, family: OsFamily) -> Result<Option<String>, NetworkError> {
    let path = hostname_path(family);
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
    let path = hostname_path(family);
    let mut contents = hostname_contents(family, name)?;
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
            set_hostname("hostnamectl", &["set-hostname", n])
        } else {
            set_hostname("hostname", &[n])
        }
    };
    p.commands.push(set(name.as_str()));
    p.rollback.extend(restore(old.as_deref(), set));
    Ok(p)
}

/// The rollback that gives the running system its `old` name back (best effort), when the old
/// name is one a command may be given.
pub fn restore(old: Option<&str>, set: impl Fn(&str) -> PlannedProcess) -> Option<PlannedProcess> {
    let old = old.filter(|o| Hostname::parse(o).is_ok())?;
    let mut undo = set(old);
    undo.expect = Expect::Anything;
    Some(undo)
}

/// Names no rename touches, whatever the old hostname was.
const LOOPBACK_NAMES: [&str; 4] = [
    "localhost",
    "localhost.localdomain",
    "ip6-localhost",
    "ip6-loopback",
];

/// One `/etc/hosts` line in spans that give it back byte for byte: `head` up to the end of the
/// address, each name with the blanks before it, and `tail` (blanks, comment, line end).
struct HostsLine<'a> {
    head: &'a str,
    names: Vec<(&'a str, &'a str)>,
    tail: &'a str,
}

/// `None` for a line without an address (blank, comment only).
fn split_hosts_line(line: &str) -> Option<HostsLine<'_>> {
    let data = &line[..line.find('#').unwrap_or(line.len())];
    let mut tokens = Vec::new();
    let mut start = None;
    for (i, c) in data.char_indices() {
        match (c.is_ascii_whitespace(), start) {
            (true, Some(s)) => {
                tokens.push((s, i));
                start = None;
            }
            (false, None) => start = Some(i),
            _ => {}
        }
    }
    if let Some(s) = start {
        tokens.push((s, data.len()));
    }
    let (&(_, addr_end), rest) = tokens.split_first()?;
    let mut names = Vec::new();
    let mut prev = addr_end;
    for &(s, e) in rest {
        names.push((&line[prev..s], &line[s..e]));
        prev = e;
    }
    Some(HostsLine {
        head: &line[..addr_end],
        names,
        tail: &line[prev..],
    })
}

fn same_name(a: &str, b: &str) -> bool {
    a.eq_ignore_ascii_case(b)
}

/// The names `old` went by in `text`: its FQDN and short name; when only the short name is
/// known, also the canonical name of a line that lists it as `<short>.<domain>` (what
/// `hostname -f` found). Never a loopback name.
fn old_names(text: &str, old: Option<&str>) -> Vec<String> {
    let Some(old) = old.and_then(|o| Hostname::parse(o).ok()) else {
        return Vec::new();
    };
    let mut names = vec![old.as_str().to_string()];
    if old.short() != old.as_str() {
        names.push(old.short().to_string());
    } else {
        let prefix = format!("{}.", old.short());
        for line in text.lines() {
            let Some(parsed) = split_hosts_line(line) else {
                continue;
            };
            let Some(&(_, canonical)) = parsed.names.first() else {
                continue;
            };
            let lists_old = parsed.names.iter().any(|(_, n)| same_name(n, old.short()));
            let in_domain = canonical.len() > prefix.len()
                && canonical
                    .get(..prefix.len())
                    .is_some_and(|p| same_name(p, &prefix));
            if lists_old && in_domain && !names.iter().any(|n| same_name(n, canonical)) {
                names.push(canonical.to_string());
            }
        }
    }
    names.retain(|n| !LOOPBACK_NAMES.iter().any(|l| same_name(l, n)));
    names
}

/// Rename `old` to `new` in `/etc/hosts` text (see the module doc).
pub fn patch_hosts(text: &str, old: Option<&str>, new: &Hostname) -> String {
    let new_names: Vec<&str> = if new.short() != new.as_str() {
        vec![new.as_str(), new.short()]
    } else {
        vec![new.as_str()]
    };
    let old = old_names(text, old);
    let is_old = |n: &str| old.iter().any(|o| same_name(o, n));
    let mut out = String::with_capacity(text.len() + 64);
    for line in text.split_inclusive('\n') {
        let Some(parsed) =
            split_hosts_line(line).filter(|p| p.names.iter().any(|(_, n)| is_old(n)))
        else {
            out.push_str(line);
            continue;
        };
        let kept: Vec<&str> = parsed
            .names
            .iter()
            .map(|(_, n)| *n)
            .filter(|n| !is_old(n))
            .collect();
        out.push_str(parsed.head);
        let mut replaced = false;
        for (blank, name) in &parsed.names {
            if !is_old(name) {
                out.push_str(blank);
                out.push_str(name);
                continue;
            }
            // The first old name becomes the new names; any further old name goes.
            if std::mem::replace(&mut replaced, true) {
                continue;
            }
            let fresh = new_names
                .iter()
                .filter(|n| !kept.iter().any(|k| same_name(k, n)));
            for (i, n) in fresh.enumerate() {
                out.push_str(if i == 0 { blank } else { " " });
                out.push_str(n);
            }
        }
        out.push_str(parsed.tail);
    }
    let present = out.lines().any(|line| {
        split_hosts_line(line)
            .is_some_and(|p| p.names.iter().any(|(_, n)| same_name(n, new.as_str())))
    });
    if !present {
        if !out.is_empty() && !out.ends_with('\n') {
            out.push('\n');
        }
        let _ = writeln!(out, "127.0.1.1\t{}", new_names.join(" "));
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

    fn patched(before: &str, old: Option<&str>, new: &str) -> String {
        patch_hosts(before, old, &Hostname::parse(new).unwrap())
    }

    #[test]
    fn hosts_renames_exact_names_only() {
        // (before, old hostname, new hostname, after)
        let cases: &[(&str, Option<&str>, &str, &str)] = &[
            // Debian's line, renamed in place; other lines untouched byte for byte.
            (
                "127.0.0.1\tlocalhost\n127.0.1.1\tdebian\n\n# IPv6\n::1     localhost ip6-localhost ip6-loopback\n",
                Some("debian"),
                "web1",
                "127.0.0.1\tlocalhost\n127.0.1.1\tweb1\n\n# IPv6\n::1     localhost ip6-localhost ip6-loopback\n",
            ),
            // The old FQDN and its short name as whole names; a name that merely starts
            // with the short name and a dot is another host.
            (
                "127.0.1.1 web.example.com web\n10.1.1.1\tweb.internal.corp  # db\n",
                Some("web.example.com"),
                "db1.example.net",
                "127.0.1.1 db1.example.net db1\n10.1.1.1\tweb.internal.corp  # db\n",
            ),
            // Only the short name known: its FQDN is the canonical name of the line listing
            // it; web.internal.corp is still another host.
            (
                "127.0.1.1 web.example.com web\n10.1.1.1\tweb.internal.corp\n",
                Some("web"),
                "db1",
                "127.0.1.1 db1\n10.1.1.1\tweb.internal.corp\n",
            ),
            // The old name as an alias of another address, between other names, with tabs
            // and a comment that must stay as it is; any case.
            (
                "10.0.0.9\tdb\tWEB\tcache # pinned by ops\n",
                Some("web"),
                "api.example.com",
                "10.0.0.9\tdb\tapi.example.com api\tcache # pinned by ops\n",
            ),
            // IPv6 lines; a comment naming the old host is not a name.
            (
                "# web is the frontend\n2001:db8::5 web.example.com web\nfe80::1%eth0 router\n",
                Some("web.example.com"),
                "web2.example.com",
                "# web is the frontend\n2001:db8::5 web2.example.com web2\nfe80::1%eth0 router\n",
            ),
            // New names already on the line are not repeated.
            ("127.0.1.1 old new\n", Some("old"), "new", "127.0.1.1 new\n"),
            // Loopback names are never renamed, whatever the old hostname was; no newline at
            // the end of the file.
            (
                "127.0.0.1 localhost.localdomain localhost",
                Some("localhost.localdomain"),
                "web1",
                "127.0.0.1 localhost.localdomain localhost\n127.0.1.1\tweb1\n",
            ),
            // No old name: one line added, nothing else touched (CRLF kept).
            (
                "127.0.0.1 localhost\r\n",
                None,
                "web1.example.com",
                "127.0.0.1 localhost\r\n127.0.1.1\tweb1.example.com web1\n",
            ),
            // An invalid old name from the hostname file matches nothing.
            (
                "10.0.0.1 a*b\n",
                Some("a*b"),
                "web1",
                "10.0.0.1 a*b\n127.0.1.1\tweb1\n",
            ),
            // The new name already mapped elsewhere: no second line.
            (
                "203.0.113.5 web1.example.com web1\n",
                Some("web0"),
                "web1.example.com",
                "203.0.113.5 web1.example.com web1\n",
            ),
        ];
        for (before, old, new, after) in cases {
            assert_eq!(
                &patched(before, *old, new),
                after,
                "{before:?} {old:?} → {new}"
            );
            // Idempotent: the same rename again changes nothing.
            assert_eq!(&patched(after, Some(new), new), after, "again: {after:?}");
        }
    }
}
