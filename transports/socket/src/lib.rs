//! guestd-transport-socket: listeners whose every connection is one channel running the shared
//! NDJSON conversation (`guestd_core::stream::serve_stream_with`).
//!
//! - [`unix`]: `unix:PATH`, mode 0600, many clients at once (the default transport when no
//!   hypervisor channel exists).
//! - [`tcp`]: `tcp:HOST:PORT`, mutual TLS through a [`tcp::TlsServer`] the binary supplies
//!   (`guestd-transport-tls`, linked only into `guestd-tls` and `guestd.exe`); plain on loopback
//!   only with `allow_unauthenticated_loopback`.
//! - [`vsock`]: `vsock:PORT`, only the host (CID 2) unless configured.
//! - [`pipe`]: `pipe:\\.\pipe\NAME` (Windows), SYSTEM and Administrators only, local clients
//!   only, the name owned by one guestd.
//!
//! Every listener goes through one accept loop (`accept.rs`): TLS handshakes in their own
//! bounded pool with a short deadline, at most `max_connections` served at once; and shares one
//! reply cache across its connections, so a host that lost a reply can reconnect and repeat the
//! request id. Adding a listener: a module with an `Acceptor` handed to `serve_listener` (and a
//! `Served` impl for its stream type), its form in core's `channel_spec`, one arm in the
//! daemon's `listen::open`, and a conformance test.

mod accept;
pub mod pipe;
pub mod tcp;
#[cfg(unix)]
pub mod unix;
pub mod vsock;

#[cfg(windows)]
pub use pipe::PipeTransport;
pub use tcp::{TcpConfig, TcpTransport};
#[cfg(unix)]
pub use unix::UnixTransport;
pub use vsock::VsockConfig;

/// `[unix]` in guestd.toml: the unix-socket listeners (accepted on every OS, used where unix
/// sockets exist).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct UnixConfig {
    /// Clients served at once; more are refused (and logged).
    pub max_connections: usize,
}

impl Default for UnixConfig {
    fn default() -> Self {
        Self {
            max_connections: accept::DEFAULT_MAX_CONNECTIONS,
        }
    }
}
#[cfg(target_os = "linux")]
pub use vsock::VsockTransport;
