//! A POSIX write lock on a lock file under the root (`lckpwdf(3)`'s: a whole-file `fcntl`
//! lock on `/etc/.pwd.lock`), taken by [`plan::apply`](crate::plan::apply) for a
//! [`FileChange::Update`](crate::plan::FileChange::Update) that names one, so that guestd and the
//! system's own tools (passwd, useradd, chpasswd) never rewrite the same file at once.

use std::io;
use std::time::{Duration, Instant};

use crate::root::{Root, RootError};

/// `lckpwdf` gives up after 15 seconds.
pub const LOCK_TIMEOUT: Duration = Duration::from_secs(15);

/// A held lock, released on drop (closing the file releases it).
#[derive(Debug)]
pub struct FileLock {
    _file: std::fs::File,
}

impl FileLock {
    /// Open (creating it 0600 when missing) `path` under `root` and take its write lock,
    /// waiting up to `timeout` for another holder.
    pub fn acquire(root: &Root, path: &str, timeout: Duration) -> Result<Self, RootError> {
        let file = root.open_lock_file(path, 0o600)?;
        let started = Instant::now();
        let fail = |source| RootError::Io {
            op: "lock",
            path: path.to_string(),
            source,
        };
        loop {
            match try_lock(&file) {
                Ok(true) => return Ok(Self { _file: file }),
                Ok(false) if started.elapsed() < timeout => {
                    std::thread::sleep(Duration::from_millis(100))
                }
                Ok(false) => {
                    return Err(fail(io::Error::new(
                        io::ErrorKind::WouldBlock,
                        "it is held by another program",
                    )));
                }
                Err(e) => return Err(fail(e)),
            }
        }
    }
}

/// One non-blocking attempt at the whole-file write lock. `Ok(false)`: held by someone else.
#[cfg(unix)]
#[allow(unsafe_code)]
fn try_lock(file: &std::fs::File) -> io::Result<bool> {
    use std::os::fd::AsRawFd;
    // SAFETY: an all-zero `flock` is a valid value of this plain C struct.
    let mut lock: libc::flock = unsafe { std::mem::zeroed() };
    lock.l_type = libc::F_WRLCK as _;
    lock.l_whence = libc::SEEK_SET as _;
    // SAFETY: `file` is an open descriptor for the duration of the call and `lock` is a valid,
    // initialised `flock` that fcntl only reads.
    let rc = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_SETLK, &lock) };
    if rc == 0 {
        return Ok(true);
    }
    let err = io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::EACCES) | Some(libc::EAGAIN) => Ok(false),
        _ => Err(err),
    }
}

/// Windows keeps no password files: the lock is only the open file.
#[cfg(not(unix))]
fn try_lock(_file: &std::fs::File) -> io::Result<bool> {
    Ok(true)
}
