//! Issue 11: the Windows build end to end. `guestd.exe` (cross-built for
//! x86_64-pc-windows-gnu) runs under Wine in a sandbox root given as a Windows path
//! (`Z:\tmp\...`), listening on loopback TCP; the Linux `guestctl` drives it: version, features,
//! keyinit2 + password against the FAKE account store (`password.windows_accounts = "fake:DIR"`:
//! Wine has no user database, so account enumeration and the final `NetUserSetInfo` are replaced
//! by a directory; the account choice and everything before it are the real code), and file
//! injection to `C:\...` paths. Also: the named pipe (`pipe:\\.\pipe\...`) driven by the Windows
//! `guestctl.exe` under Wine, the service under Wine's SCM, and the hostname through
//! `SetComputerNameExW` (Wine writes it to the registry of a private prefix copy).
//!
//! Needs `wine` (scripts/test-all installs it); without it the tests fail with a clear message
//! unless `GUESTD_SKIP_WINE=1` says to skip them.
#![cfg(target_os = "linux")]
#![allow(clippy::disallowed_methods)] // these tests spawn the binaries they test

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use guestd_distro::password::crypt;
use guestd_tests::bin;

const TARGET: &str = "x86_64-pc-windows-gnu";

/// The fake account store: the built-in Administrator renamed (RID 500), a guest, a user.
const ACCOUNTS: &str = "# name:rid\nGast:501\nAdministrateur:500\nops:1001\n";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `true` when the tests should run; panics with instructions when Wine is missing.
fn wine_ready() -> bool {
    let found = Command::new("wine")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        if std::env::var_os("GUESTD_SKIP_WINE").is_some() {
            eprintln!("SKIPPED: wine is not installed (GUESTD_SKIP_WINE is set)");
            return false;
        }
        panic!(
            "wine is not installed: apt-get install wine wine64 gcc-mingw-w64-x86-64 \
             (scripts/test-all does), or set GUESTD_SKIP_WINE=1 to skip these tests"
        );
    }
    true
}

/// Build guestd.exe (a no-op when up to date) and prepare the Wine prefix, once per process.
/// guestd.exe is built with the test-only fake account store (cargo feature
/// `fake-windows-accounts`), which release builds do not have.
fn setup() -> &'static (PathBuf, PathBuf) {
    static ONCE: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    ONCE.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .current_dir(repo())
            .args(["build", "--quiet", "--target", TARGET])
            .args([
                "-p",
                "guestd-daemon",
                "-p",
                "guestd-ctl",
                "-p",
                "guestd-update",
            ])
            .args(["--features", "guestd-daemon/fake-windows-accounts"])
            .args([
                "--bin",
                "guestd",
                "--bin",
                "guestctl",
                "--bin",
                "guestd-update",
            ])
            .status()
            .expect("run cargo build");
        assert!(
            status.success(),
            "cargo build --target {TARGET} --features guestd-daemon/fake-windows-accounts \
             --bin guestd --bin guestctl --bin guestd-update failed"
        );
        // target/debug/guestd -> target/x86_64-pc-windows-gnu/debug/guestd.exe
        let linux = bin::path("guestctl");
        let profile = linux.parent().unwrap();
        let exe = profile
            .parent()
            .unwrap()
            .join(TARGET)
            .join(profile.file_name().unwrap())
            .join("guestd.exe");
        assert!(exe.exists(), "{} was not built", exe.display());
        let out = Command::new(repo().join("scripts/wine/setup"))
            .output()
            .expect("run scripts/wine/setup");
        assert!(out.status.success(), "scripts/wine/setup: {out:?}");
        let prefix = PathBuf::from(String::from_utf8(out.stdout).unwrap().trim());
        (exe, prefix)
    })
}

/// `guestctl.exe`, built by [`setup`] beside `guestd.exe`.
fn guestctl_exe() -> PathBuf {
    setup().0.with_file_name("guestctl.exe")
}

/// A Linux path as Wine sees it (drive Z: is `/`).
fn win_path(p: &Path) -> String {
    format!("Z:{}", p.display()).replace('/', "\\")
}

/// guestd.exe running under Wine with a sandbox root and a fake account store.
struct WinGuestd {
    child: Child,
    dir: tempfile::TempDir,
    port: u16,
    /// `--listen pipe:NAME` instead of loopback TCP.
    pipe: Option<String>,
}

