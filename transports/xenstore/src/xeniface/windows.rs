//! The real xeniface device: found through SetupAPI by its interface GUID, opened with
//! `CreateFileW`, driven with synchronous `DeviceIoControl` (the store calls it on tokio's
//! blocking pool). A watch's event is waited on by the system thread pool
//! (`RegisterWaitForSingleObject`), which calls back on each signal: no thread of guestd runs
//! and no system call is made while nothing changes.

use std::ffi::c_void;
use std::os::windows::ffi::{OsStrExt, OsStringExt};
use std::os::windows::io::{AsRawHandle, FromRawHandle, OwnedHandle};
use std::path::{Path, PathBuf};
use std::ptr::{null, null_mut};

use windows_sys::Win32::Devices::DeviceAndDriverInstallation::{
    DIGCF_DEVICEINTERFACE, DIGCF_PRESENT, HDEVINFO, SP_DEVICE_INTERFACE_DATA,
    SP_DEVICE_INTERFACE_DETAIL_DATA_W, SetupDiDestroyDeviceInfoList, SetupDiEnumDeviceInterfaces,
    SetupDiGetClassDevsW, SetupDiGetDeviceInterfaceDetailW,
};
use windows_sys::Win32::Foundation::{
    ERROR_NO_MORE_ITEMS, GENERIC_READ, GENERIC_WRITE, GetLastError, HANDLE, INVALID_HANDLE_VALUE,
};
use windows_sys::Win32::Storage::FileSystem::{
    CreateFileW, FILE_SHARE_READ, FILE_SHARE_WRITE, OPEN_EXISTING,
};
use windows_sys::Win32::System::IO::DeviceIoControl;
use windows_sys::Win32::System::Threading::{
    CreateEventW, INFINITE, RegisterWaitForSingleObject, UnregisterWaitEx, WT_EXECUTEDEFAULT,
};
use windows_sys::core::GUID;

use super::codec::IoctlError;
use super::{DeviceEvent, IoctlDevice, OnSignal, Signal};
use crate::client::XsError;

/// `GUID_INTERFACE_XENIFACE` of `xeniface_ioctls.h`.
pub const GUID_INTERFACE_XENIFACE: GUID = GUID::from_u128(0xb2cfb085_aa5e_47e1_8bf7_9793f3154565);

/// The device set of one SetupAPI query, destroyed on drop.
struct DeviceSet(HDEVINFO);

impl Drop for DeviceSet {
    fn drop(&mut self) {
        #[allow(unsafe_code)]
        // SAFETY: a valid set from SetupDiGetClassDevsW, destroyed once.
        unsafe {
            SetupDiDestroyDeviceInfoList(self.0)
        };
    }
}

/// The path of the first present xeniface interface, `None` when the drivers are absent.
#[allow(unsafe_code)]
pub fn find_interface() -> std::io::Result<Option<PathBuf>> {
    // SAFETY: a valid GUID pointer; null enumerator and window are allowed.
    let raw = unsafe {
        SetupDiGetClassDevsW(
            &GUID_INTERFACE_XENIFACE,
            null(),
            null_mut(),
            DIGCF_PRESENT | DIGCF_DEVICEINTERFACE,
        )
    };
    if raw == INVALID_HANDLE_VALUE as HDEVINFO {
        return Err(std::io::Error::last_os_error());
    }
    let set = DeviceSet(raw);
    let mut interface = SP_DEVICE_INTERFACE_DATA {
        cbSize: size_of::<SP_DEVICE_INTERFACE_DATA>() as u32,
        ..Default::default()
    };
    // SAFETY: valid set, GUID and output struct with its size set.
    let found = unsafe {
        SetupDiEnumDeviceInterfaces(set.0, null(), &GUID_INTERFACE_XENIFACE, 0, &mut interface)
    };
    if found == 0 {
        // SAFETY: no preconditions.
        return match unsafe { GetLastError() } {
            ERROR_NO_MORE_ITEMS => Ok(None),
            code => Err(std::io::Error::from_raw_os_error(code as i32)),
        };
    }
    let mut needed = 0u32;
    // SAFETY: a size query (null buffer of size 0); fails with ERROR_INSUFFICIENT_BUFFER.
    unsafe {
        SetupDiGetDeviceInterfaceDetailW(set.0, &interface, null_mut(), 0, &mut needed, null_mut())
    };
    if (needed as usize) < size_of::<SP_DEVICE_INTERFACE_DETAIL_DATA_W>() {
        return Err(std::io::Error::last_os_error());
    }
    // u64 storage keeps the struct aligned.
    let mut storage = vec![0u64; (needed as usize).div_ceil(8)];
    let detail = storage
        .as_mut_ptr()
        .cast::<SP_DEVICE_INTERFACE_DETAIL_DATA_W>();
    // SAFETY: `storage` holds at least `needed` bytes, aligned for the struct.
    unsafe { (*detail).cbSize = size_of::<SP_DEVICE_INTERFACE_DETAIL_DATA_W>() as u32 };
    // SAFETY: `detail` points at `needed` writable bytes.
    let ok = unsafe {
        SetupDiGetDeviceInterfaceDetailW(set.0, &interface, detail, needed, null_mut(), null_mut())
    };
    if ok == 0 {
        return Err(std::io::Error::last_os_error());
    }
    let offset = std::mem::offset_of!(SP_DEVICE_INTERFACE_DETAIL_DATA_W, DevicePath);
    let chars = (needed as usize - offset) / 2;
    // SAFETY: DevicePath is a NUL-terminated UTF-16 string inside the `needed` bytes.
    let wide = unsafe {
        std::slice::from_raw_parts(
            storage.as_ptr().cast::<u8>().add(offset).cast::<u16>(),
            chars,
        )
    };
    let end = wide.iter().position(|c| *c == 0).unwrap_or(wide.len());
    Ok(Some(PathBuf::from(std::ffi::OsString::from_wide(
        &wide[..end],
    ))))
}

