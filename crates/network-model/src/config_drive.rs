//! An OpenStack config drive's files: `openstack/latest/network_data.json` (links, networks,
//! services) and `meta_data.json` (hostname). Finding, checking, mounting and reading the drive
//! is OS work (the backend's); this module only parses what was read, as hostile host data.
//!
//! Static networks (`ipv4`, `ipv6`) are used; DHCP/SLAAC networks and bond/VLAN links are left
//! to the OS and logged.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde_json::Value;
use tracing::{info, warn};

use crate::model::{
    Hostname, InterfaceSpec, IpNet, Mac, NetworkError, NetworkSpec, Route, check_label, invalid,
    netmask_to_prefix, netmask6_to_prefix, shown,
};

/// The network description on the drive.
pub const NETWORK_DATA: &str = "openstack/latest/network_data.json";
/// The instance's metadata (its hostname) on the drive.
pub const META_DATA: &str = "openstack/latest/meta_data.json";
/// The largest `network_data.json` or `meta_data.json` read (real ones are a few KiB).
pub const MAX_FILE: u64 = 1 << 20;

/// The files read from a config drive (each a regular file of at most [`MAX_FILE`] bytes).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ConfigDriveFiles {
    /// [`NETWORK_DATA`].
    pub network_data: Vec<u8>,
    /// [`META_DATA`], when it exists and the hostname is wanted.
    pub meta_data: Option<Vec<u8>>,
}

impl fmt::Debug for ConfigDriveFiles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConfigDriveFiles")
            .field(
                "network_data",
                &format_args!("{} bytes", self.network_data.len()),
            )
            .field(
                "meta_data",
                &self
                    .meta_data
                    .as_ref()
                    .map(|m| format!("{} bytes", m.len())),
            )
            .finish()
    }
}

