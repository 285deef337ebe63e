//! The Windows port (`\\.\Global\<name>`, vioserial driver).
//!
//! The handle is synchronous, and Windows serialises synchronous I/O on one handle: a read
//! waiting for the host would hold back every write. So one thread owns the handle and works in
//! lock-step with the conversation: it reads a chunk, hands it over, then writes the replies the
//! conversation produces until it asks for more input. Requests are answered in order anyway,
//! so this never delays a reply. With no host the driver returns EOF or an error; the thread then
//! retries once a second (Windows has no port event to wait on; this is the one place guestd
//! wakes up while idle).

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::Path;
use std::pin::Pin;
use std::sync::mpsc as std_mpsc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::mpsc;
use tracing::warn;

const RETRY: Duration = Duration::from_secs(1);

enum ToPort {
    /// Bytes to write.
    Write(Vec<u8>),
    /// The conversation wants more input.
    Read,
}

enum FromPort {
    Data(Vec<u8>),
    Eof,
    Error(io::Error),
}

/// A virtio-serial port on Windows as an async stream.
#[derive(Debug)]
pub struct PortStream {
    to_port: std_mpsc::Sender<ToPort>,
    from_port: mpsc::Receiver<FromPortDebug>,
    pending: Vec<u8>,
    asked: bool,
    bytes_read: u64,
}

/// `FromPort` wrapped so that `PortStream` can derive `Debug`.
struct FromPortDebug(FromPort);

impl std::fmt::Debug for FromPortDebug {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FromPort")
    }
}

impl PortStream {
    #[allow(clippy::disallowed_methods)] // the virtio port's device, not a guest file
    pub fn open(path: &Path, write_timeout: Duration) -> io::Result<Self> {
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        Ok(Self::from_file(file, write_timeout))
    }

    pub fn from_file(file: File, _write_timeout: Duration) -> Self {
        let (to_port, commands) = std_mpsc::channel();
        let (events, from_port) = mpsc::channel(1);
        std::thread::Builder::new()
            .name("guestd-serial".into())
            .spawn(move || port_thread(file, commands, events))
            .expect("spawn the serial port thread");
        Self {
            to_port,
            from_port,
            pending: Vec::new(),
            asked: false,
            bytes_read: 0,
        }
    }

    pub fn bytes_read(&self) -> u64 {
        self.bytes_read
    }

    /// The port thread already paces reconnects; nothing to wait for here.
    pub async fn wait_for_host(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn port_thread(
    mut file: File,
    commands: std_mpsc::Receiver<ToPort>,
    events: mpsc::Sender<FromPortDebug>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    while let Ok(command) = commands.recv() {
        match command {
            ToPort::Write(bytes) => {
                if let Err(e) = file.write_all(&bytes) {
                    warn!(error = %e, bytes = bytes.len(), "reply dropped: write to the port failed");
                }
            }
            ToPort::Read => {
                let event = match file.read(&mut buf) {
                    Ok(0) => {
                        std::thread::sleep(RETRY);
                        FromPort::Eof
                    }
                    Ok(n) => FromPort::Data(buf[..n].to_vec()),
                    Err(e) => {
                        std::thread::sleep(RETRY);
                        FromPort::Error(e)
                    }
                };
                if events.blocking_send(FromPortDebug(event)).is_err() {
                    return;
                }
            }
        }
    }
}

impl AsyncRead for PortStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.pending.is_empty() {
            if !this.asked {
                this.to_port
                    .send(ToPort::Read)
                    .map_err(|_| io::Error::other("serial port thread ended"))?;
                this.asked = true;
            }
            let event = ready!(this.from_port.poll_recv(cx));
            this.asked = false;
            match event.map(|e| e.0) {
                None => return Poll::Ready(Err(io::Error::other("serial port thread ended"))),
                Some(FromPort::Eof) => return Poll::Ready(Ok(())),
                Some(FromPort::Error(e)) => return Poll::Ready(Err(e)),
                Some(FromPort::Data(data)) => this.pending = data,
            }
        }
        let n = this.pending.len().min(buf.remaining());
        buf.put_slice(&this.pending[..n]);
        this.pending.drain(..n);
        this.bytes_read += n as u64;
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for PortStream {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.to_port
            .send(ToPort::Write(data.to_vec()))
            .map_err(|_| io::Error::other("serial port thread ended"))?;
        Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
