//! `Backend::plan_reset_network` inspected without running it, for every OS family the backend
//! supports: the network tool it detects, the files it would write, the commands it would run
//! (restarts and checks) and the rollback commands, the Windows computer name change. Planning
//! must leave the sandbox tree exactly as it was and run nothing but lookups (device discovery
//! and the read-only address checks that decide whether a restart is needed). Applying the
//! same plans is what the golden trees (`network_golden.rs`) check.
#![cfg(unix)]
#![allow(clippy::disallowed_methods)] // tests build their trees by path

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use guestd_core::plan::Expect;
use guestd_core::{
    Backend, ComputerName, Env, FileChange, NetworkPlan, NetworkRequest, OnFailure, PlannedProcess,
    Reach, Root,
};
use guestd_distro::network::computer_name::RecordingComputerName;
use guestd_distro::{OsBackend, OsFamily};
use guestd_network_model::nova::{Inline, parse_inline};
use guestd_testkit::FakeRunner;
use serde_json::{Value, json};

const MAC: &str = "bc:76:4e:20:6c:5a";

/// The request every case plans: one interface by MAC with IPv4 and IPv6, DNS, a hostname.
fn request_value() -> Value {
    json!({"hostname": "web1", "interfaces": [{"label": "public", "mac": MAC.to_uppercase(),
        "ips": [{"ip": "198.51.100.10", "netmask": "255.255.255.0", "enabled": "1"}],
        "ip6s": [{"ip": "2001:db8:0:1::10", "netmask": 64, "enabled": "1"}],
        "gateway": "198.51.100.1", "dns": ["192.0.2.53"]}]})
}

/// Every file under `dir` with its contents (directories as empty entries).
fn tree(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            let name = path.strip_prefix(dir).unwrap().display().to_string();
            if path.is_dir() {
                out.insert(format!("{name}/"), Vec::new());
                stack.push(path);
            } else {
                out.insert(name, std::fs::read(&path).unwrap());
            }
        }
    }
    out
}

/// What the plan holds, one line per item, for comparing with the expectation.
fn describe(p: &NetworkPlan) -> Vec<String> {
    let mut lines = vec![format!(
        "tool {} for {:?} from {}, on failure {:?}",
        p.tool, p.interfaces, p.source, p.on_failure
    )];
    for change in &p.plan.changes {
        lines.push(match change {
            FileChange::Write { path, options, .. } => {
                format!("write {path} {:o}", options.mode)
            }
            other => format!("{other:?}"),
        });
    }
    let reach = |c: &PlannedProcess| match c.command.reach {
        Reach::Machine(effect) => effect.to_string(),
        Reach::Observe => "observe".to_string(),
        Reach::Root => "root".to_string(),
    };
    for c in &p.plan.commands {
        let expect = match &c.expect {
            Expect::Success => String::new(),
            Expect::Anything => ", best effort".to_string(),
            Expect::StdoutContains(text) => format!(", shows {text:?}"),
            other => format!(", expects {other:?}"),
        };
        lines.push(format!(
            "run {} [{}{expect}]",
            c.command.command_line(),
            reach(c)
        ));
    }
    for step in &p.plan.native {
        lines.push(format!("native {step:?}"));
    }
    for check in &p.plan.checks {
        lines.push(format!("check {check:?}"));
    }
    for c in &p.plan.rollback_commands {
        lines.push(format!(
            "rollback {} [{}]",
            c.command.command_line(),
            reach(c)
        ));
    }
    if let Some(c) = &p.computer_name {
        lines.push(format!("computer name {} (was {})", c.label, c.previous));
    }
    if !p.notice.is_empty() {
        lines.push(format!("notice {}", p.notice));
    }
    lines
}

struct Case {
    family: OsFamily,
    /// Files of the guest before (path, contents); `/sys/class/net/eth0` is added on Linux.
    files: &'static [(&'static str, &'static str)],
    device: &'static str,
}

