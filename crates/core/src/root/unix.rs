//! The handle-based implementation of [`Root`] (Linux, FreeBSD): see the module docs of
//! `root` for the rules. Every function walks to the directory that holds the path's last
//! component and then acts on that directory's handle.

use std::ffi::{CString, OsStr, OsString};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, OnceLock};

use rustix::fs::{self as rfs, AtFlags, FileType, Gid, Mode, OFlags, RawMode, Stat, Uid};
use rustix::io::Errno;
use zeroize::Zeroizing;

use super::{
    FileMeta, GuestPath, MAX_LINKS, Root, RootError, Snapshot, WriteOptions, check_guest_path,
    display, io_err, own_ids, temp_name,
};

mod open;
pub(super) use open::open_file;

/// Deepest tree [`remove_dir_all`] descends into (one open handle per level).
const MAX_REMOVE_DEPTH: usize = 256;

/// The system root's handle, opened once.
pub(super) fn system_handle() -> Arc<OwnedFd> {
    static SYSTEM: OnceLock<Arc<OwnedFd>> = OnceLock::new();
    SYSTEM
        .get_or_init(|| {
            // Opening `/` cannot fail in a running system; if it did, nothing else could work.
            Arc::new(open_base(Path::new("/")).expect("open the root directory '/'"))
        })
        .clone()
}

/// A sandbox directory's handle.
pub(super) fn open_base(base: &Path) -> io::Result<OwnedFd> {
    Ok(rfs::openat(rfs::CWD, base, dir_flags(), Mode::empty())?)
}

fn dir_flags() -> OFlags {
    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NOCTTY
}

/// Flags to open something that must turn out to be a regular file: a FIFO does not block,
/// a terminal does not become ours, a link is not followed.
fn file_flags() -> OFlags {
    OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC | OFlags::NOCTTY
}

#[allow(clippy::unnecessary_cast)] // RawMode is u32 on Linux, u16 on FreeBSD
fn mode(bits: u32) -> Mode {
    Mode::from_bits_truncate((bits & 0o7777) as RawMode)
}

fn errno<'a>(op: &'static str, guest: &'a Path) -> impl FnOnce(Errno) -> RootError + 'a {
    move |e| io_err(op, guest)(io::Error::from(e))
}

/// A directory handle on the way: the root's (shared) or one the walk opened.
enum DirFd {
    Root(Arc<OwnedFd>),
    Own(OwnedFd),
}

impl AsFd for DirFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            Self::Root(fd) => fd.as_fd(),
            Self::Own(fd) => fd.as_fd(),
        }
    }
}

impl DirFd {
    fn into_owned(self) -> io::Result<OwnedFd> {
        match self {
            Self::Root(fd) => fd.try_clone(),
            Self::Own(fd) => Ok(fd),
        }
    }
}

/// Where a walk ended: the directory holding `name` (or, without a name, that directory
/// itself), and the guest path of that directory as actually reached.
struct Reached {
    dir: DirFd,
    path: GuestPath,
    name: Option<OsString>,
    /// Components below a missing one (only [`Want::Resolve`]).
    rest: Vec<OsString>,
}

impl Reached {
    /// The guest path of the target (directory + name).
    fn target(&self) -> GuestPath {
        let mut p = self.path.clone();
        p.names.extend(self.name.clone());
        p
    }

    fn name(&self, guest: &Path, op: &'static str) -> Result<&OsStr, RootError> {
        self.name
            .as_deref()
            .ok_or_else(|| io_err(op, guest)(io::Error::from(Errno::ISDIR)))
    }
}

/// What the walk is for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Want {
    /// The directory holding the last component; `follow`: a link there is followed.
    Entry { follow: bool },
    /// The path itself as a directory, `create`d (with that mode) where missing.
    Dir { create: Option<u32> },
    /// A host path for an external command: missing components are kept as given.
    Resolve { follow: bool },
    /// Every existing directory on the way must be trusted; stops at a missing one.
    Private,
}

/// Whether links in the directory behind `fd` may be followed: it belongs to root (or to us)
/// and nobody else may write to it.
fn trusted(fd: impl AsFd) -> io::Result<bool> {
    let st = rfs::fstat(fd)?;
    Ok(trusted_stat(&st))
}

fn trusted_stat(st: &Stat) -> bool {
    let owner_ok = st.st_uid == 0 || st.st_uid == own_ids().0;
    owner_ok && st_mode(st) & 0o022 == 0
}

