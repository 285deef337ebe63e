//! XenCenter's static IP setting (`control/feature-static-ip-setting`), which until now only
//! the Windows PV tools offered.
//!
//! The toolstack writes, per vif, `xenserver/device/vif/<id>/static-ip-setting/`:
//! `mac`, `enabled` (`1`: set `address` `a.b.c.d/n` and `gateway`; `0`: back to automatic)
//! and `enabled6` (the same for `address6`/`gateway6`). The guest applies the request,
//! writes `error-code` (`0` on success) and `error-msg` (empty on success) beside it, and
//! removes `enabled`/`enabled6`, as the Windows PV tools do.
//!
//! Every value is the host's, so hostile: each is checked (a decimal vif id, a MAC, `0`/`1`,
//! an address with its prefix length, a gateway of the same family inside that network)
//! before anything is built, and the network model handed to resetnetwork's backend is made
//! of the parsed values, never of the host's text. It goes the way `resetnetwork` goes: the
//! backend plans it for the network manager in use (`Backend::plan_reset_network`: restart only
//! that interface, check the address came up) and `guestd_core::apply_network_plan` carries
//! the plan out, putting the previous configuration back if anything fails.
//!
//! Error codes: `1` the request is invalid (nothing changed), `2` applying it failed (the
//! previous configuration was restored), `3` not supported (returning to automatic
//! configuration; nothing changed).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use guestd_core::{BackendError, Env, NetworkRequest, apply_network_plan};
use guestd_network_model::{InterfaceSpec, IpNet, Mac, NetworkSpec};

use crate::facts::parse_mac;

/// Where the toolstack writes the requests.
pub const REQUESTS: &str = "xenserver/device/vif";
/// The feature key the toolstack looks for.
pub const FEATURE: &str = "feature-static-ip-setting";

/// Longest host value looked at.
const MAX_FIELD: usize = 128;
/// Longest `error-msg` written.
const MAX_MESSAGE: usize = 512;

/// A request as read from XenStore (raw host values).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RawRequest {
    pub vif: String,
    pub mac: Option<String>,
    pub enabled: Option<String>,
    pub enabled6: Option<String>,
    pub address: Option<String>,
    pub gateway: Option<String>,
    pub address6: Option<String>,
    pub gateway6: Option<String>,
}

impl RawRequest {
    /// The directory of this vif's request.
    pub fn dir(vif: &str) -> String {
        format!("{REQUESTS}/{vif}/static-ip-setting")
    }

    /// Whether there is anything to do (a trigger key is present).
    pub fn pending(&self) -> bool {
        self.enabled.is_some() || self.enabled6.is_some()
    }
}

/// The result written back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub code: u32,
    pub message: String,
}

impl Answer {
    pub fn ok() -> Self {
        Self {
            code: 0,
            message: String::new(),
        }
    }

    fn new(code: u32, message: impl Into<String>) -> Self {
        Self {
            code,
            message: printable(&message.into()),
        }
    }
}

/// A checked request: what to configure on the interface with `mac`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    pub vif: u32,
    pub mac: [u8; 6],
    pub v4: Option<(Ipv4Addr, u8, Option<Ipv4Addr>)>,
    pub v6: Option<(Ipv6Addr, u8, Option<Ipv6Addr>)>,
}

