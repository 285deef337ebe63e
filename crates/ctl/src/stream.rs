//! A client for the stream transports (newline-delimited JSON with ids).

use std::io::{BufRead, BufReader, Read, Write};
use std::time::{Duration, Instant};

use guestd_core::framing::RESYNC;
use guestd_core::{Reply, Request};
use serde_json::Value;

use crate::{Client, ClientError, new_id};

/// Something that can carry the conversation: a unix or TCP stream, a serial chardev socket.
pub trait Duplex: Read + Write + Send {
    /// Bound the next blocking read.
    fn set_read_timeout(&self, timeout: Option<Duration>) -> std::io::Result<()>;
}

#[cfg(unix)]
impl Duplex for std::os::unix::net::UnixStream {
    fn set_read_timeout(&self, timeout: Option<Duration>) -> std::io::Result<()> {
        std::os::unix::net::UnixStream::set_read_timeout(self, timeout)
    }
}

impl Duplex for std::net::TcpStream {
    fn set_read_timeout(&self, timeout: Option<Duration>) -> std::io::Result<()> {
        std::net::TcpStream::set_read_timeout(self, timeout)
    }
}

#[cfg(target_os = "linux")]
impl Duplex for vsock::VsockStream {
    fn set_read_timeout(&self, timeout: Option<Duration>) -> std::io::Result<()> {
        vsock::VsockStream::set_read_timeout(self, timeout)
    }
}

/// One conversation over a stream.
pub struct StreamClient {
    reader: BufReader<Box<dyn Duplex>>,
}

impl std::fmt::Debug for StreamClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamClient").finish_non_exhaustive()
    }
}

impl StreamClient {
    /// `unix:PATH`, or `serial:PATH` (QEMU's chardev socket for a virtio-serial port: the
    /// same stream, with stale replies from an earlier host connection to skip).
    #[cfg(unix)]
    pub fn connect_unix(
        kind: &str,
        path: &std::path::Path,
        timeout: Duration,
    ) -> Result<Self, ClientError> {
        let stream = std::os::unix::net::UnixStream::connect(path).map_err(|source| {
            ClientError::Connect {
                spec: format!("{kind}:{}", path.display()),
                source,
            }
        })?;
        Self::new(Box::new(stream), timeout)
    }

    /// `tcp:HOST:PORT` without TLS (guestd allows that on loopback only).
    pub fn connect_tcp(target: &str, timeout: Duration) -> Result<Self, ClientError> {
        let stream = connect_tcp_stream(target, timeout)?;
        Self::new(Box::new(stream), timeout)
    }

    #[cfg(target_os = "linux")]
    pub fn connect_vsock(cid: u32, port: u32, timeout: Duration) -> Result<Self, ClientError> {
        let stream = vsock::VsockStream::connect_with_cid_port(cid, port).map_err(|source| {
            ClientError::Connect {
                spec: format!("vsock:{cid}:{port}"),
                source,
            }
        })?;
        Self::new(Box::new(stream), timeout)
    }

    /// Wrap a connected stream and resynchronise it.
    pub fn new(stream: Box<dyn Duplex>, timeout: Duration) -> Result<Self, ClientError> {
        let mut client = Self {
            reader: BufReader::new(stream),
        };
        client.resync(timeout)?;
        Ok(client)
    }

    /// Discard whatever an earlier conversation left: send `0xFF` and a `sync` with a random
    /// token, then skip input up to the `0xFF` that precedes the matching reply.
    pub fn resync(&mut self, timeout: Duration) -> Result<(), ClientError> {
        let token = new_id();
        let mut line = vec![RESYNC];
        line.extend_from_slice(
            Request::new("sync", token.clone())
                .encode_with_id(&token)
                .as_bytes(),
        );
        line.push(b'\n');
        self.reader.get_mut().write_all(&line)?;
        let deadline = Instant::now() + timeout;
        loop {
            let mut skipped = Vec::new();
            self.set_deadline(deadline)?;
            self.reader
                .read_until(RESYNC, &mut skipped)
                .map_err(|e| timeout_or_io(e, timeout))?;
            if skipped.last() != Some(&RESYNC) {
                return Err(ClientError::Protocol(
                    "connection closed during resynchronisation".into(),
                ));
            }
            if let Some((id, _)) = self.read_reply(deadline, timeout)? {
                if id.as_deref() == Some(token.as_str()) {
                    return Ok(());
                }
            }
        }
    }

    fn set_deadline(&mut self, deadline: Instant) -> Result<(), ClientError> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(ClientError::Timeout(Duration::ZERO));
        }
        self.reader.get_ref().set_read_timeout(Some(left))?;
        Ok(())
    }

    /// Read one line and decode it as a reply (`None` for a line that is not one).
    fn read_reply(
        &mut self,
        deadline: Instant,
        timeout: Duration,
    ) -> Result<Option<(Option<String>, Reply)>, ClientError> {
        let mut line = Vec::new();
        self.set_deadline(deadline)?;
        let n = self
            .reader
            .read_until(b'\n', &mut line)
            .map_err(|e| timeout_or_io(e, timeout))?;
        if n == 0 {
            return Err(ClientError::Io(std::io::ErrorKind::UnexpectedEof.into()));
        }
        let text = String::from_utf8_lossy(&line);
        let text = text.trim_start_matches('\u{fffd}');
        Ok(Reply::decode(text).ok().map(|(id, reply)| {
            let id = id.map(|v| match v {
                Value::String(s) => s,
                other => other.to_string(),
            });
            (id, reply)
        }))
    }
}

/// A TCP connection to `HOST:PORT` (every resolved address is tried).
pub(crate) fn connect_tcp_stream(
    target: &str,
    timeout: Duration,
) -> Result<std::net::TcpStream, ClientError> {
    use std::net::ToSocketAddrs;
    let err = |source| ClientError::Connect {
        spec: format!("tcp:{target}"),
        source,
    };
    let mut last = std::io::Error::new(std::io::ErrorKind::NotFound, "no address");
    for addr in target.to_socket_addrs().map_err(err)? {
        match std::net::TcpStream::connect_timeout(&addr, timeout) {
            Ok(stream) => {
                let _ = stream.set_nodelay(true);
                return Ok(stream);
            }
            Err(e) => last = e,
        }
    }
    Err(err(last))
}

impl Client for StreamClient {
    fn call_with_id(
        &mut self,
        request: &Request,
        id: &str,
        timeout: Duration,
    ) -> Result<Reply, ClientError> {
        let mut line = request.encode_with_id(id).into_bytes();
        line.push(b'\n');
        self.reader.get_mut().write_all(&line)?;
        let deadline = Instant::now() + timeout;
        loop {
            match self.read_reply(deadline, timeout)? {
                Some((Some(got), reply)) if got == id => return Ok(reply),
                // The agent could not read our id (e.g. the line was over its limit); after the
                // resync on connect, an id-less reply can only answer our one request.
                Some((None, reply)) => return Ok(reply),
                // A stale reply to an earlier request: not ours.
                _ => continue,
            }
        }
    }
}

fn timeout_or_io(e: std::io::Error, timeout: Duration) -> ClientError {
    match e.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => {
            ClientError::Timeout(timeout)
        }
        _ => ClientError::Io(e),
    }
}
