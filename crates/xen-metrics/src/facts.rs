//! What the publisher knows about the guest, and the [`Platform`] trait the OS-specific
//! sources implement. Everything here is platform-neutral.

use std::future::Future;
use std::net::IpAddr;

use guestd_core::Root;

/// What the OS says about itself. `None`: unknown (the key is not written).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OsFacts {
    /// Lower-case distribution id as XenCenter knows them (`debian`, `rhel`, `windows`, …).
    pub distro: Option<String>,
    /// Human-readable name (`Debian GNU/Linux 12 (bookworm)`).
    pub name: Option<String>,
    pub major: Option<String>,
    pub minor: Option<String>,
    /// Kernel release (`6.1.0-18-amd64`; Windows: `10.0.20348`).
    pub uname: Option<String>,
    /// The host name as the OS has it (may be a fully qualified name).
    pub hostname: Option<String>,
    /// The DNS domain, when the OS knows one besides the host name.
    pub domain: Option<String>,
}

/// Memory figures in KiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Memory {
    pub total_kib: u64,
    /// What is available to new programs (Linux `MemAvailable`, else `MemFree`).
    pub free_kib: u64,
}

/// One network interface of the guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nic {
    pub name: String,
    pub mac: Option<[u8; 6]>,
    /// The vif the OS itself ties this interface to (Linux: `device/vif/N` in sysfs
    /// `device/nodename`; FreeBSD: `xnN`). Without it the interface is matched by MAC
    /// against the toolstack's `device/vif/*/mac` (Windows) or SR-IOV VFs.
    pub vif: Option<u32>,
    /// Usable addresses, the OS's primary ones first.
    pub addresses: Vec<IpAddr>,
}

/// What changed, as a platform reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// An address or interface came or went.
    Network,
    /// The host name (and possibly the OS) changed.
    Hostname,
    /// The wall clock jumped (a resume, a migration, or an administrator setting it).
    ClockJump,
}

/// The OS-specific sources. Every method but [`next_event`](Platform::next_event) is quick
/// (pseudo-files, a system call or two); `next_event` waits without polling.
pub trait Platform: Send + 'static {
    /// The OS family, for logs.
    const NAME: &'static str;

    /// The `control/feature-*` keys (names after `control/`) whose requests this OS's kernel
    /// or drivers carry out, which guestd announces for it.
    fn control_features(&self) -> &'static [&'static str];

    /// OS name, version, kernel and host names; files are read through `root`.
    fn os(&mut self, root: &Root) -> OsFacts;

    /// Total and available memory, if known.
    fn memory(&mut self, root: &Root) -> Option<Memory>;

    /// Every interface but loopback, with its addresses, as known now.
    fn nics(&mut self, root: &Root) -> Vec<Nic>;

    /// The next change. Cancel-safe: a change is never lost by dropping the future.
    fn next_event(&mut self) -> impl Future<Output = Event> + Send;
}

/// A MAC address as the toolstack writes it (`aa:bb:cc:dd:ee:ff`, any case), parsed.
pub fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let hex: String = text
        .trim()
        .chars()
        .filter(|c| !matches!(c, ':' | '-'))
        .collect();
    if hex.len() != 12 || !hex.is_ascii() {
        return None;
    }
    let mut mac = [0u8; 6];
    for (i, b) in mac.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(mac)
}

/// `aa:bb:cc:dd:ee:ff`.
pub fn format_mac(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs() {
        let m = parse_mac("00:16:3E:0a:0B:ff").unwrap();
        assert_eq!(format_mac(&m), "00:16:3e:0a:0b:ff");
        assert_eq!(parse_mac("00-16-3e-0a-0b-ff"), Some(m));
        for bad in [
            "",
            "00:16:3e:0a:0b",
            "00:16:3e:0a:0b:zz",
            "00:16:3e:0a:0b:ff:00",
            "é0:16:3e:0a:0b:f",
        ] {
            assert_eq!(parse_mac(bad), None, "{bad}");
        }
    }
}