impl WinGuestd {
    fn start() -> Self {
        Self::start_on(None)
    }

    /// Serving the named pipe `name` (`\\.\pipe\...`), or loopback TCP when `None`.
    fn start_on(pipe: Option<String>) -> Self {
        Self::start_in(&setup().1, pipe)
    }

    /// [`start_on`](Self::start_on) in the Wine prefix `prefix`.
    fn start_in(prefix: &Path, pipe: Option<String>) -> Self {
        let exe = &setup().0;
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        let accounts = dir.path().join("accounts");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::create_dir_all(&accounts).unwrap();
        std::fs::write(accounts.join("accounts"), ACCOUNTS).unwrap();
        let config = dir.path().join("guestd.toml");
        std::fs::write(
            &config,
            format!(
                "[password]\nwindows_accounts = 'fake:{}'\n\
                 # the Linux guestctl drives guestd.exe over plain loopback TCP\n\
                 [tcp]\nallow_unauthenticated_loopback = true\n\
                 # the hostname test sets the computer name in its private Wine prefix\n\
                 [sandbox]\nallow_effects = ['hostname']\n",
                win_path(&accounts)
            ),
        )
        .unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let listen = match &pipe {
            Some(name) => format!("pipe:{name}"),
            None => format!("tcp:127.0.0.1:{port}"),
        };
        let child = Command::new("wine")
            .env("WINEPREFIX", prefix)
            .env("WINEDEBUG", "-all")
            .arg(exe)
            .args(["--root", &win_path(&root)])
            .args(["--config", &win_path(&config)])
            .args(["--listen", &listen])
            .args(["--log-level", "debug"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("guestd.log")).unwrap())
            .spawn()
            .expect("spawn wine guestd.exe");
        let mut g = Self {
            child,
            dir,
            port,
            pipe,
        };
        g.wait_ready();
        g
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(120);
        while Instant::now() < deadline {
            let ready = match self.pipe {
                // The pipe exists from before this line is logged.
                Some(_) => self.log().contains("guestd ready"),
                None => TcpStream::connect(("127.0.0.1", self.port)).is_ok(),
            };
            if ready {
                return;
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!(
                    "guestd.exe exited with {status} before listening:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("guestd.exe did not listen within 120 s:\n{}", self.log());
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("guestd.log")).unwrap_or_default()
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    fn ctl(&self, args: &[&str], stdin: &[u8]) -> Output {
        let mut child = Command::new(bin::path("guestctl"))
            .args(["--connect", &format!("tcp:127.0.0.1:{}", self.port)])
            .args(["--timeout", "60"])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let _ = child.stdin.take().unwrap().write_all(stdin); // guestctl may not read it
        child.wait_with_output().unwrap()
    }

    /// The hash recorded for `name` by the fake account store, if any.
    fn recorded(&self, name: &str) -> Option<String> {
        std::fs::read_to_string(self.dir.path().join("accounts/passwords").join(name)).ok()
    }
}

impl Drop for WinGuestd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn guestd_exe_under_wine_end_to_end() {
    if !wine_ready() {
        return;
    }
    let g = WinGuestd::start();

    // version and features, as the Linux guestctl sees them over loopback TCP.
    let v = g.ctl(&["version"], b"");
    assert!(v.status.success(), "{v:?}\n{}", g.log());
    assert_eq!(stdout(&v), guestd_handlers::AGENT_VERSION);
    let f = g.ctl(&["features"], b"");
    assert!(f.status.success(), "{f:?}");
    assert_eq!(stdout(&f), guestd_tests::DEFAULT_FEATURES);
    assert!(g.log().contains("backend=windows"), "{}", g.log());

    // keyinit2 + password: the built-in Administrator (RID 500) whatever its name.
    let pw = "Win Pw 1 ünï";
    let out = g.ctl(
        &["set-password", "--password-stdin", "--require-strong"],
        pw.as_bytes(),
    );
    assert!(out.status.success(), "{out:?}\n{}", g.log());
    let hash = g
        .recorded("Administrateur")
        .expect("no password recorded for RID 500");
    assert!(crypt::verify(hash.trim(), pw), "{hash}");
    assert_eq!(g.recorded("Gast"), None);
    assert_eq!(g.recorded("ops"), None);

    // A named account (case-insensitive, as Windows compares names).
    let out = g.ctl(
        &["set-password", "--password-stdin", "--user", "OPS"],
        b"ops pw 2\n",
    );
    assert!(out.status.success(), "{out:?}\n{}", g.log());
    assert!(crypt::verify(g.recorded("ops").unwrap().trim(), "ops pw 2"));
    assert!(crypt::verify(
        g.recorded("Administrateur").unwrap().trim(),
        pw
    ));

    // An unknown account: a clear error, nothing recorded.
    let out = g.ctl(
        &["set-password", "--password-stdin", "--user", "root"],
        b"x\n",
    );
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        stderr(&out).contains("no local account named 'root'"),
        "{out:?}"
    );
    assert_eq!(g.recorded("root"), None);

    let log = g.log();
    for secret in [pw, "ops pw 2"] {
        assert!(!log.contains(secret), "password in the log:\n{log}");
    }
    assert!(log.contains("FAKE account store"), "{log}");
}

#[test]
fn file_injection_to_windows_paths() {
    if !wine_ready() {
        return;
    }
    let g = WinGuestd::start();
    let local = g.dir.path().join("payload");
    let inject = |remote: &str, contents: &[u8]| {
        std::fs::write(&local, contents).unwrap();
        g.ctl(&["inject-file", local.to_str().unwrap(), remote], b"")
    };

    // A new file below missing directories; the drive letter is a directory of the sandbox.
    let out = inject(
        r"C:\ProgramData\Amazon\EC2-Windows\Launch\Config\user.txt",
        b"one\r\n",
    );
    assert!(out.status.success(), "{out:?}\n{}", g.log());
    let file = g
        .root()
        .join("C/ProgramData/Amazon/EC2-Windows/Launch/Config/user.txt");
    assert_eq!(std::fs::read(&file).unwrap(), b"one\r\n");

    // Replacing it (ReplaceFileW under Wine) keeps a backup under ProgramData\guestd\backup
    // (never beside the file); forward slashes and a lower-case drive name the same file.
    let out = inject(
        "c:/ProgramData/Amazon/EC2-Windows/Launch/Config/user.txt",
        b"two",
    );
    assert!(out.status.success(), "{out:?}\n{}", g.log());
    assert_eq!(std::fs::read(&file).unwrap(), b"two");
    assert_eq!(
        std::fs::read(g.root().join(
            "C/ProgramData/guestd/backup/C/ProgramData/Amazon/EC2-Windows/Launch/Config/user.txt.1"
        ))
        .unwrap(),
        b"one\r\n"
    );
    let names: Vec<String> = std::fs::read_dir(file.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names.iter().all(|n| !n.contains("guestd-tmp")),
        "temp files left: {names:?}"
    );

    // Refused: UNC shares, device paths, drive-relative paths, `..`.
    for (remote, why) in [
        (r"\\fileserver\share\x.txt", "not on a local drive"),
        (r"\\.\PhysicalDrive0", "not on a local drive"),
        (r"C:relative.txt", "is not absolute"),
        (r"C:\Windows\..\evil.txt", "contains '..'"),
    ] {
        let out = inject(remote, b"x");
        assert_eq!(out.status.code(), Some(1), "{remote}: {out:?}");
        assert!(stderr(&out).contains(why), "{remote}: {}", stderr(&out));
    }
    assert!(!g.root().join("evil.txt").exists());
    assert!(!g.root().join("C/evil.txt").exists());
}

/// Run `wine ARGS` in `prefix`, with a deadline. Output goes through files, not pipes: the
/// first wine command of a session starts services.exe and friends, which inherit its handles
/// and would keep a pipe open long after the command itself has finished.
/// `out` is a failure whose stderr says `text`.
fn assert_fails_saying(out: &Output, text: &str) {
    assert!(!out.status.success(), "{out:?}");
    assert!(stderr(out).contains(text), "{}", stderr(out));
}

fn wine(prefix: &Path, args: &[&str]) -> Output {
    wine_with_input(prefix, args, b"")
}

/// [`wine`] with `input` on the program's stdin (through a file, for the same reason).
fn wine_with_input(prefix: &Path, args: &[&str], input: &[u8]) -> Output {
    let out = tempfile::NamedTempFile::new().unwrap();
    let err = tempfile::NamedTempFile::new().unwrap();
    let mut stdin = tempfile::NamedTempFile::new().unwrap();
    stdin.write_all(input).unwrap();
    let mut child = Command::new("wine")
        .env("WINEPREFIX", prefix)
        .env("WINEDEBUG", "-all")
        .args(args)
        .stdin(std::fs::File::open(stdin.path()).unwrap())
        .stdout(out.reopen().unwrap())
        .stderr(err.reopen().unwrap())
        .spawn()
        .expect("spawn wine");
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("wine {args:?} did not finish within 120 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Output {
        status,
        stdout: std::fs::read(out.path()).unwrap(),
        stderr: std::fs::read(err.path()).unwrap(),
    }
}

/// A private copy of the Wine prefix with a persistent wineserver (services die with the
/// wineserver, which otherwise exits as soon as `sc start` does). Killed and removed on drop.
struct PrivatePrefix {
    dir: tempfile::TempDir,
}

impl PrivatePrefix {
    fn new(from: &Path) -> Self {
        // The shared prefix may be in use by a test running in parallel (the service test
        // registers a service in it), and a copy taken at that moment has been seen without
        // its registry keys; such a copy is taken again.
        for attempt in 1..=3 {
            let dir = tempfile::tempdir().unwrap();
            let status = Command::new("cp")
                .arg("-a")
                .arg(format!("{}/.", from.display()))
                .arg(dir.path())
                .status()
                .unwrap();
            assert!(status.success(), "copying the Wine prefix");
            let status = Command::new("wineserver")
                .env("WINEPREFIX", dir.path())
                .arg("-p")
                .status()
                .unwrap();
            assert!(status.success(), "wineserver -p");
            let copy = Self { dir };
            let key = r"HKLM\System\CurrentControlSet\Control\ComputerName\ComputerName";
            let check = wine(copy.path(), &["reg", "query", key, "/v", "ComputerName"]);
            if check.status.success() {
                return copy;
            }
            eprintln!("private Wine prefix, attempt {attempt}: registry incomplete, copying again");
            std::thread::sleep(Duration::from_secs(1));
        }
        panic!(
            "could not make a usable copy of the Wine prefix {}",
            from.display()
        );
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for PrivatePrefix {
    fn drop(&mut self) {
        let _ = Command::new("wineserver")
            .env("WINEPREFIX", self.dir.path())
            .arg("-k")
            .status();
    }
}

/// Registered with Wine's `sc create`, started and stopped by its Service Control Manager:
/// guestd reports Running, serves, logs to `%ProgramData%\guestd\guestd.log`, and on
/// SERVICE_CONTROL_STOP finishes and reports Stopped with exit code 0.
#[test]
fn runs_as_a_service_under_the_wine_scm() {
    if !wine_ready() {
        return;
    }
    let (exe, shared) = setup();
    let prefix = PrivatePrefix::new(shared);

    // Not started by the SCM: --service fails fast with a clear message. In the test's own
    // prefix: Wine lets a `--service` process connect to whatever service start its SCM has
    // under way, so in the shared prefix another test's Wine start-up could be taken over.
    let out = wine(prefix.path(), &[exe.to_str().unwrap(), "--service"]);
    assert_fails_saying(&out, "cannot connect to the Service Control Manager");
    let work = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(work.path().join("root")).unwrap();
    let config = work.path().join("guestd.toml");
    std::fs::write(&config, "[tcp]\nallow_unauthenticated_loopback = true\n").unwrap();
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let name = format!("guestd-test-{}", std::process::id());
    let bin_path = format!(
        "{} --service --root {} --config {} --listen tcp:127.0.0.1:{port}",
        win_path(exe),
        win_path(&work.path().join("root")),
        win_path(&config)
    );
    let sc = |args: &[&str]| wine(prefix.path(), &[&["sc"], args].concat());
    let out = sc(&["create", &name, "binPath=", &bin_path]);
    assert!(out.status.success(), "sc create: {out:?}");
    let out = sc(&["start", &name]);
    assert!(out.status.success(), "sc start: {out:?}");

    let deadline = Instant::now() + Duration::from_secs(60);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "the service did not listen");
        std::thread::sleep(Duration::from_millis(100));
    }
    let v = Command::new(bin::path("guestctl"))
        .args(["--connect", &format!("tcp:127.0.0.1:{port}"), "version"])
        .output()
        .unwrap();
    assert!(v.status.success(), "{v:?}");
    assert_eq!(stdout(&v), guestd_handlers::AGENT_VERSION);
    // A query's success is a debug line; a refused command is logged at the service's info level.
    let n = Command::new(bin::path("guestctl"))
        .args([
            "--connect",
            &format!("tcp:127.0.0.1:{port}"),
            "raw",
            "nosuch",
        ])
        .output()
        .unwrap();
    assert_eq!(n.status.code(), Some(1), "{n:?}");
    let query = sc(&["query", &name]);
    assert!(stdout(&query).contains("RUNNING"), "{}", stdout(&query));

    let out = sc(&["stop", &name]);
    assert!(out.status.success(), "sc stop: {out:?}");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let q = stdout(&sc(&["query", &name]));
        if q.contains("STOPPED") {
            assert!(q.contains("WIN32_EXIT_CODE    : 0 "), "{q}");
            break;
        }
        assert!(Instant::now() < deadline, "the service did not stop: {q}");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err());

    // %ProgramData% is C:\ProgramData on Windows; Wine gives services C:\users\Public.
    let drive_c = prefix.path().join("drive_c");
    let start = format!("transports=tcp:127.0.0.1:{port}");
    let log = ["ProgramData", "users/Public"]
        .iter()
        .filter_map(|d| std::fs::read_to_string(drive_c.join(d).join("guestd/guestd.log")).ok())
        .find(|log| log.contains(&start))
        .expect("the service's start is in no guestd.log under %ProgramData%\\guestd");
    let ours = log.split_once(&start).unwrap().1;
    assert!(ours.contains("command=nosuch"), "{log}");
    assert!(ours.contains("signal=\"service stop\""), "{log}");
    assert!(ours.trim_end().ends_with("stopped"), "{log}");

    let out = sc(&["delete", &name]);
    assert!(out.status.success(), "sc delete: {out:?}");
}

/// The named pipe: guestd.exe serves `pipe:\\.\pipe\guestd-test-<pid>` under Wine, and the
/// Windows guestctl.exe (under Wine, in the same prefix) drives it: version, features,
/// keyinit2 + password, a file injection to `C:\...`. A second guestd.exe on the same name
/// refuses to start and says why.
#[test]
fn named_pipe_under_wine() {
    if !wine_ready() {
        return;
    }
    let name = format!(r"\\.\pipe\guestd-test-{}", std::process::id());
    let g = WinGuestd::start_on(Some(name.clone()));
    let (exe, prefix) = setup();
    let ctl_exe = guestctl_exe();
    let connect = format!("pipe:{name}");
    let ctl = |args: &[&str], input: &[u8]| {
        let mut all = vec![ctl_exe.to_str().unwrap(), "--connect", &connect];
        all.extend(["--timeout", "60"]);
        all.extend(args);
        wine_with_input(prefix, &all, input)
    };

    let v = ctl(&["version"], b"");
    assert!(v.status.success(), "{v:?}\n{}", g.log());
    assert_eq!(stdout(&v), guestd_handlers::AGENT_VERSION);
    let f = ctl(&["features"], b"");
    assert!(f.status.success(), "{f:?}");
    assert_eq!(stdout(&f), guestd_tests::DEFAULT_FEATURES);
    assert!(
        g.log().contains(&format!("transports=pipe:{name}")),
        "{}",
        g.log()
    );

    // keyinit2 + password over the pipe, to the fake account store's RID 500 account.
    let out = ctl(
        &["set-password", "--password-stdin", "--require-strong"],
        b"Pipe Pw 3\n",
    );
    assert!(out.status.success(), "{out:?}\n{}", g.log());
    let hash = g.recorded("Administrateur").expect("no password recorded");
    assert!(crypt::verify(hash.trim(), "Pipe Pw 3"), "{hash}");

    // A file injection to a Windows path.
    let payload = g.dir.path().join("payload");
    std::fs::write(&payload, b"over the pipe\r\n").unwrap();
    let out = ctl(
        &[
            "inject-file",
            &win_path(&payload),
            r"C:\ProgramData\pipe\hello.txt",
        ],
        b"",
    );
    assert!(out.status.success(), "{out:?}\n{}", g.log());
    assert_eq!(
        std::fs::read(g.root().join("C/ProgramData/pipe/hello.txt")).unwrap(),
        b"over the pipe\r\n"
    );

    // Several clients at once: each gets its own instance, none finds the pipe busy for good.
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let (ctl_exe, connect, prefix) = (ctl_exe.clone(), connect.clone(), prefix.clone());
            std::thread::spawn(move || {
                wine(
                    &prefix,
                    &[ctl_exe.to_str().unwrap(), "--connect", &connect, "version"],
                )
            })
        })
        .collect();
    for c in clients {
        let out = c.join().unwrap();
        assert!(out.status.success(), "{out:?}");
        assert_eq!(stdout(&out), guestd_handlers::AGENT_VERSION);
    }

    // A second guestd on the same name: refused, with the reason.
    let root = g.root();
    let second = wine(
        prefix,
        &[
            exe.to_str().unwrap(),
            "--root",
            &win_path(&root),
            "--listen",
            &connect,
        ],
    );
    assert!(!second.status.success(), "{second:?}");
    assert!(
        stderr(&second).contains("the name is already in use"),
        "{}",
        stderr(&second)
    );
    // ... and the first one still serves.
    let v = ctl(&["version"], b"");
    assert!(v.status.success(), "{v:?}\n{}", g.log());

    // Nothing configured: the default local channel on Windows is the pipe \\.\pipe\guestd.
    let check = wine(
        prefix,
        &[
            exe.to_str().unwrap(),
            "--root",
            &win_path(&root),
            "--check-config",
        ],
    );
    assert!(check.status.success(), "{check:?}");
    assert!(
        stdout(&check).contains(r"# transports: pipe:\\.\pipe\guestd"),
        "{}",
        stdout(&check)
    );

    // No such pipe: a clear error, not a hang.
    let out = wine(
        prefix,
        &[
            ctl_exe.to_str().unwrap(),
            "--connect",
            r"pipe:\\.\pipe\guestd-test-nobody-here",
            "--attempts",
            "1",
            "version",
        ],
    );
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert!(stderr(&out).contains("no such pipe"), "{}", stderr(&out));

    let log = g.log();
    assert!(!log.contains("Pipe Pw 3"), "password in the log:\n{log}");
}

