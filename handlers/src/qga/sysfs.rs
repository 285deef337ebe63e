//! Small helpers for reading kernel files (/proc, /sys) through `Root`, so every command that
//! uses them runs on a sandbox tree in tests: canonical paths across sysfs's relative links,
//! trimmed attribute values, and the errno behind a failed access (qga reports it).

use std::path::{Component, Path};

use guestd_core::{HandlerError, Root, RootError};

/// Links followed while canonicalising one path (as the kernel's limit).
const MAX_LINKS: usize = 40;

/// `realpath(3)` of a guest path: every symlink resolved (relative targets against their
/// directory, absolute ones against the root), `.` and `..` folded; `Ok(None)` when a component
/// does not exist. Needed because sysfs names devices through links
/// (`/sys/dev/block/254:0 -> ../../devices/pci…/block/vda`) and the device's place in that tree
/// is the information.
pub(crate) fn canonical(root: &Root, path: &str) -> Result<Option<String>, HandlerError> {
    let mut pending: Vec<String> = components(path).into_iter().rev().collect();
    let mut done: Vec<String> = Vec::new();
    let mut links = 0;
    while let Some(part) = pending.pop() {
        if part == ".." {
            done.pop();
            continue;
        }
        done.push(part);
        let here = join(&done);
        if !root.is_symlink(&here) {
            if !root.exists(&here) {
                return Ok(None);
            }
            continue;
        }
        links += 1;
        if links > MAX_LINKS {
            return Err(HandlerError::failed(format!(
                "realpath(\"{path}\"): too many levels of symbolic links"
            )));
        }
        let target = root.read_link(&here)?;
        let target = target.to_string_lossy();
        done.pop();
        if target.starts_with('/') {
            done.clear();
        }
        pending.extend(components(&target).into_iter().rev());
    }
    Ok(Some(join(&done)))
}

fn components(path: &str) -> Vec<String> {
    Path::new(path)
        .components()
        .filter_map(|c| match c {
            Component::Normal(p) => Some(p.to_string_lossy().into_owned()),
            Component::ParentDir => Some("..".to_string()),
            _ => None,
        })
        .collect()
}

fn join(parts: &[String]) -> String {
    if parts.is_empty() {
        "/".to_string()
    } else {
        parts.iter().map(|p| format!("/{p}")).collect()
    }
}

/// The last component of a path.
pub(crate) fn basename(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// A sysfs attribute (or any small text file) with surrounding whitespace removed; `None`
/// when it cannot be read.
pub(crate) fn attr(root: &Root, path: &str) -> Option<String> {
    let bytes = root.read(path).ok()?;
    Some(String::from_utf8_lossy(&bytes).trim().to_string())
}

/// The OS error number behind a failed file access, as qemu-ga reports it (`error-code`).
pub(crate) fn errno(err: &RootError) -> Option<i32> {
    let mut source = std::error::Error::source(err);
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return io.raw_os_error().or(match io.kind() {
                std::io::ErrorKind::NotFound => Some(2),
                std::io::ErrorKind::PermissionDenied => Some(13),
                _ => None,
            });
        }
        source = e.source();
    }
    None
}

/// Whether a failed access failed because the path does not exist.
pub(crate) fn is_not_found(err: &RootError) -> bool {
    err.is_not_found() || errno(err) == Some(2)
}

#[cfg(all(test, unix))]
#[allow(clippy::disallowed_methods)] // tests build their trees by path
mod tests {
    use super::*;

    #[test]
    fn canonical_follows_relative_and_absolute_links() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path();
        std::fs::create_dir_all(p.join("sys/devices/pci0000:00/0000:00:02.0/virtio1/block/vda"))
            .unwrap();
        std::fs::create_dir_all(p.join("sys/dev/block")).unwrap();
        std::os::unix::fs::symlink(
            "../../devices/pci0000:00/0000:00:02.0/virtio1/block/vda",
            p.join("sys/dev/block/254:0"),
        )
        .unwrap();
        std::fs::create_dir_all(p.join("sys/block")).unwrap();
        std::os::unix::fs::symlink("/sys/dev/block/254:0", p.join("sys/block/vda")).unwrap();
        let root = Root::sandbox(p).unwrap();
        let want = Some("/sys/devices/pci0000:00/0000:00:02.0/virtio1/block/vda".to_string());
        assert_eq!(canonical(&root, "/sys/dev/block/254:0").unwrap(), want);
        assert_eq!(canonical(&root, "/sys/block/vda").unwrap(), want);
        assert_eq!(canonical(&root, "/sys/block/vda/../vda/.").unwrap(), want);
        assert_eq!(canonical(&root, "/sys/dev/block/1:1").unwrap(), None);
        std::os::unix::fs::symlink("loop", p.join("sys/loop")).unwrap();
        let err = canonical(&root, "/sys/loop").unwrap_err();
        assert!(err.to_string().contains("too many levels"), "{err}");
        let err = root.read("/sys/nothing").unwrap_err();
        assert!(is_not_found(&err));
        assert_eq!(errno(&err), Some(2));
        assert_eq!(basename("/sys/block/vda"), "vda");
    }
}
