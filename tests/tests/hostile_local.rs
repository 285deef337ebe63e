//! Issue 15: no local user can turn guestd into a root tool. A real unprivileged attacker
//! (uid 65534 through `setpriv`, `tests/attacker/attacker.py`) owns its home directory inside a
//! sandbox root and, in a tight loop, swaps every path guestd may write there (the target and
//! each parent) between real directories and files and symlinks to root's files, FIFOs,
//! sockets, device nodes and hard links to root's files, while the real guestd serves 200
//! requests of one write path: `file_inject`, `injectfile`, the qga SSH keys, `password`
//! (`guestctl set-password`), `resetnetwork` files, the hostname and an agent update staged
//! in that home.
//!
//! After each run: no file outside the attacker's home changed owner, mode or content (the
//! whole sandbox is compared, less the files the requests are meant to change, which are
//! checked for exactly what they must hold), nothing of root's secrets reached the attacker's
//! tree, and guestd still answers `version`. guestd runs with `--root` and a `PATH` of
//! recording stand-ins, so nothing on the host changes.
#![cfg(unix)]
#![allow(clippy::disallowed_methods)] // builds the sandbox, spawns the attacker and the daemon

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use guestd_tests::{Guestd, LineClient, bin};
use serde_json::{Value, json};

const REQUESTS: usize = 200;
/// The system's Python (a user's pyenv shim under /root is out of the attacker's reach).
const PYTHON: &str = "/usr/bin/python3";
const ATTACKER: u32 = 65534;
const HOME: &str = "home/alice";
const VICTIM_KEY: &str = "ssh-ed25519 VICTIM-ROOT-KEY root@guest";
const VICTIM_HASH: &str = "$6$victimsalt$VICTIMHASHVICTIMHASH";
const PASSWD: &str = "root:x:0:0:root:/root:/bin/bash\n\
operator:x:11:0:operator:/root:/sbin/nologin\n\
alice:x:65534:65534:Alice:/home/alice:/bin/sh\n";

/// The sandbox: root's files with known secrets, the attacker's home and its stash.
struct Sandbox {
    dir: tempfile::TempDir,
}

