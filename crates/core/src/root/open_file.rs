//! [`Root::open_file`]: a file held open for the host (qga's `guest-file-open`), reached by
//! directory handle, never by path string:
//!
//! - the walk starts at a handle of the root and opens each directory relative to the one
//!   before it with `O_DIRECTORY | O_NOFOLLOW`, as if the root were `/` (an absolute link target
//!   starts again at the root, `..` never climbs above it);
//! - a symlink is followed only in a directory that belongs to root (or to guestd's uid) and
//!   that nobody else may write to; in any other directory (a home, `/tmp`) a link on the way,
//!   the last component included, is refused;
//! - the caller's `allowed` check sees the guest path the walk actually reached, before
//!   anything is created or truncated;
//! - the file is opened relative to its directory's handle with `O_NOFOLLOW | O_NONBLOCK |
//!   O_NOCTTY | O_CLOEXEC` (a FIFO cannot block guestd, a link swapped in after the walk is
//!   refused) and must be a regular file (checked before the open with `lstat`, so a device is
//!   not even opened, and after it with `fstat`);
//! - in a directory an unprivileged user controls, a file with other hard links is refused (it
//!   may be a link to a file the user cannot read or write themselves), and so is, for modes
//!   that read what is already there, a file that belongs to another account than the
//!   directory;
//! - `w` truncates only after these checks (`ftruncate` on the open file), a new file is
//!   created with `O_EXCL` and then given [`NEW_FILE_MODE`].
//!
//! This is the rule of the handle-based `Root` (its walk follows links in trusted directories
//! only); the walk here is a small copy of it for this one method.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags, RawMode, Stat};
use rustix::io::Errno;

use super::{MAX_LINKS, Root, RootError, check_guest_path, display, io_err, own_ids};

/// Permission bits of a file [`Root::open_file`] creates (qemu-ga uses 0666; a file nobody
/// else may write is the safer default for what a root agent creates).
pub const NEW_FILE_MODE: u32 = 0o644;

/// How [`Root::open_file`] opens a file: `fopen(3)`'s modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenMode {
    pub read: bool,
    pub write: bool,
    /// Every write goes to the end.
    pub append: bool,
    /// Emptied once opened.
    pub truncate: bool,
    /// Created when missing.
    pub create: bool,
}

impl OpenMode {
    /// `r`, `r+`, `w`, `w+`, `a`, `a+`, each also with `b` (`rb`, `rb+`, `r+b`, …), as
    /// qemu-ga accepts them; `None` for anything else.
    pub fn from_fopen(mode: &str) -> Option<Self> {
        let base: String = match mode {
            "r" | "rb" => "r",
            "r+" | "rb+" | "r+b" => "r+",
            "w" | "wb" => "w",
            "w+" | "wb+" | "w+b" => "w+",
            "a" | "ab" => "a",
            "a+" | "ab+" | "a+b" => "a+",
            _ => return None,
        }
        .into();
        let plus = base.ends_with('+');
        let m = |read, write, append, truncate, create| Self {
            read,
            write,
            append,
            truncate,
            create,
        };
        Some(match base.as_bytes()[0] {
            b'r' => m(true, plus, false, false, false),
            b'w' => m(plus, true, false, true, true),
            _ => m(plus, true, true, false, true),
        })
    }

    /// Whether the open file shows content that was there before (what the untrusted-file
    /// rule protects).
    fn reads_existing(&self) -> bool {
        self.read && !self.truncate
    }
}

/// A file [`Root::open_file`] opened.
#[derive(Debug)]
pub struct OpenedFile {
    pub file: File,
    /// The guest path as reached (links followed), which `allowed` approved.
    pub path: PathBuf,
    /// Whether this call created it.
    pub created: bool,
}

