//! The OpenStack config drive source: `openstack/latest/network_data.json` (links, networks,
//! services) and `meta_data.json` (hostname) on a filesystem labelled `config-2`.
//!
//! The drive is found as: a directory given in the configuration; else the mount point of
//! `/dev/disk/by-label/config-2` in `/proc/mounts`; else that device is mounted read-only on
//! `/run/guestd/config-drive` for the read and unmounted again. Static networks (`ipv4`,
//! `ipv6`) are used; DHCP/SLAAC networks and bond/VLAN links are left to the OS and logged.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;

use guestd_core::{Command, CommandRunner, Root};
use serde_json::Value;
use tracing::{info, warn};

use super::model::{
    Hostname, InterfaceSpec, IpNet, Mac, NetworkError, NetworkSpec, Route, invalid,
    netmask_to_prefix, netmask6_to_prefix,
};

pub const LABEL_DEVICE: &str = "/dev/disk/by-label/config-2";
pub const MOUNT_POINT: &str = "/run/guestd/config-drive";
const NETWORK_DATA: &str = "openstack/latest/network_data.json";
const META_DATA: &str = "openstack/latest/meta_data.json";

/// Find and read the config drive. `Ok(None)` when there is none.
pub fn read(
    root: &Root,
    runner: &dyn CommandRunner,
    dir: Option<&str>,
    keep_hostname: bool,
) -> Result<Option<NetworkSpec>, NetworkError> {
    if let Some(dir) = dir {
        return read_dir(root, dir, keep_hostname).map(Some);
    }
    if !root.exists(LABEL_DEVICE) {
        return Ok(None);
    }
    if let Some(mounted) = mount_point(root)? {
        info!(mount_point = %mounted, "reading the mounted config drive");
        return read_dir(root, &mounted, keep_hostname).map(Some);
    }
    let sys = |e: guestd_core::RootError| NetworkError::System(e.to_string());
    root.create_dir_all(MOUNT_POINT, 0o700).map_err(sys)?;
    let mount = Command::new("mount").args(["-o", "ro", LABEL_DEVICE, MOUNT_POINT]);
    runner
        .run(&mount)
        .and_then(|o| o.check("mount"))
        .map_err(|e| NetworkError::System(format!("cannot mount the config drive: {e}")))?;
    let result = read_dir(root, MOUNT_POINT, keep_hostname);
    if let Err(e) = runner
        .run(&Command::new("umount").arg(MOUNT_POINT))
        .and_then(|o| o.check("umount"))
    {
        warn!(error = %e, "could not unmount the config drive");
    }
    result.map(Some)
}

/// The mount point of the `config-2` device, from `/proc/mounts`.
fn mount_point(root: &Root) -> Result<Option<String>, NetworkError> {
    let device = match root.read_link(LABEL_DEVICE) {
        Ok(target) => {
            let name = target
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            format!("/dev/{name}")
        }
        Err(_) => LABEL_DEVICE.to_string(),
    };
    let mounts = root.read_to_string("/proc/mounts").unwrap_or_default();
    Ok(mounts.lines().find_map(|line| {
        let mut fields = line.split_whitespace();
        let (dev, point) = (fields.next()?, fields.next()?);
        (dev == device || dev == LABEL_DEVICE).then(|| point.replace("\\040", " "))
    }))
}

