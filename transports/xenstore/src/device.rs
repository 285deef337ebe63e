//! The xenbus character device (`/dev/xen/xenbus`, legacy `/proc/xen/xenbus`) as an async
//! stream: opened non-blocking and driven by the kernel's poll support through [`AsyncFd`].

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// An open xenbus device.
#[derive(Debug)]
pub struct DeviceStream {
    fd: AsyncFd<File>,
}

impl DeviceStream {
    /// Open read-write and non-blocking. Needs a tokio runtime.
    #[allow(clippy::disallowed_methods)] // the hypervisor's device node, not a guest file
    pub fn open(path: &Path) -> io::Result<Self> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(path)?;
        #[allow(unsafe_code)]
        // SAFETY: the `File` owns its descriptor, which therefore stays open exactly as long
        // as the `AsyncFd` that owns the `File`.
        let fd = unsafe { AsyncFd::register(file) }?;
        Ok(Self { fd })
    }
}

impl AsyncRead for DeviceStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            let mut guard = ready!(self.fd.poll_read_ready(cx))?;
            let unfilled = buf.initialize_unfilled();
            match guard.try_io(|fd| fd.get_ref().read(unfilled)) {
                Ok(Ok(n)) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Ok(Err(e)) => return Poll::Ready(Err(e)),
                Err(_would_block) => continue,
            }
        }
    }
}

impl AsyncWrite for DeviceStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        loop {
            let mut guard = ready!(self.fd.poll_write_ready(cx))?;
            match guard.try_io(|fd| fd.get_ref().write(buf)) {
                Ok(result) => return Poll::Ready(result),
                Err(_would_block) => continue,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{Message, MsgType, path_payload};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A FIFO opened read-write loops writes back to reads: enough to drive the non-blocking
    /// read/write paths the xenbus device uses.
    #[tokio::test]
    async fn device_stream_reads_and_writes_through_poll() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("xenbus");
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        #[allow(unsafe_code)]
        // SAFETY: `c` is a valid NUL-terminated path that outlives the call.
        let rc = unsafe { libc::mkfifo(c.as_ptr(), 0o600) };
        assert_eq!(rc, 0);
        let mut dev = DeviceStream::open(&fifo).unwrap();
        let msg = Message::new(MsgType::Read, 9, 0, path_payload("data/host").unwrap()).unwrap();
        dev.write_all(&msg.encode()).await.unwrap();
        let mut back = vec![0u8; msg.encode().len()];
        dev.read_exact(&mut back).await.unwrap();
        assert_eq!(Message::parse(&back).unwrap().unwrap().0, msg);
    }
}