impl Root {
    /// Open the regular file at `guest` in `mode` and keep it open (see the module docs for
    /// the rules). `allowed` judges the guest path as reached; `false` refuses with
    /// [`RootError::NotAllowed`] before anything changes.
    pub fn open_file(
        &self,
        guest: impl AsRef<Path>,
        mode: OpenMode,
        allowed: impl Fn(&Path) -> bool,
    ) -> Result<OpenedFile, RootError> {
        let guest = guest.as_ref();
        let (dir, dir_names, name) = match walk_parent(self, guest) {
            Ok(found) => found,
            // Where the way cannot be walked, the path as written is judged instead: a path
            // the caller would refuse gets that refusal, not a hint of what exists there.
            Err(e) => {
                let written: PathBuf = check_guest_path(guest)
                    .map(|parts| std::iter::once(OsString::from("/")).chain(parts).collect())
                    .unwrap_or_default();
                if !written.as_os_str().is_empty() && !allowed(&written) {
                    return Err(RootError::NotAllowed {
                        path: display(guest),
                        reached: display(&written),
                    });
                }
                return Err(e);
            }
        };
        let reached: PathBuf = std::iter::once(OsStr::new("/"))
            .chain(dir_names.iter().map(OsString::as_os_str))
            .chain(std::iter::once(name.as_os_str()))
            .collect();
        if !allowed(&reached) {
            return Err(RootError::NotAllowed {
                path: display(guest),
                reached: display(&reached),
            });
        }
        let shown = || display(&reached);
        match lstat(&dir, &name) {
            Ok(st) => check_regular(&st, &shown())?,
            Err(Errno::NOENT) if mode.create => {}
            Err(e) => return Err(errno("open", guest)(e)),
        }
        let mut flags = OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC;
        flags |= match (mode.read, mode.write) {
            (true, true) => OFlags::RDWR,
            (false, true) => OFlags::WRONLY,
            _ => OFlags::RDONLY,
        };
        if mode.append {
            flags |= OFlags::APPEND;
        }
        let open = |extra: OFlags| {
            rfs::openat(&dir, &name, flags | extra, Mode::from_raw_mode(0o600))
                .map_err(|e| open_error(e, &shown(), guest))
        };
        let (fd, created) = if mode.create {
            match rfs::openat(
                &dir,
                &name,
                flags | OFlags::CREATE | OFlags::EXCL,
                Mode::from_raw_mode(0o600),
            ) {
                Ok(fd) => (fd, true),
                Err(Errno::EXIST) => (open(OFlags::empty())?, false),
                Err(e) => return Err(open_error(e, &shown(), guest)),
            }
        } else {
            (open(OFlags::empty())?, false)
        };
        let checked = check_opened(&dir, &fd, mode, created, &shown(), guest);
        if checked.is_err() && created {
            let _ = rfs::unlinkat(&dir, &name, AtFlags::empty());
        }
        checked?;
        Ok(OpenedFile {
            file: File::from(fd),
            path: reached,
            created,
        })
    }
}

/// The checks on the open file, then the truncation or the new file's mode.
fn check_opened(
    dir: &OwnedFd,
    fd: &OwnedFd,
    mode: OpenMode,
    created: bool,
    shown: &str,
    guest: &Path,
) -> Result<(), RootError> {
    let st = rfs::fstat(fd).map_err(errno("open", guest))?;
    check_regular(&st, shown)?;
    if created {
        return rfs::fchmod(fd, Mode::from_raw_mode(NEW_FILE_MODE as RawMode))
            .map_err(errno("set the mode of", guest));
    }
    let dir_st = rfs::fstat(dir).map_err(errno("open", guest))?;
    if !trusted_stat(&dir_st) {
        let reason = if nlink(&st) > 1 {
            Some("has other hard links")
        } else if mode.reads_existing() && st.st_uid != dir_st.st_uid {
            Some("belongs to another account than the directory")
        } else {
            None
        };
        if let Some(reason) = reason {
            return Err(RootError::Untrusted {
                path: shown.to_string(),
                reason,
            });
        }
    }
    if mode.truncate {
        rfs::ftruncate(fd, 0).map_err(errno("truncate", guest))?;
    }
    Ok(())
}

fn dir_flags() -> OFlags {
    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NOCTTY
}

fn errno<'a>(op: &'static str, guest: &'a Path) -> impl FnOnce(Errno) -> RootError + 'a {
    move |e| io_err(op, guest)(io::Error::from(e))
}

/// An open failure, with a link (swapped in after the walk) named as one.
fn open_error(e: Errno, shown: &str, guest: &Path) -> RootError {
    match e {
        Errno::LOOP | Errno::MLINK => RootError::IsLink(shown.to_string()),
        e => errno("open", guest)(e),
    }
}

fn lstat(dir: impl AsFd, name: &OsStr) -> Result<Stat, Errno> {
    rfs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)
}

fn is_link(st: &Stat) -> bool {
    FileType::from_raw_mode(st.st_mode) == FileType::Symlink
}

