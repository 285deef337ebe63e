//! The OS identity from `os-release` (and Debian's point release), and the host and domain
//! names, as XenCenter and XAPI expect them. Pure functions over file contents.

use std::collections::HashMap;

/// `os-release` as key/value pairs: shell-style assignments, values in double quotes (with
/// `\"`, `\\`, `\$` and `` \` `` escapes), single quotes or bare. Comments and malformed lines
/// are skipped.
pub fn parse(text: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((key, raw)) = line.split_once('=') else {
            continue;
        };
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            continue;
        }
        if let Some(value) = unquote(raw) {
            out.insert(key.to_string(), value);
        }
    }
    out
}

fn unquote(raw: &str) -> Option<String> {
    if let Some(inner) = raw.strip_prefix('"') {
        let inner = inner.strip_suffix('"')?;
        let mut out = String::with_capacity(inner.len());
        let mut chars = inner.chars();
        while let Some(c) = chars.next() {
            if c == '\\' {
                match chars.next() {
                    Some(e @ ('"' | '\\' | '$' | '`')) => out.push(e),
                    Some(other) => {
                        out.push('\\');
                        out.push(other);
                    }
                    None => out.push('\\'),
                }
            } else {
                out.push(c);
            }
        }
        Some(out)
    } else if let Some(inner) = raw.strip_prefix('\'') {
        inner.strip_suffix('\'').map(str::to_string)
    } else {
        Some(raw.to_string())
    }
}

/// The identity written to `data/os_*`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    pub distro: Option<String>,
    pub name: Option<String>,
    pub major: Option<String>,
    pub minor: Option<String>,
}

/// From `os-release` (and, on Debian, `/etc/debian_version`, which has the point release
/// `os-release` lacks).
pub fn identity(os_release: &str, debian_version: Option<&str>) -> Identity {
    let fields = parse(os_release);
    let distro = fields.get("ID").and_then(|id| distro_id(id));
    let name = fields
        .get("PRETTY_NAME")
        .filter(|n| !n.trim().is_empty())
        .cloned()
        .or_else(|| {
            let name = fields.get("NAME")?;
            Some(match fields.get("VERSION") {
                Some(v) if !v.is_empty() => format!("{name} {v}"),
                _ => name.clone(),
            })
        });
    let mut version = fields.get("VERSION_ID").and_then(|v| major_minor(v));
    if distro.as_deref() == Some("debian") {
        // os-release says "12"; debian_version says "12.5" (or "trixie/sid": no numbers).
        if let Some((major, minor)) = debian_version.and_then(major_minor) {
            if version.as_ref().is_none_or(|(m, _)| *m == major) {
                version = Some((major, minor));
            }
        }
    }
    let (major, minor) = match version {
        Some((major, minor)) => (Some(major), Some(minor)),
        None => (None, None),
    };
    Identity {
        distro,
        name,
        major,
        minor,
    }
}

/// `12.5` → (`12`, `5`); `12` → (`12`, `0`); anything not starting with digits → `None`.
fn major_minor(version: &str) -> Option<(String, String)> {
    let version = version.trim();
    let major: String = version.chars().take_while(char::is_ascii_digit).collect();
    if major.is_empty() {
        return None;
    }
    let rest = &version[major.len()..];
    let minor: String = rest
        .strip_prefix('.')
        .map(|r| r.chars().take_while(char::is_ascii_digit).collect())
        .unwrap_or_default();
    Some((major, if minor.is_empty() { "0".into() } else { minor }))
}

/// The `os-release` `ID` as the names XenCenter maps to icons and templates; other ids are
/// kept as they are when they are plain lower-case words.
pub fn distro_id(id: &str) -> Option<String> {
    let id = id.trim().to_ascii_lowercase();
    let known = match id.as_str() {
        "ol" => "oracle",
        "opensuse-leap" | "opensuse-tumbleweed" | "opensuse" => "opensuse",
        "sles" | "sled" | "sles_sap" => "sles",
        "rhel" => "rhel",
        _ => "",
    };
    if !known.is_empty() {
        return Some(known.to_string());
    }
    (!id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c)))
    .then_some(id)
}

/// The DNS domain `resolv.conf` names (`domain`, else the first `search` entry).
pub fn resolv_domain(resolv_conf: &str) -> Option<String> {
    let mut search = None;
    for line in resolv_conf.lines() {
        let mut words = line.split_whitespace();
        match words.next() {
            Some("domain") => {
                if let Some(d) = words.next().and_then(valid_domain) {
                    return Some(d);
                }
            }
            Some("search") if search.is_none() => search = words.next().and_then(valid_domain),
            _ => {}
        }
    }
    search
}

fn valid_domain(name: &str) -> Option<String> {
    let name = name.trim_end_matches('.');
    (name != "."
        && !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        }))
    .then(|| name.to_ascii_lowercase())
}

