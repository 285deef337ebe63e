//! The network model every host format produces and every renderer consumes, with the validating
//! constructors for its parts (MAC, netmask, prefix, hostname).
//!
//! Host text is typed here, at the boundary: addresses, prefixes, gateways, routes and DNS
//! servers are `IpAddr`/[`IpNet`], MACs [`Mac`], the hostname a [`Hostname`] (RFC 1123), so no
//! untyped host string reaches a renderer except the network label, which is free text (a
//! Neutron network name a tenant chooses): [`check_label`] refuses control characters and
//! overlong ones, and the renderers write it only through their escaping (guestd-distro's
//! `render::escape::informational`).
//! Error messages quote host text through [`shown`], so a hostile value cannot forge log lines.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// A network configuration problem; `Display` is the reason sent to the host.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NetworkError {
    /// The data from the host (or config drive) is unusable.
    #[error("{0}")]
    Invalid(String),
    /// The data is fine but does not fit this system (unknown MAC, no manager, …).
    #[error("{0}")]
    System(String),
}

/// A [`NetworkError::Invalid`] with this message.
pub fn invalid(msg: impl Into<String>) -> NetworkError {
    NetworkError::Invalid(msg.into())
}

/// Whether `c` may never be written into a configuration file: C0 controls (newline, carriage
/// return, NUL, …), DEL, C1 controls (YAML reads U+0085 as a line break) and the Unicode line
/// and paragraph separators (also line breaks to YAML).
pub fn is_control(c: char) -> bool {
    c.is_control() || matches!(c, '\u{2028}' | '\u{2029}')
}

/// Refuse `text` when it holds a control character; the error names `field`.
pub fn check_text(field: &str, text: &str) -> Result<(), NetworkError> {
    match text.chars().find(|c| is_control(*c)) {
        Some(c) => Err(invalid(format!(
            "{field} contains a control character (U+{:04X})",
            u32::from(c)
        ))),
        None => Ok(()),
    }
}

/// The longest network label accepted (Neutron's limit for a network name).
pub const LABEL_MAX: usize = 255;

/// A network label (free text from the host) is usable: no control character, at most
/// [`LABEL_MAX`] characters. `field` names it in the error.
pub fn check_label(field: &str, text: &str) -> Result<(), NetworkError> {
    check_text(field, text)?;
    if text.chars().count() > LABEL_MAX {
        return Err(invalid(format!(
            "{field} is longer than {LABEL_MAX} characters"
        )));
    }
    Ok(())
}

/// Host text as quoted in an error message or log: control characters and backslashes escaped,
/// at most 64 characters (the rest elided), so the message stays one honest line.
pub fn shown(text: &str) -> String {
    const MAX: usize = 64;
    let mut out = String::new();
    for (n, c) in text.chars().enumerate() {
        if n == MAX {
            out.push('…');
            break;
        }
        if is_control(c) || c == '\\' {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// A hardware address, kept as six bytes; displayed lowercase with colons.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Mac(pub [u8; 6]);

impl Mac {
    /// Accepts `aa:bb:cc:dd:ee:ff`, `AA-BB-…` and the 12 hex digits of a XenStore key, any case.
    pub fn parse(text: &str) -> Result<Self, NetworkError> {
        let hex: String = text
            .trim()
            .chars()
            .filter(|c| !matches!(c, ':' | '-' | '.'))
            .collect();
        let bad = || invalid(format!("'{}' is not a MAC address", shown(text)));
        if hex.len() != 12 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(bad());
        }
        let mut bytes = [0u8; 6];
        for (i, b) in bytes.iter_mut().enumerate() {
            *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
        }
        Ok(Self(bytes))
    }

    /// `AA:BB:CC:DD:EE:FF` (NetworkManager, ifcfg `HWADDR`).
    pub fn upper(&self) -> String {
        self.to_string().to_ascii_uppercase()
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

/// An address with its prefix length (`10.0.0.2/24`, `2001:db8::2/64`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IpNet {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl IpNet {
    pub fn new(addr: IpAddr, prefix: u8) -> Result<Self, NetworkError> {
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if prefix > max {
            let family = if addr.is_ipv4() { "IPv4" } else { "IPv6" };
            return Err(invalid(format!(
                "{family} prefix {prefix} of {addr} is over {max}"
            )));
        }
        Ok(Self { addr, prefix })
    }

    pub fn is_ipv4(&self) -> bool {
        self.addr.is_ipv4()
    }

    /// Whether the bits after the prefix are all zero (a network address).
    pub fn is_network(&self) -> bool {
        match self.addr {
            IpAddr::V4(a) => {
                let bits = u32::from(a);
                self.prefix == 32 || bits & (u32::MAX >> self.prefix) == 0
            }
            IpAddr::V6(a) => {
                let bits = u128::from(a);
                self.prefix == 128 || bits & (u128::MAX >> self.prefix) == 0
            }
        }
    }

    /// `0.0.0.0/0` or `::/0`.
    pub fn is_default(&self) -> bool {
        self.prefix == 0
    }

    /// The dotted netmask of an IPv4 prefix (`255.255.255.0`).
    pub fn netmask_v4(&self) -> Ipv4Addr {
        prefix_to_netmask(self.prefix)
    }
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// The dotted netmask for an IPv4 prefix length (0–32).
pub fn prefix_to_netmask(prefix: u8) -> Ipv4Addr {
    let bits = if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix.min(32)))
    };
    Ipv4Addr::from(bits)
}

/// The prefix length of a dotted IPv4 netmask; `None` when the ones are not contiguous.
pub fn netmask_to_prefix(mask: Ipv4Addr) -> Option<u8> {
    let bits = u32::from(mask);
    let ones = bits.leading_ones();
    (bits.checked_shl(ones).unwrap_or(0) == 0).then_some(ones as u8)
}

/// The prefix length of an IPv6 mask written as an address (`ffff:ffff::`).
pub fn netmask6_to_prefix(mask: Ipv6Addr) -> Option<u8> {
    let bits = u128::from(mask);
    let ones = bits.leading_ones();
    (bits.checked_shl(ones).unwrap_or(0) == 0).then_some(ones as u8)
}

/// A static route. No gateway means the destination is on the link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Route {
    pub dest: IpNet,
    pub gateway: Option<IpAddr>,
}

