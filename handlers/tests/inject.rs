#![cfg(unix)]
//! injectfile / file_inject through a real dispatcher on a sandbox root.
#![allow(clippy::disallowed_methods)] // tests build their trees by path

mod support;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use guestd_core::Root;
use guestd_handlers::{FileInjectHandler, InjectConfig, InjectFileHandler};
use support::{Recorder, call, env};

/// nova's key file for `ssh-rsa AAAAB3Nza... user@host` (spec §3 and §4.5).
const NOVA_KEY_FILE: &[u8] =
    b"\n# The following ssh key was injected by Nova\nssh-rsa AAAAB3Nza... user@host\n";

fn sandbox() -> (tempfile::TempDir, Root) {
    let d = tempfile::tempdir().unwrap();
    fs::create_dir_all(d.path().join("etc")).unwrap();
    fs::create_dir(d.path().join("root")).unwrap();
    fs::set_permissions(d.path().join("root"), fs::Permissions::from_mode(0o700)).unwrap();
    fs::write(
        d.path().join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/bash\nbob:x:1500:1600:Bob:/home/bob:/bin/bash\n",
    )
    .unwrap();
    let root = Root::sandbox(d.path()).unwrap();
    (d, root)
}

fn mode_owner(p: &std::path::Path) -> (u32, u32, u32) {
    let md = fs::metadata(p).unwrap();
    (md.mode() & 0o7777, md.uid(), md.gid())
}

fn check_nova_key(d: &tempfile::TempDir) {
    let keys = d.path().join("root/.ssh/authorized_keys");
    assert_eq!(fs::read(&keys).unwrap(), NOVA_KEY_FILE);
    assert_eq!(mode_owner(&keys), (0o600, 0, 0));
    assert_eq!(mode_owner(&d.path().join("root/.ssh")), (0o700, 0, 0));
    // Nothing else was left in the directory (no temp files, no backup of a missing file).
    assert_eq!(fs::read_dir(d.path().join("root/.ssh")).unwrap().count(), 1);
}

#[test]
fn nova_ssh_key_injectfile_exact_request() {
    let (d, root) = sandbox();
    let env = env(&root, Arc::new(Recorder::new()));
    // Byte for byte the request of spec §3.
    let req = r#"{"name": "injectfile", "value": "L3Jvb3QvLnNzaC9hdXRob3JpemVkX2tleXMsCiMgVGhlIGZvbGxvd2luZyBzc2gga2V5IHdhcyBpbmplY3RlZCBieSBOb3ZhCnNzaC1yc2EgQUFBQUIzTnphLi4uIHVzZXJAaG9zdAo="}"#;
    let reply = call(&env, InjectFileHandler::default(), req);
    assert_eq!(
        (reply.returncode.as_str(), reply.message.as_str()),
        ("0", "")
    );
    check_nova_key(&d);
}

#[test]
fn nova_ssh_key_file_inject_exact_request_both_key_orders() {
    for req in [
        // Python 2.7 order (spec §3)
        r#"{"name": "file_inject", "value": {"b64_file": "CiMgVGhlIGZvbGxvd2luZyBzc2gga2V5IHdhcyBpbmplY3RlZCBieSBOb3ZhCnNzaC1yc2EgQUFBQUIzTnphLi4uIHVzZXJAaG9zdAo=", "b64_path": "L3Jvb3QvLnNzaC9hdXRob3JpemVkX2tleXM="}}"#,
        // Python 3 order
        r#"{"name": "file_inject", "value": {"b64_path": "L3Jvb3QvLnNzaC9hdXRob3JpemVkX2tleXM=", "b64_file": "CiMgVGhlIGZvbGxvd2luZyBzc2gga2V5IHdhcyBpbmplY3RlZCBieSBOb3ZhCnNzaC1yc2EgQUFBQUIzTnphLi4uIHVzZXJAaG9zdAo="}}"#,
    ] {
        let (d, root) = sandbox();
        let env = env(&root, Arc::new(Recorder::new()));
        let reply = call(&env, FileInjectHandler::default(), req);
        assert_eq!(
            (reply.returncode.as_str(), reply.message.as_str()),
            ("0", "")
        );
        check_nova_key(&d);
    }
}

