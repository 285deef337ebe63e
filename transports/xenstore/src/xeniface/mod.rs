//! XenStore on Windows through the Xen PV drivers' **xeniface** device: the same request
//! lifecycle as on Linux, over a third [`Store`] implementation, [`XenifaceStore`].
//!
//! The drivers give user mode no XenStore protocol, only IOCTLs on a device interface
//! (`GUID_INTERFACE_XENIFACE`): READ, WRITE, DIRECTORY, REMOVE, ADD_WATCH (an event handle the
//! driver signals on every change), REMOVE_WATCH, and SET_PERMISSIONS (unused here). There is
//! no MKDIR (a missing node is created by writing an empty value) and no transaction; paths
//! are relative to the guest's home or absolute, as on the wire. A watch event carries no
//! path, so the lifecycle learns what changed by listing `data/host` (in creation order,
//! which is arrival order).
//!
//! - [`codec`]: the IOCTL buffers, the grow-and-retry rule, the error mapping (pure, tested
//!   on every platform);
//! - [`IoctlDevice`]: what [`XenifaceStore`] needs from a device — one synchronous IOCTL and
//!   event objects that report their signals;
//! - `windows` (Windows only): the real device, found with SetupAPI and driven with
//!   `DeviceIoControl` on tokio's blocking pool; watch events come from a thread-pool wait on
//!   the event (`RegisterWaitForSingleObject`), so nothing runs while guestd is idle;
//! - [`emulated`]: a device that decodes the very same buffers as the driver does and
//!   forwards them to a xenstored socket through [`crate::XsClient`], the way the driver
//!   forwards them over its ring: the lifecycle tests run over it against `test-xenstored`.
//!
//! Adding an operation: its IOCTL code and buffers in [`codec`], a method here, and its
//! decoding in [`emulated`].

pub mod codec;
pub mod emulated;
#[cfg(windows)]
pub mod windows;

use std::path::Path;
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;
use tracing::debug;

use crate::client::{WatchEvent, WatchStream, XsError};
use crate::store::{Change, Outcomes, Store, removal_outcome};
use crate::wire::errno;
pub use codec::IoctlError;
use codec::{
    IOCTL_STORE_ADD_WATCH, IOCTL_STORE_DIRECTORY, IOCTL_STORE_READ, IOCTL_STORE_REMOVE,
    IOCTL_STORE_REMOVE_WATCH, IOCTL_STORE_WRITE, PTR,
};

/// What happened to an event object a watch signals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// The driver signalled it: something at or below the watched path changed.
    Changed,
    /// The device can no longer signal it (the emulated device lost xenstored); the watch
    /// ends and the lifecycle reconnects. The real driver keeps its own connection to
    /// xenstored, so on Windows a watch ends only with its registration.
    Gone,
}

/// Called, on some other thread, for every signal of an event object.
pub type OnSignal = Box<dyn Fn(Signal) + Send + Sync>;

/// An event object the driver may signal. Dropping it stops the notifications (waiting for
/// one in progress) and closes it.
pub trait DeviceEvent: Send + Sync {
    /// The handle value ADD_WATCH hands to the driver.
    fn handle(&self) -> usize;
}

/// The xeniface device as [`XenifaceStore`] uses it. Every call blocks; the store makes them
/// on tokio's blocking pool.
pub trait IoctlDevice: Send + Sync + Sized + 'static {
    /// The backend's name in logs.
    const NAME: &'static str;

    /// Open the device at `path` (Windows: the interface path SetupAPI found; emulated: a
    /// xenstored socket). Needs a tokio runtime context.
    fn open(path: &Path) -> Result<Self, XsError>;

    /// One `DeviceIoControl`: the number of bytes written to `output`, or the Win32 error
    /// and the byte count reported with it.
    ///
    /// # Safety
    /// As for `DeviceIoControl`: for [`codec::IOCTL_STORE_ADD_WATCH`] the input carries the
    /// address of the path, which must be valid for reads of its stated length for the whole
    /// call (the driver copies it before returning).
    #[allow(unsafe_code)]
    unsafe fn ioctl(&self, code: u32, input: &[u8], output: &mut [u8])
    -> Result<usize, IoctlError>;

    /// A new auto-reset event object; `on_signal` runs after each signal until it is dropped.
    fn create_event(&self, on_signal: OnSignal) -> Result<Box<dyn DeviceEvent>, XsError>;
}