/// A valid hostname (RFC 1123: labels of letters, digits and `-`, at most 63 bytes each, 253 in
/// all). A trailing dot is dropped.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Hostname(String);

impl Hostname {
    pub fn parse(text: &str) -> Result<Self, NetworkError> {
        let name = text.trim();
        let name = name.strip_suffix('.').unwrap_or(name);
        let bad = |why: &str| invalid(format!("'{}' is not a valid hostname: {why}", shown(text)));
        if name.is_empty() {
            return Err(bad("it is empty"));
        }
        if name.len() > 253 {
            return Err(bad("it is longer than 253 characters"));
        }
        for label in name.split('.') {
            if label.is_empty() || label.len() > 63 {
                return Err(bad("each dot-separated part must have 1 to 63 characters"));
            }
            if !label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
                return Err(bad("only letters, digits, '-' and '.' are allowed"));
            }
            if label.starts_with('-') || label.ends_with('-') {
                return Err(bad("a part may not start or end with '-'"));
            }
        }
        Ok(Self(name.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The first label (`web1` of `web1.example.com`).
    pub fn short(&self) -> &str {
        self.0.split('.').next().unwrap_or(&self.0)
    }
}

impl fmt::Display for Hostname {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One interface as the host describes it (identified by MAC, not yet matched to a device).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceSpec {
    pub mac: Mac,
    /// The host's network label (`public`, `private`, a Neutron network name): free text,
    /// checked by [`check_label`] and written only through guestd-distro's
    /// `render::escape::informational`.
    pub label: Option<String>,
    /// Addresses in the host's order, IPv4 and IPv6 mixed.
    pub addresses: Vec<IpNet>,
    pub gateway4: Option<Ipv4Addr>,
    pub gateway6: Option<Ipv6Addr>,
    pub routes: Vec<Route>,
    pub dns: Vec<IpAddr>,
}

impl InterfaceSpec {
    pub fn ipv4(&self) -> impl Iterator<Item = &IpNet> {
        self.addresses.iter().filter(|a| a.is_ipv4())
    }

    pub fn ipv6(&self) -> impl Iterator<Item = &IpNet> {
        self.addresses.iter().filter(|a| !a.is_ipv4())
    }

    /// Check what does not depend on the source's syntax.
    pub fn validate(&self) -> Result<(), NetworkError> {
        let who = format!("interface {}", self.mac);
        if let Some(label) = &self.label {
            check_label(&format!("{who}: network label"), label)?;
        }
        if self.addresses.is_empty() {
            return Err(invalid(format!("{who} has no enabled IP addresses")));
        }
        if self.gateway4.is_some() && self.ipv4().next().is_none() {
            return Err(invalid(format!(
                "{who} has an IPv4 gateway but no IPv4 address"
            )));
        }
        if self.gateway6.is_some() && self.ipv6().next().is_none() {
            return Err(invalid(format!(
                "{who} has an IPv6 gateway but no IPv6 address"
            )));
        }
        for route in &self.routes {
            if !route.dest.is_network() {
                return Err(invalid(format!(
                    "{who}: route destination {} has bits set after the prefix",
                    route.dest
                )));
            }
            if let Some(gw) = route.gateway {
                if gw.is_ipv4() != route.dest.is_ipv4() {
                    return Err(invalid(format!(
                        "{who}: route {} has a gateway {gw} of the other IP family",
                        route.dest
                    )));
                }
            }
        }
        Ok(())
    }
}

/// What the host asked for: interfaces (possibly none when only the hostname changes) and a
/// hostname (possibly none: keep the current one).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetworkSpec {
    pub interfaces: Vec<InterfaceSpec>,
    pub hostname: Option<Hostname>,
    /// Where it came from, for logs (`xenstore`, `inline`, `config drive`).
    pub source: &'static str,
}

impl NetworkSpec {
    /// Validate every interface and reject duplicate MACs.
    pub fn validate(&self) -> Result<(), NetworkError> {
        let mut seen = std::collections::BTreeSet::new();
        for iface in &self.interfaces {
            if !seen.insert(iface.mac) {
                return Err(invalid(format!(
                    "MAC {} is configured more than once",
                    iface.mac
                )));
            }
            iface.validate()?;
        }
        Ok(())
    }
}

/// An interface matched to a device of this system.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    /// Device name (`eth0`, `ens3`, `xn0`, `Ethernet 2`).
    pub name: String,
    pub spec: InterfaceSpec,
}

impl std::ops::Deref for Interface {
    type Target = InterfaceSpec;
    fn deref(&self) -> &InterfaceSpec {
        &self.spec
    }
}

/// The configuration to render: matched interfaces sorted by device name, plus the hostname.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Network {
    pub interfaces: Vec<Interface>,
    pub hostname: Option<Hostname>,
}

