//! HTTPS download against a real TLS peer: `openssl s_server -WWW` on 127.0.0.1 with a server
//! certificate issued by a test CA made with the openssl CLI. The configured CA bundle is the
//! only trust: the right CA downloads, another CA is refused.
#![cfg(unix)]
#![allow(clippy::disallowed_methods)] // drives the openssl CLI as the peer

use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use guestd_transport_conformance::pki::TestPki;
use guestd_update::download::{DownloadError, DownloadOptions, fetch};

/// The running `openssl s_server`, stopped on drop.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `openssl s_server -WWW` serving `dir` on a free loopback port with `pki`'s server certificate.
fn s_server(dir: &Path, pki: &TestPki) -> (Server, u16) {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new("openssl")
        .args(["s_server", "-quiet", "-WWW", "-cert"])
        .arg(&pki.server_cert)
        .arg("-key")
        .arg(&pki.server_key)
        .args(["-accept", &format!("127.0.0.1:{port}")])
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn openssl s_server");
    let server = Server(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "openssl s_server did not listen");
        std::thread::sleep(Duration::from_millis(20));
    }
    (server, port)
}

#[test]
fn https_download_trusts_exactly_the_configured_ca_bundle() {
    let d = tempfile::tempdir().unwrap();
    // A CA with a server certificate for 127.0.0.1, and a self-signed certificate of another
    // party that must not be enough to trust the server.
    let pki = TestPki::generate(d.path());
    let payload: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(d.path().join("update.tar.gz"), &payload).unwrap();
    let (_server, port) = s_server(d.path(), &pki);
    let url = format!("https://127.0.0.1:{port}/update.tar.gz");
    let opts = |ca: &Path| DownloadOptions {
        max_size: 1 << 20,
        timeout: Duration::from_secs(30),
        ca_pem: Some(std::fs::read(ca).unwrap()),
    };

    let body = fetch(&url, &opts(&pki.ca)).unwrap();
    assert_eq!(body, payload);

    match fetch(&url, &opts(&pki.rogue_cert)) {
        Err(DownloadError::Transport { reason, .. }) => {
            assert!(reason.to_lowercase().contains("certificate"), "{reason}")
        }
        other => panic!("an untrusted server was accepted: {other:?}"),
    }
    // Over the limit through TLS too (s_server announces no length).
    let small = DownloadOptions {
        max_size: 1000,
        ..opts(&pki.ca)
    };
    assert!(matches!(
        fetch(&url, &small),
        Err(DownloadError::TooLarge { limit: 1000, .. })
    ));
}
