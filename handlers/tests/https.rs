//! HTTPS download against a real TLS peer: `openssl s_server -WWW` on 127.0.0.1 with a leaf
//! certificate issued by a test CA made with the openssl CLI. The configured CA bundle is the
//! only trust: the right CA downloads, another CA is refused.
#![cfg(unix)]
#![allow(clippy::disallowed_methods)] // drives the openssl CLI as the peer

use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use guestd_handlers::update::download::{DownloadError, DownloadOptions, fetch};

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| {
            panic!("this test needs the openssl CLI (apt-get install openssl): {e}")
        });
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `name.key` + `name.pem`: a CA (self-signed).
fn make_ca(dir: &Path, name: &str) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.pem"),
            "-days",
            "2",
            "-subj",
            &format!("/CN=guestd test {name}"),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    );
}

/// `leaf.key` + `leaf.pem` for 127.0.0.1, issued by `ca`.
fn make_leaf(dir: &Path, ca: &str) {
    std::fs::write(
        dir.join("leaf.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            "leaf.key",
            "-out",
            "leaf.csr",
            "-subj",
            "/CN=127.0.0.1",
        ],
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "leaf.csr",
            "-CA",
            &format!("{ca}.pem"),
            "-CAkey",
            &format!("{ca}.key"),
            "-CAcreateserial",
            "-out",
            "leaf.pem",
            "-days",
            "2",
            "-extfile",
            "leaf.ext",
        ],
    );
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `openssl s_server -WWW` serving `dir` on a free loopback port.
fn s_server(dir: &Path) -> (Server, u16) {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new("openssl")
        .args([
            "s_server", "-quiet", "-WWW", "-cert", "leaf.pem", "-key", "leaf.key",
        ])
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
    make_ca(d.path(), "ca");
    make_ca(d.path(), "other");
    make_leaf(d.path(), "ca");
    let payload: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(d.path().join("update.tar.gz"), &payload).unwrap();
    let (_server, port) = s_server(d.path());
    let url = format!("https://127.0.0.1:{port}/update.tar.gz");
    let opts = |ca: &str| DownloadOptions {
        max_size: 1 << 20,
        timeout: Duration::from_secs(30),
        ca_pem: Some(std::fs::read(d.path().join(format!("{ca}.pem"))).unwrap()),
    };

    let body = fetch(&url, &opts("ca")).unwrap();
    assert_eq!(body, payload);

    match fetch(&url, &opts("other")) {
        Err(DownloadError::Transport { reason, .. }) => {
            assert!(reason.to_lowercase().contains("certificate"), "{reason}")
        }
        other => panic!("an untrusted server was accepted: {other:?}"),
    }
    // Over the limit through TLS too (s_server announces no length).
    let small = DownloadOptions {
        max_size: 1000,
        ..opts("ca")
    };
    assert!(matches!(
        fetch(&url, &small),
        Err(DownloadError::TooLarge { limit: 1000, .. })
    ));
}
