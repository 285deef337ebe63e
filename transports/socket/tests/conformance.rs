//! The transport conformance suite against the real listeners: unix, TCP on loopback, and TCP
//! with mutual TLS (certificates from the openssl CLI); plus the TLS refusal cases, an
//! `openssl s_client` peer, and the accept loop's bounds: stalled TLS handshakes never lock the
//! real host out, the unix listener caps its connections and serves a burst of them.
#![cfg(unix)]

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use guestd_core::Transport;
use guestd_transport_conformance::pki::TestPki;
use guestd_transport_conformance::{Conn, Connector, Kit, Peer, conformance_suite};
use guestd_transport_socket::{TcpConfig, TcpTransport, UnixTransport};
use guestd_transport_tls::RustlsServer;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::pem::PemObject;
use serde_json::json;
use tokio_rustls::TlsConnector;

fn unix_listener(kit: &mut Kit) -> Connector {
    let path = kit.dir().join("guestd.sock");
    let t = UnixTransport::bind(&path, kit.limits())
        .expect("bind")
        .with_options(kit.options());
    kit.spawn(Box::new(t));
    Box::new(move || {
        let path = path.clone();
        Box::pin(async move { Ok(Box::new(tokio::net::UnixStream::connect(path).await?) as Conn) })
    })
}

fn tcp_plain(kit: &mut Kit) -> Connector {
    let config = TcpConfig {
        allow_unauthenticated_loopback: true,
        ..TcpConfig::default()
    };
    let t = TcpTransport::bind("127.0.0.1:0", &config, kit.options()).expect("bind");
    let addr = t.local_addr();
    kit.spawn(Box::new(t));
    Box::new(move || {
        Box::pin(async move { Ok(Box::new(tokio::net::TcpStream::connect(addr).await?) as Conn) })
    })
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certs(path: &Path) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_file_iter(path)
        .expect("pem")
        .collect::<Result<_, _>>()
        .expect("certs")
}

/// A host-side TLS client: trusts the test CA, presents `identity` (cert, key) if given.
fn tls_client(pki: &TestPki, identity: Option<(&Path, &Path)>) -> TlsConnector {
    let mut roots = RootCertStore::empty();
    for c in certs(&pki.ca) {
        roots.add(c).expect("CA");
    }
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots);
    let config = match identity {
        Some((cert, key)) => builder
            .with_client_auth_cert(certs(cert), PrivateKeyDer::from_pem_file(key).expect("key"))
            .expect("client auth"),
        None => builder.with_no_client_auth(),
    };
    TlsConnector::from(Arc::new(config))
}

fn tls_config(pki: &TestPki) -> TcpConfig {
    TcpConfig {
        tls_cert: Some(pki.server_cert.clone()),
        tls_key: Some(pki.server_key.clone()),
        tls_client_ca: Some(pki.ca.clone()),
        ..TcpConfig::default()
    }
}

/// A TCP listener serving mutual TLS through rustls (what guestd-tls links).
fn tls_bind(
    target: &str,
    config: &TcpConfig,
    kit: &Kit,
) -> Result<TcpTransport, guestd_core::TransportError> {
    TcpTransport::bind_with_tls(target, config, kit.options(), Some(&RustlsServer))
}

/// A TLS listener on loopback and a connector presenting `identity`.
fn tls_start(kit: &Kit, config: &TcpConfig, connector: TlsConnector) -> Connector {
    let t = tls_bind("127.0.0.1:0", config, kit).expect("bind TLS");
    assert!(t.describe().contains("mutual TLS"));
    let addr = t.local_addr();
    kit.spawn(Box::new(t));
    Box::new(move || {
        let connector = connector.clone();
        Box::pin(async move {
            let tcp = tokio::net::TcpStream::connect(addr).await?;
            let name = ServerName::IpAddress(addr.ip().into());
            Ok(Box::new(connector.connect(name, tcp).await?) as Conn)
        })
    })
}