/// `data/host_name`, `data/host_name_dns` and `data/domain` from the OS's host name and a
/// domain it knows otherwise: a fully qualified host name brings its own domain.
pub fn host_names(
    hostname: &str,
    domain: Option<&str>,
) -> (Option<String>, Option<String>, Option<String>) {
    let hostname = hostname.trim().trim_end_matches('.');
    if hostname.is_empty() || hostname == "(none)" {
        return (None, None, None);
    }
    let (short, own_domain) = match hostname.split_once('.') {
        Some((short, rest)) => (short, valid_domain(rest)),
        None => (hostname, None),
    };
    let domain = own_domain.or_else(|| domain.and_then(valid_domain));
    let fqdn = match &domain {
        Some(d) => format!("{short}.{d}"),
        None => short.to_string(),
    };
    (Some(short.to_string()), Some(fqdn), domain)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEBIAN: &str = "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nNAME=\"Debian GNU/Linux\"\nVERSION_ID=\"12\"\nVERSION=\"12 (bookworm)\"\nID=debian\n";

    #[test]
    fn distributions() {
        let d = identity(DEBIAN, Some("12.5\n"));
        assert_eq!(d.distro.as_deref(), Some("debian"));
        assert_eq!(d.name.as_deref(), Some("Debian GNU/Linux 12 (bookworm)"));
        assert_eq!(
            (d.major.as_deref(), d.minor.as_deref()),
            (Some("12"), Some("5"))
        );
        // testing/sid: no point release, no numbers at all.
        let sid = identity(
            "ID=debian\nPRETTY_NAME=\"Debian GNU/Linux trixie/sid\"\n",
            Some("trixie/sid"),
        );
        assert_eq!((sid.major, sid.minor), (None, None));
        let rhel = identity(
            "NAME=\"Red Hat Enterprise Linux\"\nVERSION=\"9.3 (Plow)\"\nID=\"rhel\"\nVERSION_ID=\"9.3\"\n",
            None,
        );
        assert_eq!(rhel.distro.as_deref(), Some("rhel"));
        assert_eq!(
            rhel.name.as_deref(),
            Some("Red Hat Enterprise Linux 9.3 (Plow)")
        );
        assert_eq!(
            (rhel.major.as_deref(), rhel.minor.as_deref()),
            (Some("9"), Some("3"))
        );
        for (id, want) in [
            ("ol", Some("oracle")),
            ("opensuse-leap", Some("opensuse")),
            ("sles", Some("sles")),
            ("ubuntu", Some("ubuntu")),
            ("Alpine", Some("alpine")),
            ("almalinux", Some("almalinux")),
            ("bad id!", None),
            ("", None),
        ] {
            assert_eq!(distro_id(id).as_deref(), want, "{id}");
        }
        let alpine = identity(
            "ID=alpine\nVERSION_ID=3.19.1\nPRETTY_NAME=\"Alpine Linux v3.19\"\n",
            None,
        );
        assert_eq!(
            (alpine.major.as_deref(), alpine.minor.as_deref()),
            (Some("3"), Some("19"))
        );
        let fedora = identity("ID=fedora\nVERSION_ID=40\n", None);
        assert_eq!(fedora.minor.as_deref(), Some("0"));
        assert_eq!(identity("", None), Identity::default());
    }

    #[test]
    fn quoting_like_the_shell() {
        let f = parse(
            "# c\nA=\"x \\\"y\\\" \\$z\"\nB='a b'\nC=plain\nbad line\nD=\"unterminated\n=x\n",
        );
        assert_eq!(f["A"], "x \"y\" $z");
        assert_eq!(f["B"], "a b");
        assert_eq!(f["C"], "plain");
        assert!(!f.contains_key("D"));
        assert_eq!(f.len(), 3);
    }

    #[test]
    fn host_and_domain_names() {
        assert_eq!(
            host_names("web1", Some("example.com")),
            (
                Some("web1".into()),
                Some("web1.example.com".into()),
                Some("example.com".into())
            )
        );
        assert_eq!(
            host_names("web1.corp.example.", Some("other.org")),
            (
                Some("web1".into()),
                Some("web1.corp.example".into()),
                Some("corp.example".into())
            )
        );
        assert_eq!(
            host_names("web1", None),
            (Some("web1".into()), Some("web1".into()), None)
        );
        assert_eq!(host_names("", None), (None, None, None));
        assert_eq!(
            resolv_domain("nameserver 1.1.1.1\nsearch a.example b.example\n").as_deref(),
            Some("a.example")
        );
        assert_eq!(
            resolv_domain("search a.example\ndomain D.Example.\n").as_deref(),
            Some("d.example")
        );
        assert_eq!(resolv_domain("search .\n"), None);
        assert_eq!(resolv_domain("domain bad_name\n"), None);
    }
}
