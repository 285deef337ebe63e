//! Every file access of a handler or backend goes through [`Root`], so a test (or `guestd
//! --root DIR`) can point the whole agent at a directory tree instead of `/`, and so that no
//! unprivileged user of the guest can turn a root-run write into a write of their choosing.
//!
//! # Paths
//!
//! Guest paths are absolute (`/etc/shadow`); a `..` component is refused outright. Symlinks are
//! resolved as if the root were `/` (Linux's `RESOLVE_IN_ROOT`): an absolute target starts again
//! at the root, a `..` in a target never climbs above it. That is the same for the real system
//! and for a sandbox.
//!
//! # How a path is reached (Unix)
//!
//! By handle, never by path string. The walk starts at a directory handle of the root (the
//! sandbox directory, or `/`) and opens each component relative to the handle before it with
//! `O_DIRECTORY | O_NOFOLLOW`; every later open, create, rename, unlink, chown, chmod, mkdir,
//! readlink and stat is relative to the handle of the directory reached (`openat`, `renameat`,
//! `fchown`, …). Swapping a directory for a link after it was opened changes nothing: guestd
//! holds the directory itself. On Linux `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS |
//! RESOLVE_NO_SYMLINKS)` reaches a directory in one call when the way holds no link; any link
//! (or an old kernel) falls back to the walk, which is the one complete implementation.
//!
//! # Links in directories an unprivileged user controls
//!
//! A symlink is followed only inside a directory that is owned by root (or by guestd's own
//! uid) and writable by nobody else (no group or other write bit, so neither the sticky `/tmp`
//! nor a directory with a write ACL counts). Elsewhere — a home directory, `~/.ssh`, `/tmp` — a
//! link on the way is refused with an error naming the path. Ownership is read with `fstat` on
//! the open directory handle, so the decision is about the very directory the next step uses.
//!
//! The alternative, acting with the user's file-system identity (`setfsuid`/`setfsgid`), was
//! rejected: it is per-thread state on tokio's shared blocking pool (a panic or an early return
//! would leave a worker with the wrong identity for the next request), supplementary groups
//! cannot be set per thread, and it is Linux-only. Refusing links is enough because nothing
//! after the walk is done by path: an attacker can rename things in their own directory, but
//! every operation acts on the handle guestd already holds or on an entry of it.
//!
//! # Only regular files, and bounded reads
//!
//! A file is opened with `O_NOFOLLOW | O_NONBLOCK` (a FIFO cannot block the agent) and
//! `fstat`ed; anything that is not a regular file is refused before a byte is read, and every
//! read has a limit ([`DEFAULT_READ_LIMIT`] unless the caller gives one). In a directory an
//! unprivileged user controls, a file with more than one hard link, or owned by anyone but that
//! directory's owner, is never read (it may be a link to a file the user cannot read
//! themselves); it can still be replaced, because a rename only changes the directory entry.
//!
//! # Writes
//!
//! Atomic: a temp file created with `O_CREAT | O_EXCL | O_NOFOLLOW` in the target's directory
//! (by handle), written, `fchown`/`fchmod` on the open file, fsync, `renameat` within that
//! directory, fsync of the directory. An existing file keeps its mode and owner (unless told
//! otherwise; in a user's directory only a file of that user with one link is taken as the
//! model, and never with set-id bits). A FIFO, socket or device at the target is refused.
//! Mode and owner are only ever set on open handles.
//!
//! A [`PathPolicy`] attached with [`Root::with_write_policy`] is checked on the path the walk
//! actually reached (links followed), right before the change, so no race can carry a write
//! past it.
//!
//! # Windows
//!
//! Path-based (symlinks need a privilege there, so a user cannot plant them): drive letters
//! are directories of a sandbox (`C:\x` is `<sandbox>\C\x`), UNC and device paths are refused,
//! an existing file is replaced with `ReplaceFileW` (which keeps its ACL).
//!
//! [`Root::resolve`] turns a guest path into a host path string for an *external command*;
//! anything guestd itself reads or writes goes through the handle-based methods.

