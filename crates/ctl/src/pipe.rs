//! `pipe:\\.\pipe\NAME` (Windows): guestd's local named pipe, for tools on the guest itself.
//!
//! The pipe is opened for overlapped I/O through tokio (a synchronous pipe handle serialises a
//! blocking read and a write on the same handle, and has no read timeout); a small
//! current-thread runtime turns that back into the blocking [`Duplex`] the stream client uses.
//! While guestd is between two instances the pipe answers "busy"; connecting retries for up
//! to the call's timeout then. Before anything is sent, the pipe's owner and server process
//! are checked to be SYSTEM or an administrator (`pipe_owner.rs`).

use std::cell::Cell;
use std::io::{self, Read, Write};
use std::os::windows::io::AsRawHandle;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::windows::named_pipe::{ClientOptions, NamedPipeClient};
use tokio::runtime::Runtime;

use crate::ClientError;
use crate::stream::Duplex;

/// `ERROR_PIPE_BUSY`: every instance is connected to another client right now.
const ERROR_PIPE_BUSY: i32 = 231;
const ERROR_FILE_NOT_FOUND: i32 = 2;
const ERROR_ACCESS_DENIED: i32 = 5;

/// A connected pipe client with blocking reads and writes.
pub(crate) struct PipeStream {
    runtime: Runtime,
    pipe: NamedPipeClient,
    read_timeout: Cell<Option<Duration>>,
}

impl PipeStream {
    /// Connect to `name` (a full `\\.\pipe\NAME`), retrying while it is busy until `timeout`.
    pub(crate) fn connect(name: &str, timeout: Duration) -> Result<Self, ClientError> {
        let err = |source: io::Error| ClientError::Connect {
            spec: format!("pipe:{name}"),
            source: explain(source),
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(err)?;
        let deadline = Instant::now() + timeout;
        let pipe = loop {
            // The client registers with the runtime's reactor: open it inside the runtime.
            let opened = {
                let _inside = runtime.enter();
                ClientOptions::new().open(name)
            };
            match opened {
                Ok(pipe) => break pipe,
                Err(e)
                    if e.raw_os_error() == Some(ERROR_PIPE_BUSY) && Instant::now() < deadline =>
                {
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => return Err(err(e)),
            }
        };
        let server = crate::pipe_owner::identify(pipe.as_raw_handle());
        crate::pipe_owner::judge(name, &server).map_err(ClientError::Untrusted)?;
        Ok(Self {
            runtime,
            pipe,
            read_timeout: Cell::new(None),
        })
    }
}

/// Say what the usual failures mean.
fn explain(e: io::Error) -> io::Error {
    let hint = match e.raw_os_error() {
        Some(ERROR_FILE_NOT_FOUND) => "no such pipe: is guestd running and serving it?",
        Some(ERROR_ACCESS_DENIED) => {
            "access denied: guestd's pipe admits only SYSTEM and Administrators (run elevated)"
        }
        Some(ERROR_PIPE_BUSY) => "the pipe stayed busy for the whole timeout",
        _ => return e,
    };
    io::Error::new(e.kind(), format!("{hint} ({e})"))
}

impl Read for PipeStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let read = self.pipe.read(buf);
        match self.read_timeout.get() {
            None => self.runtime.block_on(read),
            Some(limit) => self
                .runtime
                .block_on(async { tokio::time::timeout(limit, read).await })
                .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))?,
        }
    }
}

impl Write for PipeStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.runtime.block_on(self.pipe.write(buf))
    }

    fn flush(&mut self) -> io::Result<()> {
        self.runtime.block_on(self.pipe.flush())
    }
}

impl Duplex for PipeStream {
    fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.read_timeout.set(timeout);
        Ok(())
    }
}
