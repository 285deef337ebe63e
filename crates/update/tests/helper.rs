//! The `guestd-update` executable as the daemon runs it: request on stdin, result on stdout,
//! the host's message on the last stderr line; and, started as root, the download runs as the
//! helper user (the test server looks up the connecting socket's owner in /proc/net/tcp).
#![cfg(unix)]
#![allow(clippy::disallowed_methods)] // runs the helper under test

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;

use guestd_update::archive::{self, Entry};

fn helper() -> std::path::PathBuf {
    guestd_testkit::bin::path("guestd-update")
}

fn run(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(helper())
        .args(args)
        .env_clear()
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A helper that refuses to start does not read its input.
    let _ = child.stdin.take().unwrap().write_all(stdin);
    child.wait_with_output().unwrap()
}

/// Serve `body` (or `status`) once on 127.0.0.1; the channel gets the uid owning the client's
/// socket. Returns the URL.
fn serve_once(status: u16, body: Vec<u8>) -> (String, mpsc::Receiver<Option<u32>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let (mut stream, peer) = listener.accept().unwrap();
        let _ = tx.send(socket_owner(peer.port()));
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut line = String::new();
        while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
            line.clear();
        }
        let _ = write!(
            stream,
            "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        )
        .and_then(|()| stream.write_all(&body));
    });
    (format!("http://{addr}/update.tar.gz"), rx)
}

/// The uid owning the loopback TCP socket whose local port is `port` (`/proc/net/tcp`).
fn socket_owner(port: u16) -> Option<u32> {
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    let local = format!(":{port:04X}");
    table.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        (f.len() > 7 && f[1].ends_with(&local)).then(|| f[7].parse().ok())?
    })
}

fn request(url: &str) -> Vec<u8> {
    format!(r#"{{"url": "{url}", "max_size": 1000000, "timeout_secs": 30}}"#).into_bytes()
}

fn stderr_last(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .last()
        .unwrap_or("")
        .to_string()
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"))
}

#[test]
fn fetch_writes_the_body_and_reports_progress() {
    let body: Vec<u8> = (0..100_000u32).map(|i| (i % 253) as u8).collect();
    let (url, _) = serve_once(200, body.clone());
    let out = run(&["fetch"], &request(&url));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, body);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("info: download complete: 100000 bytes"),
        "{stderr}"
    );
    // The URL's query (a signed URL's secret) is never echoed.
    let (url, _) = serve_once(200, b"x".to_vec());
    let out = run(&["fetch"], &request(&format!("{url}?sig=SECRET")));
    assert!(!String::from_utf8_lossy(&out.stderr).contains("SECRET"));
}

#[test]
fn fetch_failures_end_with_the_hosts_message() {
    let (url, _) = serve_once(404, Vec::new());
    let out = run(&["fetch"], &request(&url));
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    assert_eq!(
        stderr_last(&out),
        format!("error: Download of {url} failed: HTTP status 404")
    );
    let out = run(&["fetch"], b"{\"url\": 5}");
    assert!(stderr_last(&out).starts_with("error: Invalid helper request"));
}

#[test]
fn started_as_root_the_download_runs_as_the_helper_user() {
    if !is_root() {
        eprintln!("skipped: needs root to drop privileges");
        return;
    }
    let (url, owner) = serve_once(200, b"body".to_vec());
    let out = run(&["fetch", "--user", "nobody"], &request(&url));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, b"body");
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap();
    let (nobody, _) = guestd_update::privileges::lookup(&passwd, "nobody").unwrap();
    assert_eq!(owner.recv().unwrap(), Some(nobody));
    // Root itself is refused as the helper user.
    let out = run(&["fetch", "--user", "root"], &request(&url));
    assert_eq!(
        stderr_last(&out),
        "error: refusing to run the download as 'root' (uid 0)"
    );
}

#[test]
fn unpack_lists_the_regular_files() {
    let tgz = archive::build(&[("pkg/guestd", 0o755, b"BIN"), ("pkg/notes", 0o600, b"n")]);
    let out = run(&["unpack", "--max-unpacked", "1000"], &tgz);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut want = Vec::new();
    let entries = [
        Entry {
            path: "pkg/guestd".into(),
            mode: 0o755,
            contents: b"BIN".to_vec(),
        },
        Entry {
            path: "pkg/notes".into(),
            mode: 0o600,
            contents: b"n".to_vec(),
        },
    ];
    archive::write_entries(&entries, &mut want).unwrap();
    assert_eq!(out.stdout, want);
    let zeros = archive::build(&[("guestd", 0o755, &[0u8; 100_000])]);
    assert!(zeros.len() < 5000);
    let out = run(&["unpack", "--max-unpacked", "5000"], &zeros);
    assert_eq!(
        stderr_last(&out),
        "error: Update archive unpacks to more than 5000 bytes"
    );
    let out = run(&["unpack", "--max-unpacked", "1000"], b"garbage");
    assert!(stderr_last(&out).starts_with("error: Update archive is not a valid .tar.gz"));
}

#[test]
fn usage_errors_exit_2() {
    for args in [&[][..], &["frobnicate"], &["unpack"], &["fetch", "--user"]] {
        assert_eq!(run(args, b"").status.code(), Some(2), "{args:?}");
    }
    let out = run(&["--version"], b"");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("guestd-update {}", env!("CARGO_PKG_VERSION"))
    );
}
