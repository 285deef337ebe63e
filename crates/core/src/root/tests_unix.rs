//! Each promise of the module docs, on a sandbox root. Every test runs twice: through Linux's
//! `openat2` fast path and through the component walk alone.
#![allow(clippy::disallowed_methods)] // tests build their trees by path

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use super::*;

fn sandbox() -> (tempfile::TempDir, Root) {
    let dir = tempfile::tempdir().unwrap();
    let root = Root::sandbox(dir.path()).unwrap();
    (dir, root)
}

/// Run `case` with the fast path, then with the walk only.
fn both(case: impl Fn()) {
    for walk_only in [false, true] {
        unix::disable_fast_path(walk_only);
        case();
    }
    unix::disable_fast_path(false);
}

fn is_root() -> bool {
    own_ids().0 == 0
}

/// A home directory owned by an unprivileged account (uid 1000).
fn user_home(base: &Path) -> std::path::PathBuf {
    let home = base.join("home/alice");
    fs::create_dir_all(&home).unwrap();
    std::os::unix::fs::chown(&home, Some(1000), Some(1000)).unwrap();
    home
}

/// Run `f` on another thread and fail (instead of hanging) if it blocks.
fn within_seconds<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(10))
        .expect("the operation blocked")
}

#[test]
fn rejects_relative_and_dotdot() {
    let (_d, root) = sandbox();
    assert!(matches!(
        root.resolve("etc/x"),
        Err(RootError::NotAbsolute(_))
    ));
    assert!(matches!(
        root.resolve("/etc/../x"),
        Err(RootError::DotDot(_))
    ));
    assert!(matches!(
        Root::system().resolve("/a/../b"),
        Err(RootError::DotDot(_))
    ));
}

#[test]
fn links_resolve_as_if_the_root_were_slash() {
    both(|| {
        let (d, root) = sandbox();
        fs::create_dir_all(d.path().join("run/x")).unwrap();
        fs::create_dir_all(d.path().join("etc")).unwrap();
        fs::write(d.path().join("etc/passwd"), b"sandbox passwd\n").unwrap();
        symlink("/run/x/resolv.conf", d.path().join("etc/resolv.conf")).unwrap();
        root.write_atomic(
            "/etc/resolv.conf",
            b"nameserver 1.1.1.1\n",
            WriteOptions::default(),
        )
        .unwrap();
        assert_eq!(
            fs::read(d.path().join("run/x/resolv.conf")).unwrap(),
            b"nameserver 1.1.1.1\n"
        );
        assert!(root.is_symlink("/etc/resolv.conf"));
        // `..` in a target stops at the root (RESOLVE_IN_ROOT), it never reaches the host.
        symlink("../../../../../../etc/passwd", d.path().join("etc/evil")).unwrap();
        assert_eq!(root.read("/etc/evil").unwrap(), b"sandbox passwd\n");
        symlink("/../../etc", d.path().join("run/etc")).unwrap();
        assert_eq!(root.read("/run/etc/passwd").unwrap(), b"sandbox passwd\n");
        symlink("loop", d.path().join("etc/loop")).unwrap();
        assert!(matches!(
            root.read("/etc/loop"),
            Err(RootError::TooManyLinks(_))
        ));
        symlink("../run", d.path().join("etc/run")).unwrap();
        assert_eq!(
            root.resolve("/etc/run/x").unwrap(),
            d.path().canonicalize().unwrap().join("run/x")
        );
        assert!(root.is_dir("/etc/run/x"));
        assert_eq!(root.read_dir("/etc/run").unwrap(), vec!["etc", "x"]);
        // A missing tail is kept as given (for external commands).
        assert_eq!(
            root.resolve("/etc/run/new/file").unwrap(),
            d.path().canonicalize().unwrap().join("run/new/file")
        );
    });
}

