//! Issue 4: keyinit + password end to end, exactly as nova does it — the real `guestd` in a
//! sandbox root with a realistic `etc/shadow`, the host's Diffie–Hellman computed by Python
//! (as nova did) and the password encrypted by the real `openssl` CLI with `-md md5` and
//! `-md sha256`. The result is checked with `openssl passwd -6`; every other byte, the mode and
//! the owner of the file must be untouched, and the password must appear in no log line.
//! Then `guestctl set-password` in both modes.
#![cfg(unix)]
#![allow(clippy::disallowed_methods)] // these tests spawn the binaries and peers they test

use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use guestd_tests::nova::{NovaDh, nova_encrypt, python};
use guestd_tests::{Guestd, LineClient};
use serde_json::{Value, json};

const PASSWD: &str = "root:x:0:0:root:/root:/bin/bash\n\
daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n\
bin:x:2:2:bin:/bin:/usr/sbin/nologin\n\
sys:x:3:3:sys:/dev:/usr/sbin/nologin\n\
_apt:x:42:65534::/nonexistent:/usr/sbin/nologin\n\
systemd-network:x:998:998:systemd Network Management:/:/usr/sbin/nologin\n\
sshd:x:100:65534::/run/sshd:/usr/sbin/nologin\n\
debian:x:1000:1000:Debian,,,:/home/debian:/bin/bash\n";

const SHADOW: &str = "root:*:19832:0:99999:7:::\n\
daemon:*:19832:0:99999:7:::\n\
bin:*:19832:0:99999:7:::\n\
sys:*:19832:0:99999:7:::\n\
_apt:*:19832:0:99999:7:::\n\
systemd-network:!*:19832::::::\n\
sshd:!:19832::::::\n\
debian:$y$j9T$abcdefghijklmnopqrstu.$0123456789abcdefghijklmnopqrstuvwxyzABCDE:19833:0:99999:7:::\n";

/// A sandbox root that looks like a Debian guest.
fn guest_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let etc = dir.path().join("root/etc");
    std::fs::create_dir_all(&etc).unwrap();
    std::fs::write(etc.join("os-release"), "ID=debian\nVERSION_ID=\"12\"\n").unwrap();
    std::fs::write(etc.join("passwd"), PASSWD).unwrap();
    std::fs::write(etc.join("group"), "root:x:0:\nshadow:x:42:\n").unwrap();
    std::fs::write(etc.join("shadow"), SHADOW).unwrap();
    let shadow = etc.join("shadow");
    std::fs::set_permissions(&shadow, std::fs::Permissions::from_mode(0o640)).unwrap();
    std::os::unix::fs::chown(&shadow, Some(0), Some(42)).unwrap();
    dir
}

fn run(cmd: &mut Command, what: &str) -> Output {
    cmd.output().unwrap_or_else(|e| {
        panic!("{what} is required for this test ({e}); scripts/test-all installs it")
    })
}

fn call(c: &mut LineClient, name: &str, value: Value) -> Value {
    // A fresh id each time: a repeated id with the same request is a retry, answered from the
    // reply cache without running again.
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let id = format!(
        "t{}",
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    let line = json!({"id": id, "name": name, "value": value}).to_string();
    let r = c.roundtrip(line.as_bytes());
    json!({"returncode": r["returncode"], "message": r["message"]})
}

/// The shadow entry of `user` verifies against `password` per `openssl passwd -6`, every other
/// line is as `before`, and mode and owner are kept.
fn assert_password(root: &Path, user: &str, password: &str, before: &str) {
    let path = root.join("etc/shadow");
    let text = std::fs::read_to_string(&path).unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with(&format!("{user}:")))
        .unwrap();
    let hash = line.split(':').nth(1).unwrap();
    let salt = hash
        .strip_prefix("$6$")
        .expect("a SHA-512-crypt hash")
        .split('$')
        .next()
        .unwrap();
    assert_eq!(salt.len(), 16, "{hash}");
    let out = run(
        Command::new("openssl").args(["passwd", "-6", "-salt", salt, password]),
        "openssl",
    );
    assert_eq!(
        String::from_utf8(out.stdout).unwrap().trim(),
        hash,
        "{user}"
    );
    let old: Vec<_> = before.lines().collect();
    let new: Vec<_> = text.lines().collect();
    assert_eq!(old.len(), new.len());
    for (o, n) in old.iter().zip(&new) {
        if !o.starts_with(&format!("{user}:")) {
            assert_eq!(o, n);
        }
    }
    assert!(text.ends_with('\n'));
    let md = std::fs::metadata(&path).unwrap();
    assert_eq!(md.permissions().mode() & 0o7777, 0o640);
    assert_eq!((md.uid(), md.gid()), (0, 42));
}

