//! Issue "virtio-serial, vsock and TCP": the real guestd and guestctl over TCP with mutual TLS,
//! several transports in one guestd, the refusal to serve plain TCP off loopback (and on it
//! without the opt-in), and one channel grammar for both programs.
#![cfg(unix)]
#![allow(clippy::disallowed_methods)]

use std::process::{Command, Output};

use guestd_tests::{Guestd, bin};
use guestd_transport_conformance::pki::TestPki;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn guestctl(args: &[&str]) -> Output {
    Command::new(bin::path("guestctl"))
        .args(args)
        .output()
        .expect("run guestctl")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).trim().to_string()
}

/// guestd with the unix socket plus a mutual-TLS TCP listener; certificates from openssl.
fn start_tls() -> (Guestd, TestPki, String) {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::generate(dir.path());
    let config = dir.path().join("guestd.toml");
    std::fs::write(
        &config,
        format!(
            "[tcp]\ntls_cert = {:?}\ntls_key = {:?}\ntls_client_ca = {:?}\n",
            pki.server_cert, pki.server_key, pki.ca
        ),
    )
    .unwrap();
    let spec = format!("tcp:127.0.0.1:{}", free_port());
    let listen = spec.clone();
    let g = Guestd::start_in(
        dir,
        &["--config", config.to_str().unwrap(), "--listen", &listen],
    );
    (g, pki, spec)
}

#[test]
fn guestctl_over_tcp_with_mutual_tls_next_to_the_unix_socket() {
    let (g, pki, spec) = start_tls();
    let tls = [
        "--tls-cert",
        pki.client_cert.to_str().unwrap(),
        "--tls-key",
        pki.client_key.to_str().unwrap(),
        "--tls-ca",
        pki.ca.to_str().unwrap(),
    ];
    let mut args = vec!["--connect", spec.as_str()];
    args.extend(tls);
    args.push("version");
    let out = guestctl(&args);
    assert!(out.status.success(), "{out:?}\n{}", g.log());
    let version = text(&out.stdout);
    // guestd links no TLS: it continued as guestd-tls (same process) to serve this listener.
    assert!(
        g.log().contains("mutual TLS: continuing as guestd-tls"),
        "{}",
        g.log()
    );
    // The unix socket of the same guestd answers too (each transport its own channels).
    let unix = g.ctl(&["version"]);
    assert_eq!(text(&unix.stdout), version);

    // Without a client certificate guestctl says what is missing and never reaches the agent.
    let out = guestctl(&[
        "--connect",
        &spec,
        "--tls-ca",
        pki.ca.to_str().unwrap(),
        "version",
    ]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("--tls-cert and --tls-key"),
        "{}",
        text(&out.stderr)
    );
    // A certificate from another CA is refused by guestd (and it logs why).
    let out = guestctl(&[
        "--connect",
        &spec,
        "--attempts",
        "1",
        "--tls-cert",
        pki.rogue_cert.to_str().unwrap(),
        "--tls-key",
        pki.rogue_key.to_str().unwrap(),
        "--tls-ca",
        pki.ca.to_str().unwrap(),
        "version",
    ]);
    assert!(!out.status.success(), "rogue client answered: {out:?}");
    assert!(!text(&out.stdout).contains(&version));
    let log = g.log_once_it_has("connection refused");
    assert!(log.contains("connection refused"), "{log}");
    // Plain TCP to the TLS port gets no answer either.
    let out = guestctl(&[
        "--connect",
        &spec,
        "--attempts",
        "1",
        "--timeout",
        "5",
        "version",
    ]);
    assert!(!out.status.success(), "{out:?}");
}

#[test]
fn plain_tcp_off_loopback_refuses_to_start_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(bin::path("guestd"))
        .arg("--root")
        .arg(dir.path())
        .args(["--config", "/dev/null", "--listen"])
        .arg(format!("tcp:0.0.0.0:{}", free_port()))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("refusing to listen"), "{err}");
    assert!(err.contains("tls_client_ca"), "{err}");
}

