//! Debian's real host tools (`xenstore-utils`, through libxenstore) against the test-xenstored
//! binary: they must work unchanged, on the dom0 socket and as a guest.
#![cfg(unix)]
#![allow(clippy::disallowed_methods)] // these tests run the binary and the real tools

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

struct Daemon {
    child: Child,
    dom0: PathBuf,
    guest: PathBuf,
    _dir: tempfile::TempDir,
}

impl Daemon {
    fn start() -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        let dom0 = dir.path().join("dom0");
        let guest = dir.path().join("guest5");
        let mut child = Command::new(env!("CARGO_BIN_EXE_test-xenstored"))
            .arg("--dom0")
            .arg(&dom0)
            .arg("--guest")
            .arg(format!("5:{}", guest.display()))
            .arg("--guest")
            .arg(format!("6:{}", dir.path().join("guest6").display()))
            .stdout(Stdio::piped())
            .spawn()
            .expect("start test-xenstored");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "ready");
        Daemon {
            child,
            dom0,
            guest,
            _dir: dir,
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Run a xenstore-utils tool against `socket`; fails clearly when the tool is missing.
fn tool(socket: &Path, name: &str, args: &[&str]) -> Output {
    Command::new(name)
        .env("XENSTORED_PATH", socket)
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {name} ({e}): install Debian's xenstore-utils (scripts/test-all does)"
            )
        })
}

fn ok(out: Output) -> String {
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn host_tools_write_read_list_remove() {
    let d = Daemon::start();
    let key = "/local/domain/5/data/host/0b5c-1";
    let json = r#"{"name": "version", "value": "agent"}"#;
    ok(tool(&d.dom0, "xenstore-write", &[key, json]));
    assert_eq!(ok(tool(&d.dom0, "xenstore-read", &[key])).trim(), json);
    let listing = ok(tool(&d.dom0, "xenstore-ls", &["-p", "/local/domain/5"]));
    assert!(listing.contains("name = \"guest-5\""), "{listing}");
    assert!(listing.contains("0b5c-1 = "), "{listing}");
    assert!(listing.contains("(n5)"), "the guest owns data/: {listing}");
    ok(tool(&d.dom0, "xenstore-rm", &[key]));
    let missing = tool(&d.dom0, "xenstore-read", &[key]);
    assert!(!missing.status.success());
    // Several keys in one call, and a directory too big for one DIRECTORY reply.
    let mut args = Vec::new();
    for i in 0..300 {
        args.push(format!("/big/child-with-a-long-name-{i:04}"));
        args.push(format!("v{i}"));
    }
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    ok(tool(&d.dom0, "xenstore-write", &refs));
    let big = ok(tool(&d.dom0, "xenstore-ls", &["/big"]));
    assert_eq!(big.lines().count(), 300, "paged with DIRECTORY_PART");
}

#[test]
fn guest_connections_are_relative_and_confined() {
    let d = Daemon::start();
    assert_eq!(
        ok(tool(&d.guest, "xenstore-read", &["name"])).trim(),
        "guest-5"
    );
    ok(tool(&d.guest, "xenstore-write", &["data/guest/x", "reply"]));
    assert_eq!(
        ok(tool(
            &d.dom0,
            "xenstore-read",
            &["/local/domain/5/data/guest/x"]
        ))
        .trim(),
        "reply"
    );
    // Another guest's tree, and the read-only parts of its own, are refused.
    assert!(
        !tool(&d.guest, "xenstore-read", &["/local/domain/6/name"])
            .status
            .success()
    );
    assert!(
        !tool(&d.guest, "xenstore-write", &["vm-data/x", "1"])
            .status
            .success()
    );
    assert!(
        !tool(&d.guest, "xenstore-write", &["name", "evil"])
            .status
            .success()
    );
    // The 2048-byte guest value quota; dom0 is not limited by it.
    let big = "x".repeat(2049);
    assert!(
        !tool(&d.guest, "xenstore-write", &["data/big", &big])
            .status
            .success()
    );
    ok(tool(
        &d.guest,
        "xenstore-write",
        &["data/big", &big[..2048]],
    ));
    ok(tool(
        &d.dom0,
        "xenstore-write",
        &["/local/domain/5/data/big", &big],
    ));
    // Nothing larger than the 4096-byte payload limit gets through.
    let huge = "x".repeat(4097);
    assert!(
        !tool(
            &d.dom0,
            "xenstore-write",
            &["/local/domain/5/data/huge", &huge]
        )
        .status
        .success()
    );
}

#[test]
fn watch_fires_on_registration_then_on_changes_below() {
    let d = Daemon::start();
    let mut watcher = Command::new("xenstore-watch")
        .env("XENSTORED_PATH", &d.dom0)
        .args(["-n", "3", "/local/domain/5/data"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("xenstore-watch (xenstore-utils) runs");
    let mut lines = BufReader::new(watcher.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "/local/domain/5/data");
    ok(tool(&d.guest, "xenstore-write", &["data/host/a", "1"]));
    assert_eq!(
        lines.next().unwrap().unwrap(),
        "/local/domain/5/data/host/a"
    );
    // A change elsewhere does not fire; removal of a parent does.
    ok(tool(
        &d.dom0,
        "xenstore-write",
        &["/local/domain/6/data/x", "1"],
    ));
    ok(tool(&d.dom0, "xenstore-rm", &["/local/domain/5/data/host"]));
    assert_eq!(lines.next().unwrap().unwrap(), "/local/domain/5/data/host");
    let status = watcher.wait().unwrap();
    assert!(status.success());
    std::thread::sleep(Duration::from_millis(10));
}