/// Off Windows, a `pipe:` spec is refused by both sides with the reason (no Wine needed).
#[test]
fn named_pipes_are_refused_off_windows() {
    let out = Command::new(bin::path("guestctl"))
        .args(["--connect", r"pipe:\\.\pipe\guestd", "version"])
        .output()
        .unwrap();
    assert_fails_saying(&out, "named pipes exist only on Windows");
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(bin::path("guestd"))
        .arg("--root")
        .arg(dir.path())
        .args(["--listen", r"pipe:\\.\pipe\guestd"])
        .output()
        .unwrap();
    assert_fails_saying(&out, "named pipes exist only on Windows");
}

/// `--listen xenstore` on Windows looks for the PV drivers' xeniface device through SetupAPI
/// (Wine has none) and says so; the Linux backends are refused with the one to use instead.
#[test]
fn xenstore_on_windows_looks_for_xeniface() {
    if !wine_ready() {
        return;
    }
    let (exe, prefix) = setup();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    std::fs::create_dir_all(&root).unwrap();
    let exe = exe.to_str().unwrap();
    let root = win_path(&root);
    let out = wine(prefix, &[exe, "--root", &root, "--listen", "xenstore"]);
    assert_fails_saying(
        &out,
        "no XenStore found: no xeniface device interface (GUID_INTERFACE_XENIFACE) is \
             present (are the Xen PV drivers installed?)",
    );
    let config = dir.path().join("native.toml");
    std::fs::write(&config, "[xenstore]\nbackend = 'native'\n").unwrap();
    let out = wine(
        prefix,
        &[
            exe,
            "--root",
            &root,
            "--config",
            &win_path(&config),
            "--listen",
            r"xenstore:\\?\no-such-device",
        ],
    );
    assert_fails_saying(
        &out,
        "xenstore backend 'native' needs a xenbus device or a xenstored unix socket, which \
             Windows has not; use 'xeniface' (the default on Windows)",
    );
}