#[cfg(unix)]
mod open_file;
mod policy;
#[cfg(all(test, unix))]
mod tests_unix;
#[cfg(all(test, windows))]
mod tests_windows;
#[cfg(unix)]
mod unix;
#[cfg(not(unix))]
mod windows;

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::io;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use zeroize::Zeroizing;

#[cfg(unix)]
pub use open_file::{NEW_FILE_MODE, OpenMode, OpenedFile};
pub use policy::PathPolicy;

#[cfg(unix)]
use unix as sys;
#[cfg(not(unix))]
use windows as sys;

/// Maximum symlinks followed while resolving one path (as Linux's `MAXSYMLINKS`).
const MAX_LINKS: usize = 40;

/// Largest file [`Root::read`] and friends read (a configuration file, a key list, a binary
/// being updated); [`Root::read_limited`] takes its own limit.
pub const DEFAULT_READ_LIMIT: u64 = 64 * 1024 * 1024;

/// A file operation failed. `Display` names the guest path and the reason, never contents.
#[derive(Debug, thiserror::Error)]
pub enum RootError {
    #[error("path '{0}' is not absolute")]
    NotAbsolute(String),
    #[error("path '{0}' contains '..'")]
    DotDot(String),
    #[error("path '{0}' has too many levels of symlinks")]
    TooManyLinks(String),
    #[error("path '{0}' is not on a local drive (only C:\\... style prefixes are accepted)")]
    UnsupportedPrefix(String),
    #[error(
        "path '{0}' is a symbolic link in a directory that an unprivileged user controls; \
         guestd does not follow it"
    )]
    UntrustedLink(String),
    #[error("'{0}' is a symbolic link; refusing to use it")]
    IsLink(String),
    #[error("'{path}' is not a regular file (it is a {kind}); refusing to read or replace it")]
    NotRegular { path: String, kind: &'static str },
    #[error("'{path}' is larger than the limit of {limit} bytes")]
    TooLarge { path: String, limit: u64 },
    #[error("'{path}' is not read: it {reason}, in a directory that an unprivileged user controls")]
    Untrusted { path: String, reason: &'static str },
    #[error("writing '{0}' is not allowed by this guest's configuration")]
    Denied(String),
    /// [`Root::open_file`]'s caller refused the path as reached (links followed).
    #[error(
        "'{path}' is not under a path this guest's configuration allows (reached as '{reached}')"
    )]
    NotAllowed { path: String, reached: String },
    #[error(
        "'{0}' can be changed by an unprivileged user (it must belong to root and be writable \
         only by it)"
    )]
    NotPrivate(String),
    #[error("cannot {op} '{path}': {source}")]
    Io {
        op: &'static str,
        path: String,
        #[source]
        source: io::Error,
    },
}

impl RootError {
    /// The OS error kind, when this is an I/O failure.
    pub fn io_kind(&self) -> Option<io::ErrorKind> {
        match self {
            Self::Io { source, .. } => Some(source.kind()),
            _ => None,
        }
    }

    pub fn is_not_found(&self) -> bool {
        self.io_kind() == Some(io::ErrorKind::NotFound)
    }
}

/// How a new file is created. An existing file keeps its mode and owner unless `preserve` is off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteOptions {
    /// Mode of a new file (Unix permission bits).
    pub mode: u32,
    /// Owner `(uid, gid)` of a new file; `None` = the agent's own.
    pub owner: Option<(u32, u32)>,
    /// Keep the mode and owner of the file being replaced.
    pub preserve: bool,
}

impl Default for WriteOptions {
    fn default() -> Self {
        Self {
            mode: 0o644,
            owner: None,
            preserve: true,
        }
    }
}

impl WriteOptions {
    pub fn mode(mode: u32) -> Self {
        Self {
            mode,
            ..Self::default()
        }
    }

    pub fn owner(mut self, uid: u32, gid: u32) -> Self {
        self.owner = Some((uid, gid));
        self
    }

    /// Force `mode`/`owner` even when replacing an existing file.
    pub fn exact(mut self) -> Self {
        self.preserve = false;
        self
    }

    /// Mode and owner of a new file.
    #[cfg(unix)]
    fn new_meta(&self) -> FileMeta {
        let (uid, gid) = self.owner.unwrap_or_else(own_ids);
        FileMeta {
            mode: self.mode,
            uid,
            gid,
        }
    }
}