fn injectfile_request(path: &str, contents: &[u8]) -> String {
    let mut data = path.as_bytes().to_vec();
    data.push(b',');
    data.extend_from_slice(contents);
    format!(
        r#"{{"name": "injectfile", "value": "{}"}}"#,
        STANDARD.encode(data)
    )
}

fn file_inject_request(path: &str, contents: &[u8]) -> String {
    format!(
        r#"{{"name": "file_inject", "value": {{"b64_path": "{}", "b64_file": "{}"}}}}"#,
        STANDARD.encode(path),
        STANDARD.encode(contents)
    )
}

#[test]
fn binary_with_commas_and_nuls_round_trips() {
    let (d, root) = sandbox();
    let env = env(&root, Arc::new(Recorder::new()));
    let contents: Vec<u8> = b",,a,b\0\0,\xff\xfe"
        .iter()
        .copied()
        .chain((0..=255u8).cycle().take(4096))
        .collect();
    let reply = call(
        &env,
        InjectFileHandler::default(),
        &injectfile_request("/opt/data/blob.bin", &contents),
    );
    assert_eq!(reply.returncode, "0", "{reply:?}");
    assert_eq!(
        fs::read(d.path().join("opt/data/blob.bin")).unwrap(),
        contents
    );
    assert_eq!(
        mode_owner(&d.path().join("opt/data/blob.bin")),
        (0o600, 0, 0)
    );
    assert_eq!(mode_owner(&d.path().join("opt/data")).0, 0o755);
    let reply = call(
        &env,
        FileInjectHandler::default(),
        &file_inject_request("/opt/data/blob2.bin", &contents),
    );
    assert_eq!(reply.returncode, "0", "{reply:?}");
    assert_eq!(
        fs::read(d.path().join("opt/data/blob2.bin")).unwrap(),
        contents
    );
}

