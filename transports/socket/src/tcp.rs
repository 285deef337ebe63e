//! TCP listener (`tcp:HOST:PORT`) for hosts that reach the guest over a private network.
//!
//! TCP needs mutual TLS: the server certificate and key, plus a CA the host's client
//! certificate must chain to and/or pinned client certificates accepted exactly. Without that,
//! guestd refuses to start the listener and says which settings are missing. The TLS itself is
//! a [`TlsServer`] the binary hands in (`guestd-transport-tls`, rustls), so that only binaries
//! that serve TLS link a TLS library. The handshake has its own short deadline and pool and
//! holds no served slot (see `accept.rs`).
//!
//! Plain TCP is possible only on a loopback address and only with `[tcp]
//! allow_unauthenticated_loopback = true`, which guestd warns about at start-up: every local
//! account can then act as the host. A unix socket (mode 0600) is the local channel that needs
//! no such trust.

use std::fmt;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Arc;

use guestd_core::stream::StreamOptions;
use guestd_core::{BoxFuture, Dispatcher, Shutdown, Transport, TransportError};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tracing::warn;

use crate::accept::{Acceptor, DEFAULT_MAX_CONNECTIONS, ListenerSettings, serve_listener};
pub use crate::accept::{DEFAULT_MAX_HANDSHAKES, HANDSHAKE_TIMEOUT};

/// `[tcp]` in the daemon config. All paths are PEM files.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TcpConfig {
    /// Server certificate chain (leaf first).
    pub tls_cert: Option<PathBuf>,
    /// Server private key (PKCS#8, PKCS#1 or SEC1).
    pub tls_key: Option<PathBuf>,
    /// CA certificate(s) a client certificate must chain to.
    pub tls_client_ca: Option<PathBuf>,
    /// Client certificate(s) accepted exactly (pinned), with or without a CA.
    pub tls_client_cert: Option<PathBuf>,
    /// Simultaneous connections; more are refused.
    pub max_connections: usize,
    /// Serve plain TCP on a loopback address, with no authentication at all (every local
    /// account can then act as the host). Off by default; guestd warns at start-up when on.
    pub allow_unauthenticated_loopback: bool,
}

impl Default for TcpConfig {
    fn default() -> Self {
        Self {
            tls_cert: None,
            tls_key: None,
            tls_client_ca: None,
            tls_client_cert: None,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            allow_unauthenticated_loopback: false,
        }
    }
}

impl TcpConfig {
    /// Whether any TLS setting is given (a TCP listener then serves mutual TLS only).
    pub fn tls_requested(&self) -> bool {
        self.tls_cert.is_some()
            || self.tls_key.is_some()
            || self.tls_client_ca.is_some()
            || self.tls_client_cert.is_some()
    }
}

/// Mutual TLS for TCP listeners, supplied by the binary (see the module documentation).
pub trait TlsServer: Send + Sync + 'static {
    /// The acceptor for `config`, which asked for TLS; its errors are configuration errors
    /// naming the setting or file at fault.
    fn acceptor(&self, config: &TcpConfig) -> Result<Arc<dyn TlsAccept>, TransportError>;
}

/// Runs the server side of one TLS handshake.
pub trait TlsAccept: Send + Sync + 'static {
    fn accept(&self, stream: TcpStream) -> BoxFuture<'static, io::Result<Box<dyn TlsStream>>>;
}

/// An established TLS connection.
pub trait TlsStream: AsyncRead + AsyncWrite + Unpin + Send + 'static {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> TlsStream for T {}

/// A bound TCP listener, plain (loopback) or mutual TLS.
pub struct TcpTransport {
    listener: TcpListener,
    addr: SocketAddr,
    tls: Option<Arc<dyn TlsAccept>>,
    options: StreamOptions,
    max_connections: usize,
}

impl fmt::Debug for TcpTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TcpTransport")
            .field("addr", &self.addr)
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

impl TcpTransport {
    /// Bind `HOST:PORT` (`127.0.0.1:7000`, `[::1]:7000`, `10.0.0.5:7000`) without TLS support:
    /// plain TCP on loopback when allowed, else an error. Must run inside a tokio runtime.
    pub fn bind(
        target: &str,
        config: &TcpConfig,
        options: StreamOptions,
    ) -> Result<Self, TransportError> {
        Self::bind_with_tls(target, config, options, None)
    }

