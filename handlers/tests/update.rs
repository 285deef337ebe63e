#![cfg(unix)]
//! agentupdate end to end: a real HTTP server on 127.0.0.1 serves the tarball, the real
//! download helper (`guestd-update`, built by the test) fetches and unpacks it, the staged
//! "binary" (a shell script) really runs its self-test, the service manager is a recording
//! fake, and the watchdog runs against the same sandbox.
#![allow(clippy::disallowed_methods)] // tests build their trees by path

mod support;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;

use guestd_core::{Output, Root};
use guestd_distro::OsBackend;
use guestd_handlers::update::watchdog::{self, Status, WatchState};
use guestd_handlers::{AgentUpdateHandler, UpdateConfig};
use guestd_testkit::http::{Serve, serve};
use guestd_update::archive;
use md5::Digest;
use support::{Recorder, call, env_with};

const OLD_BINARY: &[u8] = b"#!/bin/sh\necho 'guestd 0.1.0 self-test ok'\n";

/// A new "guestd" whose self-test reports `version` and exits with `code`.
fn new_binary(version: &str, code: i32) -> Vec<u8> {
    format!(
        "#!/bin/sh\n[ \"$1\" = --self-test ] || exit 2\necho 'checking config'\necho 'guestd {version} self-test ok'\nexit {code}\n"
    )
    .into_bytes()
}

