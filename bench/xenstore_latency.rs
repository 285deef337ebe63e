//! XenStore latency benchmark: the time from the host's request write to the guest's reply
//! write (seen by dom0 as the watch event on `data/guest/<id>`), p50/p99 over N sequential
//! `version` requests. Run through `bench/xenstore-latency`, which starts test-xenstored and
//! guestd; by hand: `xenstore-latency DOM0_SOCKET DOMID [N]`.

use std::time::{Duration, Instant};

use guestd_transport_xenstore::XsClient;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: xenstore-latency DOM0_SOCKET DOMID [N]";
    let socket = args.next().ok_or(usage)?;
    let domid: u32 = args.next().ok_or(usage)?.parse()?;
    let n: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(1000);
    let dom0 = XsClient::connect(socket.as_ref()).await?;
    let home = format!("/local/domain/{domid}");
    let mut watch = dom0.watch(&format!("{home}/data/guest"), "bench").await?;
    watch.next().await; // the registration event
    let mut samples = Vec::with_capacity(n);
    for i in 0..n {
        let id = format!("bench-{i}");
        let reply_path = format!("{home}/data/guest/{id}");
        let started = Instant::now();
        dom0.write(
            &format!("{home}/data/host/{id}"),
            br#"{"name": "version", "value": "agent"}"#,
        )
        .await?;
        loop {
            let event = tokio::time::timeout(Duration::from_secs(30), watch.next())
                .await?
                .ok_or("connection lost")?;
            if event.path == reply_path {
                break;
            }
        }
        samples.push(started.elapsed());
        dom0.rm(&reply_path).await?;
    }
    samples.sort();
    let pick = |q: f64| samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)];
    println!(
        "xenstore request write -> reply write over {n} requests: p50 {:?}  p99 {:?}  max {:?}",
        pick(0.50),
        pick(0.99),
        samples[samples.len() - 1]
    );
    Ok(())
}
