//! The guest's network devices by MAC, and matching the host's interfaces to them.
//!
//! Linux: `/sys/class/net/*/address` through `Root` (Ethernet only: `type` 1; loopback and
//! devices without an address are skipped). FreeBSD: the `ether` lines of `ifconfig -a`.
//! Windows: `getmac /fo csv /nh /v` (connection name and MAC).

use std::collections::BTreeMap;

use guestd_core::{ProcessRunner, ProcessSpec, Root};

use super::model::{Interface, Mac, Network, NetworkError, NetworkSpec};
use crate::OsFamily;

/// MAC → device name.
pub type Devices = BTreeMap<Mac, String>;

/// List the devices of this system.
pub fn discover(
    family: OsFamily,
    root: &Root,
    runner: &dyn ProcessRunner,
) -> Result<Devices, NetworkError> {
    match family {
        OsFamily::FreeBsd => {
            let out = run(runner, ProcessSpec::new("ifconfig").arg("-a").observes())?;
            Ok(parse_ifconfig(&out))
        }
        OsFamily::Windows => {
            let out = run(
                runner,
                ProcessSpec::new("getmac")
                    .args(["/fo", "csv", "/nh", "/v"])
                    .observes(),
            )?;
            Ok(parse_getmac(&out))
        }
        _ => sysfs(root),
    }
}

fn run(runner: &dyn ProcessRunner, cmd: ProcessSpec) -> Result<String, NetworkError> {
    let program = cmd.program.clone();
    let out = runner
        .run(&cmd)
        .and_then(|o| o.check(&program))
        .map_err(|e| NetworkError::System(format!("cannot list network devices: {e}")))?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Ethernet devices under `/sys/class/net`.
pub fn sysfs(root: &Root) -> Result<Devices, NetworkError> {
    let names = root
        .read_dir("/sys/class/net")
        .map_err(|e| NetworkError::System(format!("cannot list network devices: {e}")))?;
    let mut devices = Devices::new();
    for name in names {
        if name == "lo" {
            continue;
        }
        let dir = format!("/sys/class/net/{name}");
        let kind = root
            .read_to_string(format!("{dir}/type"))
            .ok()
            .map(|t| t.trim().to_string());
        if kind.as_deref().is_some_and(|t| t != "1") {
            continue; // not Ethernet (loopback, tunnels, InfiniBand…)
        }
        let Ok(text) = root.read_to_string(format!("{dir}/address")) else {
            continue;
        };
        let Ok(mac) = Mac::parse(&text) else {
            continue;
        };
        if mac.0 == [0; 6] {
            continue;
        }
        // A bond's members share its MAC; the first name (sorted) wins, a physical device
        // (`device` link present) over a virtual one.
        let physical = root.exists(format!("{dir}/device"));
        match devices.get(&mac) {
            Some(existing)
                if !physical || root.exists(format!("/sys/class/net/{existing}/device")) => {}
            _ => {
                devices.insert(mac, name);
            }
        }
    }
    Ok(devices)
}

/// `ifconfig -a` (FreeBSD): `xn0: flags=…` then `\tether 00:16:3e:…`.
pub fn parse_ifconfig(text: &str) -> Devices {
    let mut devices = Devices::new();
    let mut current = None;
    for line in text.lines() {
        if !line.starts_with(char::is_whitespace) {
            current = line.split(':').next().map(str::to_string);
        } else if let (Some(name), Some(mac)) = (&current, line.trim().strip_prefix("ether ")) {
            if let Ok(mac) = Mac::parse(mac.split_whitespace().next().unwrap_or("")) {
                devices.entry(mac).or_insert_with(|| name.clone());
            }
        }
    }
    devices
}

/// `getmac /fo csv /nh /v` (Windows): `"Ethernet","Intel…","00-15-5D-…","\Device\…"`.
pub fn parse_getmac(text: &str) -> Devices {
    let mut devices = Devices::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split("\",\"").map(|f| f.trim_matches('"')).collect();
        if let [name, _, mac, ..] = fields.as_slice() {
            if let Ok(mac) = Mac::parse(mac) {
                devices.entry(mac).or_insert_with(|| name.to_string());
            }
        }
    }
    devices
}

/// Match every interface of `spec` to a device; an unknown MAC is an error naming it.
pub fn resolve(spec: &NetworkSpec, devices: &Devices) -> Result<Network, NetworkError> {
    let mut interfaces = Vec::new();
    for iface in &spec.interfaces {
        let name = devices.get(&iface.mac).ok_or_else(|| {
            NetworkError::System(format!("no network device has MAC {}", iface.mac))
        })?;
        interfaces.push(Interface {
            name: name.clone(),
            spec: iface.clone(),
        });
    }
    interfaces.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(Network {
        interfaces,
        hostname: spec.hostname.clone(),
    })
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // tests build their trees by path
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn sysfs_lists_ethernet_devices() {
        let d = tempfile::tempdir().unwrap();
        let net = d.path().join("sys/class/net");
        for (name, mac, kind) in [
            ("lo", "00:00:00:00:00:00", "772"),
            ("eth0", "BC:76:4E:20:6C:5B\n", "1"),
            ("eth1", "bc:76:4e:20:6c:5c\n", "1"),
            ("tun0", "", "65534"),
        ] {
            std::fs::create_dir_all(net.join(name)).unwrap();
            std::fs::write(net.join(name).join("address"), mac).unwrap();
            std::fs::write(net.join(name).join("type"), kind).unwrap();
        }
        let root = Root::sandbox(d.path()).unwrap();
        let devices = sysfs(&root).unwrap();
        let names: Vec<_> = devices.values().cloned().collect();
        assert_eq!(names, ["eth0", "eth1"]);
        let spec = NetworkSpec {
            interfaces: vec![super::super::model::InterfaceSpec {
                mac: Mac::parse("de:ad:be:ef:00:01").unwrap(),
                label: None,
                addresses: vec![],
                gateway4: None,
                gateway6: None,
                routes: vec![],
                dns: vec![],
            }],
            ..Default::default()
        };
        assert_eq!(
            resolve(&spec, &devices).unwrap_err().to_string(),
            "no network device has MAC de:ad:be:ef:00:01"
        );
    }

    #[test]
    fn freebsd_and_windows_listings() {
        let ifc = "xn0: flags=8843<UP,BROADCAST> metric 0 mtu 1500\n\toptions=503<RXCSUM>\n\tether 00:16:3e:aa:bb:cc\n\tinet 10.0.0.5 netmask 0xffffff00\nlo0: flags=8049<UP,LOOPBACK>\n\tinet 127.0.0.1\n";
        let d = parse_ifconfig(ifc);
        assert_eq!(d.get(&Mac::parse("00163EAABBCC").unwrap()).unwrap(), "xn0");
        assert_eq!(d.len(), 1);
        let gm = "\"Ethernet 2\",\"Intel(R) 82574L\",\"00-15-5D-01-02-03\",\"\\Device\\Tcpip_{X}\"\r\n\"Wi-Fi\",\"Intel\",\"N/A\",\"Media disconnected\"\r\n";
        let d = parse_getmac(gm);
        assert_eq!(
            d.get(&Mac::parse("00155d010203").unwrap()).unwrap(),
            "Ethernet 2"
        );
        assert_eq!(d.len(), 1);
    }
}