fn shadow_text(g: &Guestd) -> String {
    std::fs::read_to_string(g.root().join("etc/shadow")).unwrap()
}

fn require_root() {
    let uid = std::fs::metadata("/proc/self").unwrap().uid();
    assert_eq!(
        uid, 0,
        "these tests chown files and run chpasswd -R: run them as root"
    );
}

fn assert_not_logged(g: &Guestd, secrets: &[&str]) {
    let log = g.log();
    assert!(
        log.contains("password changed"),
        "the log was not written:\n{log}"
    );
    for s in secrets {
        assert!(!log.contains(s), "the log contains a secret {s:?}:\n{log}");
    }
}

#[test]
fn nova_flow_with_md5_and_sha256_hosts() {
    require_root();
    let g = Guestd::start_in(guest_dir(), &[]);
    let mut c = LineClient::connect(&g.sock);
    let passwords = [
        ("md5", "Nova-MD5 pässwörd!"),
        ("sha256", "Nova-SHA256:pw\\2"),
    ];
    for (md, password) in passwords {
        let before = shadow_text(&g);
        let host = NovaDh::new();
        let r = call(&mut c, "keyinit", json!(host.public()));
        assert_eq!(r["returncode"], "D0", "{r}");
        let shared = host.shared(r["message"].as_str().unwrap());
        let value = nova_encrypt(&shared, md, password);
        let r = call(&mut c, "password", json!(value));
        assert_eq!(r, json!({"returncode": "0", "message": ""}), "{md}");
        assert_password(&g.root(), "root", password, &before);
        // The key was forgotten: the same value again needs a new exchange.
        let r = call(&mut c, "password", json!(value));
        assert_eq!(r["message"], "Password without key exchange");
    }
    assert!(
        g.log().contains("legacy, md5 key derivation"),
        "{}",
        g.log()
    );
    assert!(
        g.log().contains("legacy, sha256 key derivation"),
        "{}",
        g.log()
    );
    assert_not_logged(&g, &[passwords[0].1, passwords[1].1, "Nova-"]);
}

#[test]
fn wrong_key_ciphertexts_are_rejected_and_the_key_is_kept() {
    require_root();
    let g = Guestd::start_in(guest_dir(), &[]);
    let mut c = LineClient::connect(&g.sock);
    let before = shadow_text(&g);
    let host = NovaDh::new();
    let r = call(&mut c, "keyinit", json!(host.public()));
    let shared = host.shared(r["message"].as_str().unwrap());
    let wrong = python(&format!("({shared} * 7 + 3) % (2**107 - 1)"));
    for (i, md) in ["md5", "sha256", "md5", "sha256", "md5", "sha256"]
        .iter()
        .enumerate()
    {
        let value = nova_encrypt(&wrong, md, &format!("wrong-key password {i}"));
        let r = call(&mut c, "password", json!(value));
        assert_eq!(
            r,
            json!({"returncode": "500", "message": "Invalid password data received"})
        );
    }
    assert_eq!(
        shadow_text(&g),
        before,
        "a rejected password changed the file"
    );
    let r = call(&mut c, "password", json!("kjadfkjaf"));
    assert_eq!(r["message"], "Couldn't decode base64 data");
    // The key survived the failures.
    let value = nova_encrypt(&shared, "sha256", "after failures");
    assert_eq!(call(&mut c, "password", json!(value))["returncode"], "0");
    assert_password(&g.root(), "root", "after failures", &before);
    // A key agreed on one connection is not usable from another.
    let r = call(&mut c, "keyinit", json!(host.public()));
    let shared = host.shared(r["message"].as_str().unwrap());
    let mut other = LineClient::connect(&g.sock);
    let value = nova_encrypt(&shared, "md5", "other channel");
    assert_eq!(
        call(&mut other, "password", json!(value))["message"],
        "Password without key exchange"
    );
    assert_not_logged(
        &g,
        &["wrong-key password", "after failures", "other channel"],
    );
}

