//! The second backend: the system libxenstore through bindgen bindings (feature
//! `libxenstore`). Every blocking libxenstore call runs on tokio's blocking pool; watch events
//! come from one thread blocked in `xs_read_watch`, which also notices a lost connection
//! (libxenstore then returns `NULL`).

use std::collections::HashMap;
use std::ffi::{CStr, CString, c_char, c_uint, c_void};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;
use tracing::debug;

use crate::client::{WatchEvent, WatchStream, XsError};
use crate::store::{Change, Outcomes, Store, ends_transaction, removal_outcome};
use crate::wire::{PAYLOAD_MAX, WireError};

#[allow(
    non_camel_case_types,
    non_upper_case_globals,
    non_snake_case,
    dead_code,
    unsafe_code,
    clippy::all
)]
mod ffi {
    include!(concat!(env!("OUT_DIR"), "/xenstore_bindings.rs"));
}

/// The open handle. libxenstore (built with pthreads) is safe to call from several threads.
struct Handle {
    raw: *mut ffi::xs_handle,
    watches: Mutex<HashMap<String, mpsc::UnboundedSender<WatchEvent>>>,
    stopping: AtomicBool,
    closed: AtomicBool,
}

#[allow(unsafe_code)]
// SAFETY: libxenstore serialises access to a handle with its own mutexes (request, reply and
// watch locks), so the pointer may be used from any thread; it is closed exactly once, in Drop.
unsafe impl Send for Handle {}
#[allow(unsafe_code)]
// SAFETY: as above.
unsafe impl Sync for Handle {}

impl Drop for Handle {
    fn drop(&mut self) {
        #[allow(unsafe_code)]
        // SAFETY: `raw` came from xs_open, and this is the last reference: the watch thread
        // (the only caller of xs_read_watch) has returned.
        unsafe {
            ffi::xs_close(self.raw)
        };
    }
}

/// Stops the watch thread when the last [`LibClient`] goes.
struct Owner {
    handle: Arc<Handle>,
    wake_path: CString,
}

impl Drop for Owner {
    fn drop(&mut self) {
        self.handle.stopping.store(true, Ordering::SeqCst);
        if self.handle.closed.load(Ordering::SeqCst) {
            return;
        }
        // A new watch fires at once: that event wakes the thread blocked in xs_read_watch.
        let token = CString::new(WAKE_TOKEN).expect("no NUL");
        #[allow(unsafe_code)]
        // SAFETY: valid handle and NUL-terminated strings that outlive the call.
        unsafe {
            ffi::xs_watch(self.handle.raw, self.wake_path.as_ptr(), token.as_ptr())
        };
    }
}

const WAKE_TOKEN: &str = "guestd-libxs-wake";

/// A connection through libxenstore.
#[derive(Clone)]
pub struct LibClient {
    owner: Arc<Owner>,
}

impl std::fmt::Debug for LibClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LibClient").finish_non_exhaustive()
    }
}

static OPEN_LOCK: Mutex<()> = Mutex::new(());
static WATCH_THREADS: AtomicU64 = AtomicU64::new(0);

fn cstring(text: &str) -> Result<CString, XsError> {
    CString::new(text).map_err(|_| XsError::Wire(WireError::Malformed("NUL in a path".into())))
}

fn last_errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// libxenstore reports xenstored's error names as errno values; turn them back into names.
fn errno_name(code: i32) -> String {
    let name = match code {
        libc::EINVAL => "EINVAL",
        libc::EACCES => "EACCES",
        libc::EEXIST => "EEXIST",
        libc::EISDIR => "EISDIR",
        libc::ENOENT => "ENOENT",
        libc::ENOMEM => "ENOMEM",
        libc::ENOSPC => "ENOSPC",
        libc::EIO => "EIO",
        libc::ENOTEMPTY => "ENOTEMPTY",
        libc::ENOSYS => "ENOSYS",
        libc::EROFS => "EROFS",
        libc::EBUSY => "EBUSY",
        libc::EAGAIN => "EAGAIN",
        libc::EISCONN => "EISCONN",
        libc::E2BIG => "E2BIG",
        libc::EPERM => "EPERM",
        other => return format!("errno {other}"),
    };
    name.to_string()
}

