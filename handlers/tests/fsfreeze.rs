//! fsfreeze through the dispatcher over a sandbox root (its own `/proc/self/mountinfo`) and the
//! fake runner (nothing is ever frozen here): each filesystem once by device, unfreezable ones
//! skipped, the fsfreeze hook as qemu-ga runs it, the record in `/run/guestd`, the thaw on
//! stop, on the next start and by the timer, and write commands refused while frozen.
#![cfg(unix)]
#![allow(clippy::disallowed_methods)] // tests build their trees by path

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use guestd_core::{Channel, Dialect, DispatcherBuilder, Output, Root};
use guestd_handlers::qga::{QgaConfig, register};
use guestd_handlers::{FileInjectHandler, InjectConfig};
use guestd_testkit::{FakeRunner, call, dispatcher, test_env};
use serde_json::{Value, json};

/// `/` on vda1 (and the unit's PrivateTmp bind mounts of it), `/srv` on vdb1, an EFI system
/// partition, a snap, an NTFS volume (whose FIFREEZE answers EOPNOTSUPP), and pseudo
/// filesystems.
const MOUNTINFO: &str = "\
22 1 253:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw
23 22 0:21 / /sys rw,nosuid shared:2 - sysfs sysfs rw
24 22 0:22 / /run rw,nosuid shared:3 - tmpfs tmpfs rw,mode=755
25 22 253:16 / /srv rw,relatime shared:4 - xfs /dev/vdb1 rw
26 22 253:2 / /boot/efi rw,relatime shared:5 - vfat /dev/vda2 rw
27 22 253:1 /tmp/systemd-private-0123-guestd.service-AbCdEf/tmp /tmp rw,relatime shared:1 - ext4 /dev/vda1 rw
28 22 253:1 /var/tmp/systemd-private-0123-guestd.service-GhIjKl/tmp /var/tmp rw,relatime shared:1 - ext4 /dev/vda1 rw
29 22 7:0 / /snap/core/1 ro,nodev shared:6 - squashfs /dev/loop0 ro
30 22 253:32 / /mnt/win rw,relatime shared:7 - ntfs3 /dev/vdc1 rw
";

const HOOK: &str = "/etc/qemu/fsfreeze-hook";

struct Setup {
    dir: tempfile::TempDir,
    runner: Arc<FakeRunner>,
    dispatcher: Arc<guestd_core::Dispatcher>,
    qga: Arc<Channel>,
    native: Arc<Channel>,
}

impl Setup {
    fn new(hook: bool, freeze_timeout_secs: u64) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir_all(d.join("proc/self")).unwrap();
        std::fs::write(d.join("proc/self/mountinfo"), MOUNTINFO).unwrap();
        if hook {
            std::fs::create_dir_all(d.join("etc/qemu")).unwrap();
            std::fs::write(d.join("etc/qemu/fsfreeze-hook"), "#!/bin/sh\nexit 0\n").unwrap();
            chmod(&d.join("etc/qemu/fsfreeze-hook"), 0o755);
            chmod(&d.join("etc/qemu"), 0o755);
            assert!(
                is_root(),
                "the hook must belong to root: these tests run as root (CI does)"
            );
        }
        let runner = Arc::new(FakeRunner::new());
        // The NTFS volume cannot freeze, as the kernel says through util-linux.
        runner.respond_with("fsfreeze --freeze /mnt/win", |_| {
            Ok(failed(
                "fsfreeze: /mnt/win: freeze failed: Operation not supported",
            ))
        });
        // A Debian guest: its backend plans the freeze and the thaw.
        let backend: Arc<dyn guestd_core::Backend> = Arc::new(guestd_distro::OsBackend::new(
            guestd_distro::OsFamily::Debian,
        ));
        let env = test_env(Root::sandbox(d).unwrap(), runner.clone(), Some(backend));
        let config = QgaConfig {
            freeze_timeout_secs,
            ..QgaConfig::default()
        };
        let builder = DispatcherBuilder::new()
            .register(FileInjectHandler::new(InjectConfig::default()))
            .unwrap();
        let builder = register(builder, &config).unwrap();
        Self {
            dir,
            runner,
            dispatcher: dispatcher(builder, env),
            qga: Arc::new(Channel::new("qga-test").with_dialect(Dialect::Qga)),
            native: Arc::new(Channel::new("native-test")),
        }
    }

    fn qga(&self, name: &str, args: Value) -> Result<Value, String> {
        let reply = call(&self.dispatcher, &self.qga, name, args);
        if reply.is_success() {
            Ok(serde_json::from_str(&reply.message).unwrap())
        } else {
            Err(reply.message)
        }
    }

    fn status(&self) -> String {
        let status = self.qga("guest-fsfreeze-status", json!({})).unwrap();
        status.as_str().unwrap().to_string()
    }

    /// Recorded command lines, the hook's host path shown as `HOOK`.
    fn lines(&self) -> Vec<String> {
        let hook = self.host(HOOK).display().to_string();
        self.runner
            .lines()
            .into_iter()
            .map(|l| l.replace(&hook, "HOOK"))
            .collect()
    }

    fn host(&self, guest: &str) -> PathBuf {
        self.dir.path().join(guest.trim_start_matches('/'))
    }

    fn record(&self) -> Option<Value> {
        let bytes = std::fs::read(self.host("/run/guestd/fsfreeze.json")).ok()?;
        Some(serde_json::from_slice(&bytes).unwrap())
    }
}

