//! The update archive: a `.tar.gz` whose regular files (the new `guestd` binary, its companion
//! binaries, optionally an `installer.sh`) are unpacked in memory and handed to the daemon as an
//! entry stream ([`write_entries`]). Which file is the binary is the daemon's decision.

use std::io::{Read, Write};
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

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ArchiveError {
    #[error("Update archive is not a valid .tar.gz: {0}")]
    Corrupt(String),
    #[error("Update archive has an unsafe path '{0}'")]
    UnsafePath(String),
    #[error("Update archive unpacks to more than {0} bytes")]
    TooLarge(u64),
}

/// Unpack `bytes` (in memory, at most `max_unpacked` bytes of file contents): its regular
/// files, in archive order. Directories are implied; links and devices are never installed.
pub fn unpack(bytes: &[u8], max_unpacked: u64) -> Result<Vec<Entry>, ArchiveError> {
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
            continue;
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
    Ok(files)
}

/// `a/b/c` with `.` dropped; absolute paths, `..` and names with a newline are refused.
pub fn safe_relative(raw: &str) -> Result<String, ArchiveError> {
    let mut parts = Vec::new();
    for comp in Path::new(raw).components() {
        match comp {
            Component::Normal(p) if !p.to_string_lossy().contains(['\n', '\0']) => {
                parts.push(p.to_string_lossy().into_owned())
            }
            Component::CurDir => {}
            _ => return Err(ArchiveError::UnsafePath(raw.escape_debug().to_string())),
        }
    }
    if parts.is_empty() {
        return Err(ArchiveError::UnsafePath(raw.escape_debug().to_string()));
    }
    Ok(parts.join("/"))
}

/// The entry stream on the helper's stdout: per file a header line
/// `<mode in octal> <size in bytes> <path>\n`, then exactly `size` bytes of contents.
pub fn write_entries(entries: &[Entry], out: &mut impl Write) -> std::io::Result<()> {
    for e in entries {
        writeln!(out, "{:o} {} {}", e.mode & 0o7777, e.contents.len(), e.path)?;
        out.write_all(&e.contents)?;
    }
    out.flush()
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
    fn unpacks_regular_files_in_order() {
        let tgz = build(&[
            ("pkg/README", 0o644, b"hi"),
            ("./pkg/guestd", 0o755, b"BIN"),
            ("pkg/installer.sh", 0o755, b"#!/bin/sh\n"),
        ]);
        let files = unpack(&tgz, 1 << 20).unwrap();
        let paths: Vec<_> = files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(paths, ["pkg/README", "pkg/guestd", "pkg/installer.sh"]);
        assert_eq!(files[1].contents, b"BIN");
        assert_eq!(files[1].mode & 0o777, 0o755);
    }

    #[test]
    fn bad_archives() {
        assert!(matches!(
            unpack(b"not gzip at all", 1 << 20),
            Err(ArchiveError::Corrupt(_))
        ));
        let tgz = build(&[("guestd", 0o755, &[0u8; 1000])]);
        assert_eq!(unpack(&tgz, 999), Err(ArchiveError::TooLarge(999)));
        assert_eq!(
            safe_relative("../etc/passwd"),
            Err(ArchiveError::UnsafePath("../etc/passwd".into()))
        );
        assert_eq!(
            safe_relative("/etc/passwd"),
            Err(ArchiveError::UnsafePath("/etc/passwd".into()))
        );
        assert!(safe_relative("a\nb").is_err());
        assert!(safe_relative(".").is_err());
        assert_eq!(safe_relative("./a/./b").unwrap(), "a/b");
    }

    #[test]
    fn entry_stream_layout() {
        let mut out = Vec::new();
        let entries = [
            Entry {
                path: "pkg/guestd".into(),
                mode: 0o100755,
                contents: b"BIN\n".to_vec(),
            },
            Entry {
                path: "a b".into(),
                mode: 0o644,
                contents: Vec::new(),
            },
        ];
        write_entries(&entries, &mut out).unwrap();
        assert_eq!(out, b"755 4 pkg/guestd\nBIN\n644 0 a b\n");
    }
}