impl Network {
    /// DNS servers over all interfaces, in order, without duplicates.
    pub fn dns(&self) -> Vec<IpAddr> {
        let mut all: Vec<IpAddr> = Vec::new();
        for ip in self.interfaces.iter().flat_map(|i| i.dns.iter()) {
            if !all.contains(ip) {
                all.push(*ip);
            }
        }
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_in_every_spelling() {
        let m = Mac::parse("BC764E206C5B").unwrap();
        assert_eq!(m.to_string(), "bc:76:4e:20:6c:5b");
        assert_eq!(Mac::parse("bc:76:4e:20:6C:5b").unwrap(), m);
        assert_eq!(Mac::parse("BC-76-4E-20-6C-5B").unwrap(), m);
        assert_eq!(m.upper(), "BC:76:4E:20:6C:5B");
        assert!(Mac::parse("BC764E206C").is_err());
        assert!(Mac::parse("zz:76:4e:20:6c:5b").is_err());
    }

    #[test]
    fn netmasks_and_prefixes() {
        assert_eq!(
            netmask_to_prefix("255.255.224.0".parse().unwrap()),
            Some(19)
        );
        assert_eq!(netmask_to_prefix("0.0.0.0".parse().unwrap()), Some(0));
        assert_eq!(
            netmask_to_prefix("255.255.255.255".parse().unwrap()),
            Some(32)
        );
        assert_eq!(netmask_to_prefix("255.0.255.0".parse().unwrap()), None);
        assert_eq!(prefix_to_netmask(12).to_string(), "255.240.0.0");
        assert_eq!(prefix_to_netmask(0).to_string(), "0.0.0.0");
        assert_eq!(
            netmask6_to_prefix("ffff:ffff:ffff:ffff::".parse().unwrap()),
            Some(64)
        );
        assert!(IpNet::new("::1".parse().unwrap(), 129).is_err());
        let err = IpNet::new("10.0.0.1".parse().unwrap(), 33).unwrap_err();
        assert_eq!(err.to_string(), "IPv4 prefix 33 of 10.0.0.1 is over 32");
        assert!(
            IpNet::new("10.208.0.0".parse().unwrap(), 12)
                .unwrap()
                .is_network()
        );
        assert!(
            !IpNet::new("10.208.0.1".parse().unwrap(), 12)
                .unwrap()
                .is_network()
        );
    }

    #[test]
    fn hostnames() {
        assert_eq!(Hostname::parse("web1").unwrap().as_str(), "web1");
        let fqdn = Hostname::parse("web1.example.com.").unwrap();
        assert_eq!(fqdn.as_str(), "web1.example.com");
        assert_eq!(fqdn.short(), "web1");
        assert!(Hostname::parse("RESCUE-web1").is_ok());
        for bad in ["", "a_b", "-a", "a-", "a..b", "bad host", &"x".repeat(64)] {
            assert!(Hostname::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            Hostname::parse("a_b").unwrap_err().to_string(),
            "'a_b' is not a valid hostname: only letters, digits, '-' and '.' are allowed"
        );
    }
}
