//! [`Root::open_file`](crate::Root::open_file) on Unix, built on the walk of `root::unix`
//! (see `root::open_file` for the rules).

use std::ffi::OsStr;
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use rustix::fs::{self as rfs, AtFlags, OFlags};
use rustix::io::Errno;

use super::{
    Reached, Want, check_regular, errno, lstat, mode, nlink, refuse_link, shown, trusted_stat, walk,
};
use crate::root::open_file::{NEW_FILE_MODE, OpenMode, OpenedFile};
use crate::root::{Root, RootError, check_guest_path, display, io_err};

pub(in crate::root) fn open_file(
    root: &Root,
    guest: &Path,
    how: OpenMode,
    allowed: &dyn Fn(&Path) -> bool,
) -> Result<OpenedFile, RootError> {
    let r = match walk(root, guest, Want::Entry { follow: true }) {
        Ok(r) => r,
        // Where the way cannot be walked, the path as written is judged instead: a path the
        // caller would refuse gets that refusal, not a hint of what exists there.
        Err(e) => {
            if let Ok(written) = check_guest_path(guest) {
                let written = PathBuf::from(written.to_string());
                if !allowed(&written) {
                    return Err(RootError::NotAllowed {
                        path: display(guest),
                        reached: display(&written),
                    });
                }
            }
            return Err(e);
        }
    };
    let name = r.name(guest, "open")?;
    let target = r.target();
    let reached = PathBuf::from(target.to_string());
    if !allowed(&reached) {
        return Err(RootError::NotAllowed {
            path: display(guest),
            reached: display(&reached),
        });
    }
    if how.write {
        root.check_policy(&target, guest, false)?;
    }
    match lstat(&r.dir, name) {
        Ok(st) => check_regular(&st, &r, name)?,
        Err(Errno::NOENT) if how.create => {}
        Err(e) => return Err(errno("open", guest)(e)),
    }
    let mut flags = OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC;
    flags |= match (how.read, how.write) {
        (true, true) => OFlags::RDWR,
        (false, true) => OFlags::WRONLY,
        _ => OFlags::RDONLY,
    };
    if how.append {
        flags |= OFlags::APPEND;
    }
    let open = |extra: OFlags| {
        rfs::openat(&r.dir, name, flags | extra, mode(0o600))
            .map_err(|e| refuse_link(&r.dir, name, &r.path, guest, e))
    };
    let (fd, created) = if how.create {
        match rfs::openat(
            &r.dir,
            name,
            flags | OFlags::CREATE | OFlags::EXCL,
            mode(0o600),
        ) {
            Ok(fd) => (fd, true),
            Err(Errno::EXIST) => (open(OFlags::empty())?, false),
            Err(e) => return Err(refuse_link(&r.dir, name, &r.path, guest, e)),
        }
    } else {
        (open(OFlags::empty())?, false)
    };
    let checked = check_opened(&r, name, &fd, how, created, guest);
    if checked.is_err() && created {
        let _ = rfs::unlinkat(&r.dir, name, AtFlags::empty());
    }
    checked?;
    Ok(OpenedFile {
        file: std::fs::File::from(fd),
        path: reached,
        created,
    })
}

/// The checks on the open file, then the truncation or the new file's mode.
fn check_opened(
    r: &Reached,
    name: &OsStr,
    fd: &OwnedFd,
    how: OpenMode,
    created: bool,
    guest: &Path,
) -> Result<(), RootError> {
    let st = rfs::fstat(fd).map_err(errno("open", guest))?;
    check_regular(&st, r, name)?;
    if created {
        return rfs::fchmod(fd, mode(NEW_FILE_MODE)).map_err(errno("set the mode of", guest));
    }
    let dir = rfs::fstat(&r.dir)
        .map_err(io::Error::from)
        .map_err(io_err("open", guest))?;
    if !trusted_stat(&dir) {
        // A hard link may be one to a file the user cannot read or write; a file of another
        // account may be one the user linked and whose original is gone. The second matters
        // only where what is there is read (`w` empties it first).
        let reason = if nlink(&st) > 1 {
            Some("has other hard links")
        } else if how.reads_existing() && st.st_uid != dir.st_uid {
            Some("belongs to another account than the directory")
        } else {
            None
        };
        if let Some(reason) = reason {
            return Err(RootError::Untrusted {
                path: shown(&r.path, name),
                reason,
            });
        }
    }
    if how.truncate {
        rfs::ftruncate(fd, 0).map_err(errno("truncate", guest))?;
    }
    Ok(())
}
