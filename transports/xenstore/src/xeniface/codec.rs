//! The buffers of xeniface's XenStore IOCTLs (`xeniface_ioctls.h`), platform-neutral so they
//! are unit tested anywhere: input encoding, output decoding, the grow-and-retry rule for
//! output buffers and the mapping of Windows error codes back to XenStore errno names.
//!
//! What the driver (`ioctl_store.c`) checks, and so what is checked here before a call:
//! - paths and values are NUL-terminated strings of printable ASCII (`isprint`), so a value
//!   with a control byte or a NUL cannot be written (guestd's replies are ASCII JSON);
//! - READ answers `value\0`; DIRECTORY answers `name\0name\0…\0` plus one more NUL;
//! - an output buffer of length 0 is a size query: `STATUS_BUFFER_OVERFLOW`
//!   (`ERROR_MORE_DATA`) with the needed size as the byte count; a non-empty buffer that is
//!   too small is `STATUS_INVALID_PARAMETER`, indistinguishable from a bad path until a size
//!   query tells them apart;
//! - WRITE and REMOVE take no output buffer; ADD_WATCH takes exactly
//!   `{ PCHAR Path; ULONG PathLength; HANDLE Event }` (pointer-sized fields, natural
//!   alignment) and answers exactly `{ PVOID Context }`; REMOVE_WATCH takes `{ PVOID Context }`.
//!
//! Errors: the xenbus driver turns xenstored's errno name into an NTSTATUS (`ERRNO_TO_STATUS`)
//! and Windows turns that into a Win32 error; [`xs_error`] goes back. Names outside the
//! driver's table (`EQUOTA`, `E2BIG`, …) all become `STATUS_UNSUCCESSFUL`, reported here as
//! [`UNNAMED`].

use crate::client::XsError;
use crate::wire::{PAYLOAD_MAX, WireError, errno};

/// `CTL_CODE(FILE_DEVICE_UNKNOWN, function, METHOD_BUFFERED, FILE_ANY_ACCESS)`.
const fn ctl_code(function: u32) -> u32 {
    const FILE_DEVICE_UNKNOWN: u32 = 0x22;
    const METHOD_BUFFERED: u32 = 0;
    const FILE_ANY_ACCESS: u32 = 0;
    (FILE_DEVICE_UNKNOWN << 16) | (FILE_ANY_ACCESS << 14) | (function << 2) | METHOD_BUFFERED
}

pub const IOCTL_STORE_READ: u32 = ctl_code(0x800);
pub const IOCTL_STORE_WRITE: u32 = ctl_code(0x801);
pub const IOCTL_STORE_DIRECTORY: u32 = ctl_code(0x802);
pub const IOCTL_STORE_REMOVE: u32 = ctl_code(0x803);
pub const IOCTL_STORE_ADD_WATCH: u32 = ctl_code(0x805);
pub const IOCTL_STORE_REMOVE_WATCH: u32 = ctl_code(0x806);

/// The IOCTL's name, for logs and errors.
pub fn ioctl_name(code: u32) -> &'static str {
    match code {
        IOCTL_STORE_READ => "IOCTL_XENIFACE_STORE_READ",
        IOCTL_STORE_WRITE => "IOCTL_XENIFACE_STORE_WRITE",
        IOCTL_STORE_DIRECTORY => "IOCTL_XENIFACE_STORE_DIRECTORY",
        IOCTL_STORE_REMOVE => "IOCTL_XENIFACE_STORE_REMOVE",
        IOCTL_STORE_ADD_WATCH => "IOCTL_XENIFACE_STORE_ADD_WATCH",
        IOCTL_STORE_REMOVE_WATCH => "IOCTL_XENIFACE_STORE_REMOVE_WATCH",
        _ => "an unknown xeniface IOCTL",
    }
}

/// `XENSTORE_ABS_PATH_MAX` of the driver: the longest watch path, NUL included.
pub const PATH_MAX: usize = 3072;

/// First output buffer for READ and DIRECTORY: the largest XenStore payload plus the
/// driver's terminating NULs, so a retry is needed only if the driver ever answers more.
pub const FIRST_OUTPUT: usize = PAYLOAD_MAX + 2;

