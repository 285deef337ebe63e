//! Every file access of a handler or backend goes through [`Root`], so a test (or `guestd
//! --root DIR`) can point the whole agent at a directory tree instead of `/`.
//!
//! Guest paths are absolute (`/etc/shadow`). A `..` component is rejected outright. Inside a
//! sandbox root, symlinks are resolved as if the root were `/` (an absolute link target stays
//! inside the root) and a link that climbs above the root is an error. Writes are atomic: a temp
//! file in the same directory, fsync, rename, fsync of the directory; an existing file's mode and
//! owner are kept.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

#[cfg(unix)]
mod open_file;
#[cfg(unix)]
pub use open_file::{NEW_FILE_MODE, OpenMode, OpenedFile};

/// Maximum symlinks followed while resolving one path (as Linux's `MAXSYMLINKS`).
const MAX_LINKS: usize = 40;

/// A file operation failed. `Display` names the guest path and the OS reason, never contents.
#[derive(Debug, thiserror::Error)]
pub enum RootError {
    #[error("path '{0}' is not absolute")]
    NotAbsolute(String),
    #[error("path '{0}' contains '..'")]
    DotDot(String),
    #[error("path '{0}' leads outside the root through a symlink")]
    Escape(String),
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
    #[error("'{path}' is not read: it {reason}, in a directory that an unprivileged user controls")]
    Untrusted { path: String, reason: &'static str },
    /// [`Root::open_file`]'s caller refused the path as reached (links followed).
    #[error(
        "'{path}' is not under a path this guest's configuration allows (reached as '{reached}')"
    )]
    NotAllowed { path: String, reached: String },
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
}

/// Mode and owner of a file (Unix); zero elsewhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FileMeta {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

/// The guest's filesystem, or a sandbox tree standing in for it.
#[derive(Debug, Clone)]
pub struct Root {
    /// `None`: the real system, paths used as they are.
    base: Option<PathBuf>,
}

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

impl Root {
    /// The real filesystem.
    pub fn system() -> Self {
        Self { base: None }
    }

    /// A sandbox: guest `/` is `base`.
    pub fn sandbox(base: impl AsRef<Path>) -> io::Result<Self> {
        let base = fs::canonicalize(base)?;
        if base.parent().is_none() {
            return Ok(Self::system());
        }
        Ok(Self { base: Some(base) })
    }

    /// The sandbox directory, if any.
    pub fn base(&self) -> Option<&Path> {
        self.base.as_deref()
    }

    pub fn is_sandbox(&self) -> bool {
        self.base.is_some()
    }

    /// The host path for a guest path (symlinks inside a sandbox resolved as described above).
    pub fn resolve(&self, guest: impl AsRef<Path>) -> Result<PathBuf, RootError> {
        let guest = guest.as_ref();
        let parts = check_guest_path(guest)?;
        let Some(base) = &self.base else {
            return Ok(guest.to_path_buf());
        };
        resolve_in(base, parts, guest)
    }

    /// Like [`resolve`](Self::resolve) but the last component is not followed if it is a link.
    pub fn resolve_nofollow(&self, guest: impl AsRef<Path>) -> Result<PathBuf, RootError> {
        let guest = guest.as_ref();
        let (parent, name) = split_parent(guest)?;
        Ok(self.resolve(parent)?.join(name))
    }