#[allow(clippy::useless_conversion)] // mode_t is u16 on FreeBSD
fn st_mode(st: &Stat) -> u32 {
    u32::from(st.st_mode)
}

#[allow(clippy::useless_conversion)] // nlink_t differs between platforms
fn nlink(st: &Stat) -> u64 {
    u64::from(st.st_nlink)
}

fn is_link(st: &Stat) -> bool {
    FileType::from_raw_mode(st.st_mode) == FileType::Symlink
}

fn kind_name(st: &Stat) -> &'static str {
    match FileType::from_raw_mode(st.st_mode) {
        FileType::RegularFile => "regular file",
        FileType::Directory => "directory",
        FileType::Symlink => "symbolic link",
        FileType::Fifo => "FIFO",
        FileType::Socket => "socket",
        FileType::CharacterDevice => "character device",
        FileType::BlockDevice => "block device",
        _ => "special file",
    }
}

fn meta_of(st: &Stat) -> FileMeta {
    FileMeta {
        mode: st_mode(st) & 0o7777,
        uid: st.st_uid,
        gid: st.st_gid,
    }
}

fn lstat(dir: impl AsFd, name: &OsStr) -> Result<Stat, Errno> {
    rfs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)
}

/// The guest path `names` + `name` for messages.
fn shown(path: &GuestPath, name: &OsStr) -> String {
    let mut p = path.clone();
    p.names.push(name.to_os_string());
    p.to_string()
}

/// Walk `guest` from the root's handle (see the module docs).
fn walk(root: &Root, guest: &Path, want: Want) -> Result<Reached, RootError> {
    let parts = check_guest_path(guest)?;
    if let Some(reached) = fast::walk(root, &parts, want) {
        return Ok(reached);
    }
    let mut stack: Vec<DirFd> = vec![DirFd::Root(root.handle.clone())];
    let mut path = GuestPath::default();
    let mut pending: Vec<OsString> = parts.names.into_iter().rev().collect();
    let mut links = 0usize;
    while let Some(part) = pending.pop() {
        if part == ".." {
            if stack.len() > 1 {
                stack.pop();
                path.names.pop();
            }
            continue;
        }
        if part.is_empty() || part == "." {
            continue;
        }
        let dir = stack.last().expect("the root is never popped");
        let last = pending.is_empty();
        let follow_last = match want {
            Want::Entry { follow } | Want::Resolve { follow } if last => Some(follow),
            _ => None,
        };
        if let Some(follow) = follow_last {
            let st = match lstat(dir, &part) {
                Ok(st) => Some(st),
                Err(Errno::NOENT) => None,
                Err(e) => return Err(errno("look up", guest)(e)),
            };
            if follow && st.as_ref().is_some_and(is_link) {
                follow_link(
                    &part,
                    &mut stack,
                    &mut path,
                    &mut pending,
                    &mut links,
                    guest,
                )?;
                continue;
            }
            return Ok(reached(stack, path, Some(part), Vec::new()));
        }
        match open_dir(dir, &part) {
            Ok(fd) => {
                if want == Want::Private && !trusted(&fd).map_err(io_err("look up", guest))? {
                    return Err(RootError::NotPrivate(shown(&path, &part)));
                }
                stack.push(DirFd::Own(fd));
                path.names.push(part);
            }
            Err(Errno::NOENT) => match want {
                Want::Dir { create: Some(mode) } => {
                    let fd = make_dir(root, dir, &path, &part, mode, guest)?;
                    stack.push(DirFd::Own(fd));
                    path.names.push(part);
                }
                Want::Private => return Ok(reached(stack, path, None, Vec::new())),
                Want::Resolve { .. } => {
                    let mut rest = vec![part];
                    rest.extend(pending.into_iter().rev());
                    return Ok(reached(stack, path, None, rest));
                }
                _ => return Err(errno("open", guest)(Errno::NOENT)),
            },
            Err(e @ (Errno::LOOP | Errno::MLINK | Errno::NOTDIR)) => match lstat(dir, &part) {
                Ok(st) if is_link(&st) => follow_link(
                    &part,
                    &mut stack,
                    &mut path,
                    &mut pending,
                    &mut links,
                    guest,
                )?,
                Ok(_) => return Err(errno("open", guest)(Errno::NOTDIR)),
                Err(_) => return Err(errno("open", guest)(e)),
            },
            Err(e) => return Err(errno("open", guest)(e)),
        }
    }
    Ok(reached(stack, path, None, Vec::new()))
}