impl Sandbox {
    fn new() -> Self {
        require_tools();
        let dir = tempfile::tempdir().unwrap();
        // uid 65534 must reach its home: every directory on the way is 0755.
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let s = Self { dir };
        let r = s.root();
        for d in [
            "etc/network",
            "root/.ssh",
            "usr/sbin",
            "var/lib/guestd/backup",
            "sys/class/net/eth0",
            "tmp",
        ] {
            fs::create_dir_all(r.join(d)).unwrap();
        }
        fs::set_permissions(r.join("root"), fs::Permissions::from_mode(0o700)).unwrap();
        fs::set_permissions(
            r.join("var/lib/guestd/backup"),
            fs::Permissions::from_mode(0o700),
        )
        .unwrap();
        fs::set_permissions(r.join("tmp"), fs::Permissions::from_mode(0o1777)).unwrap();
        write(
            &r.join("etc/os-release"),
            "ID=debian\nVERSION_ID=\"12\"\n",
            0o644,
        );
        write(&r.join("etc/passwd"), PASSWD, 0o644);
        write(
            &r.join("etc/group"),
            "root:x:0:\nshadow:x:42:\nnogroup:x:65534:\n",
            0o644,
        );
        write(
            &r.join("etc/shadow"),
            &format!(
                "root:{VICTIM_HASH}:19700:0:99999:7:::\noperator:*:19700::::::\nalice:!:19700::::::\n"
            ),
            0o640,
        );
        std::os::unix::fs::chown(r.join("etc/shadow"), Some(0), Some(42)).unwrap();
        write(&r.join("etc/hostname"), "before\n", 0o644);
        write(
            &r.join("etc/hosts"),
            "127.0.0.1 localhost\n127.0.1.1 before\n",
            0o644,
        );
        write(
            &r.join("etc/network/interfaces"),
            "auto lo\niface lo inet loopback\n",
            0o644,
        );
        write(
            &r.join("root/.ssh/authorized_keys"),
            &format!("{VICTIM_KEY}\n"),
            0o600,
        );
        write(&r.join("usr/sbin/guestd"), "#!/bin/sh\nexit 1\n", 0o755);
        write(
            &r.join("sys/class/net/eth0/address"),
            "52:54:00:12:34:56\n",
            0o644,
        );
        write(&r.join("sys/class/net/eth0/type"), "1\n", 0o644);

        let home = r.join(HOME);
        fs::create_dir_all(&home).unwrap();
        fs::set_permissions(&home, fs::Permissions::from_mode(0o755)).unwrap();
        let stash = home.join("stash");
        fs::create_dir(&stash).unwrap();
        // What the attacker cannot make itself: device nodes and hard links to root's files
        // (fs.protected_hardlinks), made by root in its stash for it to rename into place.
        for i in 0..8 {
            mknod(&stash.join(format!("null-{i}")), 1, 3);
            mknod(&stash.join(format!("zero-{i}")), 1, 5);
            fs::hard_link(r.join("etc/shadow"), stash.join(format!("shadow-{i}"))).unwrap();
            fs::hard_link(
                r.join("root/.ssh/authorized_keys"),
                stash.join(format!("rootkeys-{i}")),
            )
            .unwrap();
        }
        for p in [&home, &stash] {
            std::os::unix::fs::chown(p, Some(ATTACKER), Some(ATTACKER)).unwrap();
        }
        // Stand-ins for every command guestd may run: they record, and `ip` reports the
        // addresses of the sandbox's interfaces file (so the address check passes).
        let bin = s.dir.path().join("bin");
        fs::create_dir(&bin).unwrap();
        for cmd in [
            "hostname",
            "hostnamectl",
            "ifup",
            "ifdown",
            "systemctl",
            "chpasswd",
        ] {
            if cmd == "chpasswd" {
                continue; // absent: guestd rewrites /etc/shadow itself, through Root
            }
            write(
                &bin.join(cmd),
                &format!(
                    "#!/bin/sh\necho \"{cmd} $*\" >> '{}'\n",
                    s.dir.path().join("commands.log").display()
                ),
                0o755,
            );
        }
        write(
            &bin.join("ip"),
            &format!(
                "#!/bin/sh\necho \"ip $*\" >> '{log}'\n[ \"$1\" = -o ] || exit 0\n\
                 /bin/sed -n 's|^ *address \\(.*\\)$|2: eth0    inet \\1/24 brd 10.0.0.255 scope global eth0|p' '{ifaces}'\n",
                log = s.dir.path().join("commands.log").display(),
                ifaces = r.join("etc/network/interfaces").display()
            ),
            0o755,
        );
        write(
            &s.dir.path().join("guestd.toml"),
            "[network]\nmanager = \"ifupdown\"\nconfig_drive = false\n\
             [update]\ninstall_path = \"/usr/sbin/guestd\"\nstate_dir = \"/home/alice/update-state\"\n\
             restart_command = [\"systemctl\", \"restart\", \"guestd\"]\n",
            0o644,
        );
        write(
            &s.dir.path().join("attacker.py"),
            include_str!("../attacker/attacker.py"),
            0o644,
        );
        s
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    /// guestd on this sandbox: native socket, a qga socket, the stand-ins' PATH.
    fn start(self) -> (Guestd, PathBuf) {
        let qga = self.dir.path().join("qga.sock");
        let qga_spec = format!("qga+unix:{}", qga.display());
        let config = self.dir.path().join("guestd.toml");
        let path = self.dir.path().join("bin");
        let g = Guestd::start_in_env(
            self.dir,
            &["--listen", &qga_spec, "--config", config.to_str().unwrap()],
            &[("PATH", path.to_str().unwrap())],
        );
        // Serving on both sockets, and the ready marker written (before any snapshot).
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::os::unix::net::UnixStream::connect(&qga).is_err()
            || !g.root().join("run/guestd/ready").exists()
        {
            assert!(
                Instant::now() < deadline,
                "guestd did not get ready:\n{}",
                g.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        (g, qga)
    }
}

fn write(path: &Path, text: &str, mode: u32) {
    fs::write(path, text).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

fn mknod(path: &Path, major: u32, minor: u32) {
    let out = Command::new("mknod")
        .arg(path)
        .args(["c", &major.to_string(), &minor.to_string()])
        .output()
        .unwrap();
    assert!(out.status.success(), "mknod {}: {out:?}", path.display());
}

fn require_tools() {
    assert_eq!(
        fs::metadata("/proc/self").unwrap().uid(),
        0,
        "this test drops to uid {ATTACKER} with setpriv and makes device nodes: run it as root"
    );
    assert!(
        Path::new(PYTHON).exists(),
        "{PYTHON} is required (scripts/test-all installs python3)"
    );
    for tool in ["setpriv", "mknod"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .unwrap();
        assert!(
            found.status.success(),
            "{tool} is required (util-linux and coreutils)"
        );
    }
}

/// What a file is: kind, mode, owner and content (or link target). Not the link count: a
/// hard link the attacker held may legitimately be replaced.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    kind: &'static str,
    mode: u32,
    uid: u32,
    gid: u32,
    content: Vec<u8>,
}

/// Every entry below `root` except those below one of `skip` (host paths).
fn snapshot(root: &Path, skip: &[PathBuf]) -> BTreeMap<PathBuf, Entry> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if skip.iter().any(|s| path.starts_with(s)) {
                continue;
            }
            let md = fs::symlink_metadata(&path).unwrap();
            let ft = md.file_type();
            let (kind, content) = if ft.is_symlink() {
                (
                    "link",
                    fs::read_link(&path)
                        .unwrap()
                        .into_os_string()
                        .into_encoded_bytes(),
                )
            } else if ft.is_dir() {
                stack.push(path.clone());
                ("dir", Vec::new())
            } else if ft.is_file() {
                ("file", fs::read(&path).unwrap())
            } else {
                ("special", Vec::new())
            };
            out.insert(
                path,
                Entry {
                    kind,
                    mode: md.mode(),
                    uid: md.uid(),
                    gid: md.gid(),
                    content,
                },
            );
        }
    }
    out
}