/// How many times a read is retried with a bigger buffer (the value may grow in between).
const GROW_ATTEMPTS: usize = 4;

/// Win32 error codes (`winerror.h`) the driver's NTSTATUS values arrive as.
pub mod win32 {
    pub const ERROR_INVALID_FUNCTION: u32 = 1;
    pub const ERROR_FILE_NOT_FOUND: u32 = 2;
    pub const ERROR_ACCESS_DENIED: u32 = 5;
    pub const ERROR_INVALID_HANDLE: u32 = 6;
    pub const ERROR_NOT_ENOUGH_MEMORY: u32 = 8;
    pub const ERROR_WRITE_PROTECT: u32 = 19;
    pub const ERROR_NOT_READY: u32 = 21;
    pub const ERROR_GEN_FAILURE: u32 = 31;
    pub const ERROR_INVALID_PARAMETER: u32 = 87;
    pub const ERROR_DIR_NOT_EMPTY: u32 = 145;
    pub const ERROR_PIPE_BUSY: u32 = 231;
    pub const ERROR_MORE_DATA: u32 = 234;
    pub const ERROR_NO_SUCH_DEVICE: u32 = 433;
    pub const ERROR_PIPE_CONNECTED: u32 = 535;
    pub const ERROR_OPERATION_ABORTED: u32 = 995;
    pub const ERROR_IO_DEVICE: u32 = 1117;
    pub const ERROR_DEVICE_NOT_CONNECTED: u32 = 1167;
    pub const ERROR_RETRY: u32 = 1237;
    pub const ERROR_NO_SYSTEM_RESOURCES: u32 = 1450;
    pub const ERROR_DEVICE_REMOVED: u32 = 1617;
    pub const ERROR_INVALID_USER_BUFFER: u32 = 1784;
    pub const ERROR_OBJECT_ALREADY_EXISTS: u32 = 5010;
}

/// What [`XsError::Errno`] carries for `STATUS_UNSUCCESSFUL`: xenstored said something the
/// driver has no NTSTATUS for (oxenstored's `EQUOTA`, `E2BIG`, …).
pub const UNNAMED: &str = "EUNNAMED";

/// A failed `DeviceIoControl`: the Win32 error and the byte count it reported (the needed
/// size for `ERROR_MORE_DATA`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IoctlError {
    pub code: u32,
    pub returned: usize,
}

impl IoctlError {
    pub fn new(code: u32) -> Self {
        Self { code, returned: 0 }
    }
}

fn malformed(text: String) -> XsError {
    XsError::Wire(WireError::Malformed(text))
}

/// Refuse what the driver's `__IsValidStr` refuses, with a message saying why.
fn check_printable(what: &str, text: &[u8]) -> Result<(), XsError> {
    match text.iter().position(|b| !(0x20..=0x7e).contains(b)) {
        None => Ok(()),
        Some(at) => Err(malformed(format!(
            "xeniface takes only printable ASCII: the {what} has byte 0x{:02x} at offset {at}",
            text[at]
        ))),
    }
}

fn check_path(path: &str) -> Result<(), XsError> {
    if path.is_empty() {
        return Err(malformed("empty XenStore path".into()));
    }
    if path.len() + 1 > PATH_MAX {
        return Err(malformed(format!(
            "XenStore path of {} bytes is longer than xeniface's {PATH_MAX}",
            path.len()
        )));
    }
    check_printable("path", path.as_bytes())
}

/// `path\0`: the input of READ, DIRECTORY and REMOVE.
pub fn path_input(path: &str) -> Result<Vec<u8>, XsError> {
    check_path(path)?;
    let mut out = Vec::with_capacity(path.len() + 1);
    out.extend_from_slice(path.as_bytes());
    out.push(0);
    Ok(out)
}

/// `path\0value\0\0`: the input of WRITE (the final NUL as `xencontrol.dll` sends it).
pub fn write_input(path: &str, value: &[u8]) -> Result<Vec<u8>, XsError> {
    check_printable("value", value)?;
    let payload = path.len() + 1 + value.len();
    if payload > PAYLOAD_MAX {
        return Err(WireError::TooLarge(payload).into());
    }
    let mut out = path_input(path)?;
    out.extend_from_slice(value);
    out.extend_from_slice(&[0, 0]);
    Ok(out)
}