#[test]
fn atomic_write_preserves_mode_and_owner_and_leaves_no_temp() {
    both(|| {
        let (d, root) = sandbox();
        let p = d.path().join("shadow");
        fs::write(&p, b"old").unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o640)).unwrap();
        std::os::unix::fs::chown(&p, None, Some(42)).ok();
        let gid = fs::metadata(&p).unwrap().gid();
        root.write_atomic("/shadow", b"new", WriteOptions::mode(0o644))
            .unwrap();
        let md = fs::metadata(&p).unwrap();
        assert_eq!(md.mode() & 0o7777, 0o640);
        assert_eq!(md.gid(), gid);
        assert_eq!(fs::read(&p).unwrap(), b"new");
        assert_eq!(root.read_dir("/").unwrap(), vec!["shadow".to_string()]);
        root.write_atomic("/new", b"x", WriteOptions::mode(0o600))
            .unwrap();
        assert_eq!(root.metadata("/new").unwrap().mode, 0o600);
        root.write_atomic("/new", b"x", WriteOptions::mode(0o644).exact())
            .unwrap();
        assert_eq!(root.metadata("/new").unwrap().mode, 0o644);
    });
}

#[test]
fn missing_parent_is_a_clear_error_and_new_directories_get_exact_modes() {
    both(|| {
        let (_d, root) = sandbox();
        let err = root
            .write_atomic("/no/such/dir/f", b"x", WriteOptions::default())
            .unwrap_err();
        assert!(err.is_not_found());
        assert!(
            err.to_string().starts_with("cannot open '/no/such/dir/f'"),
            "{err}"
        );
        root.create_dir_all("/no/such/dir", 0o751).unwrap();
        root.write_atomic("/no/such/dir/f", b"x", WriteOptions::default())
            .unwrap();
        assert_eq!(root.metadata("/no/such").unwrap().mode, 0o751);
        assert_eq!(root.read_optional("/nothing").unwrap(), None);
    });
}

#[test]
fn a_link_in_a_user_directory_is_never_followed() {
    both(|| {
        let (d, root) = sandbox();
        let home = user_home(d.path());
        fs::create_dir_all(d.path().join("root/.ssh")).unwrap();
        fs::write(d.path().join("root/.ssh/authorized_keys"), b"root key\n").unwrap();
        // The parent swapped for a link to root's directory.
        symlink("/root/.ssh", home.join(".ssh")).unwrap();
        let err = root
            .write_atomic(
                "/home/alice/.ssh/authorized_keys",
                b"host key\n",
                WriteOptions::default(),
            )
            .unwrap_err();
        assert!(
            matches!(&err, RootError::UntrustedLink(p) if p == "/home/alice/.ssh"),
            "{err}"
        );
        assert!(err.to_string().contains("unprivileged user"), "{err}");
        assert!(root.read("/home/alice/.ssh/authorized_keys").is_err());
        assert!(root.create_dir_all("/home/alice/.ssh/x", 0o700).is_err());
        assert!(!root.exists("/home/alice/.ssh/authorized_keys"));
        // The last component a link: refused when followed, replaced (not followed) otherwise.
        symlink("/root/.ssh/authorized_keys", home.join("keys")).unwrap();
        assert!(matches!(
            root.write_atomic("/home/alice/keys", b"x", WriteOptions::default()),
            Err(RootError::UntrustedLink(_))
        ));
        assert!(matches!(
            root.set_meta("/home/alice/keys", FileMeta::default()),
            Err(RootError::UntrustedLink(_))
        ));
        root.replace_file("/home/alice/keys", b"x", WriteOptions::default())
            .unwrap();
        assert!(!root.is_symlink("/home/alice/keys"));
        assert_eq!(
            fs::read(d.path().join("root/.ssh/authorized_keys")).unwrap(),
            b"root key\n"
        );
        // The sticky, world-writable /tmp counts as a user's directory even though root owns it.
        fs::create_dir(d.path().join("tmp")).unwrap();
        fs::set_permissions(d.path().join("tmp"), fs::Permissions::from_mode(0o1777)).unwrap();
        symlink("/root/.ssh/authorized_keys", d.path().join("tmp/k")).unwrap();
        assert!(matches!(
            root.read("/tmp/k"),
            Err(RootError::UntrustedLink(_))
        ));
    });
}

