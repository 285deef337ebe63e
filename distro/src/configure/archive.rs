//! `archive`: a tarball already on the guest (a local file, or one the host put there with
//! `file_inject`) unpacked into a directory through `Root`.
//!
//! The tarball must be in a place only root can change (the file and every directory on the
//! way root's and not writable by others, no link at its path), and is read with a size cap.
//! Plain tar and gzip-compressed tar are understood. Every entry passes agentupdate's guards
//! before anything is written: no absolute path, no `..`, at most `max_archive_entries`
//! entries and `max_unpacked_bytes` bytes of contents. Regular files and directories are
//! unpacked (set-id and sticky bits dropped); a symbolic link only when its target is relative
//! and stays inside the destination; hard links, devices, FIFOs and anything else refuse the
//! whole archive. The writes themselves may only land under the destination, judged by `Root`
//! on the path each one reaches after links, so a link already in the destination cannot carry
//! a file out of it.
//!
//! What is unpacked belongs to root (or the resource's `owner`/`group`). A file that already
//! holds the same content, mode and owner is left alone, so unpacking the same archive again
//! changes nothing.

use std::io::Read;
use std::path::{Component, Path};

use flate2::read::GzDecoder;
use guestd_core::configure::{ArchiveSpec, ConfigureSettings, ResourcePlan};
use guestd_core::{BackendError, Env, FileChange, RootError, Snapshot, WriteOptions};

use super::{join, resolve_group, resolve_user};
use crate::OsFamily;

/// One entry worth unpacking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    File {
        path: String,
        mode: u32,
        contents: Vec<u8>,
    },
    Dir {
        path: String,
        mode: u32,
    },
    Symlink {
        path: String,
        target: String,
    },
}

/// Why an archive was refused (nothing of it was written).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArchiveError {
    #[error("the archive is not a valid tar or tar.gz file: {0}")]
    Corrupt(String),
    #[error("the archive has an unsafe path '{0}' (absolute or with '..')")]
    UnsafePath(String),
    #[error("the archive's link '{path}' points outside the destination ('{target}')")]
    LinkOut { path: String, target: String },
    #[error(
        "the archive holds '{path}', a {kind}; only files, directories and links inside it are unpacked"
    )]
    Unsupported { path: String, kind: &'static str },
    #[error("the archive unpacks to more than {0} bytes")]
    TooLarge(u64),
    #[error("the archive holds more than {0} entries")]
    TooManyEntries(usize),
}

/// `a/b/c` with `.` dropped; absolute paths and `..` are refused (agentupdate's rule).
pub fn safe_relative(raw: &str) -> Result<String, ArchiveError> {
    let mut parts = Vec::new();
    for comp in Path::new(raw).components() {
        match comp {
            Component::Normal(p) => parts.push(p.to_string_lossy().into_owned()),
            Component::CurDir => {}
            _ => return Err(ArchiveError::UnsafePath(raw.into())),
        }
    }
    Ok(parts.join("/"))
}

/// Whether a link at `path` (relative to the destination) pointing at `target` stays inside
/// the destination.
fn link_stays_inside(path: &str, target: &str) -> bool {
    if target.is_empty() || target.starts_with('/') {
        return false;
    }
    let mut depth: i64 = path.split('/').count() as i64 - 1;
    for comp in target.split('/') {
        match comp {
            "" | "." => {}
            ".." => {
                depth -= 1;
                if depth < 0 {
                    return false;
                }
            }
            _ => depth += 1,
        }
    }
    true
}

/// Read every entry of `bytes` (tar, or tar.gz by its magic), applying the guards.
pub fn read_entries(
    bytes: &[u8],
    max_unpacked: u64,
    max_entries: usize,
) -> Result<Vec<Entry>, ArchiveError> {
    if bytes.starts_with(&[0x1f, 0x8b]) {
        read_tar(GzDecoder::new(bytes), max_unpacked, max_entries)
    } else {
        read_tar(bytes, max_unpacked, max_entries)
    }
}

