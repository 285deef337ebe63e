//! Issue 8 over XenStore: the hostile corpus through the real XenStore transport on
//! test-xenstored, and xenstored killed (SIGKILL) and restarted while a request is running.
//! The corpus goes to the real daemon (`--listen xenstore:SOCKET`); the restart test runs the
//! real `XenstoreTransport` in this process with a deliberately slow command. The host is
//! `HostClient` on the dom0 socket.
#![cfg(unix)]
#![allow(clippy::disallowed_methods)] // the test spawns and kills test-xenstored

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use guestd_core::{
    Context, DispatcherBuilder, Env, Handler, HandlerError, NullBackend, Reply, Request, Root,
    Shutdown, SystemRunner, Transport,
};
use guestd_handlers::VersionHandler;
use guestd_tests::hostile::{self, Expect};
use guestd_transport_xenstore::{HostClient, XenstoreConfig, XenstoreTransport};
use serde_json::Value;

/// A test-xenstored process, killed when dropped.
struct Xenstored {
    child: Child,
}

impl Xenstored {
    fn start(dom0: &Path, guest: &Path) -> Self {
        let mut child = Command::new(guestd_tests::bin::path("test-xenstored"))
            .arg("--dom0")
            .arg(dom0)
            .arg("--guest")
            .arg(format!("1:{}", guest.display()))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn test-xenstored");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "ready", "test-xenstored did not start");
        Self { child }
    }

    fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Xenstored {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `slow`: takes a while, so xenstored can die while it runs.
struct Slow;

impl Handler for Slow {
    fn name(&self) -> &'static str {
        "slow"
    }

    fn handle(&self, _ctx: &Context<'_>, _value: &Value) -> Result<Reply, HandlerError> {
        std::thread::sleep(Duration::from_millis(400));
        Ok(Reply::ok("slow done"))
    }
}

struct Setup {
    _dir: tempfile::TempDir,
    dom0: PathBuf,
    guest: PathBuf,
    root: PathBuf,
    rt: tokio::runtime::Runtime,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    std::fs::create_dir(&root).unwrap();
    Setup {
        dom0: dir.path().join("dom0.sock"),
        guest: dir.path().join("guest1.sock"),
        root,
        _dir: dir,
        rt: tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap(),
    }
}

/// Open the guest's transport and serve it in the background.
fn serve_guest(s: &Setup) {
    let env = Env {
        root: Root::sandbox(&s.root).unwrap(),
        runner: Arc::new(SystemRunner),
        backend: Arc::new(NullBackend),
    };
    let dispatcher = Arc::new(
        DispatcherBuilder::new()
            .register(VersionHandler)
            .unwrap()
            .register(Slow)
            .unwrap()
            .build(env),
    );
    let config = XenstoreConfig {
        reconnect_max_secs: 1,
        ..XenstoreConfig::default()
    };
    let transport =
        s.rt.block_on(async { XenstoreTransport::open(Some(&s.guest), &config) })
            .expect("open the XenStore transport");
    let (trigger, shutdown) = Shutdown::new();
    std::mem::forget(trigger); // serve until the runtime is dropped
    s.rt.spawn(Box::new(transport).serve(dispatcher, shutdown));
}

#[test]
fn hostile_corpus_over_xenstore() {
    let s = setup();
    let _xenstored = Xenstored::start(&s.dom0, &s.guest);
    // The real daemon with every command, serving the guest's XenStore socket.
    let listen = format!("xenstore:{}", s.guest.display());
    let mut g = guestd_tests::Guestd::start(&["--listen", &listen]);
    let host = s.rt.block_on(HostClient::connect(Some(&s.dom0))).unwrap();
    let mut failures = Vec::new();
    let mut sent = 0;
    for case in hostile::load() {
        // A XenStore value holds at most 4 KiB (with its path): the bigger cases cannot even
        // be written, and the stream line limit does not apply here.
        if case.expect == Expect::TooLarge || case.bytes.len() > 3000 {
            continue;
        }
        sent += 1;
        let raw =
            s.rt.block_on(host.call_raw(1, &case.bytes, Duration::from_secs(20)));
        match raw {
            Ok(text) => {
                if let Err(e) = hostile::check_reply(&case, text.as_bytes()) {
                    failures.push(e);
                }
            }
            Err(e) => failures.push(format!("{}: no reply: {e}", case.name)),
        }
    }
    assert!(sent >= 30, "only {sent} cases fit in XenStore");
    let probe =
        s.rt.block_on(host.call(
            1,
            &Request::new("version", "agent"),
            Duration::from_secs(20),
        ))
        .expect("guest still answers");
    assert_eq!(probe.returncode, "0");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(g.alive(), "guestd died:\n{}", g.log());
    let escaped: Vec<_> = hostile::files_below(g.dir.path())
        .into_iter()
        .filter(|p| p.to_string_lossy().contains("guestd-hostile") && !p.starts_with(g.root()))
        .collect();
    assert!(escaped.is_empty(), "written outside the root: {escaped:?}");
}

#[test]
fn xenstored_killed_mid_request_and_restarted() {
    let s = setup();
    let xenstored = Xenstored::start(&s.dom0, &s.guest);
    serve_guest(&s);
    let host = s.rt.block_on(HostClient::connect(Some(&s.dom0))).unwrap();
    let version = Request::new("version", "agent");
    let r =
        s.rt.block_on(host.call(1, &version, Duration::from_secs(20)))
            .unwrap();
    assert_eq!(r.returncode, "0");

    // A request is running in the guest when xenstored dies.
    let slow = {
        let host = Arc::new(host);
        let h = host.clone();
        s.rt.spawn(async move {
            h.call(1, &Request::new("slow", ""), Duration::from_secs(5))
                .await
        })
    };
    std::thread::sleep(Duration::from_millis(150));
    xenstored.kill();
    let lost = s.rt.block_on(slow).unwrap();
    assert!(lost.is_err(), "a reply through a dead xenstored: {lost:?}");

    // A new xenstored on the same sockets: the guest reconnects and answers again.
    let _xenstored = Xenstored::start(&s.dom0, &s.guest);
    let host = s.rt.block_on(HostClient::connect(Some(&s.dom0))).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match s
            .rt
            .block_on(host.call(1, &version, Duration::from_secs(3)))
        {
            Ok(reply) => {
                assert_eq!(reply.returncode, "0", "{reply:?}");
                break;
            }
            Err(e) => assert!(
                Instant::now() < deadline,
                "the guest did not come back after xenstored restarted: {e}"
            ),
        }
    }
    // And it keeps serving normally, the slow command included.
    let r =
        s.rt.block_on(host.call(1, &Request::new("slow", ""), Duration::from_secs(20)))
            .unwrap();
    assert_eq!(r, Reply::ok("slow done"));
}
