//! The XenStore keys to publish, computed from what the guest knows: one map from path
//! (relative to the guest's home) to value, and nothing else. Pure, so every rule XAPI
//! depends on is tested here.
//!
//! - `attr/PVAddons/{Major,Minor,Micro,Build}Version`: decimal integers only (XAPI reads them
//!   with `int_of_string`; anything else reads as "no PV drivers"), `Installed = 1`.
//! - `data/os_*`, `data/host_name`, `data/host_name_dns`, `data/domain`: printable text, at
//!   most [`MAX_VALUE_BYTES`].
//! - `data/meminfo_total`, `data/meminfo_free`: KiB.
//! - `attr/vif/<devid>/ipv{4,6}/<n>` for the interfaces the OS ties to a vif (or whose MAC is
//!   a vif's), `xenserver/attr/net-sriov-vf/<id>/ipv{4,6}/<n>` for SR-IOV VFs matched by MAC;
//!   `n` counts from 0 in the OS's order, at most [`MAX_ADDRESSES_PER_FAMILY`] per family.
//! - `control/feature-*` = `1` for what this OS carries out.
//! - Never `data/volumes` (xenopsd avoids reading it).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use crate::facts::{Memory, Nic, OsFacts};

/// Addresses published per interface and family (XAPI shows them all; the guest's node quota
/// does not grow with the number of addresses an administrator adds).
pub const MAX_ADDRESSES_PER_FAMILY: usize = 10;
/// Longest text value written (a host name, an OS name).
pub const MAX_VALUE_BYTES: usize = 256;

/// Where plain vifs' addresses go.
pub const VIF_ROOT: &str = "attr/vif";
/// Where SR-IOV VFs' addresses go.
pub const SRIOV_ROOT: &str = "xenserver/attr/net-sriov-vf";
/// Where the toolstack lists SR-IOV VFs with their MACs.
pub const SRIOV_DEVICES: &str = "xenserver/device/net-sriov-vf";
/// Where the toolstack lists vifs (with their MACs).
pub const VIF_DEVICES: &str = "device/vif";
/// Written after every publication; XAPI reads the guest's data once it exists.
pub const UPDATED: &str = "data/updated";

/// The path-value pairs to publish.
pub type Keys = BTreeMap<String, String>;

/// The toolstack's devices an interface can be matched to by MAC (read from XenStore).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceMacs {
    /// `device/vif/<devid>/mac`.
    pub vifs: Vec<(u32, [u8; 6])>,
    /// `xenserver/device/net-sriov-vf/<id>/mac`.
    pub sriov: Vec<(String, [u8; 6])>,
}

/// Everything the keys are made of.
#[derive(Debug, Clone)]
pub struct Inputs<'a> {
    pub os: &'a OsFacts,
    pub memory: Option<Memory>,
    pub nics: &'a [Nic],
    pub devices: &'a DeviceMacs,
    /// `control/` feature names to announce.
    pub features: &'a [&'a str],
}

/// guestd's version as XAPI's `PV_drivers_version` wants it: four decimal integers.
pub fn pv_version() -> [(&'static str, String); 4] {
    let mut parts = env!("CARGO_PKG_VERSION")
        .split(['.', '-', '+'])
        .map(|p| p.parse::<u64>().unwrap_or(0));
    let mut next = || parts.next().unwrap_or(0).to_string();
    let (major, minor, micro) = (next(), next(), next());
    let build = option_env!("GUESTD_BUILD_NUMBER")
        .and_then(|b| b.trim().parse::<u64>().ok())
        .unwrap_or(0)
        .to_string();
    [
        ("MajorVersion", major),
        ("MinorVersion", minor),
        ("MicroVersion", micro),
        ("BuildVersion", build),
    ]
}

/// Printable text for a value: control characters dropped, at most [`MAX_VALUE_BYTES`] bytes
/// (cut at a character boundary), `None` when nothing is left.
pub fn clean(text: &str) -> Option<String> {
    let mut out = String::new();
    for c in text.trim().chars().filter(|c| !c.is_control()) {
        if out.len() + c.len_utf8() > MAX_VALUE_BYTES {
            break;
        }
        out.push(c);
    }
    let out = out.trim_end().to_string();
    (!out.is_empty()).then_some(out)
}

/// Where an interface's addresses are published.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Target {
    Vif(u32),
    Sriov(String),
}

impl Target {
    pub fn path(&self) -> String {
        match self {
            Target::Vif(id) => format!("{VIF_ROOT}/{id}"),
            Target::Sriov(id) => format!("{SRIOV_ROOT}/{id}"),
        }
    }
}

