//! The benchmark's load generator: round trips over a unix socket with as little client-side
//! cost as possible, so that the figures are the agents' and not the client's.
//!
//! Built by `bench/run` with plain `rustc` (std only, no crates):
//!
//!     loadgen seq  SOCK guestd|qemu-ga N   N sequential round trips
//!     loadgen pipe SOCK guestd|qemu-ga N   N requests written by one thread while another reads
//!
//!     loadgen serve SOCK                   the floor: the least a server can do per request
//!
//! Prints one JSON object: `{"n", "p50_us", "p99_us", "max_us", "rps"}` (latencies only for
//! `seq`). Each reply must carry its request's id and a success marker, else exit status 1.
//!
//! `serve` answers guestd's `version` lines on SOCK with a thread per connection blocked in
//! `read`: two system calls per request and no event loop, a line scan for the id and nothing
//! else. What `seq` measures against it is the client's and the kernel's share of a round trip
//! on this machine, which no agent can go below.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::time::{Duration, Instant};

struct Dialect {
    success: &'static str,
    request: fn(u64) -> String,
}

const GUESTD: Dialect = Dialect {
    success: "\"returncode\":\"0\"",
    request: |i| format!("{{\"id\":{i},\"name\":\"version\",\"value\":\"agent\"}}\n"),
};

const QEMU_GA: Dialect = Dialect {
    success: "\"return\"",
    request: |i| format!("{{\"execute\":\"guest-ping\",\"id\":{i}}}\n"),
};

fn fail(msg: String) -> ! {
    eprintln!("loadgen: {msg}");
    std::process::exit(1);
}

/// Check that `line` answers request `i`.
fn check(dialect: &Dialect, line: &[u8], i: u64) {
    let text = std::str::from_utf8(line).unwrap_or_else(|_| fail("reply is not UTF-8".into()));
    let text = text.trim_start_matches('\u{ff}');
    // Both agents write the id as a bare number: `"id":7` (guestd) or `"id": 7` (qemu-ga).
    let id_ok = text.split("\"id\":").nth(1).is_some_and(|rest| {
        let digits: String = rest
            .trim_start()
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        digits.parse() == Ok(i)
    });
    if !id_ok || !text.contains(dialect.success) {
        fail(format!("unexpected reply to request {i}: {text}"));
    }
}

fn read_reply(reader: &mut BufReader<UnixStream>, line: &mut Vec<u8>) {
    line.clear();
    match reader.read_until(b'\n', line) {
        Ok(0) => fail("the agent closed the connection".into()),
        Ok(_) => {}
        Err(e) => fail(format!("read: {e}")),
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted[rank.min(sorted.len()) - 1]
}

/// The floor server: answer each line with a success reply carrying its id.
fn serve(sock: &str) -> ! {
    let _ = std::fs::remove_file(sock);
    let listener = UnixListener::bind(sock).unwrap_or_else(|e| fail(format!("bind {sock}: {e}")));
    for conn in listener.incoming() {
        let Ok(conn) = conn else { continue };
        std::thread::spawn(move || {
            let Ok(mut writer) = conn.try_clone() else {
                return;
            };
            let mut reader = BufReader::new(conn);
            let mut line = Vec::with_capacity(256);
            let mut reply = Vec::with_capacity(256);
            while matches!(reader.read_until(b'\n', &mut line), Ok(n) if n > 0) {
                let text = String::from_utf8_lossy(&line);
                let id: String = text
                    .split("\"id\":")
                    .nth(1)
                    .unwrap_or("0")
                    .chars()
                    .take_while(char::is_ascii_digit)
                    .collect();
                reply.clear();
                let _ = writeln!(reply, "{{\"returncode\":\"0\",\"message\":\"\",\"id\":{id}}}");
                if writer.write_all(&reply).is_err() {
                    return;
                }
                line.clear();
            }
        });
    }
    std::process::exit(0)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let [_, mode, sock] = args.as_slice() {
        if mode == "serve" {
            serve(sock);
        }
    }
    let [_, mode, sock, kind, n] = args.as_slice() else {
        fail("usage: loadgen seq|pipe SOCK guestd|qemu-ga N".into());
    };
    let dialect = match kind.as_str() {
        "guestd" => &GUESTD,
        "qemu-ga" => &QEMU_GA,
        other => fail(format!("unknown agent kind '{other}'")),
    };
    let n: u64 = n.parse().unwrap_or_else(|_| fail("N must be a number".into()));
    let stream = UnixStream::connect(sock).unwrap_or_else(|e| fail(format!("connect {sock}: {e}")));
    stream.set_read_timeout(Some(Duration::from_secs(30))).ok();
    let mut writer = stream.try_clone().unwrap_or_else(|e| fail(format!("clone: {e}")));
    let mut reader = BufReader::with_capacity(1 << 16, stream);
    let mut line = Vec::with_capacity(256);

    match mode.as_str() {
        "seq" => {
            let requests: Vec<String> = (0..n).map(dialect.request).collect();
            let mut lat = Vec::with_capacity(n as usize);
            let start = Instant::now();
            for (i, req) in requests.iter().enumerate() {
                let t0 = Instant::now();
                writer
                    .write_all(req.as_bytes())
                    .unwrap_or_else(|e| fail(format!("write: {e}")));
                read_reply(&mut reader, &mut line);
                lat.push(t0.elapsed().as_secs_f64() * 1e6);
                check(dialect, &line, i as u64);
            }
            let wall = start.elapsed().as_secs_f64();
            lat.sort_by(|a, b| a.total_cmp(b));
            println!(
                "{{\"n\":{n},\"p50_us\":{:.1},\"p99_us\":{:.1},\"max_us\":{:.1},\"rps\":{:.0}}}",
                percentile(&lat, 50.0),
                percentile(&lat, 99.0),
                lat.last().copied().unwrap_or(0.0),
                n as f64 / wall
            );
        }
        "pipe" => {
            let payload: Vec<u8> = (0..n).flat_map(|i| (dialect.request)(i).into_bytes()).collect();
            let start = Instant::now();
            let sender = std::thread::spawn(move || writer.write_all(&payload));
            for i in 0..n {
                read_reply(&mut reader, &mut line);
                check(dialect, &line, i);
            }
            if let Ok(Err(e)) = sender.join() {
                fail(format!("write: {e}"));
            }
            let wall = start.elapsed().as_secs_f64();
            println!("{{\"n\":{n},\"rps\":{:.0}}}", n as f64 / wall);
        }
        other => fail(format!("unknown mode '{other}'")),
    }
}
