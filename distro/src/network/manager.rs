//! Which network manager owns the guest's interfaces: detected from what is installed *and*
//! enabled, not only from the distro family; the configuration can override it.

use std::fmt;

use guestd_core::Root;

use super::model::NetworkError;
use crate::OsFamily;

/// The network managers guestd renders for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NetworkTool {
    /// Ubuntu's netplan (`/etc/netplan/*.yaml`), rendered by networkd or NetworkManager.
    Netplan,
    /// NetworkManager keyfiles (`/etc/NetworkManager/system-connections`).
    NetworkManager,
    /// systemd-networkd (`/etc/systemd/network/*.network`).
    Networkd,
    /// ifupdown / busybox (`/etc/network/interfaces`): Debian, Alpine.
    Ifupdown,
    /// RHEL initscripts (`/etc/sysconfig/network-scripts/ifcfg-*`, `route-*`).
    NetworkScripts,
    /// SUSE wicked (`/etc/sysconfig/network/ifcfg-*`, `ifroute-*`).
    Wicked,
    /// Gentoo netifrc (`/etc/conf.d/net`).
    Netifrc,
    /// FreeBSD `/etc/rc.conf`.
    FreeBsd,
    /// Windows `netsh`.
    Windows,
}

impl NetworkTool {
    pub const ALL: [NetworkTool; 9] = [
        Self::Netplan,
        Self::NetworkManager,
        Self::Networkd,
        Self::Ifupdown,
        Self::NetworkScripts,
        Self::Wicked,
        Self::Netifrc,
        Self::FreeBsd,
        Self::Windows,
    ];

    /// The name used in the configuration (`network.manager`) and logs.
    pub fn name(self) -> &'static str {
        match self {
            Self::Netplan => "netplan",
            Self::NetworkManager => "networkmanager",
            Self::Networkd => "networkd",
            Self::Ifupdown => "ifupdown",
            Self::NetworkScripts => "network-scripts",
            Self::Wicked => "wicked",
            Self::Netifrc => "netifrc",
            Self::FreeBsd => "freebsd",
            Self::Windows => "windows",
        }
    }

    /// Parse a configured name (case-insensitive; a few common aliases).
    pub fn from_name(name: &str) -> Result<Self, NetworkError> {
        let n = name.trim().to_ascii_lowercase();
        let alias = match n.as_str() {
            "nm" | "network-manager" => "networkmanager",
            "systemd-networkd" => "networkd",
            "ifcfg" | "initscripts" | "rhel" => "network-scripts",
            "rc.conf" | "rcconf" => "freebsd",
            "netsh" => "windows",
            other => other,
        };
        Self::ALL
            .into_iter()
            .find(|m| m.name() == alias)
            .ok_or_else(|| {
                let known: Vec<_> = Self::ALL.iter().map(|m| m.name()).collect();
                NetworkError::System(format!(
                    "unknown network manager '{name}' (known: {})",
                    known.join(", ")
                ))
            })
    }

    /// Detect the manager in use on the system under `root`.
    pub fn detect(root: &Root, family: OsFamily) -> Result<Self, NetworkError> {
        match family {
            OsFamily::Windows => return Ok(Self::Windows),
            OsFamily::FreeBsd => return Ok(Self::FreeBsd),
            _ => {}
        }
        let has_files = |dir: &str, ext: &str| {
            root.read_dir(dir)
                .is_ok_and(|names| names.iter().any(|n| n.ends_with(ext)))
        };
        // netplan generates the other managers' files: it wins whenever it is configured.
        if has_files("/etc/netplan", ".yaml") || has_files("/etc/netplan", ".yml") {
            return Ok(Self::Netplan);
        }
        // On Debian, NetworkManager leaves alone the interfaces /etc/network/interfaces
        // configures (its ifupdown plugin's managed=false): those belong to ifupdown.
        if root.exists("/etc/network/interfaces") && configures_non_loopback(root) {
            return Ok(Self::Ifupdown);
        }
        if enabled(root, "NetworkManager") || root.is_dir("/run/NetworkManager") {
            return Ok(Self::NetworkManager);
        }
        if enabled(root, "systemd-networkd") || root.is_dir("/run/systemd/netif") {
            return Ok(Self::Networkd);
        }
        if family == OsFamily::Suse && (enabled(root, "wicked") || root.exists("/usr/sbin/wicked"))
        {
            return Ok(Self::Wicked);
        }
        if root.is_dir("/etc/sysconfig/network-scripts")
            && (root.exists("/etc/sysconfig/network-scripts/ifup-eth")
                || root.exists("/usr/sbin/ifup") && family == OsFamily::RedHat)
        {
            return Ok(Self::NetworkScripts);
        }
        if root.exists("/etc/init.d/net.lo") || family == OsFamily::Gentoo {
            return Ok(Self::Netifrc);
        }
        if root.exists("/etc/network/interfaces") {
            return Ok(Self::Ifupdown);
        }
        match family {
            OsFamily::Debian | OsFamily::Alpine => Ok(Self::Ifupdown),
            OsFamily::RedHat => Ok(Self::NetworkManager),
            OsFamily::Suse => Ok(Self::Wicked),
            OsFamily::Arch => Ok(Self::Networkd),
            _ => Err(NetworkError::System(
                "cannot tell which network manager this system uses; set network.manager in the configuration"
                    .into(),
            )),
        }
    }
}

