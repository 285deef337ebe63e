//! A xeniface device for tests: it checks and decodes each IOCTL buffer exactly as the
//! driver (`ioctl_store.c`) does, forwards the operation to xenstored through an
//! [`XsClient`] (the driver forwards it over its ring), and answers with the driver's output
//! layout, size rule and error codes (xenstored's errno name through the xenbus driver's
//! NTSTATUS to the Win32 error user mode sees). [`XenifaceStore<EmulatedDevice>`] over a
//! `test-xenstored` guest socket therefore runs the Windows backend's own code end to end
//! on any OS; only the driver itself needs a real Xen Windows guest.
//!
//! [`XenifaceStore<EmulatedDevice>`]: super::XenifaceStore

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::runtime::Handle;
use tracing::debug;

use super::codec::{self, IoctlError, PTR, win32};
use super::{DeviceEvent, IoctlDevice, OnSignal, Signal};
use crate::client::{XsClient, XsError};
use crate::wire::MsgType;

/// Event objects by handle value, as the kernel's handle table would hold them.
#[derive(Default)]
struct Events {
    by_handle: Mutex<HashMap<usize, Arc<OnSignal>>>,
}

impl Events {
    fn signal(&self, handle: usize, signal: Signal) {
        let target = lock(&self.by_handle).get(&handle).cloned();
        // A closed handle: nobody waits any more.
        if let Some(on_signal) = target {
            on_signal(signal);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A registered watch: its xenstored token and the task that signals its event.
struct Watch {
    path: String,
    token: String,
    task: tokio::task::AbortHandle,
}

/// The emulated device (see the module docs).
pub struct EmulatedDevice {
    client: XsClient,
    runtime: Handle,
    events: Arc<Events>,
    watches: Mutex<HashMap<usize, Watch>>,
    next_handle: AtomicUsize,
}

impl std::fmt::Debug for EmulatedDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmulatedDevice")
            .field("xenstored", &self.client.endpoint())
            .finish_non_exhaustive()
    }
}

impl Drop for EmulatedDevice {
    fn drop(&mut self) {
        // Closing the device removes its watches, as the driver's cleanup does.
        for (_, watch) in lock(&self.watches).drain() {
            watch.task.abort();
        }
    }
}

/// The driver's `__IsValidStr`: printable characters up to a NUL inside `bytes`.
fn valid_str(bytes: &[u8]) -> Option<&str> {
    let end = bytes.iter().position(|b| *b == 0)?;
    let text = &bytes[..end];
    text.iter()
        .all(|b| (0x20..=0x7e).contains(b))
        .then(|| std::str::from_utf8(text).ok())
        .flatten()
}

fn error(code: u32) -> IoctlError {
    IoctlError::new(code)
}

/// What user mode sees when xenstored refuses an operation or the connection is gone.
fn forwarded(e: XsError) -> IoctlError {
    match e {
        XsError::Errno(name) => error(codec::win32_error(&name)),
        XsError::Wire(_) => error(win32::ERROR_INVALID_PARAMETER),
        XsError::Disconnected | XsError::Io { .. } | XsError::Protocol(_) => {
            error(win32::ERROR_DEVICE_NOT_CONNECTED)
        }
    }
}

/// Copy a variable-size answer as the driver does: a zero-length buffer is a size query
/// (`STATUS_BUFFER_OVERFLOW`), a short one is `STATUS_INVALID_PARAMETER`.
fn answer(data: &[u8], output: &mut [u8]) -> Result<usize, IoctlError> {
    if output.is_empty() {
        return Err(IoctlError {
            code: win32::ERROR_MORE_DATA,
            returned: data.len(),
        });
    }
    if output.len() < data.len() {
        return Err(error(win32::ERROR_INVALID_PARAMETER));
    }
    output[..data.len()].copy_from_slice(data);
    Ok(data.len())
}

/// Input of READ, DIRECTORY, REMOVE (and WRITE's first string).
fn path_of(input: &[u8]) -> Result<&str, IoctlError> {
    if input.is_empty() {
        // STATUS_INVALID_BUFFER_SIZE.
        return Err(error(win32::ERROR_INVALID_USER_BUFFER));
    }
    valid_str(input).ok_or(error(win32::ERROR_INVALID_PARAMETER))
}

impl EmulatedDevice {
    fn block<T>(
        &self,
        op: impl std::future::Future<Output = Result<T, XsError>>,
    ) -> Result<T, IoctlError> {
        self.runtime.block_on(op).map_err(forwarded)
    }

