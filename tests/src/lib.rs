//! Helpers for end-to-end tests: start the real `guestd` in a sandbox root, talk to it with the
//! real `guestctl` or raw sockets, stop it with a signal, read its log.
//! They run on Unix hosts (the Windows binaries are driven from Linux by their own tests).
#![cfg(unix)]
#![allow(clippy::disallowed_methods)] // these tests spawn the binaries they test

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

pub use guestd_testkit::bin;

pub mod hostile;
pub mod idle;
pub mod nova;

/// A running guestd with its own sandbox root and unix socket.
#[derive(Debug)]
pub struct Guestd {
    child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub sock: PathBuf,
    log: PathBuf,
}

/// Write a configuration file in `dir` that lets guestd serve plain TCP on loopback (tests that
/// drive it over `tcp:127.0.0.1:PORT` without TLS) and return its path.
pub fn plain_loopback_tcp_config(dir: &Path) -> PathBuf {
    let path = dir.join("plain-tcp.toml");
    std::fs::write(&path, "[tcp]\nallow_unauthenticated_loopback = true\n").unwrap();
    path
}

impl Guestd {
    /// Start guestd with `--root <tmp>/root --listen unix:<tmp>/guestd.sock` plus `extra` args,
    /// and wait until the socket answers.
    pub fn start(extra: &[&str]) -> Self {
        Self::start_in(tempfile::tempdir().expect("tempdir"), extra)
    }

    /// Like [`start`](Self::start) but in a prepared directory (`root/` inside it is the root,
    /// unless `extra` names its own `--root DIR`, e.g. a tmpfs).
    pub fn start_in(dir: tempfile::TempDir, extra: &[&str]) -> Self {
        Self::start_in_env(dir, extra, &[])
    }

