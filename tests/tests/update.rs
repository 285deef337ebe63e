//! Issue 7: agentupdate end to end with the real binaries: guestd has its download helper
//! (`guestd-update`, installed beside it) fetch an update from a loopback HTTP server,
//! self-tests it, installs it, starts the real watchdog
//! (`guestd --update-watchdog`), which restarts guestd through a restart command (a script
//! standing in for the service manager) and either sees the new daemon report ready or rolls
//! back. Everything happens inside a temp directory; nothing on the machine changes.
#![cfg(unix)]
#![allow(clippy::disallowed_methods)] // spawns the daemon under test

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use guestd_testkit::http::{Serve, serve};
use guestd_tests::{LineClient, bin};
use guestd_update::archive;
use sha2::Digest;

/// A guest directory whose guestd is started (and restarted) by `restart.sh`.
struct Guest {
    dir: tempfile::TempDir,
    original: Vec<u8>,
}

impl Guest {
    fn new(ready_timeout_secs: u64) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let sbin = d.join("root/usr/sbin");
        fs::create_dir_all(&sbin).unwrap();
        let original = fs::read(bin::path("guestd")).unwrap();
        fs::write(sbin.join("guestd"), &original).unwrap();
        fs::set_permissions(sbin.join("guestd"), fs::Permissions::from_mode(0o755)).unwrap();
        // The download helper, where the package installs it: beside guestd.
        fs::copy(bin::path("guestd-update"), sbin.join("guestd-update")).unwrap();
        let restart = d.join("restart.sh");
        fs::write(
            &restart,
            r#"#!/bin/sh
# Stands in for the service manager: stop the running guestd, start the installed one.
D=$(dirname "$0")
if [ -f "$D/pid" ]; then
    pid=$(cat "$D/pid")
    kill "$pid" 2>/dev/null
    i=0
    while kill -0 "$pid" 2>/dev/null && [ $i -lt 200 ]; do sleep 0.05; i=$((i+1)); done
    rm -f "$D/pid"
fi
exec setsid -f /bin/sh -c 'echo $$ > "$1/pid"; exec "$1/root/usr/sbin/guestd" --root "$1/root" --listen "unix:$1/guestd.sock" --config "$1/guestd.toml" --log-level debug' restart "$D" </dev/null >>"$D/daemon.log" 2>&1
"#,
        )
        .unwrap();
        fs::write(
            d.join("guestd.toml"),
            format!(
                "[update]\ninstall_path = \"/usr/sbin/guestd\"\nrestart_command = [\"/bin/sh\", \"{}\"]\n\
                 ready_timeout_secs = {ready_timeout_secs}\nrestart_delay_ms = 200\n\
                 # The restart is real (of this test's own daemon): the sandbox must let it run.\n\
                 [sandbox]\nallow_effects = [\"service\"]\n",
                restart.display()
            ),
        )
        .unwrap();
        let g = Self { dir, original };
        g.restart();
        g.wait_ready();
        g
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    fn restart(&self) {
        let status = Command::new("/bin/sh")
            .arg(self.path("restart.sh"))
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// The ready marker exists and the socket answers `version`.
    fn wait_ready(&self) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(text) = fs::read_to_string(self.path("root/run/guestd/ready")) {
                if std::os::unix::net::UnixStream::connect(self.path("guestd.sock")).is_ok() {
                    return text;
                }
            }
            assert!(
                Instant::now() < deadline,
                "guestd not ready:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log(&self) -> String {
        let read = |p: &str| fs::read_to_string(self.path(p)).unwrap_or_default();
        format!(
            "--- daemon.log\n{}\n--- watchdog.log\n{}",
            read("daemon.log"),
            read("root/var/lib/guestd/update/watchdog.log")
        )
    }

    fn ctl(&self, args: &[&str]) -> std::process::Output {
        Command::new(bin::path("guestctl"))
            .arg("--connect")
            .arg(format!("unix:{}", self.path("guestd.sock").display()))
            .args(["--timeout", "60"])
            .args(args)
            .output()
            .unwrap()
    }

    /// Wait for the watchdog to record an outcome.
    fn outcome(&self) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let state = fs::read(self.path("root/var/lib/guestd/update/state.json"))
                .ok()
                .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok());
            if let Some(status) = state.as_ref().and_then(|s| s["status"].as_str()) {
                if status != "pending" {
                    return status.to_string();
                }
            }
            assert!(
                Instant::now() < deadline,
                "watchdog did not finish:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn installed(&self) -> Vec<u8> {
        fs::read(self.path("root/usr/sbin/guestd")).unwrap()
    }

