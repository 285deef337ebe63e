//! ifupdown (Debian) and busybox ifupdown (Alpine): `/etc/network/interfaces`.
//!
//! The stanzas of the interfaces guestd configures are replaced (in the main file and in any
//! `interfaces.d` file that defines them); every other line (loopback, bridges, `source`, the
//! user's comments) stays. Each address gets its own stanza (the form both ifupdown and busybox
//! accept); routes are `up`/`down` commands on the first stanza of their family. Restart per
//! affected interface: `ifdown -f`, flush its global addresses, `ifup`.
//!
//! Host text: the label goes only into a `# label:` comment, through
//! [`escape::informational`] (a newline there would start a stanza line such as `up …`, which
//! ifup runs as root); device names are checked (`check`) and typed values print as themselves.

use std::fmt::Write as _;

use guestd_core::{FileChange, Root, WriteOptions};

use super::{HEADER, RenderContext, Rendered, best_effort, escape, hash_header, ip_checks, must};
use crate::network::model::{Interface, Network, NetworkError};

pub const PATH: &str = "/etc/network/interfaces";
const DIR: &str = "/etc/network/interfaces.d";

/// Keywords that start a new stanza.
fn starts_stanza(word: &str) -> bool {
    matches!(
        word,
        "iface"
            | "mapping"
            | "auto"
            | "source"
            | "source-directory"
            | "source-dir"
            | "rename"
            | "no-auto-down"
            | "no-scripts"
    ) || word.starts_with("allow-")
}

/// Drop every stanza (and `auto`/`allow-*` mention) of the interfaces in `names`.
pub fn strip_interfaces(text: &str, names: &[&str]) -> String {
    let header: Vec<String> = HEADER.lines().map(|l| format!("# {l}")).collect();
    let mut out = String::new();
    let mut skipping = false;
    for line in text.lines() {
        if header.iter().any(|h| h == line.trim_end()) {
            continue;
        }
        let mut words = line.split_whitespace();
        let first = words.next().unwrap_or("");
        if starts_stanza(first) {
            skipping = false;
            if first == "iface" || first == "mapping" {
                if words.next().is_some_and(|n| names.contains(&n)) {
                    skipping = true;
                    drop_trailing_comments(&mut out);
                    continue;
                }
            } else if first == "auto"
                || first.starts_with("allow-")
                || first == "no-auto-down"
                || first == "no-scripts"
            {
                let rest: Vec<&str> = words.filter(|n| !names.contains(n)).collect();
                if rest.is_empty() {
                    drop_trailing_comments(&mut out);
                    continue;
                }
                let _ = writeln!(out, "{first} {}", rest.join(" "));
                continue;
            }
        } else if skipping && !first.is_empty() {
            continue;
        } else if skipping && first.is_empty() {
            skipping = false;
        }
        out.push_str(line);
        out.push('\n');
    }
    // Collapse the blank lines left behind.
    while out.contains("\n\n\n") {
        out = out.replace("\n\n\n", "\n\n");
    }
    out
}

/// Comments directly above a removed stanza describe it: they go with it.
fn drop_trailing_comments(out: &mut String) {
    loop {
        let body = out.strip_suffix('\n').unwrap_or(out);
        let start = body.rfind('\n').map_or(0, |i| i + 1);
        if body.is_empty() || !body[start..].trim_start().starts_with('#') {
            return;
        }
        out.truncate(start);
    }
}