#[test]
fn fifos_sockets_and_devices_are_refused_without_blocking() {
    both(|| {
        let (d, root) = sandbox();
        let base = d.path().to_path_buf();
        rustix::fs::mkfifoat(
            rustix::fs::CWD,
            base.join("fifo"),
            rustix::fs::Mode::from_bits_truncate(0o666),
        )
        .unwrap();
        let _sock = std::os::unix::net::UnixListener::bind(base.join("sock")).unwrap();
        let mut special = vec![("/fifo", "FIFO"), ("/sock", "socket")];
        if is_root() {
            rustix::fs::mknodat(
                rustix::fs::CWD,
                base.join("null"),
                rustix::fs::FileType::CharacterDevice,
                rustix::fs::Mode::from_bits_truncate(0o666),
                rustix::fs::makedev(1, 3),
            )
            .unwrap();
            special.push(("/null", "character device"));
        }
        for (path, kind) in special {
            let root = root.clone();
            let results = within_seconds(move || {
                (
                    root.read(path).unwrap_err().to_string(),
                    root.write_atomic(path, b"x", WriteOptions::default())
                        .unwrap_err()
                        .to_string(),
                    root.snapshot(path, 10).unwrap_err().to_string(),
                    root.set_meta(path, FileMeta::default())
                        .unwrap_err()
                        .to_string(),
                )
            });
            let want = format!("'{path}' is not a regular file (it is a {kind})");
            for text in [results.0, results.1, results.2, results.3] {
                assert!(text.starts_with(&want), "{text}");
            }
        }
        assert_eq!(
            rustix::fs::statat(
                rustix::fs::CWD,
                base.join("fifo"),
                rustix::fs::AtFlags::empty()
            )
            .map(|st| rustix::fs::FileType::from_raw_mode(st.st_mode))
            .unwrap(),
            rustix::fs::FileType::Fifo,
            "the FIFO is still there, not replaced"
        );
    });
}

#[test]
fn reads_are_bounded() {
    both(|| {
        let (d, root) = sandbox();
        fs::write(d.path().join("big"), vec![b'x'; 100]).unwrap();
        let err = root.read_limited("/big", 99).unwrap_err();
        assert_eq!(
            err.to_string(),
            "'/big' is larger than the limit of 99 bytes"
        );
        assert_eq!(root.read_limited("/big", 100).unwrap().len(), 100);
        assert!(matches!(
            root.snapshot("/big", 50),
            Err(RootError::TooLarge { limit: 50, .. })
        ));
    });
}

#[test]
fn hard_linked_or_foreign_files_in_a_user_directory_are_not_read() {
    both(|| {
        let (d, root) = sandbox();
        let home = user_home(d.path());
        fs::create_dir(d.path().join("etc")).unwrap();
        fs::write(d.path().join("etc/shadow"), b"root:hash:::\n").unwrap();
        fs::hard_link(d.path().join("etc/shadow"), home.join("keys")).unwrap();
        let err = root.read("/home/alice/keys").unwrap_err();
        assert_eq!(
            err.to_string(),
            "'/home/alice/keys' is not read: it has other hard links, in a directory that an \
             unprivileged user controls"
        );
        assert!(matches!(
            root.snapshot("/home/alice/keys", 1024).unwrap(),
            Snapshot::Unread { .. }
        ));
        // Replaced: the other link keeps its content, owner and mode.
        root.write_atomic(
            "/home/alice/keys",
            b"new\n",
            WriteOptions::mode(0o600).owner(1000, 1000),
        )
        .unwrap();
        assert_eq!(fs::read(home.join("keys")).unwrap(), b"new\n");
        let md = fs::metadata(home.join("keys")).unwrap();
        assert_eq!((md.uid(), md.mode() & 0o7777, md.nlink()), (1000, 0o600, 1));
        assert_eq!(
            fs::read(d.path().join("etc/shadow")).unwrap(),
            b"root:hash:::\n"
        );
        // A single-link file of another account there is not read either; the user's own is.
        fs::write(home.join("rootfile"), b"x").unwrap();
        assert!(matches!(
            root.read("/home/alice/rootfile"),
            Err(RootError::Untrusted { .. })
        ));
        fs::write(home.join("own"), b"mine").unwrap();
        std::os::unix::fs::chown(home.join("own"), Some(1000), Some(1000)).unwrap();
        assert_eq!(root.read("/home/alice/own").unwrap(), b"mine");
    });
}