/// Mode and owner of a file (Unix); zero elsewhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FileMeta {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

/// What is at a path, without following a link there ([`Root::snapshot`]).
#[derive(Clone, PartialEq, Eq)]
pub enum Snapshot {
    Absent,
    /// A symlink and its target as stored.
    Link(PathBuf),
    /// A regular file (contents wiped on drop).
    File {
        contents: Zeroizing<Vec<u8>>,
        meta: FileMeta,
    },
    /// A regular file that guestd must not read (see the module docs): it can be replaced, but
    /// not backed up or put back.
    Unread {
        meta: FileMeta,
        reason: &'static str,
    },
}

impl fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Absent => write!(f, "Absent"),
            Self::Link(t) => write!(f, "Link({})", t.display()),
            Self::File { contents, meta } => write!(f, "File({} bytes, {meta:?})", contents.len()),
            Self::Unread { meta, reason } => write!(f, "Unread({reason}, {meta:?})"),
        }
    }
}

/// The guest's filesystem, or a sandbox tree standing in for it.
#[derive(Clone)]
pub struct Root {
    /// `None`: the real system.
    base: Option<PathBuf>,
    /// The root directory's handle (Unix; the system root's is opened once per process).
    #[cfg(unix)]
    handle: Arc<std::os::fd::OwnedFd>,
    /// Checked on the reached path of every change (see [`Root::with_write_policy`]).
    policy: Option<Arc<PathPolicy>>,
}

