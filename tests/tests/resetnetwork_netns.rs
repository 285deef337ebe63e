//! Issue "resetnetwork", end to end in a network namespace the test creates (two veth pairs,
//! deleted afterwards): guestd's dispatcher, the `resetnetwork` handler and the Debian backend
//! run against a sandbox root, and every command they issue runs for real inside the namespace
//! (`ip netns exec`, plus private mount and UTS namespaces so that `ifup` reads the sandbox's
//! `/etc/network` and a hostname change stays private). The real ifupdown brings the
//! interfaces up; `ip addr`/`ip route` in the namespace show the result.
//!
//! The configuration comes from the inline `resetnetwork` value, and from XenStore: Debian's
//! `xenstore-write` puts nova's `vm-data` and the request into a test xenstored, guestd's
//! XenStore transport serves the request, `xenstore-read` fetches the reply.
#![cfg(target_os = "linux")]
#![allow(clippy::disallowed_methods)] // the test sets up namespaces with the real `ip`

use std::path::{Path, PathBuf};
use std::process::Command as Process;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use guestd_core::{
    Channel, DispatcherBuilder, Env, Output, ProcessError, ProcessRunner, ProcessSpec, Root,
    SystemRunner, Transport,
};
use guestd_distro::{OsBackend, OsFamily};
use guestd_handlers::{NetworkConfig, ResetNetworkHandler};
use guestd_testkit::{call, dispatcher};
use serde_json::json;

const MAC0: &str = "bc:76:4e:20:6c:5a";
const MAC1: &str = "bc:76:4e:20:6c:5b";

fn sh(args: &[&str]) -> String {
    let out = Process::new(args[0])
        .args(&args[1..])
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A network namespace with `eth0`/`eth1` (veth, peers up inside too); deleted on drop.
struct Netns {
    name: String,
}

impl Netns {
    fn new() -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        for tool in ["/usr/sbin/ip", "/usr/sbin/ifup", "/usr/bin/unshare"] {
            assert!(
                Path::new(tool).exists(),
                "{tool} missing: apt-get install iproute2 ifupdown util-linux"
            );
        }
        let name = format!(
            "guestd-net-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        sh(&["ip", "netns", "add", &name]);
        let ns = Self { name };
        ns.ip(&["link", "set", "lo", "up"]);
        for (dev, peer, mac) in [("eth0", "peer0", MAC0), ("eth1", "peer1", MAC1)] {
            ns.ip(&[
                "link", "add", dev, "address", mac, "type", "veth", "peer", "name", peer,
            ]);
            ns.ip(&["link", "set", peer, "up"]);
        }
        ns
    }

    fn ip(&self, args: &[&str]) -> String {
        let mut all = vec!["ip", "-n", self.name.as_str()];
        all.extend_from_slice(args);
        sh(&all)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Process::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Runs every command inside the namespace, with the sandbox's `/etc/network` and `/run`
/// (ifupdown's state) bound over the real ones, and a private hostname.
#[derive(Debug)]
struct NetnsRunner {
    ns: String,
    root: PathBuf,
}

const WRAPPER: &str = "mount --bind \"$0/etc/network\" /etc/network && \
mkdir -p \"$0/run/network\" && mount --bind \"$0/run\" /run && exec \"$@\"";

impl ProcessRunner for NetnsRunner {
    fn run(&self, cmd: &ProcessSpec) -> Result<Output, ProcessError> {
        let wrapped = ProcessSpec::new("ip")
            .args(["netns", "exec", &self.ns])
            .args(["unshare", "--mount", "--uts", "sh", "-c", WRAPPER])
            .arg(self.root.display().to_string())
            .arg(&cmd.program)
            .args(cmd.args.iter().cloned())
            .timeout(cmd.timeout);
        SystemRunner.run(&wrapped)
    }
    fn exists(&self, program: &str) -> bool {
        SystemRunner.exists(program)
    }
}

fn sandbox(ns: &Netns) -> (tempfile::TempDir, Env) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    let files = [
        ("etc/os-release", "ID=debian\nVERSION_ID=\"12\"\n".to_string()),
        (
            "etc/network/interfaces",
            "source /etc/network/interfaces.d/*\n\nauto lo\niface lo inet loopback\n\nauto eth0\niface eth0 inet static\n    address 192.0.2.99/24\n".into(),
        ),
        ("etc/hostname", "old-name\n".into()),
        ("etc/hosts", "127.0.0.1\tlocalhost\n127.0.1.1\told-name\n".into()),
        ("etc/resolv.conf", "nameserver 192.0.2.1\n".into()),
        ("sys/class/net/eth0/address", format!("{MAC0}\n")),
        ("sys/class/net/eth1/address", format!("{MAC1}\n")),
    ];
    for (rel, text) in files {
        std::fs::create_dir_all(p.join(rel).parent().unwrap()).unwrap();
        std::fs::write(p.join(rel), text).unwrap();
    }
    // ifupdown runs these hook directories; empty ones keep the host's hooks out.
    for d in [
        "interfaces.d",
        "if-pre-up.d",
        "if-up.d",
        "if-down.d",
        "if-post-down.d",
    ] {
        std::fs::create_dir_all(p.join("etc/network").join(d)).unwrap();
    }
    let root = Root::sandbox(p).unwrap();
    let netns = Arc::new(NetnsRunner {
        ns: ns.name.clone(),
        root: root.base().unwrap().to_path_buf(),
    });
    // The restarts and the host name are the effects under test (inside the namespace): the
    // sandbox policy the daemon applies under --root must let exactly these through.
    let policy = guestd_core::SandboxConfig {
        allow_effects: [guestd_core::Effect::Network, guestd_core::Effect::Hostname].into(),
    };
    let env = Env {
        runner: guestd_core::effect::contain(&root, netns, &policy),
        root,
        backend: Arc::new(OsBackend::new(OsFamily::Debian)),
    };
    (dir, env)
}

fn reset(env: &Env, channel: Channel, value: serde_json::Value) -> (String, String) {
    let d = dispatcher(
        DispatcherBuilder::new()
            .register(ResetNetworkHandler::new(NetworkConfig {
                manager: Some("ifupdown".into()),
                config_drive: false,
                config_drive_path: None,
            }))
            .unwrap(),
        env.clone(),
    );
    let reply = call(&d, &Arc::new(channel), "resetnetwork", value);
    (reply.returncode, reply.message)
}

fn public() -> serde_json::Value {
    json!({"label": "public", "mac": MAC0.to_uppercase(), "gateway": "198.51.100.1",
        "gateway_v6": "2001:db8:0:1::1", "dns": ["192.0.2.53"],
        "ips": [{"ip": "198.51.100.10", "netmask": "255.255.255.0", "enabled": "1"},
                {"ip": "198.51.100.11", "netmask": "255.255.255.0", "enabled": "1"}],
        "ip6s": [{"ip": "2001:db8:0:1::10", "netmask": 64, "enabled": "1", "gateway": "2001:db8:0:1::1"}]})
}

/// Spec §8.2's Rackspace private-network vector (the MAC is the second veth's).
const PRIVATE: &str = r#"{"label": "private", "broadcast": "10.208.255.255", "ips": [
{"ip": "10.208.227.239", "netmask": "255.255.224.0", "enabled": "1",
"gateway": null}], "mac": "BC:76:4E:20:6C:5B", "routes": [
{"route": "10.208.0.0", "netmask": "255.240.0.0", "gateway": "10.208.224.1"},
{"route": "10.176.0.0", "netmask": "255.240.0.0", "gateway": "10.208.224.1"}],
"gateway": null}"#;