fn reached(
    mut stack: Vec<DirFd>,
    path: GuestPath,
    name: Option<OsString>,
    rest: Vec<OsString>,
) -> Reached {
    Reached {
        dir: stack.pop().expect("the root is never popped"),
        path,
        name,
        rest,
    }
}

fn open_dir(dir: impl AsFd, name: &OsStr) -> Result<OwnedFd, Errno> {
    rfs::openat(dir, name, dir_flags(), Mode::empty())
}

/// `mkdirat` + open without following + exact mode through the handle (only on a directory
/// this call created and still ours, not one an attacker put there in between).
fn make_dir(
    root: &Root,
    dir: &DirFd,
    path: &GuestPath,
    name: &OsStr,
    mode_bits: u32,
    guest: &Path,
) -> Result<OwnedFd, RootError> {
    let mut target = path.clone();
    target.names.push(name.to_os_string());
    root.check_policy(&target, guest, true)?;
    let created = match rfs::mkdirat(dir, name, mode(0o700)) {
        Ok(()) => true,
        Err(Errno::EXIST) => false,
        Err(e) => return Err(errno("create directory", guest)(e)),
    };
    let fd = open_dir(dir, name).map_err(|e| refuse_link(dir, name, path, guest, e))?;
    if created {
        let st = rfs::fstat(&fd).map_err(errno("create directory", guest))?;
        if st.st_uid == own_ids().0 {
            rfs::fchmod(&fd, mode(mode_bits)).map_err(errno("create directory", guest))?;
        }
    }
    Ok(fd)
}

/// Turn an open failure on `name` into the clearest error: a link is named as one.
fn refuse_link(
    dir: impl AsFd,
    name: &OsStr,
    path: &GuestPath,
    guest: &Path,
    e: Errno,
) -> RootError {
    match lstat(dir, name) {
        Ok(st) if is_link(&st) => RootError::IsLink(shown(path, name)),
        Ok(st)
            if !matches!(e, Errno::NOENT)
                && FileType::from_raw_mode(st.st_mode) != FileType::Directory =>
        {
            errno("open", guest)(Errno::NOTDIR)
        }
        _ => errno("open", guest)(e),
    }
}

/// Follow the link `name` of the directory on top of `stack`, as if the root were `/`.
fn follow_link(
    name: &OsStr,
    stack: &mut Vec<DirFd>,
    path: &mut GuestPath,
    pending: &mut Vec<OsString>,
    links: &mut usize,
    guest: &Path,
) -> Result<(), RootError> {
    let dir = stack.last().expect("the root is never popped");
    if !trusted(dir).map_err(io_err("look up", guest))? {
        return Err(RootError::UntrustedLink(shown(path, name)));
    }
    *links += 1;
    if *links > MAX_LINKS {
        return Err(RootError::TooManyLinks(display(guest)));
    }
    let target: CString =
        rfs::readlinkat(dir, name, Vec::new()).map_err(errno("read link", guest))?;
    let target = Path::new(OsStr::from_bytes(target.as_bytes()));
    if target.as_os_str().is_empty() {
        return Err(errno("look up", guest)(Errno::NOENT));
    }
    if target.has_root() {
        stack.truncate(1);
        path.names.clear();
    }
    for comp in target.components().rev() {
        match comp {
            Component::Normal(p) => pending.push(p.to_os_string()),
            Component::ParentDir => pending.push("..".into()),
            _ => {}
        }
    }
    Ok(())
}

/// Linux's `openat2` reaches a directory in one call when no link is on the way.
#[cfg(target_os = "linux")]
mod fast {
    use std::sync::atomic::{AtomicBool, Ordering};

    use rustix::fs::{Mode, ResolveFlags};
    use rustix::io::Errno;

    use super::{DirFd, GuestPath, Reached, Root, Want, dir_flags, is_link, lstat};

    /// Cleared when the kernel (or a seccomp filter) does not offer `openat2`.
    static AVAILABLE: AtomicBool = AtomicBool::new(true);

    #[cfg(test)]
    thread_local! {
        /// Unit tests run every case through the walk too.
        pub(in crate::root) static DISABLED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    }