impl Handle {
    /// The error of the call that just failed: a lost connection, or xenstored's answer.
    fn failure(&self) -> XsError {
        let code = last_errno();
        if self.closed.load(Ordering::SeqCst)
            || matches!(
                code,
                libc::EBADF | libc::EPIPE | libc::ECONNRESET | libc::ENOTCONN
            )
        {
            return XsError::Disconnected;
        }
        if code == libc::EINVAL && !self.alive() {
            // libxenstore also says EINVAL when the connection died under a waiting call.
            return XsError::Disconnected;
        }
        XsError::Errno(errno_name(code))
    }

    /// Whether a trivial request still gets an answer (of any kind) from xenstored.
    fn alive(&self) -> bool {
        let path = c"domid";
        let mut len: c_uint = 0;
        #[allow(unsafe_code)]
        // SAFETY: valid handle and path; the result is freed below.
        let value = unsafe { ffi::xs_read(self.raw, ffi::XBT_NULL, path.as_ptr(), &mut len) };
        if !value.is_null() {
            #[allow(unsafe_code)]
            // SAFETY: xs_read returns a malloc'd buffer.
            unsafe {
                libc::free(value)
            };
            return true;
        }
        !matches!(
            last_errno(),
            libc::EBADF | libc::EPIPE | libc::ECONNRESET | libc::ENOTCONN | libc::EINVAL
        )
    }

    fn read(&self, path: &str) -> Result<Vec<u8>, XsError> {
        let c = cstring(path)?;
        let mut len: c_uint = 0;
        #[allow(unsafe_code)]
        // SAFETY: valid handle and NUL-terminated path; `len` is a valid out pointer.
        let value = unsafe { ffi::xs_read(self.raw, ffi::XBT_NULL, c.as_ptr(), &mut len) };
        if value.is_null() {
            return Err(self.failure());
        }
        #[allow(unsafe_code)]
        // SAFETY: xs_read returned a malloc'd buffer of `len` bytes, freed once after the copy.
        let bytes = unsafe {
            let bytes = std::slice::from_raw_parts(value as *const u8, len as usize).to_vec();
            libc::free(value);
            bytes
        };
        Ok(bytes)
    }

    /// Write inside transaction `tx` (`XBT_NULL`: none).
    fn write(&self, tx: ffi::xs_transaction_t, path: &str, value: &[u8]) -> Result<(), XsError> {
        if path.len() + 1 + value.len() > PAYLOAD_MAX {
            return Err(WireError::TooLarge(path.len() + 1 + value.len()).into());
        }
        let c = cstring(path)?;
        #[allow(unsafe_code)]
        // SAFETY: valid handle, path, and a buffer of `value.len()` bytes.
        let ok = unsafe {
            ffi::xs_write(
                self.raw,
                tx,
                c.as_ptr(),
                value.as_ptr() as *const c_void,
                value.len() as c_uint,
            )
        };
        if ok { Ok(()) } else { Err(self.failure()) }
    }

    fn mkdir(&self, path: &str) -> Result<(), XsError> {
        let c = cstring(path)?;
        #[allow(unsafe_code)]
        // SAFETY: valid handle and path.
        let ok = unsafe { ffi::xs_mkdir(self.raw, ffi::XBT_NULL, c.as_ptr()) };
        if ok { Ok(()) } else { Err(self.failure()) }
    }

    /// Remove inside transaction `tx` (`XBT_NULL`: none).
    fn rm(&self, tx: ffi::xs_transaction_t, path: &str) -> Result<(), XsError> {
        let c = cstring(path)?;
        #[allow(unsafe_code)]
        // SAFETY: valid handle and path.
        let ok = unsafe { ffi::xs_rm(self.raw, tx, c.as_ptr()) };
        if ok { Ok(()) } else { Err(self.failure()) }
    }