impl fmt::Debug for Root {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Root")
            .field("base", &self.base)
            .field("policy", &self.policy)
            .finish()
    }
}

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// `.<name>.guestd-tmp.<pid>.<n>`: the temp file of an atomic write (swept after a crash by
/// the file injection).
fn temp_name(name: &OsStr) -> OsString {
    let mut tmp = OsString::from(".");
    tmp.push(name);
    tmp.push(format!(
        ".guestd-tmp.{}.{}",
        std::process::id(),
        TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    tmp
}

/// `.guestd-link.<pid>.<n>`: a new symlink before it is renamed into place.
fn link_temp_name() -> OsString {
    OsString::from(format!(
        ".guestd-link.{}.{}",
        std::process::id(),
        TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
    ))
}

impl Root {
    /// The real filesystem.
    pub fn system() -> Self {
        Self {
            base: None,
            #[cfg(unix)]
            handle: sys::system_handle(),
            policy: None,
        }
    }

    /// A sandbox: guest `/` is `base`.
    pub fn sandbox(base: impl AsRef<Path>) -> io::Result<Self> {
        let base = std::fs::canonicalize(base)?;
        if base.parent().is_none() {
            return Ok(Self::system());
        }
        Ok(Self {
            #[cfg(unix)]
            handle: Arc::new(sys::open_base(&base)?),
            base: Some(base),
            policy: None,
        })
    }

    /// The sandbox directory, if any.
    pub fn base(&self) -> Option<&Path> {
        self.base.as_deref()
    }

    pub fn is_sandbox(&self) -> bool {
        self.base.is_some()
    }

    /// The same root, with every change (write, create, remove, rename, mode) allowed only
    /// where `policy` permits, judged on the path actually reached after links.
    pub fn with_write_policy(&self, policy: PathPolicy) -> Self {
        Self {
            policy: Some(Arc::new(policy)),
            ..self.clone()
        }
    }

    /// The same root without a write policy (for guestd's own files, e.g. backups).
    pub fn without_write_policy(&self) -> Self {
        Self {
            policy: None,
            ..self.clone()
        }
    }

    /// The host path for a guest path, with links resolved as described above: only for
    /// handing a path to an external command. A path string is inherently racy (what it names
    /// can change before the command opens it); guestd's own file access uses the other methods.
    /// Missing components are appended as given.
    pub fn resolve(&self, guest: impl AsRef<Path>) -> Result<PathBuf, RootError> {
        sys::resolve(self, guest.as_ref(), true)
    }

    /// Like [`resolve`](Self::resolve) but the last component is not followed if it is a link.
    pub fn resolve_nofollow(&self, guest: impl AsRef<Path>) -> Result<PathBuf, RootError> {
        sys::resolve(self, guest.as_ref(), false)
    }

    /// A regular file's contents, at most [`DEFAULT_READ_LIMIT`] bytes.
    pub fn read(&self, guest: impl AsRef<Path>) -> Result<Vec<u8>, RootError> {
        self.read_limited(guest, DEFAULT_READ_LIMIT)
    }

    /// A regular file's contents; a larger file is an error naming the path. FIFOs, devices,
    /// sockets and directories are refused without blocking.
    pub fn read_limited(&self, guest: impl AsRef<Path>, limit: u64) -> Result<Vec<u8>, RootError> {
        sys::read_limited(self, guest.as_ref(), limit)
    }

    pub fn read_to_string(&self, guest: impl AsRef<Path>) -> Result<String, RootError> {
        let guest = guest.as_ref();
        let bytes = self.read(guest)?;
        String::from_utf8(bytes).map_err(|_| RootError::Io {
            op: "read",
            path: display(guest),
            source: io::Error::new(io::ErrorKind::InvalidData, "not UTF-8 text"),
        })
    }

    /// `Ok(None)` when the file does not exist.
    pub fn read_optional(&self, guest: impl AsRef<Path>) -> Result<Option<Vec<u8>>, RootError> {
        match self.read(guest) {
            Err(e) if e.is_not_found() => Ok(None),
            other => other.map(Some),
        }
    }

    /// What is at `guest` (a last link is reported, not followed), reading a regular file up to
    /// `limit` bytes. Anything but a file, a link or nothing is an error.
    pub fn snapshot(&self, guest: impl AsRef<Path>, limit: u64) -> Result<Snapshot, RootError> {
        sys::snapshot(self, guest.as_ref(), limit)
    }

    pub fn exists(&self, guest: impl AsRef<Path>) -> bool {
        sys::exists(self, guest.as_ref())
    }

    pub fn is_dir(&self, guest: impl AsRef<Path>) -> bool {
        sys::is_dir(self, guest.as_ref())
    }

    /// Whether the path itself is a symlink (not followed).
    pub fn is_symlink(&self, guest: impl AsRef<Path>) -> bool {
        sys::is_symlink(self, guest.as_ref())
    }

    /// The target of a symlink, as stored.
    pub fn read_link(&self, guest: impl AsRef<Path>) -> Result<PathBuf, RootError> {
        sys::read_link(self, guest.as_ref())
    }

    /// Mode and owner (a last link followed).
    pub fn metadata(&self, guest: impl AsRef<Path>) -> Result<FileMeta, RootError> {
        sys::metadata(self, guest.as_ref())
    }

    /// Names in a directory, sorted.
    pub fn read_dir(&self, guest: impl AsRef<Path>) -> Result<Vec<String>, RootError> {
        sys::read_dir(self, guest.as_ref())
    }

    /// Create a directory and its missing parents; new directories get exactly `mode`.
    pub fn create_dir_all(&self, guest: impl AsRef<Path>, mode: u32) -> Result<(), RootError> {
        sys::create_dir_all(self, guest.as_ref(), mode)
    }

    /// Create one directory (its parent must exist) and give it `mode` and `uid:gid` through its
    /// handle. An existing directory is left as it is; a link there is refused. Returns whether
    /// it was created.
    pub fn create_dir_owned(
        &self,
        guest: impl AsRef<Path>,
        mode: u32,
        uid: u32,
        gid: u32,
    ) -> Result<bool, RootError> {
        sys::create_dir_owned(self, guest.as_ref(), FileMeta { mode, uid, gid })
    }

    /// Replace (or create) a file atomically: readers see the old or the new content, never a
    /// mix, even if the agent is killed half way. A link at the path is written through when its
    /// directory is trusted (`/etc/resolv.conf -> /run/…`), refused otherwise.
    pub fn write_atomic(
        &self,
        guest: impl AsRef<Path>,
        contents: &[u8],
        opts: WriteOptions,
    ) -> Result<(), RootError> {
        sys::write_file(self, guest.as_ref(), contents, opts, true)
    }

    /// Like [`write_atomic`](Self::write_atomic), but a link at the path is replaced by the
    /// file instead of followed.
    pub fn replace_file(
        &self,
        guest: impl AsRef<Path>,
        contents: &[u8],
        opts: WriteOptions,
    ) -> Result<(), RootError> {
        sys::write_file(self, guest.as_ref(), contents, opts, false)
    }

    /// Write `contents` into an existing regular file in place: no temp file, no create, no
    /// truncate. For kernel control files (`/sys/devices/system/cpu/cpu1/online`,
    /// `/sys/power/state`), where a write is a request and a rename is impossible; never for
    /// files with content worth keeping (use [`write_atomic`](Self::write_atomic)). The file is
    /// reached and checked like any other (no link in a user's directory, regular files only).
    pub fn write_in_place(
        &self,
        guest: impl AsRef<Path>,
        contents: &[u8],
    ) -> Result<(), RootError> {
        sys::write_in_place(self, guest.as_ref(), contents)
    }

    /// Remove a file or symlink (not followed). Missing is fine.
    pub fn remove_file(&self, guest: impl AsRef<Path>) -> Result<(), RootError> {
        sys::remove_file(self, guest.as_ref())
    }

    /// Remove a directory and everything in it (a symlink is removed, never followed). Missing
    /// is fine.
    pub fn remove_dir_all(&self, guest: impl AsRef<Path>) -> Result<(), RootError> {
        sys::remove_dir_all(self, guest.as_ref())
    }

    /// Remove an empty directory (a link there is refused, never followed). Missing is fine;
    /// a directory that is not empty is an error.
    pub fn remove_dir(&self, guest: impl AsRef<Path>) -> Result<(), RootError> {
        sys::remove_dir(self, guest.as_ref())
    }

    /// Create or replace a symlink at `guest` pointing to `target` (stored as given).
    pub fn symlink(
        &self,
        guest: impl AsRef<Path>,
        target: impl AsRef<Path>,
    ) -> Result<(), RootError> {
        sys::symlink(self, guest.as_ref(), target.as_ref())
    }

    /// Rename within the root (atomic on one filesystem); neither end is followed.
    pub fn rename(&self, from: impl AsRef<Path>, to: impl AsRef<Path>) -> Result<(), RootError> {
        sys::rename(self, from.as_ref(), to.as_ref())
    }

    /// Set mode and owner of an existing regular file or directory, through its handle.
    pub fn set_meta(&self, guest: impl AsRef<Path>, meta: FileMeta) -> Result<(), RootError> {
        sys::set_meta(self, guest.as_ref(), meta)
    }

    /// Check that no unprivileged user can change `guest` (a directory) or any directory on
    /// the way to it: each must belong to root (or guestd's uid) and be writable by nobody
    /// else. Missing components are fine (guestd creates them itself). For guestd's own state
    /// (staging an update, then running what was staged) where a swapped directory would be
    /// worse than a refused write.
    pub fn check_private(&self, guest: impl AsRef<Path>) -> Result<(), RootError> {
        sys::check_private(self, guest.as_ref())
    }

    /// Open a regular file that no unprivileged user can change, for what guestd trusts as the
    /// guest administrator's own (a `configure` script, a document the host injected): the
    /// file and every directory on the way belong to root (or guestd's uid) and are writable by
    /// nobody else, and a link at the path is refused. Checked on the handles opened, so the
    /// answer is about the very file returned. Windows: the path is reached like any other
    /// (ACLs are not judged).
    pub fn open_private(
        &self,
        guest: impl AsRef<Path>,
    ) -> Result<(std::fs::File, FileMeta), RootError> {
        sys::open_private(self, guest.as_ref())
    }

    /// The contents of a file [`open_private`](Self::open_private) accepts, at most `limit`
    /// bytes.
    pub fn read_private(&self, guest: impl AsRef<Path>, limit: u64) -> Result<Vec<u8>, RootError> {
        use std::io::Read;
        let guest = guest.as_ref();
        let (file, _) = self.open_private(guest)?;
        let mut buf = Zeroizing::new(Vec::new());
        file.take(limit.saturating_add(1))
            .read_to_end(&mut buf)
            .map_err(io_err("read", guest))?;
        if buf.len() as u64 > limit {
            return Err(RootError::TooLarge {
                path: display(guest),
                limit,
            });
        }
        Ok(std::mem::take(&mut *buf))
    }

    /// Open (creating it with `mode` if missing, never truncating) a regular file for a lock.
    pub fn open_lock_file(
        &self,
        guest: impl AsRef<Path>,
        mode: u32,
    ) -> Result<std::fs::File, RootError> {
        sys::open_lock_file(self, guest.as_ref(), mode)
    }

    /// The write policy's verdict on a reached path (`names` below the root, `dir` when a
    /// directory is being created).
    fn check_policy(&self, reached: &GuestPath, guest: &Path, dir: bool) -> Result<(), RootError> {
        let Some(policy) = &self.policy else {
            return Ok(());
        };
        let text = reached.to_string();
        let ok = if dir {
            policy.permits_dir(&text)
        } else {
            policy.permits(&text)
        };
        if ok {
            Ok(())
        } else {
            tracing::warn!(requested = %guest.display(), reached = %text, "write refused by the path policy");
            Err(RootError::Denied(display(guest)))
        }
    }
}

/// A checked guest path: an optional drive (Windows) and its normal components.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct GuestPath {
    pub drive: Option<char>,
    pub names: Vec<OsString>,
}

impl fmt::Display for GuestPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sep = match self.drive {
            Some(d) => {
                write!(f, "{d}:")?;
                '\\'
            }
            None => '/',
        };
        if self.names.is_empty() {
            return write!(f, "{sep}");
        }
        for n in &self.names {
            write!(f, "{sep}{}", n.to_string_lossy())?;
        }
        Ok(())
    }
}

