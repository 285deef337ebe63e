//! Setting a password in a sandbox root: with the real `chpasswd -R`, with the shadow-rewrite
//! fallback, and the FreeBSD `pw` plan; every path must verify, keep every other byte, mode
//! and owner, and never claim a success that did not happen.
#![cfg(unix)]
#![allow(clippy::disallowed_methods)] // tests build their trees by path

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::sync::{Arc, Mutex};

use guestd_core::{
    Backend, Env, Output, ProcessError, ProcessRunner, ProcessSpec, Root, SecretString,
    SystemRunner,
};
use guestd_distro::password::{crypt, shadow};
use guestd_distro::{OsBackend, OsFamily};
use zeroize::Zeroizing;

const PASSWD: &str = "root:x:0:0:root:/root:/bin/bash\n\
daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n\
sshd:x:100:65534::/run/sshd:/usr/sbin/nologin\n\
alice:x:1000:1000:Alice,,,:/home/alice:/bin/bash\n";

const SHADOW: &str = "root:*:19700:0:99999:7:::\n\
daemon:*:19700:0:99999:7:::\n\
sshd:!:19700::::::\n\
alice:$6$0123456789abcdef$VL3Vb6m2iGLyXhyiiK5XrAyGJ3vvvlFvM5P4CCsC5pTz.7tKcgc8dVHbzYKYHk3GSqXPmOcNxcxvbKMNeHtD7.:19701:0:99999:7:::\n";

fn sandbox(shadow_name: &str) -> (tempfile::TempDir, Root) {
    let d = tempfile::tempdir().unwrap();
    let etc = d.path().join("etc");
    std::fs::create_dir(&etc).unwrap();
    std::fs::write(etc.join("passwd"), PASSWD).unwrap();
    std::fs::write(etc.join("group"), "root:x:0:\nshadow:x:42:\n").unwrap();
    std::fs::write(etc.join(shadow_name), SHADOW).unwrap();
    let p = etc.join(shadow_name);
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o640)).unwrap();
    std::os::unix::fs::chown(&p, Some(0), Some(42)).unwrap();
    let root = Root::sandbox(d.path()).unwrap();
    (d, root)
}

fn secret(s: &str) -> SecretString {
    SecretString::new(Zeroizing::new(s.to_string()))
}

fn env(root: Root, runner: Arc<dyn ProcessRunner>, family: OsFamily) -> Env {
    Env {
        root,
        runner,
        backend: Arc::new(OsBackend::new(family)),
    }
}

/// Check the result with the real `openssl passwd -6` and that every other line is intact.
fn assert_set(dir: &Path, file: &str, user: &str, password: &str, before: &str) {
    let path = dir.join("etc").join(file);
    let text = std::fs::read_to_string(&path).unwrap();
    let field = shadow::password_field(text.as_bytes(), user).unwrap();
    let field = std::str::from_utf8(field).unwrap();
    let salt = field
        .strip_prefix("$6$")
        .unwrap()
        .split('$')
        .next()
        .unwrap();
    assert_eq!(salt.len(), 16);
    #[allow(clippy::disallowed_methods)] // the reference implementation, as a peer
    let out = std::process::Command::new("openssl")
        .args(["passwd", "-6", "-salt", salt, password])
        .output()
        .expect("the openssl CLI is required (apt-get install openssl)");
    assert_eq!(String::from_utf8(out.stdout).unwrap().trim(), field);
    for (old, new) in before.lines().zip(text.lines()) {
        if !old.starts_with(&format!("{user}:")) {
            assert_eq!(old, new);
        }
    }
    assert_eq!(before.lines().count(), text.lines().count());
    assert!(text.ends_with('\n'));
    let md = std::fs::metadata(&path).unwrap();
    assert_eq!(md.permissions().mode() & 0o7777, 0o640);
    assert_eq!((md.uid(), md.gid()), (0, 42));
}

fn require_root() {
    assert_eq!(
        nix_uid(),
        0,
        "this test runs chpasswd -R (a chroot) and chown: run it as root"
    );
}

fn nix_uid() -> u32 {
    std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or(u32::MAX)
}

