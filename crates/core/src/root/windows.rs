//! The path-based implementation of [`Root`] for Windows (see the module docs of `root`):
//! creating a symlink there needs a privilege ordinary users do not hold, so links are
//! followed by path as if the root were the drive's root, and files are opened by path.
// This module is the one place on Windows that touches files by path (see above).
#![allow(clippy::disallowed_methods)]

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Component, Path, PathBuf};

use zeroize::Zeroizing;

use super::{
    FileMeta, GuestPath, MAX_LINKS, Root, RootError, Snapshot, WriteOptions, check_guest_path,
    display, io_err, link_temp_name, temp_name,
};

/// The host path of a reached guest path.
fn host_of(root: &Root, p: &GuestPath) -> PathBuf {
    let mut host = match (&root.base, p.drive) {
        (Some(base), Some(d)) => base.join(d.to_string()),
        (Some(base), None) => base.clone(),
        (None, Some(d)) => PathBuf::from(format!("{d}:\\")),
        (None, None) => PathBuf::from("\\"),
    };
    for n in &p.names {
        host.push(n);
    }
    host
}

/// Follow links on the way to `guest` (the last one too when `follow`), as if the drive's root
/// were the root: returns the guest path reached and its host path.
fn reach(root: &Root, guest: &Path, follow: bool) -> Result<(GuestPath, PathBuf), RootError> {
    let parts = check_guest_path(guest)?;
    let mut cur = GuestPath {
        drive: parts.drive,
        names: Vec::new(),
    };
    let mut pending: Vec<std::ffi::OsString> = parts.names.into_iter().rev().collect();
    let mut links = 0usize;
    while let Some(part) = pending.pop() {
        if part == ".." {
            cur.names.pop();
            continue;
        }
        let mut next = cur.clone();
        next.names.push(part);
        let last = pending.is_empty();
        let host = host_of(root, &next);
        let is_link = fs::symlink_metadata(&host).is_ok_and(|m| m.file_type().is_symlink());
        if !is_link || (last && !follow) {
            cur = next;
            continue;
        }
        links += 1;
        if links > MAX_LINKS {
            return Err(RootError::TooManyLinks(display(guest)));
        }
        let target = fs::read_link(&host).map_err(io_err("read link", guest))?;
        if target.has_root() {
            cur.names.clear();
        }
        for comp in target.components().rev() {
            match comp {
                Component::Normal(p) => pending.push(p.to_os_string()),
                Component::ParentDir => pending.push("..".into()),
                Component::Prefix(p) => match p.kind() {
                    std::path::Prefix::Disk(l) | std::path::Prefix::VerbatimDisk(l) => {
                        cur.drive = Some(char::from(l).to_ascii_uppercase());
                    }
                    _ => return Err(RootError::UnsupportedPrefix(display(guest))),
                },
                _ => {}
            }
        }
    }
    let host = host_of(root, &cur);
    Ok((cur, host))
}

pub(super) fn resolve(root: &Root, guest: &Path, follow: bool) -> Result<PathBuf, RootError> {
    reach(root, guest, follow).map(|(_, host)| host)
}

fn read_file(path: &Path, limit: u64, guest: &Path) -> Result<Vec<u8>, RootError> {
    let md = fs::metadata(path).map_err(io_err("read", guest))?;
    if !md.is_file() {
        return Err(RootError::NotRegular {
            path: display(guest),
            kind: if md.is_dir() {
                "directory"
            } else {
                "special file"
            },
        });
    }
    if md.len() > limit {
        return Err(RootError::TooLarge {
            path: display(guest),
            limit,
        });
    }
    let file = File::open(path).map_err(io_err("read", guest))?;
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

pub(super) fn read_limited(root: &Root, guest: &Path, limit: u64) -> Result<Vec<u8>, RootError> {
    let (_, host) = reach(root, guest, true)?;
    read_file(&host, limit, guest)
}

pub(super) fn snapshot(root: &Root, guest: &Path, limit: u64) -> Result<Snapshot, RootError> {
    let (_, host) = reach(root, guest, false)?;
    match fs::symlink_metadata(&host) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Snapshot::Absent),
        Err(e) => Err(io_err("read", guest)(e)),
        Ok(md) if md.file_type().is_symlink() => Ok(Snapshot::Link(
            fs::read_link(&host).map_err(io_err("read link", guest))?,
        )),
        Ok(_) => Ok(Snapshot::File {
            contents: Zeroizing::new(read_file(&host, limit, guest)?),
            meta: FileMeta::default(),
        }),
    }
}

