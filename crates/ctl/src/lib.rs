//! guestctl, the host side of guestd: connect to a guest over one of its channels and call
//! commands.
//!
//! [`connect`] turns a spec (`unix:PATH`, …) into a [`Client`]; [`Client::call`] sends one
//! request and returns the agent's reply. The stream client resynchronises on connect (a `0xFF`
//! byte, then the built-in `sync` request with a random token) and ignores replies whose id is
//! not the one it waits for, so stale output from an earlier conversation never reaches the
//! caller.
//!
//! Specs (core's one channel grammar, `guestd_core::channel_spec`, guestctl's forms):
//! `unix:PATH`, `serial:PATH` (the host end of a virtio-serial port: QEMU's chardev unix
//! socket), `tcp:HOST:PORT` (mutual TLS with [`TlsFiles`]), `vsock:CID:PORT`, `xenstore:DOMID`
//! from dom0, and on Windows `pipe:\\.\pipe\NAME` (guestd's local named pipe, checked to be
//! served by SYSTEM or an administrator).
//!
//! A host can lose a reply (the serial port's host end reconnected, a connection broke).
//! [`call_with_retry`] then connects again and repeats the request with the *same* id; guestd
//! answers a repeated id with the reply it remembered, without running the command twice.
//!
//! [`password`] is `set-password`: the strong (`keyinit2`) or legacy key exchange, then
//! `password`, on one connection. [`configure`] sends a `configure` document (in parts through
//! `file_inject` when it is too large for one request) and fetches the whole result.
//!
//! Adding a transport: its form in core's `channel_spec`, a module with a `Client`
//! implementation, and one arm in [`connect_with`].

pub mod configure;
pub mod password;
#[cfg(windows)]
mod pipe;
pub mod pipe_owner;
mod stream;
mod tls;
mod xenstore;

use std::path::{Path, PathBuf};
use std::time::Duration;

use guestd_core::channel_spec::{ChannelKind, ChannelSpec, XenstoreTarget};
use guestd_core::{Reply, Request};

pub use stream::StreamClient;
pub use xenstore::XenstoreClient;

/// The default spec: the local unix socket guestd serves when no hypervisor channel exists.
#[cfg(not(windows))]
pub const DEFAULT_CONNECT: &str = "unix:/run/guestd/guestd.sock";
/// The default spec: the named pipe guestd serves when no hypervisor channel exists.
#[cfg(windows)]
pub const DEFAULT_CONNECT: &str = r"pipe:\\.\pipe\guestd";

/// A connection to one guest.
pub trait Client {
    /// Send `request` with request id `id` and wait up to `timeout` for its reply.
    fn call_with_id(
        &mut self,
        request: &Request,
        id: &str,
        timeout: Duration,
    ) -> Result<Reply, ClientError>;

    /// Send `request` with a fresh id and wait up to `timeout` for its reply.
    fn call(&mut self, request: &Request, timeout: Duration) -> Result<Reply, ClientError> {
        self.call_with_id(request, &new_id(), timeout)
    }
}

/// PEM files for `tcp:` with mutual TLS.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsFiles {
    /// The host's client certificate (chain) and key, presented to guestd.
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// The CA that signed guestd's server certificate.
    pub ca: Option<PathBuf>,
}

impl TlsFiles {
    pub fn is_empty(&self) -> bool {
        self.cert.is_none() && self.key.is_none() && self.ca.is_none()
    }
}

/// How to connect, beyond the spec.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnectOptions {
    pub tls: TlsFiles,
}

/// Why a call got no reply.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to {spec}: {source}")]
    Connect {
        spec: String,
        #[source]
        source: std::io::Error,
    },
    #[error("no reply within {}s", .0.as_secs_f32())]
    Timeout(Duration),
    #[error("connection lost: {0}")]
    Io(#[from] std::io::Error),
    #[error("the agent sent something that is not a reply: {0}")]
    Protocol(String),
    #[error("{0}")]
    Spec(String),
    #[error("TLS: {0}")]
    Tls(String),
    /// The channel is served by someone guestctl does not trust (a pipe not created by SYSTEM
    /// or an administrator); never retried.
    #[error("{0}")]
    Untrusted(String),
}

impl ClientError {
    /// Whether connecting again and repeating the request may help.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Self::Connect { .. } | Self::Timeout(_) | Self::Io(_) | Self::Protocol(_)
        )
    }
}

/// Open a client for `spec`.
pub fn connect(spec: &str, timeout: Duration) -> Result<Box<dyn Client>, ClientError> {
    connect_with(spec, &ConnectOptions::default(), timeout)
}