fn failed(stderr: &str) -> Output {
    Output {
        code: Some(1),
        stdout: Vec::new(),
        stderr: format!("{stderr}\n").into_bytes(),
    }
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"))
}

#[test]
fn each_filesystem_once_by_device_and_unfreezable_ones_skipped() {
    let s = Setup::new(false, 600);
    assert_eq!(s.status(), "thawed");
    assert_eq!(s.qga("guest-fsfreeze-freeze", json!({})), Ok(json!(2)));
    assert_eq!(s.status(), "frozen");
    // Children before parents; vfat and squashfs never tried, /tmp and /var/tmp (the same
    // filesystem as /) not frozen a second time, the NTFS volume's EOPNOTSUPP skipped.
    assert_eq!(
        s.lines(),
        [
            "fsfreeze --freeze /mnt/win",
            "fsfreeze --freeze /srv",
            "fsfreeze --freeze /",
        ]
    );
    // What was about to be frozen is on record, for a restarted agent.
    let record = s.record().expect("the freeze is recorded");
    assert_eq!(record["hook"], false);
    let devices: Vec<&str> = record["frozen"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["device"].as_str().unwrap())
        .collect();
    assert_eq!(devices, ["253:32", "253:16", "253:1"]);

    // A second freeze while frozen is refused and freezes nothing more.
    s.runner.clear();
    assert!(s.qga("guest-fsfreeze-freeze", json!({})).is_err());
    assert!(s.lines().is_empty());

    assert_eq!(s.qga("guest-fsfreeze-thaw", json!({})), Ok(json!(2)));
    assert_eq!(s.status(), "thawed");
    assert_eq!(
        s.lines(),
        ["fsfreeze --unfreeze /", "fsfreeze --unfreeze /srv"]
    );
    assert!(s.record().is_none(), "the record is gone after the thaw");

    // Thawing when nothing is frozen: zero, no commands.
    s.runner.clear();
    assert_eq!(s.qga("guest-fsfreeze-thaw", json!({})), Ok(json!(0)));
    assert!(s.lines().is_empty());
}

#[test]
fn freeze_list_freezes_only_the_listed_filesystems() {
    let s = Setup::new(false, 600);
    // /tmp is a bind mount of / (not a filesystem of its own): ignored, as qemu-ga ignores it.
    let args = json!({"mountpoints": ["/srv", "/tmp", "/boot/efi", "/nowhere"]});
    assert_eq!(s.qga("guest-fsfreeze-freeze-list", args), Ok(json!(1)));
    assert_eq!(s.lines(), ["fsfreeze --freeze /srv"]);
    assert_eq!(s.qga("guest-fsfreeze-thaw", json!({})), Ok(json!(1)));
    // Nothing freezable listed: zero, no record, not frozen.
    s.runner.clear();
    let args = json!({"mountpoints": ["/boot/efi"]});
    assert_eq!(s.qga("guest-fsfreeze-freeze-list", args), Ok(json!(0)));
    assert!(s.lines().is_empty());
    assert_eq!(s.status(), "thawed");
    assert!(s.record().is_none());
}