    pub(super) fn walk(root: &Root, parts: &GuestPath, want: Want) -> Option<Reached> {
        #[cfg(test)]
        if DISABLED.with(|d| d.get()) {
            return None;
        }
        if !AVAILABLE.load(Ordering::Relaxed) {
            return None;
        }
        let (dirs, name) = match want {
            Want::Entry { .. } => {
                let (name, dirs) = parts.names.split_last()?;
                (dirs, Some(name.clone()))
            }
            Want::Dir { create: None } => (&parts.names[..], None),
            _ => return None,
        };
        let mut rel = std::ffi::OsString::from(".");
        for d in dirs {
            rel.push("/");
            rel.push(d);
        }
        let how = ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS | ResolveFlags::NO_SYMLINKS;
        let fd = match rustix::fs::openat2(&*root.handle, &rel, dir_flags(), Mode::empty(), how) {
            Ok(fd) => fd,
            Err(Errno::NOSYS | Errno::PERM | Errno::INVAL | Errno::TOOBIG) => {
                AVAILABLE.store(false, Ordering::Relaxed);
                return None;
            }
            // A link on the way, something missing, a race: the walk says what it is.
            Err(_) => return None,
        };
        if let (Want::Entry { follow: true }, Some(n)) = (want, &name) {
            if lstat(&fd, n).is_ok_and(|st| is_link(&st)) {
                return None;
            }
        }
        Some(Reached {
            dir: DirFd::Own(fd),
            path: GuestPath {
                drive: None,
                names: dirs.to_vec(),
            },
            name,
            rest: Vec::new(),
        })
    }
}

#[cfg(not(target_os = "linux"))]
mod fast {
    use super::{GuestPath, Reached, Root, Want};

    pub(super) fn walk(_root: &Root, _parts: &GuestPath, _want: Want) -> Option<Reached> {
        None
    }
}

#[cfg(all(test, target_os = "linux"))]
pub(super) fn disable_fast_path(disabled: bool) {
    fast::DISABLED.with(|d| d.set(disabled));
}

#[cfg(all(test, not(target_os = "linux")))]
pub(super) fn disable_fast_path(_disabled: bool) {}

pub(super) fn resolve(root: &Root, guest: &Path, follow: bool) -> Result<PathBuf, RootError> {
    let r = walk(root, guest, Want::Resolve { follow })?;
    let mut host = root.base.clone().unwrap_or_else(|| PathBuf::from("/"));
    for n in r.path.names.iter().chain(&r.name).chain(&r.rest) {
        host.push(n);
    }
    Ok(host)
}

/// Open the regular file `name` of `r` for reading, refusing anything else (and, in a
/// directory an unprivileged user controls, a file they could have linked from elsewhere).
fn open_regular(
    r: &Reached,
    name: &OsStr,
    guest: &Path,
) -> Result<(std::fs::File, Stat), RootError> {
    let before = lstat(&r.dir, name).map_err(errno("read", guest))?;
    check_regular(&before, r, name)?;
    let fd = rfs::openat(&r.dir, name, file_flags(), Mode::empty())
        .map_err(|e| refuse_link(&r.dir, name, &r.path, guest, e))?;
    let st = rfs::fstat(&fd).map_err(errno("read", guest))?;
    check_regular(&st, r, name)?;
    if let Some(reason) = untrusted_reason(r, &st).map_err(io_err("read", guest))? {
        return Err(RootError::Untrusted {
            path: shown(&r.path, name),
            reason,
        });
    }
    Ok((std::fs::File::from(fd), st))
}

fn check_regular(st: &Stat, r: &Reached, name: &OsStr) -> Result<(), RootError> {
    match FileType::from_raw_mode(st.st_mode) {
        FileType::RegularFile => Ok(()),
        FileType::Symlink => Err(RootError::IsLink(shown(&r.path, name))),
        _ => Err(RootError::NotRegular {
            path: shown(&r.path, name),
            kind: kind_name(st),
        }),
    }
}

/// Why a regular file in `r`'s directory must not be read (`None`: it may).
fn untrusted_reason(r: &Reached, st: &Stat) -> io::Result<Option<&'static str>> {
    let dir = rfs::fstat(&r.dir)?;
    if trusted_stat(&dir) {
        return Ok(None);
    }
    Ok(if nlink(st) > 1 {
        Some("has other hard links")
    } else if st.st_uid != dir.st_uid {
        Some("belongs to another account than the directory")
    } else {
        None
    })
}