fn tcp_tls(kit: &mut Kit) -> Connector {
    let pki = TestPki::generate(kit.dir());
    let connector = tls_client(&pki, Some((&pki.client_cert, &pki.client_key)));
    tls_start(kit, &tls_config(&pki), connector)
}

mod unix {
    use super::*;
    conformance_suite!(unix_listener);
}

mod tcp {
    use super::*;
    conformance_suite!(tcp_plain);
}

mod tls {
    use super::*;
    conformance_suite!(tcp_tls);
}

/// A client whose certificate is not accepted gets no reply: the handshake (or, with TLS 1.3,
/// the first read) fails.
async fn assert_refused(connector: &mut Connector) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut conn) = connector().await else {
        return; // refused during the handshake
    };
    let _ = conn
        .write_all(b"{\"id\":1,\"name\":\"echo\",\"value\":\"x\"}\n")
        .await;
    let _ = conn.flush().await;
    // Whatever comes back (a TLS alert to a plain client) must not be a reply, and the
    // connection must end.
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), async {
        let mut chunk = [0u8; 1024];
        while let Ok(n) = conn.read(&mut chunk).await {
            if n == 0 {
                break;
            }
            got.extend_from_slice(&chunk[..n]);
        }
    })
    .await;
    assert!(read.is_ok(), "the refused connection stayed open");
    assert!(
        !String::from_utf8_lossy(&got).contains("returncode"),
        "a client without an accepted certificate was answered"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_refuses_clients_without_an_accepted_certificate() {
    let kit = Kit::new();
    let pki = TestPki::generate(kit.dir());
    let config = tls_config(&pki);
    assert_refused(&mut tls_start(&kit, &config, tls_client(&pki, None))).await;
    let rogue = tls_client(&pki, Some((&pki.rogue_cert, &pki.rogue_key)));
    assert_refused(&mut tls_start(&kit, &config, rogue)).await;
    // Plain TCP to a TLS listener gets nothing either.
    let mut plain: Connector = {
        let t = tls_bind("127.0.0.1:0", &config, &kit).expect("bind");
        let addr = t.local_addr();
        kit.spawn(Box::new(t));
        Box::new(move || {
            Box::pin(
                async move { Ok(Box::new(tokio::net::TcpStream::connect(addr).await?) as Conn) },
            )
        })
    };
    assert_refused(&mut plain).await;
    // The accepted client still works on the same configuration.
    let good = tls_client(&pki, Some((&pki.client_cert, &pki.client_key)));
    let mut c = tls_start(&kit, &config, good);
    let mut peer = Peer::connect(&mut c).await;
    peer.request(Some(json!(1)), "echo", json!("ok")).await;
    assert_eq!(peer.reply().await.reply.message, "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_pinned_client_certificate() {
    let kit = Kit::new();
    let pki = TestPki::generate(kit.dir());
    // Only the rogue (self-signed) certificate is pinned; no CA.
    let config = TcpConfig {
        tls_client_ca: None,
        tls_client_cert: Some(pki.rogue_cert.clone()),
        ..tls_config(&pki)
    };
    let pinned = tls_client(&pki, Some((&pki.rogue_cert, &pki.rogue_key)));
    let mut c = tls_start(&kit, &config, pinned);
    let mut peer = Peer::connect(&mut c).await;
    peer.request(Some(json!("p")), "echo", json!("pinned"))
        .await;
    assert_eq!(peer.reply().await.reply.message, "pinned");
    // A CA-signed client is not the pinned one, and no CA is configured.
    let other = tls_client(&pki, Some((&pki.client_cert, &pki.client_key)));
    assert_refused(&mut tls_start(&kit, &config, other)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_non_loopback_needs_mutual_tls() {
    let kit = Kit::new();
    let pki = TestPki::generate(kit.dir());
    let err = TcpTransport::bind("0.0.0.0:0", &TcpConfig::default(), kit.options()).unwrap_err();
    assert!(err.to_string().contains("refusing to listen"), "{err}");
    let t = tls_bind("0.0.0.0:0", &tls_config(&pki), &kit)
        .expect("mutual TLS on a non-loopback address is allowed");
    assert!(t.describe().contains("mutual TLS"));
    let broken = TcpConfig {
        tls_key: Some(pki.rogue_key.clone()),
        ..tls_config(&pki)
    };
    let err = tls_bind("127.0.0.1:0", &broken, &kit).unwrap_err();
    assert!(err.to_string().contains("certificate/key pair"), "{err}");
}

/// The openssl CLI as the host: a real TLS peer, not our own client code.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::disallowed_methods)] // drives the openssl CLI
async fn tls_openssl_s_client_peer() {
    let kit = Kit::new();
    let pki = TestPki::generate(kit.dir());
    let t = tls_bind("127.0.0.1:0", &tls_config(&pki), &kit).expect("bind");
    let addr = t.local_addr();
    kit.spawn(Box::new(t));
    let pki2 = pki.clone();
    let line = tokio::task::spawn_blocking(move || {
        let mut child = std::process::Command::new("openssl")
            .args(["s_client", "-quiet", "-verify_return_error", "-connect"])
            .arg(addr.to_string())
            .arg("-CAfile")
            .arg(&pki2.ca)
            .arg("-cert")
            .arg(&pki2.client_cert)
            .arg("-key")
            .arg(&pki2.client_key)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("openssl s_client (apt-get install openssl)");
        let mut stdin = child.stdin.take().expect("stdin");
        stdin
            .write_all(b"{\"id\":\"ossl\",\"name\":\"echo\",\"value\":\"via openssl\"}\n")
            .expect("write");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("read");
        let _ = child.kill();
        let _ = child.wait();
        line
    });
    let line = tokio::time::timeout(Duration::from_secs(30), line)
        .await
        .expect("openssl answered in time")
        .expect("join");
    assert_eq!(
        line.trim(),
        r#"{"id":"ossl","message":"via openssl","returncode":"0"}"#
    );
}

/// Many peers that open a TCP connection to the TLS listener and never start the handshake
/// (more than the served slots and the handshake pool) do not keep the real host out: the real
/// host's handshake pushes out the oldest stalled one, completes, and gets a served slot, while
/// the stalled ones hold none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_tls_handshakes_never_lock_the_host_out() {
    use tokio::io::AsyncReadExt;
    let kit = Kit::new();
    let pki = TestPki::generate(kit.dir());
    let config = TcpConfig {
        max_connections: 2,
        ..tls_config(&pki)
    };
    let t = tls_bind("127.0.0.1:0", &config, &kit).expect("bind");
    let addr = t.local_addr();
    kit.spawn(Box::new(t));
    let stalled_count = guestd_transport_socket::tcp::DEFAULT_MAX_HANDSHAKES + 8;
    let mut stalled = Vec::new();
    for _ in 0..stalled_count {
        stalled.push(tokio::net::TcpStream::connect(addr).await.expect("connect"));
    }
    let connector = tls_client(&pki, Some((&pki.client_cert, &pki.client_key)));
    for round in 0..3 {
        let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let name = ServerName::IpAddress(addr.ip().into());
        let tls = tokio::time::timeout(Duration::from_secs(10), connector.connect(name, tcp))
            .await
            .expect("the handshake is not held up by the stalled peers")
            .expect("handshake");
        let mut peer = Peer::from_conn(Box::new(tls));
        peer.request(Some(json!(round)), "echo", json!("through"))
            .await;
        assert_eq!(peer.reply().await.reply.message, "through");
        // A second real client at once: the stalled peers hold no served slot either.
        stalled.push(tokio::net::TcpStream::connect(addr).await.expect("connect"));
    }
    // The oldest stalled peers were pushed out, the rest end at the handshake deadline.
    let mut closed = 0;
    for mut s in stalled {
        let mut buf = [0u8; 16];
        let read = tokio::time::timeout(
            guestd_transport_socket::tcp::HANDSHAKE_TIMEOUT + Duration::from_secs(5),
            s.read(&mut buf),
        )
        .await;
        if matches!(read, Ok(Ok(0)) | Ok(Err(_))) {
            closed += 1;
        }
    }
    assert_eq!(closed, stalled_count + 3, "every stalled peer is closed");
}

/// The unix listener goes through the same capped loop: one client more than the cap is
/// refused (closed without a reply) while the others are served, and a slot frees when a
/// client leaves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unix_connections_are_capped() {
    let kit = Kit::new();
    let path = kit.dir().join("capped.sock");
    let t = UnixTransport::bind(&path, kit.limits())
        .expect("bind")
        .with_options(kit.options())
        .with_max_connections(3);
    kit.spawn(Box::new(t));
    let connect = || {
        let path = path.clone();
        async move {
            Peer::from_conn(Box::new(
                tokio::net::UnixStream::connect(path).await.unwrap(),
            ))
        }
    };
    let mut served = Vec::new();
    for i in 0..3 {
        let mut peer = connect().await;
        peer.request(Some(json!(i)), "echo", json!("in")).await;
        assert_eq!(peer.reply().await.reply.message, "in");
        served.push(peer);
    }
    let mut extra = connect().await;
    extra
        .try_send(b"{\"id\":9,\"name\":\"echo\",\"value\":\"x\"}\n")
        .await;
    assert!(
        extra.closed_within(Duration::from_secs(10)).await,
        "a fourth client was served past the cap of 3"
    );
    drop(served.pop());
    // The freed slot is taken by the next client (once the server saw the close).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let mut peer = connect().await;
        peer.try_send(b"{\"id\":1,\"name\":\"echo\",\"value\":\"again\"}\n")
            .await;
        match tokio::time::timeout(Duration::from_secs(2), peer.read_line()).await {
            Ok(Some(got)) => {
                assert_eq!(got.reply.message, "again");
                break;
            }
            _ => assert!(
                tokio::time::Instant::now() < deadline,
                "the slot never freed"
            ),
        }
    }
    for peer in &mut served {
        peer.request(Some(json!("still")), "echo", json!("here"))
            .await;
        assert_eq!(peer.reply().await.reply.message, "here");
    }
}

/// A burst of clients connecting at once (more than the handshake pool holds) is served, not
/// evicted as if they were stalled handshakes: a unix socket has no handshake to wait for.
#[tokio::test]
async fn a_burst_of_unix_clients_is_served() {
    let kit = Kit::new();
    let path = kit.dir().join("burst.sock");
    let t = UnixTransport::bind(&path, kit.limits())
        .expect("bind")
        .with_options(kit.options())
        .with_max_connections(100);
    kit.spawn(Box::new(t));
    // Blocking connects on the runtime's only thread: all 100 wait in the backlog before the
    // accept loop runs again.
    let mut peers = Vec::new();
    for _ in 0..100 {
        let conn = std::os::unix::net::UnixStream::connect(&path).unwrap();
        conn.set_nonblocking(true).unwrap();
        let conn = tokio::net::UnixStream::from_std(conn).unwrap();
        peers.push(Peer::from_conn(Box::new(conn)));
    }
    for (i, peer) in peers.iter_mut().enumerate() {
        peer.request(Some(json!(i)), "echo", json!(format!("in {i}")))
            .await;
    }
    for (i, peer) in peers.iter_mut().enumerate() {
        assert_eq!(peer.reply().await.reply.message, format!("in {i}"));
    }
}

#[tokio::test]
async fn plain_tcp_needs_the_explicit_opt_in() {
    let kit = Kit::new();
    let err = TcpTransport::bind("127.0.0.1:0", &TcpConfig::default(), kit.options()).unwrap_err();
    assert!(
        err.to_string().contains("allow_unauthenticated_loopback"),
        "{err}"
    );
}
