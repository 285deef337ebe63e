//! A small HTTP server on 127.0.0.1 for download tests (`agentupdate`): it reads each request's
//! head, answers as told ([`Serve`]) and closes the connection. It runs on its own thread until
//! the test process ends.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::thread;
use std::time::Duration;

/// How the server answers every request.
#[derive(Debug, Clone)]
pub enum Serve {
    /// 200 with a correct `Content-Length`.
    Body(Vec<u8>),
    /// Announces the full length, sends half, closes.
    HalfThenClose(Vec<u8>),
    /// Announces fewer bytes than it sends.
    MoreThanAnnounced(Vec<u8>),
    /// Chunked (no length), body as given.
    Chunked(Vec<u8>),
    /// This status with an empty body.
    Status(u16),
    /// 200 with the body, after a pause.
    Slow(Vec<u8>, Duration),
}

/// Serve `answer` to every connection on a free loopback port; returns the URL of
/// `/update.tar.gz` there (any path gets the same answer).
pub fn serve(answer: Serve) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
    let addr = listener.local_addr().expect("local address");
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            // A client that goes away early is not the server's failure.
            let _ = answer_one(stream, &answer);
        }
    });
    format!("http://{addr}/update.tar.gz")
}

fn answer_one(mut stream: TcpStream, answer: &Serve) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
        line.clear();
    }
    let ok = |stream: &mut TcpStream, announced: usize| {
        write!(
            stream,
            "HTTP/1.1 200 OK\r\nContent-Length: {announced}\r\nConnection: close\r\n\r\n"
        )
    };
    match answer {
        Serve::Body(b) => {
            ok(&mut stream, b.len())?;
            stream.write_all(b)
        }
        Serve::HalfThenClose(b) => {
            ok(&mut stream, b.len())?;
            stream.write_all(&b[..b.len() / 2])
        }
        Serve::MoreThanAnnounced(b) => {
            ok(&mut stream, b.len() / 2)?;
            stream.write_all(b)
        }
        Serve::Chunked(b) => {
            write!(
                stream,
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
            )?;
            for chunk in b.chunks(1000) {
                write!(stream, "{:x}\r\n", chunk.len())?;
                stream.write_all(chunk)?;
                stream.write_all(b"\r\n")?;
            }
            stream.write_all(b"0\r\n\r\n")
        }
        Serve::Slow(b, pause) => {
            thread::sleep(*pause);
            ok(&mut stream, b.len())?;
            stream.write_all(b)
        }
        Serve::Status(code) => write!(
            stream,
            "HTTP/1.1 {code} Nope\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn get(url: &str) -> Vec<u8> {
        let addr = url
            .strip_prefix("http://")
            .and_then(|r| r.split_once('/'))
            .unwrap()
            .0;
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(b"GET /update.tar.gz HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).unwrap();
        out
    }

    #[test]
    fn answers_as_told() {
        let body = get(&serve(Serve::Body(b"hello".to_vec())));
        assert!(body.ends_with(b"Content-Length: 5\r\nConnection: close\r\n\r\nhello"));
        let half = get(&serve(Serve::HalfThenClose(b"abcd".to_vec())));
        assert!(half.ends_with(b"Content-Length: 4\r\nConnection: close\r\n\r\nab"));
        let chunked = get(&serve(Serve::Chunked(vec![b'x'; 1500])));
        let text = String::from_utf8(chunked).unwrap();
        assert!(
            text.contains("\r\n3e8\r\n") && text.contains("\r\n1f4\r\n"),
            "{text}"
        );
        assert!(text.ends_with("0\r\n\r\n"));
        let status = get(&serve(Serve::Status(404)));
        assert!(status.starts_with(b"HTTP/1.1 404 "));
    }
}