    fn read(&self, input: &[u8], output: &mut [u8]) -> Result<usize, IoctlError> {
        let path = path_of(input)?;
        let value = self.block(self.client.read(path))?;
        // The driver copies strlen(value) + 1 bytes.
        let end = value.iter().position(|b| *b == 0).unwrap_or(value.len());
        let mut data = value[..end].to_vec();
        data.push(0);
        answer(&data, output)
    }

    fn write(&self, input: &[u8], output: &[u8]) -> Result<usize, IoctlError> {
        if !output.is_empty() {
            return Err(error(win32::ERROR_INVALID_USER_BUFFER));
        }
        let path = path_of(input)?;
        let value =
            valid_str(&input[path.len() + 1..]).ok_or(error(win32::ERROR_INVALID_PARAMETER))?;
        self.block(self.client.write(path, value.as_bytes()))?;
        Ok(0)
    }

    fn directory(&self, input: &[u8], output: &mut [u8]) -> Result<usize, IoctlError> {
        let path = path_of(input)?;
        // One XS_DIRECTORY, as the xenbus driver sends it: no DIRECTORY_PART paging, so a
        // list over one message fails (E2BIG, which the driver cannot name).
        let payload = crate::wire::path_payload(path)
            .map_err(XsError::from)
            .map_err(forwarded)?;
        let reply = self.block(self.client.request(MsgType::Directory, 0, payload))?;
        let names: Vec<&[u8]> = crate::wire::split_fields(&reply)
            .into_iter()
            .filter(|n| !n.is_empty())
            .collect();
        let mut data = Vec::new();
        for name in &names {
            data.extend_from_slice(name);
            data.push(0);
        }
        // __MultiSzLen + 1: an empty list is two NULs, otherwise one more NUL.
        data.push(0);
        if names.is_empty() {
            data.push(0);
        }
        answer(&data, output)
    }

    fn remove(&self, input: &[u8], output: &[u8]) -> Result<usize, IoctlError> {
        if !output.is_empty() {
            return Err(error(win32::ERROR_INVALID_USER_BUFFER));
        }
        let path = path_of(input)?;
        self.block(self.client.rm(path))?;
        Ok(0)
    }

    /// # Safety
    /// The input's path address is valid for its stated length (see [`IoctlDevice::ioctl`]).
    #[allow(unsafe_code)]
    unsafe fn add_watch(&self, input: &[u8], output: &mut [u8]) -> Result<usize, IoctlError> {
        let Some((addr, len, handle)) = codec::parse_add_watch_input(input, PTR) else {
            return Err(error(win32::ERROR_INVALID_USER_BUFFER));
        };
        if output.len() != PTR {
            return Err(error(win32::ERROR_INVALID_USER_BUFFER));
        }
        if len == 0 || len as usize > codec::PATH_MAX || addr == 0 {
            return Err(error(win32::ERROR_INVALID_PARAMETER));
        }
        // SAFETY: the caller guarantees `addr` is valid for `len` bytes during this call;
        // the bytes are copied before it returns, as the driver's capture does.
        let captured =
            unsafe { std::slice::from_raw_parts(addr as *const u8, len as usize) }.to_vec();
        // The driver forces the last byte to NUL.
        let end = captured[..len as usize - 1]
            .iter()
            .position(|b| *b == 0)
            .unwrap_or(len as usize - 1);
        let path = String::from_utf8_lossy(&captured[..end]).into_owned();
        if !lock(&self.events.by_handle).contains_key(&handle) {
            // ObReferenceObjectByHandle fails: STATUS_INVALID_HANDLE.
            return Err(error(win32::ERROR_INVALID_HANDLE));
        }
        let context = self.next_handle.fetch_add(1, Ordering::Relaxed);
        let token = format!("xeniface-{context}");
        let mut stream = self.block(self.client.watch(&path, &token))?;
        let events = Arc::clone(&self.events);
        let task = self.runtime.spawn(async move {
            while stream.next().await.is_some() {
                events.signal(handle, Signal::Changed);
            }
            events.signal(handle, Signal::Gone);
        });
        lock(&self.watches).insert(
            context,
            Watch {
                path,
                token,
                task: task.abort_handle(),
            },
        );
        output.copy_from_slice(&codec::context_bytes(context, PTR));
        Ok(PTR)
    }

