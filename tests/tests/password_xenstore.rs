//! Issue 4 over XenStore: nova's keyinit + password driven by Debian's `xenstore-write` /
//! `xenstore-read` (what the dom0 plugin runs), against guestd's real XenStore transport and
//! password handlers on a sandbox root, through `test-xenstored` (the real wire protocol).
//!
//! guestd's binary has no XenStore listen arm yet, so the agent side is assembled here from the
//! same crates the daemon uses (transport, handlers, OsBackend, SystemRunner).
#![cfg(unix)]
#![allow(clippy::disallowed_methods)] // the host side spawns the real tools

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use guestd_core::{Backend, DispatcherBuilder, Env, Root, Shutdown, SystemRunner, Transport};
use guestd_distro::OsBackend;
use guestd_handlers::{PasswordConfig, register_password_commands};
use guestd_test_xenstored::{Config, TestXenstored};
use guestd_tests::nova::{nova_encrypt, python};
use guestd_transport_xenstore::{XenstoreConfig, XenstoreTransport};
use serde_json::{Value, json};

const DOMID: u32 = 7;

const SHADOW: &str = "root:*:19832:0:99999:7:::\n\
daemon:*:19832:0:99999:7:::\n\
sshd:!:19832::::::\n\
debian:!:19833:0:99999:7:::\n";

/// The dom0 side: `xenstore-write` the request, poll `xenstore-read` for the reply (0.1 s here,
/// 0.5 s in the plugin).
struct Dom0<'a> {
    socket: &'a Path,
}

impl Dom0<'_> {
    fn tool(&self, args: &[&str]) -> std::process::Output {
        Command::new(args[0])
            .args(&args[1..])
            .env("XENSTORED_PATH", self.socket)
            .output()
            .unwrap_or_else(|e| {
                panic!(
                    "{} is required (apt-get install xenstore-utils): {e}",
                    args[0]
                )
            })
    }

    fn call(&self, id: &str, name: &str, value: Value) -> Value {
        // The plugin's Python 2 json.dumps spacing.
        let request = format!(
            "{{\"name\": {}, \"value\": {}}}",
            json!(name),
            serde_json::to_string(&value).unwrap()
        );
        let host = format!("/local/domain/{DOMID}/data/host/{id}");
        let out = self.tool(&["xenstore-write", &host, &request]);
        assert!(out.status.success(), "{out:?}");
        let guest = format!("/local/domain/{DOMID}/data/guest/{id}");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let out = self.tool(&["xenstore-read", &guest]);
            if out.status.success() {
                let text = String::from_utf8(out.stdout).unwrap();
                return serde_json::from_str(text.trim()).unwrap();
            }
            assert!(Instant::now() < deadline, "no reply to {name} within 30 s");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn verify(root: &Path, password: &str) {
    let text = std::fs::read_to_string(root.join("etc/shadow")).unwrap();
    let hash = text.lines().next().unwrap().split(':').nth(1).unwrap();
    let salt = hash.strip_prefix("$6$").unwrap().split('$').next().unwrap();
    let out = Command::new("openssl")
        .args(["passwd", "-6", "-salt", salt, password])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8(out.stdout).unwrap().trim(), hash);
    assert_eq!(
        text.lines().skip(1).collect::<Vec<_>>(),
        SHADOW.lines().skip(1).collect::<Vec<_>>()
    );
    let md = std::fs::metadata(root.join("etc/shadow")).unwrap();
    assert_eq!(md.permissions().mode() & 0o7777, 0o640);
    assert_eq!((md.uid(), md.gid()), (0, 42));
}

#[test]
fn nova_keyinit_and_password_over_xenstore_with_xenstore_utils() {
    assert_eq!(
        std::fs::metadata("/proc/self").unwrap().uid(),
        0,
        "this test runs chpasswd -R: run it as root"
    );
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::write(root.join("etc/os-release"), "ID=debian\n").unwrap();
    std::fs::write(
        root.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/bash\ndaemon:x:1:1::/:/usr/sbin/nologin\nsshd:x:100:65534::/run/sshd:/usr/sbin/nologin\ndebian:x:1000:1000::/home/debian:/bin/bash\n",
    )
    .unwrap();
    std::fs::write(root.join("etc/group"), "root:x:0:\nshadow:x:42:\n").unwrap();
    let shadow = root.join("etc/shadow");
    std::fs::write(&shadow, SHADOW).unwrap();
    std::fs::set_permissions(&shadow, std::fs::Permissions::from_mode(0o640)).unwrap();
    std::os::unix::fs::chown(&shadow, Some(0), Some(42)).unwrap();

    let dom0_sock = dir.path().join("dom0.sock");
    let guest_sock = dir.path().join("guest.sock");
    let xenstored = TestXenstored::start(Config {
        dom0: Some(dom0_sock.clone()),
        guests: vec![(DOMID, guest_sock.clone())],
        ..Config::default()
    })
    .unwrap();

    // The agent: guestd's XenStore transport, dispatcher and password handlers.
    let sandbox = Root::sandbox(&root).unwrap();
    let backend = OsBackend::detect(&sandbox);
    assert_eq!(backend.name(), "debian");
    let env = Env {
        root: sandbox,
        runner: Arc::new(SystemRunner),
        backend: Arc::new(backend),
    };
    let dispatcher = Arc::new(
        register_password_commands(DispatcherBuilder::new(), PasswordConfig::default())
            .unwrap()
            .build(env),
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let transport = runtime
        .block_on(async { XenstoreTransport::open(Some(&guest_sock), &XenstoreConfig::default()) })
        .unwrap();
    let (trigger, shutdown) = Shutdown::new();
    let served = runtime.spawn(Box::new(transport).serve(dispatcher, shutdown));

    let dom0 = Dom0 { socket: &dom0_sock };
    for (i, (md, password)) in [("md5", "xen-md5 pässword"), ("sha256", "xen-sha256 pw")]
        .into_iter()
        .enumerate()
    {
        let private = python("int.from_bytes(__import__('os').urandom(10), 'big')");
        let public = python(&format!("pow(5, {private}, 2**107 - 1)"));
        let r = dom0.call(&format!("k{i}"), "keyinit", json!(public));
        assert_eq!(r["returncode"], "D0", "{r}");
        let agent = r["message"].as_str().unwrap();
        let shared = python(&format!("pow({agent}, {private}, 2**107 - 1)"));
        // First a ciphertext under a wrong key: rejected, key kept.
        let wrong = nova_encrypt(&format!("{shared}1"), md, password);
        let r = dom0.call(&format!("w{i}"), "password", json!(wrong));
        assert_eq!(
            r,
            json!({"returncode": "500", "message": "Invalid password data received"})
        );
        let value = nova_encrypt(&shared, md, password);
        let r = dom0.call(&format!("p{i}"), "password", json!(value));
        assert_eq!(r, json!({"returncode": "0", "message": ""}), "{md}");
        verify(&root, password);
    }

    trigger.trigger();
    let _ = runtime.block_on(async { tokio::time::timeout(Duration::from_secs(10), served).await });
    xenstored.stop();
}