fn read_tar(
    reader: impl Read,
    max_unpacked: u64,
    max_entries: usize,
) -> Result<Vec<Entry>, ArchiveError> {
    let corrupt = |e: std::io::Error| ArchiveError::Corrupt(e.to_string());
    let mut archive = tar::Archive::new(reader);
    let mut entries = Vec::new();
    let mut total = 0u64;
    for entry in archive.entries().map_err(corrupt)? {
        let mut entry = entry.map_err(corrupt)?;
        if entries.len() >= max_entries {
            return Err(ArchiveError::TooManyEntries(max_entries));
        }
        let raw = entry
            .path()
            .map_err(corrupt)?
            .to_string_lossy()
            .into_owned();
        let path = safe_relative(&raw)?;
        let mode = entry.header().mode().map_err(corrupt)? & 0o777;
        let kind = entry.header().entry_type();
        if kind.is_dir() {
            if !path.is_empty() {
                entries.push(Entry::Dir { path, mode });
            }
            continue;
        }
        if path.is_empty() {
            return Err(ArchiveError::UnsafePath(raw));
        }
        if kind.is_symlink() {
            let target = entry
                .link_name()
                .map_err(corrupt)?
                .map(|t| t.to_string_lossy().into_owned())
                .unwrap_or_default();
            if !link_stays_inside(&path, &target) {
                return Err(ArchiveError::LinkOut { path, target });
            }
            entries.push(Entry::Symlink { path, target });
            continue;
        }
        if !(kind.is_file() || kind == tar::EntryType::Continuous) {
            let kind = match kind {
                tar::EntryType::Link => "hard link",
                tar::EntryType::Char | tar::EntryType::Block => "device",
                tar::EntryType::Fifo => "FIFO",
                _ => "special entry",
            };
            return Err(ArchiveError::Unsupported { path, kind });
        }
        total = total.saturating_add(entry.size());
        if total > max_unpacked {
            return Err(ArchiveError::TooLarge(max_unpacked));
        }
        let mut contents = Vec::with_capacity(entry.size().min(max_unpacked) as usize);
        entry
            .by_ref()
            .take(max_unpacked.saturating_add(1))
            .read_to_end(&mut contents)
            .map_err(corrupt)?;
        entries.push(Entry::File {
            path,
            mode,
            contents,
        });
    }
    Ok(entries)
}

