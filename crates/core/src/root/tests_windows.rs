//! Windows paths (run under Wine by scripts/test-all).

use super::*;

#[test]
fn drive_letters_are_directories_of_the_sandbox() {
    let d = tempfile::tempdir().unwrap();
    let root = Root::sandbox(d.path()).unwrap();
    let base = root.base().unwrap().to_path_buf();
    assert_eq!(
        root.resolve(r"C:\x\y.txt").unwrap(),
        base.join(r"C\x\y.txt")
    );
    assert_eq!(root.resolve("d:/x").unwrap(), base.join(r"D\x"));
    assert_eq!(
        root.resolve(r"\etc\hosts").unwrap(),
        base.join(r"etc\hosts")
    );
    for bad in [r"\\server\share\x", r"\\.\PhysicalDrive0", r"\\?\UNC\s\x\y"] {
        assert!(
            matches!(root.resolve(bad), Err(RootError::UnsupportedPrefix(_))),
            "{bad}"
        );
    }
    assert!(matches!(
        root.resolve("C:rel"),
        Err(RootError::NotAbsolute(_))
    ));
    assert!(matches!(
        root.resolve(r"C:\a\..\b"),
        Err(RootError::DotDot(_))
    ));
}

#[test]
fn replacing_a_file_goes_through_replacefile() {
    let d = tempfile::tempdir().unwrap();
    let root = Root::sandbox(d.path()).unwrap();
    root.create_dir_all(r"C:\data", 0o755).unwrap();
    root.write_atomic(r"C:\data\f.txt", b"one", WriteOptions::default())
        .unwrap();
    root.write_atomic(r"C:\data\f.txt", b"two", WriteOptions::default())
        .unwrap();
    assert_eq!(root.read(r"C:\data\f.txt").unwrap(), b"two");
    // No temp file is left behind by either path.
    assert_eq!(
        root.read_dir(r"C:\data").unwrap(),
        vec!["f.txt".to_string()]
    );
}

#[test]
fn reads_are_bounded_and_directories_refused() {
    let d = tempfile::tempdir().unwrap();
    let root = Root::sandbox(d.path()).unwrap();
    root.create_dir_all(r"C:\data", 0o755).unwrap();
    root.write_atomic(r"C:\data\big", &[b'x'; 100], WriteOptions::default())
        .unwrap();
    assert!(matches!(
        root.read_limited(r"C:\data\big", 99),
        Err(RootError::TooLarge { limit: 99, .. })
    ));
    assert_eq!(root.read_limited(r"C:\data\big", 100).unwrap().len(), 100);
    assert!(matches!(
        root.read(r"C:\data"),
        Err(RootError::NotRegular { .. })
    ));
}

#[test]
fn the_write_policy_ignores_case_and_path_forms() {
    let d = tempfile::tempdir().unwrap();
    let root = Root::sandbox(d.path())
        .unwrap()
        .with_write_policy(PathPolicy::new(vec![], vec![r"C:\Windows".into()]));
    root.without_write_policy()
        .create_dir_all(r"C:\Windows", 0o755)
        .unwrap();
    for path in [r"c:\windows\x", r"C:/WINDOWS/x", r"\\?\C:\Windows\x", r"\x"] {
        assert!(
            matches!(
                root.write_atomic(path, b"x", WriteOptions::default()),
                Err(RootError::Denied(_))
            ),
            "{path}"
        );
    }
    root.create_dir_all(r"C:\data", 0o755).unwrap();
    root.write_atomic(r"c:\data\ok", b"x", WriteOptions::default())
        .unwrap();
}
