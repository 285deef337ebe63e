//! qga commands through the dispatcher over a sandbox root and the fake runner: guest-shutdown,
//! and each dialect's commands existing only on its own channels (fsfreeze: `fsfreeze.rs`).
#![allow(clippy::disallowed_methods)] // tests build their trees by path

use std::sync::Arc;

use guestd_core::{Channel, Dialect, DispatcherBuilder, Root};
use guestd_distro::{OsBackend, OsFamily};
use guestd_handlers::qga::{QgaConfig, register};
use guestd_testkit::{FakeRunner, call, dispatcher, test_env};
use serde_json::{Value, json};

const MOUNTS: &str = "sysfs /sys sysfs rw 0 0\n/dev/vda1 / ext4 rw 0 0\n\
tmpfs /run tmpfs rw 0 0\n/dev/vdb1 /srv xfs rw 0 0\n";

struct Setup {
    _dir: tempfile::TempDir,
    runner: Arc<FakeRunner>,
    dispatcher: Arc<guestd_core::Dispatcher>,
    channel: Arc<Channel>,
}

fn setup(freeze_timeout_secs: u64) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("proc/self")).unwrap();
    std::fs::write(dir.path().join("proc/self/mounts"), MOUNTS).unwrap();
    let runner = Arc::new(FakeRunner::new());
    // The Debian backend plans guest-shutdown.
    let backend = Arc::new(OsBackend::new(OsFamily::Debian));
    let env = test_env(
        Root::sandbox(dir.path()).unwrap(),
        runner.clone(),
        Some(backend),
    );
    let config = QgaConfig {
        freeze_timeout_secs,
        ..QgaConfig::default()
    };
    let builder = DispatcherBuilder::new()
        .register(guestd_handlers::VersionHandler)
        .unwrap()
        .register(guestd_handlers::FeaturesHandler)
        .unwrap();
    let builder = register(builder, &config).unwrap();
    let channel = Arc::new(Channel::new("qga-test").with_dialect(Dialect::Qga));
    Setup {
        _dir: dir,
        runner,
        dispatcher: dispatcher(builder, env),
        channel,
    }
}

/// Call a qga command; `Ok(return value)` or `Err(message)`.
fn qga(s: &Setup, name: &str, args: Value) -> Result<Value, String> {
    let reply = call(&s.dispatcher, &s.channel, name, args);
    if reply.is_success() {
        Ok(serde_json::from_str(&reply.message).unwrap())
    } else {
        Err(reply.message)
    }
}

#[test]
fn shutdown_modes_are_planned_by_the_backend_and_applied() {
    let s = setup(600);
    for (mode, flag) in [(None, "-P"), (Some("halt"), "-H"), (Some("reboot"), "-r")] {
        s.runner.clear();
        let args = mode.map_or(json!({}), |m| json!({ "mode": m }));
        assert_eq!(qga(&s, "guest-shutdown", args), Ok(json!({})));
        assert_eq!(
            s.runner.lines(),
            [format!("shutdown {flag} +0 hypervisor initiated shutdown")]
        );
    }
    s.runner.clear();
    assert!(qga(&s, "guest-shutdown", json!({"mode": "sideways"})).is_err());
    assert!(s.runner.lines().is_empty());
    s.runner.respond("shutdown", 1, "");
    assert!(qga(&s, "guest-shutdown", json!({})).is_err());
}

#[test]
fn each_dialect_has_only_its_own_commands() {
    let s = setup(600);
    let native = Arc::new(Channel::new("native"));
    for name in [
        "guest-ping",
        "guest-set-user-password",
        "guest-fsfreeze-freeze",
        "guest-sync",
    ] {
        let reply = call(&s.dispatcher, &native, name, json!({}));
        assert_eq!(reply.returncode, "404", "{name}");
        assert_eq!(reply.message, format!("No such agent command '{name}'"));
    }
    for name in ["version", "features"] {
        let reply = call(&s.dispatcher, &s.channel, name, json!({}));
        assert_eq!(reply.returncode, "404", "{name}");
    }
    assert!(s.runner.lines().is_empty());
    // features on the native channel: the native commands only.
    let features = call(&s.dispatcher, &native, "features", json!(null));
    assert_eq!(features.message, "version,features");
    // guest-info on the qga channel: the qga commands only, guest-sync* included.
    let info = qga(&s, "guest-info", json!({})).unwrap();
    let names: Vec<&str> = info["supported_commands"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert!(names.iter().all(|n| n.starts_with("guest-")), "{names:?}");
    for want in [
        "guest-sync",
        "guest-sync-delimited",
        "guest-ping",
        "guest-info",
    ] {
        assert!(names.contains(&want), "{want} missing from {names:?}");
    }
}

#[test]
fn argument_errors_use_qemu_s_words() {
    let s = setup(600);
    for (name, args, want) in [
        (
            "guest-ping",
            json!({"bogus": 1}),
            "Parameter 'bogus' is unexpected",
        ),
        (
            "guest-ssh-get-authorized-keys",
            json!({}),
            "Parameter 'username' is missing",
        ),
        (
            "guest-ssh-add-authorized-keys",
            json!({"username": "x", "keys": ["a", 5]}),
            "Invalid parameter type for 'keys[1]', expected: string",
        ),
        (
            "guest-set-user-password",
            json!({"username": "x", "password": "y"}),
            "Parameter 'crypted' is missing",
        ),
    ] {
        assert_eq!(qga(&s, name, args), Err(want.to_string()), "{name}");
    }
}