/// Read a config drive's contents under `dir` (a guest path).
pub fn read_dir(root: &Root, dir: &str, keep_hostname: bool) -> Result<NetworkSpec, NetworkError> {
    let path = |rel: &str| Path::new(dir).join(rel);
    let text = root
        .read_to_string(path(NETWORK_DATA))
        .map_err(|e| NetworkError::System(format!("config drive: {e}")))?;
    let network: Value = serde_json::from_str(&text).map_err(|e| {
        invalid(format!(
            "config drive {NETWORK_DATA} is not valid JSON: {e}"
        ))
    })?;
    let mut spec = parse_network_data(&network)?;
    if !keep_hostname {
        if let Some(text) = root
            .read_optional(path(META_DATA))
            .map_err(|e| NetworkError::System(format!("config drive: {e}")))?
        {
            let meta: Value = serde_json::from_slice(&text)
                .map_err(|e| invalid(format!("config drive {META_DATA} is not valid JSON: {e}")))?;
            if let Some(name) = meta.get("hostname").and_then(Value::as_str) {
                spec.hostname = Some(Hostname::parse(name)?);
            }
        }
    }
    spec.validate()?;
    Ok(spec)
}

/// Parse `network_data.json`.
pub fn parse_network_data(doc: &Value) -> Result<NetworkSpec, NetworkError> {
    let arr = |key: &str| -> Result<Vec<Value>, NetworkError> {
        match doc.get(key) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Array(a)) => Ok(a.clone()),
            Some(_) => Err(invalid(format!("config drive: '{key}' must be a list"))),
        }
    };
    let mut interfaces: Vec<(String, InterfaceSpec)> = Vec::new();
    for link in arr("links")? {
        let id = str_field(&link, "id").unwrap_or_default().to_string();
        let kind = str_field(&link, "type").unwrap_or("phy");
        if matches!(kind, "bond" | "vlan") {
            warn!(link = %id, kind, "config drive link type not supported; left alone");
            continue;
        }
        let mac_text = str_field(&link, "ethernet_mac_address")
            .ok_or_else(|| invalid(format!("config drive link '{id}' has no MAC address")))?;
        let mac =
            Mac::parse(mac_text).map_err(|e| invalid(format!("config drive link '{id}': {e}")))?;
        interfaces.push((
            id,
            InterfaceSpec {
                mac,
                label: None,
                addresses: Vec::new(),
                gateway4: None,
                gateway6: None,
                routes: Vec::new(),
                dns: Vec::new(),
            },
        ));
    }
    for net in arr("networks")? {
        let id = str_field(&net, "id").unwrap_or("?").to_string();
        let who = format!("config drive network '{id}'");
        let kind = str_field(&net, "type").unwrap_or("");
        if kind != "ipv4" && kind != "ipv6" {
            info!(network = %id, kind, "not a static network; left to the OS");
            continue;
        }
        let link = str_field(&net, "link").unwrap_or("");
        let Some((_, iface)) = interfaces.iter_mut().find(|(l, _)| l == link) else {
            return Err(invalid(format!("{who} refers to unknown link '{link}'")));
        };
        if iface.label.is_none() {
            iface.label = str_field(&net, "network_id").map(str::to_string);
        }
        let ip_text = str_field(&net, "ip_address")
            .ok_or_else(|| invalid(format!("{who} has no 'ip_address'")))?;
        let (ip_part, inline_prefix) = match ip_text.split_once('/') {
            Some((ip, p)) => (ip, Some(p)),
            None => (ip_text, None),
        };
        let mask = inline_prefix.or(str_field(&net, "netmask"));
        let addr = if kind == "ipv4" {
            let ip: Ipv4Addr = ip_part
                .parse()
                .map_err(|_| invalid(format!("{who}: '{ip_text}' is not an IPv4 address")))?;
            IpNet::new(ip.into(), prefix(mask, true, &who)?)?
        } else {
            let ip: Ipv6Addr = ip_part
                .parse()
                .map_err(|_| invalid(format!("{who}: '{ip_text}' is not an IPv6 address")))?;
            IpNet::new(ip.into(), prefix(mask, false, &who)?)?
        };
        iface.addresses.push(addr);
        for r in net
            .get("routes")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let dest_text = str_field(r, "network").unwrap_or("");
            let dest: IpAddr = dest_text.parse().map_err(|_| {
                invalid(format!(
                    "{who}: route network '{dest_text}' is not an IP address"
                ))
            })?;
            let p = prefix(str_field(r, "netmask"), dest.is_ipv4(), &who)?;
            let gateway = match str_field(r, "gateway") {
                None => None,
                Some(g) => Some(g.parse::<IpAddr>().map_err(|_| {
                    invalid(format!("{who}: route gateway '{g}' is not an IP address"))
                })?),
            };
            let route = Route {
                dest: IpNet::new(dest, p)?,
                gateway,
            };
            match (route.dest.is_default(), gateway) {
                (true, Some(IpAddr::V4(g))) if iface.gateway4.is_none() => iface.gateway4 = Some(g),
                (true, Some(IpAddr::V6(g))) if iface.gateway6.is_none() => iface.gateway6 = Some(g),
                _ => iface.routes.push(route),
            }
        }
        add_dns(&mut iface.dns, net.get("services"));
    }
    // Global DNS servers go with the first interface (the model's DNS list is global anyway).
    interfaces.retain(|(id, i)| {
        if i.addresses.is_empty() {
            info!(link = %id, "no static address on this link; left to the OS");
        }
        !i.addresses.is_empty()
    });
    if let Some((_, first)) = interfaces.first_mut() {
        add_dns(&mut first.dns, doc.get("services"));
    }
    if interfaces.is_empty() {
        return Err(invalid(
            "config drive network_data.json has no interface with a static address",
        ));
    }
    Ok(NetworkSpec {
        interfaces: interfaces.into_iter().map(|(_, i)| i).collect(),
        hostname: None,
        source: "config drive",
    })
}

