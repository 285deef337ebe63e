//! Issue "XenStore transport", end to end: the test-xenstored binary, the real guestd on the
//! guest socket, and Debian's xenstore-write/xenstore-read as the host, exactly as nova's dom0
//! plugin uses them (write the request, poll for the reply, never delete it).
//!
//! The backend guestd uses is `native` unless `GUESTD_XENSTORE_BACKEND=libxenstore` is set
//! (then guestd must have been built with `--features libxenstore`; scripts/test-all does).
#![cfg(unix)]
#![allow(clippy::disallowed_methods)] // these tests run the binaries and the real host tools

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use guestd_tests::{bin, signal, wait_timeout};
use serde_json::Value;

const DOMID: u32 = 5;
const HOME: &str = "/local/domain/5";

fn backend() -> String {
    std::env::var("GUESTD_XENSTORE_BACKEND").unwrap_or_else(|_| "native".into())
}

/// test-xenstored, guestd on its guest socket, and the host tools on its dom0 socket.
struct Xen {
    dir: tempfile::TempDir,
    xenstored: Option<Child>,
    guestd: Option<Child>,
    max_nodes: usize,
}

impl Xen {
    fn start(max_nodes: usize) -> Xen {
        Self::start_with(max_nodes, "", &[])
    }

    /// With more configuration and files in the sandbox root.
    fn start_with(max_nodes: usize, config: &str, files: &[(&str, &str)]) -> Xen {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("root")).unwrap();
        for (rel, body) in files {
            let path = dir.path().join("root").join(rel);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, body).unwrap();
        }
        std::fs::write(
            dir.path().join("guestd.toml"),
            format!("{config}\n[xenstore]\nbackend = \"{}\"\n", backend()),
        )
        .unwrap();
        let mut xen = Xen {
            dir,
            xenstored: None,
            guestd: None,
            max_nodes,
        };
        xen.start_xenstored();
        let log = std::fs::File::create(xen.log_path()).unwrap();
        let guestd = Command::new(bin::path("guestd"))
            .arg("--root")
            .arg(xen.dir.path().join("root"))
            .arg("--config")
            .arg(xen.dir.path().join("guestd.toml"))
            .arg("--xenstore")
            .arg(xen.guest_socket())
            .args(["--log-level", "debug"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn guestd");
        xen.guestd = Some(guestd);
        // guestd creates data/host once it serves.
        xen.wait_until("guestd to create data/host", || {
            xen.xs("xenstore-read", &[&format!("{HOME}/data/host")])
                .status
                .success()
        });
        let log = xen.log();
        assert!(
            log.contains(&format!("backend=\"{}\"", backend())),
            "guestd runs the {} backend:\n{log}",
            backend()
        );
        xen
    }

    fn dom0_socket(&self) -> PathBuf {
        self.dir.path().join("xenstored.sock")
    }

    fn guest_socket(&self) -> PathBuf {
        self.dir.path().join("guest5.sock")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("guestd.log")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn start_xenstored(&mut self) {
        let mut child = Command::new(bin::path("test-xenstored"))
            .arg("--dom0")
            .arg(self.dom0_socket())
            .arg("--guest")
            .arg(format!("{DOMID}:{}", self.guest_socket().display()))
            .arg("--guest")
            .arg(format!(
                "6:{}",
                self.dir.path().join("guest6.sock").display()
            ))
            .args(["--max-nodes", &self.max_nodes.to_string()])
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn test-xenstored");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "ready", "test-xenstored starts");
        self.xenstored = Some(child);
    }

    fn kill_xenstored(&mut self) {
        let mut child = self.xenstored.take().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
    }

    fn guestd_pid(&self) -> u32 {
        self.guestd.as_ref().unwrap().id()
    }

    fn guestd_alive(&mut self) -> bool {
        self.guestd.as_mut().unwrap().try_wait().unwrap().is_none()
    }

    /// A xenstore-utils tool on the dom0 socket (fails clearly when the package is missing).
    fn xs<S: AsRef<std::ffi::OsStr>>(&self, tool: &str, args: &[S]) -> Output {
        Command::new(tool)
            .env("XENSTORED_PATH", self.dom0_socket())
            .args(args)
            .output()
            .unwrap_or_else(|e| {
                panic!("cannot run {tool} ({e}): install Debian's xenstore-utils (scripts/test-all does)")
            })
    }

    fn wait_until(&self, what: &str, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if done() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("timed out waiting for {what}; guestd log:\n{}", self.log());
    }

    /// nova's plugin: `xenstore-write …/data/host/<id> <json>`, then `xenstore-read
    /// …/data/guest/<id>` until it exists (stripped), leaving the reply in place.
    fn nova_call(&self, id: &str, value: impl AsRef<std::ffi::OsStr>) -> String {
        let write = self.xs(
            "xenstore-write",
            &[
                std::ffi::OsStr::new(&format!("{HOME}/data/host/{id}")),
                value.as_ref(),
            ],
        );
        assert!(write.status.success(), "{write:?}");
        let mut reply = String::new();
        self.wait_until(&format!("the reply to {id}"), || {
            let read = self.xs("xenstore-read", &[&format!("{HOME}/data/guest/{id}")]);
            reply = String::from_utf8_lossy(&read.stdout).trim().to_string();
            read.status.success()
        });
        reply
    }

    /// The keys below `dir` (none when it does not exist).
    fn ls(&self, dir: &str) -> Vec<String> {
        let out = self.xs("xenstore-ls", &[&format!("{HOME}/{dir}")]);
        if String::from_utf8_lossy(&out.stderr).contains("No such file") {
            return Vec::new();
        }
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split(" = ").next())
            .map(|k| k.trim().to_string())
            .filter(|k| !k.is_empty())
            .collect()
    }
}

