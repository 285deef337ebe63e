//! nova's network formats: the per-interface objects of spec §8.2 (with every historical
//! variant), as the inline `resetnetwork` value carries them and as XenStore `vm-data/` holds
//! them.
//!
//! The inline value (also what `guestctl reset-network --config FILE` sends) is one of:
//! - a JSON list of interface objects: `[{"mac": "…", "ips": […], …}, …]`;
//! - an object `{"interfaces": [ … ], "hostname": "web1"}` (both keys optional, no others; without
//!   `interfaces` only the hostname changes and the network is left alone);
//! - either of those as a JSON string;
//! - `""` (or `"nohostname…"`, as the Windows agent accepted): read the host's data instead.
//!
//! [`VmData`] is what the reader found under `vm-data/` (the reading is the transport's: this
//! module only parses bytes).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde_json::{Map, Value};
use tracing::debug;

use crate::model::{
    Hostname, InterfaceSpec, IpNet, Mac, NetworkError, NetworkSpec, Route, check_label, invalid,
    netmask_to_prefix, netmask6_to_prefix, shown,
};

/// The XenStore directory nova writes one key per interface into.
pub const XENSTORE_NETWORKING: &str = "vm-data/networking";
/// The XenStore key of the hostname (raw text).
pub const XENSTORE_HOSTNAME: &str = "vm-data/hostname";

/// What was read under XenStore `vm-data/`: the raw host values, parsed by [`from_vm_data`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VmData {
    /// Every `vm-data/networking/<key>` entry as `(key, value)`, in any order.
    pub networking: Vec<(String, Vec<u8>)>,
    /// `vm-data/hostname`, when it exists (and the hostname is wanted).
    pub hostname: Option<Vec<u8>>,
}

/// What the inline value asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inline {
    /// Empty value: read host data; `keep_hostname` for the `nohostname` form.
    HostData { keep_hostname: bool },
    /// A full (or hostname-only) configuration.
    Spec(NetworkSpec),
}

/// Interpret the `resetnetwork` value.
pub fn parse_inline(value: &Value) -> Result<Inline, NetworkError> {
    match value {
        Value::Null => Ok(Inline::HostData {
            keep_hostname: false,
        }),
        Value::String(s) => {
            let text = s.trim();
            if text.is_empty() {
                return Ok(Inline::HostData {
                    keep_hostname: false,
                });
            }
            if text.starts_with("nohostname") {
                return Ok(Inline::HostData {
                    keep_hostname: true,
                });
            }
            let parsed: Value = serde_json::from_str(text)
                .map_err(|e| invalid(format!("the resetnetwork value is not valid JSON: {e}")))?;
            if parsed.is_string() {
                return Err(invalid(
                    "the resetnetwork value must be a list or an object, not a string",
                ));
            }
            parse_inline(&parsed)
        }
        Value::Array(list) => {
            let spec = NetworkSpec {
                interfaces: parse_interface_list(list, "the resetnetwork value")?,
                hostname: None,
                source: "inline",
            };
            spec.validate()?;
            Ok(Inline::Spec(spec))
        }
        Value::Object(obj) => {
            if let Some(key) = obj.keys().find(|k| *k != "interfaces" && *k != "hostname") {
                return Err(invalid(format!(
                    "unknown key '{key}' in the resetnetwork value (expected 'interfaces' and 'hostname')"
                )));
            }
            let hostname = match obj.get("hostname") {
                None | Some(Value::Null) => None,
                Some(Value::String(s)) => Some(Hostname::parse(s)?),
                Some(_) => return Err(invalid("'hostname' must be a string")),
            };
            let interfaces = match obj.get("interfaces") {
                None => Vec::new(),
                Some(Value::Array(list)) => parse_interface_list(list, "'interfaces'")?,
                Some(_) => return Err(invalid("'interfaces' must be a list")),
            };
            if interfaces.is_empty() && hostname.is_none() {
                return Err(invalid(
                    "the resetnetwork value has neither interfaces nor a hostname",
                ));
            }
            let spec = NetworkSpec {
                interfaces,
                hostname,
                source: "inline",
            };
            spec.validate()?;
            Ok(Inline::Spec(spec))
        }
        _ => Err(invalid(
            "the resetnetwork value must be empty, a list or an object",
        )),
    }
}