/// Open a client for `spec` (core's channel grammar, guestctl's forms: see
/// `guestd_core::channel_spec`) with TLS files and other options.
pub fn connect_with(
    spec: &str,
    options: &ConnectOptions,
    timeout: Duration,
) -> Result<Box<dyn Client>, ClientError> {
    let parsed = ChannelSpec::connect(spec).map_err(ClientError::Spec)?;
    if !options.tls.is_empty() && !matches!(parsed.kind, ChannelKind::Tcp(_)) {
        return Err(ClientError::Spec(format!(
            "'{spec}': --tls-cert/--tls-key/--tls-ca only apply to tcp:HOST:PORT"
        )));
    }
    match &parsed.kind {
        ChannelKind::Unix(path) => connect_unix("unix", path, timeout),
        ChannelKind::Serial(path) => connect_unix("serial", Path::new(path), timeout),
        ChannelKind::Tcp(target) if options.tls.is_empty() => {
            Ok(Box::new(StreamClient::connect_tcp(target, timeout)?))
        }
        ChannelKind::Tcp(target) => Ok(Box::new(tls::connect(target, &options.tls, timeout)?)),
        ChannelKind::Vsock { cid, port } => connect_vsock(cid.unwrap_or_default(), *port, timeout),
        ChannelKind::Pipe(name) => connect_pipe(name, timeout),
        ChannelKind::Xenstore(XenstoreTarget::Domain(domid)) => {
            Ok(Box::new(XenstoreClient::connect(*domid)?))
        }
        // Refused by `ChannelSpec::connect` above.
        ChannelKind::Xenstore(_) => Err(ClientError::Spec(format!(
            "'{spec}': guestctl needs xenstore:DOMID"
        ))),
    }
}

#[cfg(unix)]
fn connect_unix(
    kind: &str,
    path: &Path,
    timeout: Duration,
) -> Result<Box<dyn Client>, ClientError> {
    Ok(Box::new(StreamClient::connect_unix(kind, path, timeout)?))
}

#[cfg(not(unix))]
fn connect_unix(
    kind: &str,
    path: &Path,
    _timeout: Duration,
) -> Result<Box<dyn Client>, ClientError> {
    Err(ClientError::Spec(format!(
        "'{kind}:{}': unix sockets are not available on this OS",
        path.display()
    )))
}

#[cfg(target_os = "linux")]
fn connect_vsock(cid: u32, port: u32, timeout: Duration) -> Result<Box<dyn Client>, ClientError> {
    Ok(Box::new(StreamClient::connect_vsock(cid, port, timeout)?))
}

#[cfg(not(target_os = "linux"))]
fn connect_vsock(cid: u32, port: u32, _timeout: Duration) -> Result<Box<dyn Client>, ClientError> {
    Err(ClientError::Spec(format!(
        "'vsock:{cid}:{port}': vsock is only available on Linux hosts"
    )))
}

#[cfg(windows)]
fn connect_pipe(name: &str, timeout: Duration) -> Result<Box<dyn Client>, ClientError> {
    let stream = pipe::PipeStream::connect(name, timeout)?;
    Ok(Box::new(StreamClient::new(Box::new(stream), timeout)?))
}

#[cfg(not(windows))]
fn connect_pipe(name: &str, _timeout: Duration) -> Result<Box<dyn Client>, ClientError> {
    Err(ClientError::Spec(format!(
        "'pipe:{name}': named pipes exist only on Windows; from this host use unix:PATH, \
         tcp:HOST:PORT, vsock:CID:PORT, serial:PATH or xenstore:DOMID"
    )))
}

/// Call `request` on `spec`; when the reply is lost on the way (connection lost, no answer in
/// time), connect again and repeat it with the same id, up to `attempts` times in all.
/// `on_retry` is told about each failed attempt before the next one.
pub fn call_with_retry(
    spec: &str,
    options: &ConnectOptions,
    request: &Request,
    timeout: Duration,
    attempts: u32,
    mut on_retry: impl FnMut(u32, &ClientError),
) -> Result<Reply, ClientError> {
    let id = new_id();
    let attempts = attempts.max(1);
    let mut attempt = 1;
    loop {
        let result = connect_with(spec, options, timeout)
            .and_then(|mut client| client.call_with_id(request, &id, timeout));
        match result {
            Err(e) if e.is_transient() && attempt < attempts => {
                on_retry(attempt, &e);
                std::thread::sleep(Duration::from_millis(200 * u64::from(attempt)));
                attempt += 1;
            }
            other => return other,
        }
    }
}

/// A fresh random request id (hex).
pub fn new_id() -> String {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).expect("OS random source");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
