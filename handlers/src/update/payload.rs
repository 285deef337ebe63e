//! What an update archive holds, as the helper (`guestd-update unpack`) lists it: the new
//! `guestd` binary at the top level or one directory down, the companion binaries beside it
//! (`guestd-update`, `guestd-tls`), and optionally an `installer.sh` (run as the old agent did).
//! The helper's entry stream is decoded and checked here again: guestd trusts no path it did not
//! check itself.

use std::path::{Component, Path};

/// A regular file of the archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Relative path inside the archive (`guestd`, `pkg/installer.sh`).
    pub path: String,
    pub mode: u32,
    pub contents: Vec<u8>,
}

/// The binaries installed beside `guestd` when the archive holds them next to it.
pub const COMPANIONS: [&str; 2] = ["guestd-update", "guestd-tls"];

/// What the archive holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payload {
    /// Index into `files` of the new binary.
    pub binary: usize,
    /// Index into `files` of `installer.sh`, if any.
    pub installer: Option<usize>,
    /// (file name, index into `files`) of each companion beside the binary.
    pub companions: Vec<(String, usize)>,
    pub files: Vec<Entry>,
}

impl Payload {
    /// Find `binary_name` (top level first, then one directory down) and what lies beside it.
    /// `exe_suffix` is `.exe` on Windows.
    pub fn find(files: Vec<Entry>, binary_name: &str, exe_suffix: &str) -> Result<Self, String> {
        let find = |name: &str| {
            (1..=2).find_map(|depth| {
                files.iter().position(|f| {
                    let p = Path::new(&f.path);
                    p.components().count() == depth && p.file_name().is_some_and(|n| n == name)
                })
            })
        };
        let binary = find(binary_name)
            .ok_or_else(|| format!("Update archive holds no {binary_name} binary"))?;
        let dir = Path::new(&files[binary].path)
            .parent()
            .map(Path::to_path_buf);
        let companions = COMPANIONS
            .iter()
            .map(|c| format!("{c}{exe_suffix}"))
            .filter_map(|name| {
                let i = files.iter().position(|f| {
                    let p = Path::new(&f.path);
                    p.parent().map(Path::to_path_buf) == dir
                        && p.file_name().is_some_and(|n| *n == *name)
                })?;
                Some((name, i))
            })
            .collect();
        let installer = find("installer.sh");
        Ok(Self {
            binary,
            installer,
            companions,
            files,
        })
    }

    pub fn binary(&self) -> &Entry {
        &self.files[self.binary]
    }

    pub fn installer(&self) -> Option<&Entry> {
        self.installer.map(|i| &self.files[i])
    }
}

/// Decode the helper's entry stream: per file `<mode octal> <size> <path>\n` then `size` bytes.
/// At most `max_total` bytes of contents; every path relative, without `..`.
pub fn decode(mut bytes: &[u8], max_total: u64) -> Result<Vec<Entry>, String> {
    let mut files = Vec::new();
    let mut total = 0u64;
    while !bytes.is_empty() {
        let nl = bytes
            .iter()
            .position(|&b| b == b'\n')
            .ok_or("an entry header without its newline")?;
        let header = std::str::from_utf8(&bytes[..nl]).map_err(|_| "a header is not UTF-8")?;
        bytes = &bytes[nl + 1..];
        let mut parts = header.splitn(3, ' ');
        let (Some(mode), Some(size), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(format!("bad entry header '{}'", header.escape_debug()));
        };
        let mode = u32::from_str_radix(mode, 8).map_err(|_| format!("bad mode '{mode}'"))?;
        let size: u64 = size.parse().map_err(|_| format!("bad size '{size}'"))?;
        total = total.saturating_add(size);
        if total > max_total {
            return Err(format!("more than {max_total} bytes"));
        }
        let size = size as usize;
        if bytes.len() < size {
            return Err(format!("'{}' is cut short", path.escape_debug()));
        }
        if !is_safe_relative(path) {
            return Err(format!("unsafe path '{}'", path.escape_debug()));
        }
        files.push(Entry {
            path: path.to_string(),
            mode,
            contents: bytes[..size].to_vec(),
        });
        bytes = &bytes[size..];
    }
    Ok(files)
}

/// `a/b/c`: relative, only normal components.
fn is_safe_relative(path: &str) -> bool {
    !path.is_empty()
        && Path::new(path)
            .components()
            .all(|c| matches!(c, Component::Normal(_)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(path: &str, contents: &[u8]) -> Entry {
        Entry {
            path: path.into(),
            mode: 0o755,
            contents: contents.to_vec(),
        }
    }

    #[test]
    fn decodes_the_entry_stream() {
        let files = decode(b"755 4 pkg/guestd\nBIN\n644 0 a b\n", 100).unwrap();
        assert_eq!(
            files,
            [
                entry("pkg/guestd", b"BIN\n"),
                Entry {
                    mode: 0o644,
                    ..entry("a b", b"")
                }
            ]
        );
        assert!(
            decode(b"755 5 guestd\nBIN\n", 100)
                .unwrap_err()
                .contains("cut short")
        );
        assert!(
            decode(b"755 4 guestd\nBIN\n", 3)
                .unwrap_err()
                .contains("more than 3")
        );
        assert!(decode(b"755 0 ../x\n", 100).unwrap_err().contains("unsafe"));
        assert!(
            decode(b"755 0 /etc/x\n", 100)
                .unwrap_err()
                .contains("unsafe")
        );
        assert!(decode(b"755 0 x", 100).is_err());
        assert!(decode(b"9 0 x\n", 100).unwrap_err().contains("bad mode"));
        assert_eq!(decode(b"", 100).unwrap(), []);
    }

    #[test]
    fn finds_binary_installer_and_companions_one_level_down() {
        let files = vec![
            entry("pkg/README", b"hi"),
            entry("pkg/guestd", b"BIN"),
            entry("pkg/guestd-tls", b"TLS"),
            entry("other/guestd-update", b"not beside the binary"),
            entry("pkg/installer.sh", b"#!/bin/sh\n"),
        ];
        let p = Payload::find(files, "guestd", "").unwrap();
        assert_eq!(p.binary().contents, b"BIN");
        assert_eq!(p.installer().unwrap().path, "pkg/installer.sh");
        assert_eq!(p.companions, [("guestd-tls".to_string(), 2)]);
    }

    #[test]
    fn top_level_wins_and_deep_binaries_do_not_count() {
        let p = Payload::find(
            vec![entry("a/guestd", b"A"), entry("guestd", b"TOP")],
            "guestd",
            "",
        )
        .unwrap();
        assert_eq!(p.binary().contents, b"TOP");
        assert_eq!(
            Payload::find(vec![entry("a/b/guestd", b"X")], "guestd", "").unwrap_err(),
            "Update archive holds no guestd binary"
        );
        let p = Payload::find(
            vec![
                entry("guestd.exe", b"EXE"),
                entry("guestd-update.exe", b"U"),
            ],
            "guestd.exe",
            ".exe",
        )
        .unwrap();
        assert_eq!(p.companions, [("guestd-update.exe".to_string(), 1)]);
    }
}