/// Plan an `archive` resource.
pub fn plan_archive(
    family: OsFamily,
    env: &Env,
    spec: &ArchiveSpec,
    settings: &ConfigureSettings,
) -> Result<ResourcePlan, BackendError> {
    let root = &env.root;
    let bytes = root
        .read_private(&spec.source, settings.max_archive_bytes)
        .map_err(|e| match e {
            RootError::NotPrivate(p) => BackendError::Invalid(format!(
                "archive '{}' is not in a place only root can change ('{p}' belongs to another \
                 account or is writable by others)",
                spec.source
            )),
            other => BackendError::Invalid(format!("archive '{}': {other}", spec.source)),
        })?;
    let entries = read_entries(
        &bytes,
        settings.max_unpacked_bytes,
        settings.max_archive_entries,
    )
    .map_err(|e| BackendError::Invalid(format!("archive '{}': {e}", spec.source)))?;
    if family == OsFamily::Windows && (spec.owner.is_some() || spec.group.is_some()) {
        return Err(BackendError::Invalid(
            "owner and group are not supported on Windows".into(),
        ));
    }
    let uid = spec
        .owner
        .as_ref()
        .map(|o| resolve_user(root, o))
        .transpose()?
        .unwrap_or(0);
    let gid = spec
        .group
        .as_ref()
        .map(|g| resolve_group(root, g))
        .transpose()?
        .unwrap_or(0);
    let owner = (family != OsFamily::Windows).then_some((uid, gid));
    let dest = spec.destination.trim_end_matches('/');
    let mut out = ResourcePlan::default();
    let (mut created, mut updated) = (0usize, 0usize);
    if !root.is_dir(dest) {
        if root.exists(dest) {
            return Err(BackendError::Invalid(format!(
                "destination '{dest}' exists and is not a directory"
            )));
        }
        out.change(format!("create directory {dest}"));
        out.plan.changes.push(FileChange::Directory {
            path: dest.into(),
            mode: 0o755,
            owner,
        });
    }
    for entry in entries {
        match entry {
            Entry::Dir { path, mode } => {
                let path = join(dest, &path);
                let differs = if root.is_dir(&path) {
                    let meta = root.metadata(&path)?;
                    meta.mode & 0o7777 != mode || owner.is_some_and(|o| o != (meta.uid, meta.gid))
                } else {
                    created += 1;
                    true
                };
                if differs {
                    out.plan
                        .changes
                        .push(FileChange::Directory { path, mode, owner });
                }
            }
            Entry::File {
                path,
                mode,
                contents,
            } => {
                let path = join(dest, &path);
                let same = match root.snapshot(&path, settings.max_unpacked_bytes)? {
                    Snapshot::File {
                        contents: old,
                        meta,
                    } => {
                        *old == contents
                            && meta.mode & 0o7777 == mode
                            && owner.is_none_or(|o| o == (meta.uid, meta.gid))
                    }
                    Snapshot::Absent => {
                        created += 1;
                        false
                    }
                    _ => false,
                };
                if !same {
                    if root.exists(&path) {
                        updated += 1;
                    }
                    let mut options = WriteOptions::mode(mode).exact();
                    options.owner = owner;
                    out.plan
                        .changes
                        .push(FileChange::write(path, contents, options));
                }
            }
            Entry::Symlink { path, target } => {
                let path = join(dest, &path);
                let same = matches!(root.snapshot(&path, 0), Ok(Snapshot::Link(t)) if t == Path::new(&target));
                if !same {
                    created += 1;
                    out.plan.changes.push(FileChange::Symlink { path, target });
                }
            }
        }
    }
    if created > 0 {
        out.change(format!("{created} entries to create"));
    }
    if updated > 0 {
        out.change(format!("{updated} files to update"));
    }
    if out.is_unchanged() && !out.plan.changes.is_empty() {
        out.change(format!("{} entries to change", out.plan.changes.len()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar(entries: &[(&str, tar::EntryType, &[u8], &str)]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (path, kind, contents, link) in entries {
            let mut header = tar::Header::new_gnu();
            header.set_entry_type(*kind);
            header.set_size(contents.len() as u64);
            header.set_mode(0o4755);
            if !link.is_empty() {
                header.set_link_name(link).unwrap();
            }
            // Bypass the builder's own path checks: the archive is hostile.
            let name = header.as_old_mut().name.as_mut();
            name[..path.len()].copy_from_slice(path.as_bytes());
            header.set_cksum();
            builder.append(&header, *contents).unwrap();
        }
        builder.into_inner().unwrap()
    }

    use tar::EntryType as T;

    #[test]
    fn reads_files_dirs_and_inner_links_and_drops_set_id_bits() {
        let bytes = tar(&[
            ("app/", T::Directory, b"", ""),
            ("app/bin/run", T::Regular, b"#!/bin/sh\n", ""),
            ("app/current", T::Symlink, b"", "bin"),
            ("app/bin/up", T::Symlink, b"", "../current"),
        ]);
        let entries = read_entries(&bytes, 1 << 20, 10).unwrap();
        assert_eq!(
            entries[1],
            Entry::File {
                path: "app/bin/run".into(),
                mode: 0o755,
                contents: b"#!/bin/sh\n".to_vec()
            }
        );
        assert_eq!(entries.len(), 4);
        // gzip is recognised by its magic.
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &bytes).unwrap();
        assert_eq!(
            read_entries(&gz.finish().unwrap(), 1 << 20, 10).unwrap(),
            entries
        );
    }

    #[test]
    fn hostile_entries_refuse_the_whole_archive() {
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (
                tar(&[("../etc/passwd", T::Regular, b"x", "")]),
                "unsafe path",
            ),
            (tar(&[("/etc/passwd", T::Regular, b"x", "")]), "unsafe path"),
            (tar(&[("a/../../x", T::Regular, b"x", "")]), "unsafe path"),
            (tar(&[("l", T::Symlink, b"", "/etc")]), "outside"),
            (tar(&[("a/l", T::Symlink, b"", "../../etc")]), "outside"),
            (tar(&[("h", T::Link, b"", "/etc/shadow")]), "hard link"),
            (tar(&[("d", T::Char, b"", "")]), "device"),
            (tar(&[("f", T::Fifo, b"", "")]), "FIFO"),
        ];
        for (bytes, want) in cases {
            let err = read_entries(&bytes, 1 << 20, 10).unwrap_err().to_string();
            assert!(err.contains(want), "{err} should say {want}");
        }
        let big = tar(&[
            ("a", T::Regular, &[0u8; 600], ""),
            ("b", T::Regular, &[0u8; 600], ""),
        ]);
        assert_eq!(
            read_entries(&big, 1000, 10),
            Err(ArchiveError::TooLarge(1000))
        );
        assert_eq!(
            read_entries(&big, 1 << 20, 1),
            Err(ArchiveError::TooManyEntries(1))
        );
        assert!(matches!(
            read_entries(b"\x1f\x8bnot gzip", 1 << 20, 10),
            Err(ArchiveError::Corrupt(_))
        ));
    }

    #[test]
    fn links_inside() {
        assert!(link_stays_inside("a/b", "c"));
        assert!(link_stays_inside("a/b", "../c"));
        assert!(!link_stays_inside("a/b", "../../c"));
        assert!(!link_stays_inside("b", ".."));
        assert!(!link_stays_inside("b", "/x"));
        assert!(link_stays_inside("a/b", "./../a/./c"));
    }
}