/// Check every host value; the answer to write when the request cannot be carried out.
pub fn check(raw: &RawRequest) -> Result<Checked, Answer> {
    let invalid = |m: String| Answer::new(1, m);
    let vif: u32 = raw
        .vif
        .parse()
        .ok()
        .filter(|_| raw.vif.chars().all(|c| c.is_ascii_digit()))
        .ok_or_else(|| invalid(format!("'{}' is not a vif number", shown(&raw.vif))))?;
    let flag = |name: &str, v: &Option<String>| -> Result<Option<bool>, Answer> {
        match v.as_deref().map(str::trim) {
            None => Ok(None),
            Some("1") => Ok(Some(true)),
            Some("0") => Ok(Some(false)),
            Some(other) => Err(invalid(format!(
                "{name} must be 0 or 1, not '{}'",
                shown(other)
            ))),
        }
    };
    let (enabled, enabled6) = (
        flag("enabled", &raw.enabled)?,
        flag("enabled6", &raw.enabled6)?,
    );
    if enabled == Some(false) || enabled6 == Some(false) {
        return Err(Answer::new(
            3,
            format!(
                "returning vif {vif} to automatic {} configuration is not supported by guestd; \
                 its configuration is unchanged",
                if enabled == Some(false) {
                    "IPv4"
                } else {
                    "IPv6"
                }
            ),
        ));
    }
    let mac_text = raw
        .mac
        .as_deref()
        .ok_or_else(|| invalid(format!("vif {vif}: static-ip-setting/mac is missing")))?;
    let mac = parse_mac(bounded(mac_text)?)
        .ok_or_else(|| invalid(format!("'{}' is not a MAC address", shown(mac_text))))?;
    let v4 = match enabled {
        Some(true) => {
            let text = raw.address.as_deref().ok_or_else(|| {
                invalid(format!("vif {vif}: static-ip-setting/address is missing"))
            })?;
            let (ip, prefix) = cidr::<Ipv4Addr>(text, 32)?;
            Some((ip, prefix, gateway(raw.gateway.as_deref(), ip, prefix)?))
        }
        _ => None,
    };
    let v6 = match enabled6 {
        Some(true) => {
            let text = raw.address6.as_deref().ok_or_else(|| {
                invalid(format!("vif {vif}: static-ip-setting/address6 is missing"))
            })?;
            let (ip, prefix) = cidr::<Ipv6Addr>(text, 128)?;
            Some((ip, prefix, gateway(raw.gateway6.as_deref(), ip, prefix)?))
        }
        _ => None,
    };
    Ok(Checked { vif, mac, v4, v6 })
}

fn bounded(text: &str) -> Result<&str, Answer> {
    if text.len() > MAX_FIELD {
        return Err(Answer::new(
            1,
            format!("a value is longer than {MAX_FIELD} bytes"),
        ));
    }
    Ok(text.trim())
}

/// `a.b.c.d/n` (or `x::y/n`): a usable host address and a prefix length of 1..=max.
fn cidr<T>(text: &str, max: u8) -> Result<(T, u8), Answer>
where
    T: std::str::FromStr + Into<IpAddr> + Copy,
{
    let text = bounded(text)?;
    let bad = |why: &str| {
        Answer::new(
            1,
            format!("'{}' is not a valid address: {why}", shown(text)),
        )
    };
    let (ip, prefix) = text
        .split_once('/')
        .ok_or_else(|| bad("expected address/prefix-length"))?;
    let ip: T = ip
        .parse()
        .map_err(|_| bad("not an address of this family"))?;
    let prefix: u8 = prefix
        .parse()
        .ok()
        .filter(|p| (1..=max).contains(p) && prefix.chars().all(|c| c.is_ascii_digit()))
        .ok_or_else(|| bad(&format!("the prefix length must be 1 to {max}")))?;
    let addr: IpAddr = ip.into();
    let unusable = match addr {
        IpAddr::V4(a) => {
            a.is_unspecified() || a.is_broadcast() || a.is_multicast() || a.is_loopback()
        }
        IpAddr::V6(a) => a.is_unspecified() || a.is_multicast() || a.is_loopback(),
    };
    if unusable {
        return Err(bad("not a host address"));
    }
    Ok((ip, prefix))
}

/// An optional gateway of `addr`'s family, inside `addr/prefix`.
fn gateway<T>(text: Option<&str>, addr: T, prefix: u8) -> Result<Option<T>, Answer>
where
    T: std::str::FromStr + Into<IpAddr> + Copy + PartialEq,
{
    let Some(text) = text.map(bounded).transpose()?.filter(|t| !t.is_empty()) else {
        return Ok(None);
    };
    let bad = |why: String| Answer::new(1, format!("gateway '{}' {why}", shown(text)));
    let gw: T = text.parse().map_err(|_| {
        if text.parse::<IpAddr>().is_ok() {
            bad("is not of the address's family".into())
        } else {
            bad("is not an address".into())
        }
    })?;
    let net: IpAddr = addr.into();
    if !same_network(gw.into(), net, prefix) {
        return Err(bad(format!("is not in {net}/{prefix}")));
    }
    if gw == addr {
        return Err(bad("is the address itself".into()));
    }
    Ok(Some(gw))
}