/// Plan `case` in a fresh sandbox and check planning changed and ran nothing but lookups.
/// Returns the plan, what it holds, and the contents it would write per path.
fn plan(case: &Case) -> (NetworkPlan, Vec<String>, BTreeMap<String, String>) {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path();
    for (path, text) in case.files {
        let p = base.join(path.trim_start_matches('/'));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
    let runner = Arc::new(FakeRunner::new());
    match case.family {
        OsFamily::FreeBsd => {
            runner.respond(
                "ifconfig -a",
                0,
                &format!("{}: flags=8843<UP> mtu 1500\n\tether {MAC}\n", case.device),
            );
        }
        OsFamily::Windows => {
            runner.respond(
                "getmac",
                0,
                &format!(
                    "\"{}\",\"Red Hat VirtIO Ethernet Adapter\",\"{}\",\"\\Device\\Tcpip_{{0}}\"\r\n",
                    case.device,
                    MAC.replace(':', "-").to_uppercase()
                ),
            );
        }
        _ => {
            let sys = base.join("sys/class/net").join(case.device);
            std::fs::create_dir_all(&sys).unwrap();
            std::fs::write(sys.join("address"), format!("{MAC}\n")).unwrap();
            std::fs::write(sys.join("type"), "1\n").unwrap();
        }
    }
    let before = tree(base);
    let names = Arc::new(RecordingComputerName::with_pending("WIN-OLD"));
    let backend = Arc::new(OsBackend::new(case.family).with_computer_name(names.clone()));
    let env = Env {
        root: Root::sandbox(base).unwrap(),
        runner: runner.clone(),
        backend: backend.clone(),
    };
    let Ok(Inline::Spec(spec)) = parse_inline(&request_value()) else {
        panic!("the request parses");
    };
    let request = NetworkRequest {
        spec: &spec,
        manager: None,
    };
    let planned = backend.plan_reset_network(&env, &request).unwrap();

    assert_eq!(tree(base), before, "planning changed the guest's files");
    assert!(
        names.names_set().is_empty(),
        "planning set the computer name"
    );
    assert_eq!(names.pending().unwrap(), "WIN-OLD");
    // Only lookups ran: device discovery and the read-only checks (nothing the plan restarts).
    for line in runner.lines() {
        let lookup = line.starts_with("ip -o addr show dev ")
            || line.starts_with("ifconfig ")
            || line.starts_with("getmac ")
            || line.contains("Get-NetIPAddress -InterfaceAlias");
        assert!(lookup, "planning ran '{line}'");
        let observed = planned
            .plan
            .commands
            .iter()
            .filter(|c| c.command.command_line() == line)
            .all(|c| c.command.reach == Reach::Observe);
        assert!(observed, "planning ran '{line}', a command of the plan");
    }
    let written = planned
        .plan
        .changes
        .iter()
        .filter_map(|c| match c {
            FileChange::Write { path, contents, .. } => {
                Some((path.clone(), String::from_utf8_lossy(contents).into_owned()))
            }
            _ => None,
        })
        .collect();
    let lines = describe(&planned);
    (planned, lines, written)
}

fn assert_lines(got: &[String], want: &[&str]) {
    assert_eq!(got, want, "\ngot:\n{}\n", got.join("\n"));
}

const DEBIAN_OS: &str = "ID=debian\nVERSION_ID=12\n";

#[test]
fn debian_ifupdown() {
    let (p, lines, written) = plan(&Case {
        family: OsFamily::Debian,
        files: &[
            ("/etc/os-release", DEBIAN_OS),
            (
                "/etc/network/interfaces",
                "auto lo\niface lo inet loopback\nauto eth0\niface eth0 inet dhcp\n",
            ),
            ("/etc/hostname", "old\n"),
            ("/etc/hosts", "127.0.1.1 old\n"),
        ],
        device: "eth0",
    });
    assert_lines(
        &lines,
        &[
            r#"tool ifupdown for ["eth0"] from inline, on failure Restore"#,
            "write /etc/network/interfaces 644",
            "write /etc/hostname 644",
            "write /etc/hosts 644",
            "write /etc/resolv.conf 644",
            "run hostname web1 [hostname]",
            "run ifdown -f eth0 [network, best effort]",
            "run ip addr flush dev eth0 scope global [network, best effort]",
            "run ifup eth0 [network]",
            r#"run ip -o addr show dev eth0 [observe, shows "inet 198.51.100.10/24 "]"#,
            r#"run ip -o addr show dev eth0 [observe, shows "inet6 2001:db8:0:1::10/64 "]"#,
            "rollback ifdown -f eth0 [network]",
            "rollback ip addr flush dev eth0 scope global [network]",
            "rollback ifup eth0 [network]",
            "rollback hostname old [hostname]",
        ],
    );
    assert_eq!(p.on_failure, OnFailure::Restore);
    assert!(written["/etc/network/interfaces"].contains("198.51.100.10"));
}

#[test]
fn ubuntu_netplan() {
    let (_, lines, written) = plan(&Case {
        family: OsFamily::Debian,
        files: &[
            (
                "/etc/os-release",
                "ID=ubuntu\nID_LIKE=debian\nVERSION_ID=24.04\n",
            ),
            (
                "/etc/netplan/50-cloud-init.yaml",
                "network:\n  version: 2\n  ethernets:\n    eth0:\n      dhcp4: true\n",
            ),
            ("/etc/hostname", "old\n"),
        ],
        device: "eth0",
    });
    assert_lines(
        &lines,
        &[
            r#"tool netplan for ["eth0"] from inline, on failure Restore"#,
            "write /etc/netplan/90-guestd.yaml 600",
            "write /etc/hostname 644",
            "write /etc/hosts 644",
            "write /etc/resolv.conf 644",
            "run hostname web1 [hostname]",
            "run netplan generate [network]",
            "run netplan apply [network]",
            r#"run sh -c dev=$1; shift; for a in "$@"; do n=0; until ip -o addr show dev "$dev" | grep -qF -- "$a"; do n=$((n+1)); [ $n -ge 30 ] && exit 1; sleep 1; done; done wait eth0 inet 198.51.100.10/24  inet6 2001:db8:0:1::10/64  [observe, best effort]"#,
            r#"run ip -o addr show dev eth0 [observe, shows "inet 198.51.100.10/24 "]"#,
            r#"run ip -o addr show dev eth0 [observe, shows "inet6 2001:db8:0:1::10/64 "]"#,
            "rollback netplan apply [network]",
            "rollback hostname old [hostname]",
        ],
    );
    assert!(written.values().any(|t| t.contains("198.51.100.10/24")));
}

#[test]
fn networkmanager_keyfiles() {
    let (_, lines, written) = plan(&Case {
        family: OsFamily::RedHat,
        files: &[
            (
                "/etc/os-release",
                "ID=rocky\nID_LIKE=\"rhel centos fedora\"\nVERSION_ID=9.4\n",
            ),
            (
                "/etc/systemd/system/multi-user.target.wants/NetworkManager.service",
                "",
            ),
            ("/etc/hostname", "old\n"),
        ],
        device: "eth0",
    });
    assert_lines(
        &lines,
        &[
            r#"tool networkmanager for ["eth0"] from inline, on failure Restore"#,
            "write /etc/NetworkManager/system-connections/guestd-eth0.nmconnection 600",
            "write /etc/hostname 644",
            "write /etc/hosts 644",
            "run hostname web1 [hostname]",
            "run nmcli connection reload [network]",
            "run nmcli connection up id guestd-eth0 [network]",
            r#"run ip -o addr show dev eth0 [observe, shows "inet 198.51.100.10/24 "]"#,
            r#"run ip -o addr show dev eth0 [observe, shows "inet6 2001:db8:0:1::10/64 "]"#,
            "rollback nmcli connection reload [network]",
            "rollback nmcli device connect eth0 [network]",
            "rollback hostname old [hostname]",
        ],
    );
    assert!(written.values().any(|t| t.contains("198.51.100.10/24")));
}

#[test]
fn rhel_network_scripts() {
    let (_, lines, written) = plan(&Case {
        family: OsFamily::RedHat,
        files: &[
            (
                "/etc/os-release",
                "ID=centos\nID_LIKE=\"rhel fedora\"\nVERSION_ID=7\n",
            ),
            ("/etc/sysconfig/network-scripts/ifup-eth", ""),
            ("/etc/sysconfig/network", "NETWORKING=yes\n"),
            ("/etc/hostname", "old\n"),
        ],
        device: "eth0",
    });
    assert_lines(
        &lines,
        &[
            r#"tool network-scripts for ["eth0"] from inline, on failure Restore"#,
            "write /etc/sysconfig/network-scripts/ifcfg-eth0 644",
            "Remove(/etc/sysconfig/network-scripts/route-eth0)",
            "Remove(/etc/sysconfig/network-scripts/route6-eth0)",
            "write /etc/hostname 644",
            "write /etc/hosts 644",
            "run hostname web1 [hostname]",
            "run ifdown eth0 [network, best effort]",
            "run ip addr flush dev eth0 scope global [network, best effort]",
            "run ifup eth0 [network]",
            r#"run ip -o addr show dev eth0 [observe, shows "inet 198.51.100.10/24 "]"#,
            r#"run ip -o addr show dev eth0 [observe, shows "inet6 2001:db8:0:1::10/64 "]"#,
            "rollback ifdown eth0 [network]",
            "rollback ip addr flush dev eth0 scope global [network]",
            "rollback ifup eth0 [network]",
            "rollback hostname old [hostname]",
        ],
    );
    assert!(written["/etc/sysconfig/network-scripts/ifcfg-eth0"].contains("198.51.100.10"));
}

#[test]
fn freebsd_rc_conf() {
    let (p, lines, written) = plan(&Case {
        family: OsFamily::FreeBsd,
        files: &[
            ("/etc/rc.conf", "hostname=\"old\"\nifconfig_xn0=\"DHCP\"\n"),
            ("/etc/hosts", "127.0.0.1 localhost old\n"),
        ],
        device: "xn0",
    });
    assert_lines(
        &lines,
        &[
            r#"tool freebsd for ["xn0"] from inline, on failure Restore"#,
            "write /etc/rc.conf 644",
            "write /etc/hosts 644",
            "write /etc/resolv.conf 644",
            "run hostname web1 [hostname]",
            "run service netif restart xn0 [network]",
            "run service routing restart [network]",
            r#"run ifconfig xn0 [observe, shows "inet 198.51.100.10 netmask 0xffffff00 "]"#,
            r#"run ifconfig xn0 [observe, shows "inet6 2001:db8:0:1::10 prefixlen 64 "]"#,
            "rollback service netif restart xn0 [network]",
            "rollback service routing restart [network]",
            "rollback hostname old [hostname]",
        ],
    );
    assert_eq!(p.on_failure, OnFailure::Restore);
    assert!(written["/etc/rc.conf"].contains("198.51.100.10"));
}

#[test]
fn windows_netsh_and_the_computer_name() {
    let (p, lines, written) = plan(&Case {
        family: OsFamily::Windows,
        files: &[],
        device: "Ethernet",
    });
    assert_lines(
        &lines,
        &[
            r#"tool windows for ["Ethernet"] from inline, on failure Dhcp"#,
            "run netsh interface set interface name=Ethernet admin=enabled [network, best effort]",
            "run netsh interface ipv4 set address name=Ethernet source=static address=198.51.100.10 mask=255.255.255.0 gateway=198.51.100.1 gwmetric=1 [network]",
            "run powershell -NoProfile -NonInteractive -Command Get-NetIPAddress -InterfaceAlias 'Ethernet' -AddressFamily IPv6 -PrefixOrigin Manual -ErrorAction SilentlyContinue | Remove-NetIPAddress -Confirm:$false [network, best effort]",
            "run netsh interface ipv6 add address interface=Ethernet address=2001:db8:0:1::10/64 store=persistent [network]",
            "run netsh interface ipv4 set dnsservers name=Ethernet source=static address=192.0.2.53 register=primary validate=no [network]",
            "run powershell -NoProfile -NonInteractive -Command Get-NetIPAddress -InterfaceAlias 'Ethernet' -IPAddress '198.51.100.10' -ErrorAction Stop [observe]",
            "run powershell -NoProfile -NonInteractive -Command Get-NetIPAddress -InterfaceAlias 'Ethernet' -IPAddress '2001:db8:0:1::10' -ErrorAction Stop [observe]",
            "rollback netsh interface ipv4 set address name=Ethernet source=dhcp [network]",
            "rollback netsh interface ipv4 set dnsservers name=Ethernet source=dhcp [network]",
            "computer name web1 (was WIN-OLD)",
            "notice hostname set to 'web1'; it takes effect after a reboot",
        ],
    );
    assert_eq!(p.on_failure, OnFailure::Dhcp);
    assert!(written.is_empty());
}