#[allow(unsafe_code)]
fn open_path(path: &Path) -> Result<OwnedHandle, XsError> {
    let wide: Vec<u16> = path.as_os_str().encode_wide().chain([0]).collect();
    // SAFETY: a NUL-terminated path; null security attributes and template are allowed.
    let raw = unsafe {
        CreateFileW(
            wide.as_ptr(),
            GENERIC_READ | GENERIC_WRITE,
            FILE_SHARE_READ | FILE_SHARE_WRITE,
            null(),
            OPEN_EXISTING,
            0,
            null_mut(),
        )
    };
    if raw == INVALID_HANDLE_VALUE {
        return Err(XsError::Io {
            what: format!("opening the xeniface device {}", path.display()),
            source: std::io::Error::last_os_error(),
        });
    }
    // SAFETY: a handle CreateFileW just returned, owned from here on.
    Ok(unsafe { OwnedHandle::from_raw_handle(raw) })
}

/// An open xeniface device.
#[derive(Debug)]
pub struct WindowsDevice {
    handle: OwnedHandle,
}

fn last_error() -> u32 {
    #[allow(unsafe_code)]
    // SAFETY: no preconditions.
    unsafe {
        GetLastError()
    }
}

impl IoctlDevice for WindowsDevice {
    const NAME: &'static str = "xeniface";

    /// Open `path`; if it is gone (the drivers were reinstalled, which can change the
    /// interface path), open the interface present now.
    fn open(path: &Path) -> Result<Self, XsError> {
        let failed = match open_path(path) {
            Ok(handle) => return Ok(Self { handle }),
            Err(e) => e,
        };
        match find_interface() {
            Ok(Some(found)) if found != path => {
                tracing::info!(old = %path.display(), new = %found.display(), "xeniface moved");
                open_path(&found).map(|handle| Self { handle })
            }
            _ => Err(failed),
        }
    }

    #[allow(unsafe_code)]
    unsafe fn ioctl(
        &self,
        code: u32,
        input: &[u8],
        output: &mut [u8],
    ) -> Result<usize, IoctlError> {
        let mut returned = 0u32;
        let out_ptr = if output.is_empty() {
            null_mut()
        } else {
            output.as_mut_ptr().cast::<c_void>()
        };
        // SAFETY: buffers valid for their lengths; the caller keeps any address inside
        // `input` valid (this function's contract); synchronous handle, no OVERLAPPED.
        let ok = unsafe {
            DeviceIoControl(
                self.handle.as_raw_handle(),
                code,
                input.as_ptr().cast::<c_void>(),
                input.len() as u32,
                out_ptr,
                output.len() as u32,
                &mut returned,
                null_mut(),
            )
        };
        if ok != 0 {
            Ok(returned as usize)
        } else {
            // For ERROR_MORE_DATA, `returned` is the size the driver asked for.
            Err(IoctlError {
                code: last_error(),
                returned: returned as usize,
            })
        }
    }

    fn create_event(&self, on_signal: OnSignal) -> Result<Box<dyn DeviceEvent>, XsError> {
        watch_event(on_signal)
    }
}

