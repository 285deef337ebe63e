//! XenCenter's static IP setting against test-xenstored (laid out as XAPI's xenopsd does): the
//! agent over the real XenStore client, the Debian backend rendering for ifupdown in a
//! sandbox root, the fake command runner standing in for `ifdown`/`ifup`/`ip`. dom0 writes a
//! request as the toolstack does, then waits (with a watch) for the guest's `error-code`.
#![cfg(target_os = "linux")]
#![allow(clippy::disallowed_methods)] // tests build their trees by path

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use guestd_core::{Env, Root, Shutdown};
use guestd_distro::{OsBackend, OsFamily};
use guestd_test_xenstored::{Config, TestXenstored, Toolstack};
use guestd_testkit::FakeRunner;
use guestd_transport_xenstore::XsClient;
use guestd_xen_metrics::facts::{Event, Memory, Nic, OsFacts, Platform};
use guestd_xen_metrics::{Settings, agent};

const HOME: &str = "/local/domain/5";
const MAC: &str = "00:16:3e:5a:00:01";
const REQUEST: &str = "/local/domain/5/xenserver/device/vif/0/static-ip-setting";
const BEFORE: &str = "auto lo\niface lo inet loopback\n\nauto eth0\niface eth0 inet dhcp\n";

/// A guest with nothing to report: only the static IP part runs.
struct Quiet;

impl Platform for Quiet {
    const NAME: &'static str = "test";
    fn control_features(&self) -> &'static [&'static str] {
        &[]
    }
    fn os(&mut self, _root: &Root) -> OsFacts {
        OsFacts::default()
    }
    fn memory(&mut self, _root: &Root) -> Option<Memory> {
        None
    }
    fn nics(&mut self, _root: &Root) -> Vec<Nic> {
        Vec::new()
    }
    async fn next_event(&mut self) -> Event {
        std::future::pending().await
    }
}

struct Setup {
    dir: tempfile::TempDir,
    _xs: TestXenstored,
    dom0: XsClient,
    runner: Arc<FakeRunner>,
    trigger: guestd_core::ShutdownTrigger,
    task: tokio::task::JoinHandle<()>,
}

async fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    for (rel, body) in [
        ("etc/os-release", "ID=debian\nVERSION_ID=\"12\"\n"),
        ("etc/network/interfaces", BEFORE),
        ("sys/class/net/eth0/address", &format!("{MAC}\n")),
    ] {
        std::fs::create_dir_all(root.join(rel).parent().unwrap()).unwrap();
        std::fs::write(root.join(rel), body).unwrap();
    }
    let xs = TestXenstored::start(Config {
        dom0: Some(dir.path().join("dom0.sock")),
        guests: vec![(5, dir.path().join("guest5.sock"))],
        toolstack: Toolstack::Xapi,
        ..Config::default()
    })
    .unwrap();
    let dom0 = XsClient::connect(&dir.path().join("dom0.sock"))
        .await
        .unwrap();
    let runner = Arc::new(FakeRunner::new());
    // What `ip -o addr` shows once ifup brought the address up.
    runner.respond(
        "ip -o addr show dev eth0",
        0,
        "2: eth0    inet 192.0.2.10/24 brd 192.0.2.255 scope global eth0\\       valid_lft forever preferred_lft forever\n",
    );
    let env = Env {
        root: Root::sandbox(&root).unwrap(),
        runner: runner.clone(),
        backend: Arc::new(OsBackend::new(OsFamily::Debian)),
    };
    let settings = Settings {
        memory_interval: None,
        static_ip: true,
        network_manager: Some("ifupdown".into()),
        reconnect_max: Duration::from_secs(1),
    };
    let (trigger, shutdown): (_, Shutdown) = Shutdown::new();
    let guest = dir.path().join("guest5.sock");
    let task = tokio::spawn(agent::publish::<XsClient, _>(
        guest, settings, Quiet, env, shutdown,
    ));
    Setup {
        dir,
        _xs: xs,
        dom0,
        runner,
        trigger,
        task,
    }
}