fn parse_interface_list(list: &[Value], what: &str) -> Result<Vec<InterfaceSpec>, NetworkError> {
    if list.is_empty() {
        return Err(invalid(format!("{what} is an empty network list")));
    }
    list.iter()
        .enumerate()
        .map(|(i, v)| parse_interface(v, &format!("interface {}", i + 1)))
        .collect()
}

/// Parse what was read under `vm-data/`. `Ok(None)` when there are no networking entries (the
/// caller may look elsewhere). Entries are taken in key order.
pub fn from_vm_data(data: &VmData) -> Result<Option<NetworkSpec>, NetworkError> {
    if data.networking.is_empty() {
        return Ok(None);
    }
    let mut entries: Vec<&(String, Vec<u8>)> = data.networking.iter().collect();
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    let mut interfaces = Vec::new();
    for (key, bytes) in entries {
        let path = format!("{XENSTORE_NETWORKING}/{key}");
        let shown_path = shown(&path);
        let value: Value = serde_json::from_slice(bytes)
            .map_err(|e| invalid(format!("{shown_path} is not valid JSON: {e}")))?;
        let mut iface = parse_interface(&value, &shown_path)?;
        // The key is the MAC without colons; the object's `mac` wins, but they must agree.
        if let Ok(key_mac) = Mac::parse(key) {
            if key_mac != iface.mac {
                debug!(path = %shown_path, mac = %iface.mac, "key and 'mac' differ; using 'mac'");
            }
        }
        iface.dns.dedup();
        interfaces.push(iface);
    }
    let hostname = match &data.hostname {
        None => None,
        Some(bytes) => {
            let text = std::str::from_utf8(bytes)
                .map_err(|_| invalid(format!("{XENSTORE_HOSTNAME} is not UTF-8 text")))?;
            (!text.trim().is_empty())
                .then(|| Hostname::parse(text))
                .transpose()?
        }
    };
    let spec = NetworkSpec {
        interfaces,
        hostname,
        source: "xenstore",
    };
    spec.validate()?;
    Ok(Some(spec))
}

/// Parse one nova interface object (spec §8.2). `who` names it in errors.
pub fn parse_interface(value: &Value, who: &str) -> Result<InterfaceSpec, NetworkError> {
    let obj = value
        .as_object()
        .ok_or_else(|| invalid(format!("{who} is not a JSON object")))?;
    let mac_text = match obj.get("mac") {
        Some(Value::String(s)) if !s.trim().is_empty() => s,
        Some(Value::String(_)) | None | Some(Value::Null) => {
            return Err(invalid(format!("{who} has no MAC address ('mac')")));
        }
        Some(_) => return Err(invalid(format!("{who}: 'mac' must be a string"))),
    };
    let mac = Mac::parse(mac_text).map_err(|e| invalid(format!("{who}: {e}")))?;
    let who = format!("interface {mac}");
    let label = opt_str(obj, "label", &who)?.map(str::to_string);
    if let Some(label) = &label {
        check_label(&format!("{who}: 'label'"), label)?;
    }

    let mut addresses = Vec::new();
    let mut addr_gw4 = None;
    for (i, entry) in list(obj, "ips", &who)?.iter().enumerate() {
        let what = format!("{who}: ips[{i}]");
        let e = entry
            .as_object()
            .ok_or_else(|| invalid(format!("{what} is not an object")))?;
        if !enabled(e, &what)? {
            continue;
        }
        let ip: Ipv4Addr = parse_ip(req_str(e, "ip", &what)?, &format!("{what}: 'ip'"))?;
        let prefix = v4_prefix(e.get("netmask"), &ip.to_string(), &what)?;
        addresses.push(IpNet::new(ip.into(), prefix)?);
        if addr_gw4.is_none() {
            addr_gw4 = opt_ip::<Ipv4Addr>(e, "gateway", &what)?;
        }
    }
    let mut addr_gw6 = None;
    for (i, entry) in list(obj, "ip6s", &who)?.iter().enumerate() {
        let what = format!("{who}: ip6s[{i}]");
        let e = entry
            .as_object()
            .ok_or_else(|| invalid(format!("{what} is not an object")))?;
        if !enabled(e, &what)? {
            continue;
        }
        let (key, text) = match opt_str(e, "ip", &what)? {
            Some(t) => ("ip", t),
            None => ("address", req_str(e, "address", &what)?),
        };
        let ip: Ipv6Addr = parse_ip(text, &format!("{what}: '{key}'"))?;
        let prefix = v6_prefix(e.get("netmask"), &ip.to_string(), &what)?;
        addresses.push(IpNet::new(ip.into(), prefix)?);
        if addr_gw6.is_none() {
            addr_gw6 = opt_ip::<Ipv6Addr>(e, "gateway", &what)?;
        }
    }

    let gateway4 = opt_ip::<Ipv4Addr>(obj, "gateway", &who)?.or(addr_gw4);
    // As the old agents: the per-address gateway (always sent by nova) wins over the top level.
    let gateway6 = addr_gw6
        .or(opt_ip::<Ipv6Addr>(obj, "gateway_v6", &who)?)
        .or(opt_ip::<Ipv6Addr>(obj, "gateway6", &who)?);

    let mut routes = Vec::new();
    for (i, entry) in list(obj, "routes", &who)?.iter().enumerate() {
        let what = format!("{who}: routes[{i}]");
        let e = entry
            .as_object()
            .ok_or_else(|| invalid(format!("{what} is not an object")))?;
        let dest: IpAddr = parse_ip(req_str(e, "route", &what)?, &format!("{what}: 'route'"))?;
        let prefix = match dest {
            IpAddr::V4(_) => v4_prefix(e.get("netmask"), &dest.to_string(), &what)?,
            IpAddr::V6(_) => v6_prefix(e.get("netmask"), &dest.to_string(), &what)?,
        };
        let gateway = opt_ip::<IpAddr>(e, "gateway", &what)?;
        let route = Route {
            dest: IpNet::new(dest, prefix)?,
            gateway,
        };
        // A default route via the interface's own gateway is the gateway itself.
        let same_as_gateway = route.dest.is_default()
            && match gateway {
                Some(IpAddr::V4(g)) => gateway4 == Some(g),
                Some(IpAddr::V6(g)) => gateway6 == Some(g),
                None => false,
            };
        if !same_as_gateway && !routes.contains(&route) {
            routes.push(route);
        }
    }

    let mut dns = Vec::new();
    for (i, entry) in list(obj, "dns", &who)?.iter().enumerate() {
        let text = entry
            .as_str()
            .ok_or_else(|| invalid(format!("{who}: dns[{i}] is not a string")))?;
        let ip: IpAddr = parse_ip(text, &format!("{who}: dns[{i}]"))?;
        if !dns.contains(&ip) {
            dns.push(ip);
        }
    }

    Ok(InterfaceSpec {
        mac,
        label,
        addresses,
        gateway4,
        gateway6,
        routes,
        dns,
    })
}