/// The value in READ's output (`value\0`, `returned` bytes).
pub fn read_output(out: &[u8]) -> Result<Vec<u8>, XsError> {
    match out.iter().position(|b| *b == 0) {
        Some(end) => Ok(out[..end].to_vec()),
        None => Err(XsError::Protocol(
            "xeniface READ answered a value without its NUL".into(),
        )),
    }
}

/// The names in DIRECTORY's output (`a\0b\0\0`; an empty directory is `\0\0`).
pub fn directory_output(out: &[u8]) -> Result<Vec<String>, XsError> {
    if !out.ends_with(&[0]) {
        return Err(XsError::Protocol(
            "xeniface DIRECTORY answered a list without its final NUL".into(),
        ));
    }
    Ok(out
        .split(|b| *b == 0)
        .take_while(|name| !name.is_empty())
        .map(|name| String::from_utf8_lossy(name).into_owned())
        .collect())
}

/// `XENIFACE_STORE_ADD_WATCH_IN` for a pointer width of `ptr` bytes (4 or 8): the path's
/// address, its length with the NUL, and the event handle.
pub fn add_watch_input(path_addr: usize, path_len: u32, event: usize, ptr: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(3 * ptr);
    push_ptr(&mut out, path_addr, ptr);
    out.extend_from_slice(&path_len.to_le_bytes());
    out.resize(2 * ptr, 0); // padding before the pointer-aligned HANDLE on 64-bit
    push_ptr(&mut out, event, ptr);
    out
}

/// The fields of `XENIFACE_STORE_ADD_WATCH_IN` (what the driver reads), or `None` if the
/// input is not exactly the struct's size.
pub fn parse_add_watch_input(input: &[u8], ptr: usize) -> Option<(usize, u32, usize)> {
    if input.len() != 3 * ptr {
        return None;
    }
    let len = u32::from_le_bytes(input[ptr..ptr + 4].try_into().ok()?);
    Some((read_ptr(&input[..ptr]), len, read_ptr(&input[2 * ptr..])))
}

/// `XENIFACE_STORE_ADD_WATCH_OUT` / `XENIFACE_STORE_REMOVE_WATCH_IN`: one pointer.
pub fn context_bytes(context: usize, ptr: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(ptr);
    push_ptr(&mut out, context, ptr);
    out
}

/// The context pointer of ADD_WATCH's output or REMOVE_WATCH's input.
pub fn parse_context(bytes: &[u8], ptr: usize) -> Option<usize> {
    (bytes.len() == ptr).then(|| read_ptr(bytes))
}

fn push_ptr(out: &mut Vec<u8>, value: usize, ptr: usize) {
    out.extend_from_slice(&(value as u64).to_le_bytes()[..ptr]);
}

fn read_ptr(bytes: &[u8]) -> usize {
    let mut raw = [0u8; 8];
    let n = bytes.len().min(8);
    raw[..n].copy_from_slice(&bytes[..n]);
    u64::from_le_bytes(raw) as usize
}

/// Pointer width of this build, the layout the real driver sees.
pub const PTR: usize = std::mem::size_of::<usize>();

