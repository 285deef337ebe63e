//! `--root DIR` is a sandbox for effects too (issue 15, item 9): the real guestd, with the
//! default configuration, under a `PATH` whose first directory holds recording stubs of every
//! program that acts on a machine (`shutdown`, `fsfreeze`, `fstrim`, `ifup`, `ip`, `systemctl`,
//! `date`, `hwclock`, `systemd-run`, …). Each command whose effect would reach beyond the
//! sandbox is answered as not run, saying what was not run, and no stub is called except the
//! few that only look (`ip -o addr show`, `systemctl status`).
//!
//! Then the fsfreeze lifecycle through the real daemon, with the freeze effect allowed (the
//! stubs freeze nothing): SIGTERM while frozen thaws, and a SIGKILL while frozen is thawed by
//! the next start; native write commands are refused at once while frozen.
#![cfg(unix)]
#![allow(clippy::disallowed_methods)] // spawns the daemon under test, builds its tree by path

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use base64::Engine as _;
use guestd_testkit::http::{self, Serve};
use guestd_tests::{Guestd, LineClient, bin, signal};
use guestd_update::archive;
use serde_json::{Value, json};
use sha2::Digest;

/// Programs a guest agent may run that act on the machine, or look at it. Each stub appends
/// its name and arguments to `stubs.log`; `systemctl status` answers 3 (unit inactive: the
/// suspend mechanism is there), everything else 0 with no output.
const STUBS: &[&str] = &[
    "shutdown",
    "poweroff",
    "reboot",
    "halt",
    "fsfreeze",
    "fstrim",
    "ifup",
    "ifdown",
    "ip",
    "netplan",
    "nmcli",
    "networkctl",
    "wicked",
    "systemctl",
    "service",
    "rc-service",
    "hostname",
    "hostnamectl",
    "date",
    "hwclock",
    "pm-is-supported",
    "pm-suspend",
    "pm-hibernate",
    "pm-suspend-hybrid",
    "systemd-run",
    "setsid",
    "daemon",
    "mount",
    "umount",
    "blkid",
    "rhnreg_ks",
];

/// The only calls a sandboxed guestd may make: looking, never acting.
const OBSERVATIONS: &[&str] = &[
    "ip -o addr show dev eth0",
    "systemctl status systemd-suspend.service",
];

const MAC: &str = "bc:76:4e:20:6c:5a";

/// The work directory: `root/` (the sandbox: a Debian guest with systemd, one NIC, an RTC,
/// `/` and `/data` mounted, Debian's fsfreeze hook location), `stubs/`, `guestd.toml`.
struct Work {
    dir: tempfile::TempDir,
}