    fn directory(&self, path: &str) -> Result<Vec<String>, XsError> {
        let c = cstring(path)?;
        let mut num: c_uint = 0;
        #[allow(unsafe_code)]
        // SAFETY: valid handle, path and out pointer.
        let list = unsafe { ffi::xs_directory(self.raw, ffi::XBT_NULL, c.as_ptr(), &mut num) };
        if list.is_null() {
            return Err(self.failure());
        }
        #[allow(unsafe_code)]
        // SAFETY: xs_directory returns one malloc'd block: `num` pointers to NUL-terminated
        // strings stored in the same block; it is freed once after copying.
        let names = unsafe {
            let names = (0..num as usize)
                .map(|i| CStr::from_ptr(*list.add(i)).to_string_lossy().into_owned())
                .collect();
            libc::free(list as *mut c_void);
            names
        };
        Ok(names)
    }

    /// Every change in one transaction (see [`Store::transact`]).
    fn transact(&self, changes: &[Change]) -> Result<Outcomes, XsError> {
        #[allow(unsafe_code)]
        // SAFETY: valid handle.
        let tx = unsafe { ffi::xs_transaction_start(self.raw) };
        if tx == ffi::XBT_NULL {
            return Err(self.failure());
        }
        let end = |commit: bool| {
            #[allow(unsafe_code)]
            // SAFETY: valid handle and a transaction it started; `abort` is the negation.
            let ok = unsafe { ffi::xs_transaction_end(self.raw, tx, !commit) };
            if ok { Ok(()) } else { Err(self.failure()) }
        };
        let mut outcomes = Vec::with_capacity(changes.len());
        for change in changes {
            let result = match change {
                Change::Write { path, value } => self.write(tx, path, value),
                Change::Remove { path } => removal_outcome(self.rm(tx, path)),
            };
            match result {
                Err(e) if ends_transaction(&e) => {
                    let _ = end(false);
                    return Err(e);
                }
                other => outcomes.push(other),
            }
        }
        end(true)?;
        Ok(outcomes)
    }

    fn watch(&self, path: &str, token: &str) -> Result<(), XsError> {
        let (p, t) = (cstring(path)?, cstring(token)?);
        #[allow(unsafe_code)]
        // SAFETY: valid handle and strings.
        let ok = unsafe { ffi::xs_watch(self.raw, p.as_ptr(), t.as_ptr()) };
        if ok { Ok(()) } else { Err(self.failure()) }
    }

    /// Deliver watch events until the connection is lost or the owner asks to stop.
    fn watch_loop(self: Arc<Self>) {
        loop {
            let mut num: c_uint = 0;
            #[allow(unsafe_code)]
            // SAFETY: valid handle; blocks until an event or a lost connection.
            let vec = unsafe { ffi::xs_read_watch(self.raw, &mut num) };
            if vec.is_null() {
                debug!("libxenstore connection ended");
                break;
            }
            #[allow(unsafe_code)]
            // SAFETY: one malloc'd block holding `num` (>= 2: path, token) string pointers.
            let event = unsafe {
                let get = |i: usize| {
                    CStr::from_ptr(*vec.add(i) as *const c_char)
                        .to_string_lossy()
                        .into_owned()
                };
                let event = (num >= 2).then(|| WatchEvent {
                    path: get(0),
                    token: get(1),
                });
                libc::free(vec as *mut c_void);
                event
            };
            if self.stopping.load(Ordering::SeqCst) {
                break;
            }
            let Some(event) = event else { continue };
            let watches = self.watches.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(tx) = watches.get(&event.token) {
                let _ = tx.send(event);
            }
        }
        self.closed.store(true, Ordering::SeqCst);
        // Ends every WatchStream: the lifecycle reconnects.
        self.watches
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }
}