/// Call an IOCTL whose output size is unknown (READ, DIRECTORY): start with
/// [`FIRST_OUTPUT`] bytes and grow when the driver asks for more. Returns the bytes the
/// driver wrote.
pub fn call_growing(
    mut ioctl: impl FnMut(&[u8], &mut [u8]) -> Result<usize, IoctlError>,
    code: u32,
    input: &[u8],
) -> Result<Vec<u8>, XsError> {
    let mut capacity = FIRST_OUTPUT;
    for _ in 0..GROW_ATTEMPTS {
        let mut out = vec![0u8; capacity];
        let failed = match ioctl(input, &mut out) {
            Ok(n) if n <= out.len() => {
                out.truncate(n);
                return Ok(out);
            }
            Ok(n) => {
                return Err(XsError::Protocol(format!(
                    "{} reported {n} bytes for a {capacity}-byte buffer",
                    ioctl_name(code)
                )));
            }
            Err(e) => e,
        };
        let needed = match failed.code {
            win32::ERROR_MORE_DATA => failed.returned,
            // Too small and invalid look alike: a size query tells them apart.
            win32::ERROR_INVALID_PARAMETER => match ioctl(input, &mut []) {
                Err(q) if q.code == win32::ERROR_MORE_DATA => q.returned,
                Err(q) => return Err(xs_error(code, q)),
                Ok(_) => return Err(xs_error(code, failed)),
            },
            _ => return Err(xs_error(code, failed)),
        };
        if needed <= capacity {
            if failed.code == win32::ERROR_INVALID_PARAMETER {
                // The buffer was big enough: the parameter really is invalid.
                return Err(xs_error(code, failed));
            }
            return Err(XsError::Protocol(format!(
                "{} asked for {needed} bytes after refusing {capacity}",
                ioctl_name(code)
            )));
        }
        capacity = needed;
    }
    Err(XsError::Protocol(format!(
        "{}: the value kept growing past {capacity} bytes",
        ioctl_name(code)
    )))
}

/// A Win32 error of a xeniface IOCTL as the XenStore error it stands for.
pub fn xs_error(code: u32, e: IoctlError) -> XsError {
    use win32::*;
    let name = match e.code {
        ERROR_FILE_NOT_FOUND => errno::ENOENT,
        ERROR_ACCESS_DENIED => errno::EACCES,
        ERROR_INVALID_PARAMETER => errno::EINVAL,
        ERROR_OBJECT_ALREADY_EXISTS => errno::EEXIST,
        ERROR_NOT_ENOUGH_MEMORY => errno::ENOMEM,
        ERROR_NO_SYSTEM_RESOURCES => errno::ENOSPC,
        ERROR_IO_DEVICE => errno::EIO,
        ERROR_DIR_NOT_EMPTY => errno::ENOTEMPTY,
        ERROR_INVALID_FUNCTION => errno::ENOSYS,
        ERROR_WRITE_PROTECT => errno::EROFS,
        ERROR_PIPE_BUSY => errno::EBUSY,
        ERROR_RETRY => errno::EAGAIN,
        ERROR_PIPE_CONNECTED => errno::EISCONN,
        ERROR_GEN_FAILURE => UNNAMED,
        // The device is gone (removed, driver stopped, handle closed): reopen it.
        ERROR_INVALID_HANDLE
        | ERROR_NOT_READY
        | ERROR_NO_SUCH_DEVICE
        | ERROR_OPERATION_ABORTED
        | ERROR_DEVICE_NOT_CONNECTED
        | ERROR_DEVICE_REMOVED => return XsError::Disconnected,
        ERROR_INVALID_USER_BUFFER => {
            return XsError::Protocol(format!(
                "{} refused the buffer sizes guestd passed",
                ioctl_name(code)
            ));
        }
        other => {
            return XsError::Io {
                what: format!("xeniface {}", ioctl_name(code)),
                source: std::io::Error::other(format!("Windows error {other}")),
            };
        }
    };
    XsError::Errno(name.to_string())
}