/// Parse the drive's files into the model: the networks, and the hostname from the metadata.
pub fn parse(files: &ConfigDriveFiles) -> Result<NetworkSpec, NetworkError> {
    let network: Value = serde_json::from_slice(&files.network_data).map_err(|e| {
        invalid(format!(
            "config drive {NETWORK_DATA} is not valid JSON: {e}"
        ))
    })?;
    let mut spec = parse_network_data(&network)?;
    if let Some(text) = &files.meta_data {
        let meta: Value = serde_json::from_slice(text)
            .map_err(|e| invalid(format!("config drive {META_DATA} is not valid JSON: {e}")))?;
        if let Some(name) = meta.get("hostname").and_then(Value::as_str) {
            spec.hostname = Some(Hostname::parse(name)?);
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
        // The link id only names the link in messages and joins networks to it.
        let id = str_field(&link, "id").unwrap_or_default().to_string();
        let kind = str_field(&link, "type").unwrap_or("phy");
        if matches!(kind, "bond" | "vlan") {
            warn!(link = %shown(&id), kind = %shown(kind), "config drive link type not supported; left alone");
            continue;
        }
        let mac_text = str_field(&link, "ethernet_mac_address").ok_or_else(|| {
            invalid(format!(
                "config drive link '{}' has no MAC address",
                shown(&id)
            ))
        })?;
        let mac = Mac::parse(mac_text).map_err(|e| {
            invalid(format!(
                "config drive link '{}': 'ethernet_mac_address': {e}",
                shown(&id)
            ))
        })?;
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
        let who = format!("config drive network '{}'", shown(&id));
        let kind = str_field(&net, "type").unwrap_or("");
        if kind != "ipv4" && kind != "ipv6" {
            info!(network = %shown(&id), kind = %shown(kind), "not a static network; left to the OS");
            continue;
        }
        let link = str_field(&net, "link").unwrap_or("");
        let Some((_, iface)) = interfaces.iter_mut().find(|(l, _)| l == link) else {
            return Err(invalid(format!(
                "{who} refers to unknown link '{}'",
                shown(link)
            )));
        };
        if iface.label.is_none() {
            if let Some(label) = str_field(&net, "network_id") {
                check_label(&format!("{who}: 'network_id'"), label)?;
                iface.label = Some(label.to_string());
            }
        }
        let ip_text = str_field(&net, "ip_address")
            .ok_or_else(|| invalid(format!("{who} has no 'ip_address'")))?;
        let (ip_part, inline_prefix) = match ip_text.split_once('/') {
            Some((ip, p)) => (ip, Some(p)),
            None => (ip_text, None),
        };
        let mask = inline_prefix.or(str_field(&net, "netmask"));
        let addr = if kind == "ipv4" {
            let ip: Ipv4Addr = ip_part.parse().map_err(|_| {
                invalid(format!(
                    "{who}: 'ip_address' '{}' is not an IPv4 address",
                    shown(ip_text)
                ))
            })?;
            IpNet::new(ip.into(), prefix(mask, true, &format!("{who}: 'netmask'"))?)?
        } else {
            let ip: Ipv6Addr = ip_part.parse().map_err(|_| {
                invalid(format!(
                    "{who}: 'ip_address' '{}' is not an IPv6 address",
                    shown(ip_text)
                ))
            })?;
            IpNet::new(
                ip.into(),
                prefix(mask, false, &format!("{who}: 'netmask'"))?,
            )?
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
                    "{who}: route network '{}' is not an IP address",
                    shown(dest_text)
                ))
            })?;
            let p = prefix(
                str_field(r, "netmask"),
                dest.is_ipv4(),
                &format!("{who}: route 'netmask'"),
            )?;
            let gateway = match str_field(r, "gateway") {
                None => None,
                Some(g) => Some(g.parse::<IpAddr>().map_err(|_| {
                    invalid(format!(
                        "{who}: route gateway '{}' is not an IP address",
                        shown(g)
                    ))
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
            info!(link = %shown(id), "no static address on this link; left to the OS");
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
    let bad = || invalid(format!("{who}: '{}' is not a valid netmask", shown(text)));
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
                Some(Err(_)) => {
                    warn!(service = %shown(&s.to_string()), "config drive DNS address is not an IP; ignored");
                }
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NETWORK_DATA_JSON: &str = r#"{
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

    /// A sandbox with a `config-2` CD-ROM (`sr0`, 11:0) known to the kernel and its files at
    #[test]
    fn the_files_give_the_networks_and_the_hostname() {
        let files = |meta: Option<&str>| ConfigDriveFiles {
            network_data: NETWORK_DATA_JSON.as_bytes().to_vec(),
            meta_data: meta.map(|m| m.as_bytes().to_vec()),
        };
        let spec = parse(&files(Some(
            r#"{"hostname": "vm1.novalocal", "uuid": "x"}"#,
        )))
        .unwrap();
        assert_eq!(spec.hostname.unwrap().as_str(), "vm1.novalocal");
        assert_eq!(spec.source, "config drive");
        assert_eq!(spec.interfaces.len(), 1);
        assert_eq!(parse(&files(None)).unwrap().hostname, None);
        assert_eq!(parse(&files(Some("{}"))).unwrap().hostname, None);
        assert_eq!(
            parse(&files(Some(r#"{"hostname": "a_b"}"#)))
                .unwrap_err()
                .to_string(),
            "'a_b' is not a valid hostname: only letters, digits, '-' and '.' are allowed"
        );
        assert!(
            parse(&files(Some("{oops")))
                .unwrap_err()
                .to_string()
                .starts_with("config drive openstack/latest/meta_data.json is not valid JSON")
        );
        let broken = ConfigDriveFiles {
            network_data: b"[".to_vec(),
            meta_data: None,
        };
        assert!(
            parse(&broken)
                .unwrap_err()
                .to_string()
                .starts_with("config drive openstack/latest/network_data.json is not valid JSON")
        );
        assert!(format!("{:?}", files(None)).contains("bytes"));
    }

    #[test]
    fn bad_drive_data_is_named() {
        let doc = serde_json::json!({"links": [{"id": "l", "ethernet_mac_address": "fa:16:3e:00:00:01"}],
            "networks": [{"id": "n", "type": "ipv4", "link": "l", "ip_address": "10.0.0.5", "netmask": "255.0.255.0"}]});
        assert_eq!(
            parse_network_data(&doc).unwrap_err().to_string(),
            "config drive network 'n': 'netmask': '255.0.255.0' is not a valid netmask"
        );
        let doc = serde_json::json!({"links": [], "networks": []});
        assert!(parse_network_data(&doc).is_err());
    }
}
