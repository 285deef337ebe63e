//! The generated files are accepted by the distributions' own tools: ifupdown's `ifquery` parses
//! the golden `interfaces` files and reports the right addresses, and `netplan generate` accepts
//! the golden netplan YAML (and renders the addresses for networkd). The golden tests prove the
//! files are what the renderers produce; these prove the tools read them as meant.
//! Needs the Debian packages `ifupdown` and `netplan.io` (scripts/test-all installs them).
#![cfg(unix)]
#![allow(clippy::disallowed_methods)] // tests run the real tools

use std::path::{Path, PathBuf};
use std::process::Command;

fn golden(manager: &str, case: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden/network")
        .join(manager)
        .join(case)
        .join("after")
}

fn tool(name: &str, package: &str) -> PathBuf {
    for dir in ["/usr/sbin", "/sbin", "/usr/bin", "/bin"] {
        let p = Path::new(dir).join(name);
        if p.exists() {
            return p;
        }
    }
    panic!("{name} is not installed: apt-get install {package} (scripts/test-all does this)");
}

fn run(cmd: &mut Command) -> (bool, String) {
    let out = cmd.output().expect("run tool");
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// Copy a golden `interfaces` into a temp dir with its `source` line pointing at the golden
/// `interfaces.d` (not this machine's).
fn interfaces_copy(case: &str) -> (tempfile::TempDir, PathBuf) {
    let after = golden("ifupdown", case);
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(after.join("etc/network/interfaces")).unwrap();
    let text = text.replace(
        "source /etc/network/interfaces.d/*",
        &format!(
            "source {}/*",
            after.join("etc/network/interfaces.d").display()
        ),
    );
    let file = dir.path().join("interfaces");
    std::fs::write(&file, text).unwrap();
    (dir, file)
}

fn ifquery(file: &Path, args: &[&str]) -> String {
    let (ok, text) = run(Command::new(tool("ifquery", "ifupdown"))
        .arg("-i")
        .arg(file)
        .args(args));
    assert!(ok, "ifquery {args:?} failed: {text}");
    text
}

#[test]
fn ifquery_reads_the_rackspace_interfaces() {
    let (_d, file) = interfaces_copy("rackspace");
    let list = ifquery(&file, &["--list"]);
    let names: Vec<&str> = list.lines().collect();
    assert_eq!(names, ["lo", "br9", "eth0", "eth1"], "{list}");
    let eth0 = ifquery(&file, &["eth0"]);
    for want in [
        "address: 198.51.100.10\nnetmask: 255.255.255.0\ngateway: 198.51.100.1\n",
        "dns-nameservers: 72.3.128.241 72.3.128.240",
        "address: 198.51.100.11\nnetmask: 255.255.255.0\n",
        "address: 2001:db8:0:1::10\nnetmask: 64\ngateway: 2001:db8:0:1::1\n",
        "address: 2001:db8:0:1::11\nnetmask: 64\n",
    ] {
        assert!(eth0.contains(want), "eth0 lacks {want:?}:\n{eth0}");
    }
    let eth1 = ifquery(&file, &["eth1"]);
    for want in [
        "address: 10.208.227.239\nnetmask: 255.255.224.0\n",
        "up: ip route replace 10.208.0.0/12 via 10.208.224.1 dev eth1",
        "up: ip route replace 10.176.0.0/12 via 10.208.224.1 dev eth1",
    ] {
        assert!(eth1.contains(want), "eth1 lacks {want:?}:\n{eth1}");
    }
    assert!(
        !eth1.contains("dhcp"),
        "the cloud-init stanza is gone:\n{eth1}"
    );
}

#[test]
fn ifquery_reads_the_one_interface_file() {
    let (_d, file) = interfaces_copy("one-interface");
    let eth0 = ifquery(&file, &["eth0"]);
    assert!(
        eth0.contains("address: 198.51.100.10\nnetmask: 255.255.255.0\ngateway: 198.51.100.1\n"),
        "{eth0}"
    );
    assert!(
        eth0.contains("address: 2001:db8:0:1::10\nnetmask: 64\ngateway: 2001:db8:0:1::1\n"),
        "{eth0}"
    );
    assert!(
        eth0.contains("dns-nameservers: 192.0.2.53 2001:db8::53"),
        "{eth0}"
    );
}

fn netplan_generate(case: &str) -> (bool, String, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let netplan = dir.path().join("etc/netplan");
    std::fs::create_dir_all(&netplan).unwrap();
    for entry in std::fs::read_dir(golden("netplan", case).join("etc/netplan")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), netplan.join(entry.file_name())).unwrap();
    }
    let (ok, text) = run(Command::new(tool("netplan", "netplan.io"))
        .arg("generate")
        .arg("--root-dir")
        .arg(dir.path()));
    (ok, text, dir)
}

#[test]
fn netplan_generate_accepts_the_yaml() {
    let (ok, text, dir) = netplan_generate("rackspace");
    assert!(ok, "netplan generate failed: {text}");
    let read = |name: &str| {
        std::fs::read_to_string(dir.path().join("run/systemd/network").join(name))
            .unwrap_or_else(|e| panic!("{name}: {e}; netplan said: {text}"))
    };
    let eth0 = read("10-netplan-eth0.network");
    for want in [
        "Address=198.51.100.10/24",
        "Address=198.51.100.11/24",
        "Address=2001:db8:0:1::10/64",
        "Address=2001:db8:0:1::11/64",
        "DNS=72.3.128.241",
        "Gateway=198.51.100.1",
        "Gateway=2001:db8:0:1::1",
    ] {
        assert!(eth0.contains(want), "eth0 lacks {want}:\n{eth0}");
    }
    // The cloud-init file's dhcp4 is overridden by guestd's later file.
    assert!(
        !eth0.contains("DHCP=ipv4") && !eth0.contains("DHCP=yes"),
        "{eth0}"
    );
    let eth1 = read("10-netplan-eth1.network");
    assert!(
        eth1.contains("Destination=10.176.0.0/12\nGateway=10.208.224.1"),
        "{eth1}"
    );
}

#[test]
fn netplan_generate_rejects_a_broken_file() {
    // The check above can fail: netplan does reject bad YAML.
    let (ok, _, dir) = netplan_generate("one-interface");
    assert!(ok);
    let file = dir.path().join("etc/netplan/90-guestd.yaml");
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, text.replace("198.51.100.10/24", "198.51.100.10/99")).unwrap();
    let (ok, text) = run(Command::new(tool("netplan", "netplan.io"))
        .arg("generate")
        .arg("--root-dir")
        .arg(dir.path()));
    assert!(!ok, "netplan accepted a /99 prefix: {text}");
}