    pub fn read(&self, guest: impl AsRef<Path>) -> Result<Vec<u8>, RootError> {
        let guest = guest.as_ref();
        fs::read(self.resolve(guest)?).map_err(io_err("read", guest))
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

    pub fn exists(&self, guest: impl AsRef<Path>) -> bool {
        self.resolve(guest).is_ok_and(|p| p.exists())
    }

    pub fn is_dir(&self, guest: impl AsRef<Path>) -> bool {
        self.resolve(guest).is_ok_and(|p| p.is_dir())
    }

    /// Whether the path itself is a symlink (not followed).
    pub fn is_symlink(&self, guest: impl AsRef<Path>) -> bool {
        self.resolve_nofollow(guest).is_ok_and(|p| p.is_symlink())
    }

    /// The target of a symlink, as stored.
    pub fn read_link(&self, guest: impl AsRef<Path>) -> Result<PathBuf, RootError> {
        let guest = guest.as_ref();
        fs::read_link(self.resolve_nofollow(guest)?).map_err(io_err("read link", guest))
    }

    pub fn metadata(&self, guest: impl AsRef<Path>) -> Result<FileMeta, RootError> {
        let guest = guest.as_ref();
        let md = fs::metadata(self.resolve(guest)?).map_err(io_err("stat", guest))?;
        Ok(file_meta(&md))
    }

    /// Names in a directory, sorted.
    pub fn read_dir(&self, guest: impl AsRef<Path>) -> Result<Vec<String>, RootError> {
        let guest = guest.as_ref();
        let entries = fs::read_dir(self.resolve(guest)?).map_err(io_err("list", guest))?;
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.map_err(io_err("list", guest))?;
            names.push(entry.file_name().to_string_lossy().into_owned());
        }
        names.sort();
        Ok(names)
    }

