//! Issue "resetnetwork" through the real binaries: `guestctl reset-network [--config FILE]`
//! against `guestd` with a sandbox root and a `[network]` section. Only answers that are
//! decided before any command would run are exercised here (the daemon's runner is the real
//! one); applying for real is `resetnetwork_netns.rs`.
#![cfg(unix)]
#![allow(clippy::disallowed_methods)]

use std::process::Output;

use guestd_tests::{Guestd, bin};

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).trim().to_string(),
        String::from_utf8_lossy(&o.stderr).trim().to_string(),
    )
}

/// A guestd whose sandbox looks like a Debian guest with one NIC.
fn guestd() -> Guestd {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    for (rel, body) in [
        ("etc/os-release", "ID=debian\n"),
        (
            "etc/network/interfaces",
            "auto lo\niface lo inet loopback\n",
        ),
        ("sys/class/net/eth0/address", "bc:76:4e:20:6c:5a\n"),
    ] {
        std::fs::create_dir_all(root.join(rel).parent().unwrap()).unwrap();
        std::fs::write(root.join(rel), body).unwrap();
    }
    let config = dir.path().join("guestd.toml");
    std::fs::write(
        &config,
        "[network]\nmanager = \"ifupdown\"\nconfig_drive = false\n",
    )
    .unwrap();
    let config = config.to_str().unwrap().to_string();
    Guestd::start_in(dir, &["--config", &config])
}

fn write(g: &Guestd, name: &str, body: &str) -> String {
    let path = g.dir.path().join(name);
    std::fs::write(&path, body).unwrap();
    path.to_str().unwrap().to_string()
}

#[test]
fn reset_network_reports_what_is_wrong_and_changes_nothing() {
    let g = guestd();
    let before = std::fs::read(g.root().join("etc/network/interfaces")).unwrap();
    let cases = [
        (
            r#"[{"mac": "DE:AD:BE:EF:00:01", "ips": [{"ip": "10.0.0.2", "netmask": "255.255.255.0"}]}]"#,
            "guestctl: agent answered 500: no network device has MAC de:ad:be:ef:00:01",
        ),
        (
            r#"{"interfaces": [{"mac": "bc:76:4e:20:6c:5a", "ips": [{"ip": "10.0.0.2", "netmask": "255.0.255.0"}]}]}"#,
            "guestctl: agent answered 500: interface bc:76:4e:20:6c:5a: ips[0]: '255.0.255.0' of 10.0.0.2 is not a valid netmask",
        ),
        (
            r#"{"interfaces": [{"mac": "bc:76:4e:20:6c:5a", "ip6s": [{"ip": "2001:db8::2", "netmask": 129}]}]}"#,
            "guestctl: agent answered 500: interface bc:76:4e:20:6c:5a: ip6s[0]: IPv6 prefix 129 of 2001:db8::2 is over 128",
        ),
        (
            r#"{"hostname": "not_valid"}"#,
            "guestctl: agent answered 500: 'not_valid' is not a valid hostname: only letters, digits, '-' and '.' are allowed",
        ),
        (
            r#"{"interfaces": []}"#,
            "guestctl: agent answered 500: 'interfaces' is an empty network list",
        ),
        (
            r#"[{"ips": [{"ip": "10.0.0.2", "netmask": 24}]}]"#,
            "guestctl: agent answered 500: interface 1 has no MAC address ('mac')",
        ),
        // A tenant's network name that would add an `up` line to /etc/network/interfaces.
        (
            r#"[{"mac": "bc:76:4e:20:6c:5a", "label": "pub\n    up id >/root/pwn", "ips": [{"ip": "10.0.0.2", "netmask": 24}]}]"#,
            "guestctl: agent answered 500: interface bc:76:4e:20:6c:5a: 'label' contains a control character (U+000A)",
        ),
        (
            r#"[{"mac": "bc:76:4e:20:6c:5a", "ips": [{"ip": "10.0.0.2", "netmask": 24}], "routes": [{"route": "10.1.0.0", "netmask": 16, "gateway": "10.0.0.1$(id)"}]}]"#,
            "guestctl: agent answered 500: interface bc:76:4e:20:6c:5a: routes[0]: 'gateway': '10.0.0.1$(id)' is not an IP address",
        ),
    ];
    for (i, (body, want)) in cases.iter().enumerate() {
        let file = write(&g, &format!("net{i}.json"), body);
        let out = g.ctl(&["reset-network", "--config", &file]);
        assert_eq!(out.status.code(), Some(1), "{body}: {out:?}");
        assert_eq!(text(&out).1, *want, "{body}");
    }
    // Without --config on a channel with no host data and no config drive.
    let out = g.ctl(&["reset-network"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out).1,
        "guestctl: agent answered 500: no network data: the value is empty, this channel has no host data and there is no config drive"
    );
    assert_eq!(
        std::fs::read(g.root().join("etc/network/interfaces")).unwrap(),
        before
    );
}

#[test]
fn reset_network_rejects_unreadable_files_locally() {
    let g = guestd();
    let out = g.ctl(&["reset-network", "--config", "/nonexistent/net.json"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out)
            .1
            .starts_with("guestctl: cannot read /nonexistent/net.json")
    );
    let file = write(&g, "bad.json", "{oops");
    let out = g.ctl(&["reset-network", "--config", &file]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).1.contains("is not valid JSON"), "{out:?}");
    let file = write(&g, "str.json", "\"eth0\"");
    let out = g.ctl(&["reset-network", "--config", &file]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn unknown_manager_in_the_config_stops_guestd() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("guestd.toml");
    std::fs::write(&config, "[network]\nmanager = \"bogus\"\n").unwrap();
    let out = std::process::Command::new(bin::path("guestd"))
        .arg("--config")
        .arg(&config)
        .arg("--self-test")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("[network] manager: unknown network manager 'bogus' (known: netplan, networkmanager, networkd, ifupdown, network-scripts, wicked, netifrc, freebsd, windows)"),
        "{err}"
    );
}