    fn version_answers(&self) {
        let mut c = LineClient::connect(&self.path("guestd.sock"));
        let r = c.roundtrip(br#"{"id": 1, "name": "version", "value": "agent"}"#);
        assert_eq!(r["returncode"], "0", "{r}");
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        if let Ok(pid) = fs::read_to_string(self.path("pid")) {
            let _ = Command::new("kill").arg(pid.trim()).status();
        }
    }
}

fn sha256(b: &[u8]) -> String {
    sha2::Sha256::digest(b)
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

#[test]
fn update_installs_restarts_and_the_new_daemon_reports_ready() {
    let g = Guest::new(30);
    // A different binary that is still a working guestd: the real one with a trailer.
    let mut new = g.original.clone();
    new.extend_from_slice(b"\0guestd-update-test-trailer\0");
    // The archive carries the helper too: it is installed beside guestd (checked with its
    // `--version`), the old one kept as `.previous`.
    let mut helper = fs::read(bin::path("guestd-update")).unwrap();
    helper.extend_from_slice(b"\0guestd-update-test-trailer\0");
    let tgz = archive::build(&[
        ("guestd-new/guestd", 0o755, &new),
        ("guestd-new/guestd-update", 0o755, &helper),
    ]);
    let url = serve(Serve::Body(tgz.clone()));
    let old_pid = fs::read_to_string(g.path("pid")).unwrap();
    let out = g.ctl(&["update", "--url", &url, "--sha256", &sha256(&tgz)]);
    assert!(out.status.success(), "{out:?}\n{}", g.log());

    assert_eq!(g.outcome(), "ready", "{}", g.log());
    assert_eq!(g.installed(), new);
    assert_eq!(
        fs::read(g.path("root/usr/sbin/guestd.previous")).unwrap(),
        g.original
    );
    assert_eq!(
        fs::read(g.path("root/usr/sbin/guestd-update")).unwrap(),
        helper
    );
    assert!(g.path("root/usr/sbin/guestd-update.previous").exists());
    g.wait_ready();
    assert_ne!(
        fs::read_to_string(g.path("pid")).unwrap(),
        old_pid,
        "not restarted"
    );
    g.version_answers();
}

#[test]
fn a_new_daemon_that_does_not_come_up_is_rolled_back() {
    let g = Guest::new(3);
    // Passes its self-test (by asking the real binary) but exits at once when started.
    let real = bin::path("guestd");
    let broken = format!(
        "#!/bin/sh\nif [ \"$1\" = --self-test ]; then exec \"{}\" \"$@\"; fi\necho broken >&2\nexit 1\n",
        real.display()
    );
    let tgz = archive::build(&[("guestd", 0o755, broken.as_bytes())]);
    let url = serve(Serve::Body(tgz.clone()));
    let out = g.ctl(&["update", "--url", &url, "--sha256", &sha256(&tgz)]);
    assert!(out.status.success(), "{out:?}\n{}", g.log());

    assert_eq!(g.outcome(), "rolled-back", "{}", g.log());
    assert_eq!(g.installed(), g.original);
    g.wait_ready();
    g.version_answers();
    assert!(
        g.log().contains("putting the previous binary back"),
        "{}",
        g.log()
    );
}

#[test]
fn a_wrong_checksum_is_refused_and_the_daemon_keeps_running() {
    let g = Guest::new(30);
    let tgz = archive::build(&[("guestd", 0o755, b"x")]);
    let url = serve(Serve::Body(tgz));
    let out = g.ctl(&["update", "--url", &url, "--md5", &"0".repeat(32)]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("MD5 sums do not match"),
        "{out:?}"
    );
    assert_eq!(g.installed(), g.original);
    assert!(!Path::new(&g.path("root/usr/sbin/guestd.previous")).exists());
    g.version_answers();
}
