//! What every renderer may rely on: run by [`super::render`] before any renderer, also for a
//! model built in code rather than parsed from host data.
//!
//! - Device names come from the guest (sysfs, `ifconfig -a`, `getmac`), not from the host, but
//!   they end up in file names, shell variable names, YAML keys and command lines, so they are
//!   held to what the platform's own tools produce. Linux and FreeBSD: 1 to 15 ASCII letters,
//!   digits, `_`, `.` or `-`, starting with a letter or digit (kernel names such as `eth0`,
//!   `ens3`, `enp0s3`, `xn0`, `vtnet0`, `eth0.100`, `br-lan`). Windows: the connection name
//!   (`Ethernet 2`, localized names included), without a control character or any of
//!   `"\/:*?<>|` (which Windows itself does not allow in one), at most 256 characters.
//! - Labels: no control character, at most 255 characters (`model::check_label`).

use super::super::manager::NetworkTool;
use super::super::model::{Network, NetworkError, check_label, check_text, invalid, shown};

/// The longest device name on Linux and FreeBSD (`IFNAMSIZ` - 1).
const UNIX_NAME_MAX: usize = 15;
/// The longest Windows connection name.
const WINDOWS_NAME_MAX: usize = 256;

/// Refuse a model the renderers of `manager` must not write.
pub fn network(manager: NetworkTool, net: &Network) -> Result<(), NetworkError> {
    for iface in &net.interfaces {
        device_name(&iface.name, manager == NetworkTool::Windows)?;
        if let Some(label) = &iface.label {
            check_label(&format!("interface {}: network label", iface.name), label)?;
        }
    }
    Ok(())
}

/// Check a device name (see the module doc).
pub fn device_name(name: &str, windows: bool) -> Result<(), NetworkError> {
    let field = format!("network device name '{}'", shown(name));
    check_text(&field, name)?;
    let refuse = |why: &str| invalid(format!("{field} is not written into configuration: {why}"));
    if windows {
        if name.trim().is_empty() || name.chars().count() > WINDOWS_NAME_MAX {
            return Err(refuse("a Windows connection name has 1 to 256 characters"));
        }
        if let Some(c) = name.chars().find(|c| "\"\\/:*?<>|".contains(*c)) {
            return Err(refuse(&format!(
                "Windows does not allow '{c}' in a connection name"
            )));
        }
        return Ok(());
    }
    let plain = name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    let first_ok = name
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_alphanumeric());
    if !(1..=UNIX_NAME_MAX).contains(&name.len()) || !plain || !first_ok {
        return Err(refuse(
            "only 1 to 15 letters, digits, '_', '.' and '-', starting with a letter or digit",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_names() {
        for ok in [
            "eth0",
            "ens3",
            "enp0s31f6",
            "xn0",
            "eth0.100",
            "br-lan",
            "wlp2s0",
        ] {
            assert!(device_name(ok, false).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "-eth0",
            ".x",
            "eth 0",
            "a$(b)",
            "eth0'",
            "abcdefghijklmnop",
            "é0",
        ] {
            assert!(device_name(bad, false).is_err(), "{bad:?}");
        }
        assert_eq!(
            device_name("eth\n0", false).unwrap_err().to_string(),
            "network device name 'eth\\n0' contains a control character (U+000A)"
        );
        for ok in [
            "Ethernet 2",
            "Connexion au réseau local",
            "LAN 'a' $(x) ‘b’",
        ] {
            assert!(device_name(ok, true).is_ok(), "{ok}");
        }
        assert_eq!(
            device_name("a\"b", true).unwrap_err().to_string(),
            "network device name 'a\"b' is not written into configuration: Windows does not allow '\"' in a connection name"
        );
        assert!(device_name(" ", true).is_err());
    }
}