fn md5_hex(b: &[u8]) -> String {
    md5::Md5::digest(b)
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

fn sha256_hex(b: &[u8]) -> String {
    sha2::Sha256::digest(b)
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

struct Guest {
    dir: tempfile::TempDir,
    root: Root,
    config: UpdateConfig,
}

impl Guest {
    /// A systemd guest with the old binary at /usr/sbin/guestd.
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("usr/sbin")).unwrap();
        fs::create_dir_all(dir.path().join("run/systemd/system")).unwrap();
        let bin = dir.path().join("usr/sbin/guestd");
        fs::write(&bin, OLD_BINARY).unwrap();
        fs::set_permissions(&bin, fs::Permissions::from_mode(0o751)).unwrap();
        let root = Root::sandbox(dir.path()).unwrap();
        let config = UpdateConfig {
            install_path: Some("/usr/sbin/guestd".into()),
            ready_timeout_secs: 1,
            restart_delay_ms: 0,
            max_size: 1 << 20,
            helper: Some(helper().to_string_lossy().into_owned()),
            ..UpdateConfig::default()
        };
        Self { dir, root, config }
    }

    fn path(&self, p: &str) -> std::path::PathBuf {
        self.dir.path().join(p.trim_start_matches('/'))
    }

    fn update(&self, runner: &Arc<Recorder>, value: serde_json::Value) -> guestd_core::Reply {
        // The OS as guestd finds it at start-up (a systemd guest unless a test changes that).
        let backend = Arc::new(OsBackend::detect(&self.root));
        let env = env_with(&self.root, runner.clone(), backend);
        let request = serde_json::json!({"name": "agentupdate", "value": value}).to_string();
        call(&env, AgentUpdateHandler::new(self.config.clone()), &request)
    }

    /// Installed binary unchanged, no previous copy, no state: nothing happened.
    fn assert_untouched(&self) {
        assert_eq!(fs::read(self.path("/usr/sbin/guestd")).unwrap(), OLD_BINARY);
        assert_eq!(
            fs::metadata(self.path("/usr/sbin/guestd")).unwrap().mode() & 0o7777,
            0o751
        );
        assert!(!self.path("/usr/sbin/guestd.previous").exists());
        assert!(!self.path("/var/lib/guestd/update/state.json").exists());
        let names: Vec<_> = fs::read_dir(self.path("/usr/sbin"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["guestd"], "stray files next to the binary");
    }

    /// The staging directory of the last update (kept after a failure).
    fn staged(&self) -> std::path::PathBuf {
        let dirs: Vec<_> = fs::read_dir(self.path("/var/lib/guestd/update"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| {
                p.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with("staged.")
            })
            .collect();
        assert_eq!(dirs.len(), 1, "{dirs:?}");
        dirs[0].clone()
    }

    fn runner(&self) -> Arc<Recorder> {
        Arc::new(
            Recorder::new()
                .running_under(self.dir.path())
                .running(&helper()),
        )
    }
}

/// The download helper, built from this workspace.
fn helper() -> std::path::PathBuf {
    guestd_testkit::bin::path("guestd-update")
}

/// The commands the runner saw, without the helper's (`fetch`, `unpack`).
fn without_helper(runner: &Recorder) -> Vec<String> {
    let helper = helper().to_string_lossy().into_owned();
    runner
        .lines()
        .into_iter()
        .filter(|l| !l.starts_with(&helper))
        .collect()
}

fn tarball(binary: &[u8]) -> Vec<u8> {
    archive::build(&[("guestd-9.9.9/guestd", 0o755, binary)])
}

#[test]
fn wrong_checksum_changes_nothing() {
    let g = Guest::new();
    let tgz = tarball(&new_binary("9.9.9", 0));
    let url = serve(Serve::Body(tgz.clone()));
    let runner = g.runner();
    let bad = "0".repeat(32);
    let reply = g.update(&runner, format!("{url},{bad}").into());
    assert_eq!(reply.returncode, "500");
    assert_eq!(
        reply.message,
        format!("MD5 sums do not match ({bad} != {})", md5_hex(&tgz))
    );
    let reply = g.update(
        &runner,
        serde_json::json!({"url": url, "sha256": "f".repeat(64)}),
    );
    assert!(
        reply.message.starts_with("SHA-256 sums do not match"),
        "{reply:?}"
    );
    // Only the download ran: the checksum failed before the archive was even unpacked.
    let helper = helper().display().to_string();
    assert_eq!(
        runner.lines(),
        [
            format!("{helper} fetch --user nobody"),
            format!("{helper} fetch --user nobody")
        ]
    );
    g.assert_untouched();
}

#[test]
fn good_update_replaces_binary_keeps_previous_and_restarts_through_the_service_manager() {
    let g = Guest::new();
    let new = new_binary("9.9.9", 0);
    let tgz = tarball(&new);
    let url = serve(Serve::Body(tgz.clone()));
    let runner = g.runner();
    let reply = g.update(&runner, format!("{url},{}", md5_hex(&tgz)).into());
    assert_eq!(
        (reply.returncode.as_str(), reply.message.as_str()),
        ("0", "")
    );

    assert_eq!(fs::read(g.path("/usr/sbin/guestd")).unwrap(), new);
    assert_eq!(
        fs::metadata(g.path("/usr/sbin/guestd")).unwrap().mode() & 0o7777,
        0o751
    );
    assert_eq!(
        fs::read(g.path("/usr/sbin/guestd.previous")).unwrap(),
        OLD_BINARY
    );
    assert_eq!(
        fs::metadata(g.path("/usr/sbin/guestd.previous"))
            .unwrap()
            .mode()
            & 0o7777,
        0o751
    );
    assert_eq!(
        fs::read_dir(g.path("/var/lib/guestd/update"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect::<Vec<_>>(),
        ["state.json"],
        "staging not cleaned"
    );

    // The helper downloaded and unpacked (as nobody, with an empty environment), the
    // self-test ran the staged binary, then the watchdog was started through systemd.
    let helper = helper().display().to_string();
    let all = runner.lines();
    assert_eq!(
        all[..2],
        [
            format!("{helper} fetch --user nobody"),
            format!("{helper} unpack --user nobody --max-unpacked 4194304")
        ]
    );
    assert!(
        runner.ran.lock().unwrap()[..2]
            .iter()
            .all(|c| c.env == Some(Vec::new()))
    );
    let base = g.dir.path().canonicalize().unwrap();
    let base = base.display();
    let lines = without_helper(&runner);
    assert_eq!(lines.len(), 2, "{lines:?}");
    let staged = lines[0]
        .strip_prefix(&format!("{base}/var/lib/guestd/update/staged."))
        .unwrap_or_else(|| panic!("{lines:?}"));
    assert!(staged.ends_with("/guestd --self-test"), "{lines:?}");
    assert!(
        lines[1].starts_with("systemd-run --unit guestd-update-watchdog-"),
        "{lines:?}"
    );
    assert!(lines[1].ends_with(&format!(
        "{base}/usr/sbin/guestd.previous --update-watchdog /var/lib/guestd/update/state.json --root {base}"
    )), "{lines:?}");
    let state = WatchState::load(&g.root, "/var/lib/guestd/update/state.json").unwrap();
    assert_eq!(state.status, Status::Pending);
    assert_eq!(state.new_version, "9.9.9");

    // A second update while this one is pending is refused before any download.
    let again = g.update(&runner, format!("{url},{}", md5_hex(&tgz)).into());
    assert_eq!(again.message, "An agent update is already in progress");

    // The watchdog: systemd restarts guestd, the new daemon writes its ready marker.
    let root = g.root.clone();
    let sm = Recorder::new().with(move |cmd| {
        if cmd.program == "systemctl" {
            let installed = root.read("/usr/sbin/guestd").unwrap();
            let version = if installed == OLD_BINARY {
                "0.1.0"
            } else {
                "9.9.9"
            };
            watchdog::write_ready_marker(&root, "/run/guestd/ready", version).unwrap();
        }
        Some(Ok(Output {
            code: Some(0),
            ..Output::default()
        }))
    });
    let status = watchdog::supervise(&g.root, &sm, "/var/lib/guestd/update/state.json").unwrap();
    assert_eq!(status, Status::Ready);
    assert_eq!(sm.lines(), ["systemctl restart guestd"]);
    assert_eq!(fs::read(g.path("/usr/sbin/guestd")).unwrap(), new);
    let state = WatchState::load(&g.root, "/var/lib/guestd/update/state.json").unwrap();
    assert_eq!(state.status, Status::Ready);
}

#[test]
fn new_binary_that_does_not_come_up_is_rolled_back() {
    let mut g = Guest::new();
    g.config.restart_command = Some(vec!["/usr/local/bin/restart-guestd".into(), "now".into()]);
    let new = new_binary("9.9.9", 0);
    let tgz = tarball(&new);
    let url = serve(Serve::Body(tgz.clone()));
    let runner = g.runner();
    let reply = g.update(
        &runner,
        serde_json::json!({"url": url, "sha256": sha256_hex(&tgz)}),
    );
    assert_eq!(reply.returncode, "0", "{reply:?}");
    assert_eq!(fs::read(g.path("/usr/sbin/guestd")).unwrap(), new);

    // Only the old binary comes up after a restart.
    let root = g.root.clone();
    let sm = Recorder::new().with(move |cmd| {
        assert_eq!(cmd.program, "/usr/local/bin/restart-guestd");
        if root.read("/usr/sbin/guestd").unwrap() == OLD_BINARY {
            watchdog::write_ready_marker(&root, "/run/guestd/ready", "0.1.0").unwrap();
        }
        Some(Ok(Output {
            code: Some(0),
            ..Output::default()
        }))
    });
    let status = watchdog::supervise(&g.root, &sm, "/var/lib/guestd/update/state.json").unwrap();
    assert_eq!(status, Status::RolledBack);
    assert_eq!(
        sm.lines(),
        [
            "/usr/local/bin/restart-guestd now",
            "/usr/local/bin/restart-guestd now"
        ]
    );
    assert_eq!(fs::read(g.path("/usr/sbin/guestd")).unwrap(), OLD_BINARY);
    assert_eq!(
        fs::metadata(g.path("/usr/sbin/guestd")).unwrap().mode() & 0o7777,
        0o751
    );
    let state = WatchState::load(&g.root, "/var/lib/guestd/update/state.json").unwrap();
    assert_eq!(state.status, Status::RolledBack);
    // Not in progress any more: a new update may start.
    assert!(!state.in_progress(watchdog::unix_now()));
}

#[test]
fn failed_self_test_changes_nothing() {
    let g = Guest::new();
    let tgz = tarball(&new_binary("9.9.9", 1));
    let url = serve(Serve::Body(tgz.clone()));
    let runner = g.runner();
    let reply = g.update(&runner, format!("{url},{}", md5_hex(&tgz)).into());
    assert_eq!(
        (reply.returncode.as_str(), reply.message.as_str()),
        ("500", "New agent failed its self-test (exit status 1)")
    );
    assert_eq!(without_helper(&runner).len(), 1);
    g.assert_untouched();
}

#[test]
fn broken_downloads_and_archives_fail_cleanly() {
    let g = Guest::new();
    let good = tarball(&new_binary("9.9.9", 0));
    let sum = md5_hex(&good);
    let big = vec![7u8; (1 << 20) + 10];
    let cases = [
        (
            Serve::HalfThenClose(good.clone()),
            sum.clone(),
            format!("stopped after {} of {} bytes", good.len() / 2, good.len()),
        ),
        (
            Serve::MoreThanAnnounced(good.clone()),
            sum.clone(),
            "MD5 sums do not match".to_string(),
        ),
        (
            Serve::Body(big.clone()),
            md5_hex(&big),
            format!(
                "is too large: {} bytes announced, the limit is 1048576",
                big.len()
            ),
        ),
        (
            Serve::Chunked(big.clone()),
            md5_hex(&big),
            "is larger than the limit of 1048576 bytes".to_string(),
        ),
        (
            Serve::Status(404),
            sum.clone(),
            "failed: HTTP status 404".to_string(),
        ),
        (
            Serve::Body(b"not a tarball".to_vec()),
            md5_hex(b"not a tarball"),
            "Update archive is not a valid .tar.gz".to_string(),
        ),
    ];
    for (answer, sum, want) in cases {
        let url = serve(answer);
        let reply = g.update(&g.runner(), format!("{url},{sum}").into());
        assert_eq!(reply.returncode, "500");
        assert!(
            reply.message.contains(&want),
            "{want:?} not in {:?}",
            reply.message
        );
        g.assert_untouched();
    }
    // A tarball without the binary.
    let nobin = archive::build(&[("pkg/README", 0o644, b"hello")]);
    let url = serve(Serve::Body(nobin.clone()));
    let reply = g.update(&g.runner(), format!("{url},{}", md5_hex(&nobin)).into());
    assert_eq!(reply.message, "Update archive holds no guestd binary");
    // A chunked download within the limit works up to the checksum.
    let url = serve(Serve::Chunked(good.clone()));
    let reply = g.update(&g.runner(), format!("{url},{}", "1".repeat(32)).into());
    assert!(reply.message.contains(&format!("!= {sum}")), "{reply:?}");
    // Not http(s); nothing listening.
    let reply = g.update(&g.runner(), format!("file:///etc/passwd,{sum}").into());
    assert_eq!(
        reply.message,
        "Only http and https URLs are supported for agent updates"
    );
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let reply = g.update(&g.runner(), format!("http://{dead}/x.tgz,{sum}").into());
    assert!(
        reply
            .message
            .starts_with(&format!("Download of http://{dead}/x.tgz failed")),
        "{reply:?}"
    );
    g.assert_untouched();
}

#[test]
fn installer_runs_with_an_empty_environment_and_its_failure_changes_nothing() {
    let g = Guest::new();
    let new = new_binary("9.9.9", 0);
    let failing = archive::build(&[
        ("pkg/guestd", 0o755, &new),
        (
            "pkg/installer.sh",
            0o755,
            b"echo \"home=${HOME-unset}\" > ran.txt\nexit 3\n",
        ),
    ]);
    let url = serve(Serve::Body(failing.clone()));
    let reply = g.update(&g.runner(), format!("{url},{}", md5_hex(&failing)).into());
    assert_eq!(reply.message, "Agent installer script failed: 3");
    assert_eq!(
        fs::read_to_string(g.staged().join("payload/pkg/ran.txt")).unwrap(),
        "home=unset\n"
    );
    g.assert_untouched();

    let ok = archive::build(&[
        ("pkg/guestd", 0o755, &new),
        (
            "pkg/installer.sh",
            0o755,
            b"[ -f guestd ] && [ -z \"$HOME\" ]\n",
        ),
    ]);
    let url = serve(Serve::Body(ok.clone()));
    let runner = g.runner();
    let reply = g.update(&runner, format!("{url},{}", md5_hex(&ok)).into());
    assert_eq!(reply.returncode, "0", "{reply:?}");
    let installer = runner.ran.lock().unwrap()[3].clone();
    assert_eq!(installer.env, Some(Vec::new()));
    assert_eq!(fs::read(g.path("/usr/sbin/guestd")).unwrap(), new);
}

#[test]
fn no_service_manager_is_refused_before_downloading() {
    let g = Guest::new();
    fs::remove_dir_all(g.path("/run/systemd")).unwrap();
    let runner = g.runner();
    let reply = g.update(
        &runner,
        format!("http://127.0.0.1:9/x.tgz,{}", "0".repeat(32)).into(),
    );
    assert_eq!(
        reply.message,
        "No service manager found to restart the agent"
    );
    assert!(runner.lines().is_empty());
    g.assert_untouched();
}

/// A companion binary ("guestd-tls" / "guestd-update") whose self-test or `--version` reports
/// `version`.
fn companion(version: &str) -> Vec<u8> {
    format!(
        "#!/bin/sh\ncase \"$1\" in --self-test) echo 'guestd {version} self-test ok';; \
         --version) echo 'guestd-update {version}';; *) exit 2;; esac\n"
    )
    .into_bytes()
}

#[test]
fn companions_beside_the_binary_are_installed_and_rolled_back_with_it() {
    let g = Guest::new();
    // An old guestd-tls is installed; there is no guestd-update yet.
    let old_tls = companion("0.1.0");
    fs::write(g.path("/usr/sbin/guestd-tls"), &old_tls).unwrap();
    fs::set_permissions(
        g.path("/usr/sbin/guestd-tls"),
        fs::Permissions::from_mode(0o750),
    )
    .unwrap();
    let new = new_binary("9.9.9", 0);
    let (new_tls, new_helper) = (companion("9.9.9"), companion("9.9.9"));
    let tgz = archive::build(&[
        ("pkg/guestd", 0o755, &new),
        ("pkg/guestd-tls", 0o755, &new_tls),
        ("pkg/guestd-update", 0o755, &new_helper),
        ("guestd-update", 0o755, b"not beside the binary"),
    ]);
    let url = serve(Serve::Body(tgz.clone()));
    let runner = g.runner();
    let reply = g.update(&runner, format!("{url},{}", md5_hex(&tgz)).into());
    assert_eq!(reply.returncode, "0", "{reply:?}");
    let base = g.dir.path().canonicalize().unwrap();
    let base = base.display();
    let lines = without_helper(&runner);
    let staged: Vec<_> = lines[..3]
        .iter()
        .map(|l| {
            let rest = l
                .strip_prefix(&format!("{base}/var/lib/guestd/update/staged."))
                .unwrap_or_else(|| panic!("{lines:?}"));
            rest.split_once('/').unwrap().1.to_string()
        })
        .collect();
    assert_eq!(
        staged,
        [
            "guestd --self-test",
            "guestd-update --version",
            "guestd-tls --self-test"
        ]
    );
    assert_eq!(fs::read(g.path("/usr/sbin/guestd-tls")).unwrap(), new_tls);
    assert_eq!(
        fs::read(g.path("/usr/sbin/guestd-tls.previous")).unwrap(),
        old_tls
    );
    assert_eq!(
        fs::metadata(g.path("/usr/sbin/guestd-tls")).unwrap().mode() & 0o7777,
        0o750
    );
    assert_eq!(
        fs::read(g.path("/usr/sbin/guestd-update")).unwrap(),
        new_helper
    );

    // The new daemon never comes up: everything goes back to how it was.
    let root = g.root.clone();
    let sm = Recorder::new().with(move |_| {
        if root.read("/usr/sbin/guestd").unwrap() == OLD_BINARY {
            watchdog::write_ready_marker(&root, "/run/guestd/ready", "0.1.0").unwrap();
        }
        Some(Ok(Output {
            code: Some(0),
            ..Output::default()
        }))
    });
    let status = watchdog::supervise(&g.root, &sm, "/var/lib/guestd/update/state.json").unwrap();
    assert_eq!(status, Status::RolledBack);
    assert_eq!(fs::read(g.path("/usr/sbin/guestd")).unwrap(), OLD_BINARY);
    assert_eq!(fs::read(g.path("/usr/sbin/guestd-tls")).unwrap(), old_tls);
    assert!(!g.path("/usr/sbin/guestd-update").exists());
}

#[test]
fn companion_of_another_version_changes_nothing() {
    let g = Guest::new();
    let tgz = archive::build(&[
        ("guestd", 0o755, &new_binary("9.9.9", 0)),
        ("guestd-update", 0o755, &companion("9.9.8")),
    ]);
    let url = serve(Serve::Body(tgz.clone()));
    let reply = g.update(&g.runner(), format!("{url},{}", md5_hex(&tgz)).into());
    assert_eq!(
        reply.message,
        "New guestd-update is version 9.9.8, the new agent 9.9.9"
    );
    g.assert_untouched();
}

#[test]
fn a_missing_helper_is_a_clear_error() {
    let mut g = Guest::new();
    g.config.helper = Some("/nonexistent/guestd-update".into());
    let runner = Arc::new(Recorder::new().running(Path::new("/nonexistent/guestd-update")));
    let reply = g.update(
        &runner,
        format!("http://127.0.0.1:9/x.tgz,{}", "0".repeat(32)).into(),
    );
    assert!(
        reply
            .message
            .starts_with("Cannot run the update helper '/nonexistent/guestd-update'"),
        "{reply:?}"
    );
    g.assert_untouched();
}

#[test]
fn a_second_update_while_one_runs_is_refused_on_any_channel() {
    let g = Arc::new(Guest::new());
    let tgz = tarball(&new_binary("9.9.9", 0));
    let url = serve(Serve::Slow(tgz.clone(), std::time::Duration::from_secs(2)));
    let value: serde_json::Value = format!("{url},{}", md5_hex(&tgz)).into();
    let first = {
        let (g, value) = (g.clone(), value.clone());
        std::thread::spawn(move || g.update(&g.runner(), value))
    };
    std::thread::sleep(std::time::Duration::from_millis(500));
    // Another channel: its own env and handler, the same guest.
    let second = g.update(&g.runner(), value);
    assert_eq!(second.message, "An agent update is already in progress");
    let first = first.join().unwrap();
    assert_eq!(first.returncode, "0", "{first:?}");
    assert_eq!(
        fs::read(g.path("/usr/sbin/guestd.previous")).unwrap(),
        OLD_BINARY
    );
}

#[test]
fn a_state_dir_other_accounts_can_change_is_refused_before_downloading() {
    let mut g = Guest::new();
    let home = g.path("/home/alice");
    fs::create_dir_all(&home).unwrap();
    std::os::unix::fs::chown(&home, Some(1000), Some(1000)).unwrap();
    g.config.state_dir = "/home/alice/update".into();
    let runner = g.runner();
    let reply = g.update(
        &runner,
        format!("http://127.0.0.1:9/x.tgz,{}", "0".repeat(32)).into(),
    );
    assert_eq!(
        reply.message,
        "Cannot use update.state_dir '/home/alice/update' for an update: '/home/alice' can be \
         changed by an unprivileged user (it must belong to root and be writable only by it)"
    );
    assert!(runner.lines().is_empty());
    assert!(!home.join("update").exists());
    g.assert_untouched();
}