impl Drop for Xen {
    fn drop(&mut self) {
        for child in [self.guestd.take(), self.xenstored.take()]
            .into_iter()
            .flatten()
        {
            let mut child = child;
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// nova's view: one JSON object with string returncode and message.
fn reply(text: &str) -> (String, String) {
    let v: Value = serde_json::from_str(text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
    let (Some(code), Some(message)) = (v["returncode"].as_str(), v["message"].as_str()) else {
        panic!("not a reply object with string fields: {text}");
    };
    (code.to_string(), message.to_string())
}

#[test]
fn nova_plugin_flow_version_features_unknown_and_malformed() {
    let xen = Xen::start(1000);
    let (code, version) = reply(&xen.nova_call(
        "0e5d1f3c-9c3a-4c2e-8f4e-1a2b3c4d5e6f",
        r#"{"name": "version", "value": "agent"}"#,
    ));
    assert_eq!(code, "0");
    assert!(
        !version.is_empty()
            && version
                .split('.')
                .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit())),
        "{version}"
    );
    let (code, features) = reply(&xen.nova_call("feat", r#"{"name": "features", "value": ""}"#));
    assert_eq!(code, "0");
    assert!(features.split(',').any(|f| f == "version"), "{features}");
    assert_eq!(
        reply(&xen.nova_call("unk", r#"{"name": "nosuch", "value": ""}"#)),
        ("404".into(), "No such agent command 'nosuch'".into())
    );
    let malformed = ("500".to_string(), "Request is malformed".to_string());
    assert_eq!(reply(&xen.nova_call("nonjson", "abc")), malformed);
    assert_eq!(reply(&xen.nova_call("array", "[1, 2, 3]")), malformed);
    assert_eq!(reply(&xen.nova_call("string", r#""version""#)), malformed);
    assert_eq!(
        reply(&xen.nova_call("noname", r#"{"value": ""}"#)),
        ("500".into(), "Request is missing 'name' key".into())
    );
    // Non-UTF-8: xenstore-write -R stores these bytes as they are.
    let write = xen.xs(
        "xenstore-write",
        &[
            std::ffi::OsStr::new("-R"),
            std::ffi::OsStr::new(&format!("{HOME}/data/host/binary")),
            std::ffi::OsStr::from_bytes(b"{\"name\": \"version\", \"value\": \"\xff\xfe\"}"),
        ],
    );
    assert!(write.status.success(), "{write:?}");
    xen.wait_until("the reply to binary", || {
        xen.xs("xenstore-read", &[&format!("{HOME}/data/guest/binary")])
            .status
            .success()
    });
    let read = xen.xs("xenstore-read", &[&format!("{HOME}/data/guest/binary")]);
    assert_eq!(
        reply(String::from_utf8_lossy(&read.stdout).trim()),
        malformed
    );
    // Over the payload limit: the host's own tools refuse to send it; the guest stays up.
    let huge = format!(r#"{{"name": "version", "value": "{}"}}"#, "x".repeat(4100));
    let refused = xen.xs(
        "xenstore-write",
        &[&format!("{HOME}/data/host/huge"), &huge],
    );
    assert!(
        !refused.status.success(),
        "xenstored takes no message over 4096 bytes"
    );
    assert_eq!(
        reply(&xen.nova_call("after", r#"{"name": "version", "value": "agent"}"#)).0,
        "0"
    );
    // Requests are gone, replies stay for the host (nova never removes them).
    assert!(xen.ls("data/host").is_empty());
    let replies = xen.ls("data/guest");
    for id in [
        "feat", "unk", "nonjson", "array", "string", "noname", "binary", "after",
    ] {
        assert!(replies.iter().any(|r| r == id), "{id} in {replies:?}");
    }
}

#[test]
fn guestctl_connects_as_dom0() {
    let xen = Xen::start(1000);
    let ctl = |args: &[&str]| {
        Command::new(bin::path("guestctl"))
            .env("XENSTORED_PATH", xen.dom0_socket())
            .args(args)
            .output()
            .expect("run guestctl")
    };
    let v = ctl(&["--connect", "xenstore:5", "version"]);
    assert!(v.status.success(), "{v:?}\n{}", xen.log());
    assert!(!String::from_utf8_lossy(&v.stdout).trim().is_empty());
    let n = ctl(&["--connect", "xenstore:5", "raw", "nosuch"]);
    assert_eq!(n.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&n.stderr).contains("No such agent command 'nosuch'"));
    // guestctl removes the replies it read and leaves no request behind.
    assert!(xen.ls("data/guest").is_empty());
    assert!(xen.ls("data/host").is_empty());
    // Domain 6 has no agent: a clean timeout, and the request is taken back.
    let t = ctl(&["--connect", "xenstore:6", "--timeout", "0.5", "version"]);
    assert_eq!(t.status.code(), Some(3), "{t:?}");
    assert!(
        String::from_utf8_lossy(&t.stderr).contains("no reply"),
        "{t:?}"
    );
    let left = xen.xs("xenstore-ls", &["/local/domain/6/data"]);
    assert!(
        !String::from_utf8_lossy(&left.stdout).contains('-'),
        "{left:?}"
    );
    let bad = ctl(&["--connect", "xenstore:abc", "version"]);
    assert_eq!(bad.status.code(), Some(2));
}

#[test]
fn guestd_reconnects_after_xenstored_is_killed_and_restarted() {
    let mut xen = Xen::start(1000);
    assert_eq!(
        reply(&xen.nova_call("before", r#"{"name": "version", "value": "agent"}"#)).0,
        "0"
    );
    xen.kill_xenstored();
    std::thread::sleep(Duration::from_millis(300));
    assert!(xen.guestd_alive(), "guestd survives losing xenstored");
    xen.start_xenstored();
    // The restarted xenstored has an empty tree: guestd re-creates data/host and re-watches.
    xen.wait_until("data/host after the restart", || {
        xen.xs("xenstore-read", &[&format!("{HOME}/data/host")])
            .status
            .success()
    });
    assert_eq!(
        reply(&xen.nova_call("after", r#"{"name": "version", "value": "agent"}"#)).0,
        "0"
    );
    assert!(
        xen.log().contains("reconnected to XenStore"),
        "{}",
        xen.log()
    );
}

#[test]
fn a_thousand_requests_at_once_get_a_thousand_replies_once() {
    let xen = Xen::start(5000);
    // One xenstore-write call, one transaction: all 1000 appear together.
    let mut args = Vec::new();
    for i in 0..1000 {
        args.push(format!("{HOME}/data/host/burst-{i:04}"));
        args.push(r#"{"name": "version", "value": "agent"}"#.to_string());
    }
    let write = xen.xs("xenstore-write", &args);
    assert!(write.status.success(), "{write:?}");
    xen.wait_until("1000 replies", || xen.ls("data/guest").len() == 1000);
    assert!(xen.ls("data/host").is_empty());
    for i in [0, 500, 999] {
        let read = xen.xs(
            "xenstore-read",
            &[&format!("{HOME}/data/guest/burst-{i:04}")],
        );
        assert_eq!(reply(String::from_utf8_lossy(&read.stdout).trim()).0, "0");
    }
    // Exactly once: one dispatch log line per id.
    let log = xen.log();
    let mut runs: HashMap<String, usize> = HashMap::new();
    for line in log.lines().filter(|l| l.contains("returncode=")) {
        if let Some(id) = line
            .split("id=")
            .nth(1)
            .and_then(|r| r.split([' ', '}']).next())
        {
            *runs.entry(id.to_string()).or_default() += 1;
        }
    }
    let burst: Vec<_> = runs
        .iter()
        .filter(|(id, _)| id.starts_with("burst-"))
        .collect();
    assert_eq!(burst.len(), 1000, "every request ran");
    assert!(burst.iter().all(|(_, n)| **n == 1), "each exactly once");
}

#[test]
fn idle_guestd_makes_no_system_calls() {
    let xen = Xen::start(1000);
    assert_eq!(
        reply(&xen.nova_call("warm", r#"{"name": "version", "value": "agent"}"#)).0,
        "0"
    );
    // Let tokio's idle blocking threads retire (10 s keep-alive) before measuring.
    std::thread::sleep(Duration::from_secs(11));
    let pid = xen.guestd_pid();
    guestd_tests::idle::assert_idle_for_10s(pid);
    // And it still answers at once.
    assert_eq!(
        reply(&xen.nova_call("wake", r#"{"name": "version", "value": "agent"}"#)).0,
        "0"
    );
}

#[test]
fn resetnetwork_reads_vm_data_through_xenstore() {
    let xen = Xen::start_with(
        1000,
        "[network]\nmanager = \"ifupdown\"\nconfig_drive = false\n",
        &[
            ("etc/os-release", "ID=debian\n"),
            (
                "etc/network/interfaces",
                "auto lo\niface lo inet loopback\n",
            ),
            ("sys/class/net/eth0/address", "bc:76:4e:20:6c:5a\n"),
        ],
    );
    // nova writes vm-data; this entry is broken, so the handler answers before changing
    // anything, with the path it read through the guest's XenStore connection.
    let write = xen.xs(
        "xenstore-write",
        &[
            &format!("{HOME}/vm-data/networking/BC764E206C5A"),
            "{not json",
        ],
    );
    assert!(write.status.success(), "{write:?}");
    let (code, message) = reply(&xen.nova_call("net", r#"{"name": "resetnetwork", "value": ""}"#));
    assert_eq!(code, "500", "{message}");
    assert!(
        message.contains("vm-data/networking/BC764E206C5A is not valid JSON"),
        "{message}\n{}",
        xen.log()
    );
}

#[test]
fn sigterm_stops_guestd_cleanly_while_on_xenstore() {
    let mut xen = Xen::start(1000);
    let mut child = xen.guestd.take().unwrap();
    signal(child.id(), "TERM");
    let status = wait_timeout(&mut child, Duration::from_secs(20));
    assert!(status.success(), "{status:?}\n{}", xen.log());
    assert!(xen.log().contains("XenStore transport stopped"));
    let _: &Path = xen.dir.path();
}
