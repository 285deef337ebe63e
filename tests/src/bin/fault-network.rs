//! Test helper for the fault-injection tests: applies network configurations through the real
//! `resetnetwork` backend (Debian, ifupdown) on a sandbox root until it is killed. Commands go to
//! the fake runner (recorded, never run), which answers the address checks so every apply
//! succeeds.
//!
//! `fault-network ROOT a|b|loop`: apply configuration A or B once, or A, B, A, … forever,
//! printing `applied N` after each so the test knows applies are under way when it sends SIGKILL.

use std::io::Write;
use std::sync::Arc;

use guestd_core::{Env, NetworkRequest, Root};
use guestd_distro::{OsBackend, OsFamily};
use guestd_network_model::nova::{Inline, parse_inline};
use guestd_testkit::FakeRunner;
use serde_json::{Value, json};

/// Two configurations of the sandbox's eth0 that differ in every file they touch.
fn config(which: &str) -> Value {
    let (ip, dns, host) = match which {
        "a" => ("198.51.100.10", "192.0.2.53", "gen-a"),
        _ => ("203.0.113.20", "192.0.2.54", "gen-b"),
    };
    json!({"hostname": host, "interfaces": [{"label": "public", "mac": "bc:76:4e:20:6c:5a",
        "gateway": ip.rsplit_once('.').map(|(net, _)| format!("{net}.1")), "dns": [dns],
        "ips": [{"ip": ip, "netmask": "255.255.255.0", "enabled": "1"}]}]})
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, root, mode] = args.as_slice() else {
        eprintln!("usage: fault-network ROOT a|b|loop");
        std::process::exit(2);
    };
    let runner = FakeRunner::new();
    runner.respond(
        "ip -o addr show",
        0,
        "2: eth0    inet 198.51.100.10/24 \n2: eth0    inet 203.0.113.20/24 \n",
    );
    let env = Env {
        root: Root::sandbox(root).expect("sandbox root"),
        runner: Arc::new(runner),
        backend: Arc::new(OsBackend::new(OsFamily::Debian)),
    };
    let order: Vec<&str> = match mode.as_str() {
        "a" | "b" => vec![mode],
        _ => vec!["a", "b"],
    };
    let mut out = std::io::stdout().lock();
    for (n, which) in order.iter().cycle().enumerate() {
        let Ok(Inline::Spec(spec)) = parse_inline(&config(which)) else {
            panic!("configuration {which} does not parse");
        };
        let request = NetworkRequest {
            spec: &spec,
            manager: Some("ifupdown"),
        };
        env.backend
            .reset_network(&env, &request)
            .unwrap_or_else(|e| panic!("applying {which}: {e}"));
        writeln!(out, "applied {}", n + 1).expect("stdout");
        out.flush().expect("stdout");
        if mode != "loop" {
            break;
        }
    }
}