pub(super) fn exists(root: &Root, guest: &Path) -> bool {
    reach(root, guest, true).is_ok_and(|(_, h)| h.exists())
}

pub(super) fn is_dir(root: &Root, guest: &Path) -> bool {
    reach(root, guest, true).is_ok_and(|(_, h)| h.is_dir())
}

pub(super) fn is_symlink(root: &Root, guest: &Path) -> bool {
    reach(root, guest, false).is_ok_and(|(_, h)| h.is_symlink())
}

pub(super) fn read_link(root: &Root, guest: &Path) -> Result<PathBuf, RootError> {
    let (_, host) = reach(root, guest, false)?;
    fs::read_link(host).map_err(io_err("read link", guest))
}

pub(super) fn metadata(root: &Root, guest: &Path) -> Result<FileMeta, RootError> {
    let (_, host) = reach(root, guest, true)?;
    fs::metadata(host).map_err(io_err("stat", guest))?;
    Ok(FileMeta::default())
}

pub(super) fn read_dir(root: &Root, guest: &Path) -> Result<Vec<String>, RootError> {
    let (_, host) = reach(root, guest, true)?;
    let mut names = Vec::new();
    for entry in fs::read_dir(host).map_err(io_err("list", guest))? {
        let entry = entry.map_err(io_err("list", guest))?;
        names.push(entry.file_name().to_string_lossy().into_owned());
    }
    names.sort();
    Ok(names)
}

/// Windows has no Unix ownership to judge; `ProgramData` is protected by its ACL.
pub(super) fn check_private(root: &Root, guest: &Path) -> Result<(), RootError> {
    reach(root, guest, true).map(drop)
}

pub(super) fn create_dir_all(root: &Root, guest: &Path, _mode: u32) -> Result<(), RootError> {
    let (reached, host) = reach(root, guest, true)?;
    if !host.is_dir() {
        root.check_policy(&reached, guest, true)?;
    }
    fs::create_dir_all(&host).map_err(io_err("create directory", guest))
}

pub(super) fn create_dir_owned(
    root: &Root,
    guest: &Path,
    _meta: FileMeta,
) -> Result<bool, RootError> {
    let (reached, host) = reach(root, guest, false)?;
    root.check_policy(&reached, guest, true)?;
    match fs::create_dir(&host) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => match fs::symlink_metadata(&host) {
            Ok(md) if md.file_type().is_symlink() => Err(RootError::IsLink(display(guest))),
            Ok(md) if md.is_dir() => Ok(false),
            _ => Err(io_err("create directory", guest)(e)),
        },
        Err(e) => Err(io_err("create directory", guest)(e)),
    }
}

pub(super) fn write_file(
    root: &Root,
    guest: &Path,
    contents: &[u8],
    _opts: WriteOptions,
    follow: bool,
) -> Result<(), RootError> {
    let (reached, path) = reach(root, guest, follow)?;
    root.check_policy(&reached, guest, false)?;
    let existing = match fs::symlink_metadata(&path) {
        Ok(md) if md.is_dir() => {
            return Err(io_err("write", guest)(io::Error::from_raw_os_error(
                // ERROR_DIRECTORY_NOT_SUPPORTED would be clearer, but "access denied" is what
                // Windows itself answers for a directory.
                5,
            )));
        }
        Ok(md) => md.is_file(),
        Err(_) => false,
    };
    let dir = path
        .parent()
        .ok_or_else(|| RootError::NotAbsolute(display(guest)))?;
    let name = path.file_name().unwrap_or_default();
    let tmp = dir.join(temp_name(name));
    let result = write_new(&tmp, contents).and_then(|()| replace(&tmp, &path, existing));
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(io_err("write", guest))
}

fn write_new(tmp: &Path, contents: &[u8]) -> io::Result<()> {
    let mut file = OpenOptions::new().write(true).create_new(true).open(tmp)?;
    file.write_all(contents)?;
    file.sync_all()
}

/// Move the finished temp file over `path`. An existing file is replaced with `ReplaceFileW`,
/// which keeps the replaced file's DACL, owner and attributes (a plain rename would leave the
/// temp file's ACL, inherited from the directory).
fn replace(tmp: &Path, path: &Path, exists: bool) -> io::Result<()> {
    if exists {
        return replace_file(path, tmp);
    }
    fs::rename(tmp, path)
}

