//! TCP listener (`tcp:HOST:PORT`) for hosts that reach the guest over a private network.
//!
//! TCP needs mutual TLS (rustls): the server certificate and key, plus a CA the host's client
//! certificate must chain to and/or pinned client certificates accepted exactly. Without that,
//! guestd refuses to start the listener and says which settings are missing; a client without
//! an accepted certificate is refused during the handshake (and logged). The handshake has its
//! own short deadline and pool and holds no served slot (see `accept.rs`).
//!
//! Plain TCP is possible only on a loopback address and only with `[tcp]
//! allow_unauthenticated_loopback = true`, which guestd warns about at start-up: every local
//! account can then act as the host. A unix socket (mode 0600) is the local channel that needs
//! no such trust.

use std::fmt;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use guestd_core::stream::StreamOptions;
use guestd_core::{BoxFuture, Dispatcher, Shutdown, Transport, TransportError};
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use serde::{Deserialize, Serialize};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
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
    fn tls_requested(&self) -> bool {
        self.tls_cert.is_some()
            || self.tls_key.is_some()
            || self.tls_client_ca.is_some()
            || self.tls_client_cert.is_some()
    }
}

/// A bound TCP listener, plain (loopback) or mutual TLS.
pub struct TcpTransport {
    listener: TcpListener,
    addr: SocketAddr,
    tls: Option<TlsAcceptor>,
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
    /// Bind `HOST:PORT` (`127.0.0.1:7000`, `[::1]:7000`, `10.0.0.5:7000`). Must run inside a
    /// tokio runtime.
    pub fn bind(
        target: &str,
        config: &TcpConfig,
        options: StreamOptions,
    ) -> Result<Self, TransportError> {
        let addr = resolve(target)?;
        let tls = if config.tls_requested() {
            Some(TlsAcceptor::from(Arc::new(server_config(config)?)))
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

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn tls_error(what: &str, path: &Path, why: impl fmt::Display) -> TransportError {
    TransportError::Config(format!("TCP TLS {what} {}: {why}", path.display()))
}

fn load_certs(what: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TransportError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| tls_error(what, path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| tls_error(what, path, e))?;
    if certs.is_empty() {
        return Err(tls_error(what, path, "no PEM certificate in the file"));
    }
    Ok(certs)
}

/// The rustls server configuration for `config` (which asked for TLS).
pub fn server_config(config: &TcpConfig) -> Result<ServerConfig, TransportError> {
    let (Some(cert), Some(key)) = (&config.tls_cert, &config.tls_key) else {
        return Err(TransportError::Config(
            "TCP TLS needs both [tcp] tls_cert and tls_key".into(),
        ));
    };
    if config.tls_client_ca.is_none() && config.tls_client_cert.is_none() {
        return Err(TransportError::Config(
            "TCP TLS must authenticate the host: set [tcp] tls_client_ca or tls_client_cert \
             (mutual TLS)"
                .into(),
        ));
    }
    let chain = load_certs("certificate", cert)?;
    // The key is a secret: the error says which file, never its content.
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| tls_error("key", key, e))?;
    let provider = provider();
    let ca = match &config.tls_client_ca {
        None => None,
        Some(path) => {
            let mut roots = RootCertStore::empty();
            for cert in load_certs("client CA", path)? {
                roots
                    .add(cert)
                    .map_err(|e| tls_error("client CA", path, e))?;
            }
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider))
                    .build()
                    .map_err(|e| tls_error("client CA", path, e))?;
            Some(verifier)
        }
    };
    let pinned = match &config.tls_client_cert {
        None => Vec::new(),
        Some(path) => load_certs("pinned client certificate", path)?,
    };
    let verifier = Arc::new(ClientVerifier {
        ca,
        pinned,
        algorithms: provider.signature_verification_algorithms,
    });
    ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TransportError::Config(format!("TCP TLS: {e}")))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| tls_error("certificate/key pair", cert, e))
}

/// Accepts a client certificate that is pinned, or that chains to the configured CA.
struct ClientVerifier {
    ca: Option<Arc<dyn ClientCertVerifier>>,
    pinned: Vec<CertificateDer<'static>>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl fmt::Debug for ClientVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientVerifier")
            .field("ca", &self.ca.is_some())
            .field("pinned", &self.pinned.len())
            .finish()
    }
}

impl ClientCertVerifier for ClientVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.ca.as_ref().map_or(&[], |ca| ca.root_hint_subjects())
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        if self
            .pinned
            .iter()
            .any(|p| p.as_ref() == end_entity.as_ref())
        {
            return Ok(ClientCertVerified::assertion());
        }
        match &self.ca {
            Some(ca) => ca.verify_client_cert(end_entity, intermediates, now),
            None => {
                warn!("TLS client certificate is not the pinned one");
                Err(rustls::Error::InvalidCertificate(
                    rustls::CertificateError::ApplicationVerificationFailure,
                ))
            }
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.algorithms.supported_schemes()
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
    async fn tls_without_client_auth_is_refused() {
        let config = TcpConfig {
            tls_cert: Some("/nonexistent/cert.pem".into()),
            tls_key: Some("/nonexistent/key.pem".into()),
            ..TcpConfig::default()
        };
        let msg = bind("0.0.0.0:0", &config).unwrap_err().to_string();
        assert!(msg.contains("must authenticate the host"), "{msg}");
        let config = TcpConfig {
            tls_client_ca: Some("/nonexistent/ca.pem".into()),
            ..TcpConfig::default()
        };
        let msg = bind("0.0.0.0:0", &config).unwrap_err().to_string();
        assert!(msg.contains("both [tcp] tls_cert and tls_key"), "{msg}");
    }
}