fn list<'a>(
    obj: &'a Map<String, Value>,
    key: &str,
    who: &str,
) -> Result<&'a [Value], NetworkError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(&[]),
        Some(Value::Array(a)) => Ok(a),
        Some(_) => Err(invalid(format!("{who}: '{key}' must be a list"))),
    }
}

fn opt_str<'a>(
    obj: &'a Map<String, Value>,
    key: &str,
    who: &str,
) -> Result<Option<&'a str>, NetworkError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.trim())),
        Some(_) => Err(invalid(format!("{who}: '{key}' must be a string"))),
    }
}

fn req_str<'a>(obj: &'a Map<String, Value>, key: &str, who: &str) -> Result<&'a str, NetworkError> {
    opt_str(obj, key, who)?.ok_or_else(|| invalid(format!("{who} has no '{key}'")))
}

fn parse_ip<T: std::str::FromStr>(text: &str, who: &str) -> Result<T, NetworkError> {
    let kind = std::any::type_name::<T>();
    let family = if kind.ends_with("Ipv4Addr") {
        "IPv4 address"
    } else if kind.ends_with("Ipv6Addr") {
        "IPv6 address"
    } else {
        "IP address"
    };
    text.trim()
        .parse()
        .map_err(|_| invalid(format!("{who}: '{}' is not an {family}", shown(text))))
}

fn opt_ip<T: std::str::FromStr>(
    obj: &Map<String, Value>,
    key: &str,
    who: &str,
) -> Result<Option<T>, NetworkError> {
    opt_str(obj, key, who)?
        .map(|t| parse_ip(t, &format!("{who}: '{key}'")))
        .transpose()
}