#[test]
fn real_chpasswd_in_a_sandbox_root() {
    require_root();
    assert!(
        SystemRunner.exists("chpasswd"),
        "chpasswd is required (apt-get install passwd)"
    );
    let (dir, root) = sandbox("shadow");
    let env = env(root, Arc::new(SystemRunner), OsFamily::Debian);
    let backend = OsBackend::new(OsFamily::Debian);
    backend
        .set_password(&env, None, &secret("n3w pässword:with colon"))
        .unwrap();
    assert_set(
        dir.path(),
        "shadow",
        "root",
        "n3w pässword:with colon",
        SHADOW,
    );
    let before = std::fs::read_to_string(dir.path().join("etc/shadow")).unwrap();
    backend
        .set_password(&env, Some("alice"), &secret("alice-2"))
        .unwrap();
    assert_set(dir.path(), "shadow", "alice", "alice-2", &before);
}

#[test]
fn unknown_user_is_refused_before_anything_runs() {
    let (_dir, root) = sandbox("shadow");
    let runner = Arc::new(Recorder::default());
    let env = env(root, runner.clone(), OsFamily::Debian);
    let err = OsBackend::new(OsFamily::Debian)
        .set_password(&env, Some("mallory"), &secret("x"))
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "user 'mallory' has no entry in /etc/shadow"
    );
    assert!(runner.commands.lock().unwrap().is_empty());
}

/// A runner standing in for a system: records commands; `chpasswd` can be made to be missing,
/// to fail, or to "succeed" without doing anything.
#[derive(Debug, Default)]
struct Recorder {
    commands: Mutex<Vec<(String, Vec<u8>)>>,
    missing: bool,
    exit: i32,
}

impl ProcessRunner for Recorder {
    fn run(&self, cmd: &ProcessSpec) -> Result<Output, ProcessError> {
        let stdin = cmd.stdin.as_ref().map(|s| s.to_vec()).unwrap_or_default();
        self.commands
            .lock()
            .unwrap()
            .push((cmd.command_line(), stdin));
        Ok(Output {
            code: Some(self.exit),
            stdout: Vec::new(),
            stderr: b"chpasswd: simulated failure\n".to_vec(),
        })
    }
    fn exists(&self, _program: &str) -> bool {
        !self.missing
    }
}