#[test]
fn plain_tcp_on_loopback_with_guestctl() {
    let spec = format!("tcp:127.0.0.1:{}", free_port());
    // Refused without the explicit opt-in, and says what to configure.
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(bin::path("guestd"))
        .arg("--root")
        .arg(dir.path())
        .args(["--config", "/dev/null", "--listen", &spec])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("without authentication"), "{err}");
    assert!(
        err.contains("allow_unauthenticated_loopback = true"),
        "{err}"
    );
    // With it: served, and the start-up log warns.
    let config = guestd_tests::plain_loopback_tcp_config(dir.path());
    let g = Guestd::start_in(
        dir,
        &["--config", config.to_str().unwrap(), "--listen", &spec],
    );
    let out = guestctl(&["--connect", &spec, "features"]);
    assert!(out.status.success(), "{out:?}\n{}", g.log());
    assert!(text(&out.stdout).contains("version"), "{out:?}");
    assert!(
        g.log().contains("accepts unauthenticated connections"),
        "{}",
        g.log()
    );
}

#[test]
fn guestctl_rejects_bad_specs_with_usage_errors() {
    for (spec, want) in [
        ("vsock:x", "vsock:CID:PORT"),
        ("tcp:nohostport", "HOST:PORT"),
        ("pigeon:1", "unknown transport"),
        ("vsock:5000", "vsock:CID:PORT"),
        ("qga+unix:/x", "native protocol"),
    ] {
        let out = guestctl(&["--connect", spec, "version"]);
        assert_eq!(out.status.code(), Some(2), "{spec}: {out:?}");
        assert!(
            text(&out.stderr).contains(want),
            "{spec}: {}",
            text(&out.stderr)
        );
    }
}

/// guestd (`--listen`, `transports.listen`) and guestctl (`--connect`) take the same channel
/// strings through core's one parser; the forms only one side has are listed as such.
#[test]
fn guestd_and_guestctl_share_one_channel_grammar() {
    let dir = tempfile::tempdir().unwrap();
    // (spec, guestd takes it, guestctl takes it)
    let forms: &[(&str, bool, bool)] = &[
        ("unix:/nonexistent/guestd.sock", true, true),
        ("serial:/nonexistent/port", true, true),
        ("tcp:127.0.0.1:1", true, true),
        ("tcp:[::1]:1", true, true),
        // guestd only: the configured port, listening vsock, XenStore from inside, qga channels.
        ("serial:", true, false),
        ("vsock:5000", true, false),
        ("xenstore", true, false),
        ("xenstore:/nonexistent/xenbus", true, false),
        ("qga+unix:/nonexistent/qga.sock", true, false),
        ("qga+serial:", true, false),
        ("qga+tcp:127.0.0.1:1", true, false),
        // guestctl only: a guest's vsock CID, a domain's XenStore area from dom0.
        ("vsock:3:5000", false, true),
        ("xenstore:7", false, true),
        // Neither.
        ("qga+xenstore", false, false),
        ("tcp:7000", false, false),
        ("unix:", false, false),
        ("pigeon:1", false, false),
    ];
    for &(spec, guestd, ctl) in forms {
        let config = dir.path().join("guestd.toml");
        std::fs::write(&config, format!("[transports]\nlisten = [{spec:?}]\n")).unwrap();
        for args in [
            vec!["--config", "/dev/null", "--check-config", "--listen", spec],
            vec!["--config", config.to_str().unwrap(), "--check-config"],
        ] {
            let out = Command::new(bin::path("guestd"))
                .args(&args)
                .output()
                .unwrap();
            assert_eq!(
                out.status.success(),
                guestd,
                "guestd {args:?}: {}",
                text(&out.stderr)
            );
            if guestd {
                let shown = format!("# transports: {spec}");
                assert!(text(&out.stdout).contains(&shown), "{}", text(&out.stdout));
            }
        }
        // guestctl: 2 is a usage error (the spec); 3 is "no answer" (it parsed and tried).
        let out = guestctl(&[
            "--connect",
            spec,
            "--timeout",
            "0.5",
            "--attempts",
            "1",
            "version",
        ]);
        let code = out.status.code();
        assert_eq!(
            code == Some(3),
            ctl,
            "guestctl {spec}: {code:?} {}",
            text(&out.stderr)
        );
        if !ctl {
            assert_eq!(code, Some(2), "guestctl {spec}: {}", text(&out.stderr));
        }
    }
    // pipe:NAME parses on both sides; here (not Windows) both say it exists only on Windows.
    let out = guestctl(&["--connect", "pipe:guestd", "version"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("only on Windows"),
        "{}",
        text(&out.stderr)
    );
    let out = Command::new(bin::path("guestd"))
        .args([
            "--config",
            "/dev/null",
            "--check-config",
            "--listen",
            "pipe:guestd",
        ])
        .output()
        .unwrap();
    assert!(
        text(&out.stdout).contains(r"# transports: pipe:\\.\pipe\guestd"),
        "{out:?}"
    );
}