/// Check a guest path and return its parts. On Windows a drive prefix is kept apart
/// (`C:\x` is `<sandbox>\C\x`, so drives stay apart); UNC, device and other prefixes are
/// refused, sandbox or not.
pub(crate) fn check_guest_path(guest: &Path) -> Result<GuestPath, RootError> {
    if !guest.has_root() {
        return Err(RootError::NotAbsolute(display(guest)));
    }
    let mut out = GuestPath::default();
    for comp in guest.components() {
        match comp {
            Component::ParentDir => return Err(RootError::DotDot(display(guest))),
            Component::Normal(p) => out.names.push(p.to_os_string()),
            Component::Prefix(p) => match p.kind() {
                std::path::Prefix::Disk(letter) | std::path::Prefix::VerbatimDisk(letter) => {
                    out.drive = Some(char::from(letter).to_ascii_uppercase());
                }
                _ => return Err(RootError::UnsupportedPrefix(display(guest))),
            },
            Component::CurDir | Component::RootDir => {}
        }
    }
    Ok(out)
}

#[cfg(unix)]
pub(crate) fn own_ids() -> (u32, u32) {
    // SAFETY: geteuid/getegid cannot fail and touch no memory.
    #[allow(unsafe_code)]
    unsafe {
        (libc::geteuid(), libc::getegid())
    }
}

/// No Unix ids on Windows (ownership there is the ACL's business).
#[cfg(not(unix))]
pub(crate) fn own_ids() -> (u32, u32) {
    (0, 0)
}

fn display(p: &Path) -> String {
    p.display().to_string()
}

fn io_err<'a>(op: &'static str, guest: &'a Path) -> impl FnOnce(io::Error) -> RootError + 'a {
    move |source| RootError::Io {
        op,
        path: display(guest),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_paths_are_checked_and_displayed() {
        assert!(matches!(
            check_guest_path(Path::new("etc/x")),
            Err(RootError::NotAbsolute(_))
        ));
        assert!(matches!(
            check_guest_path(Path::new("/etc/../x")),
            Err(RootError::DotDot(_))
        ));
        let p = check_guest_path(Path::new("/etc//./hosts")).unwrap();
        assert_eq!(p.to_string(), "/etc/hosts");
        assert_eq!(check_guest_path(Path::new("/")).unwrap().to_string(), "/");
    }
}