/// The Win32 error a XenStore errno name reaches user mode as, through the xenbus driver's
/// `ERRNO_TO_STATUS` and Windows' NTSTATUS translation (the inverse of [`xs_error`]).
pub fn win32_error(name: &str) -> u32 {
    use win32::*;
    match name {
        errno::ENOENT => ERROR_FILE_NOT_FOUND,
        errno::EACCES | errno::EPERM => ERROR_ACCESS_DENIED,
        errno::EINVAL => ERROR_INVALID_PARAMETER,
        errno::EEXIST => ERROR_OBJECT_ALREADY_EXISTS,
        // STATUS_FILE_IS_A_DIRECTORY reaches user mode as access denied.
        errno::EISDIR => ERROR_ACCESS_DENIED,
        errno::ENOMEM => ERROR_NOT_ENOUGH_MEMORY,
        errno::ENOSPC => ERROR_NO_SYSTEM_RESOURCES,
        errno::EIO => ERROR_IO_DEVICE,
        errno::ENOTEMPTY => ERROR_DIR_NOT_EMPTY,
        errno::ENOSYS => ERROR_INVALID_FUNCTION,
        errno::EROFS => ERROR_WRITE_PROTECT,
        errno::EBUSY => ERROR_PIPE_BUSY,
        errno::EAGAIN => ERROR_RETRY,
        errno::EISCONN => ERROR_PIPE_CONNECTED,
        _ => ERROR_GEN_FAILURE,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ioctl_codes_match_the_header() {
        // CTL_CODE(FILE_DEVICE_UNKNOWN, 0x800, METHOD_BUFFERED, FILE_ANY_ACCESS) = 0x222000.
        assert_eq!(IOCTL_STORE_READ, 0x0022_2000);
        assert_eq!(IOCTL_STORE_WRITE, 0x0022_2004);
        assert_eq!(IOCTL_STORE_DIRECTORY, 0x0022_2008);
        assert_eq!(IOCTL_STORE_REMOVE, 0x0022_200c);
        assert_eq!(IOCTL_STORE_ADD_WATCH, 0x0022_2014);
        assert_eq!(IOCTL_STORE_REMOVE_WATCH, 0x0022_2018);
    }

    #[test]
    fn inputs_are_nul_terminated_printable_strings() {
        assert_eq!(path_input("data/host").unwrap(), b"data/host\0");
        assert_eq!(
            write_input("data/guest/1", b"{}").unwrap(),
            b"data/guest/1\0{}\0\0"
        );
        assert_eq!(write_input("p", b"").unwrap(), b"p\0\0\0");
        let err = write_input("p", b"a\nb").unwrap_err().to_string();
        assert_eq!(
            err,
            "xeniface takes only printable ASCII: the value has byte 0x0a at offset 1"
        );
        assert!(write_input("p", b"a\0b").is_err());
        assert!(path_input("").is_err());
        assert!(path_input("caf\u{e9}").is_err());
        assert!(path_input(&"x".repeat(PATH_MAX)).is_err());
        assert!(path_input(&"x".repeat(PATH_MAX - 1)).is_ok());
        let too_big = write_input("p", &[b'v'; PAYLOAD_MAX]).unwrap_err();
        assert!(matches!(too_big, XsError::Wire(WireError::TooLarge(_))));
        assert!(write_input("p", &[b'v'; PAYLOAD_MAX - 2]).is_ok());
    }

    #[test]
    fn outputs_decode_as_the_driver_writes_them() {
        assert_eq!(read_output(b"web-1\0").unwrap(), b"web-1");
        assert_eq!(read_output(b"\0").unwrap(), b"");
        assert!(read_output(b"no nul").is_err());
        assert_eq!(directory_output(b"a\0bc\0\0").unwrap(), ["a", "bc"]);
        assert_eq!(directory_output(b"\0\0").unwrap(), Vec::<String>::new());
        assert!(directory_output(b"a").is_err());
    }

    #[test]
    fn watch_structs_have_the_c_layout() {
        let input = add_watch_input(0x1122_3344_5566_7788, 10, 0x1f4, 8);
        assert_eq!(
            input.len(),
            24,
            "sizeof(XENIFACE_STORE_ADD_WATCH_IN) on x64"
        );
        assert_eq!(&input[..8], &0x1122_3344_5566_7788u64.to_le_bytes());
        assert_eq!(&input[8..12], &10u32.to_le_bytes());
        assert_eq!(&input[12..16], &[0; 4]);
        assert_eq!(&input[16..], &0x1f4u64.to_le_bytes());
        assert_eq!(
            parse_add_watch_input(&input, 8),
            Some((0x1122_3344_5566_7788, 10, 0x1f4))
        );
        let x86 = add_watch_input(0x1000, 5, 0x44, 4);
        assert_eq!(x86.len(), 12, "sizeof on x86");
        assert_eq!(parse_add_watch_input(&x86, 4), Some((0x1000, 5, 0x44)));
        assert_eq!(parse_add_watch_input(&x86, 8), None);
        assert_eq!(context_bytes(7, 8), 7u64.to_le_bytes());
        assert_eq!(parse_context(&context_bytes(7, PTR), PTR), Some(7));
        assert_eq!(parse_context(&[1, 2], 8), None);
    }

    /// The driver's rule for output buffers, over a value that is `len` bytes with its NUL.
    fn driver(len: usize) -> impl FnMut(&[u8], &mut [u8]) -> Result<usize, IoctlError> {
        move |_, out| {
            if out.is_empty() {
                Err(IoctlError {
                    code: win32::ERROR_MORE_DATA,
                    returned: len,
                })
            } else if out.len() < len {
                Err(IoctlError::new(win32::ERROR_INVALID_PARAMETER))
            } else {
                out[..len].fill(b'v');
                out[len - 1] = 0;
                Ok(len)
            }
        }
    }

    #[test]
    fn small_outputs_take_one_call_and_big_ones_grow() {
        let mut calls = 0;
        let mut inner = driver(6);
        let out = call_growing(
            |i, o| {
                calls += 1;
                inner(i, o)
            },
            IOCTL_STORE_READ,
            b"p\0",
        )
        .unwrap();
        assert_eq!((out.len(), calls), (6, 1));
        // Bigger than any XenStore payload: size query, then the right buffer.
        let mut calls = 0;
        let mut inner = driver(FIRST_OUTPUT + 100);
        let out = call_growing(
            |i, o| {
                calls += 1;
                inner(i, o)
            },
            IOCTL_STORE_READ,
            b"p\0",
        )
        .unwrap();
        assert_eq!((out.len(), calls), (FIRST_OUTPUT + 100, 3));
        assert_eq!(read_output(&out).unwrap().len(), FIRST_OUTPUT + 99);
    }

    #[test]
    fn a_real_invalid_parameter_is_einval_and_errors_keep_their_names() {
        let invalid = |_: &[u8], out: &mut [u8]| -> Result<usize, IoctlError> {
            Err(IoctlError {
                code: if out.is_empty() {
                    win32::ERROR_MORE_DATA
                } else {
                    win32::ERROR_INVALID_PARAMETER
                },
                returned: 3,
            })
        };
        let e = call_growing(invalid, IOCTL_STORE_READ, b"p\0").unwrap_err();
        assert!(e.is(errno::EINVAL), "{e}");
        let missing = |_: &[u8], _: &mut [u8]| Err(IoctlError::new(win32::ERROR_FILE_NOT_FOUND));
        assert!(
            call_growing(missing, IOCTL_STORE_READ, b"p\0")
                .unwrap_err()
                .is_enoent()
        );
        let growing = {
            let mut len = FIRST_OUTPUT;
            move |_: &[u8], out: &mut [u8]| {
                len += 10;
                if out.is_empty() {
                    Err(IoctlError {
                        code: win32::ERROR_MORE_DATA,
                        returned: len,
                    })
                } else {
                    Err(IoctlError::new(win32::ERROR_INVALID_PARAMETER))
                }
            }
        };
        let e = call_growing(growing, IOCTL_STORE_READ, b"p\0").unwrap_err();
        assert!(e.to_string().contains("kept growing"), "{e}");
    }

    #[test]
    fn errno_names_survive_the_round_trip_through_windows() {
        for name in [
            errno::ENOENT,
            errno::EACCES,
            errno::EINVAL,
            errno::EEXIST,
            errno::ENOMEM,
            errno::ENOSPC,
            errno::EIO,
            errno::ENOTEMPTY,
            errno::ENOSYS,
            errno::EROFS,
            errno::EBUSY,
            errno::EAGAIN,
            errno::EISCONN,
        ] {
            let back = xs_error(IOCTL_STORE_READ, IoctlError::new(win32_error(name)));
            assert!(back.is(name), "{name}: {back}");
        }
        for lost in ["EQUOTA", errno::E2BIG] {
            let back = xs_error(IOCTL_STORE_WRITE, IoctlError::new(win32_error(lost)));
            assert!(back.is(UNNAMED), "{lost}: {back}");
        }
        let gone = xs_error(
            IOCTL_STORE_READ,
            IoctlError::new(win32::ERROR_DEVICE_REMOVED),
        );
        assert!(gone.is_connection_lost());
        let other = xs_error(IOCTL_STORE_REMOVE, IoctlError::new(12345));
        assert_eq!(
            other.to_string(),
            "xeniface IOCTL_XENIFACE_STORE_REMOVE: Windows error 12345"
        );
    }
}