fn str_field<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key)
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

fn prefix(mask: Option<&str>, v4: bool, who: &str) -> Result<u8, NetworkError> {
    let text = mask.ok_or_else(|| invalid(format!("{who} has no netmask")))?;
    let bad = || invalid(format!("{who}: '{text}' is not a valid netmask"));
    if v4 {
        if let Ok(m) = text.parse::<Ipv4Addr>() {
            return netmask_to_prefix(m).ok_or_else(bad);
        }
    } else if let Ok(m) = text.parse::<Ipv6Addr>() {
        return netmask6_to_prefix(m).ok_or_else(bad);
    }
    text.parse::<u8>().map_err(|_| bad())
}

fn add_dns(dns: &mut Vec<IpAddr>, services: Option<&Value>) {
    for s in services.and_then(Value::as_array).into_iter().flatten() {
        if str_field(s, "type") == Some("dns") {
            match str_field(s, "address").map(str::parse::<IpAddr>) {
                Some(Ok(ip)) if !dns.contains(&ip) => dns.push(ip),
                Some(Err(_)) => warn!(service = %s, "config drive DNS address is not an IP"),
                _ => {}
            }
        }
    }
}

#[cfg(all(test, unix))]
#[allow(clippy::disallowed_methods)] // tests build their trees by path
mod tests {
    use super::*;

