//! The update payload: a `.tar.gz` holding the new `guestd` binary at the top level or one
//! directory down, and optionally an `installer.sh` beside it (run as the old agent did).

use std::io::Read;
use std::path::{Component, Path};

use flate2::read::GzDecoder;

/// A regular file of the archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Relative path inside the archive (`guestd`, `pkg/installer.sh`).
    pub path: String,
    pub mode: u32,
    pub contents: Vec<u8>,
}

/// What the archive holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payload {
    /// Index into `files` of the new binary.
    pub binary: usize,
    /// Index into `files` of `installer.sh`, if any.
    pub installer: Option<usize>,
    pub files: Vec<Entry>,
}

impl Payload {
    pub fn binary(&self) -> &Entry {
        &self.files[self.binary]
    }

    pub fn installer(&self) -> Option<&Entry> {
        self.installer.map(|i| &self.files[i])
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ArchiveError {
    #[error("Update archive is not a valid .tar.gz: {0}")]
    Corrupt(String),
    #[error("Update archive has an unsafe path '{0}'")]
    UnsafePath(String),
    #[error("Update archive unpacks to more than {0} bytes")]
    TooLarge(u64),
    #[error("Update archive holds no {0} binary")]
    NoBinary(String),
}

/// Unpack `bytes` (in memory, at most `max_unpacked` bytes of file contents).
pub fn unpack(bytes: &[u8], binary_name: &str, max_unpacked: u64) -> Result<Payload, ArchiveError> {
    let corrupt = |e: std::io::Error| ArchiveError::Corrupt(e.to_string());
    let mut archive = tar::Archive::new(GzDecoder::new(bytes));
    let mut files = Vec::new();
    let mut total = 0u64;
    for entry in archive.entries().map_err(corrupt)? {
        let mut entry = entry.map_err(corrupt)?;
        let raw = entry
            .path()
            .map_err(corrupt)?
            .to_string_lossy()
            .into_owned();
        let rel = safe_relative(&raw)?;
        if !entry.header().entry_type().is_file() {
            continue; // directories are implied; links and devices are never installed
        }
        total += entry.size();
        if total > max_unpacked {
            return Err(ArchiveError::TooLarge(max_unpacked));
        }
        let mode = entry.header().mode().map_err(corrupt)?;
        let mut contents = Vec::with_capacity(entry.size() as usize);
        entry.read_to_end(&mut contents).map_err(corrupt)?;
        files.push(Entry {
            path: rel,
            mode,
            contents,
        });
    }
    let find = |name: &str| {
        // Top level first, then one directory down.
        (1..=2).find_map(|depth| {
            files.iter().position(|f| {
                let p = Path::new(&f.path);
                p.components().count() == depth && p.file_name().is_some_and(|n| n == name)
            })
        })
    };
    let binary = find(binary_name).ok_or_else(|| ArchiveError::NoBinary(binary_name.into()))?;
    let installer = find("installer.sh");
    Ok(Payload {
        binary,
        installer,
        files,
    })
}

/// `a/b/c` with `.` dropped; absolute paths and `..` are refused.
fn safe_relative(raw: &str) -> Result<String, ArchiveError> {
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

/// Build a `.tar.gz` from `(path, mode, contents)` (for tests and tools).
pub fn build(files: &[(&str, u32, &[u8])]) -> Vec<u8> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut builder = tar::Builder::new(gz);
    for (path, mode, contents) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(contents.len() as u64);
        header.set_mode(*mode);
        header.set_entry_type(tar::EntryType::Regular);
        header.set_cksum();
        builder
            .append_data(&mut header, path, *contents)
            .expect("writing to memory");
    }
    builder
        .into_inner()
        .and_then(|gz| gz.finish())
        .expect("writing to memory")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_binary_and_installer_one_level_down() {
        let tgz = build(&[
            ("pkg/README", 0o644, b"hi"),
            ("pkg/guestd", 0o755, b"BIN"),
            ("pkg/installer.sh", 0o755, b"#!/bin/sh\n"),
        ]);
        let p = unpack(&tgz, "guestd", 1 << 20).unwrap();
        assert_eq!(p.binary().contents, b"BIN");
        assert_eq!(p.binary().path, "pkg/guestd");
        assert_eq!(p.installer().unwrap().path, "pkg/installer.sh");
        assert_eq!(p.files.len(), 3);
    }

    #[test]
    fn top_level_wins_and_deep_binaries_do_not_count() {
        let tgz = build(&[("a/guestd", 0o755, b"A"), ("guestd", 0o755, b"TOP")]);
        assert_eq!(
            unpack(&tgz, "guestd", 1 << 20).unwrap().binary().contents,
            b"TOP"
        );
        let deep = build(&[("a/b/guestd", 0o755, b"X")]);
        assert_eq!(
            unpack(&deep, "guestd", 1 << 20),
            Err(ArchiveError::NoBinary("guestd".into()))
        );
    }

    #[test]
    fn bad_archives() {
        assert!(matches!(
            unpack(b"not gzip at all", "guestd", 1 << 20),
            Err(ArchiveError::Corrupt(_))
        ));
        let tgz = build(&[("guestd", 0o755, &[0u8; 1000])]);
        assert_eq!(
            unpack(&tgz, "guestd", 999),
            Err(ArchiveError::TooLarge(999))
        );
        assert_eq!(
            safe_relative("../etc/passwd"),
            Err(ArchiveError::UnsafePath("../etc/passwd".into()))
        );
        assert_eq!(
            safe_relative("/etc/passwd"),
            Err(ArchiveError::UnsafePath("/etc/passwd".into()))
        );
        assert_eq!(safe_relative("./a/./b").unwrap(), "a/b");
    }
}