impl Work {
    fn new(config: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let w = Self { dir };
        let original = fs::read(bin::path("guestd")).unwrap();
        for (rel, body) in [
            ("etc/os-release", "ID=debian\n"),
            ("etc/hostname", "old-host\n"),
            ("etc/hosts", "127.0.0.1 localhost\n127.0.1.1 old-host\n"),
            (
                "etc/network/interfaces",
                "auto lo\niface lo inet loopback\n",
            ),
            ("sys/class/net/eth0/address", "bc:76:4e:20:6c:5a\n"),
            ("dev/rtc0", ""),
            ("run/systemd/system/.keep", ""),
            (
                "proc/self/mountinfo",
                "22 1 253:1 / / rw,relatime shared:1 - ext4 /dev/vda rw\n\
                 23 22 253:16 / /data rw,relatime shared:2 - ext4 /dev/vdb rw\n\
                 24 22 0:22 / /run rw,nosuid shared:3 - tmpfs tmpfs rw\n",
            ),
        ] {
            w.write(&format!("root/{rel}"), body.as_bytes(), 0o644);
        }
        w.write("root/usr/sbin/guestd", &original, 0o755);
        // The hook records its calls with the stubs'.
        w.write(
            "root/etc/qemu/fsfreeze-hook",
            format!(
                "#!/bin/sh\necho \"fsfreeze-hook $*\" >> '{}'\n",
                w.path("stubs.log").display()
            )
            .as_bytes(),
            0o755,
        );
        for stub in STUBS {
            let exit = if *stub == "systemctl" {
                "[ \"$1\" = status ] && exit 3\n"
            } else {
                ""
            };
            w.write(
                &format!("stubs/{stub}"),
                format!(
                    "#!/bin/sh\necho \"{stub} $*\" >> '{}'\n{exit}exit 0\n",
                    w.path("stubs.log").display()
                )
                .as_bytes(),
                0o755,
            );
        }
        w.write(
            "guestd.toml",
            format!(
                "[network]\nmanager = \"ifupdown\"\nconfig_drive = false\n\
                 [update]\ninstall_path = \"/usr/sbin/guestd\"\n{config}"
            )
            .as_bytes(),
            0o644,
        );
        w
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn write(&self, rel: &str, body: &[u8], mode: u32) {
        let p = self.path(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, body).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
    }

    /// What the stubs (and the hook) recorded.
    fn calls(&self) -> Vec<String> {
        fs::read_to_string(self.path("stubs.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// guestd on `root/` with the stubs first in `PATH`, serving native `guestd.sock` and
    /// `qga+unix:<work>/qga.sock`.
    /// `PATH` with the stubs first.
    fn stub_path(&self) -> String {
        format!(
            "{}:{}",
            self.path("stubs").display(),
            std::env::var("PATH").unwrap_or_default()
        )
    }

    fn start(&self) -> Guestd {
        let _ = fs::remove_file(self.path("qga.sock"));
        let path = self.stub_path();
        let root = self.path("root").display().to_string();
        let config = self.path("guestd.toml").display().to_string();
        let qga = format!("qga+unix:{}", self.path("qga.sock").display());
        let g = Guestd::start_in_env(
            tempfile::tempdir().unwrap(),
            &["--root", &root, "--config", &config, "--listen", &qga],
            &[("PATH", &path)],
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        while UnixStream::connect(self.path("qga.sock")).is_err() {
            assert!(Instant::now() < deadline, "no qga socket:\n{}", g.log());
            std::thread::sleep(Duration::from_millis(20));
        }
        g
    }

    fn qga(&self, request: Value) -> Value {
        let mut c = LineClient::connect(&self.path("qga.sock"));
        c.roundtrip(request.to_string().as_bytes())
    }

    fn record(&self) -> bool {
        self.path("root/run/guestd/fsfreeze.json").exists()
    }
}

fn native(g: &Guestd, name: &str, value: Value) -> Value {
    let mut c = LineClient::connect(&g.sock);
    c.roundtrip(
        json!({"id": 1, "name": name, "value": value})
            .to_string()
            .as_bytes(),
    )
}

fn error_desc(reply: &Value) -> String {
    reply["error"]["desc"]
        .as_str()
        .unwrap_or_else(|| panic!("not an error: {reply}"))
        .to_string()
}

#[test]
fn with_root_and_the_default_configuration_nothing_acts_on_the_machine() {
    let w = Work::new("");
    let g = w.start();

    // guest-shutdown: qemu-ga sends no reply on success; here the error says what was not run.
    let r = w.qga(json!({"execute": "guest-shutdown"}));
    assert_eq!(
        error_desc(&r),
        "'shutdown' was not run: the --root sandbox keeps power effects off this machine \
         ([sandbox] allow_effects)"
    );
    // guest-suspend-ram: systemd is there (its status is only looked at), the suspend is not
    // run, and no other mechanism is tried behind the sandbox's back.
    let r = w.qga(json!({"execute": "guest-suspend-ram"}));
    let desc = error_desc(&r);
    assert!(
        desc.starts_with("the guest was not suspended: not run")
            && desc.ends_with("systemctl (power)"),
        "{desc}"
    );
    // guest-set-time, with and without a time.
    let r = w.qga(
        json!({"execute": "guest-set-time", "arguments": {"time": 1_700_000_000_000_000_000_i64}}),
    );
    let desc = error_desc(&r);
    assert!(
        desc.starts_with("the clock was not set: not run")
            && desc.ends_with("date, hwclock (clock)"),
        "{desc}"
    );
    let r = w.qga(json!({"execute": "guest-set-time"}));
    assert!(error_desc(&r).ends_with("hwclock (clock)"), "{r}");
    // guest-fsfreeze-freeze and -freeze-list: the hook is the first thing not run; nothing is
    // frozen and nothing stays recorded.
    for request in [
        json!({"execute": "guest-fsfreeze-freeze"}),
        json!({"execute": "guest-fsfreeze-freeze-list", "arguments": {"mountpoints": ["/data"]}}),
    ] {
        let desc = error_desc(&w.qga(request));
        assert!(
            desc.contains("/etc/qemu/fsfreeze-hook' was not run")
                && desc.contains("keeps freeze effects off this machine"),
            "{desc}"
        );
    }
    assert_eq!(
        w.qga(json!({"execute": "guest-fsfreeze-status"}))["return"],
        "thawed"
    );
    assert!(!w.record());
    // guest-fstrim: one result per filesystem, each saying it was not run.
    let r = w.qga(json!({"execute": "guest-fstrim"}));
    let paths = r["return"]["paths"].as_array().expect("paths").clone();
    assert_eq!(paths.len(), 2, "{r}");
    for p in &paths {
        assert!(
            p["error"].as_str().is_some_and(
                |e| e.starts_with("'fstrim' was not run") && e.contains("trim effects")
            ),
            "{p}"
        );
    }

    // resetnetwork with valid data for the sandbox's NIC: the files are written, the restart
    // and the host name are not, and the reply says so ("0": what could be done was done).
    let data = json!({
        "interfaces": [{"mac": MAC, "ips": [{"ip": "10.0.0.2", "netmask": "255.255.255.0"}],
                        "gateway": "10.0.0.1"}],
        "hostname": "sandbox-host",
    });
    let r = native(&g, "resetnetwork", data);
    assert_eq!(r["returncode"], "0", "{r}\n{}", g.log());
    let message = r["message"].as_str().unwrap();
    assert!(
        message.starts_with("not run (the --root sandbox keeps these effects off this machine")
            && message.contains("hostnamectl (hostname)")
            && message.contains("ifup (network)"),
        "{message}"
    );
    let interfaces = fs::read_to_string(w.path("root/etc/network/interfaces")).unwrap();
    assert!(interfaces.contains("10.0.0.2"), "{interfaces}");
    assert_eq!(
        fs::read_to_string(w.path("root/etc/hostname")).unwrap(),
        "sandbox-host\n"
    );

    // agentupdate: downloaded, self-tested (the staged binary stays inside the root), then the
    // restart is not run: the update is undone and the reply says why.
    let original = fs::read(w.path("root/usr/sbin/guestd")).unwrap();
    // A working guestd (its self-test is the real binary's), small enough to pack quickly.
    let new = format!(
        "#!/bin/sh\nexec '{}' \"$@\"\n",
        bin::path("guestd").display()
    );
    let tgz = archive::build(&[("guestd", 0o755, new.as_bytes())]);
    let sha: String = sha2::Sha256::digest(&tgz)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let url = http::serve(Serve::Body(tgz));
    let r = native(&g, "agentupdate", json!({"url": url, "sha256": sha}));
    assert_eq!(r["returncode"], "500", "{r}");
    assert_eq!(
        r["message"],
        "Couldn't restart the agent: 'systemd-run' was not run: the --root sandbox keeps \
         service effects off this machine ([sandbox] allow_effects)"
    );
    assert_eq!(fs::read(w.path("root/usr/sbin/guestd")).unwrap(), original);
    assert!(!w.path("root/var/lib/guestd/update/state.json").exists());

    // Nothing but looking reached a stub.
    let calls = w.calls();
    let acted: Vec<&String> = calls
        .iter()
        .filter(|c| !OBSERVATIONS.contains(&c.as_str()))
        .collect();
    assert!(acted.is_empty(), "acted on the machine: {acted:?}");
    // Each refusal is in the log with its command line.
    let log = g.log();
    for line in [
        "shutdown -P +0",
        "fsfreeze-hook freeze",
        "fstrim --verbose",
        "ifup eth0",
    ] {
        assert!(
            log.lines()
                .any(|l| l.contains("not run: the --root sandbox") && l.contains(line)),
            "{line} not logged as not run:\n{log}"
        );
    }
}

fn inject(path: &str) -> Value {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    json!({"b64_path": b64(path), "b64_file": b64("hello\n")})
}

/// `[sandbox] allow_effects = ["freeze"]`: the stubs stand in for fsfreeze.
fn frozen_work() -> (Work, Guestd) {
    let w = Work::new("[sandbox]\nallow_effects = [\"freeze\"]\n");
    let g = w.start();
    let r = w.qga(json!({"execute": "guest-fsfreeze-freeze"}));
    assert_eq!(r["return"], 2, "{r}\n{}", g.log());
    assert_eq!(
        w.calls(),
        [
            "fsfreeze-hook freeze",
            "fsfreeze --freeze /data",
            "fsfreeze --freeze /"
        ]
    );
    assert!(w.record(), "the freeze is recorded in /run/guestd");
    (w, g)
}

const THAWED: [&str; 6] = [
    "fsfreeze-hook freeze",
    "fsfreeze --freeze /data",
    "fsfreeze --freeze /",
    "fsfreeze --unfreeze /",
    "fsfreeze --unfreeze /data",
    "fsfreeze-hook thaw",
];

#[test]
fn sigterm_while_frozen_thaws_and_writes_are_refused_meanwhile() {
    let (w, g) = frozen_work();
    let started = Instant::now();
    let r = native(&g, "file_inject", inject("/etc/motd"));
    assert_eq!(r["returncode"], "500");
    assert_eq!(
        r["message"],
        "Command 'file_inject' refused: the guest's filesystems are frozen \
         (guest-fsfreeze-freeze); it would block until they are thawed"
    );
    let r = native(&g, "resetnetwork", json!(""));
    assert_eq!(r["returncode"], "500");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(!w.path("root/etc/motd").exists());

    let status = g.terminate();
    assert!(status.success(), "{status:?}");
    assert_eq!(w.calls(), THAWED);
    assert!(!w.record(), "the record is gone after the thaw");
}

#[test]
fn a_guestd_killed_while_frozen_is_thawed_by_the_next_start_or_guestd_thaw() {
    let (w, g) = frozen_work();
    let log_before = g.log();
    signal(g.pid(), "KILL");
    drop(g);
    assert_eq!(
        w.calls().len(),
        3,
        "nothing thawed by a SIGKILL: {log_before}"
    );
    assert!(w.record(), "the record survives the kill");

    let g = w.start();
    assert_eq!(w.calls(), THAWED, "{}", g.log());
    assert!(!w.record());
    assert!(
        g.log()
            .contains("a previous guestd stopped with filesystems frozen; thawing them"),
        "{}",
        g.log()
    );
    assert_eq!(
        w.qga(json!({"execute": "guest-fsfreeze-status"}))["return"],
        "thawed"
    );
    let r = native(&g, "file_inject", inject("/etc/motd"));
    assert_eq!(r["returncode"], "0", "{r}");

    // What the systemd unit runs after guestd stopped, however it stopped (ExecStopPost=):
    // `guestd --thaw` thaws from the record and exits.
    let r = w.qga(json!({"execute": "guest-fsfreeze-freeze"}));
    assert_eq!(r["return"], 2, "{r}");
    signal(g.pid(), "KILL");
    drop(g);
    assert!(w.record());
    let out = std::process::Command::new(bin::path("guestd"))
        .env("PATH", w.stub_path())
        .arg("--root")
        .arg(w.path("root"))
        .arg("--config")
        .arg(w.path("guestd.toml"))
        .arg("--thaw")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(w.calls()[THAWED.len()..], THAWED);
    assert!(!w.record());
    // With nothing recorded it does nothing.
    let out = std::process::Command::new(bin::path("guestd"))
        .env("PATH", w.stub_path())
        .arg("--root")
        .arg(w.path("root"))
        .arg("--config")
        .arg(w.path("guestd.toml"))
        .arg("--thaw")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(w.calls().len(), 2 * THAWED.len());
}

/// `configure`'s `run` executes an administrator's script with `chroot ROOT SCRIPT`: inside
/// the tree, but what a script does is up to it, so under `--root` it runs only when
/// `[sandbox] allow_effects` lists `script`. The tree gets busybox-static as its `/bin/sh` so
/// that the script can leave a mark when it runs.
#[test]
fn a_configure_script_runs_under_root_only_when_the_script_effect_is_allowed() {
    let configure = "[configure]\nkinds = [\"file\", \"run\"]\n";
    let doc = json!({"resources": [
        {"name": "conf", "kind": "file", "path": "/etc/demo.conf", "content": "x=1\n"},
        {"name": "setup", "kind": "run", "script": "setup.sh", "params": {"DEMO_X": 7},
         "after": ["conf"]},
    ]});
    let prepare = |w: &Work| {
        let busybox = fs::read("/bin/busybox").expect("/bin/busybox (install busybox-static)");
        w.write("root/bin/sh", &busybox, 0o755);
        w.write(
            "root/etc/guestd/scripts/setup.sh",
            b"#!/bin/sh\necho \"ran with DEMO_X=$DEMO_X\" > /ran\n",
            0o755,
        );
    };

    // The default configuration: the file is written, the script is not run, and the reply
    // says so (500: the document was not carried out in full).
    let w = Work::new(configure);
    prepare(&w);
    let g = w.start();
    let r = native(&g, "configure", doc.clone());
    assert_eq!(r["returncode"], "500", "{r}\n{}", g.log());
    let result: Value = serde_json::from_str(r["message"].as_str().unwrap()).unwrap();
    assert_eq!(result["resources"][0]["status"], "changed", "{result:#}");
    assert_eq!(result["resources"][1]["status"], "skipped", "{result:#}");
    let reason = result["resources"][1]["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("script 'setup.sh' not run (the --root sandbox")
            && reason.ends_with("chroot (script)"),
        "{reason}"
    );
    assert_eq!(
        fs::read_to_string(w.path("root/etc/demo.conf")).unwrap(),
        "x=1\n"
    );
    assert!(!w.path("root/ran").exists(), "the script ran");
    assert!(
        g.log()
            .lines()
            .any(|l| l.contains("not run: the --root sandbox") && l.contains("setup.sh")),
        "{}",
        g.log()
    );
    drop(g);

    // Allowed: the script runs inside the tree, its parameter in its environment.
    let w = Work::new(&format!(
        "{configure}[sandbox]\nallow_effects = [\"script\"]\n"
    ));
    prepare(&w);
    let g = w.start();
    let r = native(&g, "configure", doc);
    assert_eq!(r["returncode"], "0", "{r}\n{}", g.log());
    assert_eq!(
        fs::read_to_string(w.path("root/ran")).unwrap(),
        "ran with DEMO_X=7\n"
    );
}