fn assert_configured(ns: &Netns) {
    let eth0 = ns.ip(&["-o", "addr", "show", "dev", "eth0"]);
    for want in [
        "inet 198.51.100.10/24 ",
        "inet 198.51.100.11/24 ",
        "inet6 2001:db8:0:1::10/64 ",
    ] {
        assert!(eth0.contains(want), "eth0 lacks {want}:\n{eth0}");
    }
    assert!(
        !eth0.contains("192.0.2.99"),
        "old address still there:\n{eth0}"
    );
    let eth1 = ns.ip(&["-o", "addr", "show", "dev", "eth1"]);
    assert!(eth1.contains("inet 10.208.227.239/19 "), "{eth1}");
    let routes = ns.ip(&["route", "show"]);
    for want in [
        "default via 198.51.100.1 dev eth0",
        "10.176.0.0/12 via 10.208.224.1 dev eth1",
        "10.208.0.0/12 via 10.208.224.1 dev eth1",
    ] {
        assert!(routes.contains(want), "routes lack {want}:\n{routes}");
    }
    let routes6 = ns.ip(&["-6", "route", "show"]);
    assert!(
        routes6.contains("default via 2001:db8:0:1::1 dev eth0"),
        "{routes6}"
    );
}

#[test]
fn inline_configuration_comes_up_and_a_broken_one_is_rolled_back() {
    let ns = Netns::new();
    let (dir, env) = sandbox(&ns);
    let private: serde_json::Value = serde_json::from_str(PRIVATE).unwrap();
    let value = json!({"interfaces": [public(), private], "hostname": "web1.example.com"});
    let (code, message) = reset(&env, Channel::new("test"), value);
    assert_eq!((code.as_str(), message.as_str()), ("0", ""));
    assert_configured(&ns);
    let read = |p: &str| std::fs::read_to_string(dir.path().join(p)).unwrap();
    assert_eq!(read("etc/hostname"), "web1.example.com\n");
    assert!(read("etc/hosts").contains("127.0.1.1\tweb1.example.com web1\n"));
    assert!(read("etc/resolv.conf").contains("nameserver 192.0.2.53\n"));
    let good_interfaces = read("etc/network/interfaces");

    // A static route through a gateway on none of the interface's subnets: the kernel refuses
    // it, ifup fails; the previous files come back and the interface is brought up again with
    // them.
    let broken = json!([{"mac": MAC0, "gateway": "203.0.113.1",
        "ips": [{"ip": "203.0.113.5", "netmask": "255.255.255.0"}],
        "routes": [{"route": "10.50.0.0", "netmask": "255.255.0.0", "gateway": "172.31.0.1"}]}]);
    let (code, message) = reset(&env, Channel::new("test"), broken);
    assert_eq!(code, "500");
    assert_eq!(
        message,
        "network configuration failed ('ifup' failed with exit status 1); the previous configuration was restored"
    );
    assert_eq!(read("etc/network/interfaces"), good_interfaces);
    let eth0 = ns.ip(&["-o", "addr", "show", "dev", "eth0"]);
    assert!(!eth0.contains("203.0.113.5"), "{eth0}");
    assert_configured(&ns);
}