#[test]
fn replacing_in_a_user_directory_never_keeps_set_id_bits_or_foreign_owners() {
    both(|| {
        let (d, root) = sandbox();
        let home = user_home(d.path());
        fs::write(home.join("tool"), b"old").unwrap();
        fs::set_permissions(home.join("tool"), fs::Permissions::from_mode(0o4755)).unwrap();
        root.write_atomic(
            "/home/alice/tool",
            b"new",
            WriteOptions::mode(0o600).owner(1000, 1000),
        )
        .unwrap();
        let md = fs::metadata(home.join("tool")).unwrap();
        assert_eq!((md.uid(), md.mode() & 0o7777), (1000, 0o600));
        fs::write(home.join("own"), b"old").unwrap();
        std::os::unix::fs::chown(home.join("own"), Some(1000), Some(1000)).unwrap();
        fs::set_permissions(home.join("own"), fs::Permissions::from_mode(0o6640)).unwrap();
        root.write_atomic("/home/alice/own", b"new", WriteOptions::mode(0o600))
            .unwrap();
        let md = fs::metadata(home.join("own")).unwrap();
        assert_eq!((md.uid(), md.mode() & 0o7777), (1000, 0o640));
    });
}

#[test]
fn create_dir_owned_sets_owner_and_mode_through_the_handle_and_refuses_links() {
    both(|| {
        let (d, root) = sandbox();
        let home = user_home(d.path());
        assert!(
            root.create_dir_owned("/home/alice/.ssh", 0o700, 1000, 1001)
                .unwrap()
        );
        let md = fs::metadata(home.join(".ssh")).unwrap();
        assert_eq!(
            (md.uid(), md.gid(), md.mode() & 0o7777),
            (1000, 1001, 0o700)
        );
        // An existing directory is left as it is.
        fs::set_permissions(home.join(".ssh"), fs::Permissions::from_mode(0o750)).unwrap();
        assert!(
            !root
                .create_dir_owned("/home/alice/.ssh", 0o700, 1000, 1001)
                .unwrap()
        );
        assert_eq!(
            fs::metadata(home.join(".ssh")).unwrap().mode() & 0o7777,
            0o750
        );
        fs::create_dir(d.path().join("etc")).unwrap();
        symlink("/etc", home.join("link")).unwrap();
        let err = root
            .create_dir_owned("/home/alice/link", 0o700, 1000, 1000)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "'/home/alice/link' is a symbolic link; refusing to use it"
        );
        assert_eq!(
            fs::metadata(d.path().join("etc")).unwrap().uid(),
            own_ids().0
        );
    });
}

#[test]
fn the_write_policy_judges_the_path_reached() {
    both(|| {
        let (d, root) = sandbox();
        fs::create_dir_all(d.path().join("etc")).unwrap();
        fs::create_dir_all(d.path().join("srv")).unwrap();
        fs::write(d.path().join("etc/passwd"), b"p").unwrap();
        symlink("/etc", d.path().join("srv/link")).unwrap();
        let limited = root.with_write_policy(PathPolicy::unix(vec![], vec!["/etc".into()]));
        let err = limited
            .write_atomic("/srv/link/passwd", b"x", WriteOptions::default())
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "writing '/srv/link/passwd' is not allowed by this guest's configuration"
        );
        assert!(limited.create_dir_all("/srv/link/new", 0o755).is_err());
        assert!(limited.remove_file("/srv/link/passwd").is_err());
        assert_eq!(fs::read(d.path().join("etc/passwd")).unwrap(), b"p");
        assert!(!d.path().join("etc/new").exists());
        limited
            .write_atomic("/srv/ok", b"x", WriteOptions::default())
            .unwrap();
        limited
            .without_write_policy()
            .write_atomic("/srv/link/passwd", b"x", WriteOptions::default())
            .unwrap();
    });
}