/// A [`Store`] over a xeniface device. Cheap to clone; the device closes with the last clone.
#[derive(Debug)]
pub struct XenifaceStore<D: IoctlDevice> {
    device: Arc<D>,
}

impl<D: IoctlDevice> Clone for XenifaceStore<D> {
    fn clone(&self) -> Self {
        Self {
            device: Arc::clone(&self.device),
        }
    }
}

/// An IOCTL that takes no pointers in its input.
fn plain_ioctl<D: IoctlDevice>(
    device: &D,
    code: u32,
    input: &[u8],
    output: &mut [u8],
) -> Result<usize, IoctlError> {
    #[allow(unsafe_code)]
    // SAFETY: only ADD_WATCH's input carries an address, and it never goes through here.
    unsafe {
        device.ioctl(code, input, output)
    }
}

impl<D: IoctlDevice> XenifaceStore<D> {
    pub fn new(device: D) -> Self {
        Self {
            device: Arc::new(device),
        }
    }

    /// Run blocking device calls off the async threads.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Arc<D>) -> Result<T, XsError> + Send + 'static,
    ) -> Result<T, XsError> {
        let device = Arc::clone(&self.device);
        tokio::task::spawn_blocking(move || f(&device))
            .await
            .map_err(|e| XsError::Io {
                what: "running a xeniface call".into(),
                source: std::io::Error::other(e.to_string()),
            })?
    }

    /// READ or DIRECTORY: output of unknown size.
    async fn fetch(&self, code: u32, path: &str) -> Result<Vec<u8>, XsError> {
        let input = codec::path_input(path)?;
        self.blocking(move |d| {
            codec::call_growing(|i, o| plain_ioctl(&**d, code, i, o), code, &input)
        })
        .await
    }

    /// WRITE or REMOVE: no output.
    async fn command(&self, code: u32, input: Vec<u8>) -> Result<(), XsError> {
        self.blocking(move |d| {
            plain_ioctl(&**d, code, &input, &mut [])
                .map(drop)
                .map_err(|e| codec::xs_error(code, e))
        })
        .await
    }
}

impl<D: IoctlDevice> Store for XenifaceStore<D> {
    const BACKEND: &'static str = D::NAME;
    const ATOMIC: bool = false;

    /// The driver has no transactions: the changes apply in order, one IOCTL each, and a
    /// reader may see a part of them (the metrics publisher writes `data/updated` last, which
    /// is what XAPI waits for). A lost device ends the call like a lost connection.
    async fn transact(&self, changes: &[Change]) -> Result<Outcomes, XsError> {
        let mut outcomes = Vec::with_capacity(changes.len());
        for change in changes {
            let result = match change {
                Change::Write { path, value } => self.write(path, value).await,
                Change::Remove { path } => removal_outcome(self.rm(path).await),
            };
            match result {
                Err(e) if e.is_connection_lost() => return Err(e),
                other => outcomes.push(other),
            }
        }
        Ok(outcomes)
    }

    fn connect(path: &Path) -> Result<Self, XsError> {
        D::open(path).map(Self::new)
    }

    async fn read(&self, path: &str) -> Result<Vec<u8>, XsError> {
        codec::read_output(&self.fetch(IOCTL_STORE_READ, path).await?)
    }

    async fn write(&self, path: &str, value: &[u8]) -> Result<(), XsError> {
        self.command(IOCTL_STORE_WRITE, codec::write_input(path, value)?)
            .await
    }

