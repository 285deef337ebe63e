//! Issue 8: fault injection. A full disk and a read-only root give clear errors and leave every
//! file whole; SIGKILL in the middle of a write, a `file_inject` or a network apply leaves the
//! old or the new file, never a mix (password changes: `password.rs`); a host that goes away
//! at any point of a conversation never takes guestd down.
#![cfg(unix)]
#![allow(clippy::disallowed_methods)] // these tests spawn the processes they kill

use std::io::{BufRead, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use guestd_core::{ApplyError, ApplyOptions, FileChange, Plan, Root, WriteOptions};
use guestd_testkit::FakeRunner;
use guestd_tests::{Guestd, LineClient, Tmpfs, temp_files_below};

const OLD: &[u8] = b"root:old-hash:19000:0:99999:7:::\n";

/// A sandbox root on a tmpfs of `kib` KiB holding `/etc/shadow` = OLD and `/etc/hosts`.
fn small_root(kib: u64) -> (Tmpfs, Root) {
    let fs = Tmpfs::mount(kib);
    std::fs::create_dir(fs.path().join("etc")).unwrap();
    std::fs::write(fs.path().join("etc/shadow"), OLD).unwrap();
    std::fs::write(fs.path().join("etc/hosts"), b"127.0.0.1 localhost\n").unwrap();
    let root = Root::sandbox(fs.path()).unwrap();
    (fs, root)
}

/// Fill the filesystem so that only a little is left.
fn fill(dir: &Path) {
    let mut f = std::fs::File::create(dir.join("filler")).unwrap();
    let chunk = vec![0u8; 4096];
    while f.write_all(&chunk).is_ok() {}
    let _ = f.sync_all();
}

#[test]
fn full_disk_write_fails_clearly_and_keeps_the_old_file() {
    let (fs, root) = small_root(256);
    fill(fs.path());
    let err = root
        .write_atomic(
            "/etc/shadow",
            &vec![b'x'; 64 * 1024],
            WriteOptions::default(),
        )
        .unwrap_err();
    assert_eq!(
        err.io_kind(),
        Some(std::io::ErrorKind::StorageFull),
        "{err}"
    );
    let text = err.to_string();
    assert!(
        text.contains("/etc/shadow") && text.contains("No space left on device"),
        "unclear error: {text}"
    );
    assert!(!text.contains("xxxx"), "contents leaked into the error");
    assert_eq!(std::fs::read(fs.path().join("etc/shadow")).unwrap(), OLD);
    assert_eq!(
        temp_files_below(fs.path()),
        Vec::<std::path::PathBuf>::new()
    );
}

#[test]
fn full_disk_in_the_middle_of_a_plan_rolls_every_file_back() {
    let (fs, root) = small_root(512);
    // Leave room for the first (small) change and its backup, not for the second.
    let mut f = std::fs::File::create(fs.path().join("filler")).unwrap();
    f.write_all(&vec![0u8; 400 * 1024]).unwrap();
    f.sync_all().unwrap();
    let plan = Plan {
        changes: vec![
            FileChange::write(
                "/etc/hosts",
                b"10.0.0.1 new\n".to_vec(),
                WriteOptions::default(),
            ),
            FileChange::write(
                "/etc/shadow",
                vec![b'y'; 256 * 1024],
                WriteOptions::default(),
            ),
        ],
        ..Plan::default()
    };
    let err =
        guestd_core::apply(&plan, &root, &FakeRunner::new(), ApplyOptions::default()).unwrap_err();
    match &err {
        ApplyError::File { source, restored } => {
            assert_eq!(
                source.io_kind(),
                Some(std::io::ErrorKind::StorageFull),
                "{err}"
            );
            assert!(restored, "rollback reported failure: {err}");
        }
        other => panic!("unexpected error {other:?}"),
    }
    assert!(err.to_string().contains("No space left on device"), "{err}");
    assert_eq!(
        std::fs::read(fs.path().join("etc/hosts")).unwrap(),
        b"127.0.0.1 localhost\n"
    );
    assert_eq!(std::fs::read(fs.path().join("etc/shadow")).unwrap(), OLD);
    assert_eq!(
        temp_files_below(fs.path()),
        Vec::<std::path::PathBuf>::new()
    );
}

#[test]
fn read_only_root_fails_clearly_and_changes_nothing() {
    let (fs, root) = small_root(256);
    fs.remount_read_only();
    let err = root
        .write_atomic("/etc/shadow", b"new", WriteOptions::default())
        .unwrap_err();
    assert_eq!(
        err.io_kind(),
        Some(std::io::ErrorKind::ReadOnlyFilesystem),
        "{err}"
    );
    assert!(
        err.to_string().contains("Read-only file system"),
        "unclear error: {err}"
    );
    let plan = Plan {
        changes: vec![FileChange::write(
            "/etc/hosts",
            b"x\n".to_vec(),
            WriteOptions::default(),
        )],
        ..Plan::default()
    };
    let err =
        guestd_core::apply(&plan, &root, &FakeRunner::new(), ApplyOptions::default()).unwrap_err();
    assert!(err.to_string().contains("Read-only file system"), "{err}");
    assert_eq!(std::fs::read(fs.path().join("etc/shadow")).unwrap(), OLD);
}

#[test]
fn guestd_serves_with_a_full_or_read_only_root() {
    for read_only in [false, true] {
        let (fs, _root) = small_root(128);
        fill(fs.path());
        if read_only {
            fs.remount_read_only();
        }
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("guestd.sock");
        let mut child = Command::new(guestd_tests::bin::path("guestd"))
            .args(["--config", "/dev/null", "--root"])
            .arg(fs.path())
            .arg("--listen")
            .arg(format!("unix:{}", sock.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut tries = 0;
        while UnixStream::connect(&sock).is_err() {
            assert!(
                tries < 1000,
                "guestd did not listen (read_only={read_only})"
            );
            assert!(child.try_wait().unwrap().is_none(), "guestd exited");
            std::thread::sleep(Duration::from_millis(10));
            tries += 1;
        }
        let mut c = LineClient::connect(&sock);
        let r = c.roundtrip(br#"{"id":1,"name":"version","value":"agent"}"#);
        assert_eq!(r["returncode"], "0", "read_only={read_only}: {r}");
        child.kill().unwrap();
        child.wait().unwrap();
    }
}

/// SIGKILL a process that keeps replacing a 256 KiB file, at a different moment each time:
/// the file is always one whole generation.
#[test]
fn sigkill_during_atomic_writes_leaves_a_whole_file() {
    const SIZE: usize = 256 * 1024;
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("etc")).unwrap();
    for round in 0..12u64 {
        let mut child = Command::new(guestd_tests::bin::path("fault-writer"))
            .arg(dir.path())
            .arg("/etc/data")
            .arg(SIZE.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let first = lines.next().expect("writer output").unwrap();
        assert!(first.starts_with("wrote "), "{first}");
        // Kill at varying points of the next writes (0.0 to 5.5 ms later).
        std::thread::sleep(Duration::from_micros(round * 500));
        child.kill().unwrap();
        child.wait().unwrap();
        let data = std::fs::read(dir.path().join("etc/data")).unwrap();
        assert_eq!(data.len(), SIZE, "round {round}: torn file");
        assert!(
            data.iter().all(|&b| b == data[0]),
            "round {round}: the file mixes two generations"
        );
    }
    // The temp file a killed writer was filling is left behind (nothing can remove it at
    // SIGKILL), but never under the real name.
    for tmp in temp_files_below(dir.path()) {
        let name = tmp.file_name().unwrap().to_string_lossy().into_owned();
        assert!(name.starts_with(".data.guestd-tmp."), "{name}");
    }
}

/// A host-side stream of any transport.
trait HostStream: Read + Write {
    fn close_sending(&self);
    fn set_timeout(&self, limit: Duration);
}

impl HostStream for UnixStream {
    fn close_sending(&self) {
        self.shutdown(std::net::Shutdown::Write).unwrap();
    }
    fn set_timeout(&self, limit: Duration) {
        self.set_read_timeout(Some(limit)).unwrap();
    }
}

impl HostStream for std::net::TcpStream {
    fn close_sending(&self) {
        self.shutdown(std::net::Shutdown::Write).unwrap();
    }
    fn set_timeout(&self, limit: Duration) {
        self.set_read_timeout(Some(limit)).unwrap();
    }
}

/// Hosts vanish at every point of a conversation; guestd stays up, keeps no stale state for the
/// next client and holds no file descriptors for gone clients.
fn host_disconnects(g: &mut Guestd, connect: &dyn Fn() -> Box<dyn HostStream>) {
    let pid = g.pid();
    let fds = || {
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap()
            .count()
    };
    let request = br#"{"id":"r","name":"version","value":"agent"}"#;
    let roundtrip = |s: &mut Box<dyn HostStream>| {
        s.write_all(request).unwrap();
        s.write_all(b"\n").unwrap();
        let mut reply = Vec::new();
        let mut byte = [0u8; 1];
        while byte[0] != b'\n' {
            s.read_exact(&mut byte).unwrap();
            reply.push(byte[0]);
        }
        String::from_utf8(reply).unwrap()
    };
    // Let start-up settle, then take the baseline.
    roundtrip(&mut connect());
    std::thread::sleep(Duration::from_millis(50));
    let baseline = fds();
    for round in 0..20 {
        // 1. Connect and leave at once.
        drop(connect());
        // 2. Half a request, then gone.
        let mut s = connect();
        s.write_all(&request[..request.len() / 2]).unwrap();
        drop(s);
        // 3. A request, gone before the reply is read.
        let mut s = connect();
        s.write_all(request).unwrap();
        s.write_all(b"\n").unwrap();
        drop(s);
        // 4. Many pipelined requests, gone at once (guestd's writes meet a closed socket).
        let mut s = connect();
        let burst: Vec<u8> = (0..500)
            .flat_map(|i| format!("{{\"id\":{i},\"name\":\"features\"}}\n").into_bytes())
            .collect();
        let _ = s.write_all(&burst);
        drop(s);
        // 5. A request, then the host closes its sending side: the reply still arrives.
        let mut s = connect();
        s.write_all(request).unwrap();
        s.write_all(b"\n").unwrap();
        s.close_sending();
        s.set_timeout(Duration::from_secs(20));
        let mut reply = String::new();
        s.read_to_string(&mut reply).unwrap();
        assert!(
            reply.starts_with("{\"id\":\"r\",") && reply.ends_with("\"returncode\":\"0\"}\n"),
            "round {round}: {reply:?}"
        );
        // 6. A fresh client is answered normally, its first request intact.
        let reply = roundtrip(&mut connect());
        assert!(
            reply.contains("\"returncode\":\"0\""),
            "round {round}: {reply}"
        );
    }
    assert!(g.alive(), "guestd died:\n{}", g.log());
    // Every gone client's descriptor is closed (allow a moment for the last ones).
    let mut tries = 0;
    while fds() > baseline && tries < 300 {
        std::thread::sleep(Duration::from_millis(10));
        tries += 1;
    }
    assert_eq!(fds(), baseline, "descriptors leaked for closed connections");
}

#[test]
fn host_disconnects_over_unix() {
    let mut g = Guestd::start(&[]);
    let sock = g.sock.clone();
    host_disconnects(&mut g, &move || {
        Box::new(UnixStream::connect(&sock).unwrap()) as Box<dyn HostStream>
    });
}

#[test]
fn host_disconnects_over_loopback_tcp() {
    let port = guestd_tests::hostile::free_tcp_port();
    let listen = format!("tcp:127.0.0.1:{port}");
    let dir = tempfile::tempdir().unwrap();
    let config = guestd_tests::plain_loopback_tcp_config(dir.path());
    let config = config.to_str().unwrap().to_owned();
    let mut g = Guestd::start_in(dir, &["--config", &config, "--listen", &listen]);
    // Wait for the TCP listener (the helper waited for the unix one).
    drop(guestd_tests::hostile::TcpLine::connect(
        ([127, 0, 0, 1], port).into(),
    ));
    host_disconnects(&mut g, &move || {
        let s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        Box::new(s) as Box<dyn HostStream>
    });
}

/// `file_inject` of `contents` to `path` as one request line.
fn file_inject(path: &str, contents: &[u8]) -> Vec<u8> {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    format!(
        "{{\"id\":\"inject\",\"name\":\"file_inject\",\"value\":{{\"b64_path\":\"{}\",\"b64_file\":\"{}\"}}}}",
        b64.encode(path),
        b64.encode(contents)
    )
    .into_bytes()
}

/// Start guestd with its root on `root` (outside the helper's own temporary root).
fn guestd_on(root: &Path) -> (Guestd, std::path::PathBuf) {
    let g = Guestd::start(&["--root", root.to_str().unwrap()]);
    let sock = g.sock.clone();
    (g, sock)
}

#[test]
fn file_inject_on_a_full_then_read_only_root_fails_clearly() {
    let (fs, _root) = small_root(256);
    fill(fs.path());
    let (mut g, sock) = guestd_on(fs.path());
    let mut c = LineClient::connect(&sock);
    let r = c.roundtrip(&file_inject("/etc/shadow", &vec![b'x'; 64 * 1024]));
    assert_eq!(r["returncode"], "500", "{r}");
    let msg = r["message"].as_str().unwrap();
    assert!(
        msg.contains("/etc/shadow") && msg.contains("No space left on device"),
        "unclear error: {msg}"
    );
    assert_eq!(std::fs::read(fs.path().join("etc/shadow")).unwrap(), OLD);
    assert_eq!(
        temp_files_below(fs.path()),
        Vec::<std::path::PathBuf>::new()
    );

    std::fs::remove_file(fs.path().join("filler")).unwrap();
    fs.remount_read_only();
    let r = c.roundtrip(&file_inject("/etc/shadow", b"new\n"));
    assert_eq!(r["returncode"], "500", "{r}");
    let msg = r["message"].as_str().unwrap();
    assert!(
        msg.contains("Read-only file system"),
        "unclear error: {msg}"
    );
    assert_eq!(std::fs::read(fs.path().join("etc/shadow")).unwrap(), OLD);
    assert!(g.alive(), "guestd died:\n{}", g.log());
}

/// SIGKILL guestd while it replaces a 256 KiB file again and again through `file_inject`: the
/// file is always one whole generation.
#[test]
fn sigkill_guestd_during_file_inject_leaves_a_whole_file() {
    const SIZE: usize = 256 * 1024;
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("etc")).unwrap();
    for round in 0..6u64 {
        let (g, sock) = guestd_on(dir.path());
        let stream = UnixStream::connect(&sock).unwrap();
        let mut writer = stream.try_clone().unwrap();
        // Generation 1 is answered before the kill, so the file exists.
        let mut c = LineClient::connect(&sock);
        let r = c.roundtrip(&file_inject("/etc/data", &vec![1u8; SIZE]));
        assert_eq!(r["returncode"], "0", "{r}");
        let sender = std::thread::spawn(move || {
            for generation in 2..60u8 {
                let mut line = file_inject("/etc/data", &vec![generation; SIZE]);
                line.push(b'\n');
                if writer.write_all(&line).is_err() {
                    break;
                }
            }
        });
        std::thread::sleep(Duration::from_millis(5 + round * 7));
        guestd_tests::signal(g.pid(), "KILL");
        sender.join().unwrap();
        drop(stream);
        drop(g);
        let data = std::fs::read(dir.path().join("etc/data")).unwrap();
        assert_eq!(data.len(), SIZE, "round {round}: torn file");
        assert!(
            data.iter().all(|&b| b == data[0]),
            "round {round}: the file mixes two generations"
        );
    }
}

/// A sandbox root like a Debian guest with one NIC, for `fault-network`.
fn network_guest(dir: &Path) {
    for (rel, text) in [
        ("etc/os-release", "ID=debian\nVERSION_ID=\"12\"\n"),
        (
            "etc/network/interfaces",
            "auto lo\niface lo inet loopback\n",
        ),
        ("etc/hostname", "old-name\n"),
        ("etc/hosts", "127.0.0.1\tlocalhost\n127.0.1.1\told-name\n"),
        ("etc/resolv.conf", "nameserver 192.0.2.1\n"),
        ("sys/class/net/eth0/address", "bc:76:4e:20:6c:5a\n"),
    ] {
        std::fs::create_dir_all(dir.join(rel).parent().unwrap()).unwrap();
        std::fs::write(dir.join(rel), text).unwrap();
    }
    std::fs::create_dir_all(dir.join("etc/network/interfaces.d")).unwrap();
}

/// Every file under `dir/etc`, by guest path.
fn etc_files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    guestd_tests::hostile::files_below(&dir.join("etc"))
        .into_iter()
        .map(|p| {
            let guest = format!("/{}", p.strip_prefix(dir).unwrap().display());
            (guest, std::fs::read(&p).unwrap())
        })
        .collect()
}

fn fault_network(dir: &Path, mode: &str) -> std::process::Child {
    Command::new(guestd_tests::bin::path("fault-network"))
        .arg(dir)
        .arg(mode)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

/// SIGKILL the real resetnetwork backend (Debian, ifupdown; commands to the fake runner) while
/// it applies two configurations in turn, at a different moment each round: every file it
/// manages, and every backup it keeps, is one whole version (as it was, after A, or after B),
/// never a torn or mixed one.
#[test]
fn sigkill_during_network_applies_leaves_every_file_whole() {
    use std::collections::{HashMap, HashSet};
    // The whole versions of each file: initial, then after A, B, A, B applied in turn.
    let reference = tempfile::tempdir().unwrap();
    network_guest(reference.path());
    let mut versions: HashMap<String, HashSet<Vec<u8>>> = HashMap::new();
    let mut record = |dir: &Path| {
        for (path, body) in etc_files(dir) {
            versions.entry(path).or_default().insert(body);
        }
    };
    record(reference.path());
    for mode in ["a", "b", "a", "b"] {
        let out = fault_network(reference.path(), mode)
            .wait_with_output()
            .unwrap();
        assert!(out.status.success(), "fault-network {mode}: {out:?}");
        record(reference.path());
    }
    assert!(
        versions["/etc/network/interfaces"].len() >= 3,
        "{versions:?}"
    );

    let dir = tempfile::tempdir().unwrap();
    network_guest(dir.path());
    for round in 0..10u64 {
        let mut child = fault_network(dir.path(), "loop");
        let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let first = lines.next().expect("fault-network output").unwrap();
        assert!(first.starts_with("applied "), "{first}");
        // Kill at varying points of the next applies (0 to 4.5 ms later).
        std::thread::sleep(Duration::from_micros(round * 500));
        child.kill().unwrap();
        child.wait().unwrap();
        for (path, body) in etc_files(dir.path()) {
            if path.contains(".guestd-tmp.") {
                continue; // a killed write's temporary file, never under a real name
            }
            assert!(
                versions.get(&path).is_some_and(|v| v.contains(&body)),
                "round {round}: {path} is not a whole version:\n{}",
                String::from_utf8_lossy(&body)
            );
        }
        // Backups are copies of whole versions too.
        let backups = dir.path().join("var/lib/guestd/backup");
        for p in guestd_tests::hostile::files_below(&backups) {
            let name = p.strip_prefix(&backups).unwrap().display().to_string();
            if name.contains(".guestd-tmp.") {
                continue;
            }
            let (original, _generation) = name.rsplit_once('.').unwrap();
            let body = std::fs::read(&p).unwrap();
            assert!(
                versions[&format!("/{original}")].contains(&body),
                "round {round}: backup {name} is not a whole version"
            );
        }
    }
}
