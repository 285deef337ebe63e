//! [`Root::open_file`]: a file held open for the host (qga's `guest-file-open`), reached like
//! every other path of [`Root`] (by directory handle, links followed only in directories no
//! unprivileged user controls), plus:
//!
//! - the caller's `allowed` check sees the guest path the walk actually reached, before
//!   anything is created or truncated (where the way cannot be walked, the path as written is
//!   judged, so a refused path is refused as such and says nothing of what exists there);
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
//! Unix only (the implementation is `root::unix::open`).

use std::fs::File;
use std::path::{Path, PathBuf};

use super::{Root, RootError};

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
    pub(in crate::root) fn reads_existing(&self) -> bool {
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
    /// [`RootError::NotAllowed`] before anything changes. A write mode also answers to the
    /// root's write policy ([`Root::with_write_policy`]).
    pub fn open_file(
        &self,
        guest: impl AsRef<Path>,
        mode: OpenMode,
        allowed: impl Fn(&Path) -> bool,
    ) -> Result<OpenedFile, RootError> {
        super::unix::open_file(self, guest.as_ref(), mode, &allowed)
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // tests build their trees by path
mod tests {
    use std::io::{Read, Seek, SeekFrom, Write};
    use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
    use std::time::{Duration, Instant};

    use rustix::fs::{self as rfs, Mode};

    use super::*;
    use crate::root::own_ids;

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