#[allow(clippy::useless_conversion)] // nlink_t differs between platforms
fn nlink(st: &Stat) -> u64 {
    u64::from(st.st_nlink)
}

/// Whether links in a directory with this status may be followed: it belongs to root (or to
/// guestd's uid) and nobody else may write to it.
#[allow(clippy::useless_conversion)] // mode_t is u16 on FreeBSD
fn trusted_stat(st: &Stat) -> bool {
    let owner_ok = st.st_uid == 0 || st.st_uid == own_ids().0;
    owner_ok && u32::from(st.st_mode) & 0o022 == 0
}

fn check_regular(st: &Stat, shown: &str) -> Result<(), RootError> {
    let kind = match FileType::from_raw_mode(st.st_mode) {
        FileType::RegularFile => return Ok(()),
        FileType::Symlink => return Err(RootError::IsLink(shown.to_string())),
        FileType::Directory => "directory",
        FileType::Fifo => "FIFO",
        FileType::Socket => "socket",
        FileType::CharacterDevice => "character device",
        FileType::BlockDevice => "block device",
        _ => "special file",
    };
    Err(RootError::NotRegular {
        path: shown.to_string(),
        kind,
    })
}

/// `/names…/name` for messages.
fn shown_path(names: &[OsString], name: &OsStr) -> String {
    let mut p = PathBuf::from("/");
    p.extend(names);
    p.push(name);
    display(&p)
}