/// Paths whose entries differ between two snapshots.
fn differences(before: &BTreeMap<PathBuf, Entry>, after: &BTreeMap<PathBuf, Entry>) -> Vec<String> {
    let mut out = Vec::new();
    for (path, entry) in before {
        match after.get(path) {
            None => out.push(format!("removed: {}", path.display())),
            Some(now) if now != entry => out.push(format!(
                "changed: {} ({:?} {:o} {}:{} -> {:?} {:o} {}:{})",
                path.display(),
                entry.kind,
                entry.mode,
                entry.uid,
                entry.gid,
                now.kind,
                now.mode,
                now.uid,
                now.gid
            )),
            Some(_) => {}
        }
    }
    for path in after.keys().filter(|p| !before.contains_key(*p)) {
        out.push(format!("new: {}", path.display()));
    }
    out
}

/// The attacker process (uid 65534), stopped and reaped on drop.
struct Attacker {
    child: Option<Child>,
    stop: PathBuf,
    home: PathBuf,
}

impl Attacker {
    fn start(g: &Guestd) -> Self {
        let home = g.root().join(HOME);
        let stop = g.dir.path().join("stop");
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
            % 1_000_000;
        eprintln!("attacker seed {seed}");
        let child = Command::new("setpriv")
            .args([
                &format!("--reuid={ATTACKER}"),
                &format!("--regid={ATTACKER}"),
                "--clear-groups",
                PYTHON,
            ])
            .arg(g.dir.path().join("attacker.py"))
            .arg(&home)
            .arg(home.join("stash"))
            .arg(&stop)
            .arg(g.root())
            .arg(seed.to_string())
            .stdin(Stdio::null())
            .spawn()
            .expect("start the attacker");
        // Let it get going.
        std::thread::sleep(Duration::from_millis(200));
        Self {
            child: Some(child),
            stop,
            home,
        }
    }

