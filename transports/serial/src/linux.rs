//! The Linux port: a non-blocking fd plus a private edge-triggered epoll set.
//!
//! tokio's own registration cannot be used on the port itself: a virtio port whose host is away
//! reports `POLLHUP` permanently, and tokio keeps "closed" readiness forever, which would turn
//! waiting into a busy loop. Instead the port sits in its own epoll set with
//! `EPOLLIN | EPOLLOUT | EPOLLET`, and tokio watches that epoll fd: it becomes readable once per
//! port *event* (data, host connect, host disconnect), never again for a state that lasts. While
//! the host is away nothing happens at all: no wakeups, no timers.

use std::fs::{File, OpenOptions};
use std::future::Future;
use std::io::{self, Read, Write};
use std::mem::MaybeUninit;
use std::os::fd::OwnedFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use rustix::event::epoll;
use rustix::event::{PollFd, PollFlags, Timespec};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;
use tracing::warn;

const ZERO: Timespec = Timespec {
    tv_sec: 0,
    tv_nsec: 0,
};

/// A virtio-serial port (or any pollable fd standing in for one) as a non-blocking stream.
///
/// Writes never block the thread: a reply the host does not accept within the write timeout
/// (host away, or not reading) is dropped and logged, and so are further replies until a write
/// succeeds again (the host can repeat the request id).
#[derive(Debug)]
pub struct PortStream {
    file: File,
    events: AsyncFd<OwnedFd>,
    write_timeout: Duration,
    write_deadline: Option<Pin<Box<Sleep>>>,
    bytes_read: u64,
    dropped_replies: u64,
    /// The host did not take the last reply in time: drop further replies at once (instead of
    /// waiting the timeout for each) until a write succeeds again.
    congested: bool,
}

impl PortStream {
    /// Open a port device read-write and non-blocking.
    #[allow(clippy::disallowed_methods)] // the virtio port's device node, not a guest file
    pub fn open(path: &Path, write_timeout: Duration) -> io::Result<Self> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
            .open(path)?;
        Self::from_file(file, write_timeout)
    }

    /// Use an open fd (a socket standing in for the port in tests).
    pub fn from_file(file: File, write_timeout: Duration) -> io::Result<Self> {
        let flags = rustix::fs::fcntl_getfl(&file)?;
        rustix::fs::fcntl_setfl(&file, flags | rustix::fs::OFlags::NONBLOCK)?;
        let set = epoll::create(epoll::CreateFlags::CLOEXEC)?;
        epoll::add(
            &set,
            &file,
            epoll::EventData::new_u64(0),
            epoll::EventFlags::IN | epoll::EventFlags::OUT | epoll::EventFlags::ET,
        )?;
        // SAFETY: `set` is an epoll fd owned by the AsyncFd for its whole life; nothing else
        // closes or replaces it.
        #[allow(unsafe_code)]
        let events =
            unsafe { AsyncFd::register_with_interest(set, tokio::io::Interest::READABLE)? };
        Ok(Self {
            file,
            events,
            write_timeout,
            write_deadline: None,
            bytes_read: 0,
            dropped_replies: 0,
            congested: false,
        })
    }

    /// Bytes read so far (tells a real disconnect from "host was never there").
    pub fn bytes_read(&self) -> u64 {
        self.bytes_read
    }

    /// Replies (or reply parts) dropped because the host did not take them.
    pub fn dropped_replies(&self) -> u64 {
        self.dropped_replies
    }

    /// Wait for the next port event (after EOF: the host coming back, or new data).
    pub async fn wait_for_host(&mut self) -> io::Result<()> {
        std::future::poll_fn(|cx| self.poll_event(cx)).await
    }

    /// Ready once per port event since the last call; consumes the events.
    fn poll_event(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut guard = ready!(self.events.poll_read_ready(cx))?;
        // Drain the edge-triggered set so it stops being readable, then clear tokio's
        // readiness. An event arriving after the drain re-arms tokio (new tick), so none is lost.
        let mut buf = [MaybeUninit::<epoll::Event>::uninit(); 8];
        loop {
            let (got, _) = epoll::wait(guard.get_inner(), &mut buf, Some(&ZERO))?;
            if got.len() < buf.len() {
                break;
            }
        }
        guard.clear_ready();
        Poll::Ready(Ok(()))
    }

    /// The host side is gone (`POLLHUP` on a virtio port, a closed peer on a socket).
    fn host_away(&self) -> bool {
        let mut fds = [PollFd::new(&self.file, PollFlags::OUT)];
        match rustix::event::poll(&mut fds, Some(&ZERO)) {
            Ok(_) => fds[0].revents().intersects(PollFlags::HUP | PollFlags::ERR),
            Err(_) => false,
        }
    }

    fn drop_reply(&mut self, len: usize, why: &str) -> Poll<io::Result<usize>> {
        self.write_deadline = None;
        self.dropped_replies += 1;
        warn!(
            bytes = len,
            "reply dropped: {why}; the host can repeat the request id"
        );
        Poll::Ready(Ok(len))
    }
}

impl AsyncRead for PortStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            match (&this.file).read(buf.initialize_unfilled()) {
                Ok(n) => {
                    buf.advance(n);
                    this.bytes_read += n as u64;
                    return Poll::Ready(Ok(()));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    ready!(this.poll_event(cx))?;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl AsyncWrite for PortStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        loop {
            match (&this.file).write(data) {
                Ok(n) => {
                    this.write_deadline = None;
                    this.congested = false;
                    return Poll::Ready(Ok(n));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if this.congested {
                        return this.drop_reply(data.len(), "the host is not taking replies");
                    }
                    // Wait (bounded) even when the port says the host is away: the guest kernel
                    // can deliver a reconnected host's first request before it processes the
                    // "host connected" control message, so the port turns writable a moment
                    // later.
                    let limit = this.write_timeout;
                    let deadline = this
                        .write_deadline
                        .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
                    if deadline.as_mut().poll(cx).is_ready() {
                        this.congested = true;
                        let why = if this.host_away() {
                            "the host is not connected"
                        } else {
                            "the host did not accept it in time"
                        };
                        return this.drop_reply(data.len(), why);
                    }
                    ready!(this.poll_event(cx))?;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let why = format!("write failed: {e}");
                    return this.drop_reply(data.len(), &why);
                }
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