/// `resetnetwork` with a hostname: guestd.exe sets it with SetComputerNameExW, which Wine
/// implements by writing the registry (`ComputerName\ComputerName` for the NetBIOS name,
/// `Tcpip\Parameters\Hostname` for the DNS host name). The reply says a reboot is needed.
/// No adapters are named, so no netsh command runs. A private copy of the prefix keeps the
/// rename away from the other tests.
#[test]
fn hostname_with_set_computer_name_ex_under_wine() {
    if !wine_ready() {
        return;
    }
    let prefix = PrivatePrefix::new(&setup().1);
    let g = WinGuestd::start_in(prefix.path(), None);
    let reg = |key: &str, value: &str| {
        let out = wine(prefix.path(), &["reg", "query", key, "/v", value]);
        assert!(out.status.success(), "reg query {key} /v {value}: {out:?}");
        stdout(&out)
    };
    const NETBIOS: &str = r"HKLM\System\CurrentControlSet\Control\ComputerName\ComputerName";
    const TCPIP: &str = r"HKLM\System\CurrentControlSet\Services\Tcpip\Parameters";
    let before = reg(NETBIOS, "ComputerName");
    let config = g.dir.path().join("network.json");
    let reset = |hostname: &str| {
        std::fs::write(&config, format!(r#"{{"hostname": "{hostname}"}}"#)).unwrap();
        g.ctl(
            &["reset-network", "--config", config.to_str().unwrap()],
            b"",
        )
    };

    // All digits: refused before anything is set.
    let out = reset("20261122");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(stderr(&out).contains("all digits"), "{}", stderr(&out));
    assert_eq!(reg(NETBIOS, "ComputerName"), before);

    // A name longer than NetBIOS's 15 characters, with a domain: the host label is set whole,
    // Windows (here Wine) derives the NetBIOS name; the reply says a reboot is needed.
    let out = reset("gd-renamed-host-01.example.com");
    assert!(out.status.success(), "{out:?}\n{}", g.log());
    assert_eq!(
        stdout(&out),
        "hostname set to 'gd-renamed-host-01'; it takes effect after a reboot"
    );
    let netbios = reg(NETBIOS, "ComputerName");
    assert!(netbios.ends_with("REG_SZ    GD-RENAMED-HOST"), "{netbios}");
    let host = reg(TCPIP, "Hostname");
    assert!(host.ends_with("REG_SZ    gd-renamed-host-01"), "{host}");
    let log = g.log();
    assert!(log.contains("netbios=GD-RENAMED-HOST"), "{log}");
    assert!(log.contains("takes effect after a reboot"), "{log}");

    // Again: already pending, nothing set, the same notice.
    let out = reset("gd-renamed-host-01");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        stdout(&out),
        "hostname 'gd-renamed-host-01' is already set; it takes effect after a reboot"
    );
    assert!(g.log().contains("computer name already set"), "{}", g.log());
}

/// `guestd-update.exe`, the download helper agentupdate runs beside `guestd.exe`, fetches over
/// HTTP under Wine (from a server on this machine's loopback) and writes the body to stdout.
#[test]
fn guestd_update_exe_downloads_under_wine() {
    if !wine_ready() {
        return;
    }
    let (exe, prefix) = setup();
    let helper = exe.with_file_name("guestd-update.exe");
    let out = wine(prefix, &[&helper.to_string_lossy(), "--version"]);
    assert_eq!(
        stdout(&out),
        format!("guestd-update {}", guestd_handlers::AGENT_VERSION)
    );
    let body: Vec<u8> = (0..50_000u32).map(|i| (i % 251) as u8).collect();
    let url = guestd_testkit::http::serve(guestd_testkit::http::Serve::Body(body.clone()));
    let request = format!(r#"{{"url": "{url}", "max_size": 1000000, "timeout_secs": 60}}"#);
    let out = wine_with_input(
        prefix,
        &[&helper.to_string_lossy(), "fetch"],
        request.as_bytes(),
    );
    assert!(out.status.success(), "{out:?}");
    assert_eq!(out.stdout, body);
}
