//! Issue 7: file injection through the real guestd and guestctl, and a crash test.
#![cfg(unix)]
#![allow(clippy::disallowed_methods)] // spawns and kills the daemon under test

use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use guestd_tests::{Guestd, bin};

#[test]
fn guestctl_inject_file_writes_the_ssh_key_with_the_right_modes() {
    let g = Guestd::start(&[]);
    let local = g.dir.path().join("key.pub");
    let contents =
        b"\n# The following ssh key was injected by Nova\nssh-ed25519 AAAAC3 user@host\n";
    fs::write(&local, contents).unwrap();
    let out = g.ctl(&[
        "inject-file",
        local.to_str().unwrap(),
        "/root/.ssh/authorized_keys",
    ]);
    assert!(out.status.success(), "{out:?}\n{}", g.log());
    let keys = g.root().join("root/.ssh/authorized_keys");
    assert_eq!(fs::read(&keys).unwrap(), contents);
    assert_eq!(fs::metadata(&keys).unwrap().mode() & 0o7777, 0o600);
    assert_eq!(
        fs::metadata(g.root().join("root/.ssh")).unwrap().mode() & 0o7777,
        0o700
    );
    // A relative path is refused with the agent's reason and exit code 1.
    let out = g.ctl(&["inject-file", local.to_str().unwrap(), "relative/x"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("File path 'relative/x' is not absolute"),
        "{out:?}"
    );
    // The contents never reach the log.
    assert!(!g.log().contains("AAAAC3"), "{}", g.log());
}

/// A tiny deterministic generator (the seed is printed so a failure can be replayed).
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// Content that differs at every offset between iterations, so a mix is always visible.
fn content(iteration: u64, len: usize) -> Vec<u8> {
    let mut out = format!("version {iteration}\n").into_bytes();
    out.extend((0..len).map(|i| (i as u64 ^ iteration.wrapping_mul(0x9e37_79b9)) as u8));
    out
}

fn request(path: &str, contents: &[u8]) -> Vec<u8> {
    let mut line = format!(
        r#"{{"id": "c", "name": "file_inject", "value": {{"b64_path": "{}", "b64_file": "{}"}}}}"#,
        STANDARD.encode(path),
        STANDARD.encode(contents)
    )
    .into_bytes();
    line.push(b'\n');
    line
}

struct Daemon {
    child: Child,
}

impl Daemon {
    fn start(dir: &Path) -> Self {
        let sock = dir.join("guestd.sock");
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("guestd.log"))
            .unwrap();
        let child = Command::new(bin::path("guestd"))
            .arg("--root")
            .arg(dir.join("root"))
            .arg("--listen")
            .arg(format!("unix:{}", sock.display()))
            .arg("--config")
            .arg(dir.join("guestd.toml"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn guestd");
        let deadline = Instant::now() + Duration::from_secs(20);
        while UnixStream::connect(&sock).is_err() {
            assert!(Instant::now() < deadline, "guestd did not listen");
            std::thread::sleep(Duration::from_millis(5));
        }
        Self { child }
    }

    /// SIGKILL (std's `kill` on Unix) and reap.
    fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

/// Send `line` from a thread (a big request blocks until guestd reads it); the thread ends
/// with the reply, or with `None` when the connection dies.
fn send_async(sock: &Path, line: Vec<u8>) -> std::thread::JoinHandle<Option<serde_json::Value>> {
    let sock = sock.to_path_buf();
    std::thread::spawn(move || {
        use std::io::BufRead;
        let mut stream = UnixStream::connect(&sock).ok()?;
        stream.write_all(&line).ok()?;
        let mut reply = String::new();
        std::io::BufReader::new(stream).read_line(&mut reply).ok()?;
        serde_json::from_str(&reply).ok()
    })
}

#[test]
fn sigkill_during_injections_leaves_the_old_or_the_new_file() {
    const ROUNDS: u64 = 100;
    const TARGET: &str = "/srv/data/target.bin";
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    fs::create_dir_all(root.join("srv/data")).unwrap();
    fs::write(
        dir.path().join("guestd.toml"),
        "[transports]\nmax_line_bytes = 16777216\n[inject]\nmax_size = 8388608\nkeep_backups = 1\n",
    )
    .unwrap();
    let target = root.join(TARGET.trim_start_matches('/'));
    let mut current = content(0, 100_000);
    fs::write(&target, &current).unwrap();
    fs::set_permissions(&target, fs::Permissions::from_mode(0o640)).unwrap();
    let sock = dir.path().join("guestd.sock");

    // How long one injection takes here, so the kills spread over its whole duration.
    let daemon = Daemon::start(dir.path());
    let started = Instant::now();
    let calib = content(1, 1 << 20);
    let reply = send_async(&sock, request(TARGET, &calib)).join().unwrap();
    assert_eq!(reply.unwrap()["returncode"], "0");
    let budget = started.elapsed();
    daemon.kill();
    current = calib;
    assert_eq!(fs::read(&target).unwrap(), current);

    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    println!("seed {seed}, one injection takes {budget:?}");
    let mut rng = XorShift(seed);
    let (mut old, mut new) = (0, 0);
    for round in 2..ROUNDS + 2 {
        let daemon = Daemon::start(dir.path());
        let len = 16 * 1024 + rng.below(1 << 20) as usize;
        let next = content(round, len);
        let client = send_async(&sock, request(TARGET, &next));
        let delay = rng.below(budget.as_micros() as u64 * 3 / 2 + 1);
        std::thread::sleep(Duration::from_micros(delay));
        daemon.kill();
        let _ = client.join();
        let now = fs::read(&target).unwrap();
        if now == next {
            new += 1;
            current = next;
        } else {
            assert!(
                now == current,
                "round {round} (seed {seed}, kill after {delay} us): the file is neither the \
                 old ({} bytes) nor the new ({} bytes) content but {} bytes",
                current.len(),
                next.len(),
                now.len()
            );
            old += 1;
        }
        assert_eq!(
            fs::metadata(&target).unwrap().mode() & 0o7777,
            0o640,
            "mode kept"
        );
    }
    println!("{ROUNDS} kills: {old} left the old file, {new} the new one");

    // A clean injection afterwards sweeps the temp files the killed daemons left behind.
    let daemon = Daemon::start(dir.path());
    let last = content(ROUNDS + 2, 1000);
    let reply = send_async(&sock, request(TARGET, &last)).join().unwrap();
    assert_eq!(reply.unwrap()["returncode"], "0");
    daemon.kill();
    assert_eq!(fs::read(&target).unwrap(), last);
    let leftovers: Vec<_> = fs::read_dir(root.join("srv/data"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("guestd-tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}
