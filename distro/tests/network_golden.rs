//! Golden trees for every network renderer: `tests/golden/network/<manager>/<case>/`.
//!
//! `input` is JSON: `family` (os family name), `manager`, `value` (the resetnetwork value),
//! `devices` (name → MAC; written to `/sys/class/net`, or answered for FreeBSD's `ifconfig -a`
//! and Windows' `getmac`), optional `fail` (command-line prefixes that exit 1) and `down` (the
//! interfaces never show their addresses). The fake runner plays a kernel on which a restart
//! brings up exactly the requested addresses.
//!
//! `UPDATE_GOLDEN=1 cargo test -p guestd-distro --test network_golden` rewrites the
//! expectations; review the diff.
#![cfg(unix)]
#![allow(clippy::disallowed_methods)] // tests build their trees by path

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use guestd_core::{Backend, Env, NetworkRequest, Output};
use guestd_distro::network::computer_name::RecordingComputerName;
use guestd_distro::{OsBackend, OsFamily};
use guestd_network_model::nova::{Inline, parse_inline};
use guestd_testkit::golden;
use serde_json::Value;

fn family(name: &str) -> OsFamily {
    match name {
        "freebsd" => OsFamily::FreeBsd,
        "windows" => OsFamily::Windows,
        other => OsFamily::from_id(other).unwrap_or_else(|| panic!("unknown family {other}")),
    }
}

/// Run one case; returns the result line the golden `result` file holds.
fn run_case(case: &Path) {
    let run = golden::prepare(case);
    let input: Value = serde_json::from_str(&run.input).expect("input is JSON");
    let fam = family(input["family"].as_str().unwrap());
    let devices: BTreeMap<String, String> =
        serde_json::from_value(input["devices"].clone()).unwrap_or_default();
    let base = run.root.base().unwrap().to_path_buf();
    let linux = !matches!(fam, OsFamily::FreeBsd | OsFamily::Windows);
    if linux {
        for (name, mac) in &devices {
            let dir = base.join("sys/class/net").join(name);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("address"), format!("{mac}\n")).unwrap();
            std::fs::write(dir.join("type"), "1\n").unwrap();
        }
    }
    // The addresses each device will show once "restarted": those requested for it.
    // (A value guestd refuses shows nothing; the case's `result` holds the refusal.)
    // The handler parses the value; a value it refuses never reaches the backend.
    let parsed = match parse_inline(&input["value"]) {
        Ok(Inline::Spec(s)) => Ok(s),
        Ok(Inline::HostData { .. }) => panic!("golden cases use inline values"),
        Err(e) => Err(e),
    };
    let spec = parsed.clone().unwrap_or_default();
    let mut shown: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for iface in &spec.interfaces {
        let dev = devices
            .iter()
            .find(|(_, m)| m.to_lowercase() == iface.mac.to_string())
            .map(|(n, _)| n.clone());
        if let Some(dev) = dev {
            shown.insert(dev, iface.addresses.iter().map(|a| a.to_string()).collect());
        }
    }
    if input["down"].as_bool() == Some(true) {
        shown.clear();
    }
    let runner = run.runner.clone();
    for prefix in input["fail"].as_array().into_iter().flatten() {
        runner.respond(prefix.as_str().unwrap(), 1, "");
    }
    let ifconfig_a: String = devices
        .iter()
        .map(|(n, m)| format!("{n}: flags=8843<UP,BROADCAST,RUNNING> mtu 1500\n\tether {m}\n"))
        .collect();
    runner.respond("ifconfig -a", 0, &ifconfig_a);
    let getmac: String = devices
        .iter()
        .map(|(n, m)| {
            format!(
                "\"{n}\",\"Red Hat VirtIO Ethernet Adapter\",\"{}\",\"\\Device\\Tcpip_{{0}}\"\r\n",
                m.replace(':', "-").to_uppercase()
            )
        })
        .collect();
    runner.respond("getmac", 0, &getmac);
    let shown_ip = shown.clone();
    runner.respond_with("ip -o addr show dev ", move |cmd| {
        let dev = cmd.args.last().unwrap();
        let text: String = shown_ip
            .get(dev)
            .into_iter()
            .flatten()
            .map(|a| {
                let fam = if a.contains(':') { "inet6" } else { "inet" };
                format!("2: {dev}    {fam} {a} scope global {dev}\\       valid_lft forever preferred_lft forever\n")
            })
            .collect();
        Ok(Output { code: Some(0), stdout: text.into_bytes(), stderr: vec![] })
    });
    runner.respond_with("ifconfig ", move |cmd| {
        let dev = cmd.args.last().unwrap();
        let mut text = format!("{dev}: flags=8843<UP,BROADCAST,RUNNING> mtu 1500\n");
        for a in shown.get(dev).into_iter().flatten() {
            let (ip, p) = a.split_once('/').unwrap();
            let p: u32 = p.parse().unwrap();
            if a.contains(':') {
                text.push_str(&format!("\tinet6 {ip} prefixlen {p} \n"));
            } else {
                let mask = if p == 0 { 0 } else { u32::MAX << (32 - p) };
                text.push_str(&format!(
                    "\tinet {ip} netmask 0x{mask:08x} broadcast 0.0.0.0\n"
                ));
            }
        }
        Ok(Output {
            code: Some(0),
            stdout: text.into_bytes(),
            stderr: vec![],
        })
    });

    // Windows: the computer name is a recording stand-in (the real one is kernel32's).
    let names = Arc::new(RecordingComputerName::with_pending("WIN-GOLDEN"));
    let backend = Arc::new(OsBackend::new(fam).with_computer_name(names.clone()));
    let env = Env {
        root: run.root.clone(),
        runner: runner.clone(),
        backend: backend.clone(),
    };
    let done = parsed.map_err(|e| e.to_string()).and_then(|spec| {
        let request = NetworkRequest {
            spec: &spec,
            manager: input["manager"].as_str(),
        };
        backend
            .reset_network(&env, &request)
            .map_err(|e| e.to_string())
    });
    let mut result = match done {
        Ok(done) if done.notice.is_empty() => format!("ok: {}", done.summary),
        Ok(done) => format!("ok: {}\nreply: {}", done.summary, done.notice),
        Err(e) => format!("error: {e}"),
    };
    for name in names.names_set() {
        result.push_str(&format!("\nSetComputerNameExW: {name}"));
    }
    // The sysfs stand-in is the harness's, not part of the expectations.
    let _ = std::fs::remove_dir_all(base.join("sys"));
    golden::check(case, &run, &result);
}

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/network")
}

#[test]
fn every_renderer_has_the_required_cases() {
    for manager in guestd_distro::network::NetworkTool::ALL {
        let dir = golden_dir().join(manager.name());
        for case in ["one-interface", "rackspace", "hostname-only", "rollback"] {
            assert!(
                dir.join(case).join("input").is_file(),
                "{manager}: missing golden case {case}"
            );
        }
    }
}

macro_rules! golden_tests {
    ($($name:ident => $dir:literal,)*) => {$(
        #[test]
        fn $name() {
            let cases = golden::cases(golden_dir().join($dir));
            assert!(!cases.is_empty());
            for case in cases {
                run_case(&case);
            }
        }
    )*};
}

golden_tests! {
    netplan => "netplan",
    networkmanager => "networkmanager",
    networkd => "networkd",
    ifupdown => "ifupdown",
    network_scripts => "network-scripts",
    wicked => "wicked",
    netifrc => "netifrc",
    freebsd => "freebsd",
    windows => "windows",
}