/// Debian's xenstore-utils as dom0 (nova's plugin uses the same tools).
fn xenstore(tool: &str, dom0: &Path, args: &[&str]) -> String {
    let path = format!("/usr/bin/{tool}");
    assert!(
        Path::new(&path).exists(),
        "{path} missing: apt-get install xenstore-utils"
    );
    let out = Process::new(&path)
        .env("XENSTORED_PATH", dom0)
        .args(args)
        .output()
        .expect("run xenstore tool");
    assert!(
        out.status.success(),
        "{tool} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn xenstore_data_written_by_xenstore_write_comes_up() {
    use guestd_test_xenstored::{Config, TestXenstored};
    use guestd_transport_xenstore::{XenstoreConfig, XenstoreTransport};

    let ns = Netns::new();
    let (dir, env) = sandbox(&ns);
    let xs_dir = tempfile::tempdir().unwrap();
    let (dom0, guest) = (xs_dir.path().join("dom0"), xs_dir.path().join("guest7"));
    let xenstored = TestXenstored::start(Config {
        dom0: Some(dom0.clone()),
        guests: vec![(7, guest.clone())],
        ..Config::default()
    })
    .unwrap();
    // What nova writes before a resetnetwork (spec §8): one key per VIF (case as nova keeps
    // it), the hostname.
    let home = "/local/domain/7";
    xenstore(
        "xenstore-write",
        &dom0,
        &[
            &format!("{home}/vm-data/networking/bc764e206c5a"),
            &public().to_string(),
            &format!("{home}/vm-data/networking/BC764E206C5B"),
            PRIVATE,
            &format!("{home}/vm-data/hostname"),
            "xs-guest",
        ],
    );

    // guestd's XenStore transport serves domain 7 with the resetnetwork handler.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let d = dispatcher(
        DispatcherBuilder::new()
            .register(ResetNetworkHandler::new(NetworkConfig {
                manager: Some("ifupdown".into()),
                config_drive: false,
                config_drive_path: None,
            }))
            .unwrap(),
        env.clone(),
    );
    let (trigger, shutdown) = guestd_core::Shutdown::new();
    let transport = rt
        .block_on(async { XenstoreTransport::open(Some(&guest), &XenstoreConfig::default()) })
        .unwrap();
    let serving = rt.spawn(Box::new(transport).serve(d, shutdown));

    // The host's request, exactly as nova's agent plugin writes it, then its polling read.
    let id = "f6a1b2c3-0000-4000-8000-000000000001";
    xenstore(
        "xenstore-write",
        &dom0,
        &[
            &format!("{home}/data/host/{id}"),
            r#"{"name": "resetnetwork", "value": ""}"#,
        ],
    );
    let reply_path = format!("{home}/data/guest/{id}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let reply = loop {
        let out = Process::new("/usr/bin/xenstore-read")
            .env("XENSTORED_PATH", &dom0)
            .arg(&reply_path)
            .output()
            .unwrap();
        if out.status.success() {
            break String::from_utf8_lossy(&out.stdout).trim().to_string();
        }
        assert!(std::time::Instant::now() < deadline, "no reply within 60 s");
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    let reply: serde_json::Value = serde_json::from_str(&reply).unwrap();
    assert_eq!(reply, json!({"returncode": "0", "message": ""}));
    assert_configured(&ns);
    assert_eq!(
        std::fs::read_to_string(dir.path().join("etc/hostname")).unwrap(),
        "xs-guest\n"
    );
    trigger.trigger();
    let _ = rt.block_on(serving);
    xenstored.stop();
}
