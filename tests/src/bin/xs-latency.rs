//! Benchmark helper (`bench/run`): round trips of `version` over the XenStore transport on
//! test-xenstored, as a host sees them (write `data/host/<id>`, watch fires on
//! `data/guest/<id>`, read it). guestd's side is the real `XenstoreTransport` and dispatcher,
//! in this process; the host is `guestctl`'s `HostClient` on the dom0 socket.
//!
//! `xs-latency N` prints `{"n", "p50_us", "p99_us", "mean_us", "max_us"}`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use guestd_core::{
    DispatcherBuilder, Env, NullBackend, Request, Root, Shutdown, SystemRunner, Transport,
};
use guestd_handlers::VersionHandler;
use guestd_test_xenstored::{Config, TestXenstored};
use guestd_transport_xenstore::{HostClient, XenstoreConfig, XenstoreTransport};

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1000);
    let dir = tempfile::tempdir().expect("tempdir");
    let dom0 = dir.path().join("dom0.sock");
    let guest = dir.path().join("guest1.sock");
    let _xenstored = TestXenstored::start(Config {
        dom0: Some(dom0.clone()),
        guests: vec![(1, guest.clone())],
        ..Config::default()
    })
    .expect("test-xenstored");
    let root = dir.path().join("root");
    std::fs::create_dir(&root).unwrap();
    let env = Env {
        root: Root::sandbox(&root).unwrap(),
        runner: Arc::new(SystemRunner),
        backend: Arc::new(NullBackend),
    };
    let dispatcher = Arc::new(
        DispatcherBuilder::new()
            .register(VersionHandler)
            .expect("register")
            .build(env),
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut lat = rt.block_on(async {
        let transport = XenstoreTransport::open(Some(&guest), &XenstoreConfig::default())
            .await
            .expect("open the XenStore transport");
        let (_trigger, shutdown) = Shutdown::new();
        tokio::spawn(Box::new(transport).serve(dispatcher, shutdown));
        let host = HostClient::connect(Some(&dom0)).await.expect("dom0 client");
        let request = Request::new("version", "agent");
        let mut lat = Vec::with_capacity(n);
        for i in 0..n + 50 {
            let t0 = Instant::now();
            let reply = host
                .call(1, &request, Duration::from_secs(30))
                .await
                .expect("reply");
            assert_eq!(reply.returncode, "0", "{reply:?}");
            if i >= 50 {
                lat.push(t0.elapsed().as_secs_f64() * 1e6); // after a warm-up
            }
        }
        lat
    });
    lat.sort_by(f64::total_cmp);
    let pct =
        |p: f64| lat[((p / 100.0 * lat.len() as f64).ceil() as usize).clamp(1, lat.len()) - 1];
    println!(
        "{{\"n\":{n},\"p50_us\":{:.1},\"p99_us\":{:.1},\"mean_us\":{:.1},\"max_us\":{:.1}}}",
        pct(50.0),
        pct(99.0),
        lat.iter().sum::<f64>() / lat.len() as f64,
        lat[lat.len() - 1]
    );
}
