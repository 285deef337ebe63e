//! Operating systems without a virtio-serial implementation yet (FreeBSD has
//! `/dev/vtcon/<name>`; it needs a kqueue-based `PortStream`). Opening fails with a clear error.

use std::io;
use std::path::Path;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Never constructed: [`PortStream::open`] always fails here.
#[derive(Debug)]
pub struct PortStream(());

fn unsupported() -> io::Error {
    io::Error::new(
        io::ErrorKind::Unsupported,
        "virtio-serial is not supported on this operating system yet",
    )
}

impl PortStream {
    pub fn open(_path: &Path, _write_timeout: Duration) -> io::Result<Self> {
        Err(unsupported())
    }

    pub fn bytes_read(&self) -> u64 {
        0
    }

    pub async fn wait_for_host(&mut self) -> io::Result<()> {
        Err(unsupported())
    }
}

impl AsyncRead for PortStream {
    fn poll_read(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        _buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Poll::Ready(Err(unsupported()))
    }
}

impl AsyncWrite for PortStream {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        _data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Poll::Ready(Err(unsupported()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
