//! The XenStore transport against test-xenstored: the request lifecycle, bad input, bursts,
//! reconnects, pruning and `vm-data/`, once per backend: native, the Windows xeniface backend
//! over its emulated device (the driver's buffers, forwarded to test-xenstored), and
//! libxenstore when the feature is on.
#![cfg(unix)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use guestd_core::wire::{Reply, Request};
use guestd_core::{
    Context, DispatcherBuilder, Env, Handler, HandlerError, NullBackend, Root, Shutdown,
    ShutdownTrigger, SystemRunner, Transport,
};
use guestd_test_xenstored::{Config, Quota, TestXenstored};
use guestd_transport_xenstore::xeniface::emulated::EmulatedDevice;
use guestd_transport_xenstore::{
    BackendKind, HostClient, WatchStream, XenifaceStore, XenstoreConfig, XenstoreTransport,
    XsClient,
};
use serde_json::Value;

const DOMID: u32 = 5;
const HOME: &str = "/local/domain/5";

/// A backend under test: one chosen by configuration, or xeniface over the emulated device.
#[derive(Debug, Clone, Copy)]
enum Backend {
    Kind(BackendKind),
    XenifaceEmulated,
}

fn backends() -> Vec<Backend> {
    let mut all = vec![
        Backend::Kind(BackendKind::Native),
        Backend::XenifaceEmulated,
    ];
    if cfg!(feature = "libxenstore") {
        all.push(Backend::Kind(BackendKind::Libxenstore));
    }
    all
}

fn open_transport(backend: Backend, guest: &Path, config: &XenstoreConfig) -> XenstoreTransport {
    match backend {
        Backend::Kind(kind) => XenstoreTransport::open(
            Some(guest),
            &XenstoreConfig {
                backend: kind,
                ..config.clone()
            },
        ),
        Backend::XenifaceEmulated => {
            XenstoreTransport::with_store::<XenifaceStore<EmulatedDevice>>(guest, config)
        }
    }
    .expect("transport opens")
}

/// What the test handlers saw.
#[derive(Default)]
struct Log {
    order: Vec<String>,
    runs: HashMap<String, usize>,
}

type SharedLog = Arc<Mutex<Log>>;

/// `record`: remembers its value (order, count). `slow`: sleeps `value` ms first.
struct Record(SharedLog, &'static str);

impl Handler for Record {
    fn name(&self) -> &'static str {
        self.1
    }
    fn handle(&self, _ctx: &Context<'_>, value: &Value) -> Result<Reply, HandlerError> {
        let text = value.as_str().unwrap_or_default().to_string();
        if self.1 == "slow" {
            std::thread::sleep(Duration::from_millis(text.parse().unwrap_or(0)));
        }
        let mut log = self.0.lock().unwrap();
        log.order.push(text.clone());
        *log.runs.entry(text.clone()).or_default() += 1;
        Ok(Reply::ok(text))
    }
}

/// `big`: a message of `value` characters.
struct Big;

impl Handler for Big {
    fn name(&self) -> &'static str {
        "big"
    }
    fn handle(&self, _ctx: &Context<'_>, value: &Value) -> Result<Reply, HandlerError> {
        let n = value.as_u64().unwrap_or(0) as usize;
        Ok(Reply::new("500", "e".repeat(n)))
    }
}

/// `vmdata`: reads `vm-data/hostname` and lists `vm-data/networking` through the channel.
struct VmData;

impl Handler for VmData {
    fn name(&self) -> &'static str {
        "vmdata"
    }
    fn handle(&self, ctx: &Context<'_>, _value: &Value) -> Result<Reply, HandlerError> {
        let data = ctx
            .channel
            .host_data()
            .expect("xenstore channels have host data");
        let fail = |e: guestd_core::HostDataError| HandlerError::failed(e.to_string());
        let hostname = data.read("vm-data/hostname").map_err(fail)?;
        let missing = data.read("vm-data/nothing").map_err(fail)?;
        let macs = data.list("vm-data/networking").map_err(fail)?;
        let none = data.list("vm-data/none").map_err(fail)?;
        let denied = data.read("/local/domain/6/name").is_err();
        Ok(Reply::ok(format!(
            "{}|{:?}|{}|{:?}|{denied}",
            String::from_utf8_lossy(&hostname.unwrap_or_default()),
            missing,
            macs.join(","),
            none
        )))
    }
}