    /// Create a directory and its missing parents; new directories get `mode`.
    pub fn create_dir_all(&self, guest: impl AsRef<Path>, mode: u32) -> Result<(), RootError> {
        let guest = guest.as_ref();
        let path = self.resolve(guest)?;
        let mut builder = fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, mode);
        #[cfg(not(unix))]
        let _ = mode;
        builder
            .create(&path)
            .map_err(io_err("create directory", guest))
    }

    /// Replace (or create) a file atomically: readers see the old or the new content, never a
    /// mix, even if the agent is killed half way.
    pub fn write_atomic(
        &self,
        guest: impl AsRef<Path>,
        contents: &[u8],
        opts: WriteOptions,
    ) -> Result<(), RootError> {
        let guest = guest.as_ref();
        let path = self.resolve(guest)?;
        let existing = fs::metadata(&path).ok().filter(|m| m.is_file());
        let meta = match (&existing, opts.preserve) {
            (Some(md), true) => file_meta(md),
            _ => {
                let (uid, gid) = opts.owner.unwrap_or_else(own_ids);
                FileMeta {
                    mode: opts.mode,
                    uid,
                    gid,
                }
            }
        };
        let dir = path
            .parent()
            .ok_or_else(|| RootError::NotAbsolute(display(guest)))?;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = dir.join(format!(
            ".{name}.guestd-tmp.{}.{}",
            std::process::id(),
            TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let result = write_new(&tmp, contents, meta)
            .and_then(|()| replace(&tmp, &path, existing.is_some()))
            .and_then(|()| sync_dir(dir));
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result.map_err(io_err("write", guest))
    }

    /// Remove a file or symlink (not followed). Missing is fine.
    pub fn remove_file(&self, guest: impl AsRef<Path>) -> Result<(), RootError> {
        let guest = guest.as_ref();
        match fs::remove_file(self.resolve_nofollow(guest)?) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_err("remove", guest)(e)),
            _ => Ok(()),
        }
    }

    /// Remove a directory and everything in it (a symlink is removed, not followed). Missing
    /// is fine.
    pub fn remove_dir_all(&self, guest: impl AsRef<Path>) -> Result<(), RootError> {
        let guest = guest.as_ref();
        let path = self.resolve_nofollow(guest)?;
        let result = match fs::symlink_metadata(&path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Ok(md) if !md.is_dir() => fs::remove_file(&path),
            _ => fs::remove_dir_all(&path),
        };
        result.map_err(io_err("remove", guest))
    }

    /// Create or replace a symlink at `guest` pointing to `target` (stored as given).
    pub fn symlink(
        &self,
        guest: impl AsRef<Path>,
        target: impl AsRef<Path>,
    ) -> Result<(), RootError> {
        let guest = guest.as_ref();
        let path = self.resolve_nofollow(guest)?;
        let tmp = path.with_file_name(format!(
            ".guestd-link.{}.{}",
            std::process::id(),
            TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        #[cfg(unix)]
        let made = std::os::unix::fs::symlink(target.as_ref(), &tmp);
        #[cfg(windows)]
        let made = std::os::windows::fs::symlink_file(target.as_ref(), &tmp);
        made.and_then(|()| fs::rename(&tmp, &path))
            .map_err(io_err("create link", guest))
    }

    /// Rename within the root (atomic on one filesystem).
    pub fn rename(&self, from: impl AsRef<Path>, to: impl AsRef<Path>) -> Result<(), RootError> {
        let (from, to) = (from.as_ref(), to.as_ref());
        fs::rename(self.resolve_nofollow(from)?, self.resolve_nofollow(to)?)
            .map_err(io_err("rename", from))
    }

    /// Set mode and owner of an existing file or directory.
    pub fn set_meta(&self, guest: impl AsRef<Path>, meta: FileMeta) -> Result<(), RootError> {
        let guest = guest.as_ref();
        let path = self.resolve(guest)?;
        apply_meta_path(&path, meta).map_err(io_err("change mode of", guest))
    }

    /// Write `contents` into an existing regular file in place: no temp file, no create, no
    /// truncate. For kernel control files (`/sys/devices/system/cpu/cpu1/online`,
    /// `/sys/power/state`), where a write is a request and a rename is impossible; never for
    /// files with content worth keeping (use [`write_atomic`](Self::write_atomic)).
    pub fn write_in_place(
        &self,
        guest: impl AsRef<Path>,
        contents: &[u8],
    ) -> Result<(), RootError> {
        let guest = guest.as_ref();
        let path = self.resolve(guest)?;
        let mut file = OpenOptions::new()
            .write(true)
            .open(&path)
            .map_err(io_err("open", guest))?;
        let is_file = file.metadata().map(|m| m.is_file());
        if !matches!(is_file, Ok(true)) {
            return Err(RootError::Io {
                op: "write",
                path: display(guest),
                source: io::Error::new(io::ErrorKind::InvalidInput, "not a regular file"),
            });
        }
        file.write_all(contents).map_err(io_err("write", guest))
    }
}

/// Check a guest path and return its normal components. On Windows a drive prefix becomes
/// the first component (`C:\\x` is `<sandbox>\\C\\x`, so drives stay apart); UNC, device and
/// other prefixes are refused, sandbox or not.
fn check_guest_path(guest: &Path) -> Result<Vec<std::ffi::OsString>, RootError> {
    if !guest.has_root() {
        return Err(RootError::NotAbsolute(display(guest)));
    }
    let mut parts = Vec::new();
    for comp in guest.components() {
        match comp {
            Component::ParentDir => return Err(RootError::DotDot(display(guest))),
            Component::Normal(p) => parts.push(p.to_os_string()),
            Component::Prefix(p) => match p.kind() {
                std::path::Prefix::Disk(letter) | std::path::Prefix::VerbatimDisk(letter) => {
                    parts.push(char::from(letter).to_ascii_uppercase().to_string().into());
                }
                _ => return Err(RootError::UnsupportedPrefix(display(guest))),
            },
            Component::CurDir | Component::RootDir => {}
        }
    }
    Ok(parts)
}

fn split_parent(guest: &Path) -> Result<(&Path, &std::ffi::OsStr), RootError> {
    check_guest_path(guest)?;
    match (guest.parent(), guest.file_name()) {
        (Some(parent), Some(name)) => Ok((parent, name)),
        _ => Err(RootError::NotAbsolute(display(guest))),
    }
}

/// Walk `parts` below `base`, following symlinks as if `base` were `/`.
fn resolve_in(
    base: &Path,
    parts: Vec<std::ffi::OsString>,
    guest: &Path,
) -> Result<PathBuf, RootError> {
    let mut pending: Vec<std::ffi::OsString> = parts.into_iter().rev().collect();
    let mut cur = base.to_path_buf();
    let mut depth = 0usize; // components of `cur` below `base`
    let mut links = 0usize;
    while let Some(part) = pending.pop() {
        if part == ".." {
            if depth == 0 {
                return Err(RootError::Escape(display(guest)));
            }
            cur.pop();
            depth -= 1;
            continue;
        }
        let next = cur.join(&part);
        match fs::symlink_metadata(&next) {
            Ok(md) if md.file_type().is_symlink() => {
                links += 1;
                if links > MAX_LINKS {
                    return Err(RootError::TooManyLinks(display(guest)));
                }
                let target = fs::read_link(&next).map_err(io_err("read link", guest))?;
                if target.has_root() {
                    cur = base.to_path_buf();
                    depth = 0;
                }
                for comp in target.components().rev() {
                    match comp {
                        Component::Normal(p) => pending.push(p.into()),
                        Component::ParentDir => pending.push("..".into()),
                        Component::Prefix(p) => match p.kind() {
                            std::path::Prefix::Disk(l) | std::path::Prefix::VerbatimDisk(l) => {
                                pending.push(char::from(l).to_ascii_uppercase().to_string().into())
                            }
                            _ => return Err(RootError::UnsupportedPrefix(display(guest))),
                        },
                        _ => {}
                    }
                }
            }
            _ => {
                cur = next;
                depth += 1;
            }
        }
    }
    Ok(cur)
}

/// Move the finished temp file over `path`. On Windows an existing file is replaced with
/// `ReplaceFileW`, which keeps the replaced file's DACL, owner and attributes (a plain rename
/// would leave the temp file's ACL, inherited from the directory).
fn replace(tmp: &Path, path: &Path, exists: bool) -> io::Result<()> {
    #[cfg(windows)]
    if exists {
        return win::replace_file(path, tmp);
    }
    let _ = exists;
    fs::rename(tmp, path)
}

#[cfg(windows)]
#[allow(unsafe_code)]
mod win {
    use std::io;
    use std::os::windows::ffi::OsStrExt;
    use std::path::Path;

    use windows_sys::Win32::Storage::FileSystem::{REPLACEFILE_IGNORE_MERGE_ERRORS, ReplaceFileW};

    fn wide(p: &Path) -> Vec<u16> {
        p.as_os_str().encode_wide().chain(Some(0)).collect()
    }

    pub fn replace_file(target: &Path, replacement: &Path) -> io::Result<()> {
        let (target, replacement) = (wide(target), wide(replacement));
        // SAFETY: both are NUL-terminated UTF-16 paths alive for the call; no backup file, and
        // the two reserved pointers are null as documented.
        let ok = unsafe {
            ReplaceFileW(
                target.as_ptr(),
                replacement.as_ptr(),
                std::ptr::null(),
                REPLACEFILE_IGNORE_MERGE_ERRORS,
                std::ptr::null(),
                std::ptr::null(),
            )
        };
        if ok == 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

fn write_new(tmp: &Path, contents: &[u8], meta: FileMeta) -> io::Result<()> {
    let mut opts = OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut file = opts.open(tmp)?;
    file.write_all(contents)?;
    apply_meta_file(&file, meta)?;
    file.sync_all()
}

#[cfg(unix)]
fn apply_meta_file(file: &File, meta: FileMeta) -> io::Result<()> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let current = file.metadata()?;
    if (current.uid(), current.gid()) != (meta.uid, meta.gid) {
        std::os::unix::fs::fchown(file, Some(meta.uid), Some(meta.gid))?;
    }
    file.set_permissions(fs::Permissions::from_mode(meta.mode & 0o7777))
}

#[cfg(not(unix))]
fn apply_meta_file(_file: &File, _meta: FileMeta) -> io::Result<()> {
    Ok(())
}

#[cfg(unix)]
fn apply_meta_path(path: &Path, meta: FileMeta) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::os::unix::fs::chown(path, Some(meta.uid), Some(meta.gid))?;
    fs::set_permissions(path, fs::Permissions::from_mode(meta.mode & 0o7777))
}

#[cfg(not(unix))]
fn apply_meta_path(_path: &Path, _meta: FileMeta) -> io::Result<()> {
    Ok(())
}

#[cfg(unix)]
fn file_meta(md: &fs::Metadata) -> FileMeta {
    use std::os::unix::fs::MetadataExt;
    FileMeta {
        mode: md.mode() & 0o7777,
        uid: md.uid(),
        gid: md.gid(),
    }
}

#[cfg(not(unix))]
fn file_meta(_md: &fs::Metadata) -> FileMeta {
    FileMeta::default()
}

#[cfg(unix)]
fn own_ids() -> (u32, u32) {
    // SAFETY: getuid/getgid cannot fail and touch no memory.
    #[allow(unsafe_code)]
    unsafe {
        (libc::geteuid(), libc::getegid())
    }
}

#[cfg(not(unix))]
fn own_ids() -> (u32, u32) {
    (0, 0)
}

#[cfg(unix)]
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(not(unix))]
fn sync_dir(_dir: &Path) -> io::Result<()> {
    Ok(())
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

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};

    fn sandbox() -> (tempfile::TempDir, Root) {
        let dir = tempfile::tempdir().unwrap();
        let root = Root::sandbox(dir.path()).unwrap();
        (dir, root)
    }

    #[test]
    fn rejects_relative_and_dotdot() {
        let (_d, root) = sandbox();
        assert!(matches!(
            root.resolve("etc/x"),
            Err(RootError::NotAbsolute(_))
        ));
        assert!(matches!(
            root.resolve("/etc/../x"),
            Err(RootError::DotDot(_))
        ));
        assert!(matches!(
            Root::system().resolve("/a/../b"),
            Err(RootError::DotDot(_))
        ));
    }

    #[test]
    fn absolute_links_stay_inside_and_climbing_links_fail() {
        let (d, root) = sandbox();
        fs::create_dir_all(d.path().join("run/x")).unwrap();
        fs::create_dir_all(d.path().join("etc")).unwrap();
        symlink("/run/x/resolv.conf", d.path().join("etc/resolv.conf")).unwrap();
        root.write_atomic(
            "/etc/resolv.conf",
            b"nameserver 1.1.1.1\n",
            WriteOptions::default(),
        )
        .unwrap();
        assert_eq!(
            fs::read(d.path().join("run/x/resolv.conf")).unwrap(),
            b"nameserver 1.1.1.1\n"
        );
        assert!(root.is_symlink("/etc/resolv.conf"));
        symlink("../../../../../../etc/passwd", d.path().join("etc/evil")).unwrap();
        assert!(matches!(root.read("/etc/evil"), Err(RootError::Escape(_))));
        symlink("loop", d.path().join("etc/loop")).unwrap();
        assert!(matches!(
            root.read("/etc/loop"),
            Err(RootError::TooManyLinks(_))
        ));
        symlink("../run", d.path().join("etc/run")).unwrap();
        assert_eq!(
            root.resolve("/etc/run/x").unwrap(),
            d.path().canonicalize().unwrap().join("run/x")
        );
    }

    #[test]
    fn atomic_write_preserves_mode_and_owner_and_leaves_no_temp() {
        let (d, root) = sandbox();
        let p = d.path().join("shadow");
        fs::write(&p, b"old").unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o640)).unwrap();
        std::os::unix::fs::chown(&p, None, Some(42)).ok();
        let gid = fs::metadata(&p).unwrap().gid();
        root.write_atomic("/shadow", b"new", WriteOptions::mode(0o644))
            .unwrap();
        let md = fs::metadata(&p).unwrap();
        assert_eq!(md.mode() & 0o7777, 0o640);
        assert_eq!(md.gid(), gid);
        assert_eq!(fs::read(&p).unwrap(), b"new");
        assert_eq!(root.read_dir("/").unwrap(), vec!["shadow".to_string()]);
        root.write_atomic("/new", b"x", WriteOptions::mode(0o600))
            .unwrap();
        assert_eq!(root.metadata("/new").unwrap().mode, 0o600);
        root.write_atomic("/new", b"x", WriteOptions::mode(0o644).exact())
            .unwrap();
        assert_eq!(root.metadata("/new").unwrap().mode, 0o644);
    }

    #[test]
    fn missing_parent_is_a_clear_error() {
        let (_d, root) = sandbox();
        let err = root
            .write_atomic("/no/such/dir/f", b"x", WriteOptions::default())
            .unwrap_err();
        assert!(err.is_not_found());
        assert!(
            err.to_string().starts_with("cannot write '/no/such/dir/f'"),
            "{err}"
        );
        root.create_dir_all("/no/such/dir", 0o700).unwrap();
        root.write_atomic("/no/such/dir/f", b"x", WriteOptions::default())
            .unwrap();
        assert_eq!(root.metadata("/no/such").unwrap().mode, 0o700);
        assert_eq!(root.read_optional("/nothing").unwrap(), None);
    }

    #[test]
    fn write_in_place_changes_only_existing_regular_files() {
        let (d, root) = sandbox();
        std::fs::create_dir_all(d.path().join("sys/cpu1")).unwrap();
        std::fs::write(d.path().join("sys/cpu1/online"), b"1\n").unwrap();
        root.write_in_place("/sys/cpu1/online", b"0").unwrap();
        // No truncation, no temp file: the kernel sees one write of exactly these bytes.
        assert_eq!(
            std::fs::read(d.path().join("sys/cpu1/online")).unwrap(),
            b"0\n"
        );
        assert_eq!(root.read_dir("/sys/cpu1").unwrap(), ["online"]);
        assert!(
            root.write_in_place("/sys/cpu1/missing", b"0")
                .unwrap_err()
                .is_not_found()
        );
        assert!(!root.exists("/sys/cpu1/missing"));
        assert!(root.write_in_place("/sys/cpu1", b"0").is_err());
    }
}

