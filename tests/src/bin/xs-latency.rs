//! Benchmark helper (`bench/run`): round trips of `version` between a host and the real
//! `guestd` serving XenStore on test-xenstored (`guestd --listen xenstore:SOCKET`), as the host
//! sees them: write `data/host/<id>`, the watch on `data/guest/<id>` fires, read it. An upper
//! bound of guestd's request-write to reply-write latency.
//!
//! `xs-latency GUESTD TEST_XENSTORED N` prints `{"n", "p50_us", "p99_us", "mean_us", "max_us"}`.
#![allow(clippy::disallowed_methods)] // a benchmark driver: it starts the processes it measures

use std::io::BufRead;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use guestd_core::Request;
use guestd_transport_xenstore::HostClient;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, guestd, xenstored, n] = args.as_slice() else {
        eprintln!("usage: xs-latency GUESTD TEST_XENSTORED N");
        std::process::exit(2);
    };
    let n: usize = n.parse().expect("N");
    let dir = tempfile::tempdir().expect("tempdir");
    let dom0 = dir.path().join("dom0.sock");
    let guest = dir.path().join("guest1.sock");
    let mut store = Command::new(xenstored)
        .arg("--dom0")
        .arg(&dom0)
        .arg("--guest")
        .arg(format!("1:{}", guest.display()))
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn test-xenstored");
    let mut ready = String::new();
    std::io::BufReader::new(store.stdout.take().unwrap())
        .read_line(&mut ready)
        .unwrap();
    assert_eq!(ready.trim(), "ready");
    let root = dir.path().join("root");
    std::fs::create_dir(&root).unwrap();
    let config = dir.path().join("guestd.toml");
    std::fs::write(&config, "").unwrap();
    let mut agent = Command::new(guestd)
        .arg("--config")
        .arg(&config)
        .arg("--root")
        .arg(&root)
        .arg("--listen")
        .arg(format!("xenstore:{}", guest.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("guestd.log")).unwrap())
        .spawn()
        .expect("spawn guestd");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let lat = rt.block_on(async {
        let host = HostClient::connect(Some(&dom0)).await.expect("dom0 client");
        let request = Request::new("version", "agent");
        // Until guestd is up, then a warm-up.
        let deadline = Instant::now() + Duration::from_secs(20);
        while host
            .call(1, &request, Duration::from_secs(1))
            .await
            .is_err()
        {
            assert!(
                Instant::now() < deadline,
                "guestd did not answer over XenStore"
            );
        }
        let mut lat = Vec::with_capacity(n);
        for i in 0..n + 50 {
            let t0 = Instant::now();
            let reply = host
                .call(1, &request, Duration::from_secs(30))
                .await
                .expect("reply");
            assert_eq!(reply.returncode, "0", "{reply:?}");
            if i >= 50 {
                lat.push(t0.elapsed().as_secs_f64() * 1e6);
            }
        }
        lat
    });
    let _ = agent.kill();
    let _ = agent.wait();
    let _ = store.kill();
    let _ = store.wait();
    let mut lat = lat;
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