impl LibClient {
    /// Open `path` through libxenstore (which finds it through `XENSTORED_PATH`).
    pub fn open(path: &Path) -> Result<Self, XsError> {
        let io = |source| XsError::Io {
            what: format!("opening xenstore at {} with libxenstore", path.display()),
            source,
        };
        std::fs::metadata(path).map_err(io)?;
        let _guard = OPEN_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        if std::env::var_os("XENSTORED_PATH").as_deref() != Some(path.as_os_str()) {
            #[allow(unsafe_code)]
            // SAFETY: libxenstore only takes its path from XENSTORED_PATH (for sockets and
            // devices alike). It is set under OPEN_LOCK, once per path (every reconnect finds
            // it already set), while guestd starts its transports, before handlers run; the
            // value is the same for the life of the process.
            unsafe {
                std::env::set_var("XENSTORED_PATH", path)
            };
        }
        #[allow(unsafe_code)]
        // SAFETY: plain call; NULL means failure with errno set.
        let raw = unsafe { ffi::xs_open(0) };
        if raw.is_null() {
            return Err(io(std::io::Error::last_os_error()));
        }
        let handle = Arc::new(Handle {
            raw,
            watches: Mutex::new(HashMap::new()),
            stopping: AtomicBool::new(false),
            closed: AtomicBool::new(false),
        });
        let thread_handle = Arc::clone(&handle);
        let n = WATCH_THREADS.fetch_add(1, Ordering::Relaxed);
        std::thread::Builder::new()
            .name(format!("libxs-watch-{n}"))
            .spawn(move || thread_handle.watch_loop())
            .map_err(io)?;
        Ok(Self {
            owner: Arc::new(Owner {
                handle,
                wake_path: CString::new("data").expect("no NUL"),
            }),
        })
    }

    async fn blocking<T: Send + 'static>(
        &self,
        op: impl FnOnce(&Handle) -> Result<T, XsError> + Send + 'static,
    ) -> Result<T, XsError> {
        let owner = Arc::clone(&self.owner);
        tokio::task::spawn_blocking(move || op(&owner.handle))
            .await
            .map_err(|e| XsError::Protocol(format!("libxenstore call failed: {e}")))?
    }
}

impl Store for LibClient {
    const BACKEND: &'static str = "libxenstore";

    fn connect(path: &Path) -> Result<Self, XsError> {
        LibClient::open(path)
    }

    async fn read(&self, path: &str) -> Result<Vec<u8>, XsError> {
        let path = path.to_string();
        self.blocking(move |h| h.read(&path)).await
    }

    async fn write(&self, path: &str, value: &[u8]) -> Result<(), XsError> {
        let (path, value) = (path.to_string(), value.to_vec());
        self.blocking(move |h| h.write(ffi::XBT_NULL, &path, &value))
            .await
    }

    async fn mkdir(&self, path: &str) -> Result<(), XsError> {
        let path = path.to_string();
        self.blocking(move |h| h.mkdir(&path)).await
    }

    async fn rm(&self, path: &str) -> Result<(), XsError> {
        let path = path.to_string();
        self.blocking(move |h| h.rm(ffi::XBT_NULL, &path)).await
    }

    async fn directory(&self, path: &str) -> Result<Vec<String>, XsError> {
        let path = path.to_string();
        self.blocking(move |h| h.directory(&path)).await
    }

    async fn transact(&self, changes: &[Change]) -> Result<Outcomes, XsError> {
        let changes = changes.to_vec();
        self.blocking(move |h| h.transact(&changes)).await
    }

    async fn watch(&self, path: &str, token: &str) -> Result<WatchStream, XsError> {
        let (tx, rx) = mpsc::unbounded_channel();
        {
            let handle = &self.owner.handle;
            if handle.closed.load(Ordering::SeqCst) {
                return Err(XsError::Disconnected);
            }
            handle
                .watches
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(token.to_string(), tx);
        }
        let (p, t) = (path.to_string(), token.to_string());
        match self.blocking(move |h| h.watch(&p, &t)).await {
            Ok(()) => Ok(WatchStream::new(rx)),
            Err(e) => {
                self.owner
                    .handle
                    .watches
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(token);
                Err(e)
            }
        }
    }
}