    /// Like [`start_in`](Self::start_in) with extra environment variables for guestd (e.g. a
    /// `PATH` of recording stand-ins, so no command reaches the host).
    pub fn start_in_env(dir: tempfile::TempDir, extra: &[&str], env: &[(&str, &str)]) -> Self {
        let root = dir.path().join("root");
        std::fs::create_dir_all(&root).unwrap();
        let sock = dir.path().join("guestd.sock");
        let log = dir.path().join("guestd.log");
        let mut cmd = Command::new(bin::path("guestd"));
        if !extra.contains(&"--root") {
            cmd.arg("--root").arg(&root);
        }
        let child = cmd
            .arg("--listen")
            .arg(format!("unix:{}", sock.display()))
            .args(if extra.contains(&"--log-level") {
                &[][..]
            } else {
                &["--log-level", "debug"][..]
            })
            .args(extra)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("spawn guestd");
        let mut g = Self {
            child: Some(child),
            dir,
            sock,
            log,
        };
        g.wait_ready();
        g
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if std::os::unix::net::UnixStream::connect(&self.sock).is_ok() {
                return;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "guestd exited with {status} before listening:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("guestd did not listen within 20 s:\n{}", self.log());
    }

    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// Run `guestctl --connect unix:<sock> ARGS`.
    pub fn ctl(&self, args: &[&str]) -> Output {
        Command::new(bin::path("guestctl"))
            .arg("--connect")
            .arg(format!("unix:{}", self.sock.display()))
            .args(args)
            .output()
            .expect("run guestctl")
    }

    /// The daemon's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The daemon's log once it contains `needle` (or after 10 s, to let the caller's assert
    /// show it). For lines written after the client already has its answer, such as a refused
    /// TLS handshake: TLS 1.3 clients finish before the server has checked their certificate.
    pub fn log_once_it_has(&self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let log = self.log();
            if log.contains(needle) || Instant::now() > deadline {
                return log;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        self.child.as_mut().unwrap().try_wait().unwrap().is_none()
    }

    /// Send SIGTERM and wait for the exit status.
    pub fn terminate(mut self) -> ExitStatus {
        signal(self.pid(), "TERM");
        wait_timeout(self.child.as_mut().unwrap(), Duration::from_secs(20))
    }
}

impl Drop for Guestd {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `kill -SIG pid`.
pub fn signal(pid: u32, sig: &str) {
    let status = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(status.success(), "kill -{sig} {pid}");
}

/// Wait for a child with a deadline (then kill it and fail).
pub fn wait_timeout(child: &mut Child, limit: Duration) -> ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("process did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A raw line client on a unix socket.
#[derive(Debug)]
pub struct LineClient {
    stream: std::os::unix::net::UnixStream,
    reader: std::io::BufReader<std::os::unix::net::UnixStream>,
}

impl LineClient {
    pub fn connect(path: &Path) -> Self {
        let stream = std::os::unix::net::UnixStream::connect(path).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let reader = std::io::BufReader::new(stream.try_clone().unwrap());
        Self { stream, reader }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        use std::io::Write;
        self.stream.write_all(bytes).expect("write");
    }

    /// Read one reply line as JSON.
    pub fn recv(&mut self) -> serde_json::Value {
        use std::io::BufRead;
        let mut line = Vec::new();
        self.reader.read_until(b'\n', &mut line).expect("read");
        assert!(!line.is_empty(), "connection closed");
        let text = String::from_utf8(line).expect("replies are UTF-8");
        assert!(text.is_ascii(), "replies are ASCII: {text:?}");
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("reply {text:?}: {e}"))
    }

    /// Read one reply line, without its newline, as raw bytes.
    pub fn recv_line(&mut self) -> Vec<u8> {
        use std::io::BufRead;
        let mut line = Vec::new();
        self.reader.read_until(b'\n', &mut line).expect("read");
        assert!(line.pop() == Some(b'\n'), "connection closed mid-reply");
        line
    }

    /// Read raw bytes (through the line buffer).
    pub fn read_raw(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        std::io::Read::read(&mut self.reader, buf)
    }

    /// Send a line and read the reply.
    pub fn roundtrip(&mut self, line: &[u8]) -> serde_json::Value {
        self.send(line);
        self.send(b"\n");
        self.recv()
    }
}

impl hostile::LineConn for LineClient {
    fn send_bytes(&mut self, bytes: &[u8]) {
        self.send(bytes);
    }

    fn recv_line(&mut self) -> Vec<u8> {
        LineClient::recv_line(self)
    }
}

/// A tmpfs mounted for one test (as the sandbox root of a "full disk" or a "read-only root"),
/// unmounted when dropped, whatever happened in between. Needs root (CI runs as root).
#[derive(Debug)]
pub struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// Mount a tmpfs of `size_kib` KiB on a new temporary directory.
    pub fn mount(size_kib: u64) -> Self {
        assert!(
            is_root(),
            "this fault-injection test mounts a tmpfs and must run as root (CI does)"
        );
        let dir = tempfile::tempdir().expect("tempdir");
        run(Command::new("mount")
            .args(["-t", "tmpfs", "-o"])
            .arg(format!("size={size_kib}k,mode=0755"))
            .arg("tmpfs")
            .arg(dir.path()));
        Self { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Remount read-only (what a guest sees when its root filesystem went read-only).
    pub fn remount_read_only(&self) {
        run(Command::new("mount")
            .args(["-o", "remount,ro"])
            .arg(self.dir.path()));
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazy unmount: succeeds even if a killed process still had a file open there.
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|uid| uid == "0"))
        })
        .unwrap_or(false)
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Leftover temporary files of atomic writes below `dir` (`.<name>.guestd-tmp.<pid>.<n>`).
pub fn temp_files_below(dir: &Path) -> Vec<PathBuf> {
    hostile::files_below(dir)
        .into_iter()
        .filter(|p| p.to_string_lossy().contains(".guestd-tmp."))
        .collect()
}

/// What `features` lists with the default configuration: the native commands in registration
/// order (the qga ones exist only on qga channels).
pub const DEFAULT_FEATURES: &str = "version,features,keyinit,keyinit2,password,resetnetwork,\
injectfile,file_inject,agentupdate,kmsactivate";