/// Which target each interface is published under: the OS's own tie first, then a vif's MAC,
/// then an SR-IOV VF's MAC; one interface per target (the OS's tie wins, then the first
/// interface by name). Unmatched interfaces (loopback, bridges, VLANs) are left out.
pub fn targets<'a>(nics: &'a [Nic], devices: &DeviceMacs) -> Vec<(Target, &'a Nic)> {
    let mut sorted: Vec<&Nic> = nics.iter().collect();
    sorted.sort_by(|a, b| (a.vif.is_none(), &a.name).cmp(&(b.vif.is_none(), &b.name)));
    let mut taken = BTreeSet::new();
    let mut out = Vec::new();
    for nic in sorted {
        let target = nic
            .vif
            .map(Target::Vif)
            .or_else(|| by_mac(nic, &devices.vifs).map(Target::Vif))
            .or_else(|| by_mac(nic, &devices.sriov).map(Target::Sriov));
        if let Some(target) = target {
            if taken.insert(target.clone()) {
                out.push((target, nic));
            }
        }
    }
    out
}

fn by_mac<T: Clone>(nic: &Nic, list: &[(T, [u8; 6])]) -> Option<T> {
    let mac = nic.mac?;
    list.iter()
        .find(|(_, m)| *m == mac)
        .map(|(id, _)| id.clone())
}

/// Every key to publish.
pub fn desired(inputs: &Inputs<'_>) -> Keys {
    let mut keys = Keys::new();
    let mut put = |path: &str, value: Option<String>| {
        if let Some(v) = value {
            keys.insert(path.to_string(), v);
        }
    };
    put("attr/PVAddons/Installed", Some("1".into()));
    for (name, value) in pv_version() {
        put(&format!("attr/PVAddons/{name}"), Some(value));
    }
    let os = inputs.os;
    put("data/os_distro", os.distro.as_deref().and_then(clean));
    put("data/os_name", os.name.as_deref().and_then(clean));
    put("data/os_majorver", os.major.as_deref().and_then(clean));
    put("data/os_minorver", os.minor.as_deref().and_then(clean));
    put("data/os_uname", os.uname.as_deref().and_then(clean));
    if let Some(hostname) = &os.hostname {
        let (short, fqdn, domain) = crate::os_release::host_names(hostname, os.domain.as_deref());
        put("data/host_name", short.as_deref().and_then(clean));
        put("data/host_name_dns", fqdn.as_deref().and_then(clean));
        put("data/domain", domain.as_deref().and_then(clean));
    }
    if let Some(m) = inputs.memory {
        put("data/meminfo_total", Some(m.total_kib.to_string()));
        put(
            "data/meminfo_free",
            Some(m.free_kib.min(m.total_kib).to_string()),
        );
    }
    for (target, nic) in targets(inputs.nics, inputs.devices) {
        let base = target.path();
        let v4 = nic.addresses.iter().filter(|a| a.is_ipv4());
        let v6 = nic.addresses.iter().filter(|a| a.is_ipv6());
        for (family, list) in [("ipv4", v4.collect::<Vec<_>>()), ("ipv6", v6.collect())] {
            let mut seen = BTreeSet::new();
            let unique = list.into_iter().filter(|a| seen.insert(**a));
            for (n, addr) in unique.take(MAX_ADDRESSES_PER_FAMILY).enumerate() {
                put(&format!("{base}/{family}/{n}"), Some(show(addr)));
            }
        }
    }
    for feature in inputs.features {
        put(&format!("control/{feature}"), Some("1".into()));
    }
    keys
}

/// Addresses as `ip addr` shows them (IPv6 compressed, lower case).
fn show(addr: &IpAddr) -> String {
    addr.to_string()
}