fn read_bounded(
    mut file: std::fs::File,
    st: &Stat,
    limit: u64,
    shown: String,
    guest: &Path,
) -> Result<Vec<u8>, RootError> {
    let too_large = || RootError::TooLarge {
        path: shown.clone(),
        limit,
    };
    if u64::try_from(st.st_size).unwrap_or(0) > limit {
        return Err(too_large());
    }
    let mut buf = Zeroizing::new(Vec::new());
    (&mut file)
        .take(limit.saturating_add(1))
        .read_to_end(&mut buf)
        .map_err(io_err("read", guest))?;
    if buf.len() as u64 > limit {
        return Err(too_large());
    }
    Ok(std::mem::take(&mut *buf))
}

pub(super) fn read_limited(root: &Root, guest: &Path, limit: u64) -> Result<Vec<u8>, RootError> {
    let r = walk(root, guest, Want::Entry { follow: true })?;
    let name = r.name(guest, "read")?;
    let (file, st) = open_regular(&r, name, guest)?;
    read_bounded(file, &st, limit, shown(&r.path, name), guest)
}

pub(super) fn snapshot(root: &Root, guest: &Path, limit: u64) -> Result<Snapshot, RootError> {
    let r = match walk(root, guest, Want::Entry { follow: false }) {
        Err(e) if e.is_not_found() => return Ok(Snapshot::Absent),
        other => other?,
    };
    let name = r.name(guest, "read")?;
    let st = match lstat(&r.dir, name) {
        Err(Errno::NOENT) => return Ok(Snapshot::Absent),
        Err(e) => return Err(errno("read", guest)(e)),
        Ok(st) => st,
    };
    if is_link(&st) {
        let target =
            rfs::readlinkat(&r.dir, name, Vec::new()).map_err(errno("read link", guest))?;
        return Ok(Snapshot::Link(PathBuf::from(OsStr::from_bytes(
            target.as_bytes(),
        ))));
    }
    check_regular(&st, &r, name)?;
    if let Some(reason) = untrusted_reason(&r, &st).map_err(io_err("read", guest))? {
        return Ok(Snapshot::Unread {
            meta: meta_of(&st),
            reason,
        });
    }
    let (file, st) = open_regular(&r, name, guest)?;
    let contents = read_bounded(file, &st, limit, shown(&r.path, name), guest)?;
    Ok(Snapshot::File {
        contents: Zeroizing::new(contents),
        meta: meta_of(&st),
    })
}

pub(super) fn exists(root: &Root, guest: &Path) -> bool {
    match walk(root, guest, Want::Entry { follow: true }) {
        Ok(r) => r.name.as_deref().is_none_or(|n| lstat(&r.dir, n).is_ok()),
        Err(_) => false,
    }
}

pub(super) fn is_dir(root: &Root, guest: &Path) -> bool {
    walk(root, guest, Want::Dir { create: None }).is_ok()
}

pub(super) fn is_symlink(root: &Root, guest: &Path) -> bool {
    match walk(root, guest, Want::Entry { follow: false }) {
        Ok(Reached {
            dir, name: Some(n), ..
        }) => lstat(&dir, &n).is_ok_and(|st| is_link(&st)),
        _ => false,
    }
}

pub(super) fn read_link(root: &Root, guest: &Path) -> Result<PathBuf, RootError> {
    let r = walk(root, guest, Want::Entry { follow: false })?;
    let name = r.name(guest, "read link")?;
    let target = rfs::readlinkat(&r.dir, name, Vec::new()).map_err(errno("read link", guest))?;
    Ok(PathBuf::from(OsStr::from_bytes(target.as_bytes())))
}

pub(super) fn metadata(root: &Root, guest: &Path) -> Result<FileMeta, RootError> {
    let r = walk(root, guest, Want::Entry { follow: true })?;
    let st = match &r.name {
        Some(n) => lstat(&r.dir, n),
        None => rfs::fstat(&r.dir),
    }
    .map_err(errno("stat", guest))?;
    Ok(meta_of(&st))
}

pub(super) fn read_dir(root: &Root, guest: &Path) -> Result<Vec<String>, RootError> {
    let r = walk(root, guest, Want::Dir { create: None })?;
    let fd = r.dir.into_owned().map_err(io_err("list", guest))?;
    let mut dir = rfs::Dir::new(fd).map_err(errno("list", guest))?;
    let mut names = Vec::new();
    while let Some(entry) = dir.read() {
        let entry = entry.map_err(errno("list", guest))?;
        let name = entry.file_name().to_bytes();
        if name != b"." && name != b".." {
            names.push(String::from_utf8_lossy(name).into_owned());
        }
    }
    names.sort();
    Ok(names)
}

