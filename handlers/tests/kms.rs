#![cfg(unix)]
//! kmsactivate through a real dispatcher with the distro backend (RHEL, Windows, others).
#![allow(clippy::disallowed_methods)] // tests build their trees by path

mod support;

use std::fs;
use std::sync::Arc;

use guestd_core::{Output, ProcessError, Root};
use guestd_distro::{OsBackend, OsFamily};
use guestd_handlers::KmsActivateHandler;
use support::{Recorder, call, env_with};

const RHN: &str = r#"{"name": "kmsactivate", "value": {"activation_key": "1-s3cr3t", "profile": "web01", "domains": ["rhn1.example.com", "rhn2.example.com"]}}"#;

fn guest(family: OsFamily, runner: Arc<Recorder>) -> (tempfile::TempDir, guestd_core::Env) {
    let d = tempfile::tempdir().unwrap();
    let root = Root::sandbox(d.path()).unwrap();
    let env = env_with(&root, runner, Arc::new(OsBackend::new(family)));
    (d, env)
}

#[test]
fn rhel_writes_up2date_and_registers_without_the_key_in_argv() {
    let runner = Arc::new(Recorder::new());
    let (d, env) = guest(OsFamily::RedHat, runner.clone());
    fs::create_dir_all(d.path().join("etc/sysconfig/rhn")).unwrap();
    fs::write(
        d.path().join("etc/sysconfig/rhn/up2date"),
        "serverURL=https://xmlrpc.rhn.redhat.com/XMLRPC\nuseGPG=1\n",
    )
    .unwrap();
    let reply = call(&env, KmsActivateHandler, RHN);
    assert_eq!(
        (reply.returncode.as_str(), reply.message.as_str()),
        ("0", "")
    );
    assert_eq!(
        fs::read_to_string(d.path().join("etc/sysconfig/rhn/up2date")).unwrap(),
        "serverURL=https://rhn1.example.com/XMLRPC;https://rhn2.example.com/XMLRPC\nuseGPG=1\n\
         noSSLServerURL=http://rhn1.example.com/XMLRPC;http://rhn2.example.com/XMLRPC\n"
    );
    let ran = runner.ran.lock().unwrap();
    assert_eq!(ran.len(), 1);
    assert!(ran[0].command_line().contains("/usr/sbin/rhnreg_ks"));
    assert!(!ran[0].command_line().contains("s3cr3t"));
    assert_eq!(ran[0].stdin.as_deref().unwrap(), b"1-s3cr3t\n");
}

#[test]
fn rhel_failure_is_reported_and_up2date_restored() {
    let runner = Arc::new(Recorder::new().with(|_| {
        Some(Ok(Output {
            code: Some(1),
            stderr: b"Invalid activation key".to_vec(),
            ..Output::default()
        }))
    }));
    let (d, env) = guest(OsFamily::RedHat, runner);
    let reply = call(&env, KmsActivateHandler, RHN);
    assert_eq!(
        (reply.returncode.as_str(), reply.message.as_str()),
        ("500", "Couldn't activate with RHN: 1")
    );
    assert!(!d.path().join("etc/sysconfig/rhn/up2date").exists());

    let missing = Arc::new(Recorder::new().with(|c| {
        Some(Err(ProcessError::Spawn {
            program: c.program.clone(),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        }))
    }));
    let (_d, env) = guest(OsFamily::RedHat, missing);
    let reply = call(&env, KmsActivateHandler, RHN);
    assert!(
        reply
            .message
            .starts_with("Couldn't activate with RHN: could not run"),
        "{reply:?}"
    );
}

#[test]
fn windows_runs_slmgr_and_others_are_unsupported() {
    let runner = Arc::new(Recorder::new());
    let (_d, env) = guest(OsFamily::Windows, runner.clone());
    let reply = call(
        &env,
        KmsActivateHandler,
        r#"{"name": "kmsactivate", "value": "kms.example.com:1688"}"#,
    );
    assert_eq!(reply.returncode, "0", "{reply:?}");
    let lines = runner.lines();
    assert_eq!(lines.len(), 2);
    assert!(
        lines[0].ends_with("slmgr.vbs /skms kms.example.com:1688"),
        "{lines:?}"
    );
    assert!(lines[1].ends_with("slmgr.vbs /ato"), "{lines:?}");

    for family in [OsFamily::Debian, OsFamily::FreeBsd, OsFamily::Unknown] {
        let runner = Arc::new(Recorder::new());
        let (_d, env) = guest(family, runner.clone());
        let reply = call(&env, KmsActivateHandler, RHN);
        assert_eq!(
            (reply.returncode.as_str(), reply.message.as_str()),
            ("500", "KMS not supported on this OS")
        );
        assert!(runner.lines().is_empty());
    }
    let (_d, env) = guest(OsFamily::RedHat, Arc::new(Recorder::new()));
    let reply = call(
        &env,
        KmsActivateHandler,
        r#"{"name": "kmsactivate", "value": 5}"#,
    );
    assert_eq!(reply.message, "Invalid arguments");
}
