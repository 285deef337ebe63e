//! `tcp:HOST:PORT` with mutual TLS: guestctl checks guestd's certificate against `--tls-ca` (and
//! the name or IP in the spec) and presents `--tls-cert`/`--tls-key`.

use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};
use rustls_pki_types::pem::PemObject;

use crate::stream::{Duplex, StreamClient, connect_tcp_stream};
use crate::{ClientError, TlsFiles};

type TlsStream = StreamOwned<ClientConnection, TcpStream>;

impl Duplex for TlsStream {
    fn set_read_timeout(&self, timeout: Option<Duration>) -> std::io::Result<()> {
        self.sock.set_read_timeout(timeout)
    }
}

fn certs(what: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, ClientError> {
    let err =
        |e: &dyn std::fmt::Display| ClientError::Tls(format!("{what} {}: {e}", path.display()));
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| err(&e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(&e))?;
    if certs.is_empty() {
        return Err(err(&"no PEM certificate in the file"));
    }
    Ok(certs)
}

fn config(files: &TlsFiles) -> Result<ClientConfig, ClientError> {
    let ca = files.ca.as_ref().ok_or_else(|| {
        ClientError::Tls("--tls-ca is needed to check the guest's certificate".into())
    })?;
    let mut roots = RootCertStore::empty();
    for cert in certs("--tls-ca", ca)? {
        roots
            .add(cert)
            .map_err(|e| ClientError::Tls(format!("--tls-ca {}: {e}", ca.display())))?;
    }
    let builder =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| ClientError::Tls(e.to_string()))?
            .with_root_certificates(roots);
    match (&files.cert, &files.key) {
        (Some(cert), Some(key)) => {
            let chain = certs("--tls-cert", cert)?;
            // The key's content never goes into an error message.
            let key = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| ClientError::Tls(format!("--tls-key {}: {e}", key.display())))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| ClientError::Tls(format!("--tls-cert/--tls-key: {e}")))
        }
        (None, None) => Err(ClientError::Tls(
            "guestd requires a client certificate: give --tls-cert and --tls-key".into(),
        )),
        _ => Err(ClientError::Tls(
            "--tls-cert and --tls-key go together".into(),
        )),
    }
}

/// Connect, complete the handshake (so certificate problems are reported as such), resync.
pub(crate) fn connect(
    target: &str,
    files: &TlsFiles,
    timeout: Duration,
) -> Result<StreamClient, ClientError> {
    let config = Arc::new(config(files)?);
    let host = target
        .rsplit_once(':')
        .map(|(h, _)| h.trim_start_matches('[').trim_end_matches(']'))
        .unwrap_or(target);
    let name = ServerName::try_from(host.to_owned())
        .map_err(|e| ClientError::Spec(format!("tcp:{target}: bad server name: {e}")))?;
    let mut sock = connect_tcp_stream(target, timeout)?;
    sock.set_read_timeout(Some(timeout))?;
    let mut conn =
        ClientConnection::new(config, name).map_err(|e| ClientError::Tls(e.to_string()))?;
    while conn.is_handshaking() {
        conn.complete_io(&mut sock)
            .map_err(|e| ClientError::Tls(format!("handshake with tcp:{target} failed: {e}")))?;
    }
    StreamClient::new(Box::new(StreamOwned::new(conn, sock)), timeout)
}