#[test]
fn remove_dir_all_never_follows_links() {
    both(|| {
        let (d, root) = sandbox();
        fs::create_dir_all(d.path().join("keep")).unwrap();
        fs::write(d.path().join("keep/file"), b"k").unwrap();
        fs::create_dir_all(d.path().join("gone/sub/deeper")).unwrap();
        fs::write(d.path().join("gone/sub/deeper/f"), b"x").unwrap();
        symlink("/keep", d.path().join("gone/sub/link")).unwrap();
        symlink("/keep/file", d.path().join("gone/filelink")).unwrap();
        root.remove_dir_all("/gone").unwrap();
        assert!(!d.path().join("gone").exists());
        assert_eq!(fs::read(d.path().join("keep/file")).unwrap(), b"k");
        root.remove_dir_all("/gone").unwrap();
        // A link given as the path itself is removed, not followed.
        symlink("/keep", d.path().join("l")).unwrap();
        root.remove_dir_all("/l").unwrap();
        assert!(d.path().join("keep/file").exists());
    });
}

#[test]
fn renames_links_and_modes_act_on_entries() {
    both(|| {
        let (d, root) = sandbox();
        fs::create_dir_all(d.path().join("a")).unwrap();
        root.write_atomic("/a/x", b"1", WriteOptions::mode(0o600))
            .unwrap();
        root.rename("/a/x", "/a/y").unwrap();
        assert_eq!(root.read("/a/y").unwrap(), b"1");
        root.symlink("/a/l", "/a/y").unwrap();
        root.symlink("/a/l", "/a/z").unwrap();
        assert_eq!(root.read_link("/a/l").unwrap(), Path::new("/a/z"));
        root.set_meta(
            "/a/y",
            FileMeta {
                mode: 0o640,
                uid: 0,
                gid: 7,
            },
        )
        .unwrap();
        let md = fs::metadata(d.path().join("a/y")).unwrap();
        assert_eq!((md.mode() & 0o7777, md.gid()), (0o640, 7));
        root.set_meta(
            "/a",
            FileMeta {
                mode: 0o711,
                uid: 0,
                gid: 0,
            },
        )
        .unwrap();
        assert_eq!(root.metadata("/a").unwrap().mode, 0o711);
        root.remove_file("/a/l").unwrap();
        root.remove_file("/a/l").unwrap();
        assert_eq!(root.read_dir("/a").unwrap(), vec!["y"]);
        let lock = root.open_lock_file("/a/.lock", 0o600).unwrap();
        drop(lock);
        assert_eq!(root.metadata("/a/.lock").unwrap().mode, 0o600);
    });
}

#[test]
fn private_directories_are_root_owned_all_the_way() {
    both(|| {
        let (d, root) = sandbox();
        fs::create_dir_all(d.path().join("var/lib/guestd")).unwrap();
        root.check_private("/var/lib/guestd/update").unwrap();
        let home = user_home(d.path());
        fs::create_dir_all(home.join("state")).unwrap();
        let err = root.check_private("/home/alice/state/update").unwrap_err();
        assert!(
            matches!(&err, RootError::NotPrivate(p) if p == "/home/alice"),
            "{err}"
        );
        fs::create_dir(d.path().join("tmp")).unwrap();
        fs::set_permissions(d.path().join("tmp"), fs::Permissions::from_mode(0o1777)).unwrap();
        assert!(root.check_private("/tmp/x").is_err());
    });
}