/// Walk to the directory holding `guest`'s last component (following links as the module docs
/// say); its handle, the guest path of that directory as names, and the last component.
fn walk_parent(root: &Root, guest: &Path) -> Result<(OwnedFd, Vec<OsString>, OsString), RootError> {
    let parts = check_guest_path(guest)?;
    let base = root.base().unwrap_or(Path::new("/"));
    let top =
        rfs::openat(rfs::CWD, base, dir_flags(), Mode::empty()).map_err(errno("open", guest))?;
    let mut stack: Vec<OwnedFd> = vec![top];
    let mut names: Vec<OsString> = Vec::new();
    let mut pending: Vec<OsString> = parts.into_iter().rev().collect();
    let mut links = 0usize;
    while let Some(part) = pending.pop() {
        if part == ".." {
            if stack.len() > 1 {
                stack.pop();
                names.pop();
            }
            continue;
        }
        if part.is_empty() || part == "." {
            continue;
        }
        let dir = stack.last().expect("the root is never popped");
        if pending.is_empty() {
            match lstat(dir, &part) {
                Ok(st) if is_link(&st) => {
                    follow_link(
                        &part,
                        &mut stack,
                        &mut names,
                        &mut pending,
                        &mut links,
                        guest,
                    )?;
                    continue;
                }
                _ => {
                    let dir = stack.pop().expect("the root is never popped");
                    return Ok((dir, names, part));
                }
            }
        }
        match rfs::openat(dir, &part, dir_flags(), Mode::empty()) {
            Ok(fd) => {
                stack.push(fd);
                names.push(part);
            }
            Err(e @ (Errno::LOOP | Errno::MLINK | Errno::NOTDIR)) => match lstat(dir, &part) {
                Ok(st) if is_link(&st) => follow_link(
                    &part,
                    &mut stack,
                    &mut names,
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
    // The path (or a link's target) ends in a directory: not a file.
    Err(errno("open", guest)(Errno::ISDIR))
}

/// Follow the link `name` of the directory on top of `stack`, as if the root were `/`.
fn follow_link(
    name: &OsStr,
    stack: &mut Vec<OwnedFd>,
    names: &mut Vec<OsString>,
    pending: &mut Vec<OsString>,
    links: &mut usize,
    guest: &Path,
) -> Result<(), RootError> {
    let dir = stack.last().expect("the root is never popped");
    let dir_st = rfs::fstat(dir).map_err(errno("look up", guest))?;
    if !trusted_stat(&dir_st) {
        return Err(RootError::UntrustedLink(shown_path(names, name)));
    }
    *links += 1;
    if *links > MAX_LINKS {
        return Err(RootError::TooManyLinks(display(guest)));
    }
    let target = rfs::readlinkat(dir, name, Vec::new()).map_err(errno("read link", guest))?;
    let target = Path::new(OsStr::from_bytes(target.as_bytes()));
    if target.as_os_str().is_empty() {
        return Err(errno("look up", guest)(Errno::NOENT));
    }
    if target.has_root() {
        stack.truncate(1);
        names.clear();
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

#[cfg(test)]
mod tests {
    use std::io::{Read, Seek, SeekFrom, Write};
    use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
    use std::time::{Duration, Instant};

    use super::*;

    fn sandbox() -> (tempfile::TempDir, Root) {
        let dir = tempfile::tempdir().unwrap();
        let root = Root::sandbox(dir.path()).unwrap();
        (dir, root)
    }

    fn any(_: &Path) -> bool {
        true
    }

    fn mode(m: &str) -> OpenMode {
        OpenMode::from_fopen(m).unwrap()
    }

    /// A directory of the sandbox owned by an unprivileged uid (needs root to chown).
    fn user_dir(d: &Path, name: &str) -> Option<PathBuf> {
        if own_ids().0 != 0 {
            eprintln!("not root: the user-directory cases are skipped");
            return None;
        }
        let p = d.join(name);
        std::fs::create_dir_all(&p).unwrap();
        std::os::unix::fs::chown(&p, Some(65534), Some(65534)).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        Some(p)
    }

    #[test]
    fn fopen_modes_are_qemu_ga_s() {
        assert_eq!(mode("r"), mode("rb"));
        assert_eq!(mode("r+b"), mode("rb+"));
        let w = mode("w");
        assert!(w.write && w.truncate && w.create && !w.read && !w.append);
        let a = mode("a+");
        assert!(a.read && a.write && a.append && a.create && !a.truncate);
        let r = mode("r+");
        assert!(r.read && r.write && !r.create && !r.truncate);
        for bad in ["", "rw", "x", "r++", "wx", "R"] {
            assert!(OpenMode::from_fopen(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn every_mode_round_trips() {
        let (d, root) = sandbox();
        std::fs::write(d.path().join("f"), b"hello").unwrap();
        let mut f = root.open_file("/f", mode("r"), any).unwrap();
        assert_eq!(f.path, Path::new("/f"));
        let mut s = String::new();
        f.file.read_to_string(&mut s).unwrap();
        assert_eq!(s, "hello");
        assert!(f.file.write_all(b"x").is_err(), "read-only");

        let mut f = root.open_file("/f", mode("a"), any).unwrap();
        f.file.write_all(b" world").unwrap();
        assert_eq!(std::fs::read(d.path().join("f")).unwrap(), b"hello world");

        let mut f = root.open_file("/f", mode("r+"), any).unwrap();
        f.file.write_all(b"J").unwrap();
        assert_eq!(std::fs::read(d.path().join("f")).unwrap(), b"Jello world");

        let mut f = root.open_file("/f", mode("w+"), any).unwrap();
        assert!(!f.created);
        assert_eq!(std::fs::read(d.path().join("f")).unwrap(), b"", "truncated");
        f.file.write_all(b"new").unwrap();
        f.file.seek(SeekFrom::Start(0)).unwrap();
        let mut s = String::new();
        f.file.read_to_string(&mut s).unwrap();
        assert_eq!(s, "new");

        let f = root.open_file("/g", mode("w"), any).unwrap();
        assert!(f.created);
        let md = std::fs::metadata(d.path().join("g")).unwrap();
        assert_eq!(md.mode() & 0o7777, NEW_FILE_MODE);
        let err = root.open_file("/missing", mode("r"), any).unwrap_err();
        assert!(err.is_not_found(), "{err}");
        assert!(root.open_file("/missing", mode("r+"), any).is_err());
    }

    #[test]
    fn only_regular_files_and_a_fifo_never_blocks() {
        let (d, root) = sandbox();
        std::fs::create_dir(d.path().join("dir")).unwrap();
        rustix::fs::mkfifoat(rfs::CWD, d.path().join("fifo"), Mode::from_raw_mode(0o600)).unwrap();
        let started = Instant::now();
        for m in ["r", "r+", "w", "a", "w+"] {
            let err = root.open_file("/fifo", mode(m), any).unwrap_err();
            assert!(
                matches!(err, RootError::NotRegular { kind: "FIFO", .. }),
                "{m}: {err}"
            );
            let err = root.open_file("/dir", mode(m), any).unwrap_err();
            assert!(matches!(err, RootError::NotRegular { .. }), "{m}: {err}");
        }
        assert!(started.elapsed() < Duration::from_secs(5));
        let err = root.open_file("/", mode("r"), any).unwrap_err();
        assert!(err.to_string().contains("Is a directory"), "{err}");
    }

    #[test]
    fn allowed_sees_the_reached_path_before_anything_changes() {
        let (d, root) = sandbox();
        std::fs::create_dir_all(d.path().join("srv/data")).unwrap();
        std::fs::write(d.path().join("srv/data/keep"), b"keep").unwrap();
        // A link in a trusted directory is followed: the reached path is its target.
        symlink("/srv/data", d.path().join("data")).unwrap();
        let only_data = |p: &Path| p.starts_with("/data");
        let err = root
            .open_file("/data/keep", mode("w"), only_data)
            .unwrap_err();
        assert!(
            matches!(&err, RootError::NotAllowed { reached, .. } if reached == "/srv/data/keep"),
            "{err}"
        );
        assert_eq!(
            std::fs::read(d.path().join("srv/data/keep")).unwrap(),
            b"keep",
            "not truncated"
        );
        let err = root
            .open_file("/data/new", mode("w"), only_data)
            .unwrap_err();
        assert!(matches!(err, RootError::NotAllowed { .. }));
        assert!(!d.path().join("srv/data/new").exists(), "not created");
        // Missing on the way: outside the allowed paths it is still "not allowed".
        let err = root
            .open_file("/etc/none/x", mode("r"), only_data)
            .unwrap_err();
        assert!(matches!(err, RootError::NotAllowed { .. }), "{err}");
        let err = root.open_file("/srv/none/x", mode("r"), |p: &Path| p.starts_with("/srv"));
        assert!(err.unwrap_err().is_not_found());
        let f = root
            .open_file("/data/keep", mode("r"), |p: &Path| p.starts_with("/srv"))
            .unwrap();
        assert_eq!(f.path, Path::new("/srv/data/keep"));
        // Links never leave the sandbox: `..` and absolute targets stay below it.
        symlink("../../../../../srv/data/keep", d.path().join("srv/up")).unwrap();
        let f = root.open_file("/srv/up", mode("r"), any).unwrap();
        assert_eq!(f.path, Path::new("/srv/data/keep"));
    }

    #[test]
    fn links_and_hard_links_in_a_user_directory_are_refused() {
        let (d, root) = sandbox();
        let Some(home) = user_dir(d.path(), "home/alice") else {
            return;
        };
        std::fs::create_dir_all(d.path().join("etc")).unwrap();
        std::fs::write(d.path().join("etc/shadow"), b"root:secret").unwrap();
        symlink("/etc/shadow", home.join("notes")).unwrap();
        symlink("/etc", home.join("dir")).unwrap();
        for (path, m) in [
            ("/home/alice/notes", "r"),
            ("/home/alice/notes", "w"),
            ("/home/alice/dir/shadow", "r"),
            ("/home/alice/dir/shadow", "a"),
        ] {
            let err = root.open_file(path, mode(m), any).unwrap_err();
            assert!(
                matches!(err, RootError::UntrustedLink(_)),
                "{path} {m}: {err}"
            );
        }
        std::fs::hard_link(d.path().join("etc/shadow"), home.join("hard")).unwrap();
        for m in ["r", "w", "a", "r+"] {
            let err = root
                .open_file("/home/alice/hard", mode(m), any)
                .unwrap_err();
            assert!(matches!(err, RootError::Untrusted { .. }), "{m}: {err}");
        }
        assert_eq!(
            std::fs::read(d.path().join("etc/shadow")).unwrap(),
            b"root:secret"
        );
        // The user's own file is fine; a file of another account is not read.
        std::fs::write(home.join("own"), b"mine").unwrap();
        std::os::unix::fs::chown(home.join("own"), Some(65534), Some(65534)).unwrap();
        root.open_file("/home/alice/own", mode("r+"), any).unwrap();
        std::fs::write(home.join("roots"), b"x").unwrap();
        let err = root
            .open_file("/home/alice/roots", mode("r"), any)
            .unwrap_err();
        assert!(matches!(err, RootError::Untrusted { .. }), "{err}");
        root.open_file("/home/alice/roots", mode("w"), any).unwrap();
        // New files in the user's directory are created, never through a link.
        let f = root
            .open_file("/home/alice/created", mode("w"), any)
            .unwrap();
        assert!(f.created);
    }
}
