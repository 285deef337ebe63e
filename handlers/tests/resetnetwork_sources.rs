#![cfg(unix)]
//! Where `resetnetwork` finds the network: the inline value, then the channel's XenStore
//! `vm-data/`, then a config drive that the OS backend (guestd-distro's, with a fake `mount`)
//! finds, mounts and reads.
#![allow(clippy::disallowed_methods)] // tests build their trees by path

use std::sync::Arc;

use guestd_core::{HostData, HostDataError, Output, Root};
use guestd_distro::{OsBackend, OsFamily};
use guestd_handlers::NetworkConfig;
use guestd_handlers::resetnetwork::gather;
use guestd_testkit::{FakeRunner, test_env};
use serde_json::json;

const DRIVE_NET: &str = r#"{"links": [{"id": "l0", "ethernet_mac_address": "fa:16:3e:00:00:01"}],
    "networks": [{"id": "n0", "type": "ipv4", "link": "l0", "ip_address": "10.0.0.5", "netmask": "255.255.255.0"}]}"#;

/// XenStore `vm-data/` with one interface.
struct OneInterface;

impl HostData for OneInterface {
    fn read(&self, path: &str) -> Result<Option<Vec<u8>>, HostDataError> {
        Ok((path == "vm-data/networking/BC764E206C5A").then(|| {
            br#"{"mac": "BC:76:4E:20:6C:5A", "ips": [{"ip": "10.1.0.5", "netmask": "255.255.0.0"}]}"#.to_vec()
        }))
    }
    fn list(&self, _path: &str) -> Result<Vec<String>, HostDataError> {
        Ok(vec!["BC764E206C5A".into()])
    }
}

/// A sandbox with a `config-2` device (`sr0`) that is not mounted; the fake `mount` fills the
/// mount point and the mount table as the kernel would.
fn drive() -> (tempfile::TempDir, guestd_core::Env, Arc<FakeRunner>) {
    let d = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(d.path().join("dev/disk/by-label")).unwrap();
    std::os::unix::fs::symlink("../../sr0", d.path().join("dev/disk/by-label/config-2")).unwrap();
    std::fs::create_dir_all(d.path().join("sys/class/block/sr0")).unwrap();
    std::fs::write(d.path().join("sys/class/block/sr0/dev"), "11:0\n").unwrap();
    std::fs::create_dir_all(d.path().join("proc/self")).unwrap();
    std::fs::write(d.path().join("proc/self/mountinfo"), "").unwrap();
    let root = Root::sandbox(d.path()).unwrap();
    let runner = Arc::new(FakeRunner::new());
    let base = d.path().to_path_buf();
    runner.respond_with("mount ", move |_| {
        let dir = base.join("run/guestd/config-drive/openstack/latest");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("network_data.json"), DRIVE_NET).unwrap();
        std::fs::write(dir.join("meta_data.json"), r#"{"hostname": "cd-host"}"#).unwrap();
        std::fs::write(
            base.join("proc/self/mountinfo"),
            "70 25 11:0 / /run/guestd/config-drive ro,nosuid,nodev,noexec - iso9660 /dev/sr0 ro\n",
        )
        .unwrap();
        Ok(Output {
            code: Some(0),
            ..Output::default()
        })
    });
    let backend = Arc::new(OsBackend::new(OsFamily::Debian));
    let env = test_env(root, runner.clone(), Some(backend));
    (d, env, runner)
}

#[test]
fn sources_in_order_of_precedence() {
    let (_d, env, runner) = drive();
    let config = NetworkConfig::default();
    let inline = json!({"hostname": "inline-host"});
    let empty = json!("");
    let spec = gather(&env, Some(&OneInterface), &config, &inline).unwrap();
    assert_eq!(
        (spec.source, spec.hostname.unwrap().as_str()),
        ("inline", "inline-host")
    );
    let spec = gather(&env, Some(&OneInterface), &config, &empty).unwrap();
    assert_eq!(spec.source, "xenstore");
    assert!(
        runner.lines().is_empty(),
        "the drive is not touched when XenStore has data"
    );
    let spec = gather(&env, None, &config, &empty).unwrap();
    assert_eq!(spec.source, "config drive");
    assert_eq!(spec.hostname.unwrap().as_str(), "cd-host");
    assert_eq!(
        runner.lines(),
        [
            "mount -t iso9660,vfat -o ro,nosuid,nodev,noexec /dev/sr0 /run/guestd/config-drive",
            "umount /run/guestd/config-drive"
        ]
    );
    // `nohostname`: the drive's hostname is not read.
    let spec = gather(&env, None, &config, &json!("nohostname")).unwrap();
    assert_eq!(spec.hostname, None);
    let off = NetworkConfig {
        config_drive: false,
        ..NetworkConfig::default()
    };
    assert_eq!(
        gather(&env, None, &off, &empty).unwrap_err().to_string(),
        "no network data: the value is empty, this channel has no host data and there is no config drive"
    );
}

#[test]
fn a_failed_mount_is_named() {
    let (_d, env, _) = drive();
    let runner = Arc::new(FakeRunner::new());
    runner.respond("mount ", 32, "");
    let env = guestd_core::Env { runner, ..env };
    assert_eq!(
        gather(&env, None, &NetworkConfig::default(), &json!(""))
            .unwrap_err()
            .to_string(),
        "cannot mount the config drive: 'mount' failed with exit status 32"
    );
}
