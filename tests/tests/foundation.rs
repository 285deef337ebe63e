//! Issue "Foundation": the real guestd and guestctl over a unix socket.
#![cfg(unix)]
#![allow(clippy::disallowed_methods)]

use guestd_tests::{Guestd, LineClient};
use serde_json::json;

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

#[test]
fn guestctl_version_features_and_unknown_command() {
    let g = Guestd::start(&[]);
    let v = g.ctl(&["version"]);
    assert!(v.status.success(), "{v:?}");
    let version = stdout(&v);
    assert!(
        version
            .split('.')
            .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit())),
        "{version}"
    );

    let f = g.ctl(&["features"]);
    assert!(f.status.success());
    assert_eq!(
        stdout(&f),
        "version,features,keyinit,keyinit2,password,resetnetwork,injectfile,file_inject,agentupdate,kmsactivate",
        "features lists the native commands only (the qga ones do not exist on this channel)"
    );

    let n = g.ctl(&["raw", "nosuch"]);
    assert!(!n.status.success());
    assert!(
        String::from_utf8_lossy(&n.stderr).contains("No such agent command 'nosuch'"),
        "{n:?}"
    );
    let j = g.ctl(&["--json", "raw", "nosuch"]);
    assert!(!j.status.success());
    let reply: serde_json::Value = serde_json::from_str(&stdout(&j)).unwrap();
    assert_eq!(
        reply,
        json!({"returncode": "404", "message": "No such agent command 'nosuch'"})
    );
}

/// Hosts poll `version`, `features`, `guest-ping`: their successes are debug lines, so the
/// info log shows what changed the guest and what failed.
#[test]
fn query_successes_are_logged_at_debug_only() {
    let quiet = Guestd::start(&["--log-level", "info"]);
    assert!(quiet.ctl(&["version"]).status.success());
    assert!(quiet.ctl(&["features"]).status.success());
    assert!(!quiet.ctl(&["raw", "nosuch"]).status.success());
    // A qga query does not exist on a native channel: a failure is logged whatever the command.
    assert!(!quiet.ctl(&["raw", "guest-ping"]).status.success());
    let log = quiet.log();
    assert!(!log.contains("command=version"), "{log}");
    assert!(!log.contains("command=features"), "{log}");
    assert!(log.contains("command=nosuch"), "{log}");
    assert!(
        log.lines()
            .any(|l| l.contains("command=guest-ping") && l.contains("returncode=404")),
        "{log}"
    );

    let verbose = Guestd::start(&[]);
    assert!(verbose.ctl(&["version"]).status.success());
    let log = verbose.log();
    assert!(
        log.lines()
            .any(|l| l.contains("command=version") && l.contains("done")),
        "{log}"
    );
}

#[test]
fn bad_lines_get_errors_and_the_daemon_keeps_serving() {
    let mut g = Guestd::start(&["--config", "/dev/null"]);
    let mut c = LineClient::connect(&g.sock);
    let valid = br#"{"id": "ok", "name": "version", "value": "agent"}"#;
    let check_valid = |c: &mut LineClient| {
        let r = c.roundtrip(valid);
        assert_eq!(r["id"], "ok");
        assert_eq!(r["returncode"], "0");
    };
    let bad: Vec<(&[u8], &str)> = vec![
        (b"\x01\x02garbage{{{", "Request is malformed"),
        (
            b"{\"name\": \"version\", \"value\": \"\xc3\x28\"}",
            "Request is malformed",
        ),
        (b"[1, 2, 3]", "Request is malformed"),
        (
            br#"{"id": "n", "name": 42, "value": ""}"#,
            "Request is malformed",
        ),
        (
            br#"{"id": "m", "value": ""}"#,
            "Request is missing 'name' key",
        ),
    ];
    for (line, message) in bad {
        let r = c.roundtrip(line);
        assert_eq!(r["returncode"], "500", "{line:?}");
        assert_eq!(r["message"], message, "{line:?}");
        check_valid(&mut c);
    }
    // A line over the 1 MiB default limit: one error reply, then normal service.
    let mut huge = b"{\"id\": \"big\", \"name\": \"version\", \"value\": \"".to_vec();
    huge.extend(std::iter::repeat_n(b'x', 2 * 1024 * 1024));
    huge.extend_from_slice(b"\"}");
    let r = c.roundtrip(&huge);
    assert_eq!(r["returncode"], "500");
    assert!(r["message"].as_str().unwrap().contains("too large"), "{r}");
    check_valid(&mut c);
    // The id is echoed as sent, numbers included; the built-in sync answers after a 0xFF.
    let r = c.roundtrip(br#"{"id": 7, "name": "features"}"#);
    assert_eq!(
        r,
        json!({"id": 7, "returncode": "0", "message": "version,features,keyinit,keyinit2,password,resetnetwork,injectfile,file_inject,agentupdate,kmsactivate"})
    );
    c.send(b"{\"id\": \"s\", \"name\": \"sync\", \"value\": \"tok\"}\n");
    let mut byte = [0u8; 1];
    std::io::Read::read_exact(&mut LineClientReader(&mut c), &mut byte).unwrap();
    assert_eq!(byte[0], 0xFF);
    assert_eq!(
        c.recv(),
        json!({"id": "s", "returncode": "0", "message": "tok"})
    );
    assert!(g.alive());
}

/// Reads single bytes through the client's buffer.
struct LineClientReader<'a>(&'a mut LineClient);