/// guestd on `dir/root` with a PATH that has no chpasswd, so that passwords go through its own
/// locked atomic rewrite of etc/shadow. Returns the child, its socket and its log file.
fn start_without_chpasswd(dir: &Path) -> (std::process::Child, PathBuf, PathBuf) {
    let sock = dir.join("g.sock");
    let log = dir.join("g.log");
    let _ = std::fs::remove_file(&sock);
    let child = Command::new(guestd_tests::bin::path("guestd"))
        .arg("--root")
        .arg(dir.join("root"))
        .arg("--listen")
        .arg(format!("unix:{}", sock.display()))
        .args(["--log-level", "debug"])
        .env("PATH", dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while std::os::unix::net::UnixStream::connect(&sock).is_err() {
        assert!(std::time::Instant::now() < deadline, "guestd did not start");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    (child, sock, log)
}

#[test]
fn shadow_rewrite_fallback_without_chpasswd() {
    require_root();
    // guestd with a PATH that has no chpasswd: the locked atomic rewrite of etc/shadow.
    let dir = guest_dir();
    let root = dir.path().join("root");
    let (mut child, sock, log) = start_without_chpasswd(dir.path());
    let mut c = LineClient::connect(&sock);
    let host = NovaDh::new();
    let r = call(&mut c, "keyinit", json!(host.public()));
    let shared = host.shared(r["message"].as_str().unwrap());
    let value = nova_encrypt(&shared, "md5", "fallback-secret");
    let r = call(&mut c, "password", json!(value));
    let _ = child.kill();
    let _ = child.wait();
    let log = std::fs::read_to_string(&log).unwrap();
    assert_eq!(r["returncode"], "0", "{r}\n{log}");
    assert_password(&root, "root", "fallback-secret", SHADOW);
    assert!(log.contains("chpasswd not found"), "{log}");
    assert!(!log.contains("fallback-secret"));
    assert!(root.join("etc/.pwd.lock").exists());
}

/// SIGKILL guestd while it changes root's password again and again (its own rewrite of
/// etc/shadow), at a different moment each round: the file is always whole (every other line
/// untouched, root's entry the old one or one of the new ones), and the next guestd changes the
/// password normally (no stale lock).
#[test]
fn sigkill_during_password_changes_leaves_a_whole_shadow() {
    require_root();
    const CHANGES: usize = 30;
    let dir = guest_dir();
    let root = dir.path().join("root");
    let passwords: Vec<String> = (0..CHANGES).map(|i| format!("kill-pw-{i}")).collect();
    let mut changed_before_kill = Vec::new();
    for round in 0..6u64 {
        let (mut child, sock, log) = start_without_chpasswd(dir.path());
        // The host changes the password again and again (each change needs its own key
        // exchange: a key is used once) until guestd is killed under it.
        let host_sock = sock.clone();
        let passwords = passwords.clone();
        let host = std::thread::spawn(move || {
            let mut c = LineClient::connect(&host_sock);
            for pw in &passwords {
                let dh = NovaDh::new();
                let r = call(&mut c, "keyinit", json!(dh.public()));
                let shared = dh.shared(r["message"].as_str().unwrap());
                call(
                    &mut c,
                    "password",
                    json!(nova_encrypt(&shared, "sha256", pw)),
                );
            }
        });
        // Killed once a few changes are done (more each round), whatever the machine's load:
        // the kill lands in the middle of the series, not before or after it.
        let wanted = 1 + round as usize * 2;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while std::fs::read_to_string(&log)
            .unwrap_or_default()
            .matches("password changed")
            .count()
            < wanted
            && std::time::Instant::now() < deadline
        {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        guestd_tests::signal(child.id(), "KILL");
        let _ = child.wait();
        let log = std::fs::read_to_string(&log).unwrap();
        changed_before_kill.push(log.matches("password changed").count());
        // The host's connection broke under it (its thread panics): expected.
        let _ = host.join();

        let text = std::fs::read_to_string(root.join("etc/shadow")).unwrap();
        let (old, new): (Vec<_>, Vec<_>) = (SHADOW.lines().collect(), text.lines().collect());
        assert_eq!(old.len(), new.len(), "round {round}: torn shadow:\n{text}");
        assert!(text.ends_with('\n'), "round {round}: torn shadow:\n{text}");
        for (o, n) in old.iter().zip(&new).skip(1) {
            assert_eq!(o, n, "round {round}: another entry changed");
        }
        let fields: Vec<_> = new[0].split(':').collect();
        assert_eq!(fields.len(), 9, "round {round}: {}", new[0]);
        assert_eq!(fields[0], "root");
        assert!(
            fields[1] == "*" || (fields[1].starts_with("$6$") && fields[1].len() > 90),
            "round {round}: root's hash is neither old nor whole: {}",
            fields[1]
        );
        let strays: Vec<_> = std::fs::read_dir(root.join("etc"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains("shadow") && n != "shadow" && !n.starts_with("shadow.bak"))
            .collect();
        // A temporary file may survive a SIGKILL; it never replaces the real name half-written.
        eprintln!("round {round}: leftover temporary files: {strays:?}");
    }
    // The kills must have landed while changes were still going on.
    assert!(
        changed_before_kill.iter().any(|&n| 0 < n && n < CHANGES),
        "every round finished before its kill: {changed_before_kill:?}"
    );
    eprintln!("changes done before each kill: {changed_before_kill:?}");
    // The next guestd is not blocked by anything the killed ones left behind.
    let (mut child, sock, log) = start_without_chpasswd(dir.path());
    let before = std::fs::read_to_string(root.join("etc/shadow")).unwrap();
    let mut c = LineClient::connect(&sock);
    let host = NovaDh::new();
    let r = call(&mut c, "keyinit", json!(host.public()));
    let shared = host.shared(r["message"].as_str().unwrap());
    let r = call(
        &mut c,
        "password",
        json!(nova_encrypt(&shared, "md5", "after-kills")),
    );
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(
        r["returncode"],
        "0",
        "{r}\n{}",
        std::fs::read_to_string(log).unwrap()
    );
    assert_password(&root, "root", "after-kills", &before);
}

fn ctl_with_stdin(g: &Guestd, args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(guestd_tests::bin::path("guestctl"))
        .arg("--connect")
        .arg(format!("unix:{}", g.sock.display()))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // guestctl may exit before reading stdin (a usage error): a broken pipe is fine then.
    let _ = child.stdin.take().unwrap().write_all(stdin.as_bytes());
    child.wait_with_output().unwrap()
}

#[test]
fn guestctl_set_password_strong_mode() {
    require_root();
    let g = Guestd::start_in(guest_dir(), &[]);
    let before = shadow_text(&g);
    let out = ctl_with_stdin(
        &g,
        &["set-password", "--password-stdin", "--require-strong"],
        "Strong Pw 1\n",
    );
    assert!(out.status.success(), "{out:?}\n{}", g.log());
    assert!(out.stderr.is_empty(), "{out:?}");
    assert_password(&g.root(), "root", "Strong Pw 1", &before);
    assert!(g.log().contains("mode=keyinit2"), "{}", g.log());
    let before = shadow_text(&g);
    let out = ctl_with_stdin(
        &g,
        &["set-password", "--password-stdin", "--user", "debian"],
        "deb pw",
    );
    assert!(out.status.success(), "{out:?}");
    assert_password(&g.root(), "debian", "deb pw", &before);
    // Without a terminal and without --password-stdin: a clear usage error.
    let out = ctl_with_stdin(&g, &["set-password"], "x\n");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--password-stdin"));
    assert_not_logged(&g, &["Strong Pw 1", "deb pw"]);
}

#[test]
fn guestctl_set_password_legacy_mode() {
    require_root();
    let dir = guest_dir();
    let config = dir.path().join("guestd.toml");
    std::fs::write(&config, "[commands]\ndisabled = [\"keyinit2\"]\n").unwrap();
    let g = Guestd::start_in(dir, &["--config", config.to_str().unwrap()]);
    // --require-strong refuses, and nothing changes.
    let out = ctl_with_stdin(
        &g,
        &["set-password", "--password-stdin", "--require-strong"],
        "x\n",
    );
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("keyinit2"));
    assert_eq!(shadow_text(&g), SHADOW);
    for digest in ["md5", "sha256"] {
        let before = shadow_text(&g);
        let pw = format!("legacy {digest} pw");
        let out = ctl_with_stdin(
            &g,
            &[
                "set-password",
                "--password-stdin",
                "--legacy-digest",
                digest,
            ],
            &format!("{pw}\n"),
        );
        assert!(out.status.success(), "{out:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("warning") && stderr.contains("legacy"),
            "{stderr}"
        );
        assert_password(&g.root(), "root", &pw, &before);
        assert!(
            g.log()
                .contains(&format!("legacy, {digest} key derivation"))
        );
    }
    // Choosing the user needs keyinit2.
    let out = ctl_with_stdin(
        &g,
        &["set-password", "--password-stdin", "--user", "debian"],
        "x\n",
    );
    assert_eq!(out.status.code(), Some(1));
    assert_not_logged(&g, &["legacy md5 pw", "legacy sha256 pw"]);
}

#[test]
fn legacy_keyinit_can_be_disabled_by_config() {
    let dir = guest_dir();
    let config = dir.path().join("guestd.toml");
    std::fs::write(&config, "[password]\nallow_legacy = false\n").unwrap();
    let g = Guestd::start_in(dir, &["--config", config.to_str().unwrap()]);
    let mut c = LineClient::connect(&g.sock);
    let r = call(&mut c, "keyinit", json!("53035888671043549995097077724136"));
    assert_eq!(r["returncode"], "403");
    assert!(
        r["message"].as_str().unwrap().contains("allow_legacy"),
        "{r}"
    );
    let f = call(&mut c, "features", json!(""));
    assert!(f["message"].as_str().unwrap().contains("keyinit2"), "{f}");
}