#[allow(unsafe_code)]
fn replace_file(target: &Path, replacement: &Path) -> io::Result<()> {
    use std::os::windows::ffi::OsStrExt;
    use windows_sys::Win32::Storage::FileSystem::{REPLACEFILE_IGNORE_MERGE_ERRORS, ReplaceFileW};
    let wide = |p: &Path| -> Vec<u16> { p.as_os_str().encode_wide().chain(Some(0)).collect() };
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

pub(super) fn write_in_place(root: &Root, guest: &Path, contents: &[u8]) -> Result<(), RootError> {
    let (reached, path) = reach(root, guest, true)?;
    root.check_policy(&reached, guest, false)?;
    let mut file = OpenOptions::new()
        .write(true)
        .open(&path)
        .map_err(io_err("open", guest))?;
    if !file.metadata().is_ok_and(|m| m.is_file()) {
        return Err(RootError::NotRegular {
            path: display(guest),
            kind: "special file",
        });
    }
    file.write_all(contents).map_err(io_err("write", guest))
}

pub(super) fn remove_file(root: &Root, guest: &Path) -> Result<(), RootError> {
    let (reached, host) = reach(root, guest, false)?;
    root.check_policy(&reached, guest, false)?;
    match fs::remove_file(host) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_err("remove", guest)(e)),
        _ => Ok(()),
    }
}

pub(super) fn remove_dir_all(root: &Root, guest: &Path) -> Result<(), RootError> {
    let (reached, path) = reach(root, guest, false)?;
    root.check_policy(&reached, guest, false)?;
    let result = match fs::symlink_metadata(&path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Ok(md) if !md.is_dir() => fs::remove_file(&path),
        _ => fs::remove_dir_all(&path),
    };
    result.map_err(io_err("remove", guest))
}

pub(super) fn remove_dir(root: &Root, guest: &Path) -> Result<(), RootError> {
    let (reached, host) = reach(root, guest, false)?;
    root.check_policy(&reached, guest, true)?;
    match fs::symlink_metadata(&host) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Ok(md) if md.file_type().is_symlink() => Err(RootError::IsLink(display(guest))),
        _ => match fs::remove_dir(&host) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_err("remove", guest)(e)),
            _ => Ok(()),
        },
    }
}

pub(super) fn open_private(root: &Root, guest: &Path) -> Result<(File, FileMeta), RootError> {
    let (_, host) = reach(root, guest, false)?;
    match fs::symlink_metadata(&host) {
        Ok(md) if md.file_type().is_symlink() => return Err(RootError::IsLink(display(guest))),
        Ok(md) if !md.is_file() => {
            return Err(RootError::NotRegular {
                path: display(guest),
                kind: "directory or device",
            });
        }
        Err(e) => return Err(io_err("open", guest)(e)),
        Ok(_) => {}
    }
    let file = File::open(&host).map_err(io_err("open", guest))?;
    Ok((file, FileMeta::default()))
}

pub(super) fn symlink(root: &Root, guest: &Path, target: &Path) -> Result<(), RootError> {
    let (reached, path) = reach(root, guest, false)?;
    root.check_policy(&reached, guest, false)?;
    let tmp = path.with_file_name(link_temp_name());
    std::os::windows::fs::symlink_file(target, &tmp)
        .and_then(|()| fs::rename(&tmp, &path))
        .map_err(io_err("create link", guest))
}

pub(super) fn rename(root: &Root, from: &Path, to: &Path) -> Result<(), RootError> {
    let (ra, a) = reach(root, from, false)?;
    let (rb, b) = reach(root, to, false)?;
    root.check_policy(&ra, from, false)?;
    root.check_policy(&rb, to, false)?;
    fs::rename(a, b).map_err(io_err("rename", from))
}

pub(super) fn set_meta(root: &Root, guest: &Path, _meta: FileMeta) -> Result<(), RootError> {
    let (reached, host) = reach(root, guest, true)?;
    root.check_policy(&reached, guest, false)?;
    fs::metadata(host)
        .map_err(io_err("change mode of", guest))
        .map(drop)
}

pub(super) fn open_lock_file(root: &Root, guest: &Path, _mode: u32) -> Result<File, RootError> {
    let (_, host) = reach(root, guest, true)?;
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(host)
        .map_err(io_err("open", guest))
}