/// `enabled`: missing means enabled; "1"/1/true enabled; "0"/0/false disabled.
fn enabled(obj: &Map<String, Value>, who: &str) -> Result<bool, NetworkError> {
    match obj.get("enabled") {
        None | Some(Value::Null) => Ok(true),
        Some(Value::Bool(b)) => Ok(*b),
        Some(Value::Number(n)) if n.as_u64() == Some(1) => Ok(true),
        Some(Value::Number(n)) if n.as_u64() == Some(0) => Ok(false),
        Some(Value::String(s)) => match s.trim().to_ascii_lowercase().as_str() {
            "1" | "true" | "yes" => Ok(true),
            "0" | "false" | "no" => Ok(false),
            _ => Err(invalid(format!(
                "{who}: 'enabled' is '{}', not 0 or 1",
                shown(s)
            ))),
        },
        Some(other) => Err(invalid(format!(
            "{who}: 'enabled' is {}, not 0 or 1",
            shown(&other.to_string())
        ))),
    }
}

/// IPv4 netmask: dotted (`255.255.255.0`) or a prefix length (24 or "24").
fn v4_prefix(mask: Option<&Value>, ip: &str, who: &str) -> Result<u8, NetworkError> {
    let text = match mask {
        None | Some(Value::Null) => {
            return Err(invalid(format!("{who}: {ip} has no netmask")));
        }
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::String(s)) => s.trim().to_string(),
        Some(other) => {
            return Err(invalid(format!(
                "{who}: netmask {} is not a netmask",
                shown(&other.to_string())
            )));
        }
    };
    if let Ok(mask) = text.parse::<Ipv4Addr>() {
        return netmask_to_prefix(mask)
            .ok_or_else(|| invalid(format!("{who}: '{text}' of {ip} is not a valid netmask")));
    }
    match text.parse::<u8>() {
        Ok(p) if p <= 32 => Ok(p),
        Ok(p) => Err(invalid(format!(
            "{who}: IPv4 prefix {p} of {ip} is over 32"
        ))),
        Err(_) => Err(invalid(format!(
            "{who}: '{}' of {ip} is not a valid netmask",
            shown(&text)
        ))),
    }
}