#[test]
fn fallback_rewrites_shadow_under_the_lock() {
    let (dir, root) = sandbox("shadow");
    let runner = Arc::new(Recorder {
        missing: true,
        ..Recorder::default()
    });
    let env = env(root, runner.clone(), OsFamily::RedHat);
    OsBackend::new(OsFamily::RedHat)
        .set_password(&env, None, &secret("fallback pw"))
        .unwrap();
    assert_set(dir.path(), "shadow", "root", "fallback pw", SHADOW);
    assert!(runner.commands.lock().unwrap().is_empty());
    // The lock file exists in the root (lckpwdf's), and no temp file is left behind.
    let names: Vec<_> = std::fs::read_dir(dir.path().join("etc"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(names.contains(&".pwd.lock".to_string()));
    assert!(!names.iter().any(|n| n.contains("guestd-tmp")), "{names:?}");
    let text = std::fs::read_to_string(dir.path().join("etc/shadow")).unwrap();
    let day = shadow::days_since_epoch().to_string();
    assert!(text.starts_with("root:$6$"));
    assert_eq!(
        text.lines().next().unwrap().split(':').nth(2),
        Some(day.as_str())
    );
}

#[test]
fn chpasswd_gets_the_hash_on_stdin_and_never_the_password() {
    let (_dir, root) = sandbox("shadow");
    let base = root.base().unwrap().to_str().unwrap().to_string();
    let runner = Arc::new(Recorder::default());
    let env = env(root, runner.clone(), OsFamily::Debian);
    // The recorder does not change the file, so verification must fail: no false success.
    let err = OsBackend::new(OsFamily::Debian)
        .set_password(&env, None, &secret("hunter2-secret"))
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "the password of 'root' did not verify after it was set"
    );
    let commands = runner.commands.lock().unwrap();
    let (line, stdin) = &commands[0];
    assert_eq!(line, &format!("chpasswd -e -R {base}"));
    let stdin = String::from_utf8(stdin.clone()).unwrap();
    let hash = stdin
        .strip_prefix("root:")
        .unwrap()
        .strip_suffix('\n')
        .unwrap();
    assert!(crypt::verify(hash, "hunter2-secret"));
    assert!(!stdin.contains("hunter2"));
    assert!(!line.contains("hunter2"));
}

#[test]
fn a_failing_chpasswd_is_an_error() {
    let (_dir, root) = sandbox("shadow");
    let runner = Arc::new(Recorder {
        exit: 1,
        ..Recorder::default()
    });
    let env = env(root, runner, OsFamily::Debian);
    let err = OsBackend::new(OsFamily::Debian)
        .set_password(&env, None, &secret("pw"))
        .unwrap_err();
    assert_eq!(err.to_string(), "'chpasswd' failed with exit status 1");
}

/// FreeBSD's `pw` plan, with a stand-in `pw` that applies the hash from stdin the way the real
/// one does (so the verification step runs on a real result).
#[derive(Debug)]
struct FakePw {
    root: Root,
    seen: Mutex<Vec<String>>,
}

impl ProcessRunner for FakePw {
    fn run(&self, cmd: &ProcessSpec) -> Result<Output, ProcessError> {
        self.seen.lock().unwrap().push(cmd.command_line());
        let hash = String::from_utf8(cmd.stdin.as_ref().unwrap().to_vec()).unwrap();
        let user = &cmd.args[cmd.args.iter().position(|a| a == "-n").unwrap() + 1];
        let text = self.root.read("/etc/master.passwd").unwrap();
        let new = shadow::replace_password(&text, user, hash.trim_end(), None).unwrap();
        self.root
            .write_atomic("/etc/master.passwd", &new, Default::default())
            .unwrap();
        Ok(Output {
            code: Some(0),
            ..Output::default()
        })
    }
    fn exists(&self, _program: &str) -> bool {
        true
    }
}

#[test]
fn freebsd_pw_plan() {
    let (dir, root) = sandbox("master.passwd");
    let base = root.base().unwrap().to_str().unwrap().to_string();
    let runner = Arc::new(FakePw {
        root: root.clone(),
        seen: Mutex::default(),
    });
    let env = env(root, runner.clone(), OsFamily::FreeBsd);
    OsBackend::new(OsFamily::FreeBsd)
        .set_password(&env, None, &secret("bsd pw"))
        .unwrap();
    assert_eq!(
        runner.seen.lock().unwrap().as_slice(),
        [format!("pw -R {base} usermod -n root -H 0")]
    );
    assert_set(dir.path(), "master.passwd", "root", "bsd pw", SHADOW);
}

#[test]
fn windows_is_unsupported_off_windows() {
    let (_dir, root) = sandbox("shadow");
    let env = env(root, Arc::new(Recorder::default()), OsFamily::Windows);
    let err = OsBackend::new(OsFamily::Windows)
        .set_password(&env, None, &secret("pw"))
        .unwrap_err();
    assert!(err.to_string().contains("not supported"));
}

/// A yescrypt hash made by libxcrypt (Debian 12's default scheme).
const YESCRYPT: &str = "$y$j9T$F5Jx5fExrKuPp53xLKQ..1$tnSYvahCwPBHKZUspmcxMfb0.WiB9W.zEaKlOBL35rC";

/// The stored field of `user`, and every other line unchanged.
fn assert_hash_stored(dir: &Path, file: &str, user: &str, hash: &str, before: &str) {
    let text = std::fs::read_to_string(dir.join("etc").join(file)).unwrap();
    let field = shadow::password_field(text.as_bytes(), user).unwrap();
    assert_eq!(std::str::from_utf8(field).unwrap(), hash);
    for (old, new) in before.lines().zip(text.lines()) {
        if !old.starts_with(&format!("{user}:")) {
            assert_eq!(old, new);
        }
    }
    assert_eq!(before.lines().count(), text.lines().count());
}

#[test]
fn real_chpasswd_stores_a_ready_hash_unchanged() {
    require_root();
    let (dir, root) = sandbox("shadow");
    let env = env(root, Arc::new(SystemRunner), OsFamily::Debian);
    OsBackend::new(OsFamily::Debian)
        .set_password_hash(&env, "alice", &secret(YESCRYPT))
        .unwrap();
    assert_hash_stored(dir.path(), "shadow", "alice", YESCRYPT, SHADOW);
}

#[test]
fn fallback_stores_a_ready_hash_and_a_fake_success_is_caught() {
    let (dir, root) = sandbox("shadow");
    let missing = Arc::new(Recorder {
        missing: true,
        ..Recorder::default()
    });
    let env_fallback = env(root.clone(), missing.clone(), OsFamily::RedHat);
    let sha = "$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcbYEdFCoEOfaS35inz1";
    OsBackend::new(OsFamily::RedHat)
        .set_password_hash(&env_fallback, "root", &secret(sha))
        .unwrap();
    assert_hash_stored(dir.path(), "shadow", "root", sha, SHADOW);
    assert!(missing.commands.lock().unwrap().is_empty());

    // chpasswd "succeeds" without storing anything: verification refuses the false success,
    // and chpasswd got `user:hash` on stdin, nothing in argv.
    let base = root.base().unwrap().to_str().unwrap().to_string();
    let noop = Arc::new(Recorder::default());
    let env_noop = env(root, noop.clone(), OsFamily::Debian);
    let err = OsBackend::new(OsFamily::Debian)
        .set_password_hash(&env_noop, "alice", &secret(YESCRYPT))
        .unwrap_err();
    assert!(
        err.to_string().contains("does not hold the new hash"),
        "{err}"
    );
    let commands = noop.commands.lock().unwrap();
    assert_eq!(commands[0].0, format!("chpasswd -e -R {base}"));
    assert_eq!(commands[0].1, format!("alice:{YESCRYPT}\n").into_bytes());
}

#[test]
fn hostile_hashes_and_users_are_refused_before_anything_runs() {
    let (dir, root) = sandbox("shadow");
    let runner = Arc::new(Recorder::default());
    let env = env(root, runner.clone(), OsFamily::Debian);
    let backend = OsBackend::new(OsFamily::Debian);
    for (user, hash) in [
        ("alice", "$6$x$y:0:0:::\nroot::"),
        ("alice", "plaintext"),
        ("alice", "abJnggxhB/yWI"),
        ("alice", ""),
        (
            "alice",
            "$y$j9T$F5Jx5fExrKuPp53xLKQ..1$tnSYvahCwPBHKZUspmcxMfb0.WiB9W.zEaKlOBL35r\r",
        ),
        ("ali:ce", YESCRYPT),
        ("alice\nroot", YESCRYPT),
        ("mallory", YESCRYPT),
    ] {
        let err = backend
            .set_password_hash(&env, user, &secret(hash))
            .unwrap_err();
        // The reason goes back to the host: it never echoes the hash.
        assert!(hash.len() < 8 || !err.to_string().contains(hash), "{err}");
    }
    assert!(runner.commands.lock().unwrap().is_empty());
    assert_eq!(
        std::fs::read_to_string(dir.path().join("etc/shadow")).unwrap(),
        SHADOW
    );
}

#[test]
fn freebsd_pw_stores_a_ready_hash_and_windows_refuses_one() {
    let (dir, root) = sandbox("master.passwd");
    let runner = Arc::new(FakePw {
        root: root.clone(),
        seen: Mutex::default(),
    });
    let env_bsd = env(root.clone(), runner, OsFamily::FreeBsd);
    OsBackend::new(OsFamily::FreeBsd)
        .set_password_hash(&env_bsd, "alice", &secret(YESCRYPT))
        .unwrap();
    assert_hash_stored(dir.path(), "master.passwd", "alice", YESCRYPT, SHADOW);
    let env_win = env(root, Arc::new(Recorder::default()), OsFamily::Windows);
    let err = OsBackend::new(OsFamily::Windows)
        .set_password_hash(&env_win, "Administrator", &secret(YESCRYPT))
        .unwrap_err();
    assert!(err.to_string().contains("not supported"), "{err}");
}