pub(super) fn check_private(root: &Root, guest: &Path) -> Result<(), RootError> {
    walk(root, guest, Want::Private).map(drop)
}

pub(super) fn create_dir_all(root: &Root, guest: &Path, mode: u32) -> Result<(), RootError> {
    walk(root, guest, Want::Dir { create: Some(mode) }).map(drop)
}

pub(super) fn create_dir_owned(
    root: &Root,
    guest: &Path,
    meta: FileMeta,
) -> Result<bool, RootError> {
    let r = walk(root, guest, Want::Entry { follow: false })?;
    let name = r.name(guest, "create directory")?;
    root.check_policy(&r.target(), guest, true)?;
    let created = match rfs::mkdirat(&r.dir, name, mode(0o700)) {
        Ok(()) => true,
        Err(Errno::EXIST) => false,
        Err(e) => return Err(errno("create directory", guest)(e)),
    };
    let fd = open_dir(&r.dir, name).map_err(|e| refuse_link(&r.dir, name, &r.path, guest, e))?;
    if created {
        let st = rfs::fstat(&fd).map_err(errno("create directory", guest))?;
        // Not ours any more (swapped in between): theirs already, nothing to hand over.
        if st.st_uid == own_ids().0 {
            set_fd_meta(&fd, &st, meta).map_err(errno("create directory", guest))?;
        }
    }
    Ok(created)
}

/// Owner first (a chown clears set-id bits), then the mode, both on the handle.
fn set_fd_meta(fd: impl AsFd, current: &Stat, meta: FileMeta) -> Result<(), Errno> {
    if (current.st_uid, current.st_gid) != (meta.uid, meta.gid) {
        rfs::fchown(
            &fd,
            Some(Uid::from_raw(meta.uid)),
            Some(Gid::from_raw(meta.gid)),
        )?;
    }
    rfs::fchmod(&fd, mode(meta.mode))
}

pub(super) fn write_file(
    root: &Root,
    guest: &Path,
    contents: &[u8],
    opts: WriteOptions,
    follow: bool,
) -> Result<(), RootError> {
    let r = walk(root, guest, Want::Entry { follow })?;
    let name = r.name(guest, "write")?;
    root.check_policy(&r.target(), guest, false)?;
    let dir_st = rfs::fstat(&r.dir).map_err(errno("write", guest))?;
    let user_dir = !trusted_stat(&dir_st);
    let meta = match lstat(&r.dir, name) {
        Err(Errno::NOENT) => opts.new_meta(),
        Err(e) => return Err(errno("write", guest)(e)),
        Ok(st) => match FileType::from_raw_mode(st.st_mode) {
            FileType::RegularFile => existing_meta(&st, &dir_st, user_dir, opts),
            // A link here was not followed: replaced when asked to, else refused (it appeared
            // after the walk, or its directory is not trusted).
            FileType::Symlink if !follow => opts.new_meta(),
            FileType::Symlink if user_dir => {
                return Err(RootError::UntrustedLink(shown(&r.path, name)));
            }
            FileType::Symlink => return Err(RootError::IsLink(shown(&r.path, name))),
            FileType::Directory => return Err(errno("write", guest)(Errno::ISDIR)),
            _ => {
                return Err(RootError::NotRegular {
                    path: shown(&r.path, name),
                    kind: kind_name(&st),
                });
            }
        },
    };
    let tmp = temp_name(name);
    let result = write_temp(&r.dir, &tmp, contents, meta)
        .and_then(|()| rfs::renameat(&r.dir, &tmp, &r.dir, name))
        .and_then(|()| rfs::fsync(&r.dir));
    if result.is_err() {
        let _ = rfs::unlinkat(&r.dir, &tmp, AtFlags::empty());
    }
    result.map_err(errno("write", guest))
}

pub(super) fn write_in_place(root: &Root, guest: &Path, contents: &[u8]) -> Result<(), RootError> {
    let r = walk(root, guest, Want::Entry { follow: true })?;
    let name = r.name(guest, "write")?;
    root.check_policy(&r.target(), guest, false)?;
    let before = lstat(&r.dir, name).map_err(errno("open", guest))?;
    check_regular(&before, &r, name)?;
    let flags =
        OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC | OFlags::NOCTTY;
    let fd = rfs::openat(&r.dir, name, flags, Mode::empty())
        .map_err(|e| refuse_link(&r.dir, name, &r.path, guest, e))?;
    let st = rfs::fstat(&fd).map_err(errno("write", guest))?;
    check_regular(&st, &r, name)?;
    std::fs::File::from(fd)
        .write_all(contents)
        .map_err(io_err("write", guest))
}