impl std::io::Read for LineClientReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.read_raw(buf)
    }
}

#[test]
fn two_clients_at_once_are_both_served() {
    let g = Guestd::start(&[]);
    let mut a = LineClient::connect(&g.sock);
    let mut b = LineClient::connect(&g.sock);
    // a has sent half a request; b must still be answered.
    a.send(br#"{"id": "a", "name": "vers"#);
    assert_eq!(b.roundtrip(br#"{"id": "b", "name": "version"}"#)["id"], "b");
    a.send(b"ion\"}\n");
    assert_eq!(a.recv()["id"], "a");
}

#[test]
fn sigterm_exits_zero() {
    let g = Guestd::start(&[]);
    assert!(g.ctl(&["version"]).status.success());
    let sock = g.sock.clone();
    let status = g.terminate();
    assert_eq!(status.code(), Some(0), "exit status {status}");
    assert!(!sock.exists(), "socket removed on exit");
}

#[test]
fn disabled_command_is_refused_and_not_listed() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("guestd.toml");
    std::fs::write(&config, "[commands]\ndisabled = [\"version\"]\n").unwrap();
    let g = Guestd::start_in(dir, &["--config", config.to_str().unwrap()]);
    let v = g.ctl(&["--json", "version"]);
    let reply: serde_json::Value = serde_json::from_str(&stdout(&v)).unwrap();
    assert_eq!(reply["returncode"], "403");
    assert_eq!(
        stdout(&g.ctl(&["features"])),
        "features,keyinit,keyinit2,password,resetnetwork,injectfile,file_inject,agentupdate,kmsactivate"
    );
}

#[test]
fn invalid_config_names_file_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("guestd.toml");
    std::fs::write(&config, "[commands]\nbogus_key = 1\n").unwrap();
    let out = std::process::Command::new(guestd_tests::bin::path("guestd"))
        .args(["--config", config.to_str().unwrap(), "--self-test"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("guestd.toml") && err.contains("bogus_key"),
        "{err}"
    );
}

/// The test-only Windows account store is not in a normal build (the one the packages ship):
/// `fake:DIR` is refused at start-up, saying why.
#[test]
fn the_fake_windows_account_store_is_refused_by_a_normal_build() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("guestd.toml");
    std::fs::write(
        &config,
        format!(
            "[password]\nwindows_accounts = 'fake:{}'\n",
            dir.path().display()
        ),
    )
    .unwrap();
    let out = std::process::Command::new(guestd_tests::bin::path("guestd"))
        .args(["--config", config.to_str().unwrap(), "--self-test"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("the fake account store is for tests")
            && err.contains("fake-windows-accounts"),
        "{err}"
    );
}

/// The OS family and the service manager are found once at start-up, from the (sandbox) root,
/// and `--check-config` shows them.
#[test]
fn check_config_shows_the_os_and_its_service_manager() {
    let dir = tempfile::tempdir().unwrap();
    let check = |root: &std::path::Path| {
        let out = std::process::Command::new(guestd_tests::bin::path("guestd"))
            .args(["--config", "/dev/null", "--check-config", "--root"])
            .arg(root)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let root = dir.path();
    assert!(
        check(root).contains("\n# os: unknown (service manager: none found)\n"),
        "{}",
        check(root)
    );
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::write(root.join("etc/os-release"), "ID=alpine\n").unwrap();
    std::fs::create_dir_all(root.join("run/openrc")).unwrap();
    assert!(check(root).contains("\n# os: alpine (service manager: OpenRC)\n"));
    std::fs::write(root.join("etc/os-release"), "ID=ubuntu\nID_LIKE=debian\n").unwrap();
    std::fs::create_dir_all(root.join("run/systemd/system")).unwrap();
    assert!(check(root).contains("\n# os: debian (service manager: systemd)\n"));
}

/// `--check-config` shows the network tool `resetnetwork` would plan for: the detected one
/// (the same detection a request goes through), or the configured one.
#[test]
fn check_config_shows_the_network_tool() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let check = |config: &str| {
        let out = std::process::Command::new(guestd_tests::bin::path("guestd"))
            .args(["--config", config, "--check-config", "--root"])
            .arg(root)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let line = |text: String| {
        text.lines()
            .find(|l| l.starts_with("# network tool"))
            .unwrap_or_else(|| panic!("no network tool line in\n{text}"))
            .to_string()
    };
    assert_eq!(
        line(check("/dev/null")),
        "# network tool (resetnetwork): none found (set [network] manager)"
    );
    std::fs::create_dir_all(root.join("etc/netplan")).unwrap();
    std::fs::write(root.join("etc/os-release"), "ID=ubuntu\nID_LIKE=debian\n").unwrap();
    std::fs::write(root.join("etc/netplan/50-cloud-init.yaml"), "network: {}\n").unwrap();
    assert_eq!(
        line(check("/dev/null")),
        "# network tool (resetnetwork): netplan (detected)"
    );
    let config = dir.path().join("guestd.toml");
    std::fs::write(&config, "[network]\nmanager = \"ifupdown\"\n").unwrap();
    assert_eq!(
        line(check(config.to_str().unwrap())),
        "# network tool (resetnetwork): ifupdown ([network] manager)"
    );
}
