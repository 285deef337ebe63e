//! guestd-transport-tls: mutual TLS for `tcp:` listeners (rustls with ring).
//!
//! Only the binaries that serve TLS link it: `guestd-tls` (which `guestd` re-executes when a
//! TCP listener asks for TLS, so the resident `guestd` of every other guest carries no TLS code)
//! and `guestd.exe`. They hand [`RustlsServer`] to the daemon, which gives it to
//! `guestd_transport_socket::TcpTransport::bind_with_tls`.
//!
//! The server certificate and key, plus a CA the host's client certificate must chain to and/or
//! pinned client certificates accepted exactly; a client without an accepted certificate is
//! refused during the handshake (and logged).

use std::fmt;
use std::io;
use std::path::Path;
use std::sync::Arc;

use guestd_core::{BoxFuture, TransportError};
use guestd_transport_socket::tcp::{TcpConfig, TlsAccept, TlsServer, TlsStream};
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tracing::warn;

/// The rustls implementation of the TCP listener's TLS.
#[derive(Debug, Clone, Copy, Default)]
pub struct RustlsServer;

impl TlsServer for RustlsServer {
    fn acceptor(&self, config: &TcpConfig) -> Result<Arc<dyn TlsAccept>, TransportError> {
        Ok(Arc::new(Acceptor(TlsAcceptor::from(Arc::new(
            server_config(config)?,
        )))))
    }
}

struct Acceptor(TlsAcceptor);

impl TlsAccept for Acceptor {
    fn accept(&self, stream: TcpStream) -> BoxFuture<'static, io::Result<Box<dyn TlsStream>>> {
        let accept = self.0.accept(stream);
        Box::pin(async move { Ok(Box::new(accept.await?) as Box<dyn TlsStream>) })
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
    use guestd_core::Transport as _;
    use guestd_core::stream::StreamOptions;
    use guestd_transport_socket::TcpTransport;

    fn bind(target: &str, config: &TcpConfig) -> Result<TcpTransport, TransportError> {
        TcpTransport::bind_with_tls(
            target,
            config,
            StreamOptions::default(),
            Some(&RustlsServer),
        )
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

    #[tokio::test]
    async fn plain_loopback_needs_no_tls() {
        let config = TcpConfig {
            allow_unauthenticated_loopback: true,
            ..TcpConfig::default()
        };
        let t = bind("127.0.0.1:0", &config).unwrap();
        assert!(!t.describe().contains("TLS"));
    }
}