#[test]
fn the_hook_runs_before_the_freeze_and_after_the_thaw() {
    let s = Setup::new(true, 600);
    assert_eq!(s.qga("guest-fsfreeze-freeze", json!({})), Ok(json!(2)));
    assert_eq!(s.record().unwrap()["hook"], true);
    // A thaw that fails for one filesystem still thaws the others and runs the thaw hook.
    s.runner.respond_with("fsfreeze --unfreeze /srv", |_| {
        Ok(failed("fsfreeze: /srv: unfreeze failed: Invalid argument"))
    });
    assert_eq!(s.qga("guest-fsfreeze-thaw", json!({})), Ok(json!(1)));
    assert_eq!(
        s.lines(),
        [
            "HOOK freeze",
            "fsfreeze --freeze /mnt/win",
            "fsfreeze --freeze /srv",
            "fsfreeze --freeze /",
            "fsfreeze --unfreeze /",
            "fsfreeze --unfreeze /srv",
            "HOOK thaw",
        ]
    );
    // As qemu-ga: every guest-fsfreeze-thaw runs the thaw hook, frozen or not.
    s.runner.clear();
    assert_eq!(s.qga("guest-fsfreeze-thaw", json!({})), Ok(json!(0)));
    assert_eq!(s.lines(), ["HOOK thaw"]);
}

#[test]
fn a_failing_freeze_hook_aborts_the_freeze() {
    let s = Setup::new(true, 600);
    let hook = s.host(HOOK).display().to_string();
    s.runner.respond(&format!("{hook} freeze"), 2, "");
    assert_eq!(
        s.qga("guest-fsfreeze-freeze", json!({})),
        Err("fsfreeze hook has failed with status 2".to_string())
    );
    assert_eq!(s.lines(), ["HOOK freeze"]);
    assert_eq!(s.status(), "thawed");
    assert!(s.record().is_none());
    // Nothing is frozen, so writes go on.
    let reply = call(
        &s.dispatcher,
        &s.native,
        "file_inject",
        inject("/etc/after-hook"),
    );
    assert_eq!(reply.returncode, "0", "{}", reply.message);
}

#[test]
fn a_failed_freeze_thaws_what_it_froze_and_runs_the_thaw_hook() {
    let s = Setup::new(true, 600);
    s.runner.respond_with("fsfreeze --freeze /", |cmd| {
        Ok(if cmd.args[1] == "/" {
            failed("fsfreeze: /: freeze failed: Device or resource busy")
        } else {
            Output {
                code: Some(0),
                ..Output::default()
            }
        })
    });
    assert_eq!(
        s.qga("guest-fsfreeze-freeze", json!({})),
        Err("failed to freeze /: Device or resource busy".to_string())
    );
    assert_eq!(
        s.lines(),
        [
            "HOOK freeze",
            "fsfreeze --freeze /mnt/win",
            "fsfreeze --freeze /srv",
            "fsfreeze --freeze /",
            "fsfreeze --unfreeze /srv",
            "HOOK thaw",
        ]
    );
    assert_eq!(s.status(), "thawed");
    assert!(s.record().is_none());
}

#[test]
fn a_hook_anyone_but_root_could_change_is_refused() {
    type Spoil = fn(&Path);
    let cases: [(&str, Spoil); 4] = [
        ("owner uid 65534", |d| {
            std::os::unix::fs::chown(d.join("etc/qemu/fsfreeze-hook"), Some(65534), None).unwrap()
        }),
        ("mode 0775", |d| {
            chmod(&d.join("etc/qemu/fsfreeze-hook"), 0o775)
        }),
        ("mode 0757", |d| {
            chmod(&d.join("etc/qemu/fsfreeze-hook"), 0o757)
        }),
        ("the hook's directory '/etc/qemu'", |d| {
            chmod(&d.join("etc/qemu"), 0o777)
        }),
    ];
    for (why, spoil) in cases {
        let s = Setup::new(true, 600);
        spoil(s.dir.path());
        let err = s.qga("guest-fsfreeze-freeze", json!({})).unwrap_err();
        assert!(
            err.starts_with("refusing the fsfreeze hook '/etc/qemu/fsfreeze-hook'")
                && err.contains(why),
            "{why}: {err}"
        );
        assert!(s.lines().is_empty(), "{why}: {:?}", s.lines());
        assert_eq!(s.status(), "thawed");
        assert!(s.record().is_none());
    }
    // Not executable: qemu-ga's access(X_OK) error.
    let s = Setup::new(true, 600);
    chmod(&s.host(HOOK), 0o644);
    assert_eq!(
        s.qga("guest-fsfreeze-freeze", json!({})),
        Err("can't access fsfreeze hook '/etc/qemu/fsfreeze-hook': Permission denied".into())
    );
}