struct Guest {
    // Dropped in this order: xenstored before its directory.
    xs: Option<TestXenstored>,
    _dir: tempfile::TempDir,
    dom0: PathBuf,
    guest: PathBuf,
    quota: Quota,
    host: HostClient,
    log: SharedLog,
    trigger: ShutdownTrigger,
    task: tokio::task::JoinHandle<Result<(), guestd_core::TransportError>>,
}

fn xenstored(dom0: &Path, guest: &Path, quota: Quota) -> TestXenstored {
    TestXenstored::start(Config {
        dom0: Some(dom0.to_path_buf()),
        guests: vec![(DOMID, guest.to_path_buf()), (6, guest.with_extension("6"))],
        quota,
        trace: std::env::var_os("XS_TRACE").is_some(),
        ..Config::default()
    })
    .expect("test-xenstored starts")
}

fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_env("XS_LOG"))
        .with_test_writer()
        .try_init();
}

impl Guest {
    async fn start(backend: Backend, tweak: impl FnOnce(&mut XenstoreConfig, &mut Quota)) -> Guest {
        init_logs();
        let dir = tempfile::tempdir().unwrap();
        let dom0 = dir.path().join("dom0.sock");
        let guest = dir.path().join("guest5.sock");
        let mut config = XenstoreConfig::default();
        let mut quota = Quota::default();
        tweak(&mut config, &mut quota);
        let xs = xenstored(&dom0, &guest, quota);
        let transport = open_transport(backend, &guest, &config);
        assert!(transport.describe().starts_with("xenstore:"));
        let log = SharedLog::default();
        let env = Env {
            root: Root::sandbox(dir.path()).unwrap(),
            runner: Arc::new(SystemRunner),
            backend: Arc::new(NullBackend),
        };
        let dispatcher = DispatcherBuilder::new()
            .register(Record(log.clone(), "record"))
            .unwrap()
            .register(Record(log.clone(), "slow"))
            .unwrap()
            .register(Big)
            .unwrap()
            .register(VmData)
            .unwrap()
            .build(env);
        let (trigger, shutdown) = Shutdown::new();
        let task = tokio::spawn(Box::new(transport).serve(Arc::new(dispatcher), shutdown));
        let host = HostClient::connect(Some(&dom0)).await.unwrap();
        Guest {
            xs: Some(xs),
            _dir: dir,
            dom0,
            guest,
            quota,
            host,
            log,
            trigger,
            task,
        }
    }

    fn dom0(&self) -> &XsClient {
        self.host.client()
    }

    async fn call(&self, name: &str, value: impl Into<Value>) -> Reply {
        self.host
            .call(DOMID, &Request::new(name, value), Duration::from_secs(20))
            .await
            .expect("the guest answers")
    }

    /// As nova's plugin does: write raw bytes at data/host/<id>, wait for data/guest/<id>, and
    /// leave the reply where it is.
    async fn nova_call(&self, id: &str, value: &[u8]) -> String {
        let reply_path = format!("{HOME}/data/guest/{id}");
        let mut watch = self
            .dom0()
            .watch(&reply_path, &format!("t-{id}"))
            .await
            .unwrap();
        self.dom0()
            .write(&format!("{HOME}/data/host/{id}"), value)
            .await
            .unwrap();
        let text = wait_for(self.dom0(), &mut watch, &reply_path).await;
        self.dom0()
            .unwatch(&reply_path, &format!("t-{id}"))
            .await
            .unwrap();
        text
    }

    async fn stop(self) {
        self.trigger.trigger();
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("serve returns on shutdown")
            .unwrap()
            .unwrap();
    }
}