/// An auto-reset event whose signals the thread pool reports to `on_signal`.
#[allow(unsafe_code)]
fn watch_event(on_signal: OnSignal) -> Result<Box<dyn DeviceEvent>, XsError> {
    let failed = |what: &str| XsError::Io {
        what: what.into(),
        source: std::io::Error::last_os_error(),
    };
    // SAFETY: auto-reset, initially unsignalled, unnamed; no other preconditions.
    let event = unsafe { CreateEventW(null(), 0, 0, null()) };
    if event.is_null() {
        return Err(failed("creating a watch event"));
    }
    // SAFETY: a handle CreateEventW just returned, owned from here on.
    let event = unsafe { OwnedHandle::from_raw_handle(event) };
    let context = Box::into_raw(Box::new(on_signal));
    let mut wait: HANDLE = null_mut();
    // SAFETY: a valid event; `context` stays alive until the wait is unregistered (Drop).
    let ok = unsafe {
        RegisterWaitForSingleObject(
            &mut wait,
            event.as_raw_handle(),
            Some(signalled),
            context.cast::<c_void>(),
            INFINITE,
            WT_EXECUTEDEFAULT,
        )
    };
    if ok == 0 {
        let error = failed("waiting for a watch event");
        // SAFETY: never registered, so nothing else holds it.
        drop(unsafe { Box::from_raw(context) });
        return Err(error);
    }
    Ok(Box::new(WatchEvent {
        event,
        wait,
        context,
    }))
}

/// Runs on a thread-pool thread each time the event is signalled.
#[allow(unsafe_code)]
unsafe extern "system" fn signalled(context: *mut c_void, _timed_out: bool) {
    // SAFETY: `context` is the OnSignal boxed in create_event, alive until the wait is gone.
    let on_signal = unsafe { &*context.cast::<OnSignal>() };
    on_signal(Signal::Changed);
}

/// An event with its thread-pool wait.
struct WatchEvent {
    event: OwnedHandle,
    wait: HANDLE,
    context: *mut OnSignal,
}

#[allow(unsafe_code)]
// SAFETY: the wait handle and the boxed callback (itself Send + Sync) may be used and freed
// from any thread.
unsafe impl Send for WatchEvent {}
#[allow(unsafe_code)]
// SAFETY: as above; shared access only reads the handle value.
unsafe impl Sync for WatchEvent {}

impl DeviceEvent for WatchEvent {
    fn handle(&self) -> usize {
        self.event.as_raw_handle() as usize
    }
}

impl Drop for WatchEvent {
    #[allow(unsafe_code)]
    fn drop(&mut self) {
        // SAFETY: the registered wait; INVALID_HANDLE_VALUE waits for a running callback to
        // return, after which nothing uses `context` and it can be freed. The event handle
        // closes afterwards, with its field.
        unsafe {
            UnregisterWaitEx(self.wait, INVALID_HANDLE_VALUE);
            drop(Box::from_raw(self.context));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::{Duration, Instant};
    use windows_sys::Win32::System::Threading::SetEvent;

    #[test]
    fn no_drivers_no_interface() {
        // Wine and any Windows without the Xen PV drivers.
        assert_eq!(find_interface().unwrap(), None);
        let err = WindowsDevice::open(Path::new(r"\\?\no-such-xeniface")).unwrap_err();
        assert!(
            err.to_string()
                .starts_with(r"opening the xeniface device \\?\no-such-xeniface: "),
            "{err}"
        );
    }

    /// DeviceIoControl's failure reaches the codec with its Win32 code: a device that is not
    /// xeniface (the NUL device) does not know the IOCTL.
    #[test]
    fn ioctl_failures_carry_the_win32_error() {
        let device = WindowsDevice {
            handle: open_path(Path::new(r"\\.\NUL")).unwrap(),
        };
        let mut out = [0u8; 16];
        #[allow(unsafe_code)]
        // SAFETY: no address in the input.
        let err =
            unsafe { device.ioctl(crate::xeniface::codec::IOCTL_STORE_READ, b"x\0", &mut out) }
                .unwrap_err();
        assert_ne!(err.code, 0);
    }

    fn wait_for(count: &AtomicUsize, n: usize) {
        let start = Instant::now();
        while count.load(Ordering::SeqCst) < n {
            assert!(start.elapsed() < Duration::from_secs(10), "{n} signals");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    #[allow(unsafe_code)]
    fn each_signal_reaches_the_callback_until_the_event_goes() {
        let count = Arc::new(AtomicUsize::new(0));
        let seen = Arc::clone(&count);
        let event = watch_event(Box::new(move |signal| {
            assert_eq!(signal, Signal::Changed);
            seen.fetch_add(1, Ordering::SeqCst);
        }))
        .unwrap();
        let handle = event.handle() as HANDLE;
        for n in 1..=3 {
            // SAFETY: the event is open while `event` lives.
            assert_ne!(unsafe { SetEvent(handle) }, 0);
            wait_for(&count, n);
        }
        drop(event);
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(count.load(Ordering::SeqCst), 3, "nothing after the drop");
    }
}