fn inject(path: &str) -> Value {
    use base64::Engine as _;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    json!({"b64_path": b64(path), "b64_file": b64("hello\n")})
}

#[test]
fn write_commands_are_refused_at_once_while_frozen() {
    let s = Setup::new(false, 600);
    assert_eq!(s.qga("guest-fsfreeze-freeze", json!({})), Ok(json!(2)));
    let started = Instant::now();
    let reply = call(&s.dispatcher, &s.native, "file_inject", inject("/etc/motd"));
    assert_eq!(reply.returncode, "500");
    assert_eq!(
        reply.message,
        "Command 'file_inject' refused: the guest's filesystems are frozen \
         (guest-fsfreeze-freeze); it would block until they are thawed"
    );
    assert!(!s.host("/etc/motd").exists());
    for (name, args) in [
        (
            "guest-ssh-add-authorized-keys",
            json!({"username": "root", "keys": ["ssh-ed25519 AAAA x"]}),
        ),
        ("guest-fstrim", json!({})),
        ("guest-set-time", json!({})),
        ("guest-fsfreeze-freeze", json!({})),
    ] {
        assert_eq!(
            s.qga(name, args),
            Err(format!(
                "Command {name} has been disabled: the filesystems are frozen \
                 (guest-fsfreeze-thaw first)"
            ))
        );
    }
    assert!(started.elapsed() < Duration::from_secs(5));
    // Queries still answer.
    assert!(s.qga("guest-get-fsinfo", json!({})).is_ok());
    assert_eq!(s.qga("guest-fsfreeze-thaw", json!({})), Ok(json!(2)));
    let reply = call(&s.dispatcher, &s.native, "file_inject", inject("/etc/motd"));
    assert_eq!(reply.returncode, "0", "{}", reply.message);
    assert_eq!(std::fs::read(s.host("/etc/motd")).unwrap(), b"hello\n");
}

#[test]
fn frozen_filesystems_thaw_by_themselves_after_the_timeout() {
    let s = Setup::new(true, 1);
    assert_eq!(s.qga("guest-fsfreeze-freeze", json!({})), Ok(json!(2)));
    let deadline = Instant::now() + Duration::from_secs(20);
    while s.status() != "thawed" {
        assert!(Instant::now() < deadline, "never thawed");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        s.lines()[4..],
        [
            "fsfreeze --unfreeze /",
            "fsfreeze --unfreeze /srv",
            "HOOK thaw"
        ]
    );
    assert!(s.record().is_none());
}

#[test]
fn stopping_thaws_and_starting_thaws_what_a_killed_agent_left_frozen() {
    let s = Setup::new(true, 600);
    assert_eq!(s.qga("guest-fsfreeze-freeze", json!({})), Ok(json!(2)));
    s.runner.clear();
    s.dispatcher.stop();
    assert_eq!(
        s.lines(),
        [
            "fsfreeze --unfreeze /",
            "fsfreeze --unfreeze /srv",
            "HOOK thaw"
        ]
    );
    assert_eq!(s.status(), "thawed");
    assert!(s.record().is_none());
    // Stopping again (or with nothing frozen) does nothing.
    s.runner.clear();
    s.dispatcher.stop();
    assert!(s.lines().is_empty());

    // What a guestd killed while frozen leaves: its record. /srv's device was mounted
    // elsewhere then; it is thawed where it is mounted now.
    std::fs::create_dir_all(s.host("/run/guestd")).unwrap();
    std::fs::write(
        s.host("/run/guestd/fsfreeze.json"),
        r#"{"frozen": [{"device": "253:16", "mountpoint": "/old/srv"},
                       {"device": "253:1", "mountpoint": "/"}], "hook": true}"#,
    )
    .unwrap();
    s.dispatcher.start();
    assert_eq!(
        s.lines(),
        [
            "fsfreeze --unfreeze /",
            "fsfreeze --unfreeze /srv",
            "HOOK thaw"
        ]
    );
    assert!(s.record().is_none());
    // No record: nothing to do at start.
    s.runner.clear();
    s.dispatcher.start();
    assert!(s.lines().is_empty());
}