/// Whether `path` is below one of the subtrees whose children guestd owns entirely (a vif's
/// address lists), so that what is there and not desired can be removed.
pub fn in_owned_subtree(path: &str) -> bool {
    path.starts_with(&format!("{VIF_ROOT}/")) || path.starts_with(&format!("{SRIOV_ROOT}/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nic(name: &str, vif: Option<u32>, mac: Option<[u8; 6]>, addrs: &[&str]) -> Nic {
        Nic {
            name: name.into(),
            mac,
            vif,
            addresses: addrs.iter().map(|a| a.parse().unwrap()).collect(),
        }
    }

    #[test]
    fn pv_versions_are_integers() {
        for (_, v) in pv_version() {
            v.parse::<u64>().expect("decimal integer");
        }
    }

    #[test]
    fn everything_xapi_reads() {
        let os = OsFacts {
            distro: Some("debian".into()),
            name: Some("Debian GNU/Linux 12 (bookworm)".into()),
            major: Some("12".into()),
            minor: Some("5".into()),
            uname: Some("6.1.0-18-amd64".into()),
            hostname: Some("web1".into()),
            domain: Some("example.com".into()),
        };
        let nics = [
            nic(
                "eth0",
                Some(0),
                None,
                &["192.0.2.10", "2001:db8::10", "192.0.2.11", "fe80::1"],
            ),
            nic("eth1", Some(3), None, &["198.51.100.7"]),
            nic("br0", None, Some([2, 0, 0, 0, 0, 1]), &["10.9.9.9"]),
        ];
        let keys = desired(&Inputs {
            os: &os,
            memory: Some(Memory {
                total_kib: 2048000,
                free_kib: 1024000,
            }),
            nics: &nics,
            devices: &DeviceMacs::default(),
            features: &["feature-balloon", "feature-shutdown"],
        });
        let get = |k: &str| keys.get(k).map(String::as_str);
        assert_eq!(get("attr/PVAddons/Installed"), Some("1"));
        assert_eq!(get("data/os_distro"), Some("debian"));
        assert_eq!(get("data/host_name"), Some("web1"));
        assert_eq!(get("data/host_name_dns"), Some("web1.example.com"));
        assert_eq!(get("data/domain"), Some("example.com"));
        assert_eq!(get("data/meminfo_free"), Some("1024000"));
        assert_eq!(get("attr/vif/0/ipv4/0"), Some("192.0.2.10"));
        assert_eq!(get("attr/vif/0/ipv4/1"), Some("192.0.2.11"));
        assert_eq!(get("attr/vif/0/ipv6/0"), Some("2001:db8::10"));
        assert_eq!(get("attr/vif/0/ipv6/1"), Some("fe80::1"));
        assert_eq!(get("attr/vif/3/ipv4/0"), Some("198.51.100.7"));
        assert_eq!(get("control/feature-balloon"), Some("1"));
        assert!(
            keys.keys()
                .all(|k| !k.contains("10.9.9.9") && !k.starts_with("data/volumes"))
        );
        assert!(
            !keys.values().any(|v| v == "10.9.9.9"),
            "the bridge matches no vif"
        );
    }

    #[test]
    fn caps_per_family_and_duplicates() {
        let many: Vec<String> = (0..500)
            .map(|i| format!("10.{}.{}.1", i / 256, i % 256))
            .chain((0..30).map(|i| format!("2001:db8::{i:x}")))
            .chain(["10.0.0.1".to_string()])
            .collect();
        let refs: Vec<&str> = many.iter().map(String::as_str).collect();
        let nics = [nic("eth0", Some(0), None, &refs)];
        let keys = desired(&Inputs {
            os: &OsFacts::default(),
            memory: None,
            nics: &nics,
            devices: &DeviceMacs::default(),
            features: &[],
        });
        let v4 = keys
            .keys()
            .filter(|k| k.starts_with("attr/vif/0/ipv4/"))
            .count();
        let v6 = keys
            .keys()
            .filter(|k| k.starts_with("attr/vif/0/ipv6/"))
            .count();
        assert_eq!(
            (v4, v6),
            (MAX_ADDRESSES_PER_FAMILY, MAX_ADDRESSES_PER_FAMILY)
        );
        assert_eq!(keys["attr/vif/0/ipv4/9"], "10.0.9.1");
    }

    #[test]
    fn matching_by_mac() {
        let vf_mac = [0, 0x16, 0x3e, 0, 0, 9];
        let vif_mac = [0, 0x16, 0x3e, 0, 0, 1];
        let devices = DeviceMacs {
            vifs: vec![(2, vif_mac)],
            sriov: vec![("0".into(), vf_mac)],
        };
        let nics = [
            nic("Ethernet 2", None, Some(vif_mac), &["192.0.2.2"]),
            nic("ens5", None, Some(vf_mac), &["192.0.2.9"]),
            nic("ens5.10", None, Some(vf_mac), &["192.0.2.10"]),
            nic("eth0", Some(2), None, &["192.0.2.1"]),
        ];
        let t = targets(&nics, &devices);
        let names: Vec<(Target, &str)> = t
            .iter()
            .map(|(t, n)| (t.clone(), n.name.as_str()))
            .collect();
        assert_eq!(
            names,
            [
                (Target::Vif(2), "eth0"),
                (Target::Sriov("0".into()), "ens5")
            ],
            "the OS's own tie wins over a MAC; one interface per target"
        );
        let keys = desired(&Inputs {
            os: &OsFacts::default(),
            memory: None,
            nics: &nics,
            devices: &devices,
            features: &[],
        });
        assert_eq!(keys["xenserver/attr/net-sriov-vf/0/ipv4/0"], "192.0.2.9");
        assert_eq!(keys["attr/vif/2/ipv4/0"], "192.0.2.1");
    }

    #[test]
    fn values_are_cleaned() {
        assert_eq!(clean("  a\tb\nc\u{7f} "), Some("abc".into()));
        assert_eq!(clean("\n\t"), None);
        let long = "é".repeat(300);
        let cut = clean(&long).unwrap();
        assert!(cut.len() <= MAX_VALUE_BYTES && cut.len() >= MAX_VALUE_BYTES - 1);
        let os = OsFacts {
            name: Some("evil\nname".into()),
            hostname: Some("(none)".into()),
            ..Default::default()
        };
        let keys = desired(&Inputs {
            os: &os,
            memory: None,
            nics: &[],
            devices: &DeviceMacs::default(),
            features: &[],
        });
        assert_eq!(keys["data/os_name"], "evilname");
        assert!(!keys.contains_key("data/host_name"));
    }
}