fn same_network(a: IpAddr, b: IpAddr, prefix: u8) -> bool {
    match (a, b) {
        (IpAddr::V4(a), IpAddr::V4(b)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            u32::from(a) & mask == u32::from(b) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(b)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            u128::from(a) & mask == u128::from(b) & mask
        }
        _ => false,
    }
}

/// The network model for a checked request: one interface, by MAC, with the requested
/// addresses and gateways (the hostname unchanged).
pub fn network_spec(c: &Checked) -> Result<NetworkSpec, Answer> {
    let invalid = |e: guestd_network_model::NetworkError| Answer::new(1, e.to_string());
    let mut addresses = Vec::new();
    if let Some((ip, prefix, _)) = c.v4 {
        addresses.push(IpNet::new(ip.into(), prefix).map_err(invalid)?);
    }
    if let Some((ip, prefix, _)) = c.v6 {
        addresses.push(IpNet::new(ip.into(), prefix).map_err(invalid)?);
    }
    let spec = NetworkSpec {
        interfaces: vec![InterfaceSpec {
            mac: Mac(c.mac),
            label: None,
            addresses,
            gateway4: c.v4.and_then(|(_, _, gw)| gw),
            gateway6: c.v6.and_then(|(_, _, gw)| gw),
            routes: Vec::new(),
            dns: Vec::new(),
        }],
        hostname: None,
        source: "static-ip-setting",
    };
    spec.validate().map_err(invalid)?;
    Ok(spec)
}

/// Check and apply one request through the backend (blocking: runs commands). The answer to
/// write back.
pub fn apply(env: &Env, manager: Option<&str>, raw: &RawRequest) -> Answer {
    let checked = match check(raw) {
        Ok(c) => c,
        Err(answer) => return answer,
    };
    let spec = match network_spec(&checked) {
        Ok(spec) => spec,
        Err(answer) => return answer,
    };
    let request = NetworkRequest {
        spec: &spec,
        manager,
    };
    let done = env
        .backend
        .plan_reset_network(env, &request)
        .and_then(|planned| apply_network_plan(env, &planned));
    match done {
        Ok(_) => Answer::ok(),
        Err(BackendError::Invalid(m)) => Answer::new(1, m),
        Err(BackendError::Unsupported(what)) => {
            Answer::new(3, format!("{what} is not supported on this OS"))
        }
        Err(e) => Answer::new(2, e.to_string()),
    }
}

/// Printable ASCII (the Windows drivers accept nothing else), at most [`MAX_MESSAGE`] bytes.
fn printable(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c == ' ' || c.is_ascii_graphic() {
                c
            } else {
                '?'
            }
        })
        .take(MAX_MESSAGE)
        .collect()
}