async fn wait_for(dom0: &XsClient, watch: &mut WatchStream, path: &str) -> String {
    tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            watch.next().await.expect("connection stays up");
            if let Some(v) = dom0.read_optional(path).await.unwrap() {
                return String::from_utf8(v).unwrap();
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no reply at {path}"))
}

/// Wait until `data/host` is empty: guestd removes a request right after writing its reply,
/// so a host may see the reply a moment before the request is gone.
async fn requests_gone(dom0: &XsClient) {
    let dir = format!("{HOME}/data/host");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let left = dom0.directory(&dir).await.unwrap();
        if left.is_empty() {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "requests left behind: {left:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn decode(text: &str) -> Reply {
    // Exactly one JSON object with string fields: what nova indexes.
    let v: Value = serde_json::from_str(text).unwrap();
    assert!(
        v["returncode"].is_string() && v["message"].is_string(),
        "{text}"
    );
    assert!(text.is_ascii());
    Reply::decode(text).unwrap().1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_and_cleans_up_like_nova_expects() {
    for backend in backends() {
        let g = Guest::start(backend, |_, _| {}).await;
        let text = g
            .nova_call("a1", br#"{"name": "record", "value": "hello"}"#)
            .await;
        assert_eq!(decode(&text), Reply::ok("hello"), "{backend:?}");
        // The request goes, the reply stays for the host.
        requests_gone(g.dom0()).await;
        assert_eq!(
            g.dom0()
                .directory(&format!("{HOME}/data/host"))
                .await
                .unwrap(),
            Vec::<String>::new()
        );
        // The dom0 client removes what it read.
        assert_eq!(g.call("record", "again").await, Reply::ok("again"));
        assert_eq!(
            g.dom0()
                .directory(&format!("{HOME}/data/guest"))
                .await
                .unwrap(),
            ["a1"]
        );
        g.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_the_spec_replies() {
    for backend in backends() {
        let g = Guest::start(backend, |_, _| {}).await;
        let cases: [(&str, &[u8], &str, &str); 7] = [
            ("nonjson", b"abc", "500", "Request is malformed"),
            ("array", b"[1, 2]", "500", "Request is malformed"),
            ("string", br#""version""#, "500", "Request is malformed"),
            (
                "noname",
                br#"{"value": ""}"#,
                "500",
                "Request is missing 'name' key",
            ),
            (
                "unknown",
                br#"{"name": "nosuch", "value": ""}"#,
                "404",
                "No such agent command 'nosuch'",
            ),
            (
                "binary",
                b"{\"name\": \"record\", \"value\": \"\xff\xfe\"}",
                "500",
                "Request is malformed",
            ),
            ("empty", b"", "500", "Request is malformed"),
        ];
        for (id, value, code, message) in cases {
            let reply = decode(&g.nova_call(id, value).await);
            assert_eq!(reply, Reply::new(code, message), "{backend:?} {id}");
        }
        // The largest request the payload limit allows still gets its answer.
        let path = format!("{HOME}/data/host/huge");
        let filler = "x".repeat(4096 - path.len() - 1 - r#"{"name": "record", "value": ""}"#.len());
        let value = format!(r#"{{"name": "record", "value": "{filler}"}}"#);
        let reply = decode(&g.nova_call("huge", value.as_bytes()).await);
        assert_eq!(reply.returncode, "0");
        assert!(
            reply.message.len() > 1900,
            "shortened to fit: {}",
            reply.message.len()
        );
        // One byte more is refused before it leaves the host.
        let too_big = format!("{value} ");
        assert!(g.dom0().write(&path, too_big.as_bytes()).await.is_err());
        // Still up.
        assert_eq!(g.call("record", "alive").await, Reply::ok("alive"));
        g.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_fit_the_guest_quota() {
    for backend in backends() {
        let g = Guest::start(backend, |_, _| {}).await;
        let text = g
            .nova_call("big", br#"{"name": "big", "value": 6000}"#)
            .await;
        assert!(text.len() <= 2048, "{}", text.len());
        let reply = decode(&text);
        assert_eq!(reply.returncode, "500");
        assert!(reply.message.starts_with("eeee") && reply.message.ends_with("[truncated]"));
        g.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arrival_order_and_vanished_requests() {
    for backend in backends() {
        let g = Guest::start(backend, |_, _| {}).await;
        let dom0 = g.dom0();
        // Keep the guest busy, then queue requests behind it; one of them is withdrawn.
        dom0.write(
            &format!("{HOME}/data/host/busy"),
            br#"{"name": "slow", "value": "700"}"#,
        )
        .await
        .unwrap();
        tokio::time::sleep(Duration::from_millis(150)).await;
        let ids: Vec<String> = (0..12).map(|i| format!("q{}", 12 - i)).collect();
        for id in &ids {
            let req = format!(r#"{{"name": "record", "value": "{id}"}}"#);
            dom0.write(&format!("{HOME}/data/host/{id}"), req.as_bytes())
                .await
                .unwrap();
        }
        dom0.rm(&format!("{HOME}/data/host/q7")).await.unwrap();
        let last = decode(
            &g.nova_call("zz", br#"{"name": "record", "value": "zz"}"#)
                .await,
        );
        assert_eq!(last, Reply::ok("zz"));
        let mut expected: Vec<String> = vec!["700".into()];
        expected.extend(ids.iter().filter(|id| *id != "q7").cloned());
        expected.push("zz".into());
        let order = g.log.lock().unwrap().order.clone();
        assert_eq!(order, expected, "{backend:?}: executed in arrival order");
        assert!(
            dom0.read_optional(&format!("{HOME}/data/guest/q7"))
                .await
                .unwrap()
                .is_none()
        );
        g.stop().await;
    }
}

/// Write `ids` as requests in one transaction, so the guest sees them at once. A conflicting
/// commit (EAGAIN) is retried, as every XenStore client does.
async fn write_at_once(dom0: &XsClient, ids: impl Iterator<Item = usize> + Clone) {
    loop {
        let tx = dom0.transaction_start().await.unwrap();
        for i in ids.clone() {
            let req = format!(r#"{{"name": "record", "value": "r{i}"}}"#);
            let payload = guestd_transport_xenstore::wire::write_payload(
                &format!("{HOME}/data/host/r{i:04}"),
                req.as_bytes(),
            )
            .unwrap();
            dom0.request(guestd_transport_xenstore::wire::MsgType::Write, tx, payload)
                .await
                .unwrap();
        }
        match dom0.transaction_end(tx, true).await {
            Err(e) if e.is("EAGAIN") => continue,
            other => break other.unwrap(),
        }
    }
}

async fn wait_for_replies(dom0: &XsClient, watch: &mut WatchStream, n: usize) {
    tokio::time::timeout(Duration::from_secs(120), async {
        loop {
            watch.next().await.unwrap();
            let replies = dom0
                .directory(&format!("{HOME}/data/guest"))
                .await
                .unwrap_or_default();
            if replies.len() == n {
                break;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{n} replies"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_1000_gets_1000_replies_once() {
    for backend in backends() {
        // xeniface lists data/host in one message (no DIRECTORY_PART): 500 names fit.
        let n = match backend {
            Backend::XenifaceEmulated => 500,
            Backend::Kind(_) => 1000,
        };
        let g = Guest::start(backend, |_, q| q.max_nodes = 5000).await;
        let dom0 = g.dom0();
        let mut watch = dom0
            .watch(&format!("{HOME}/data/guest"), "burst")
            .await
            .unwrap();
        write_at_once(dom0, 0..n).await;
        wait_for_replies(dom0, &mut watch, n).await;
        for i in [0, 1, n / 2 - 1, n - 1] {
            let text = dom0
                .read(&format!("{HOME}/data/guest/r{i:04}"))
                .await
                .unwrap();
            assert_eq!(
                decode(std::str::from_utf8(&text).unwrap()),
                Reply::ok(format!("r{i}"))
            );
        }
        requests_gone(dom0).await;
        let runs = g.log.lock().unwrap().runs.clone();
        assert_eq!(runs.len(), n, "{backend:?}");
        assert!(runs.values().all(|n| *n == 1), "each exactly once");
        g.stop().await;
    }
}

/// xeniface cannot list a data/host bigger than one message (the driver has no
/// DIRECTORY_PART); the guest answers once the host has taken enough requests back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xeniface_waits_out_a_listing_too_large_for_one_message() {
    let g = Guest::start(Backend::XenifaceEmulated, |_, q| q.max_nodes = 5000).await;
    let dom0 = g.dom0();
    let mut watch = dom0
        .watch(&format!("{HOME}/data/guest"), "big")
        .await
        .unwrap();
    write_at_once(dom0, 0..800).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(g.log.lock().unwrap().runs.is_empty(), "nothing listed yet");
    // The host takes half back, at once.
    loop {
        let tx = dom0.transaction_start().await.unwrap();
        for i in 400..800 {
            let payload =
                guestd_transport_xenstore::wire::path_payload(&format!("{HOME}/data/host/r{i:04}"))
                    .unwrap();
            dom0.request(guestd_transport_xenstore::wire::MsgType::Rm, tx, payload)
                .await
                .unwrap();
        }
        match dom0.transaction_end(tx, true).await {
            Err(e) if e.is("EAGAIN") => continue,
            other => break other.unwrap(),
        }
    }
    wait_for_replies(dom0, &mut watch, 400).await;
    assert_eq!(g.log.lock().unwrap().runs.len(), 400);
    assert_eq!(g.call("record", "still").await, Reply::ok("still"));
    g.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnects_after_xenstored_restarts() {
    for backend in backends() {
        let mut g = Guest::start(backend, |c, _| c.reconnect_max_secs = 1).await;
        assert_eq!(g.call("record", "before").await, Reply::ok("before"));
        // xenstored dies (tree lost) and comes back.
        g.xs.take().unwrap().stop();
        tokio::time::sleep(Duration::from_millis(300)).await;
        g.xs = Some(xenstored(&g.dom0, &g.guest, g.quota));
        g.host = HostClient::connect(Some(&g.dom0)).await.unwrap();
        assert_eq!(
            g.call("record", "after").await,
            Reply::ok("after"),
            "{backend:?}"
        );
        // data/host was recreated by the guest.
        assert!(
            g.dom0()
                .read_optional(&format!("{HOME}/data/host"))
                .await
                .unwrap()
                .is_some()
        );
        g.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_computed_while_disconnected_is_delivered_not_rerun() {
    for backend in backends() {
        let g = Guest::start(backend, |c, _| c.reconnect_max_secs = 1).await;
        let dom0 = g.dom0().clone();
        dom0.write(
            &format!("{HOME}/data/host/s1"),
            br#"{"name": "slow", "value": "600"}"#,
        )
        .await
        .unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        // The connection drops while the command runs; xenstored keeps its tree.
        g.xs.as_ref().unwrap().disconnect_all();
        let host = HostClient::connect(Some(&g.dom0)).await.unwrap();
        let mut watch = host
            .client()
            .watch(&format!("{HOME}/data/guest/s1"), "s1")
            .await
            .unwrap();
        let text = wait_for(host.client(), &mut watch, &format!("{HOME}/data/guest/s1")).await;
        assert_eq!(decode(&text), Reply::ok("600"));
        let reply = host
            .call(
                DOMID,
                &Request::new("record", "next"),
                Duration::from_secs(20),
            )
            .await
            .unwrap();
        assert_eq!(reply, Reply::ok("next"));
        requests_gone(host.client()).await;
        assert_eq!(
            g.log.lock().unwrap().runs["600"],
            1,
            "{backend:?}: run once"
        );
        g.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_replies_are_pruned() {
    for backend in backends() {
        let dir = tempfile::tempdir().unwrap();
        let _ = dir;
        let g = Guest::start(backend, |c, _| c.reply_max_age_secs = 1).await;
        let text = g
            .nova_call("p1", br#"{"name": "record", "value": "p"}"#)
            .await;
        assert_eq!(decode(&text), Reply::ok("p"));
        let reply_path = format!("{HOME}/data/guest/p1");
        let mut watch = g.dom0().watch(&reply_path, "prune").await.unwrap();
        tokio::time::timeout(Duration::from_secs(5), async {
            while g.dom0().read_optional(&reply_path).await.unwrap().is_some() {
                watch.next().await.unwrap();
            }
        })
        .await
        .expect("reply pruned after its age");
        g.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_left_by_an_earlier_run_are_pruned_and_not_rerun() {
    for backend in backends() {
        let dir = tempfile::tempdir().unwrap();
        let dom0_path = dir.path().join("d0");
        let guest_path = dir.path().join("g5");
        let _xs = xenstored(&dom0_path, &guest_path, Quota::default());
        let dom0 = XsClient::connect(&dom0_path).await.unwrap();
        // A previous guestd answered "done" but died before removing the request.
        dom0.write(
            &format!("{HOME}/data/guest/done"),
            br#"{"returncode": "0", "message": ""}"#,
        )
        .await
        .unwrap();
        dom0.write(
            &format!("{HOME}/data/host/done"),
            br#"{"name": "record", "value": "done"}"#,
        )
        .await
        .unwrap();
        let config = XenstoreConfig {
            reply_max_age_secs: 1,
            ..XenstoreConfig::default()
        };
        let transport = open_transport(backend, &guest_path, &config);
        let log = SharedLog::default();
        let env = Env {
            root: Root::sandbox(dir.path()).unwrap(),
            runner: Arc::new(SystemRunner),
            backend: Arc::new(NullBackend),
        };
        let dispatcher = DispatcherBuilder::new()
            .register(Record(log.clone(), "record"))
            .unwrap()
            .build(env);
        let (trigger, shutdown) = Shutdown::new();
        let task = tokio::spawn(Box::new(transport).serve(Arc::new(dispatcher), shutdown));
        let guest_dir = format!("{HOME}/data/guest");
        tokio::time::timeout(Duration::from_secs(5), async {
            while !dom0.directory(&guest_dir).await.unwrap().is_empty() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
        .await
        .expect("the old reply is pruned");
        assert!(
            dom0.directory(&format!("{HOME}/data/host"))
                .await
                .unwrap()
                .is_empty()
        );
        assert!(log.lock().unwrap().runs.is_empty(), "not run again");
        trigger.trigger();
        task.await.unwrap().unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handlers_read_vm_data() {
    read_vm_data().await;
}

/// guestd runs a current-thread runtime: handlers block on it from the blocking pool.
#[tokio::test(flavor = "current_thread")]
async fn handlers_read_vm_data_on_a_current_thread_runtime() {
    read_vm_data().await;
}

async fn read_vm_data() {
    for backend in backends() {
        let g = Guest::start(backend, |_, _| {}).await;
        let dom0 = g.dom0();
        dom0.write(&format!("{HOME}/vm-data/hostname"), b"web-1")
            .await
            .unwrap();
        for mac in ["BC764E2012D4", "BC764E2012D5"] {
            dom0.write(&format!("{HOME}/vm-data/networking/{mac}"), b"{}")
                .await
                .unwrap();
        }
        let reply = g.call("vmdata", "").await;
        assert_eq!(
            reply,
            Reply::ok("web-1|None|BC764E2012D4,BC764E2012D5|[]|true"),
            "{backend:?}"
        );
        g.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_client_times_out_and_takes_the_request_back() {
    let dir = tempfile::tempdir().unwrap();
    let dom0_path = dir.path().join("d0");
    let _xs = xenstored(&dom0_path, &dir.path().join("g5"), Quota::default());
    // No guest agent runs.
    let host = HostClient::connect(Some(&dom0_path)).await.unwrap();
    let err = host
        .call(
            DOMID,
            &Request::new("version", "agent"),
            Duration::from_millis(300),
        )
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "TIMEOUT: No response from agent within 0 seconds."
    );
    let left = host
        .client()
        .directory(&format!("{HOME}/data/host"))
        .await
        .unwrap();
    assert!(left.is_empty(), "request removed: {left:?}");
    let err = host
        .call(
            42,
            &Request::new("version", "agent"),
            Duration::from_secs(1),
        )
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "domain 42 does not exist in XenStore");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_fails_clearly() {
    let err = XenstoreTransport::open(
        Some(Path::new("/nonexistent/xenbus")),
        &XenstoreConfig::default(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("/nonexistent/xenbus"), "{err}");
    // The Windows backend is refused off Windows, whatever the path.
    let err = XenstoreTransport::open(
        Some(Path::new("/dev/xen/xenbus")),
        &XenstoreConfig {
            backend: BackendKind::Xeniface,
            ..XenstoreConfig::default()
        },
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "xenstore backend 'xeniface' is the Xen PV drivers' interface of Windows guests; on \
         this OS use 'native' (the default)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_with_the_same_id_takes_the_late_answer_without_rerunning() {
    let g = Guest::start(Backend::Kind(BackendKind::Native), |_, _| {}).await;
    // The first attempt was answered after the caller gave up (its reply is still there).
    let first = g
        .nova_call("retry-1", br#"{"name": "record", "value": "once"}"#)
        .await;
    assert_eq!(decode(&first), Reply::ok("once"));
    let again = g
        .host
        .call_with_id(
            DOMID,
            &Request::new("record", "once"),
            "retry-1",
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    assert_eq!(again, Reply::ok("once"));
    assert_eq!(g.log.lock().unwrap().runs["once"], 1);
    assert!(
        g.dom0()
            .read_optional(&format!("{HOME}/data/guest/retry-1"))
            .await
            .unwrap()
            .is_none()
    );
    g.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_node_quota_is_relieved_by_removing_old_replies() {
    for backend in backends() {
        // data, data/host, data/guest, 3 replies and one request: the 7th node is the last.
        let g = Guest::start(backend, |_, q| q.max_nodes = 7).await;
        for i in 0..3 {
            let text = g
                .nova_call(&format!("old{i}"), br#"{"name": "record", "value": "old"}"#)
                .await;
            assert_eq!(decode(&text), Reply::ok("old"));
        }
        tokio::time::sleep(Duration::from_millis(5200)).await;
        let text = g
            .nova_call("new", br#"{"name": "record", "value": "new"}"#)
            .await;
        assert_eq!(decode(&text), Reply::ok("new"), "{backend:?}");
        let left = g
            .dom0()
            .directory(&format!("{HOME}/data/guest"))
            .await
            .unwrap();
        assert_eq!(left, ["new"], "{backend:?}");
        g.stop().await;
    }
}