/// IPv6 prefix: an integer or a string of one (nova's historical variants), or a mask address.
fn v6_prefix(mask: Option<&Value>, ip: &str, who: &str) -> Result<u8, NetworkError> {
    let text = match mask {
        None | Some(Value::Null) => {
            return Err(invalid(format!(
                "{who}: {ip} has no prefix length ('netmask')"
            )));
        }
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::String(s)) => s.trim().trim_start_matches('/').to_string(),
        Some(other) => {
            return Err(invalid(format!(
                "{who}: IPv6 prefix {} of {ip} is not a number",
                shown(&other.to_string())
            )));
        }
    };
    if let Ok(mask) = text.parse::<Ipv6Addr>() {
        return netmask6_to_prefix(mask)
            .ok_or_else(|| invalid(format!("{who}: '{text}' of {ip} is not a valid netmask")));
    }
    match text.parse::<u32>() {
        Ok(p) if p <= 128 => Ok(p as u8),
        Ok(p) => Err(invalid(format!(
            "{who}: IPv6 prefix {p} of {ip} is over 128"
        ))),
        Err(_) => Err(invalid(format!(
            "{who}: IPv6 prefix '{}' of {ip} is not a number",
            shown(&text)
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn vm_data(entries: &[(&str, &str)], hostname: Option<&str>) -> VmData {
        VmData {
            networking: entries
                .iter()
                .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
                .collect(),
            hostname: hostname.map(|h| h.as_bytes().to_vec()),
        }
    }

    /// The N1 test vector of spec §8.2.
    const NOVA: &str = r#"{"broadcast": "192.168.1.255", "dns": ["192.168.1.4", "192.168.1.3"], "gateway": "192.168.1.1",
 "gateway_v6": "2001:db8:0:1::1",
 "ip6s": [{"enabled": "1", "ip": "2001:db8:0:1:dcad:beff:feef:1", "netmask": 64, "gateway": "2001:db8:0:1::1"}],
 "ips": [{"enabled": "1", "ip": "192.168.1.100", "netmask": "255.255.255.0", "gateway": "192.168.1.1"}],
 "label": "test1", "mac": "DE:AD:BE:EF:00:01"}"#;

    /// The D1 Rackspace private-network vector of spec §8.2.
    const RACKSPACE_PRIVATE: &str = r#"{"label": "private", "broadcast": "10.208.255.255", "ips": [
{"ip": "10.208.227.239", "netmask": "255.255.224.0", "enabled": "1",
"gateway": null}], "mac": "BC:76:4E:20:6C:5B", "routes": [
{"route": "10.208.0.0", "netmask": "255.240.0.0", "gateway": "10.208.224.1"},
{"route": "10.176.0.0", "netmask": "255.240.0.0", "gateway": "10.208.224.1"}],
"gateway": null}"#;

    fn iface(text: &str) -> Result<InterfaceSpec, NetworkError> {
        parse_interface(&serde_json::from_str(text).unwrap(), "test")
    }

    #[test]
    fn nova_vector() {
        let i = iface(NOVA).unwrap();
        assert_eq!(i.mac.to_string(), "de:ad:be:ef:00:01");
        assert_eq!(i.label.as_deref(), Some("test1"));
        let addrs: Vec<String> = i.addresses.iter().map(|a| a.to_string()).collect();
        assert_eq!(
            addrs,
            ["192.168.1.100/24", "2001:db8:0:1:dcad:beff:feef:1/64"]
        );
        assert_eq!(i.gateway4, Some("192.168.1.1".parse().unwrap()));
        assert_eq!(i.gateway6, Some("2001:db8:0:1::1".parse().unwrap()));
        assert_eq!(i.dns.len(), 2);
    }

    #[test]
    fn rackspace_private_vector() {
        let i = iface(RACKSPACE_PRIVATE).unwrap();
        assert_eq!(i.gateway4, None);
        assert_eq!(i.routes.len(), 2);
        assert_eq!(i.routes[1].dest.to_string(), "10.176.0.0/12");
        assert_eq!(i.routes[1].gateway, Some("10.208.224.1".parse().unwrap()));
    }

    #[test]
    fn historical_variants() {
        // gateway6 at top level, string prefix, missing enabled, lowercase MAC.
        let i = iface(
            r#"{"mac": "de:ad:be:ef:00:02", "gateway6": "2001:db8::1",
                "ip6s": [{"ip": "2001:db8::5", "netmask": "64"}],
                "ips": [{"ip": "10.0.0.5", "netmask": "255.255.255.0", "enabled": "0"},
                        {"ip": "10.0.0.6", "netmask": "255.255.255.0"}],
                "dhcp_server": "10.0.0.1"}"#,
        )
        .unwrap();
        assert_eq!(i.gateway6, Some("2001:db8::1".parse().unwrap()));
        let addrs: Vec<String> = i.addresses.iter().map(|a| a.to_string()).collect();
        assert_eq!(addrs, ["10.0.0.6/24", "2001:db8::5/64"]);
        // Per-address IPv6 gateway wins over the top level, as in U1.
        let i = iface(
            r#"{"mac": "de:ad:be:ef:00:02", "gateway_v6": "2001:db8::1",
                "ip6s": [{"address": "2001:db8::5", "netmask": 64, "gateway": "2001:db8::fe"}]}"#,
        )
        .unwrap();
        assert_eq!(i.gateway6, Some("2001:db8::fe".parse().unwrap()));
        // A default route through the gateway is the gateway.
        let i = iface(
            r#"{"mac": "de:ad:be:ef:00:02", "gateway": "10.0.0.1",
                "ips": [{"ip": "10.0.0.5", "netmask": 24}],
                "routes": [{"route": "0.0.0.0", "netmask": "0.0.0.0", "gateway": "10.0.0.1"}]}"#,
        )
        .unwrap();
        assert!(i.routes.is_empty());
    }

    #[test]
    fn bad_input_names_the_problem() {
        let cases = [
            (r#"{"ips": []}"#, "test has no MAC address ('mac')"),
            (
                r#"{"mac": "BC:76:4E:20:6C:5B", "ips": [{"ip": "10.0.0.1", "netmask": "255.0.255.0"}]}"#,
                "interface bc:76:4e:20:6c:5b: ips[0]: '255.0.255.0' of 10.0.0.1 is not a valid netmask",
            ),
            (
                r#"{"mac": "BC:76:4E:20:6C:5B", "ip6s": [{"ip": "2001:db8::1", "netmask": 129}]}"#,
                "interface bc:76:4e:20:6c:5b: ip6s[0]: IPv6 prefix 129 of 2001:db8::1 is over 128",
            ),
            (
                r#"{"mac": "BC:76:4E:20:6C:5B", "ips": [{"ip": "10.0.0.300", "netmask": 24}]}"#,
                "interface bc:76:4e:20:6c:5b: ips[0]: 'ip': '10.0.0.300' is not an IPv4 address",
            ),
            (
                r#"{"mac": "BC:76:4E:20:6C:5B", "ips": [{"ip": "10.0.0.3", "netmask": 24, "enabled": "maybe"}]}"#,
                "interface bc:76:4e:20:6c:5b: ips[0]: 'enabled' is 'maybe', not 0 or 1",
            ),
        ];
        for (text, want) in cases {
            assert_eq!(iface(text).unwrap_err().to_string(), want, "{text}");
        }
        let no_addr = iface(r#"{"mac": "BC:76:4E:20:6C:5B"}"#).unwrap();
        assert_eq!(
            no_addr.validate().unwrap_err().to_string(),
            "interface bc:76:4e:20:6c:5b has no enabled IP addresses"
        );
    }

    #[test]
    fn inline_forms() {
        let one: Value = serde_json::from_str(NOVA).unwrap();
        assert_eq!(
            parse_inline(&json!("")).unwrap(),
            Inline::HostData {
                keep_hostname: false
            }
        );
        assert_eq!(
            parse_inline(&json!("nohostname")).unwrap(),
            Inline::HostData {
                keep_hostname: true
            }
        );
        let Inline::Spec(s) = parse_inline(&json!([one.clone()])).unwrap() else {
            panic!()
        };
        assert_eq!(s.interfaces.len(), 1);
        assert_eq!(s.hostname, None);
        let text = json!({"interfaces": [one], "hostname": "web1"}).to_string();
        let Inline::Spec(s) = parse_inline(&json!(text)).unwrap() else {
            panic!()
        };
        assert_eq!(s.hostname.unwrap().as_str(), "web1");
        let Inline::Spec(s) = parse_inline(&json!({"hostname": "h2"})).unwrap() else {
            panic!()
        };
        assert!(s.interfaces.is_empty());
        for (bad, want) in [
            (json!([]), "the resetnetwork value is an empty network list"),
            (
                json!({"interfaces": []}),
                "'interfaces' is an empty network list",
            ),
            (
                json!({"hostname": "bad_name"}),
                "'bad_name' is not a valid hostname: only letters, digits, '-' and '.' are allowed",
            ),
            (
                json!({"host": "x"}),
                "unknown key 'host' in the resetnetwork value (expected 'interfaces' and 'hostname')",
            ),
            (
                json!("{not json"),
                "the resetnetwork value is not valid JSON: key must be a string at line 1 column 2",
            ),
            (
                json!(5),
                "the resetnetwork value must be empty, a list or an object",
            ),
        ] {
            assert_eq!(parse_inline(&bad).unwrap_err().to_string(), want);
        }
    }

    #[test]
    fn vm_data_parses_every_entry_in_key_order_and_the_hostname() {
        let entries = [("bc764e206c5b", RACKSPACE_PRIVATE), ("DEADBEEF0001", NOVA)];
        let s = from_vm_data(&vm_data(&entries, None)).unwrap().unwrap();
        assert_eq!(s.interfaces.len(), 2);
        assert_eq!(s.interfaces[0].mac.to_string(), "de:ad:be:ef:00:01");
        assert_eq!(s.hostname, None);
        assert_eq!(s.source, "xenstore");
        let s = from_vm_data(&vm_data(&entries, Some("web1\n")))
            .unwrap()
            .unwrap();
        assert_eq!(s.hostname.unwrap().as_str(), "web1");
        // A blank hostname keeps the current one.
        let s = from_vm_data(&vm_data(&entries, Some(" \n")))
            .unwrap()
            .unwrap();
        assert_eq!(s.hostname, None);
        assert_eq!(from_vm_data(&vm_data(&[], Some("web1"))).unwrap(), None);
        let bad = vm_data(&[("DEADBEEF0001", "{oops")], None);
        assert!(
            from_vm_data(&bad)
                .unwrap_err()
                .to_string()
                .starts_with("vm-data/networking/DEADBEEF0001 is not valid JSON")
        );
        let dup = vm_data(&[("DEADBEEF0001", NOVA), ("deadbeef0001", NOVA)], None);
        assert_eq!(
            from_vm_data(&dup).unwrap_err().to_string(),
            "MAC de:ad:be:ef:00:01 is configured more than once"
        );
        let not_utf8 = VmData {
            hostname: Some(vec![0xff]),
            ..vm_data(&entries, None)
        };
        assert_eq!(
            from_vm_data(&not_utf8).unwrap_err().to_string(),
            "vm-data/hostname is not UTF-8 text"
        );
    }
}