    /// xeniface has no MKDIR: an existing node is left alone, a missing one is written empty
    /// (which, as MKDIR does, also creates its missing parents).
    async fn mkdir(&self, path: &str) -> Result<(), XsError> {
        match self.read(path).await {
            Ok(_) => Ok(()),
            Err(e) if e.is(errno::ENOENT) => self.write(path, b"").await,
            Err(e) => Err(e),
        }
    }

    async fn rm(&self, path: &str) -> Result<(), XsError> {
        self.command(IOCTL_STORE_REMOVE, codec::path_input(path)?)
            .await
    }

    async fn directory(&self, path: &str) -> Result<Vec<String>, XsError> {
        codec::directory_output(&self.fetch(IOCTL_STORE_DIRECTORY, path).await?)
    }

    /// Every signal becomes an event for `path` itself (the driver does not say what
    /// changed). The first comes from xenstored's initial firing of a new watch.
    async fn watch(&self, path: &str, token: &str) -> Result<WatchStream, XsError> {
        let path_input = codec::path_input(path)?;
        let (tx, rx) = mpsc::unbounded_channel();
        let sender = Mutex::new(Some(tx));
        let event = WatchEvent {
            path: path.to_string(),
            token: token.to_string(),
        };
        let on_signal: OnSignal = Box::new(move |signal| {
            let mut sender = sender.lock().unwrap_or_else(|e| e.into_inner());
            match signal {
                Signal::Changed => {
                    if let Some(tx) = sender.as_ref() {
                        let _ = tx.send(event.clone());
                    }
                }
                // Dropping the sender ends the stream once the queued events are read.
                Signal::Gone => drop(sender.take()),
            }
        });
        let registration = self
            .blocking(move |d| {
                let event = d.create_event(on_signal)?;
                let input = codec::add_watch_input(
                    path_input.as_ptr() as usize,
                    path_input.len() as u32,
                    event.handle(),
                    PTR,
                );
                let mut out = [0u8; PTR];
                #[allow(unsafe_code)]
                // SAFETY: the input points at `path_input`, which lives until this closure
                // returns, after the call.
                let n = unsafe { d.ioctl(IOCTL_STORE_ADD_WATCH, &input, &mut out) }
                    .map_err(|e| codec::xs_error(IOCTL_STORE_ADD_WATCH, e))?;
                let context = codec::parse_context(&out[..n], PTR).ok_or_else(|| {
                    XsError::Protocol(format!("ADD_WATCH answered {n} bytes, not a context"))
                })?;
                Ok(Registration {
                    device: Arc::clone(d),
                    context,
                    event: Some(event),
                })
            })
            .await?;
        Ok(WatchStream::with_guard(rx, registration))
    }
}

/// A watch the driver holds; removed (and its event closed) when its stream is dropped.
struct Registration<D: IoctlDevice> {
    device: Arc<D>,
    context: usize,
    event: Option<Box<dyn DeviceEvent>>,
}

impl<D: IoctlDevice> Registration<D> {
    fn remove(device: &D, context: usize, event: Option<Box<dyn DeviceEvent>>) {
        let input = codec::context_bytes(context, PTR);
        if let Err(e) = plain_ioctl(device, IOCTL_STORE_REMOVE_WATCH, &input, &mut []) {
            // A device that is gone took its watches with it.
            debug!(
                error = %codec::xs_error(IOCTL_STORE_REMOVE_WATCH, e),
                "removing a xeniface watch failed"
            );
        }
        drop(event);
    }
}

impl<D: IoctlDevice> Drop for Registration<D> {
    fn drop(&mut self) {
        let device = Arc::clone(&self.device);
        let (context, event) = (self.context, self.event.take());
        // The IOCTL blocks: off the async threads when there are any.
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn_blocking(move || Self::remove(&device, context, event));
            }
            Err(_) => Self::remove(&device, context, event),
        }
    }
}