#[test]
fn open_private_takes_only_root_files_no_one_else_can_change() {
    if !is_root() {
        return;
    }
    both(|| {
        let (d, root) = sandbox();
        let dir = d.path().join("etc/guestd/scripts");
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("ok.sh"), b"#!/bin/sh\n").unwrap();
        fs::set_permissions(dir.join("ok.sh"), fs::Permissions::from_mode(0o755)).unwrap();
        let (_, meta) = root.open_private("/etc/guestd/scripts/ok.sh").unwrap();
        assert_eq!((meta.uid, meta.mode & 0o777), (0, 0o755));
        assert_eq!(
            root.read_private("/etc/guestd/scripts/ok.sh", 100).unwrap(),
            b"#!/bin/sh\n"
        );
        assert!(matches!(
            root.read_private("/etc/guestd/scripts/ok.sh", 3),
            Err(RootError::TooLarge { .. })
        ));
        // Writable by the group, owned by a user, a link, a FIFO: each refused.
        fs::write(dir.join("group-w.sh"), b"x").unwrap();
        fs::set_permissions(dir.join("group-w.sh"), fs::Permissions::from_mode(0o775)).unwrap();
        let err = root
            .open_private("/etc/guestd/scripts/group-w.sh")
            .unwrap_err();
        assert!(
            matches!(&err, RootError::NotPrivate(p) if p == "/etc/guestd/scripts/group-w.sh"),
            "{err}"
        );
        fs::write(dir.join("users.sh"), b"x").unwrap();
        std::os::unix::fs::chown(dir.join("users.sh"), Some(1000), Some(1000)).unwrap();
        assert!(matches!(
            root.open_private("/etc/guestd/scripts/users.sh"),
            Err(RootError::NotPrivate(_))
        ));
        symlink("ok.sh", dir.join("link.sh")).unwrap();
        assert!(matches!(
            root.open_private("/etc/guestd/scripts/link.sh"),
            Err(RootError::IsLink(_))
        ));
        // A directory on the way that others may write to.
        fs::set_permissions(
            d.path().join("etc/guestd"),
            fs::Permissions::from_mode(0o777),
        )
        .unwrap();
        let err = root.open_private("/etc/guestd/scripts/ok.sh").unwrap_err();
        assert!(
            matches!(&err, RootError::NotPrivate(p) if p == "/etc/guestd"),
            "{err}"
        );
        fs::set_permissions(
            d.path().join("etc/guestd"),
            fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o757)).unwrap();
        assert!(matches!(
            root.open_private("/etc/guestd/scripts/ok.sh"),
            Err(RootError::NotPrivate(_))
        ));
        assert!(
            root.open_private("/etc/guestd/missing/x")
                .unwrap_err()
                .is_not_found()
        );
    });
}

#[test]
fn write_in_place_changes_only_existing_regular_files() {
    both(|| {
        let (d, root) = sandbox();
        fs::create_dir_all(d.path().join("sys/cpu1")).unwrap();
        fs::write(d.path().join("sys/cpu1/online"), b"1\n").unwrap();
        root.write_in_place("/sys/cpu1/online", b"0").unwrap();
        // No truncation, no temp file: the kernel sees one write of exactly these bytes.
        assert_eq!(fs::read(d.path().join("sys/cpu1/online")).unwrap(), b"0\n");
        assert_eq!(root.read_dir("/sys/cpu1").unwrap(), ["online"]);
        assert!(
            root.write_in_place("/sys/cpu1/missing", b"0")
                .unwrap_err()
                .is_not_found()
        );
        assert!(!root.exists("/sys/cpu1/missing"));
        assert!(root.write_in_place("/sys/cpu1", b"0").is_err());
        let fifo = d.path().join("sys/fifo");
        rustix::fs::mkfifoat(
            rustix::fs::CWD,
            &fifo,
            rustix::fs::Mode::from_bits_truncate(0o600),
        )
        .unwrap();
        let root2 = root.clone();
        let err = within_seconds(move || root2.write_in_place("/sys/fifo", b"0").unwrap_err());
        assert!(matches!(err, RootError::NotRegular { .. }), "{err}");
    });
}