    /// Bind `HOST:PORT`, serving mutual TLS through `tls` when the configuration asks for it.
    pub fn bind_with_tls(
        target: &str,
        config: &TcpConfig,
        options: StreamOptions,
        tls: Option<&dyn TlsServer>,
    ) -> Result<Self, TransportError> {
        let addr = resolve(target)?;
        let tls = if config.tls_requested() {
            let server = tls.ok_or_else(|| {
                TransportError::Config(format!(
                    "tcp:{target} asks for mutual TLS, which this binary does not link \
                     (guestd serves TLS through guestd-tls)"
                ))
            })?;
            Some(server.acceptor(config)?)
        } else if !addr.ip().is_loopback() {
            return Err(TransportError::Config(format!(
                "refusing to listen on tcp:{target}: {} is not a loopback address and mutual TLS \
                 is not configured; set [tcp] tls_cert, tls_key and tls_client_ca (or \
                 tls_client_cert)",
                addr.ip()
            )));
        } else if !config.allow_unauthenticated_loopback {
            return Err(TransportError::Config(format!(
                "refusing to listen on tcp:{target} without authentication (any local user could \
                 act as the host): configure mutual TLS ([tcp] tls_cert, tls_key and \
                 tls_client_ca or tls_client_cert), use a unix socket (unix:PATH) instead, or \
                 accept the risk with [tcp] allow_unauthenticated_loopback = true"
            )));
        } else {
            None
        };
        let std_listener = std::net::TcpListener::bind(addr)
            .map_err(TransportError::io(format!("bind tcp:{addr}")))?;
        std_listener
            .set_nonblocking(true)
            .map_err(TransportError::io("set the TCP listener non-blocking"))?;
        let listener = TcpListener::from_std(std_listener)
            .map_err(TransportError::io("register the TCP listener"))?;
        let addr = listener.local_addr().unwrap_or(addr);
        if tls.is_none() {
            warn!(
                "tcp:{addr} accepts unauthenticated connections: every local account can act as \
                 the host ([tcp] allow_unauthenticated_loopback = true)"
            );
        }
        Ok(Self {
            listener,
            addr,
            tls,
            options,
            max_connections: config.max_connections,
        })
    }

    /// The bound address (the real port when bound to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

fn resolve(target: &str) -> Result<SocketAddr, TransportError> {
    let bad = |why: String| {
        TransportError::Config(format!(
            "invalid TCP address '{target}' ({why}); expected HOST:PORT, e.g. 127.0.0.1:7000"
        ))
    };
    if target.rsplit_once(':').is_none() {
        return Err(bad("no port".into()));
    }
    let mut addrs = target.to_socket_addrs().map_err(|e| bad(e.to_string()))?;
    addrs.next().ok_or_else(|| bad("no address".into()))
}

struct Listener(TcpListener);

impl Acceptor for Listener {
    type Stream = TcpStream;
    async fn accept(&mut self) -> io::Result<Option<(TcpStream, String)>> {
        let (stream, peer) = self.0.accept().await?;
        let _ = stream.set_nodelay(true);
        Ok(Some((stream, peer.to_string())))
    }
}

impl Transport for TcpTransport {
    fn describe(&self) -> String {
        let tls = if self.tls.is_some() {
            " (mutual TLS)"
        } else {
            ""
        };
        format!("tcp:{}{tls}", self.addr)
    }

    fn serve(
        self: Box<Self>,
        dispatcher: Arc<Dispatcher>,
        shutdown: Shutdown,
    ) -> BoxFuture<'static, Result<(), TransportError>> {
        let settings = ListenerSettings::new(
            format!("tcp:{}", self.addr),
            self.options,
            self.max_connections,
        );
        let acceptor = Listener(self.listener);
        match self.tls {
            None => Box::pin(serve_listener(
                acceptor,
                |s: TcpStream| async move { Ok(s) },
                settings,
                dispatcher,
                shutdown,
            )),
            Some(tls) => Box::pin(serve_listener(
                acceptor,
                move |s: TcpStream| tls.accept(s),
                settings,
                dispatcher,
                shutdown,
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bind(target: &str, config: &TcpConfig) -> Result<TcpTransport, TransportError> {
        TcpTransport::bind(target, config, StreamOptions::default())
    }

    #[tokio::test]
    async fn plain_tcp_only_on_loopback_and_only_when_allowed() {
        let msg = bind("127.0.0.1:0", &TcpConfig::default())
            .unwrap_err()
            .to_string();
        assert!(msg.contains("without authentication"), "{msg}");
        assert!(
            msg.contains("allow_unauthenticated_loopback = true"),
            "{msg}"
        );
        assert!(msg.contains("unix:PATH"), "{msg}");
        let allowed = TcpConfig {
            allow_unauthenticated_loopback: true,
            ..TcpConfig::default()
        };
        let t = bind("127.0.0.1:0", &allowed).unwrap();
        assert!(t.describe().starts_with("tcp:127.0.0.1:"));
        assert!(!t.describe().contains("TLS"));
        for config in [TcpConfig::default(), allowed] {
            let msg = bind("0.0.0.0:0", &config).unwrap_err().to_string();
            assert!(msg.contains("not a loopback address"), "{msg}");
            assert!(msg.contains("tls_client_ca"), "{msg}");
        }
    }

    #[tokio::test]
    async fn bad_addresses_are_clear() {
        for bad in ["7000", "nohost:", "300.1.1.1:80", "127.0.0.1:99999"] {
            let msg = bind(bad, &TcpConfig::default()).unwrap_err().to_string();
            assert!(msg.contains("invalid TCP address"), "{bad}: {msg}");
        }
    }

    #[tokio::test]
    async fn tls_settings_need_a_binary_that_links_tls() {
        let config = TcpConfig {
            tls_cert: Some("/etc/guestd/tls/server.pem".into()),
            ..TcpConfig::default()
        };
        let msg = bind("127.0.0.1:0", &config).unwrap_err().to_string();
        assert!(msg.contains("asks for mutual TLS"), "{msg}");
        assert!(msg.contains("guestd-tls"), "{msg}");
    }
}