/// The mode and owner the new file gets when it replaces the regular file `st`.
fn existing_meta(st: &Stat, dir: &Stat, user_dir: bool, opts: WriteOptions) -> FileMeta {
    if !opts.preserve {
        return opts.new_meta();
    }
    if !user_dir {
        return meta_of(st);
    }
    // In a user's directory only the user's own single-link file is a model, without set-id bits.
    if nlink(st) == 1 && st.st_uid == dir.st_uid {
        let mut m = meta_of(st);
        m.mode &= 0o1777;
        m
    } else {
        opts.new_meta()
    }
}

fn write_temp(dir: impl AsFd, tmp: &OsStr, contents: &[u8], meta: FileMeta) -> Result<(), Errno> {
    let flags = OFlags::WRONLY
        | OFlags::CREATE
        | OFlags::EXCL
        | OFlags::NOFOLLOW
        | OFlags::CLOEXEC
        | OFlags::NOCTTY;
    let fd = rfs::openat(dir, tmp, flags, mode(0o600))?;
    let mut file = std::fs::File::from(fd);
    file.write_all(contents).map_err(to_errno)?;
    let st = rfs::fstat(&file)?;
    set_fd_meta(&file, &st, meta)?;
    rfs::fsync(&file)
}

fn to_errno(e: io::Error) -> Errno {
    e.raw_os_error().map_or(Errno::IO, Errno::from_raw_os_error)
}

pub(super) fn remove_file(root: &Root, guest: &Path) -> Result<(), RootError> {
    let r = match walk(root, guest, Want::Entry { follow: false }) {
        Err(e) if e.is_not_found() => return Ok(()),
        other => other?,
    };
    let name = r.name(guest, "remove")?;
    root.check_policy(&r.target(), guest, false)?;
    match rfs::unlinkat(&r.dir, name, AtFlags::empty()) {
        Ok(()) | Err(Errno::NOENT) => Ok(()),
        Err(e) => Err(errno("remove", guest)(e)),
    }
}

pub(super) fn remove_dir_all(root: &Root, guest: &Path) -> Result<(), RootError> {
    let r = match walk(root, guest, Want::Entry { follow: false }) {
        Err(e) if e.is_not_found() => return Ok(()),
        other => other?,
    };
    let name = r.name(guest, "remove")?;
    root.check_policy(&r.target(), guest, false)?;
    remove_entry(&r.dir, name, 0).map_err(errno("remove", guest))
}

/// Remove `name` of `dir` and, if it is a directory, everything in it: by handle, never
/// following a link.
fn remove_entry(dir: impl AsFd, name: &OsStr, depth: usize) -> Result<(), Errno> {
    let st = match lstat(&dir, name) {
        Err(Errno::NOENT) => return Ok(()),
        other => other?,
    };
    if FileType::from_raw_mode(st.st_mode) != FileType::Directory {
        return match rfs::unlinkat(&dir, name, AtFlags::empty()) {
            Err(Errno::NOENT) => Ok(()),
            other => other,
        };
    }
    if depth >= MAX_REMOVE_DEPTH {
        return Err(Errno::NAMETOOLONG);
    }
    let sub = open_dir(&dir, name)?;
    let mut entries = rfs::Dir::new(sub.try_clone().map_err(to_errno)?)?;
    let mut names = Vec::new();
    while let Some(entry) = entries.read() {
        let n = entry?.file_name().to_bytes().to_vec();
        if n != b"." && n != b".." {
            names.push(OsStr::from_bytes(&n).to_os_string());
        }
    }
    for n in names {
        remove_entry(&sub, &n, depth + 1)?;
    }
    match rfs::unlinkat(&dir, name, AtFlags::REMOVEDIR) {
        Err(Errno::NOENT) => Ok(()),
        other => other,
    }
}

pub(super) fn remove_dir(root: &Root, guest: &Path) -> Result<(), RootError> {
    let r = match walk(root, guest, Want::Entry { follow: false }) {
        Err(e) if e.is_not_found() => return Ok(()),
        other => other?,
    };
    let name = r.name(guest, "remove")?;
    root.check_policy(&r.target(), guest, true)?;
    match lstat(&r.dir, name) {
        Err(Errno::NOENT) => return Ok(()),
        Err(e) => return Err(errno("remove", guest)(e)),
        Ok(st) if is_link(&st) => return Err(RootError::IsLink(shown(&r.path, name))),
        Ok(_) => {}
    }
    match rfs::unlinkat(&r.dir, name, AtFlags::REMOVEDIR) {
        Ok(()) | Err(Errno::NOENT) => Ok(()),
        Err(e) => Err(errno("remove", guest)(e)),
    }
}