    pub(crate) const NETWORK_DATA_JSON: &str = r#"{
      "links": [
        {"id": "tap1", "type": "ovs", "ethernet_mac_address": "fa:16:3e:00:00:01", "mtu": 1450},
        {"id": "tap2", "type": "phy", "ethernet_mac_address": "FA:16:3E:00:00:02"},
        {"id": "bond0", "type": "bond", "bond_links": ["tap2"]}
      ],
      "networks": [
        {"id": "net0", "type": "ipv4", "link": "tap1", "ip_address": "10.0.0.5",
         "netmask": "255.255.255.0", "network_id": "public",
         "routes": [{"network": "0.0.0.0", "netmask": "0.0.0.0", "gateway": "10.0.0.1"},
                    {"network": "172.16.0.0", "netmask": "255.240.0.0", "gateway": "10.0.0.254"}],
         "services": [{"type": "dns", "address": "10.0.0.2"}]},
        {"id": "net1", "type": "ipv6", "link": "tap1", "ip_address": "2001:db8::5/64",
         "routes": [{"network": "::", "netmask": "::", "gateway": "2001:db8::1"}]},
        {"id": "net2", "type": "ipv4_dhcp", "link": "tap2"}
      ],
      "services": [{"type": "dns", "address": "8.8.8.8"}, {"type": "dns", "address": "10.0.0.2"}]
    }"#;

    #[test]
    fn parses_static_networks_and_skips_dhcp() {
        let spec = parse_network_data(&serde_json::from_str(NETWORK_DATA_JSON).unwrap()).unwrap();
        assert_eq!(spec.interfaces.len(), 1);
        let i = &spec.interfaces[0];
        assert_eq!(i.mac.to_string(), "fa:16:3e:00:00:01");
        let addrs: Vec<String> = i.addresses.iter().map(|a| a.to_string()).collect();
        assert_eq!(addrs, ["10.0.0.5/24", "2001:db8::5/64"]);
        assert_eq!(i.gateway4, Some("10.0.0.1".parse().unwrap()));
        assert_eq!(i.gateway6, Some("2001:db8::1".parse().unwrap()));
        assert_eq!(i.routes.len(), 1);
        assert_eq!(i.routes[0].dest.to_string(), "172.16.0.0/12");
        let dns: Vec<String> = i.dns.iter().map(|d| d.to_string()).collect();
        assert_eq!(dns, ["10.0.0.2", "8.8.8.8"]);
    }

    #[test]
    fn finds_a_mounted_drive_through_proc_mounts() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path();
        std::fs::create_dir_all(p.join("dev/disk/by-label")).unwrap();
        std::fs::write(p.join("dev/sr0"), b"").unwrap();
        std::os::unix::fs::symlink("../../sr0", p.join("dev/disk/by-label/config-2")).unwrap();
        std::fs::create_dir_all(p.join("proc")).unwrap();
        std::fs::write(
            p.join("proc/mounts"),
            "proc /proc proc rw 0 0\n/dev/sr0 /mnt/config iso9660 ro 0 0\n",
        )
        .unwrap();
        std::fs::create_dir_all(p.join("mnt/config/openstack/latest")).unwrap();
        std::fs::write(
            p.join("mnt/config/openstack/latest/network_data.json"),
            NETWORK_DATA_JSON,
        )
        .unwrap();
        std::fs::write(
            p.join("mnt/config/openstack/latest/meta_data.json"),
            r#"{"hostname": "vm1.novalocal", "uuid": "x"}"#,
        )
        .unwrap();
        let root = Root::sandbox(p).unwrap();
        let spec = read(&root, &guestd_core::SystemRunner, None, false)
            .unwrap()
            .unwrap();
        assert_eq!(spec.hostname.unwrap().as_str(), "vm1.novalocal");
        assert_eq!(spec.source, "config drive");
        assert_eq!(
            read(&root, &guestd_core::SystemRunner, None, true)
                .unwrap()
                .unwrap()
                .hostname,
            None
        );
        // No label device: no config drive.
        std::fs::remove_file(p.join("dev/disk/by-label/config-2")).unwrap();
        assert_eq!(
            read(&root, &guestd_core::SystemRunner, None, false).unwrap(),
            None
        );
    }

    #[test]
    fn bad_drive_data_is_named() {
        let doc = serde_json::json!({"links": [{"id": "l", "ethernet_mac_address": "fa:16:3e:00:00:01"}],
            "networks": [{"id": "n", "type": "ipv4", "link": "l", "ip_address": "10.0.0.5", "netmask": "255.0.255.0"}]});
        assert_eq!(
            parse_network_data(&doc).unwrap_err().to_string(),
            "config drive network 'n': '255.0.255.0' is not a valid netmask"
        );
        let doc = serde_json::json!({"links": [], "networks": []});
        assert!(parse_network_data(&doc).is_err());
    }
}