    /// Stop it and return how many rounds of swaps it made.
    fn stop(mut self) -> u64 {
        fs::write(&self.stop, b"").unwrap();
        let mut child = self.child.take().unwrap();
        let status = guestd_tests::wait_timeout(&mut child, Duration::from_secs(60));
        assert!(status.success(), "the attacker failed: {status}");
        fs::read_to_string(self.home.join("iterations"))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }
}

impl Drop for Attacker {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Every regular file below `dir` whose content holds one of root's secrets, other than the
/// stash's hard links to root's files (`stash`: their inodes), wherever the attacker left them.
fn leaked_secrets(dir: &Path, stash: &[u64]) -> Vec<PathBuf> {
    guestd_tests::hostile::files_below(dir)
        .into_iter()
        .filter(|p| {
            fs::symlink_metadata(p).is_ok_and(|m| m.is_file() && !stash.contains(&m.ino()))
                && fs::read(p).is_ok_and(|b| {
                    let t = String::from_utf8_lossy(&b);
                    t.contains("VICTIM-ROOT-KEY") || t.contains("VICTIMHASH")
                })
        })
        .collect()
}

/// The inodes of the root-made things in the attacker's stash.
fn stash_inodes(g: &Guestd) -> Vec<u64> {
    fs::read_dir(g.root().join(HOME).join("stash"))
        .unwrap()
        .map(|e| fs::symlink_metadata(e.unwrap().path()).unwrap().ino())
        .collect()
}

/// One run: snapshot, attacker, `REQUESTS` requests from `request(i)` (each answered, none
/// hanging), then every check of the module docs. `changing` are the guest paths the requests
/// are meant to change (checked by the caller).
fn run(
    g: &Guestd,
    changing: &[&str],
    mut request: impl FnMut(usize) -> Result<(), String>,
) -> (usize, usize) {
    let root = g.root();
    let mut skip: Vec<PathBuf> = vec![root.join(HOME)];
    skip.extend(
        changing
            .iter()
            .map(|p| root.join(p.trim_start_matches('/'))),
    );
    let before = snapshot(&root, &skip);
    let stash = stash_inodes(g);
    let attacker = Attacker::start(g);
    let (mut ok, mut refused) = (0, 0);
    let started = Instant::now();
    for i in 0..REQUESTS {
        match request(i) {
            Ok(()) => ok += 1,
            Err(_) => refused += 1,
        }
    }
    let rounds = attacker.stop();
    eprintln!(
        "{REQUESTS} requests in {:?}: {ok} done, {refused} refused; the attacker made {rounds} rounds of swaps",
        started.elapsed()
    );
    assert!(rounds >= 20, "the attacker hardly ran ({rounds} rounds)");
    let after = snapshot(&root, &skip);
    let diff = differences(&before, &after);
    assert!(
        diff.is_empty(),
        "outside the attacker's home:\n{}\n{}",
        diff.join("\n"),
        g.log()
    );
    let leaks = leaked_secrets(&root.join(HOME), &stash);
    assert!(
        leaks.is_empty(),
        "root's secrets in the attacker's tree: {leaks:?}"
    );
    let mut c = LineClient::connect(&g.sock);
    let r = c.roundtrip(br#"{"id": "v", "name": "version", "value": ""}"#);
    assert_eq!(r["returncode"], "0", "guestd no longer answers: {r}");
    (ok, refused)
}

/// A native request on a fresh connection; `Ok` for "0", `Err(message)` for "500".
fn native(g: &Guestd, name: &str, value: Value) -> Result<(), String> {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let id = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut c = LineClient::connect(&g.sock);
    let line = json!({"id": format!("r{id}"), "name": name, "value": value}).to_string();
    let r = c.roundtrip(line.as_bytes());
    match r["returncode"].as_str() {
        Some("0") => Ok(()),
        Some("500") => Err(r["message"].as_str().unwrap_or_default().to_string()),
        _ => panic!("{name}: unexpected reply {r}"),
    }
}

fn file_inject(g: &Guestd, path: &str, contents: &[u8]) -> Result<(), String> {
    native(
        g,
        "file_inject",
        json!({"b64_path": STANDARD.encode(path), "b64_file": STANDARD.encode(contents)}),
    )
}

fn injectfile(g: &Guestd, path: &str, contents: &[u8]) -> Result<(), String> {
    let mut data = path.as_bytes().to_vec();
    data.push(b',');
    data.extend_from_slice(contents);
    native(g, "injectfile", json!(STANDARD.encode(data)))
}

/// Files guestd keeps for itself below its backup directory from the attacker's home: only
/// regular single-link files, of root or the attacker, without set-id bits, and no secrets.
fn check_backups_of_the_home(g: &Guestd) {
    let dir = g.root().join("var/lib/guestd/backup").join(HOME);
    for p in guestd_tests::hostile::files_below(&dir) {
        let md = fs::symlink_metadata(&p).unwrap();
        assert!(md.is_file(), "{} is not a regular file", p.display());
        assert_eq!(md.nlink(), 1, "{}", p.display());
        assert!([0, ATTACKER].contains(&md.uid()), "{}", p.display());
        assert_eq!(md.mode() & 0o6000, 0, "{}", p.display());
    }
    assert!(
        leaked_secrets(&dir, &[]).is_empty(),
        "root's secrets copied from the home"
    );
}

fn check_victims_intact(g: &Guestd) {
    let root = g.root();
    assert_eq!(
        fs::read_to_string(root.join("root/.ssh/authorized_keys")).unwrap(),
        format!("{VICTIM_KEY}\n")
    );
    let md = fs::metadata(root.join("etc/shadow")).unwrap();
    assert_eq!((md.uid(), md.gid(), md.mode() & 0o7777), (0, 42, 0o640));
}

#[test]
fn file_inject_into_a_home_the_user_races() {
    let (g, _) = Sandbox::new().start();
    file_inject(
        &g,
        "/home/alice/.ssh/authorized_keys",
        b"ssh-ed25519 AAAA host\n",
    )
    .expect("without the attacker the injection works");
    let (ok, _) = run(&g, &["/var/lib/guestd/backup/home"], |i| {
        let path = if i % 2 == 0 {
            "/home/alice/.ssh/authorized_keys"
        } else {
            "/home/alice/dir/sub/file"
        };
        file_inject(&g, path, format!("ssh-ed25519 AAAA host {i}\n").as_bytes())
    });
    eprintln!("file_inject: {ok} of {REQUESTS} written");
    check_backups_of_the_home(&g);
    check_victims_intact(&g);
}

#[test]
fn injectfile_into_a_home_the_user_races() {
    let (g, _) = Sandbox::new().start();
    run(&g, &["/var/lib/guestd/backup/home"], |i| {
        let path = if i % 2 == 0 {
            "/home/alice/dir/sub/file"
        } else {
            "/home/alice/.ssh/authorized_keys"
        };
        injectfile(&g, path, format!("line {i}\n").as_bytes())
    });
    check_backups_of_the_home(&g);
    check_victims_intact(&g);
}

/// A qga client on `qga+unix:`.
fn qga(sock: &Path, command: &str, arguments: Value) -> Result<Value, String> {
    let mut c = LineClient::connect(sock);
    let line = json!({"execute": command, "arguments": arguments}).to_string();
    let r = c.roundtrip(line.as_bytes());
    match (r.get("return"), r.get("error")) {
        (Some(v), None) => Ok(v.clone()),
        (None, Some(e)) => Err(e.to_string()),
        _ => panic!("{command}: unexpected reply {r}"),
    }
}

#[test]
fn qga_ssh_keys_of_a_user_who_races() {
    let (g, qga_sock) = Sandbox::new().start();
    let add = |key: String| {
        qga(
            &qga_sock,
            "guest-ssh-add-authorized-keys",
            json!({"username": "alice", "keys": [key]}),
        )
        .map(drop)
    };
    add("ssh-ed25519 AAAA first".into()).expect("without the attacker the keys are written");
    run(&g, &[], |i| {
        if i % 3 == 2 {
            qga(
                &qga_sock,
                "guest-ssh-get-authorized-keys",
                json!({"username": "alice"}),
            )
            .map(|v| {
                let text = v.to_string();
                assert!(!text.contains("VICTIM"), "root's secrets read back: {text}");
            })
        } else {
            add(format!("ssh-ed25519 AAAA key{i}"))
        }
    });
    check_victims_intact(&g);
}

#[test]
fn password_changes_while_a_user_races() {
    let (g, _) = Sandbox::new().start();
    let set = |pw: &str| {
        let mut child = Command::new(bin::path("guestctl"))
            .arg("--connect")
            .arg(format!("unix:{}", g.sock.display()))
            .args(["set-password", "--password-stdin"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(pw.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        if out.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    };
    set("first password").expect("without the attacker the password is set");
    run(&g, &["/etc/shadow", "/etc/.pwd.lock"], |i| {
        set(&format!("password {i}"))
    });
    let shadow = fs::read_to_string(g.root().join("etc/shadow")).unwrap();
    let lines: Vec<&str> = shadow.lines().collect();
    assert_eq!(lines.len(), 3, "{shadow}");
    assert!(lines[0].starts_with("root:$6$"), "{shadow}");
    assert_eq!(
        &lines[1..],
        ["operator:*:19700::::::", "alice:!:19700::::::"]
    );
    let md = fs::metadata(g.root().join("etc/shadow")).unwrap();
    assert_eq!((md.uid(), md.gid(), md.mode() & 0o7777), (0, 42, 0o640));
}

#[test]
fn hostname_changes_while_a_user_races() {
    let (g, _) = Sandbox::new().start();
    let changing = ["/etc/hostname", "/etc/hosts", "/var/lib/guestd/backup/etc"];
    let (ok, _) = run(&g, &changing, |i| {
        native(&g, "resetnetwork", json!({"hostname": format!("host{i}")}))
    });
    assert_eq!(ok, REQUESTS, "{}", g.log());
    assert_eq!(
        fs::read_to_string(g.root().join("etc/hostname")).unwrap(),
        format!("host{}\n", REQUESTS - 1)
    );
    check_victims_intact(&g);
}

#[test]
fn network_files_change_while_a_user_races() {
    let (g, _) = Sandbox::new().start();
    let changing = ["/etc/network/interfaces", "/var/lib/guestd/backup/etc"];
    let (ok, _) = run(&g, &changing, |i| {
        let value = json!([{
            "mac": "52:54:00:12:34:56",
            "ips": [{"ip": format!("10.0.0.{}", i % 250 + 2), "netmask": "255.255.255.0"}],
            "gateway": "10.0.0.1",
        }]);
        native(&g, "resetnetwork", value)
    });
    assert_eq!(ok, REQUESTS, "{}", g.log());
    let ifaces = fs::read_to_string(g.root().join("etc/network/interfaces")).unwrap();
    assert!(
        ifaces.contains(&format!("address 10.0.0.{}\n", (REQUESTS - 1) % 250 + 2)),
        "{ifaces}"
    );
    check_victims_intact(&g);
}

#[test]
fn an_update_staged_in_a_home_the_user_races_is_refused() {
    let (g, _) = Sandbox::new().start();
    let (ok, refused) = run(&g, &[], |_| {
        let r = native(
            &g,
            "agentupdate",
            json!(format!(
                "http://127.0.0.1:9/update.tar.gz,{}",
                "0".repeat(32)
            )),
        );
        if let Err(message) = &r {
            assert!(
                message.starts_with(
                    "Cannot use update.state_dir '/home/alice/update-state' for an update"
                ),
                "{message}"
            );
        }
        r
    });
    assert_eq!((ok, refused), (0, REQUESTS));
    assert_eq!(
        fs::read(g.root().join("usr/sbin/guestd")).unwrap(),
        b"#!/bin/sh\nexit 1\n"
    );
    check_victims_intact(&g);
}