pub(super) fn open_private(
    root: &Root,
    guest: &Path,
) -> Result<(std::fs::File, FileMeta), RootError> {
    if let Some(parent) = guest.parent() {
        walk(root, parent, Want::Private)?;
    }
    let r = walk(root, guest, Want::Entry { follow: false })?;
    let name = r.name(guest, "open")?;
    if !trusted(&r.dir).map_err(io_err("open", guest))? {
        return Err(RootError::NotPrivate(r.path.to_string()));
    }
    let (file, st) = open_regular(&r, name, guest)?;
    if !trusted_stat(&st) {
        return Err(RootError::NotPrivate(shown(&r.path, name)));
    }
    Ok((file, meta_of(&st)))
}

pub(super) fn symlink(root: &Root, guest: &Path, target: &Path) -> Result<(), RootError> {
    let r = walk(root, guest, Want::Entry { follow: false })?;
    let name = r.name(guest, "create link")?;
    root.check_policy(&r.target(), guest, false)?;
    let tmp = super::link_temp_name();
    let result = rfs::symlinkat(target, &r.dir, &tmp)
        .and_then(|()| rfs::renameat(&r.dir, &tmp, &r.dir, name));
    if result.is_err() {
        let _ = rfs::unlinkat(&r.dir, &tmp, AtFlags::empty());
    }
    result.map_err(errno("create link", guest))
}

pub(super) fn rename(root: &Root, from: &Path, to: &Path) -> Result<(), RootError> {
    let a = walk(root, from, Want::Entry { follow: false })?;
    let b = walk(root, to, Want::Entry { follow: false })?;
    root.check_policy(&a.target(), from, false)?;
    root.check_policy(&b.target(), to, false)?;
    let (na, nb) = (a.name(from, "rename")?, b.name(to, "rename")?);
    rfs::renameat(&a.dir, na, &b.dir, nb).map_err(errno("rename", from))
}

pub(super) fn set_meta(root: &Root, guest: &Path, meta: FileMeta) -> Result<(), RootError> {
    let r = walk(root, guest, Want::Entry { follow: true })?;
    root.check_policy(&r.target(), guest, false)?;
    let op = "change mode of";
    let Some(name) = &r.name else {
        let st = rfs::fstat(&r.dir).map_err(errno(op, guest))?;
        return set_fd_meta(&r.dir, &st, meta).map_err(errno(op, guest));
    };
    let before = lstat(&r.dir, name).map_err(errno(op, guest))?;
    let kind = FileType::from_raw_mode(before.st_mode);
    if kind != FileType::Directory {
        check_regular(&before, &r, name)?;
    }
    let fd = rfs::openat(&r.dir, name, file_flags(), Mode::empty())
        .map_err(|e| refuse_link(&r.dir, name, &r.path, guest, e))?;
    let st = rfs::fstat(&fd).map_err(errno(op, guest))?;
    if FileType::from_raw_mode(st.st_mode) != kind || st.st_ino != before.st_ino {
        return Err(RootError::NotRegular {
            path: shown(&r.path, name),
            kind: "file that changed while it was opened",
        });
    }
    set_fd_meta(&fd, &st, meta).map_err(errno(op, guest))
}

pub(super) fn open_lock_file(
    root: &Root,
    guest: &Path,
    mode_bits: u32,
) -> Result<std::fs::File, RootError> {
    let r = walk(root, guest, Want::Entry { follow: true })?;
    let name = r.name(guest, "open")?;
    let flags = OFlags::RDWR
        | OFlags::CREATE
        | OFlags::NOFOLLOW
        | OFlags::NONBLOCK
        | OFlags::CLOEXEC
        | OFlags::NOCTTY;
    if let Ok(st) = lstat(&r.dir, name) {
        check_regular(&st, &r, name)?;
    }
    let fd = rfs::openat(&r.dir, name, flags, mode(mode_bits))
        .map_err(|e| refuse_link(&r.dir, name, &r.path, guest, e))?;
    let st = rfs::fstat(&fd).map_err(errno("open", guest))?;
    check_regular(&st, &r, name)?;
    Ok(std::fs::File::from(fd))
}