impl Setup {
    fn interfaces(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("root/etc/network/interfaces")).unwrap()
    }

    /// Write a request as the toolstack does (trigger last) and wait for the answer.
    async fn request(&self, fields: &[(&str, &str)]) -> BTreeMap<String, String> {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let token = format!(
            "answer-{}",
            N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        let mut watch = self
            .dom0
            .watch(&format!("{REQUEST}/error-code"), &token)
            .await
            .unwrap();
        watch.next().await.unwrap(); // fires once when registered
        let _ = self.dom0.rm(&format!("{REQUEST}/error-code")).await;
        self.dom0
            .write(&format!("{REQUEST}/mac"), MAC.as_bytes())
            .await
            .unwrap();
        let (triggers, values): (Vec<_>, Vec<_>) =
            fields.iter().partition(|(k, _)| k.starts_with("enabled"));
        for (k, v) in values.into_iter().chain(triggers) {
            self.dom0
                .write(&format!("{REQUEST}/{k}"), v.as_bytes())
                .await
                .unwrap();
        }
        tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                watch.next().await.unwrap();
                if self
                    .dom0
                    .read_optional(&format!("{REQUEST}/error-code"))
                    .await
                    .unwrap()
                    .is_some()
                {
                    break;
                }
            }
        })
        .await
        .expect("the guest answers");
        self.dom0
            .unwatch(&format!("{REQUEST}/error-code"), &token)
            .await
            .unwrap();
        // The trigger goes away with the answer.
        let mut out = BTreeMap::new();
        for name in self.dom0.directory(REQUEST).await.unwrap() {
            let v = self.dom0.read(&format!("{REQUEST}/{name}")).await.unwrap();
            out.insert(name, String::from_utf8(v).unwrap());
        }
        out
    }

    async fn stop(self) {
        self.trigger.trigger();
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .unwrap()
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_static_address_is_applied_through_the_debian_renderer() {
    let s = setup().await;
    // The agent announces the feature.
    let feature = format!("{HOME}/control/feature-static-ip-setting");
    let mut watch = s.dom0.watch(&feature, "feature").await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), async {
        while s.dom0.read_optional(&feature).await.unwrap().is_none() {
            watch.next().await.unwrap();
        }
    })
    .await
    .expect("control/feature-static-ip-setting is written");
    assert_eq!(s.dom0.read(&feature).await.unwrap(), b"1");

    let answer = s
        .request(&[
            ("address", "192.0.2.10/24"),
            ("gateway", "192.0.2.1"),
            ("enabled", "1"),
        ])
        .await;
    assert_eq!(answer["error-code"], "0", "{answer:?}");
    assert_eq!(answer["error-msg"], "");
    assert!(
        !answer.contains_key("enabled"),
        "the trigger is removed: {answer:?}"
    );
    let text = s.interfaces();
    assert!(text.contains("iface eth0 inet static"), "{text}");
    assert!(text.contains("192.0.2.10"), "{text}");
    assert!(text.contains("gateway 192.0.2.1"), "{text}");
    assert!(
        text.contains("iface lo inet loopback"),
        "other stanzas stay: {text}"
    );
    let lines = s.runner.lines();
    assert!(lines.iter().any(|l| l == "ifup eth0"), "{lines:?}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_address_is_refused_with_a_code_and_a_message_and_nothing_changes() {
    let s = setup().await;
    for (fields, code, words) in [
        (
            vec![("address", "192.0.2.300/24"), ("enabled", "1")],
            "1",
            "is not a valid address",
        ),
        (
            vec![
                ("address", "192.0.2.10/24"),
                ("gateway", "10.9.9.9"),
                ("enabled", "1"),
            ],
            "1",
            "is not in 192.0.2.10/24",
        ),
        (vec![("enabled", "0")], "3", "not supported"),
    ] {
        let answer = s.request(&fields).await;
        assert_eq!(answer["error-code"], code, "{fields:?}: {answer:?}");
        assert!(answer["error-msg"].contains(words), "{answer:?}");
        assert!(!answer.contains_key("enabled"), "{answer:?}");
        assert_eq!(s.interfaces(), BEFORE, "nothing changed");
        assert!(
            s.runner.lines().is_empty(),
            "no command ran: {:?}",
            s.runner.lines()
        );
        // (The next request's values replace this one's.)
        for k in ["address", "gateway"] {
            let _ = s.dom0.rm(&format!("{REQUEST}/{k}")).await;
        }
    }
    let _: &Path = s.dir.path();
    s.stop().await;
}