#[test]
fn existing_file_keeps_mode_and_owner_and_is_backed_up() {
    let (d, root) = sandbox();
    let target = d.path().join("etc/motd");
    fs::write(&target, b"old motd\n").unwrap();
    fs::set_permissions(&target, fs::Permissions::from_mode(0o640)).unwrap();
    std::os::unix::fs::chown(&target, Some(1234), Some(5678)).unwrap();
    let env = env(&root, Arc::new(Recorder::new()));
    let cfg = InjectConfig {
        keep_backups: 2,
        ..InjectConfig::default()
    };
    for i in 1..=3 {
        let body = format!("motd {i}\n");
        let reply = call(
            &env,
            InjectFileHandler::new(cfg.clone()),
            &injectfile_request("/etc/motd", body.as_bytes()),
        );
        assert_eq!(reply.returncode, "0", "{reply:?}");
        assert_eq!(fs::read_to_string(&target).unwrap(), body);
        assert_eq!(mode_owner(&target), (0o640, 1234, 5678));
    }
    // Two backups kept, newest last, with the original's mode and owner, outside /etc (a
    // backup beside the file would be read by whatever reads the whole directory).
    let backups = d.path().join("var/lib/guestd/backup/etc");
    assert_eq!(
        fs::read_to_string(backups.join("motd.3")).unwrap(),
        "motd 2\n"
    );
    assert_eq!(
        fs::read_to_string(backups.join("motd.2")).unwrap(),
        "motd 1\n"
    );
    assert!(!backups.join("motd.1").exists());
    assert_eq!(mode_owner(&backups.join("motd.3")), (0o640, 1234, 5678));
    assert_eq!(mode_owner(&d.path().join("var/lib/guestd/backup")).0, 0o700);
    let beside: Vec<_> = fs::read_dir(d.path().join("etc"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with("motd"))
        .collect();
    assert_eq!(beside, vec!["motd"]);
}

#[test]
fn user_ssh_dir_and_file_belong_to_the_user() {
    let (d, root) = sandbox();
    fs::create_dir_all(d.path().join("home/bob")).unwrap();
    std::os::unix::fs::chown(d.path().join("home/bob"), Some(1500), Some(1600)).unwrap();
    let env = env(&root, Arc::new(Recorder::new()));
    let reply = call(
        &env,
        FileInjectHandler::default(),
        &file_inject_request("/home/bob/.ssh/authorized_keys", b"ssh-ed25519 AAAA bob\n"),
    );
    assert_eq!(reply.returncode, "0", "{reply:?}");
    assert_eq!(
        mode_owner(&d.path().join("home/bob/.ssh")),
        (0o700, 1500, 1600)
    );
    assert_eq!(
        mode_owner(&d.path().join("home/bob/.ssh/authorized_keys")),
        (0o600, 1500, 1600)
    );
}

#[test]
fn bad_input_is_a_clear_500_and_writes_nothing() {
    let (d, root) = sandbox();
    let env = env(&root, Arc::new(Recorder::new()));
    let small = InjectConfig {
        max_size: 8,
        ..InjectConfig::default()
    };
    let deny = InjectConfig {
        deny: vec!["/etc".into()],
        ..InjectConfig::default()
    };
    type Case<'a> = (Box<dyn Fn() -> guestd_core::Reply + 'a>, &'static str);
    let cases: Vec<Case> = vec![
        (
            Box::new(|| {
                call(
                    &env,
                    InjectFileHandler::default(),
                    r#"{"name": "injectfile", "value": "!!!"}"#,
                )
            }),
            "Error doing base64 decoding of data",
        ),
        (
            Box::new(|| {
                call(
                    &env,
                    InjectFileHandler::default(),
                    &format!(
                        r#"{{"name": "injectfile", "value": "{}"}}"#,
                        STANDARD.encode("/etc/nocomma")
                    ),
                )
            }),
            "Invalid file injection data: no comma between path and contents",
        ),
        (
            Box::new(|| {
                call(
                    &env,
                    InjectFileHandler::default(),
                    r#"{"name": "injectfile", "value": 5}"#,
                )
            }),
            "Invalid arguments: injectfile expects a base64 string",
        ),
        (
            Box::new(|| {
                call(
                    &env,
                    InjectFileHandler::default(),
                    &injectfile_request("etc/relative", b"x"),
                )
            }),
            "File path 'etc/relative' is not absolute",
        ),
        (
            Box::new(|| {
                call(
                    &env,
                    InjectFileHandler::default(),
                    &injectfile_request("/etc/../x", b"x"),
                )
            }),
            "File path '/etc/../x' contains '..'",
        ),
        (
            Box::new(|| {
                call(
                    &env,
                    InjectFileHandler::new(small.clone()),
                    &injectfile_request("/etc/big", b"123456789"),
                )
            }),
            "File for '/etc/big' is too large: 9 bytes, the limit is 8",
        ),
        (
            Box::new(|| {
                call(
                    &env,
                    FileInjectHandler::new(deny.clone()),
                    &file_inject_request("/etc/shadow", b"x"),
                )
            }),
            "Injecting '/etc/shadow' is not allowed by this guest's configuration",
        ),
        (
            Box::new(|| {
                call(
                    &env,
                    FileInjectHandler::default(),
                    r#"{"name": "file_inject", "value": {"b64_path": "L3g="}}"#,
                )
            }),
            "Missing b64_path or b64_file in arguments",
        ),
        (
            Box::new(|| {
                call(
                    &env,
                    FileInjectHandler::default(),
                    r#"{"name": "file_inject", "value": {"b64_path": "L3g=", "b64_file": "***"}}"#,
                )
            }),
            "Error doing base64 decoding of data",
        ),
    ];
    let before = tree(d.path());
    for (run, want) in cases {
        let reply = run();
        assert_eq!(
            (reply.returncode.as_str(), reply.message.as_str()),
            ("500", want)
        );
    }
    assert_eq!(tree(d.path()), before);
}

/// Every path and content under `dir`.
fn tree(dir: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p.is_dir() {
            out.push((p.display().to_string(), Vec::new()));
            out.extend(tree(&p));
        } else {
            out.push((p.display().to_string(), fs::read(&p).unwrap()));
        }
    }
    out.sort();
    out
}