/// Windows paths (run under Wine by scripts/test-all).
#[cfg(all(test, windows))]
mod windows_tests {
    use super::*;

    #[test]
    fn drive_letters_are_directories_of_the_sandbox() {
        let d = tempfile::tempdir().unwrap();
        let root = Root::sandbox(d.path()).unwrap();
        let base = root.base().unwrap().to_path_buf();
        assert_eq!(
            root.resolve(r"C:\x\y.txt").unwrap(),
            base.join(r"C\x\y.txt")
        );
        assert_eq!(root.resolve("d:/x").unwrap(), base.join(r"D\x"));
        assert_eq!(
            root.resolve(r"\etc\hosts").unwrap(),
            base.join(r"etc\hosts")
        );
        for bad in [r"\\server\share\x", r"\\.\PhysicalDrive0", r"\\?\UNC\s\x\y"] {
            assert!(
                matches!(root.resolve(bad), Err(RootError::UnsupportedPrefix(_))),
                "{bad}"
            );
        }
        assert!(matches!(
            root.resolve("C:rel"),
            Err(RootError::NotAbsolute(_))
        ));
        assert!(matches!(
            root.resolve(r"C:\a\..\b"),
            Err(RootError::DotDot(_))
        ));
    }

    #[test]
    fn replacing_a_file_goes_through_replacefile() {
        let d = tempfile::tempdir().unwrap();
        let root = Root::sandbox(d.path()).unwrap();
        root.create_dir_all(r"C:\data", 0o755).unwrap();
        root.write_atomic(r"C:\data\f.txt", b"one", WriteOptions::default())
            .unwrap();
        root.write_atomic(r"C:\data\f.txt", b"two", WriteOptions::default())
            .unwrap();
        assert_eq!(root.read(r"C:\data\f.txt").unwrap(), b"two");
        // No temp file is left behind by either path.
        assert_eq!(
            root.read_dir(r"C:\data").unwrap(),
            vec!["f.txt".to_string()]
        );
    }
}