    fn remove_watch(&self, input: &[u8], output: &[u8]) -> Result<usize, IoctlError> {
        let Some(context) = codec::parse_context(input, PTR) else {
            return Err(error(win32::ERROR_INVALID_USER_BUFFER));
        };
        if !output.is_empty() {
            return Err(error(win32::ERROR_INVALID_USER_BUFFER));
        }
        let watch = lock(&self.watches)
            .remove(&context)
            .ok_or(error(win32::ERROR_INVALID_PARAMETER))?;
        watch.task.abort();
        // Not waited for: the driver drops its watch at once, and a runtime shutting down
        // (which waits for this thread) would never answer.
        let client = self.client.clone();
        self.runtime.spawn(async move {
            if let Err(e) = client.unwatch(&watch.path, &watch.token).await {
                debug!(error = %e, path = %watch.path, "unwatch after REMOVE_WATCH failed");
            }
        });
        Ok(0)
    }
}

impl IoctlDevice for EmulatedDevice {
    const NAME: &'static str = "xeniface (emulated)";

    fn open(path: &Path) -> Result<Self, XsError> {
        let runtime = Handle::try_current().map_err(|e| XsError::Io {
            what: "opening the emulated xeniface device".into(),
            source: std::io::Error::other(e.to_string()),
        })?;
        Ok(Self {
            client: XsClient::open(path)?,
            runtime,
            events: Arc::default(),
            watches: Mutex::default(),
            next_handle: AtomicUsize::new(0x100),
        })
    }

    #[allow(unsafe_code)]
    unsafe fn ioctl(
        &self,
        code: u32,
        input: &[u8],
        output: &mut [u8],
    ) -> Result<usize, IoctlError> {
        match code {
            codec::IOCTL_STORE_READ => self.read(input, output),
            codec::IOCTL_STORE_WRITE => self.write(input, output),
            codec::IOCTL_STORE_DIRECTORY => self.directory(input, output),
            codec::IOCTL_STORE_REMOVE => self.remove(input, output),
            // SAFETY: passed on from this function's own contract.
            codec::IOCTL_STORE_ADD_WATCH => unsafe { self.add_watch(input, output) },
            codec::IOCTL_STORE_REMOVE_WATCH => self.remove_watch(input, output),
            // STATUS_INVALID_DEVICE_REQUEST.
            _ => Err(error(win32::ERROR_INVALID_FUNCTION)),
        }
    }

    fn create_event(&self, on_signal: OnSignal) -> Result<Box<dyn DeviceEvent>, XsError> {
        let handle = self.next_handle.fetch_add(1, Ordering::Relaxed);
        lock(&self.events.by_handle).insert(handle, Arc::new(on_signal));
        Ok(Box::new(EmulatedEvent {
            handle,
            events: Arc::clone(&self.events),
        }))
    }
}

/// An event handle of the emulated device; closing it stops its signals.
struct EmulatedEvent {
    handle: usize,
    events: Arc<Events>,
}

impl DeviceEvent for EmulatedEvent {
    fn handle(&self) -> usize {
        self.handle
    }
}

impl Drop for EmulatedEvent {
    fn drop(&mut self) {
        lock(&self.events.by_handle).remove(&self.handle);
    }
}