/// A host value as shown in a message: printable and short.
fn shown(text: &str) -> String {
    printable(&text.chars().take(64).collect::<String>())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(fields: &[(&str, &str)]) -> RawRequest {
        let mut r = RawRequest {
            vif: "0".into(),
            mac: Some("00:16:3e:00:00:01".into()),
            ..Default::default()
        };
        for (k, v) in fields {
            if *k == "vif" {
                r.vif = v.to_string();
                continue;
            }
            let v = Some(v.to_string());
            match *k {
                "mac" => r.mac = v,
                "enabled" => r.enabled = v,
                "enabled6" => r.enabled6 = v,
                "address" => r.address = v,
                "gateway" => r.gateway = v,
                "address6" => r.address6 = v,
                "gateway6" => r.gateway6 = v,
                _ => unreachable!(),
            }
        }
        r
    }

    #[test]
    fn a_good_request_becomes_the_network_model() {
        let c = check(&req(&[
            ("enabled", "1"),
            ("address", "192.0.2.10/24"),
            ("gateway", "192.0.2.1"),
            ("enabled6", "1"),
            ("address6", "2001:db8::10/64"),
            ("gateway6", "2001:db8::1"),
        ]))
        .unwrap();
        let spec = network_spec(&c).unwrap();
        assert_eq!(spec.hostname, None);
        let [iface] = spec.interfaces.as_slice() else {
            panic!("{spec:?}")
        };
        assert_eq!(iface.mac.to_string(), "00:16:3e:00:00:01");
        let addrs: Vec<String> = iface.addresses.iter().map(|a| a.to_string()).collect();
        assert_eq!(addrs, ["192.0.2.10/24", "2001:db8::10/64"]);
        assert_eq!(iface.gateway4, Some("192.0.2.1".parse().unwrap()));
        assert_eq!(iface.gateway6, Some("2001:db8::1".parse().unwrap()));
        assert!(iface.routes.is_empty() && iface.dns.is_empty() && iface.label.is_none());
        let only4 = check(&req(&[("enabled", "1"), ("address", "10.0.0.5/8")])).unwrap();
        assert!(only4.v6.is_none() && only4.v4.unwrap().2.is_none());
    }

    #[test]
    fn bad_requests_are_answered_and_never_applied() {
        for (fields, code, words) in [
            (
                vec![("enabled", "1"), ("address", "192.0.2.300/24")],
                1,
                "not a valid address",
            ),
            (
                vec![("enabled", "1"), ("address", "192.0.2.10")],
                1,
                "address/prefix-length",
            ),
            (
                vec![("enabled", "1"), ("address", "192.0.2.10/33")],
                1,
                "1 to 32",
            ),
            (
                vec![("enabled", "1"), ("address", "192.0.2.10/+8")],
                1,
                "1 to 32",
            ),
            (
                vec![("enabled", "1"), ("address", "0.0.0.0/8")],
                1,
                "not a host address",
            ),
            (vec![("enabled", "1")], 1, "address is missing"),
            (
                vec![
                    ("enabled", "1"),
                    ("address", "192.0.2.10/24"),
                    ("gateway", "10.0.0.1"),
                ],
                1,
                "is not in 192.0.2.10/24",
            ),
            (
                vec![
                    ("enabled", "1"),
                    ("address", "192.0.2.10/24"),
                    ("gateway", "2001:db8::1"),
                ],
                1,
                "family",
            ),
            (
                vec![("enabled", "yes"), ("address", "192.0.2.10/24")],
                1,
                "must be 0 or 1",
            ),
            (
                vec![("enabled6", "1"), ("address6", "2001:db8::1/129")],
                1,
                "1 to 128",
            ),
            (
                vec![
                    ("enabled", "1"),
                    ("address", "192.0.2.10/24"),
                    ("mac", "nope"),
                ],
                1,
                "not a MAC",
            ),
            (
                vec![
                    ("vif", "0; rm -rf /"),
                    ("enabled", "1"),
                    ("address", "192.0.2.10/24"),
                ],
                1,
                "not a vif number",
            ),
            (vec![("enabled", "0")], 3, "not supported"),
        ] {
            let a = check(&req(&fields)).unwrap_err();
            assert_eq!(a.code, code, "{fields:?}: {a:?}");
            assert!(a.message.contains(words), "{fields:?}: {}", a.message);
            assert!(a.message.chars().all(|c| c == ' ' || c.is_ascii_graphic()));
        }
        let hostile = check(&req(&[
            ("enabled", "1"),
            ("address", "1.2.3.4/24\n\u{1b}[31m"),
        ]))
        .unwrap_err();
        assert!(
            hostile
                .message
                .chars()
                .all(|c| c == ' ' || c.is_ascii_graphic()),
            "{hostile:?}"
        );
        let long = "1".repeat(500);
        assert!(
            check(&req(&[("enabled", "1"), ("address", &long)]))
                .unwrap_err()
                .message
                .contains("longer")
        );
    }
}