fn stanzas(iface: &Interface) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "auto {}", iface.name);
    let v4: Vec<_> = iface.ipv4().collect();
    let v6: Vec<_> = iface.ipv6().collect();
    let dns: Vec<String> = iface.dns.iter().map(|d| d.to_string()).collect();
    let mut first = true;
    for (family, addrs) in [("inet", &v4), ("inet6", &v6)] {
        for (n, a) in addrs.iter().enumerate() {
            if !first {
                s.push('\n');
            }
            let _ = writeln!(s, "iface {} {family} static", iface.name);
            if let (true, Some(label)) = (first, &iface.label) {
                let _ = writeln!(s, "    # label: {}", escape::informational(label));
            }
            let _ = writeln!(s, "    address {}", a.addr);
            if a.is_ipv4() {
                let _ = writeln!(s, "    netmask {}", a.netmask_v4());
            } else {
                let _ = writeln!(s, "    netmask {}", a.prefix);
            }
            if n == 0 {
                let gw = if a.is_ipv4() {
                    iface.gateway4.map(|g| g.to_string())
                } else {
                    iface.gateway6.map(|g| g.to_string())
                };
                if let Some(g) = gw {
                    let _ = writeln!(s, "    gateway {g}");
                }
                for r in iface
                    .routes
                    .iter()
                    .filter(|r| r.dest.is_ipv4() == a.is_ipv4())
                {
                    let via = r.gateway.map(|g| format!(" via {g}")).unwrap_or_default();
                    let _ = writeln!(
                        s,
                        "    up ip route replace {}{via} dev {}",
                        r.dest, iface.name
                    );
                    let _ = writeln!(
                        s,
                        "    down ip route del {}{via} dev {} || true",
                        r.dest, iface.name
                    );
                }
            }
            if first && !dns.is_empty() {
                let _ = writeln!(s, "    dns-nameservers {}", dns.join(" "));
            }
            first = false;
        }
    }
    s
}

pub fn render(net: &Network, ctx: RenderContext<'_>) -> Result<Rendered, NetworkError> {
    let names: Vec<&str> = net.interfaces.iter().map(|i| i.name.as_str()).collect();
    let read = |path: &str| -> Result<Option<String>, NetworkError> { read_text(ctx.root, path) };
    let mut files = Vec::new();
    // interfaces.d files that define our interfaces lose those stanzas.
    if let Ok(entries) = ctx.root.read_dir(DIR) {
        for name in entries
            .iter()
            .filter(|n| !n.contains(".bak.") && !n.starts_with('.'))
        {
            let path = format!("{DIR}/{name}");
            if let Some(text) = read(&path)? {
                let kept = strip_interfaces(&text, &names);
                if kept != text {
                    let kept = kept.trim_start_matches('\n').to_string();
                    files.push(if kept.trim().is_empty() {
                        FileChange::Remove { path }
                    } else {
                        FileChange::write(path, kept, WriteOptions::default())
                    });
                }
            }
        }
    }
    let existing = read(PATH)?.unwrap_or_default();
    let mut text = hash_header();
    let kept = strip_interfaces(&existing, &names);
    if !kept
        .lines()
        .any(|l| l.split_whitespace().take(2).eq(["iface", "lo"]))
    {
        text.push_str("\nauto lo\niface lo inet loopback\n");
    }
    if !kept.trim().is_empty() {
        text.push('\n');
        text.push_str(kept.trim_matches('\n'));
        text.push('\n');
    }
    for iface in &net.interfaces {
        text.push('\n');
        text.push_str(&stanzas(iface));
    }
    let text = text.trim_end().to_string() + "\n";
    files.insert(0, FileChange::write(PATH, text, WriteOptions::mode(0o644)));

    let mut restart = Vec::new();
    for name in &names {
        restart.push(best_effort("ifdown", &["-f", name]));
        restart.push(best_effort(
            "ip",
            &["addr", "flush", "dev", name, "scope", "global"],
        ));
        restart.push(must("ifup", &[name]));
    }
    Ok(Rendered {
        manages_dns: ctx.root.exists("/sbin/resolvconf") || ctx.root.exists("/usr/sbin/resolvconf"),
        ..Rendered::restarting(files, restart, ip_checks(net))
    })
}

pub fn read_text(root: &Root, path: &str) -> Result<Option<String>, NetworkError> {
    root.read_optional(path)
        .map_err(|e| NetworkError::System(e.to_string()))?
        .map(|b| {
            String::from_utf8(b)
                .map_err(|_| NetworkError::System(format!("{path} is not UTF-8 text")))
        })
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_other_stanzas() {
        let text = "# mine\nsource /etc/network/interfaces.d/*\n\nauto lo eth0\niface lo inet loopback\n\nallow-hotplug eth0\niface eth0 inet dhcp\n    # a comment\n    hostname x\n\niface br0 inet static\n    address 10.9.9.9/24\n";
        let out = strip_interfaces(text, &["eth0"]);
        assert_eq!(
            out,
            "# mine\nsource /etc/network/interfaces.d/*\n\nauto lo\niface lo inet loopback\n\niface br0 inet static\n    address 10.9.9.9/24\n"
        );
    }
}