impl fmt::Display for NetworkTool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Whether `/etc/network/interfaces` has an `iface` stanza other than the loopback's.
fn configures_non_loopback(root: &Root) -> bool {
    root.read_to_string("/etc/network/interfaces")
        .is_ok_and(|text| {
            text.lines().any(|l| {
                let mut w = l.split_whitespace();
                w.next() == Some("iface") && w.next().is_some_and(|n| n != "lo")
            })
        })
}

/// Whether a systemd unit is enabled (a `*.wants` symlink under `/etc/systemd/system`).
fn enabled(root: &Root, unit: &str) -> bool {
    let service = format!("{unit}.service");
    root.read_dir("/etc/systemd/system").is_ok_and(|dirs| {
        dirs.iter().filter(|d| d.ends_with(".wants")).any(|d| {
            root.exists(format!("/etc/systemd/system/{d}/{service}"))
                || root.is_symlink(format!("/etc/systemd/system/{d}/{service}"))
        })
    })
}

#[cfg(all(test, unix))]
#[allow(clippy::disallowed_methods)] // tests build their trees by path
mod tests {
    use super::*;

    fn tree(files: &[&str]) -> (tempfile::TempDir, Root) {
        let d = tempfile::tempdir().unwrap();
        for f in files {
            let p = d.path().join(f.trim_start_matches('/'));
            if f.ends_with('/') {
                std::fs::create_dir_all(&p).unwrap();
            } else {
                std::fs::create_dir_all(p.parent().unwrap()).unwrap();
                std::fs::write(&p, "").unwrap();
            }
        }
        let root = Root::sandbox(d.path()).unwrap();
        (d, root)
    }

    #[test]
    fn detects_what_is_in_use() {
        use OsFamily::*;
        let cases: &[(&[&str], OsFamily, NetworkTool)] = &[
            (
                &["/etc/netplan/50-cloud-init.yaml", "/etc/network/interfaces"],
                Debian,
                NetworkTool::Netplan,
            ),
            (
                &[
                    "/etc/systemd/system/multi-user.target.wants/NetworkManager.service",
                    "/etc/sysconfig/network-scripts/ifup-eth",
                ],
                RedHat,
                NetworkTool::NetworkManager,
            ),
            (
                &["/etc/sysconfig/network-scripts/ifup-eth"],
                RedHat,
                NetworkTool::NetworkScripts,
            ),
            (
                &[
                    "/etc/systemd/system/multi-user.target.wants/systemd-networkd.service",
                    "/etc/network/interfaces",
                ],
                Debian,
                NetworkTool::Networkd,
            ),
            (&["/etc/network/interfaces"], Debian, NetworkTool::Ifupdown),
            (&["/etc/network/interfaces"], Alpine, NetworkTool::Ifupdown),
            (
                &["/usr/sbin/wicked", "/etc/sysconfig/network/"],
                Suse,
                NetworkTool::Wicked,
            ),
            (&["/etc/init.d/net.lo"], Gentoo, NetworkTool::Netifrc),
            (&[], FreeBsd, NetworkTool::FreeBsd),
            (&[], Windows, NetworkTool::Windows),
            (&[], Arch, NetworkTool::Networkd),
        ];
        for (files, family, want) in cases {
            let (_d, root) = tree(files);
            assert_eq!(
                NetworkTool::detect(&root, *family).unwrap(),
                *want,
                "{files:?}"
            );
        }
        let (d, root) =
            tree(&["/etc/systemd/system/multi-user.target.wants/NetworkManager.service"]);
        std::fs::create_dir_all(d.path().join("etc/network")).unwrap();
        std::fs::write(
            d.path().join("etc/network/interfaces"),
            "auto lo\niface lo inet loopback\nauto eth0\niface eth0 inet dhcp\n",
        )
        .unwrap();
        assert_eq!(
            NetworkTool::detect(&root, Debian).unwrap(),
            NetworkTool::Ifupdown
        );
        let (_d, root) = tree(&[]);
        assert!(NetworkTool::detect(&root, Unknown).is_err());
    }

    #[test]
    fn names_round_trip() {
        for m in NetworkTool::ALL {
            assert_eq!(NetworkTool::from_name(m.name()).unwrap(), m);
        }
        assert_eq!(
            NetworkTool::from_name("NM").unwrap(),
            NetworkTool::NetworkManager
        );
        assert!(
            NetworkTool::from_name("bogus")
                .unwrap_err()
                .to_string()
                .starts_with("unknown network manager 'bogus' (known: netplan, ")
        );
    }
}
