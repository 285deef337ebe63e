//! The corpus of hostile requests in `tests/hostile/*.req`, and the checks every transport's
//! replay applies to each answer.
//!
//! A case file is a header line `#! expect=<what>` and then the request bytes (the file's last
//! newline is not part of them). `@@REPEAT(<count>,<text>)@@` stands for `text` repeated
//! `count` times, so that megabyte-sized requests stay small in git. Expectations:
//! `malformed`, `missing-name` (the spec's decoding errors), `too-large` (over the stream line
//! limit), `error` (any non-success reply), `reply` (any well-formed reply: the point is that
//! the agent survives and stays in step).

use std::path::{Path, PathBuf};

use serde_json::Value;

/// Largest reply any hostile request may cause: an agent must not echo megabytes back.
pub const MAX_REPLY_BYTES: usize = 64 * 1024;

/// What a case must be answered with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    Malformed,
    MissingName,
    TooLarge,
    Error,
    Reply,
}

/// One hostile request.
#[derive(Debug, Clone)]
pub struct Case {
    pub name: String,
    pub expect: Expect,
    pub bytes: Vec<u8>,
}

/// The corpus directory.
pub fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("hostile")
}

/// Every case, sorted by name.
pub fn load() -> Vec<Case> {
    let mut cases: Vec<Case> = std::fs::read_dir(dir())
        .expect("tests/hostile exists")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "req"))
        .map(|p| parse_case(&p))
        .collect();
    cases.sort_by(|a, b| a.name.cmp(&b.name));
    assert!(cases.len() >= 40, "hostile corpus is incomplete");
    cases
}

fn parse_case(path: &Path) -> Case {
    let name = path.file_stem().unwrap().to_string_lossy().into_owned();
    let raw = std::fs::read(path).unwrap();
    let nl = raw.iter().position(|&b| b == b'\n').expect("header line");
    let header = std::str::from_utf8(&raw[..nl]).expect("header is text");
    let expect = match header.strip_prefix("#! expect=") {
        Some("malformed") => Expect::Malformed,
        Some("missing-name") => Expect::MissingName,
        Some("too-large") => Expect::TooLarge,
        Some("error") => Expect::Error,
        Some("reply") => Expect::Reply,
        _ => panic!("{}: bad header {header:?}", path.display()),
    };
    let mut body = &raw[nl + 1..];
    if body.last() == Some(&b'\n') {
        body = &body[..body.len() - 1];
    }
    Case {
        name,
        expect,
        bytes: expand(body),
    }
}

/// Expand `@@REPEAT(count,text)@@`.
fn expand(mut body: &[u8]) -> Vec<u8> {
    const OPEN: &[u8] = b"@@REPEAT(";
    const CLOSE: &[u8] = b")@@";
    let mut out = Vec::with_capacity(body.len());
    while let Some(start) = find(body, OPEN) {
        out.extend_from_slice(&body[..start]);
        let rest = &body[start + OPEN.len()..];
        let end = find(rest, CLOSE).expect("unterminated @@REPEAT");
        let spec = std::str::from_utf8(&rest[..end]).expect("@@REPEAT is text");
        let (count, text) = spec.split_once(',').expect("@@REPEAT(count,text)");
        let count: usize = count.parse().expect("@@REPEAT count");
        for _ in 0..count {
            out.extend_from_slice(text.as_bytes());
        }
        body = &rest[end + CLOSE.len()..];
    }
    out.extend_from_slice(body);
    out
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Check one raw reply (the bytes of one reply line, without its newline) against the case.
/// Returns a description of what is wrong, if anything.
pub fn check_reply(case: &Case, raw: &[u8]) -> Result<Value, String> {
    let name = &case.name;
    if raw.len() > MAX_REPLY_BYTES {
        return Err(format!(
            "{name}: reply of {} bytes (over {MAX_REPLY_BYTES})",
            raw.len()
        ));
    }
    if !raw.is_ascii() {
        return Err(format!("{name}: reply is not ASCII"));
    }
    let text = std::str::from_utf8(raw).unwrap();
    let reply: Value = serde_json::from_str(text)
        .map_err(|e| format!("{name}: reply {text:?} is not JSON: {e}"))?;
    let (Some(code), Some(message)) = (reply["returncode"].as_str(), reply["message"].as_str())
    else {
        return Err(format!(
            "{name}: reply {text} lacks string returncode/message"
        ));
    };
    let success = code == "0" || code == "D0";
    let ok = match case.expect {
        Expect::Malformed => code == "500" && message == "Request is malformed",
        Expect::MissingName => code == "500" && message == "Request is missing 'name' key",
        Expect::TooLarge => code == "500" && message.contains("too large"),
        Expect::Error => !success,
        Expect::Reply => true,
    };
    if ok {
        Ok(reply)
    } else {
        Err(format!("{name}: expected {:?}, got {text}", case.expect))
    }
}

/// Every regular file below `dir` (to prove nothing escaped the sandbox root).
pub fn files_below(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() && !path.is_symlink() {
                stack.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// A line-oriented connection to an agent (unix, TCP, vsock, virtio-serial …).
pub trait LineConn {
    fn send_bytes(&mut self, bytes: &[u8]);
    /// One reply line without its newline.
    fn recv_line(&mut self) -> Vec<u8>;
}

/// Send every case on one connection, each followed by a `version` probe that must come back
/// with its own id (so the conversation is still in step). Returns the failures.
pub fn replay(conn: &mut dyn LineConn, cases: &[Case]) -> Vec<String> {
    let mut failures = Vec::new();
    for case in cases {
        conn.send_bytes(&case.bytes);
        conn.send_bytes(b"\n");
        if let Err(e) = check_reply(case, &conn.recv_line()) {
            failures.push(e);
        }
        conn.send_bytes(br#"{"id":"probe","name":"version","value":"agent"}"#);
        conn.send_bytes(b"\n");
        let probe = conn.recv_line();
        let probe: Value = serde_json::from_slice(&probe).unwrap_or(Value::Null);
        if probe["id"] != "probe" || probe["returncode"] != "0" {
            failures.push(format!(
                "{}: out of step afterwards, probe got {probe}",
                case.name
            ));
        }
    }
    failures
}

/// A line connection over loopback TCP.
#[derive(Debug)]
pub struct TcpLine {
    stream: std::net::TcpStream,
    reader: std::io::BufReader<std::net::TcpStream>,
}

impl TcpLine {
    /// Connect, retrying for up to 20 s while the listener comes up.
    pub fn connect(addr: std::net::SocketAddr) -> Self {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let stream = loop {
            match std::net::TcpStream::connect(addr) {
                Ok(s) => break s,
                Err(e) if std::time::Instant::now() > deadline => panic!("connect {addr}: {e}"),
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(20)),
            }
        };
        stream
            .set_read_timeout(Some(std::time::Duration::from_secs(20)))
            .unwrap();
        let reader = std::io::BufReader::new(stream.try_clone().unwrap());
        Self { stream, reader }
    }
}

impl LineConn for TcpLine {
    fn send_bytes(&mut self, bytes: &[u8]) {
        std::io::Write::write_all(&mut self.stream, bytes).expect("write");
    }

    fn recv_line(&mut self) -> Vec<u8> {
        let mut line = Vec::new();
        std::io::BufRead::read_until(&mut self.reader, b'\n', &mut line).expect("read");
        assert_eq!(line.pop(), Some(b'\n'), "connection closed mid-reply");
        line
    }
}

/// A loopback port that was free a moment ago.
pub fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
